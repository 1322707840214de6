#!/usr/bin/env bash
# Build `badge --features cuda` without a system CUDA install.
#
# The CUDA compiler, headers and libraries come from NVIDIA's Python wheels, installed with
# `pip --target` into target/cuda-toolkit/<version>/. The cu12 wheels only carry `ptxas` (no `nvcc`
# driver, no `cicc`), so the toolkit is CUDA 13.0, the first release whose wheels hold a whole
# compiler (`nvidia/cu13/{bin,nvvm,include,lib}`). 13.0 is the oldest 13.x: its PTX and runtime
# need the smallest driver (>= 580) on the GPU box. cudarc 0.19 (under candle 0.11) knows 13.0-13.4.
#
# Linking needs `libcuda.so`, which ships with the GPU driver, not with any wheel. The script makes a
# stub with the driver-API names cudarc declares (what the toolkit's own lib64/stubs/libcuda.so is);
# at run time the real libcuda.so.1 of the driver is loaded instead.
#
# The build goes to its own target folder (target/cuda by default), so the default build and the
# tests never need any of this.
#
# Usage: scripts/build-cuda.sh [--compute-cap 90] [--toolkit-only] [-- extra cargo args]
# Prints `export ...` lines to run the binary (LD_LIBRARY_PATH for cudart/cublas/curand/nvrtc).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# Pinned wheel versions, one CUDA 13.0 release. Override BADGE_CUDA_WHEELS to try another set.
CUDA_RELEASE="13.0"
DEFAULT_WHEELS=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-runtime==13.0.96"
    "nvidia-cuda-cccl==13.0.85"
    "nvidia-cuda-nvrtc==13.0.88"
    "nvidia-cublas==13.0.2.14"
    "nvidia-curand==10.4.0.35"
)
read -r -a WHEELS <<<"${BADGE_CUDA_WHEELS:-${DEFAULT_WHEELS[*]}}"

# An H200 (and H100) is compute capability 9.0; there is no nvidia-smi here to ask.
COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
TOOLKIT_ONLY=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --compute-cap) COMPUTE_CAP="$2"; shift 2 ;;
        --toolkit-only) TOOLKIT_ONLY=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build-cuda.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

PREFIX="$ROOT/target/cuda-toolkit/$CUDA_RELEASE"
CUDA_ROOT="$PREFIX/nvidia/cu13"
STAMP="$PREFIX/.installed"
started=$(date +%s)

# 1. The toolkit from wheels (once; the stamp names the exact wheel set).
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "${WHEELS[*]}" ]]; then
    echo "== installing ${WHEELS[*]} into $PREFIX"
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$PREFIX" "${WHEELS[@]}"
    echo "${WHEELS[*]}" >"$STAMP"
fi
[[ -x "$CUDA_ROOT/bin/nvcc" ]] || { echo "build-cuda.sh: no nvcc at $CUDA_ROOT/bin/nvcc after the install" >&2; exit 1; }

# 2. A CUDA_ROOT the build scripts understand: lib64 with the unversioned names the linker wants.
mkdir -p "$CUDA_ROOT/lib64/stubs"
for lib in "$CUDA_ROOT"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    ln -sf "$lib" "$CUDA_ROOT/lib64/$base"
    ln -sf "$lib" "$CUDA_ROOT/lib64/${base%%.so.*}.so"
done

# 3. The libcuda stub: every driver-API function cudarc can call, as an empty symbol.
CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)"
if [[ -z "$CUDARC_SRC" ]]; then
    cargo fetch --quiet
    CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)"
fi
STUB="$CUDA_ROOT/lib64/stubs/libcuda.so"
if [[ ! -f "$STUB" ]]; then
    grep -ohE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$CUDARC_SRC/src/driver/sys/mod.rs" |
        sed -E 's/.*"(cu[A-Za-z0-9_]+)".*/void \1(void) {}/' | sort -u >"$PREFIX/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB" "$PREFIX/libcuda_stub.c"
fi
ln -sf "$STUB" "$CUDA_ROOT/lib64/libcuda.so"

export CUDA_ROOT CUDA_PATH="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT" CUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="$COMPUTE_CAP"
export LIBRARY_PATH="$CUDA_ROOT/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
echo "== nvcc: $(nvcc --version | grep release)"
echo "== CUDA_ROOT=$CUDA_ROOT CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
[[ $TOOLKIT_ONLY == 1 ]] && exit 0

# 4. The build, in its own target folder.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
echo "== cargo build --release --features cuda --bin badge (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release --features cuda --bin badge "${EXTRA[@]}"
elapsed=$(($(date +%s) - started))
echo "== built $CARGO_TARGET_DIR/release/badge in ${elapsed}s"
echo "To run it: export LD_LIBRARY_PATH=$CUDA_ROOT/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
