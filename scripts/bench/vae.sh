#!/usr/bin/env bash
# VAE CPU benchmark: diffusers 0.42.1 (reference) vs ours on the same model and inputs.
# Runs ROUNDS (default 3) alternating rounds of both and reports, per side, the best median and the
# best single run over the rounds (the least disturbed by other load on a shared machine).
# Usage: scripts/bench/vae.sh [OUT_DIR]   (PYTHON: default the trainer's environment, scripts/training-env.sh)
# VAE_ARGS passes vae_reference.py's options: the shipped default's weights at a frame size, e.g.
#   VAE_ARGS="--vae models/default/vae --frames 9 --height 176 --width 320" scripts/bench/vae.sh target/bench-vae-default
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-vae}
PYTHON=${PYTHON:-$(scripts/training-env.sh)}  # torch 2.15 and diffusers 0.42.1, cached
ROUNDS=${ROUNDS:-3}
cargo build --release --example bench_vae
all=""
for round in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086
    ref=$("$PYTHON" scripts/bench/vae_reference.py --out "$OUT" ${VAE_ARGS:-} 2>/dev/null)
    ours=$(cargo run --quiet --release --example bench_vae -- "$OUT")
    echo "round $round"; echo "$ref"; echo "$ours"
    all+="$ref"$'\n'"$ours"$'\n'
done
# best <side> <key>: smallest value of key=... over the rounds on lines starting with side.
best() { echo "$all" | grep "^$1 " | grep -o "$2=[0-9.]*" | cut -d= -f2 | sort -g | head -1; }
for key in encode_ms decode_ms encode_min_ms decode_min_ms; do
    awk -v k="$key" -v r="$(best reference "$key")" -v o="$(best candle "$key")" 'BEGIN {
      printf "%-14s reference %8.1f  ours %8.1f  ratio (ours / reference) %.2f\n", k, r, o, o / r }'
done
