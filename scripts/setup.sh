#!/usr/bin/env bash
# Create ./.venv (if missing) and install multimae with its test extras into it.
# PyTorch is pinned to the release this project is developed and tested with; any torch>=2.4
# works for the library itself (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
echo "multimae installed in $(pwd)/.venv"
