# Sourced on a GPU machine (by scripts/gpu-run.sh, or by hand for a shorter run):
#
#   source scripts/gpu-env.sh TURBOVSR_BINARY|BUNDLE.tar.xz
#
# unpacks scripts/gpu.sh's bundle if given one, finds the CUDA 13 (or 12) libraries the binaries open
# (and cuDNN 9 for the cudnn build), and leaves `bin` (the cuda build), `cudnn_bin` (the cudnn
# build, empty when it or libcudnn is missing) and LD_LIBRARY_PATH set.
bin="$(realpath "${1:?usage: source scripts/gpu-env.sh TURBOVSR_BINARY|BUNDLE.tar.xz}")"
if [[ "$bin" == *.tar.xz ]]; then
  # scripts/gpu.sh's bundle: the binary and lib/ (GStreamer, GLib)
  unpacked="$(mktemp -d)"
  tar -C "$unpacked" -xJf "$bin"
  bin="$unpacked/turbovsr"
fi

# The binary opens the CUDA libraries at run time (scripts/cuda-loading.sh) by their sonames,
# CUDA 13's first, then CUDA 12's; the driver's libcuda.so.1 is on the loader's path already.
# Find where this machine keeps cuBLAS (with its cuBLASLt) and cuRAND, and put them on the path.
wanted=("libcublas.so.13 libcublas.so.12" "libcublasLt.so.13 libcublasLt.so.12" "libcurand.so.10")
search=(${TURBOVSR_CUDA_LIBS:-} /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64 /usr/lib/x86_64-linux-gnu)
if command -v python3 >/dev/null; then
  while IFS= read -r d; do search+=("$d"); done < <(python3 -c \
    'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
fi
libdirs=()
for names in "${wanted[@]}"; do
  found=""
  for so in $names; do
    for d in "${search[@]}"; do
      [ -d "$d" ] || continue
      found="$(find "$d" -maxdepth 5 -name "$so" -print -quit 2>/dev/null || true)"
      [ -n "$found" ] && break 2
    done
  done
  if [ -z "$found" ]; then
    echo "gpu-env: none of $names found (searched ${search[*]}); set TURBOVSR_CUDA_LIBS to its folder" >&2
    return 1
  fi
  libdirs+=("$(dirname "$found")")
done
# cuDNN 9 for the cudnn build (PyTorch's wheels carry it); without it that build's steps are
# skipped.
cudnn_bin="$(dirname "$bin")/turbovsr-cudnn"
if [ -x "$cudnn_bin" ]; then
  found=""
  for d in "${search[@]}"; do
    [ -d "$d" ] || continue
    found="$(find "$d" -maxdepth 5 -name libcudnn.so.9 -print -quit 2>/dev/null || true)"
    [ -n "$found" ] && break
  done
  if [ -n "$found" ]; then
    libdirs+=("$(dirname "$found")")
  else
    echo "gpu-env: libcudnn.so.9 not found; skipping the cuDNN build's steps"
    cudnn_bin=""
  fi
else
  cudnn_bin=""
fi
# GStreamer and GLib as scripts/gpu.sh staged them next to the binary.
[ -d "$(dirname "$bin")/lib" ] && libdirs+=("$(dirname "$bin")/lib")
LD_LIBRARY_PATH="$(printf '%s\n' "${libdirs[@]}" | awk '!seen[$0]++' | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
if ldd "$bin" | grep -q "not found"; then
  echo "gpu-env: libraries missing for $bin:" >&2
  ldd "$bin" | grep "not found" >&2
  return 1
fi

