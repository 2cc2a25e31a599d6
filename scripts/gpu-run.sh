#!/usr/bin/env bash
# The GPU half of scripts/gpu.sh; runs on a machine with an NVIDIA GPU, a driver for CUDA 13
# (>= 580) and cuBLAS (with cuBLASLt) and cuRAND of CUDA 13 or 12 (a toolkit, or PyTorch's
# wheels), which the `turbovsr` binary built by scripts/build-cuda.sh opens at run time. No Rust
# toolchain or network is needed there.
#
#   scripts/gpu-run.sh BINARY|BUNDLE.tar.xz [LOG_DIR]      (log in LOG_DIR/gpu.log; default $OUT, else out/gpu)
#   BENCH_RUNS=N   later windows timed per steps value (default 2; 1 fits a short device budget)
#
# 1. the parity fixtures on CUDA against the CPU: f32 within 1e-3, bf16 within 2e-2 (the
#    transformer in bf16, the VAE in f32: `vae-precision` auto), and the attention checks at head
#    sizes 64 and 128, which in bf16 run a fused attention kernel: the `mma` one, then the `wmma`
#    one; the steps after keep the first that passes (TURBOVSR_ATTENTION), else the portable one;
# 2. with the cuDNN build (turbovsr-cudnn beside the binary, when the machine has cuDNN 9):
#    parity in strict f32 (TF32 off);
# 3. the `ltx-2b` test model (random weights with LTX-Video 2B's shapes);
# 4. one 49-frame 1080p window (1920x1080 from 480x270) at 4, 2 and 1 steps with the cuDNN build
#    (the plain one without cuDNN): ms per output frame by stage, TFLOP/s against the stages'
#    matmul FLOPs, peak device memory, and a profiled 1-step window (device time per part);
# 5. one transformer evaluation on a bench tile, diffusers (PyTorch) against ours with each
#    attention path, side by side (scripts/bench/gpu-reference.sh);
# 6. the window with one spatial tile for the whole frame (tile-size 64) at 4 and 1 steps; the
#    1-step window with the VAE's convolutions through candle's im2col (the plain build), and
#    with the VAE in bf16 (what the f32 VAE costs).
set -euo pipefail
cd "$(dirname "$0")/.."
log_dir="${2:-${OUT:-out/gpu}}"
mkdir -p "$log_dir"
exec > >(tee "$log_dir/gpu.log") 2>&1
source scripts/gpu-env.sh "${1:?usage: scripts/gpu-run.sh TURBOVSR_BINARY|BUNDLE.tar.xz [LOG_DIR]}"

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
# The CUDA libraries the binary will open (it links none): the first found of the names cudarc
# tries, in its order (as src/pipeline/device.rs checks them).
for lib in cuda cublas cublasLt curand cudnn; do
  found=""
  for so in "lib$lib.so" "lib$lib.so.13" "lib$lib.so.12" "lib$lib.so.11" "lib$lib.so.10" "lib$lib.so.9" "lib$lib.so.1"; do
    for d in ${LD_LIBRARY_PATH//:/ } $(ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so {sub(/\/[^\/]*$/, "", $NF); print $NF}'); do
      [ -e "$d/$so" ] && { found="$d/$so"; break 2; }
    done
  done
  echo "lib$lib: ${found:-not found} $( [ -n "$found" ] && readlink -f "$found" | sed 's|.*/||')"
done
run "$bin" parity --fixtures tests/fixtures --device cuda --precision f32 --tolerance 1e-3
for choice in mma wmma portable; do
  before=${#failed[@]}
  run env TURBOVSR_ATTENTION=$choice "$bin" parity --fixtures tests/fixtures --device cuda \
    --precision bf16 --tolerance 2e-2
  if [ ${#failed[@]} -eq "$before" ]; then
    export TURBOVSR_ATTENTION=$choice
    break
  fi
done
echo "attention: ${TURBOVSR_ATTENTION:-none passed} (TURBOVSR_ATTENTION)"
best_bin="$bin"
if [ -n "$cudnn_bin" ]; then
  run env NVIDIA_TF32_OVERRIDE=0 "$cudnn_bin" parity --fixtures tests/fixtures --device cuda \
    --precision f32 --tolerance 1e-3
  best_bin="$cudnn_bin"
fi
model="${TMPDIR:-/tmp}/turbovsr-ltx-2b"
[ -f "$model/turbovsr.json" ] || run "$bin" make-test-model "$model" --preset ltx-2b
window=(--model "$model" --device cuda --precision bf16 --width 1920 --height 1080 --scale 4
  --window 49 --overlap 9)
# 4 steps first: the real-time target is stated at 4 steps. One stream: its first window at 4
# steps, then later windows at 4, 2 and 1, and one profiled window at 1 step. The VAE runs in
# f32 (vae-precision auto).
run "$best_bin" bench "${window[@]}" --steps 4,2,1 --runs "${BENCH_RUNS:-2}" --profile
# The transformer alone against the reference, same machine, same run.
run scripts/bench/gpu-reference.sh "$bin" "${TMPDIR:-/tmp}/turbovsr-gpu-reference"
# One tile for the whole frame (34 x 60 latents) instead of 6 overlapping 32 x 32 tiles: 0.44x
# the video stage's FLOPs by src/model/flops.rs's count (93.8 against 212.2 TFLOP per step), with
# attention rows twice as long.
run "$best_bin" bench "${window[@]}" --tile-size 64 --steps 4,1 --runs 1
# The VAE's convolutions through candle's im2col + cuBLAS instead of cuDNN.
if [ "$best_bin" != "$bin" ]; then
  run "$bin" bench "${window[@]}" --steps 1 --runs 1
fi
# What the f32 VAE costs: the same window with the VAE in bf16.
run "$best_bin" bench "${window[@]}" --vae-precision bf16 --steps 1 --runs 1
date -u
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-run: ${#failed[@]} step(s) failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
