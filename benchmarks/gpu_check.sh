#!/usr/bin/env bash
# The prepared GPU check: under 12 minutes on one GPU with only PyTorch and transformers installed
# (icm runs from src/, nothing is downloaded: random-weight models of published shapes, a
# tokenizer and claims made here). Prints the figures the README's GPU table takes.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
echo "== exactness in fp32: 1B random Llama, N=64, divide and conquer (plain, packed) vs naive"
"$PY" benchmarks/bench_scoring.py --random-config llama-1b --device cuda --dtype float32 \
    --sizes 64 --sample 8
echo "== speed in bf16: 8B random Llama, N=64 and 128"
"$PY" benchmarks/bench_scoring.py --random-config llama-8b --device cuda --dtype bfloat16 \
    --sizes 64 128 --sample 4
echo "== speed in bf16: 1B random Llama, N=128"
"$PY" benchmarks/bench_scoring.py --random-config llama-1b --device cuda --dtype bfloat16 \
    --sizes 128 --sample 8
