#!/usr/bin/env bash
# Answer quality of a trained run (issue #14's benchmark): one table per model (the f32
# checkpoint through candle, the Q8_0 blob through the badge's engine) and per mode (open
# generation, known-answer decoding), on the trained questions, the held-out rephrasings and
# the off-topic questions that were never used for calibration; and the blob re-exported
# with --no-match, to show what the question match adds to known-answer decoding.
#
#   scripts/bench_quality.sh RUN_DIR BLOB [QA_TRAIN] [QA_HELDOUT] [OFFTOPIC]
#
# Defaults: data/profile/qa.csv, data/profile/qa-heldout.csv, data/offtopic/test.txt.
# "garbled" counts answers that are none of the taught answers (QA_TRAIN's and the run's
# synthetic Q&A in RUN_DIR/synth) and not the fallback line: babble the badge would speak. Targets for the tiny demo config: held-out ≥ 70% exact, trained 100%, no garbled
# answer in known-answer mode, off-topic → fallback ≥ 80%, fallback on ≤ 10% of held-out.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 RUN_DIR BLOB [QA_TRAIN] [QA_HELDOUT] [OFFTOPIC]" >&2
    exit 2
fi
RUN=$1
BLOB=$2
cd "$(dirname "$0")/.."
TRAIN=${3:-data/profile/qa.csv}
HELDOUT=${4:-data/profile/qa-heldout.csv}
OFFTOPIC=${5:-data/offtopic/test.txt}
cargo build --release --quiet --bin badge
BADGE=target/release/badge
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

"$BADGE" export --from "$RUN" --out "$OUT/no-match.bin" --no-match --quality 0 >/dev/null
for model in blob f32 no-match; do
    path=$BLOB
    [[ $model == f32 ]] && path=$RUN
    [[ $model == no-match ]] && path=$OUT/no-match.bin
    modes=(known free)
    [[ $model == no-match ]] && modes=(known)
    for mode in "${modes[@]}"; do
        flag=()
        [[ $mode == free ]] && flag=(--free)
        "$BADGE" eval --model "$path" --qa "$TRAIN" "${flag[@]}" --misses 100000 --json >"$OUT/$model-$mode-trained.json"
        "$BADGE" eval --model "$path" --qa "$HELDOUT" --offtopic "$OFFTOPIC" "${flag[@]}" --misses 100000 --json \
            >"$OUT/$model-$mode-heldout.json"
    done
done

python3 - "$OUT" "$TRAIN" "$RUN" <<'PY'
import csv, glob, json, sys
out, train, run = sys.argv[1:4]
known = set()
for f in [train] + glob.glob(f"{run}/synth/*/qa-synth.csv"):
    known |= {r["answer"].strip() for r in csv.DictReader(open(f))}
known.add(json.load(open(f"{run}/config.json"))["curriculum"]["answers"]["fallback"].strip())
for model, name, modes in [("blob", "Q8_0 blob (badge engine)", ["known", "free"]),
                           ("f32", "f32 checkpoint (candle)", ["known", "free"]),
                           ("no-match", "Q8_0 blob without the question match", ["known"])]:
    for mode in modes:
        t = json.load(open(f"{out}/{model}-{mode}-trained.json"))
        h = json.load(open(f"{out}/{model}-{mode}-heldout.json"))
        def garbled(r):
            return sum(1 for m in r["misses"] if not m["fallback"] and m["got"].strip() not in known)
        print(f"\n{name}, {'known-answer decoding' if mode == 'known' else 'open generation'}")
        print(f"{'set':<10} {'asked':>6} {'exact':>8} {'fallback':>9} {'garbled':>8}")
        for label, r in [("trained", t), ("held-out", h)]:
            o = r["overall"]
            print(f"{label:<10} {o['total']:>6} {100*o['exact']/o['total']:>7.1f}% "
                  f"{100*o['fallback']/o['total']:>8.1f}% {garbled(r):>8}")
        o = h.get("offtopic")
        if o:
            print(f"{'off-topic':<10} {o['total']:>6} {'':>8} {100*o['fallback']/o['total']:>8.1f}%")
PY
