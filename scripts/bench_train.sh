#!/usr/bin/env bash
# Training throughput: candle (this crate) vs PyTorch (naive attention and SDPA), interleaved.
#
#   scripts/bench_train.sh [ROUNDS=3] [STEPS=8]
#
# Needs a Python with torch: PYTHON=/tmp/torchvenv/bin/python (default: python3).
# Each round runs rust, torch-naive, torch-sdpa for badge-1m and badge-6m (batch 16 x 256, f32,
# THREADS=2 threads); the table shows medians over rounds of each run's median tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-8}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-"badge-1m badge-6m"}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

cargo build --release --quiet --bin bench-train
BIN=target/release/bench-train
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

for r in $(seq "$ROUNDS"); do
  for m in $MODELS; do
    echo "round $r: $m" >&2
    "$BIN" --model "$m" --threads "$THREADS" --steps "$STEPS" --json >>"$OUT"
    "$PYTHON" scripts/bench_train.py --model "$m" --attn naive --threads "$THREADS" --steps "$STEPS" --json >>"$OUT"
    "$PYTHON" scripts/bench_train.py --model "$m" --attn sdpa --threads "$THREADS" --steps "$STEPS" --json >>"$OUT"
  done
done

"$PYTHON" - "$OUT" "$MODELS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
models = sys.argv[2].split()
impls = ["candle", "torch-naive", "torch-sdpa"]
med = {}
for m in models:
    for i in impls:
        v = [r["tokens_per_sec"] for r in rows if r["model"] == m and r["impl"] == i]
        med[m, i] = statistics.median(v) if v else float("nan")
print(f"{'model':<10} {'candle':>9} {'torch-naive':>12} {'torch-sdpa':>11} {'vs naive':>9} {'vs sdpa':>8}   (tokens/s, median of {len(rows)//max(1,len(models)*3)} rounds)")
for m in models:
    c, n, s = med[m, "candle"], med[m, "torch-naive"], med[m, "torch-sdpa"]
    print(f"{m:<10} {c:>9.0f} {n:>12.0f} {s:>11.0f} {c/n:>8.2f}x {c/s:>7.2f}x")
PY
