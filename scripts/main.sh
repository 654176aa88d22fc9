#!/usr/bin/env bash
# The main job: set up, then train FP32 / Quant / SpQuant SNNs on the embedded real MNIST subset
# and print the comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# tcmalloc made training steps 1.3-1.5x faster here (docs/performance.md); used when installed
# (Debian: apt-get install libtcmalloc-minimal4), never required.
TC=$(.venv/bin/python -m spquant.perf tcmalloc 2>/dev/null || true)
if [ -n "$TC" ]; then export LD_PRELOAD="$TC"; fi
exec .venv/bin/spquant demo "$@"
