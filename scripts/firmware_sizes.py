#!/usr/bin/env python3
"""Sizes of the badge firmware's Xtensa objects, and what they leave of the board's budgets.

Reads the artifacts of one `cargo build --message-format=json-render-diagnostics` (stdin or
--artifacts) of `badge-firmware` for the ESP32-S3, and prints:

- `.text` / `.rodata` / `.data` / `.bss` of the crate's own objects, and its largest symbols;
- the same for everything else that build produced (its dependencies and core, alloc,
  compiler_builtins), whole: an upper bound of what of them the linker keeps;
- the budgets: flash (the app partition of `firmware/partitions.csv`), IRAM (code that must
  run from RAM: `.rwtext`/`.iram*` sections) and internal data RAM, with their headroom.

Nothing is linked (upstream LLVM has no Xtensa linker), so esp-hal and the runtime are not in
these figures; `--write` records them in `firmware/measured-size.toml`, which the host's
memory plan (`badge export`/`badge inspect`) reads with its stated margin.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

# ESP32-S3 internal memory as esp-hal 1.2.2 links it (ld/esp32s3/memory.x, with its default
# 32 KB instruction cache): iram_seg = 328K - 0x400 vectors - 32K cache; dram_seg =
# 0x3FCDB700 - 0x3FC88000. The two share the same SRAM (D/IRAM), so code in IRAM comes out
# of data RAM too.
IRAM_SEG = 328 * 1024 - 0x400 - 32 * 1024
DRAM_SEG = 0x3FCDB700 - 0x3FC88000

KINDS = ["text", "rodata", "data", "bss", "iram"]


def kind_of(section: str) -> str | None:
    for prefix, kind in [
        (".text", "text"), (".literal", "text"), (".rodata", "rodata"), (".srodata", "rodata"),
        (".data", "data"), (".sdata", "data"), (".bss", "bss"), (".sbss", "bss"),
        (".rwtext", "iram"), (".iram", "iram"),
    ]:
        if section == prefix or section.startswith(prefix + "."):
            return kind
    return None


def section_sizes(llvm_size: Path, rlib: Path) -> dict[str, int]:
    out = subprocess.run([str(llvm_size), "-A", str(rlib)], check=True, text=True,
                         capture_output=True).stdout
    sizes = dict.fromkeys(KINDS, 0)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            k = kind_of(parts[0])
            if k:
                sizes[k] += int(parts[1])
    return sizes


def largest_symbols(llvm_nm: Path, rlib: Path, n: int) -> list[tuple[int, str, str]]:
    out = subprocess.run([str(llvm_nm), "--print-size", "--size-sort", "--demangle", str(rlib)],
                         check=True, text=True, capture_output=True).stdout
    syms = []
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ ([0-9a-f]+) ([tTrRdDbB]) (.*)$", line)
        if m:
            syms.append((int(m.group(1), 16), m.group(2), m.group(3)))
    syms.sort(key=lambda s: -s[0])
    return syms[:n]


def app_partition(csv: Path) -> tuple[str, int]:
    """The first `app` partition of an ESP-IDF table (factory, else ota_0), and its size."""
    for line in csv.read_text().splitlines():
        f = [x.strip() for x in line.split("#")[0].split(",")]
        if len(f) >= 5 and f[1] == "app":
            size = f[4]
            mul = {"K": 1024, "M": 1024 * 1024}.get(size[-1:].upper(), 1)
            num = size[:-1] if mul > 1 else size
            return f[0], int(num, 16 if num.lower().startswith("0x") else 10) * mul
    raise SystemExit(f"firmware_sizes: {csv}: no app partition")


def shell_ram(main_rs: Path) -> tuple[int, int]:
    """The internal heap and the second core's stack that `firmware/esp/src/main.rs` declares."""
    text = main_rs.read_text()
    heap = re.search(r"heap_allocator!\(\s*size:\s*(\d+)\s*\*\s*1024\s*\)", text)
    stack = re.search(r"Stack<(\d+)>", text)
    return (int(heap.group(1)) * 1024 if heap else 0, int(stack.group(1)) if stack else 0)


