#!/usr/bin/env bash
# The main job: set up, then train FP32 / Quant / SpQuant SNNs on the embedded real MNIST subset
# and print the comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/spquant demo "$@"
