#!/usr/bin/env bash
# The shipped default model's recipe (models/default/README.md) on the PyTorch trainer
# (training/), from the wallpaper data and fixed seeds, with no gradient steps:
# 1. the principal-component VAE (`vae_train --init pca`) in LTX's blocks without resnets
#    (training/configs/vae/pca.json: the PCA start leaves every resnet the identity, so they
#    only cost time);
# 2. the denoiser's regression start (the condition start with the condition's per-token affine
#    map fitted by least squares on clean bicubic downscales) in LTX's transformer without
#    blocks (training/configs/model/regression.json: the start's blocks add nothing);
# 3. the decoder's output convolution fitted by least squares on what that denoiser makes
#    (`decoder_train --fit-batches`: each 4x4-pixel patch from a 3x3 neighbourhood of latents,
#    across the denoiser's 8x8-pixel tokens).
# On one machine it writes the same bytes run after run; models/default is this script's output
# (`--check` says whether it still is).
#
#   scripts/train-default.sh             # writes runs/model-default
#   scripts/train-default.sh --install   # and copies it to models/default (rebuild to embed it)
#   scripts/train-default.sh --check     # and compares it with models/default, byte for byte
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d data/wallpapers ] || scripts/data/fetch-wallpapers.sh
python=$(scripts/training-env.sh)
export PYTHONPATH="$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
rm -rf runs/vae-pca runs/vae-pca-export runs/dn-default runs/model-regression runs/dec-default \
  runs/model-default
"$python" -m turbovsr_train.vae_train --out runs/vae-pca --data data/wallpapers --crop 64 \
  --config training/configs/vae/pca.json --init pca --steps 0 --export runs/vae-pca-export \
  --no-progress
"$python" -m turbovsr_train.train --out runs/dn-default --vae runs/vae-pca-export \
  --transformer training/configs/model/regression.json --data data/wallpapers \
  --degrade clean --crop 64 --batch 8 --init regression --objective trajectory \
  --steps 0 --export runs/model-regression --no-progress
"$python" -m turbovsr_train.decoder_train --model runs/model-regression --out runs/dec-default \
  --data data/wallpapers --degrade clean --crop 128 --image-batch 8 --fit-batches 96 \
  --steps 0 --eval-clips 0 --export runs/model-default --no-progress
files=(turbovsr.json vae/config.json vae/diffusion_pytorch_model.safetensors
  transformer/config.json transformer/diffusion_pytorch_model.safetensors)
case "${1:-}" in
  --install)
    for f in "${files[@]}"; do
      cp "runs/model-default/$f" "models/default/$f"
    done
    echo "train-default: copied runs/model-default to models/default (rebuild to embed it)"
    ;;
  --check)
    for f in "${files[@]}"; do
      cmp "runs/model-default/$f" "models/default/$f"
    done
    echo "train-default: runs/model-default is models/default, byte for byte"
    ;;
  *) echo "train-default: wrote runs/model-default (--install copies it to models/default)" ;;
esac
