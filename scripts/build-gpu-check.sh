#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine, on a machine without a GPU or a CUDA install: the
# learner, proxima-bench and the golden and backend-equivalence test binaries with `--features cuda`, stripped and
# xz-compressed into target/gpu-check/ (about 45 MB; a device machine takes at most 64 MiB of carried files).
#
#   scripts/build-gpu-check.sh        # ~20 minutes on 2 cores the first time (nvcc builds candle's kernels)
#
# The CUDA 13.0 toolchain comes from NVIDIA's PyPI wheels into .venv-cuda/ (or $PROXIMA_CUDA_VENV; no CUDA 12
# wheel ships nvcc): nvcc, the headers, cuBLAS, cuRAND and the static CUDA runtime. The binaries link `libcuda.so.1` (the driver),
# `libcublas.so.13`, `libcublasLt.so.13` and `libcurand.so.10` at run time; the driver must be 580 or newer. The
# kernels are built for compute capability 9.0 (H100, H200; `CUDA_COMPUTE_CAP` to change). Linking needs a
# `libcuda.so`, which no wheel has: a stub that exports the driver API's names (each returning an error) is built
# into .venv-cuda/root/lib64/stubs, which is on the linker's path only, never on a run-time path.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC_VERSION="13.0.88"
CUDART_VERSION="13.0.96"
CUBLAS_VERSION="13.1.0.3"
CURAND_VERSION="10.4.0.35"
CCCL_VERSION="13.0.85"
VENV="${PROXIMA_CUDA_VENV:-$PWD/.venv-cuda}"
ROOT="$VENV/root"
OUT="$PWD/target/gpu-check"
export CARGO_TARGET_DIR="$PWD/target/cuda"

# stub SONAME MODULE PREFIX PATH [VERSIONED]: a shared library named SONAME at PATH that exports every `PREFIX*`
# function cudarc's MODULE binds, each returning an error (999); with VERSIONED, under the symbol version SONAME
# (as the real library's, which the binaries then ask for).
stub() {
  local sys
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/"$2"/sys/mod.rs 2>/dev/null | head -1)
  if [ -z "$sys" ]; then
    cargo fetch --locked
    sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/"$2"/sys/mod.rs | head -1)
  fi
  grep -oE "^pub unsafe fn $3[A-Za-z0-9_]+" "$sys" | awk '{print "int " $4 "(void) { return 999; }"}' | sort -u \
    >"$VENV/$1.c"
  mkdir -p "$(dirname "$4")"
  local version=()
  if [ -n "${5:-}" ]; then
    printf '%s { global: *; };\n' "$1" >"$VENV/$1.map"
    version=(-Wl,--version-script,"$VENV/$1.map")
  fi
  gcc -shared -fPIC -Wl,-soname,"$1" "${version[@]}" -o "$4" "$VENV/$1.c"
}

if ! [ -x "$ROOT/bin/nvcc" ]; then
  echo "== CUDA $NVCC_VERSION toolchain from PyPI into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "nvidia-cuda-nvcc==$NVCC_VERSION" \
    "nvidia-nvvm==$NVCC_VERSION" "nvidia-cuda-crt==$NVCC_VERSION" "nvidia-cuda-nvrtc==$NVCC_VERSION" \
    "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cublas==$CUBLAS_VERSION" "nvidia-curand==$CURAND_VERSION" \
    "nvidia-cuda-cccl==$CCCL_VERSION"
  cuda=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
  mkdir -p "$ROOT/lib64/stubs"
  for d in bin include nvvm; do ln -sfn "$cuda/$d" "$ROOT/$d"; done
  for f in "$cuda"/lib/*.so.* "$cuda"/lib/*.a; do ln -sf "$f" "$ROOT/lib64/"; done
  (
    cd "$ROOT/lib64"
    for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do ln -sf "$lib" "${lib%.*}"; done
    # candle's kernels ask for the shared CUDA runtime; this linker script links the static one instead, so the
    # device machine needs no libcudart.
    printf 'INPUT(%s/libcudart_static.a -lrt -lpthread -ldl)\n' "$ROOT/lib64" >libcudart.so
  )
  # The link-time stub of the driver API.
  stub libcuda.so.1 driver cu "$ROOT/lib64/stubs/libcuda.so"
fi

export CUDA_ROOT="$ROOT" CUDA_HOME="$ROOT" PATH="$ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000 CUDAFORGE_THREADS=1
export LIBRARY_PATH="$ROOT/lib64:$ROOT/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"

echo "== building with --features cuda into $CARGO_TARGET_DIR"
cargo build --release --locked -p proxima-cli -p proxima-bench --features proxima-cli/cuda,proxima-bench/cuda
tests=$(cargo test --release --locked -p learner --features cuda --test golden --test backends --no-run \
  --message-format=json | "$VENV/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("golden", "backends"):
        print(m["target"]["name"], m["executable"])')

rm -rf "$OUT"
mkdir -p "$OUT"
pack() { # pack NAME PATH: a stripped, xz-compressed copy as $OUT/NAME.xz
  strip -o "$OUT/$1" "$2"
  xz -T2 -6 "$OUT/$1"
}
pack learner "$CARGO_TARGET_DIR/release/learner"
pack proxima-bench "$CARGO_TARGET_DIR/release/proxima-bench"
while read -r name path; do pack "$name" "$path"; done <<<"$tests"
# PyTorch's CUDA 13 wheels have no cuRAND, and the learner never draws random numbers on the GPU: the check
# falls back to this stub when the machine has no libcurand.so.10.
stub libcurand.so.10 curand curand "$OUT/stubs/libcurand.so.10" versioned
git rev-parse HEAD >"$OUT/COMMIT"
du -sh "$OUT"
ls -lR "$OUT"
