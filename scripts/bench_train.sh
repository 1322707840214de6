#!/usr/bin/env bash
# Training throughput: candle (this crate) vs PyTorch (naive attention and SDPA), interleaved.
#
#   scripts/bench_train.sh [ROUNDS=3] [STEPS=8]
#
# PYTHON: a Python with torch (default python3), e.g. a venv made with `pip install torch`.
# CANDLE_BINS: space-separated LABEL=PATH bench-train binaries to compare (default: this tree's
#   build, labelled `candle`), e.g. CANDLE_BINS="stock=/tmp/bench-train-stock candle=target/release/bench-train".
# THREADS (2), MODELS ("badge-1m badge-6m"), WARMUP (2).
# Each round runs every candle binary, torch-naive and torch-sdpa for each model (batch 16 x 256,
# f32); the table shows, per implementation, the median over rounds of each run's median
# tokens/s, and each candle build's ratio to the two PyTorch variants.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-8}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-"badge-1m badge-6m"}
if [ -z "${CANDLE_BINS:-}" ]; then
  cargo build --release --quiet --bin bench-train
  CANDLE_BINS="candle=target/release/bench-train"
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

for r in $(seq "$ROUNDS"); do
  for m in $MODELS; do
    echo "round $r/$ROUNDS: $m" >&2
    for lb in $CANDLE_BINS; do
      "${lb#*=}" --model "$m" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --json |
        sed "s/\"impl\":\"candle\"/\"impl\":\"${lb%%=*}\"/" >>"$OUT"
    done
    for attn in naive sdpa; do
      "$PYTHON" scripts/bench_train.py --model "$m" --attn "$attn" --threads "$THREADS" \
        --steps "$STEPS" --warmup "$WARMUP" --json >>"$OUT"
    done
  done
done

"$PYTHON" - "$OUT" "$MODELS" "$CANDLE_BINS" "$ROUNDS" "$THREADS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
models, labels = sys.argv[2].split(), [b.split("=")[0] for b in sys.argv[3].split()]
impls = labels + ["torch-naive", "torch-sdpa"]
med = {}
for m in models:
    for i in impls:
        v = [r["tokens_per_sec"] for r in rows if r["model"] == m and r["impl"] == i]
        med[m, i] = statistics.median(v) if v else float("nan")
print(f"tokens/s, forward+backward+AdamW, batch 16x256, f32, {sys.argv[5]} threads, "
      f"median of {sys.argv[4]} interleaved rounds")
head = f"{'model':<9}" + "".join(f" {i:>12}" for i in impls)
head += "".join(f" {l + '/naive':>13} {l + '/sdpa':>12}" for l in labels)
print(head)
for m in models:
    line = f"{m:<9}" + "".join(f" {med[m, i]:>12.0f}" for i in impls)
    for l in labels:
        line += f" {med[m, l] / med[m, 'torch-naive']:>12.2f}x {med[m, l] / med[m, 'torch-sdpa']:>11.2f}x"
    print(line)
PY
