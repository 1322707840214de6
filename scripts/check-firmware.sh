#!/usr/bin/env bash
# Checks that the badge's firmware builds for the ESP32-S3, with upstream nightly Rust (no
# Espressif toolchain needed). CI runs it from .ci/run.
#
#   scripts/check-firmware.sh
#
# 1. An Xtensa compile of `badge-firmware` (release, default features) with
#    -Zbuild-std=core,alloc and the target spec firmware/xtensa-esp32s3-none-elf.json; prints the
#    crate's .text/.rodata/.data/.bss (llvm-tools) and its largest symbols.
# 2. The same with feature `esp32s3`, the badge's own build. Upstream rustc has no Xtensa
#    `asm!`, so `--cfg badge_check_no_asm` (set only here) stubs the PIE kernel's `asm!` block;
#    the rest of the feature compiles for real. Its sizes are compared with the app partition
#    (firmware/partitions.csv), IRAM and internal RAM, and recorded in
#    firmware/measured-size.toml, which the host memory plan reads (commit it when it changes).
# 3. A type check of firmware/esp against its real dependencies at the versions of its
#    Cargo.lock (scripts/esp_typecheck.py: assembly stubbed in cached copies of the crates that
#    have it). It proves types, features and API use, not code generation or linking.
#
# Any compile or type error, and any warning in our own crates' Xtensa builds, fails the
# script. If the pinned nightly, rust-src or llvm-tools cannot be had (no rustup, no route to
# the Rust dist server), it prints `SKIPPED: Xtensa firmware check (<why>)` and exits 0.
# Build folders: target/xtensa (stages 1-2), target/xtensa-esp and target/xtensa-stubs (3),
# so the host build's cache is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

# The nightly, pinned by its date. rustc 1.97.0-nightly (e50aa6fba 2026-05-19) is the build the
# machine image ships as `nightly`; the target spec names the same toolchain.
NIGHTLY=nightly-2026-05-20
NIGHTLY_COMMIT=e50aa6fba
SPEC=firmware/xtensa-esp32s3-none-elf.json
SIZES=firmware/measured-size.toml

skip() {
    echo
    echo "=============================================================================="
    echo "SKIPPED: Xtensa firmware check ($1)"
    echo "=============================================================================="
    exit 0
}

grep -q "$NIGHTLY" "$SPEC" || { echo "error: $SPEC does not name $NIGHTLY (keep the two pins equal)" >&2; exit 1; }
command -v rustup >/dev/null 2>&1 || skip "rustup not found"
command -v python3 >/dev/null 2>&1 || skip "python3 not found"

# The pinned toolchain, or an installed `nightly` that is the very same build.
if rustup toolchain list | grep -q "^$NIGHTLY"; then
    TC=$NIGHTLY
elif rustup run nightly rustc -V 2>/dev/null | grep -q "($NIGHTLY_COMMIT "; then
    TC=nightly
else
    rustup toolchain install "$NIGHTLY" --profile minimal >/dev/null 2>&1 ||
        skip "rustup cannot install $NIGHTLY"
    TC=$NIGHTLY
fi
for component in rust-src llvm-tools; do
    if ! rustup component list --toolchain "$TC" --installed 2>/dev/null | grep -q "^$component"; then
        echo "installing $component for $TC"
        rustup component add "$component" --toolchain "$TC" >/dev/null 2>&1 ||
            skip "rustup cannot fetch $component for $TC"
    fi
done
SYSROOT=$(rustc "+$TC" --print sysroot)
HOST=$(rustc "+$TC" -vV | sed -n 's/^host: //p')
LLVM_BIN="$SYSROOT/lib/rustlib/$HOST/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=()
failed=0
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

# Stages 1 and 2 share one build folder and one RUSTFLAGS (the cfg changes nothing without
# `esp32s3`), so core and alloc are built once.
build_firmware() { # label, features ("" for the defaults), extra size-script arguments...
    local label=$1 features=$2 start sizes
    shift 2
    start=$(now)
    echo
    echo "== Xtensa compile of badge-firmware, $label"
    : >"$work/sizes"
    local ok=1
    RUSTFLAGS="--cfg badge_check_no_asm" nice cargo "+$TC" build --release --locked \
        --manifest-path firmware/Cargo.toml -Zjson-target-spec -Zbuild-std=core,alloc \
        --target "$SPEC" --target-dir target/xtensa ${features:+--features "$features"} \
        --message-format=json-render-diagnostics >"$work/artifacts.json" 2>"$work/build.err" || ok=0
    cat "$work/build.err" >&2
    # Host clippy never sees the Xtensa-only paths: their warnings are caught here.
    if [ "$ok" = 1 ] && grep -q '^warning: `badge-firmware` (lib) generated' "$work/build.err"; then
        echo "error: the Xtensa build of badge-firmware ($label) has warnings (above)" >&2
        ok=0
    fi
    if [ "$ok" = 1 ] &&
        python3 scripts/firmware_sizes.py --artifacts "$work/artifacts.json" --llvm-bin "$LLVM_BIN" \
            --partitions firmware/partitions.csv --shell-main firmware/esp/src/main.rs \
            --label "$label" --toolchain "$NIGHTLY" --summary "$work/sizes" "$@"; then
        read -r t r d b <"$work/sizes"
        rows+=("$(printf '%-46s %-6s %5s s %9s %9s %7s %7s' "badge-firmware, $label" ok "$(elapsed "$start")" "$t" "$r" "$d" "$b")")
    else
        failed=1
        rows+=("$(printf '%-46s %-6s %5s s' "badge-firmware, $label" FAILED "$(elapsed "$start")")")
    fi
}

total=$(now)
build_firmware "default features" ""
build_firmware "feature esp32s3 (asm stubbed)" esp32s3 --write "$SIZES"

start=$(now)
echo
echo "== Type check of firmware/esp (assembly stubbed; types, features and API use, not codegen)"
if nice python3 scripts/esp_typecheck.py --toolchain "$TC" --target "$SPEC" | tee "$work/esp.log"; then
    stubbed=$(sed -n 's/.*(\([0-9]*\) crates stubbed).*/\1/p' "$work/esp.log")
    rows+=("$(printf '%-46s %-6s %5s s' "firmware/esp type check ($stubbed crates stubbed)" ok "$(elapsed "$start")")")
else
    failed=1
    rows+=("$(printf '%-46s %-6s %5s s' "firmware/esp type check" FAILED "$(elapsed "$start")")")
fi

if ! git diff --quiet -- "$SIZES" 2>/dev/null; then
    echo
    echo "note: $SIZES changed (the host memory plan reads it): commit it"
fi
echo
echo "Xtensa firmware check, $NIGHTLY ($TC), $SPEC; sizes in bytes before linking"
printf '%-46s %-6s %7s %9s %9s %7s %7s\n' stage result time .text .rodata .data .bss
for r in "${rows[@]}"; do echo "$r"; done
printf '%-46s %-6s %5s s\n' total "$([ "$failed" = 0 ] && echo ok || echo FAILED)" "$(elapsed "$total")"
exit "$failed"
