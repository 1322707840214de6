#!/usr/bin/env bash
# Blob parse time of the worst case that fits the badge's model partition (issue #15), at the
# host's width and, when the i686 target is installed, with a 32-bit usize as on the badge.
#
#   scripts/bench_parse.sh
#
# The figure is the parse time next to one CRC32 pass over the same bytes (the least a loader
# must spend) and their ratio; see firmware/tests/parse_worst_case.rs for how the blob is built.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    cargo test --release --quiet -p badge-firmware --test parse_worst_case "$@" -- --nocapture 2>&1 |
        grep '^worst-case blob'
}
run
if rustup target list --installed 2>/dev/null | grep -qx i686-unknown-linux-gnu; then
    run --target i686-unknown-linux-gnu
else
    echo "SKIPPED: 32-bit figure (rustup target add i686-unknown-linux-gnu; apt-get install gcc-multilib)" >&2
fi
