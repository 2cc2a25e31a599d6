#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit pieces that `cargo build --features cuda` needs into a fixed
# prefix, from NVIDIA's PyPI wheels, and prints the environment to build with. Idempotent: a
# second run finds the prefix complete and only prints the environment.
#
#   eval "$(scripts/cuda-toolkit.sh)"    # then: cargo build --release --features cuda
#
# Why CUDA 13.0 from wheels, not Debian's nvidia-cuda-toolkit 11.8: the kernels' PTX has to be
# one the GPU machine's driver (580, CUDA 13.0) can JIT-compile for the H100, and cudarc's
# bindings follow the toolkit's version. scripts/build-cuda.sh builds with cudarc loading the
# libraries at run time (scripts/cuda-loading.sh), trying CUDA 13's sonames and then 12's and
# 11's; the CUDA runtime is linked statically from here (libcudart_static.a).
#
# The wheels have no libcuda.so (the driver's library, which a linked build's linker wants to
# see). Like the toolkit's own lib64/stubs/libcuda.so, we build a stub exporting the driver entry
# points that cudarc declares, for `cargo build --features cuda` without the loading patch; it
# only satisfies the link and is never shipped: at run time the driver's libcuda.so.1 is loaded.
set -euo pipefail

PREFIX="${TURBOVSR_CUDA_PREFIX:-/opt/turbovsr-cuda-13.0}"
# CUDA 13.0 update 2 component versions (pinned: a different minor would still run, but the
# build must be reproducible).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
  # cuDNN, for the `cudnn` feature's link only: its API library and headers are kept, not its
  # 450 MB of engine libraries, which the GPU machine's own cuDNN 9 (PyTorch's) provides.
  nvidia-cudnn-cu13==9.13.0.50
)
STAMP="$PREFIX/.turbovsr-toolkit"
want_stamp="$(printf '%s\n' "${WHEELS[@]}" stub-v1)"

print_env() {
  cat <<EOF
export CUDA_HOME=$PREFIX
export CUDA_ROOT=$PREFIX
export NVCC=$PREFIX/bin/nvcc
export PATH=$PREFIX/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-80}
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
  print_env
  exit 0
fi

log() { echo "cuda-toolkit: $*" >&2; }
command -v python3 >/dev/null || { log "python3 (with pip) is required"; exit 1; }
command -v gcc >/dev/null || { log "gcc is required (host compiler for nvcc)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "downloading ${WHEELS[*]}"
python3 -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/whl" "${WHEELS[@]}" >&2

stage="$PREFIX.partial"
rm -rf "$stage"
mkdir -p "$stage"
for w in "$work"/whl/*.whl; do
  python3 -m zipfile -e "$w" "$work/unz" >&2
done
# Every wheel lays its files under nvidia/cu13/{bin,include,lib,nvvm}: the toolkit's own layout
# once merged, which nvcc.profile (TOP = bin/..) expects.
cp -a "$work/unz/nvidia/cu13/." "$stage/"
cp -a "$work/unz/nvidia/cudnn/include/." "$stage/include/"
cp -a "$work/unz/nvidia/cudnn/lib/libcudnn.so.9" "$stage/lib/"
chmod +x "$stage"/bin/* "$stage"/nvvm/bin/*
ln -sfn lib "$stage/lib64"
# Unversioned names for the linker (-lcublas etc.); the binary records the sonames.
(
  cd "$stage/lib"
  for so in *.so.*; do
    base="${so%%.so.*}.so"
    case "$so" in *.alt.so.*) continue ;; esac
    [ -e "$base" ] || ln -s "$so" "$base"
  done
)
# The driver stub: every cu* function cudarc's driver bindings declare, as empty functions, in
# a library whose soname is the driver's.
mkdir -p "$stage/lib/stubs"
find_src() {
  ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs \
    2>/dev/null | tail -1 || true
}
src="$(find_src)"
if [ -z "$src" ]; then
  (cd "$(dirname "$0")/.." && cargo fetch -q >&2)
  src="$(find_src)"
fi
[ -n "$src" ] || { log "cudarc 0.19 sources not found after 'cargo fetch'"; exit 1; }
grep -oE '^ *fn cu[A-Za-z0-9_]+\(' "$src" | sed -E 's/^ *fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u \
  >"$work/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stage/lib/stubs/libcuda.so" "$work/cuda_stub.c"
printf '%s\n' "$want_stamp" >"$stage/.turbovsr-toolkit"
rm -rf "$PREFIX"
mv "$stage" "$PREFIX"
log "installed in $PREFIX ($("$PREFIX/bin/nvcc" --version | tail -1))"
print_env
