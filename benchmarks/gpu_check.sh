#!/usr/bin/env bash
# Everything this project checks on a GPU, in one script that fits in 8 minutes on one GPU:
#   1. the CUDA tests (every test marked `cuda`; tests/cuda: SDPA with the positional bias, bf16/fp16 autocast and the grad scaler,
#      torch.compile on CUDA, the kv cache, evaluate on CUDA = on the CPU);
#   2. make bench on CUDA against Hugging Face's TransfoXL (configs C and W, same weights and inputs);
#   3. a 2-minute wt103-base-shaped training: tokens/s and MFU against the GPU's measured bf16 peak.
# Results go to $OUT (default benchmarks/results/gpu-DATE). Nothing in `make test` depends on this script.
#
#   benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU at toy sizes (checks the script)
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
PY="${PY:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then make .venv/.installed >/dev/null; fi
OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

if [[ $DRY_RUN == 1 ]]; then
  echo "== dry run on the CPU (toy sizes): checks the script and the tests, not a GPU"
  export TXL_CUDA_TESTS_DEVICE=cpu
  DEVICE=cpu; BENCH_ARGS=(--configs tiny --workloads train eval128 --repeats 1 --steps 2)
  TRAIN_ARGS=(--preset tiny --batch-size 4 --seconds 5 --precision bf16)
else
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: use --dry-run")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  DEVICE=cuda; BENCH_ARGS=(--configs C W --repeats 2 --steps 10)
  TRAIN_ARGS=(--preset wt103-base --batch-size 32 --seconds 120 --precision bf16)
fi

echo "== 1/3 CUDA tests"
# every test marked cuda, wherever it lives
"$PY" -m pytest -p no:cacheprovider -q -m cuda tests 2>&1 | tee "$OUT/tests.txt"

echo "== 2/3 bench on $DEVICE against Hugging Face"
"$PY" benchmarks/bench.py --device "$DEVICE" "${BENCH_ARGS[@]}" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"

echo "== 3/3 wt103-base-shaped training for a fixed time"
"$PY" benchmarks/gpu_train.py --device "$DEVICE" "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train.txt"

echo "results in $OUT"
