#!/usr/bin/env python3
"""Type-checks the badge's esp-hal shell (`firmware/esp`) for Xtensa with upstream nightly Rust.

Upstream rustc has no Xtensa inline assembly: every `asm!`, `global_asm!` and naked function
fails with E0472 ("inline assembly is unsupported on this target"), and esp-hal, xtensa-lx,
xtensa-lx-rt, esp-backtrace and friends are full of them. So this tool:

1. asks cargo which registry crates `firmware/esp` uses on the target, at the versions of its
   committed `Cargo.lock` (`--locked`: a manifest that no longer matches the lock fails here);
2. copies each of those crates whose sources contain `asm!`, `global_asm!`, `naked_asm!` or a
   `#[naked]` attribute out of cargo's registry into a cache folder (`target/xtensa-stubs/`,
   refreshed when this tool changes) and there replaces each `asm!`/`naked_asm!` invocation with
   `unreachable!()`, removes each `global_asm!` item and drops the naked attributes;
3. copies the workspace (manifest, lock, build script, `src/`, `.cargo/`) into a temporary folder,
   adds a `[patch.crates-io]` table pointing at the stubbed copies, and runs
   `cargo +<nightly> check --release -Zbuild-std=core,alloc` for the JSON target spec there, with
   `--cfg badge_check_no_asm` (our own `asm!` sites are stubbed behind that cfg);
4. checks that the patched resolution kept every version of the committed lock.

What it proves: every build script runs (chip and output features included), and our code and
every dependency type-check against the real APIs with the real features. What it does NOT
prove: code generation, inline assembly, linking, or anything at run time. The real
`firmware/esp` sources and lock are never written.

Usage: scripts/esp_typecheck.py --toolchain nightly-2026-05-20 --target firmware/xtensa-esp32s3.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A macro invocation of inline or module-level assembly, optionally by its full path.
MACRO_RE = re.compile(
    r"(?:(?:::\s*)?(?:core|std)\s*::\s*arch\s*::\s*)?"
    r"(?P<name>asm|global_asm|naked_asm)\s*!\s*(?P<open>[(\[{])"
)
NAKED_RE = re.compile(r"#\s*\[\s*(?:unsafe\s*\(\s*naked\s*\)|naked)\s*\]")
# Cheap pre-filter: only files matching this are lexed.
CANDIDATE_RE = re.compile(r"\b(?:asm|global_asm|naked_asm)\s*!|\bnaked\b")
RAW_STR_RE = re.compile(r'[bc]?r(#*)"')
CLOSE = {"(": ")", "[": "]", "{": "}"}
STAMP = ".badge-stub-stamp"


def is_ident(c: str) -> bool:
    return c.isalnum() or c == "_"


def skip_literal_or_comment(s: str, i: int) -> int:
    """If a comment, string or char literal starts at `i`, the index just past it; else `i`."""
    if s.startswith("//", i):
        j = s.find("\n", i)
        return len(s) if j < 0 else j
    if s.startswith("/*", i):
        depth, j = 1, i + 2
        while j < len(s) and depth:
            if s.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif s.startswith("*/", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        return j
    c = s[i]
    if c in "rbc" and (i == 0 or not is_ident(s[i - 1])):
        m = RAW_STR_RE.match(s, i)
        if m:
            end = s.find('"' + m.group(1), m.end())
            return len(s) if end < 0 else end + 1 + len(m.group(1))
    if c == '"':
        j = i + 1
        while j < len(s) and s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        return j + 1
    if c == "'":
        # A char literal ('x', '\n', '\u{..}') or a lifetime/label ('a): only the former is
        # skipped whole.
        if s.startswith("\\", i + 1):
            j = s.find("'", i + 3)
            return i + 1 if j < 0 else j + 1
        if i + 2 < len(s) and s[i + 2] == "'":
            return i + 3
    return i


def next_code(s: str, i: int) -> int:
    """The first index from `i` on that is code, not inside a literal or comment."""
    while i < len(s):
        j = skip_literal_or_comment(s, i)
        if j == i:
            return i
        i = j
    return len(s)


def matching_close(s: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at`, skipping literals and comments."""
    stack = [CLOSE[s[open_at]]]
    i = open_at + 1
    while (i := next_code(s, i)) < len(s):
        c = s[i]
        if c in CLOSE:
            stack.append(CLOSE[c])
        elif c in ")]}":
            if c != stack.pop():
                raise ValueError(f"unbalanced `{c}` at offset {i}")
            if not stack:
                return i
        i += 1
    raise ValueError(f"no closing bracket for offset {open_at}")


