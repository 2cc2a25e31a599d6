#!/usr/bin/env bash
# The GPU half of scripts/gpu.sh; runs on a machine with an NVIDIA GPU, a driver for CUDA 13
# (>= 580) and the CUDA 13 libraries (cuBLAS, cuBLASLt, cuRAND, the runtime: a CUDA 13 toolkit, or
# PyTorch's cu13 wheels), with the `turbovsr` binary built by scripts/build-cuda.sh. No Rust
# toolchain or network is needed there.
#
#   scripts/gpu-run.sh BINARY|BUNDLE.tar.xz [LOG_DIR]      (log in LOG_DIR/gpu.log; default $OUT, else out/gpu)
#   BENCH_RUNS=N   later windows timed per steps value (default 2; 1 fits a short device budget)
#
# 1. the parity fixtures on CUDA against the CPU: f32 within 1e-3, bf16 within 2e-2 (the
#    transformer in bf16, the VAE in f32: `vae-precision` auto), and the attention checks at head
#    sizes 64 and 128, which in bf16 run the fused attention kernel; when the bf16 pass fails,
#    the later steps keep the portable attention (TURBOVSR_ATTENTION=portable);
# 2. with the cuDNN build (turbovsr-cudnn beside the binary, when the machine has cuDNN 9):
#    parity in strict f32;
# 3. the `ltx-2b` test model (random weights with LTX-Video 2B's shapes);
# 4. one 49-frame 1080p window (1920x1080 from 480x270) at 4, 2 and 1 steps: ms per output
#    frame by stage, TFLOP/s against the stages' matmul FLOPs, peak device memory, and a
#    profiled 1-step window (device time per part of the model);
# 5. one transformer evaluation on a bench tile, diffusers (PyTorch) against ours with the fused
#    and with the portable attention, side by side (scripts/bench/gpu-reference.sh);
# 6. the 1-step window with the cuDNN build, with one spatial tile for the whole frame
#    (tile-size 64), and with the VAE in bf16 (what the f32 VAE costs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:?usage: scripts/gpu-run.sh TURBOVSR_BINARY|BUNDLE.tar.xz [LOG_DIR]}")"
if [[ "$bin" == *.tar.xz ]]; then
  # scripts/gpu.sh's bundle: the binary and lib/ (GStreamer, GLib)
  unpacked="$(mktemp -d)"
  tar -C "$unpacked" -xJf "$bin"
  bin="$unpacked/turbovsr"
fi
log_dir="${2:-${OUT:-out/gpu}}"
mkdir -p "$log_dir"
exec > >(tee "$log_dir/gpu.log") 2>&1

# The binary is dynamically linked (candle-core turns on cudarc's dynamic-linking) against the
# CUDA 13 sonames; find where this machine keeps them.
# (readelf -d: libcuda.so.1, libcudart.so.13, libcublas.so.13, libcurand.so.10; cuBLAS needs cuBLASLt)
wanted=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10)
search=(${TURBOVSR_CUDA_LIBS:-} /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu)
if command -v python3 >/dev/null; then
  while IFS= read -r d; do search+=("$d"); done < <(python3 -c \
    'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
fi
libdirs=()
for so in "${wanted[@]}"; do
  found=""
  for d in "${search[@]}"; do
    [ -d "$d" ] || continue
    found="$(find "$d" -maxdepth 5 -name "$so" -print -quit 2>/dev/null || true)"
    [ -n "$found" ] && break
  done
  if [ -z "$found" ]; then
    echo "gpu-run: $so not found (searched ${search[*]}); set TURBOVSR_CUDA_LIBS to its folder" >&2
    exit 1
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
    echo "gpu-run: libcudnn.so.9 not found; skipping the cuDNN build's steps"
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
  echo "gpu-run: libraries missing for $bin:" >&2
  ldd "$bin" | grep "not found" >&2
  exit 1
fi

# Every step runs even when an earlier one fails (one call of a lent GPU should say as much as
# it can); the script fails at the end, naming the steps that failed.
failed=()
run() {
  echo "+ $*"
  local t0=$SECONDS
  "$@" || { echo "gpu-run: FAILED (exit $?): $*"; failed+=("$*"); }
  echo "  ($((SECONDS - t0)) s)"
}
date -u
ldd --version | sed -n 1p
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
ldd "$bin" | grep -E "cuda|cublas|curand|nvrtc"
run "$bin" parity --fixtures tests/fixtures --device cuda --precision f32 --tolerance 1e-3
before=${#failed[@]}
run "$bin" parity --fixtures tests/fixtures --device cuda --precision bf16 --tolerance 2e-2
if [ ${#failed[@]} -gt "$before" ]; then
  echo "gpu-run: the bf16 parity failed; the steps below keep the portable attention"
  export TURBOVSR_ATTENTION=portable
fi
echo "attention: ${TURBOVSR_ATTENTION:-fused} (TURBOVSR_ATTENTION)"
# The convolutions through cuDNN, in strict f32 (TF32 off): seconds, and it says whether that
# build works before its window below.
if [ -n "$cudnn_bin" ]; then
  run env NVIDIA_TF32_OVERRIDE=0 "$cudnn_bin" parity --fixtures tests/fixtures --device cuda \
    --precision f32 --tolerance 1e-3
fi
model="${TMPDIR:-/tmp}/turbovsr-ltx-2b"
[ -f "$model/turbovsr.json" ] || run "$bin" make-test-model "$model" --preset ltx-2b
window=(--width 1920 --height 1080 --scale 4 --window 49 --overlap 9)
# 4 steps first: the real-time target is stated at 4 steps. One stream: its first window at 4
# steps, then later windows at 4, 2 and 1, and one profiled window at 1 step. The VAE runs in
# f32 (vae-precision auto).
run "$bin" bench --model "$model" --device cuda --precision bf16 "${window[@]}" --steps 4,2,1 \
  --runs "${BENCH_RUNS:-2}" --profile
# The transformer alone against the reference, same machine, same run.
run scripts/bench/gpu-reference.sh "$bin" "${TMPDIR:-/tmp}/turbovsr-gpu-reference"
# The cuDNN build's 1-step window, whose encode and decode compare with the lines above.
if [ -n "$cudnn_bin" ]; then
  run "$cudnn_bin" bench --model "$model" --device cuda --precision bf16 "${window[@]}" --steps 1 --runs 1
fi
# One tile for the whole frame (34 x 60 latents) instead of 6 overlapping 32 x 32 tiles: 0.44x
# the video stage's FLOPs by src/model/flops.rs's count (93.8 against 212.2 TFLOP per step), with
# attention rows twice as long.
run "$bin" bench --model "$model" --device cuda --precision bf16 --tile-size 64 "${window[@]}" \
  --steps 1 --runs 1
# What the f32 VAE costs: the same window with the VAE in bf16.
run "$bin" bench --model "$model" --device cuda --precision bf16 --vae-precision bf16 "${window[@]}" \
  --steps 1 --runs 1
date -u
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-run: ${#failed[@]} step(s) failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
