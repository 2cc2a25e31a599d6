#!/usr/bin/env bash
# Rebuilds the shipped default model (models/default/, issue 11) from the wallpaper data and
# its seeds: the principal-component VAE, then the denoiser's regression start (no gradient
# steps; see models/default/README.md). Every input derives from fixed seeds, so the result is
# byte-identical to the committed files.
#
#   scripts/train-default.sh           # writes runs/model-default, then copies it to models/default
#   scripts/train-default.sh --check   # writes runs/model-default, fails if it differs from models/default
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d data/wallpapers ] || scripts/data/fetch-wallpapers.sh
cargo build --release --bin turbovsr
tv=target/release/turbovsr
rm -rf runs/vae-pca runs/vae-pca-export runs/dn-default runs/model-default
"$tv" train vae --data data/wallpapers --crop 64 --out runs/vae-pca --steps 0 --init pca \
  --export runs/vae-pca-export
"$tv" train denoiser --data data/wallpapers --degrade mixed --crop 64 --vae runs/vae-pca-export \
  --batch 8 --init regression --objective trajectory --steps 0 --out runs/dn-default \
  --export runs/model-default
files=(turbovsr.json vae/config.json vae/diffusion_pytorch_model.safetensors
  transformer/config.json transformer/diffusion_pytorch_model.safetensors)
if [ "${1:-}" = --check ]; then
  for f in "${files[@]}"; do
    cmp "runs/model-default/$f" "models/default/$f"
  done
  echo "train-default: runs/model-default is byte-identical to models/default"
else
  for f in "${files[@]}"; do
    cp "runs/model-default/$f" "models/default/$f"
  done
  echo "train-default: copied runs/model-default to models/default (rebuild to embed it)"
fi
