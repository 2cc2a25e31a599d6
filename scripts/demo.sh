#!/usr/bin/env bash
# Sets up, builds the plugin and runs a demo pipeline: 100 frames of 160x90 test video upscaled
# 4x to 640x360 by `turbovsr` (the bicubic baseline unless MODEL=DIR is given), encoded to
# out/demo.mp4. Then the README's quick start of the command-line tool: a 50-frame test clip
# (out/in.mkv) upscaled file to file by `turbovsr upscale` (out/bicubic.mkv, and out/model.mp4
# with the wavelet colour fix when MODEL=DIR is given). Last, the shipped default model (no
# model given) on the sample clip assets/sample_leaf_96x64.mkv: out/sample.mkv (384x256) and
# out/side_by_side.png (its middle frame: input bicubic-upscaled | output).
#
# TURBOVSR_DEMO_PROFILE=dev builds and runs the debug profile instead of release (CI uses it:
# its test build has compiled that profile already).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
profile="${TURBOVSR_DEMO_PROFILE:-release}"
case "$profile" in
  dev) out_dir=debug ;;
  *) out_dir="$profile" ;;
esac
cargo build --profile "$profile"
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/$out_dir"
export GST_PLUGIN_PATH="$bin_dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
mkdir -p out
gst-launch-1.0 -e videotestsrc num-buffers=100 pattern=ball ! \
  video/x-raw,width=160,height=90,framerate=25/1 ! videoconvert ! \
  turbovsr model="${MODEL:-bicubic}" scale=4 ! videoconvert ! x264enc ! mp4mux ! \
  filesink location=out/demo.mp4
echo "wrote out/demo.mp4"

turbovsr="$bin_dir/turbovsr"
gst-launch-1.0 -q videotestsrc num-buffers=50 pattern=ball ! video/x-raw,width=160,height=90,framerate=25/1 ! \
  videoconvert ! x264enc ! matroskamux ! filesink location=out/in.mkv
"$turbovsr" upscale out/in.mkv out/bicubic.mkv --model bicubic --overwrite
if [ -n "${MODEL:-}" ]; then
  "$turbovsr" upscale out/in.mkv out/model.mp4 --model "$MODEL" --color-fix wavelet --overwrite
fi
"$turbovsr" upscale assets/sample_leaf_96x64.mkv out/sample.mkv --overwrite \
  --side-by-side out/side_by_side.png