def stub_source(s: str) -> tuple[str, dict[str, int]]:
    """`s` with every assembly site stubbed, and how many of each kind were replaced."""
    out: list[str] = []
    counts = {"asm": 0, "global_asm": 0, "naked": 0}
    i = start = 0
    while (i := next_code(s, i)) < len(s):
        c = s[i]
        prev = s[i - 1] if i else " "
        if c == "#":
            m = NAKED_RE.match(s, i)
            if m:
                out.append(s[start:i])
                counts["naked"] += 1
                i = start = m.end()
                continue
        elif (is_ident(c) or c == ":") and not is_ident(prev) and prev != ":":
            m = MACRO_RE.match(s, i)
            if m:
                close = matching_close(s, m.end() - 1)
                out.append(s[start:i])
                end = close + 1
                if m.group("name") == "global_asm":
                    counts["global_asm"] += 1
                    k = end
                    while k < len(s) and s[k].isspace():
                        k += 1
                    if m.group("open") != "{" and k < len(s) and s[k] == ";":
                        end = k + 1
                else:
                    counts["asm"] += 1
                    out.append("unreachable!" + m.group("open") + CLOSE[m.group("open")])
                i = start = end
                continue
            # Skip the rest of this identifier so that `foo_asm!` never matches inside it.
            i += 1
            while i < len(s) and is_ident(s[i]):
                i += 1
            continue
        i += 1
    out.append(s[start:])
    return "".join(out), counts


