#!/usr/bin/env bash
# The paper's Table 6 at small scale (issue 11): shortcut training against flow matching alone,
# same start (the shipped default model's regression start), seed, data, batches and budget,
# each evaluated at 1, 2, 4 and 8 steps on the first LIMIT held-out clips beside the start.
#
#   scripts/ablation.sh [STEPS] [LIMIT]     (defaults 50 and 5; tables in runs/abl-*.md)
#
# Needs the wallpaper data (scripts/data/fetch-wallpapers.sh), the held-out set runs/evalset
# (README "Training") and runs/vae-pca-export (scripts/train-default.sh writes it).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-50}"
limit="${2:-5}"
cargo build --release --bin turbovsr
tv=target/release/turbovsr
common=(--data data/wallpapers --degrade mixed --crop 64 --vae runs/vae-pca-export --batch 8
  --init regression --train-only transformer_blocks. --lr 2e-5 --warmup 10)
rm -rf runs/abl-start runs/model-abl-start
"$tv" train denoiser "${common[@]}" --objective shortcut --steps 0 --out runs/abl-start \
  --export runs/model-abl-start
"$tv" eval --set runs/evalset --model runs/model-abl-start --steps 1,2,4,8 --limit "$limit" \
  --out runs/abl-start.md
for obj in shortcut flow; do
  rm -rf "runs/abl-$obj" "runs/model-abl-$obj"
  "$tv" train denoiser "${common[@]}" --objective "$obj" --steps "$steps" --out "runs/abl-$obj" \
    --export "runs/model-abl-$obj"
  "$tv" eval --set runs/evalset --model "runs/model-abl-$obj" --steps 1,2,4,8 --limit "$limit" \
    --out "runs/abl-$obj.md"
done
grep -H "^| model" runs/abl-start.md runs/abl-shortcut.md runs/abl-flow.md
