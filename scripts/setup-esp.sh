#!/usr/bin/env bash
# Sets up the ESP32-S3 Rust toolchain, builds the badge firmware and flashes it, with a model.
#
#   scripts/setup-esp.sh                      # toolchain + build only
#   scripts/setup-esp.sh model.bin            # ... then flash firmware, table and model
#   PORT=/dev/ttyACM0 scripts/setup-esp.sh model.bin
#
# Needs rustup and a network connection (espup downloads Espressif's Rust fork and LLVM).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-}"
PORT_ARGS=()
[ -n "${PORT:-}" ] && PORT_ARGS=(--port "$PORT")

command -v cargo >/dev/null 2>&1 || { echo "install rustup first: https://rustup.rs" >&2; exit 1; }

# 1. The Xtensa toolchain (`+esp`), once.
command -v espup >/dev/null 2>&1 || cargo install espup --locked
if ! rustup toolchain list | grep -q '^esp'; then
  espup install --targets esp32s3
fi
# shellcheck disable=SC1091
. "$HOME/export-esp.sh"
# esp-hal 1.2 (the version in firmware/esp/Cargo.lock) needs rustc 1.95 or newer.
read -r major minor < <(rustc +esp -V | sed -n 's/^rustc \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
if [ "${major:-0}" -lt 1 ] || { [ "$major" -eq 1 ] && [ "${minor:-0}" -lt 95 ]; }; then
  echo "the esp toolchain is $(rustc +esp -V); esp-hal 1.2 needs 1.95 or newer: run espup update" >&2
  exit 1
fi

# 2. The firmware (firmware/esp is its own crate, outside the host workspace), with exactly the
#    dependency versions of firmware/esp/Cargo.lock (the ones scripts/check-firmware.sh checks).
(cd firmware/esp && cargo +esp build --release --locked)
ELF=firmware/esp/target/xtensa-esp32s3-none-elf/release/badge-esp
echo "built $ELF"

# 3. Flash: `badge flash` converts the ELF (bootloader + app image), writes the partition
#    table and the model, each verified by MD5. Hold BOOT while plugging in if it cannot connect.
if [ -n "$MODEL" ]; then
  cargo run --release -- flash --model "$MODEL" --app "$ELF" "${PORT_ARGS[@]}"
else
  echo "next: cargo run --release -- flash --model model.bin --app $ELF"
fi
