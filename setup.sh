#!/usr/bin/env bash
# Sets pinzi up in ./.venv for development: a virtual environment, PyTorch, pinzi itself with
# every extra (training, serving, export, keras, benchmarks) and its test tools. (A user who only
# converts needs none of it: `pip install .` is the lean install, without PyTorch.)
# Idempotent: run it again to update. Environment:
#   PYTHON=python3.11        the interpreter to use (3.10 or newer)
#   PINZI_TORCH_INDEX=URL    a pip index to take PyTorch from (e.g. PyTorch's CPU wheel index
#                            on a machine without a GPU where plain pip would pick a CUDA build)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: pinzi needs Python 3.10 or newer (tried '$PY'); set PYTHON=..." >&2
  exit 1
fi
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  # Debian ships venv separately; install it when we may.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "setup: the Python venv module is missing: install python3-venv" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "setup: installing PyTorch $TORCH_VERSION"
  .venv/bin/python -m pip install -q "torch==$TORCH_VERSION" \
    ${PINZI_TORCH_INDEX:+--index-url "$PINZI_TORCH_INDEX"}
fi
echo "setup: installing pinzi with every extra and its test tools"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/pinzi --version
