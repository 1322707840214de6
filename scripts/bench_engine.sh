#!/usr/bin/env bash
# Engine tokens/s against llama2.c's runq on the same random weights (issue #5's benchmark).
#
#   scripts/bench_engine.sh RUNQ_PATH [RUNS]
#
# RUNQ_PATH: a runq binary built outside this tree from llama2.c's public runq.c, e.g.
#   gcc -O3 -march=native -o /tmp/llama2c/runq runq.c -lm      (no OpenMP: one thread)
# This script never builds it. RUNS (default 7): runs of each program per model, interleaved
# (runq, engine with 1 worker, engine with 2 workers, ...) so that load changes on a shared
# machine hit all three alike; the table shows medians.
#
# For each of configs/models/badge-1m.toml and badge-6m.toml, `bench-engine prepare` writes one
# set of random weights as the badge's blob and as llama2.c's version-2 Q8_0 file plus
# tokenizer.bin (what `badge export --format llama2c` writes). Both programs then generate
# greedily from BOS for 256 positions (`runq -n 256 -t 0`), and both time from the end of the
# first step. The BOS row of the embedding is scaled down so that neither stops early.
# Set BENCH_DIR to keep the model files (default: a temporary folder).
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1" ]]; then
    echo "usage: $0 RUNQ_PATH [RUNS]   (RUNQ_PATH: an executable runq)" >&2
    exit 2
fi
RUNQ=$(realpath "$1")
RUNS=${2:-7}
STEPS=256
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin bench-engine
BENCH=target/release/bench-engine
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR"

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

engine_once() { # blob workers -> tok/s (checks that all positions ran)
    local out
    out=$("$BENCH" run --blob "$1" --workers "$2" --runs 1 --steps "$STEPS" --json)
    if ! grep -q "\"positions\":$STEPS" <<<"$out"; then
        echo "engine stopped early: $out" >&2
        exit 1
    fi
    sed -n 's/.*"tokens_per_s_median":\([0-9.eE+-]*\).*/\1/p' <<<"$out"
}

runq_once() { # model.bin tokenizer.bin -> tok/s
    local err
    err=$("$RUNQ" "$1" -z "$2" -n "$STEPS" -t 0 2>&1 >/dev/null)
    sed -n 's/^achieved tok\/s: \([0-9.]*\).*/\1/p' <<<"$err"
}

for m in 1m 6m; do
    "$BENCH" prepare --model "configs/models/badge-$m.toml" --out "$DIR/$m" 2>/dev/null
    : >"$DIR/$m/runq.txt"
    : >"$DIR/$m/w1.txt"
    : >"$DIR/$m/w2.txt"
done
for ((i = 1; i <= RUNS; i++)); do
    for m in 1m 6m; do
        runq_once "$DIR/$m/model.bin" "$DIR/$m/tokenizer.bin" >>"$DIR/$m/runq.txt"
        engine_once "$DIR/$m/badge.bin" 1 >>"$DIR/$m/w1.txt"
        engine_once "$DIR/$m/badge.bin" 2 >>"$DIR/$m/w2.txt"
    done
    echo "run $i/$RUNS done" >&2
done

echo
echo "Generation tokens/s, $STEPS positions from BOS, greedy, median of $RUNS interleaved runs"
echo "($(uname -m), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| model | runq -O3 (1 thread) | engine, 1 worker | engine, 2 workers | 1 worker / runq | 2 workers / runq |"
echo "|---|---|---|---|---|---|"
for m in 1m 6m; do
    r=$(median <"$DIR/$m/runq.txt")
    e1=$(median <"$DIR/$m/w1.txt")
    e2=$(median <"$DIR/$m/w2.txt")
    awk -v m="badge-$m" -v r="$r" -v a="$e1" -v b="$e2" \
        'BEGIN {printf "| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx |\n", m, r, a, b, a / r, b / r}'
done
echo
echo "raw runs: $DIR/{1m,6m}/{runq,w1,w2}.txt"
