#!/usr/bin/env bash
# The full-size TinyStories measurement: badge-6m on the CPU with a 2.2 GB stories file.
#
# Builds target/stories-full/train.txt by repeating the shared TinyStories sample until it
# reaches 2.2 GB (the size of TinyStoriesV2-GPT4-train.txt), writes a copy of the badge-6m
# curriculum that reads it with no story limit, then trains:
#   1. a fresh run, stopped after its first step: tokenizer training over the whole stream,
#      tokenizing into the run's cache, the first step;
#   2. the same run resumed, stopped after one more step: the cache is only opened.
# For each it prints the wall time to the first step and the peak resident memory
# (/usr/bin/time -v), then the cache size. The goal is a peak under 1.5 GB.
#
# Usage: BADGE_SHARED=/work/shared scripts/measure-stories.sh [--bytes N] [--keep] [--json]
# The 2.2 GB file and the run are deleted at the end unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

BYTES=2200000000
KEEP=0
JSON=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bytes) BYTES="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --json) JSON=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "measure-stories.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

SAMPLE="${BADGE_SHARED:-/work/shared}/data/tinystories/tinystories_train_sample.txt"
VALID="${BADGE_SHARED:-/work/shared}/data/tinystories/tinystories_valid_sample.txt"
if [[ ! -f "$SAMPLE" ]]; then
    echo "SKIPPED: no TinyStories sample at $SAMPLE (set BADGE_SHARED)" >&2
    exit 0
fi
[[ -x /usr/bin/time ]] || { echo "measure-stories.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }

WORK="$ROOT/target/stories-full"
mkdir -p "$WORK"
BIG="$WORK/train.txt"
if [[ ! -f "$BIG" || $(stat -c %s "$BIG") -lt $BYTES ]]; then
    echo "== writing $BIG ($BYTES bytes from copies of $(basename "$SAMPLE"))" >&2
    : >"$BIG.part"
    size=0
    sample_size=$(stat -c %s "$SAMPLE")
    while [[ $size -lt $BYTES ]]; do
        # Each copy ends with the separator, so stories never merge across copies.
        { cat "$SAMPLE"; printf '\n<|endoftext|>\n'; } >>"$BIG.part"
        size=$((size + sample_size + 15))
    done
    mv "$BIG.part" "$BIG"
fi

# The published recipe, reading the big file; every other path made absolute.
CURRICULUM="$WORK/badge-6m-full.toml"
sed -e "s#^model = \"models/#model = \"$ROOT/configs/models/#" \
    -e "s#\"\\.\\./data/#\"$ROOT/data/#g" \
    -e "s#^download = true#download = false\nlimit = 0#" \
    -e "s#^train = \"$ROOT/data/stories/stories.txt\"#train = \"$BIG\"#" \
    -e "s#^valid = \"$ROOT/data/stories/stories-valid.txt\"#valid = \"$VALID\"#" \
    -e "/^limit = [1-9]/d" \
    "$ROOT/configs/badge-6m.toml" >"$CURRICULUM"
grep -q "^train = \"$BIG\"" "$CURRICULUM" || { echo "measure-stories.sh: could not point $CURRICULUM at $BIG" >&2; exit 1; }

BADGE="$ROOT/target/release/badge"
[[ -x "$BADGE" ]] || cargo build --release --bin badge
RUN="$WORK/run"
rm -rf "$RUN"

# Runs badge under GNU time; prints "seconds peak_kib".
measure() {
    local log="$WORK/time.log"
    # --stop-after ends the run like an interrupt (exit status 130-ish): that is expected.
    /usr/bin/time -v -o "$log" "$BADGE" "$@" --quiet >"$WORK/train.out" 2>&1 || true
    grep -q 'Interrupted\|interrupted\|resume' "$WORK/train.out" || { cat "$WORK/train.out" >&2; exit 1; }
    local wall peak
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    peak=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    echo "$wall $peak"
}

echo "== fresh run (tokenizer, token cache, first step)" >&2
read -r cold_s cold_kib < <(measure train --curriculum "$CURRICULUM" --out "$RUN" --stop-after 1)
echo "== resumed run (cache opened, next step)" >&2
read -r warm_s warm_kib < <(measure train --resume "$RUN" --stop-after 2)
cache="$RUN/tokens/stories.tokens"
cache_bytes=$(stat -c %s "$cache")
text_bytes=$(stat -c %s "$BIG")
stories_n=$(grep -c '^<|endoftext|>$' "$BIG" || true)

if [[ $JSON == 1 ]]; then
    printf '{"text_bytes":%s,"stories_approx":%s,"cache_bytes":%s,"fresh":{"seconds":%s,"peak_rss_kib":%s},"resumed":{"seconds":%s,"peak_rss_kib":%s},"goal_peak_rss_kib":1536000}\n' \
        "$text_bytes" "$stories_n" "$cache_bytes" "$cold_s" "$cold_kib" "$warm_s" "$warm_kib"
else
    printf '\n%-36s %14s %14s\n' "badge-6m, CPU, $(numfmt --to=iec "$text_bytes") of stories" "to first step" "peak RSS"
    printf '%-36s %13.1fs %11.0f MiB\n' "fresh run (tokenize + cache)" "$cold_s" "$((cold_kib / 1024))"
    printf '%-36s %13.1fs %11.0f MiB\n' "resumed run (cache exists)" "$warm_s" "$((warm_kib / 1024))"
    printf '%-36s %14s\n' "token cache" "$(numfmt --to=iec "$cache_bytes") ($cache_bytes bytes)"
    printf '%-36s %14s\n' "separator lines in the text" "$stories_n"
    printf '%-36s %14s\n' "goal: peak RSS" "< 1.5 GB"
fi
if [[ $KEEP == 0 ]]; then
    rm -rf "$WORK"
fi
