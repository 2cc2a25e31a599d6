#!/usr/bin/env bash
# The quality table of issue 25: bicubic, Lanczos, Real-ESRGAN's realesrgan-x4plus and
# realesr-animevideov3 (ncnn's CPU path) and a TurboVSR model at 1, 2 and 4 steps, on clean and
# degraded photographs and on clean real video (docs/DATASET.md), scored by `turbovsr eval`
# (PSNR, SSIM, NIQE, blockiness, flicker, sharpness, fps).
#
#   scripts/bench/quality.sh [MODEL] [OUT]    # MODEL: a model folder (default: the shipped one)
#
# Writes OUT/SET.md and OUT/SET.json per set (default OUT: runs/quality). The sets and the
# peers' frames are kept under runs/bench and reused. TURBOVSR_BIN: the turbovsr binary (default:
# a release build). STEPS: the model's step counts (default 1,2,4). The peers' fps come from
# their own run (scripts/bench/peers.py, PEER_THREADS threads, default 2): time them on a quiet
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-}"
out="${2:-runs/quality}"
steps="${STEPS:-1,2,4}"
. scripts/bench/prepare.sh
mkdir -p "$out"
for set in photos-clean photos-degraded video-clean; do
  frames="runs/bench/peers/$set"
  if [ ! -f "$frames/realesr-animevideov3/timing.json" ]; then
    "$peers" scripts/bench/peers.py --set "runs/bench/$set" --out "$frames" \
      --threads "${PEER_THREADS:-2}"
  fi
  model_args=()
  [ -n "$model" ] && model_args=(--model "$model")
  "$bin" eval --set "runs/bench/$set" "${model_args[@]}" --steps "$steps" --device cpu \
    --outputs "lanczos=$frames/lanczos,realesrgan-x4plus=$frames/realesrgan-x4plus,realesr-animevideov3=$frames/realesr-animevideov3" \
    --out "$out/$set.md" --json "$out/$set.json"
done
echo "quality: tables in $out/"
