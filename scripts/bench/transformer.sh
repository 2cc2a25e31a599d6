#!/usr/bin/env bash
# Transformer CPU benchmark (issue 4): diffusers reference vs. the candle port, same config, same
# inputs, same machine, one run. Prints both medians and the ratio candle / reference.
#
#   scripts/bench/transformer.sh [repeat]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT="${1:-5}"
PYTHON="${PYTHON:-/work/venv-ref/bin/python}"
DIR=target/bench/transformer

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
ref_out=$("$PYTHON" scripts/bench/transformer_reference.py --out "$DIR" --repeat "$REPEAT")
echo "$ref_out"
cargo build --release --example bench_transformer
ours_out=$(target/release/examples/bench_transformer "$DIR" "$REPEAT")
echo "$ours_out"
ref=$(echo "$ref_out" | sed -n 's/^reference_forward_ms_median=//p')
ours=$(echo "$ours_out" | sed -n 's/^forward_ms_median=//p')
python3 -c "print(f'ratio candle/reference = {float(\"$ours\") / float(\"$ref\"):.3f}')"
