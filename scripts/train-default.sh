#!/usr/bin/env bash
# The shipped default model's recipe (models/default/README.md) on the PyTorch trainer
# (training/), from the wallpaper data and fixed seeds: the principal-component VAE
# (`vae_train --init pca`, no gradient steps), then the denoiser's regression start (the
# condition start with the condition's per-token affine map fitted by least squares on clean
# bicubic downscales, no gradient steps). On one machine it writes the same bytes run after
# run; models/default is this script's output (`--check` says whether it still is).
#
#   scripts/train-default.sh             # writes runs/model-default
#   scripts/train-default.sh --install   # and copies it to models/default (rebuild to embed it)
#   scripts/train-default.sh --check     # and compares it with models/default, byte for byte
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d data/wallpapers ] || scripts/data/fetch-wallpapers.sh
python=$(scripts/training-env.sh)
export PYTHONPATH="$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
rm -rf runs/vae-pca runs/vae-pca-export runs/dn-default runs/model-default
"$python" -m turbovsr_train.vae_train --out runs/vae-pca --data data/wallpapers --crop 64 \
  --init pca --steps 0 --export runs/vae-pca-export --no-progress
"$python" -m turbovsr_train.train --out runs/dn-default --vae runs/vae-pca-export \
  --transformer training/configs/model/small.json --data data/wallpapers \
  --degrade clean --crop 64 --batch 8 --init regression --objective trajectory \
  --steps 0 --export runs/model-default --no-progress
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