def row(label: str, s: dict[str, int]) -> str:
    return f"  {label:<44} {s['text']:>9} {s['rodata']:>9} {s['data']:>7} {s['bss']:>7} {s['iram']:>6}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="cargo's JSON messages")
    ap.add_argument("--llvm-bin", type=Path, required=True, help="folder of llvm-size/llvm-nm")
    ap.add_argument("--crate", default="badge-firmware")
    ap.add_argument("--target-name", default="xtensa-esp32s3-none-elf")
    ap.add_argument("--label", default="")
    ap.add_argument("--partitions", type=Path, required=True)
    ap.add_argument("--shell-main", type=Path, required=True)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--write", type=Path, help="record the figures in this TOML file")
    ap.add_argument("--toolchain", default="")
    ap.add_argument("--summary", type=Path, help="append `text rodata data bss` here")
    args = ap.parse_args()

    own: Path | None = None
    others: list[Path] = []
    for line in args.artifacts.read_text().splitlines():
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        pkg = msg.get("package_id", "")
        is_own = f"#{args.crate}@" in pkg  # `path+file:///…/firmware#badge-firmware@0.1.0`
        if msg.get("reason") == "compiler-artifact":
            for f in msg.get("filenames", []):
                # Build scripts' own dependencies are host objects: not the badge's.
                if not f.endswith(".rlib") or f"/{args.target_name}/" not in f:
                    continue
                if is_own:
                    own = Path(f)
                else:
                    others.append(Path(f))
    if own is None:
        raise SystemExit(f"firmware_sizes: no rlib of {args.crate} in {args.artifacts}")

    size, nm = args.llvm_bin / "llvm-size", args.llvm_bin / "llvm-nm"
    mine = section_sizes(size, own)
    libs = dict.fromkeys(KINDS, 0)
    for rlib in others:
        for k, v in section_sizes(size, rlib).items():
            libs[k] += v
    print(f"sizes ({args.label or args.crate}), bytes, before linking:")
    print(f"  {'':<44} {'.text':>9} {'.rodata':>9} {'.data':>7} {'.bss':>7} {'IRAM':>6}")
    print(row(f"{args.crate} (own objects)", mine))
    print(row(f"{len(others)} dependencies + core/alloc (whole)", libs))
    print(f"largest symbols of {args.crate}:")
    for n, kind, name in largest_symbols(nm, own, args.symbols):
        print(f"  {n:>8}  {kind}  {name[:100]}")

    part_name, part_size = app_partition(args.partitions)
    flash_own = mine["text"] + mine["rodata"] + mine["data"]
    flash_all = flash_own + libs["text"] + libs["rodata"] + libs["data"]
    heap, stack = shell_ram(args.shell_main)
    ram = mine["data"] + mine["bss"] + mine["iram"] + heap + stack
    print("budgets (esp-hal and the runtime are not in these: nothing is linked):")
    print(f"  flash, app partition `{part_name}` {part_size} B: {args.crate} {flash_own} B "
          f"(headroom {part_size - flash_own} B); with all of its dependencies and core/alloc "
          f"{flash_all} B (headroom {part_size - flash_all} B)")
    print(f"  IRAM (iram_seg {IRAM_SEG} B): code that must run from RAM {mine['iram']} B "
          f"(headroom {IRAM_SEG - mine['iram']} B)")
    print(f"  internal data RAM (dram_seg {DRAM_SEG} B, shared with IRAM): .data+.bss "
          f"{mine['data'] + mine['bss']} B + IRAM code {mine['iram']} B + internal heap {heap} B "
          f"+ core-1 stack {stack} B (main.rs) = {ram} B (headroom {DRAM_SEG - ram} B)")
    if part_size < flash_own or IRAM_SEG < mine["iram"] or DRAM_SEG < ram:
        print("firmware_sizes: over budget", file=sys.stderr)
        return 1

    if args.write:
        text = (
            "# Written by scripts/check-firmware.sh (stage 2, the badge's own build: feature\n"
            "# esp32s3), do not edit. Bytes of badge-firmware's own Xtensa objects before linking,\n"
            "# and of its dependencies with core/alloc/compiler_builtins taken whole. The memory\n"
            "# plan of `badge export`/`badge inspect` derives the firmware's flash figure from\n"
            "# them (src/board.rs, FIRMWARE_MARGIN).\n"
            f'toolchain = "{args.toolchain}"\n'
            + "".join(f"{k} = {mine[k]}\n" for k in KINDS)
            + f"libs_flash = {libs['text'] + libs['rodata'] + libs['data']}\n"
        )
        tmp = args.write.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.write)
        print(f"wrote {args.write}")
    if args.summary:
        with args.summary.open("a") as f:
            f.write(f"{mine['text']} {mine['rodata']} {mine['data']} {mine['bss']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
