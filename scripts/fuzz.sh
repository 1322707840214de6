#!/usr/bin/env bash
# Runs each fuzz target (fuzz/, cargo-fuzz + libFuzzer) for a bounded time and prints a table:
# target, executions, seconds, crashes.
#
#   scripts/fuzz.sh [TARGET...]            (default: every target)
#   FUZZ_SECONDS=600 scripts/fuzz.sh blob_engine
#
# FUZZ_SECONDS (default 60): wall-clock time per target. FUZZ_RUNS: stop each target after
# this many executions instead (the long run: FUZZ_RUNS=10000000; FUZZ_SECONDS then only caps
# it, default 24 h). FUZZ_JOBS (default 1): parallel
# fuzzing processes per target. Targets run one after the other. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Seeds: valid blobs, the badge's partition table and
# short texts (firmware/examples/fuzz_seeds.rs), and the repository's config files for the host
# readers. Built with debug assertions, so an integer overflow is a crash too, and with
# AddressSanitizer for the targets that run unsafe code (see `sanitizer` below).
# Crashes land in fuzz/artifacts/TARGET/; the script exits 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${FUZZ_RUNS:-}
if [ -n "$RUNS" ]; then
    SECONDS_PER_TARGET=${FUZZ_SECONDS:-86400}
    limit=(-runs="$RUNS")
else
    SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
    limit=()
fi
JOBS=${FUZZ_JOBS:-1}
FIRMWARE_TARGETS=(blob_engine app_startup partition_table tokenizer template sam sam_render)
ALL_TARGETS=("${FIRMWARE_TARGETS[@]}" host_readers)
targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=("${ALL_TARGETS[@]}")

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "SKIPPED: fuzzing needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 0
fi

corpus=fuzz/corpus
cargo run --release --quiet -p badge-firmware --example fuzz_seeds -- "$corpus" >/dev/null
mkdir -p "$corpus/host_readers"
seed() { { printf "\\x$(printf %02x "$1")"; cat "$2"; } >"$corpus/host_readers/$(basename "$2").$1"; }
seed 0 firmware/partitions.csv
for f in configs/boards/*.toml; do seed 1 "$f"; done
for f in configs/models/*.toml; do seed 2 "$f"; done
for f in configs/*.toml; do seed 3 "$f"; done
seed 4 data/profile/qa.csv

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
rows=()
for t in "${targets[@]}"; do
    features=()
    [ "$t" = host_readers ] && features=(--features host)
    # The badge encodes questions of at most 200 characters (app::MAX_QUESTION_CHARS, up to
    # 800 bytes of UTF-8): 1 KB inputs cover that with room, where libFuzzer's default 4 KB
    # words spend most of the time in merges no stranger can type.
    sizes=()
    [ "$t" = tokenizer ] && sizes=(-max_len=1024)
    # SAM's reciter reads one line of 255 bytes; longer inputs only slow each execution.
    case "$t" in sam | sam_render) sizes=(-max_len=256) ;; esac
    # Targets whose fuzzed code has no `unsafe` (SAM, the tokenizer, the template, the host's
    # TOML/CSV readers) build without AddressSanitizer, two to three times faster: in safe Rust
    # every out-of-bounds access is already a panic, and debug assertions keep overflow a crash.
    # The blob, engine and start-up targets run unsafe kernels and buffers, and keep it.
    sanitizer=()
    case "$t" in sam | sam_render | tokenizer | template | host_readers) sanitizer=(-s none) ;; esac
    echo "== $t (${RUNS:+$RUNS runs, }${SECONDS_PER_TARGET}s at most) ==" >&2
    mkdir -p "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    (cd fuzz && cargo +nightly fuzz build "${sanitizer[@]}" --debug-assertions "${features[@]}" "$t") >"$logs/$t.build" 2>&1 ||
        { tail -30 "$logs/$t.build" >&2; exit 1; }
    parallel=()
    [ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
    start=$(date +%s)
    set +e
    (cd fuzz && cargo +nightly fuzz run "${sanitizer[@]}" --debug-assertions "${features[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" "${limit[@]}" "${parallel[@]}" "${sizes[@]}" \
        -rss_limit_mb=4096 -timeout=20 -print_final_stats=1) >"$logs/$t.log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    # With FUZZ_JOBS > 1 each job writes fuzz-N.log, and the parent copies each one into its
    # own output when the job ends: executions are summed over the job logs only, or each
    # job would count twice.
    shopt -s nullglob
    job_logs=(fuzz/fuzz-*.log)
    shopt -u nullglob
    counted=("$logs/$t.log")
    [ "$JOBS" -gt 1 ] && counted=("${job_logs[@]}")
    execs=$(awk '/stat::number_of_executed_units/ { n += $2 } END { print n + 0 }' \
        /dev/null "${counted[@]}")
    rm -f "${job_logs[@]}"
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        status=1
        tail -30 "$logs/$t.log" >&2
    fi
    rows+=("$(printf '%-16s %14s %8s %8s' "$t" "$execs" "$secs" "$crashes")")
done
printf '%-16s %14s %8s %8s\n' target executions seconds crashes
printf '%s\n' "${rows[@]}"
exit "$status"