def stub_crate(src: Path, dest: Path) -> dict[str, int]:
    """Copies the crate at `src` to `dest` with its assembly stubbed; returns the counts."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=False)
    total = {"asm": 0, "global_asm": 0, "naked": 0}
    for path in sorted(tmp.rglob("*.rs")):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if not CANDIDATE_RE.search(text):
            continue
        try:
            new, counts = stub_source(text)
        except ValueError as e:
            raise SystemExit(f"esp_typecheck: {path.relative_to(tmp)} in {src.name}: {e}")
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            for k, v in counts.items():
                total[k] += v
    (tmp / STAMP).write_text(json.dumps({"tool": tool_hash(), "counts": total}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return total


def has_assembly(src: Path) -> bool:
    for path in src.rglob("*.rs"):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if CANDIDATE_RE.search(text) and stub_source(text)[0] != text:
            return True
    return False


def tool_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def cargo(toolchain: str, args: list[str], cwd: Path, env=None) -> str:
    """Runs cargo and returns its stdout; stderr is passed through and must not carry a
    warning about our own crates (host clippy never sees their Xtensa-only paths)."""
    cmd = ["cargo", f"+{toolchain}", *args]
    p = subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(p.stdout.read()))
    reader.start()
    lines = []
    for line in p.stderr:  # passed through as it comes: the check shows its progress
        sys.stderr.write(line)
        lines.append(line)
    reader.join()
    p.wait()
    out, err = "".join(stdout), "".join(lines)
    if p.returncode != 0:
        raise SystemExit(f"esp_typecheck: `{' '.join(cmd)}` failed (exit {p.returncode})")
    ours = re.findall(r"^warning: `(badge-esp|badge-firmware)` \(.*\) generated .*$", err, re.M)
    if ours:
        raise SystemExit(f"esp_typecheck: warnings in {', '.join(sorted(set(ours)))} (above)")
    return out


def target_packages(toolchain: str, target: Path, ws: Path) -> set[tuple[str, str]]:
    """(name, version) of every crate compiled for the target (not build scripts' or proc
    macros' host-side dependencies)."""
    text = cargo(
        toolchain,
        ["tree", "--locked", "-Zjson-target-spec", "--target", str(target),
         "-e", "normal", "--prefix", "none", "-f", "{p}"],
        ws,
    )
    pkgs = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("v") and "(proc-macro)" not in line:
            pkgs.add((parts[0], parts[1][1:]))
    return pkgs


def lock_versions(lock: Path) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for p in tomllib.loads(lock.read_text())["package"]:
        versions.setdefault(p["name"], set()).add(p["version"])
    return versions


def absolutize_paths(manifest: str, base: Path) -> str:
    """`path = "..."` entries that point outside the crate, made absolute (the copy lives
    elsewhere)."""

    def fix(m: re.Match) -> str:
        p = (base / m.group(2)).resolve()
        if p == base or base in p.parents:
            return m.group(0)
        return f'{m.group(1)}"{p.as_posix()}"'

    return re.sub(r'(\bpath\s*=\s*)"([^"]+)"', fix, manifest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toolchain", required=True, help="rustup toolchain, e.g. nightly-2026-05-20")
    ap.add_argument("--target", required=True, type=Path, help="JSON target spec")
    ap.add_argument("--workspace", type=Path, default=ROOT / "firmware/esp")
    ap.add_argument("--cache", type=Path, default=ROOT / "target/xtensa-stubs")
    ap.add_argument("--target-dir", type=Path, default=ROOT / "target/xtensa-esp")
    args = ap.parse_args()
    ws, target = args.workspace.resolve(), args.target.resolve()
    lock = ws / "Cargo.lock"
    if not lock.is_file():
        raise SystemExit(f"esp_typecheck: {lock} is missing (it pins the dependency versions)")

    # `metadata --locked` downloads what is missing and fails if the lock is out of date.
    meta = json.loads(cargo(args.toolchain, ["metadata", "--locked", "--format-version", "1"], ws))
    used = target_packages(args.toolchain, target, ws)
    args.cache.mkdir(parents=True, exist_ok=True)
    patches: list[tuple[str, str, Path]] = []
    for pkg in sorted(meta["packages"], key=lambda p: (p["name"], p["version"])):
        if not (pkg.get("source") or "").startswith("registry+"):
            continue
        if (pkg["name"], pkg["version"]) not in used:
            continue
        src = Path(pkg["manifest_path"]).parent
        dest = args.cache / f"{pkg['name']}-{pkg['version']}"
        stamp = dest / STAMP
        if stamp.is_file() and json.loads(stamp.read_text()).get("tool") == tool_hash():
            counts = json.loads(stamp.read_text())["counts"]
        elif has_assembly(src):
            counts = stub_crate(src, dest)
        else:
            continue
        print(
            f"esp_typecheck: stubbed {pkg['name']} {pkg['version']}: {counts['asm']} asm!, "
            f"{counts['global_asm']} global_asm!, {counts['naked']} naked attributes",
            flush=True,
        )
        patches.append((pkg["name"], pkg["version"], dest))

    with tempfile.TemporaryDirectory(prefix="esp-check-", dir=args.cache) as tmp_str:
        tmp = Path(tmp_str)
        for name in ["Cargo.lock", "build.rs", "src", ".cargo"]:
            p = ws / name
            if p.is_dir():
                shutil.copytree(p, tmp / name)
            elif p.is_file():
                shutil.copy2(p, tmp / name)
        manifest = absolutize_paths((ws / "Cargo.toml").read_text(), ws)
        if re.search(r"^\s*\[patch\.crates-io\]", manifest, re.M):
            raise SystemExit("esp_typecheck: Cargo.toml has its own [patch.crates-io]; merge not supported")
        seen: set[str] = set()
        lines = ["", "# Added by scripts/esp_typecheck.py: assembly stubbed, for a type check only.",
                 "[patch.crates-io]"]
        for name, version, dest in patches:
            key = name if name not in seen else f"{name}-stub-{version.replace('.', '-')}"
            seen.add(name)
            lines.append(f'{key} = {{ package = "{name}", path = "{dest.as_posix()}" }}')
        # Path dependencies are linted like our own code; the stubbed copies get the lint cap
        # that cargo gives registry crates (some `#![deny(warnings)]`, and stubs leave dead code).
        lines.insert(0, "")
        for name in sorted(seen):
            lines += ["", f'[profile.release.package."{name}"]', 'rustflags = ["--cap-lints", "allow"]']
        manifest = 'cargo-features = ["profile-rustflags"]\n' + manifest
        (tmp / "Cargo.toml").write_text(manifest + "\n".join(lines) + "\n")

        env = dict(os.environ)
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " --cfg badge_check_no_asm").strip()
        # The build script finds the board profile relative to its own folder; the copy lives
        # elsewhere, so point it at the real one (unless the caller chose a board).
        env.setdefault("BADGE_BOARD", str(ws.parent.parent / "configs/boards/esp32s3-n16r8.toml"))
        cmd = ["check", "--release", "-Zjson-target-spec", "-Zbuild-std=core,alloc",
               "--target", str(target), "--target-dir", str(args.target_dir.resolve())]
        print(f"esp_typecheck: cargo +{args.toolchain} {' '.join(cmd)}  (in a copy of {ws})", flush=True)
        cargo(args.toolchain, cmd, tmp, env=env)

        # The patched crates must have kept the committed versions, and nothing else moved.
        before, after = lock_versions(lock), lock_versions(tmp / "Cargo.lock")
        moved = sorted(n for n in before if n in after and before[n] != after[n])
        if moved:
            raise SystemExit(f"esp_typecheck: the check resolved other versions than Cargo.lock for: {', '.join(moved)}")
    print(f"esp_typecheck: badge-esp type-checks ({len(patches)} crates stubbed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
