#!/usr/bin/env bash
# VAE CPU benchmark: diffusers 0.42.1 (reference) vs ours on the same model and inputs, one run.
# Usage: scripts/bench/vae.sh [OUT_DIR]   (PYTHON=/path/to/python with requirements.txt installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-vae}
PYTHON=${PYTHON:-/work/venv-ref/bin/python}
cargo build --release --example bench_vae
ref=$("$PYTHON" scripts/bench/vae_reference.py --out "$OUT")
echo "$ref"
ours=$(cargo run --quiet --release --example bench_vae -- "$OUT")
echo "$ours"
field() { echo "$1" | grep -o "$2=[0-9.]*" | tail -1 | cut -d= -f2; }
awk -v re="$(field "$ref" encode_ms)" -v rd="$(field "$ref" decode_ms)" \
    -v oe="$(field "$ours" encode_ms)" -v od="$(field "$ours" decode_ms)" 'BEGIN {
  printf "ratio (ours / reference, < 1 is faster): encode %.2f decode %.2f\n", oe / re, od / rd }'
