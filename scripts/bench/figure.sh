#!/usr/bin/env bash
# The README's figure (docs/side_by_side.png): the shipped default model (or MODEL) on the
# clean photograph of the eval set photos-clean's clip_000 (NASA's astronaut portrait, public
# domain, from the scikit-image wheel; docs/DATASET.md), as bicubic | model | ground truth.
#
#   scripts/bench/figure.sh [OUT]        # default OUT: docs/side_by_side.png
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/side_by_side.png}"
. scripts/bench/prepare.sh
clip=runs/bench/photos-clean/clip_000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gst-launch-1.0 -q multifilesrc location="$clip/lr_000.png" index=0 stop-index=0 \
  caps=image/png,framerate=25/1 ! pngdec ! videoconvert ! video/x-raw,format=RGB ! \
  matroskamux ! filesink location="$tmp/lr.mkv"
model_args=()
[ -n "${MODEL:-}" ] && model_args=(--model "$MODEL")
"$bin" upscale "$tmp/lr.mkv" "$tmp/sr.mkv" "${model_args[@]}" --overwrite \
  --side-by-side "$tmp/side_by_side.png"
"$peers" scripts/bench/figure.py "$tmp/side_by_side.png" "$clip/hr_000.png" "$out"
