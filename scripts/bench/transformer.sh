#!/usr/bin/env bash
# Transformer CPU benchmark (issue 4): diffusers reference vs. the candle port, same config, same
# inputs, same machine, one run. Each round times REPEAT forwards on each side (after a warm-up)
# and prints both medians and their ratio; the sides alternate which goes first from round to round
# so a change in machine load between them does not always favour the same side. Prints the median
# of the per-round ratios last.
#
#   scripts/bench/transformer.sh [repeat (5)] [rounds (1)]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT="${1:-5}"
ROUNDS="${2:-1}"
PYTHON="${PYTHON:-/work/venv-ref/bin/python}"
DIR=target/bench/transformer

echo "machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
cargo build --release --example bench_transformer

reference() {
    ref_out=$("$PYTHON" scripts/bench/transformer_reference.py --out "$DIR" --repeat "$REPEAT")
    echo "$ref_out"
    ref=$(echo "$ref_out" | sed -n 's/^reference_forward_ms_median=//p')
}
candle() {
    ours_out=$(target/release/examples/bench_transformer "$DIR" "$REPEAT")
    echo "$ours_out"
    ours=$(echo "$ours_out" | sed -n 's/^forward_ms_median=//p')
}

ratios=()
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # round 1 starts with the reference, which writes the model and inputs both sides read
    if (( round % 2 == 1 )); then reference; candle; else candle; reference; fi
    ratio=$(python3 -c "print(f'{float(\"$ours\") / float(\"$ref\"):.3f}')")
    echo "ratio candle/reference = $ratio"
    ratios+=("$ratio")
done
python3 -c "import statistics, sys; r = [float(x) for x in sys.argv[1:]]; \
print(f'ratios {r}, median ratio candle/reference = {statistics.median(r):.3f}')" "${ratios[@]}"
