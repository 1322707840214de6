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

# 2. The firmware (firmware/esp is its own crate, outside the host workspace).
(cd firmware/esp && cargo +esp build --release)
ELF=firmware/esp/target/xtensa-esp32s3-none-elf/release/badge-esp
echo "built $ELF"

# 3. Flash: `badge flash` converts the ELF (bootloader + app image), writes the partition
#    table and the model, each verified by MD5. Hold BOOT while plugging in if it cannot connect.
if [ -n "$MODEL" ]; then
  cargo run --release -- flash --model "$MODEL" --app "$ELF" "${PORT_ARGS[@]}"
else
  echo "next: cargo run --release -- flash --model model.bin --app $ELF"
fi
