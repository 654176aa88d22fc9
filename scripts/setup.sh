#!/usr/bin/env bash
# Creates .venv (if missing) and installs spquant with its test extras.
# torch is installed first at the pinned CPU release, so pip never pulls a multi-GB CUDA build;
# set SPQUANT_TORCH to another spec (e.g. "torch" on a GPU machine) to override.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "${SPQUANT_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
