#!/usr/bin/env bash
# Throughput of the Ray driver on this machine (issue 21): one clip in 4 segments on a local Ray
# with one worker slot (--cpus-per-segment 2 of 2 CPUs) and with two (1 each), against the
# in-process `turbovsr upscale`, for the bicubic baseline and the shipped default model. The
# clip is scripts/bench/segments.sh's 97 frames of bikes.mp4 at 80x34 (run that first), 4x.
#
#   scripts/bench/farm.sh [OUT]      # default runs/farm
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-runs/farm}"
clip=runs/segments/bikes-80x34.mkv
[ -s "$clip" ] || { echo "farm.sh: $clip is missing: run scripts/bench/segments.sh first" >&2; exit 1; }
bin="${TURBOVSR_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-target}/release/turbovsr"
fi
bin=$(realpath "$bin")
python=$(scripts/farm-env.sh)
rm -rf "$out" && mkdir -p "$out"
calc() { python3 -c "print($1)"; }
clock() { local t0; t0=$(date +%s.%N); "$@" > "$out/last.log" 2>&1 || { cat "$out/last.log" >&2; exit 1; }; calc "$(date +%s.%N) - $t0"; }
for model in bicubic default; do
  args=()
  [ "$model" = default ] || args=(--model "$model")
  t=$(clock "$bin" upscale "$clip" "$out/$model-in-process.mkv" "${args[@]}" --quiet)
  printf '%-8s in-process        %7.1f s  %6.2f fps\n' "$model" "$t" "$(calc "97 / $t")"
  for cpus in 2 1; do
    slots=$((2 / cpus))
    t=$(clock env TURBOVSR_BIN="$bin" PYTHONPATH="$PWD/farm" "$python" -m turbovsr_farm "$clip" \
      --out "$out/$model-$slots" --segments 4 --cpus-per-segment "$cpus" -- "${args[@]}")
    printf '%-8s ray, %d worker%s    %7.1f s  %6.2f fps\n' "$model" "$slots" "$([ $slots = 1 ] && echo ' ' || echo s)" "$t" "$(calc "97 / $t")"
  done
done
