#!/usr/bin/env bash
# The PyTorch trainer on a GPU (issue 24): steps per second and peak device memory for the small
# config (the shipped default's shapes) and for LTX-Video 2B's shapes (random weights, gradient
# checkpointing), bf16 mixed precision, on the machine's first GPU. Runs on the device machine
# with its own PyTorch (and accelerate); diffusers travels as a wheel in .gpu/carry/whl, which
# scripts/gpu.sh stages. Nothing is downloaded.
#
#   scripts/gpu-train.sh [LOG_DIR]            (log in LOG_DIR/gpu-train.log; default $OUT, else out/gpu)
#   device tool: command "scripts/gpu-train.sh \"$OUT\"", carry [".gpu/carry"], timeout_s 420
set -euo pipefail
cd "$(dirname "$0")/.."
log_dir="${1:-${OUT:-out/gpu}}"
mkdir -p "$log_dir"
exec > >(tee "$log_dir/gpu-train.log") 2>&1
if ! python3 -c 'import diffusers' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .gpu/carry/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch, diffusers, accelerate; print("torch", torch.__version__, "diffusers",
  diffusers.__version__, "accelerate", accelerate.__version__, torch.cuda.get_device_name(0))'
# A random VAE of LTX-Video's shapes (diffusers' default config: 32x32x8 into 128 channels).
python3 -c 'import torch; from diffusers import AutoencoderKLLTXVideo as V
torch.manual_seed(0); V().save_pretrained("/tmp/ltx-vae")'
train=(accelerate launch --config_file training/configs/accelerate/gpu.yaml -m turbovsr_train.train
  --data synthetic --eval-clips 0 --checkpoint-every 0 --no-progress --log-every 10 --workers 8)
failed=()
step() { echo "+ $*"; "$@" || { echo "gpu-train: FAILED: $*"; failed+=("$1"); }; }
# The small config at a crop the GPU fills better than the CPU's 64: 256x256, 9 frames, batch 8.
step "${train[@]}" --out /tmp/run-small --steps 60 --vae models/default/vae \
  --transformer training/configs/model/small.json --crop 256 --frames 9 --batch 8
# LTX-Video 2B's transformer (random weights), 384x384 x 17 frames (12 x 12 x 3 latents, 432
# tokens), batch 1, gradient checkpointing; AdamW state in f32.
step "${train[@]}" --out /tmp/run-2b --steps 12 --vae /tmp/ltx-vae \
  --transformer training/configs/model/ltx-2b.json --init diffusers --crop 384 --frames 17 \
  --batch 1 --gradient-checkpointing --lr 1e-5 --warmup 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ ${#failed[@]} -eq 0 ] || { echo "gpu-train: failed: ${failed[*]}"; exit 1; }
