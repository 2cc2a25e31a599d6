#!/usr/bin/env bash
# Builds the `turbovsr` binary with `--features cuda` (candle's CUDA backend through cudarc)
# against the CUDA 13.0 toolkit that scripts/cuda-toolkit.sh installs, and lints the feature;
# then the same with `--features cudnn` (convolutions through cuDNN), kept as `turbovsr-cudnn`
# beside it. No GPU is needed to build. Run by CI (.ci/run) after the CPU suite, and by
# scripts/gpu.sh.
#
# The binaries load the CUDA libraries at run time (dlopen), not link them: candle-core and
# candle-kernels come from scripts/cuda-loading.sh (the published crates with cudarc's
# `dynamic-loading` in place of `dynamic-linking`), so a binary starts on a machine without
# CUDA and says so when CUDA is asked for, and finds CUDA 13 or 12 libraries where it runs.
# The patch rewrites Cargo.lock's two entries while cargo runs; the file is put back on exit.
#
# Its own target folder (TURBOVSR_CUDA_TARGET_DIR, default target-cuda/) keeps the default
# build CUDA-free and its cache apart; both feature sets stay cached in it. Prints the `cuda`
# binary's path last.
#   CUDA_COMPUTE_CAP  the kernels' PTX target (default 80: A100 and newer; the driver JIT-compiles
#                     it for a newer GPU such as the H100, sm_90)
#   CUDA_CLIPPY=0     skip `cargo clippy --features cuda` (CI: the build itself denies warnings,
#                     and the clippy pass would check every dependency once more)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolkit.sh)"
export CARGO_TARGET_DIR="${TURBOVSR_CUDA_TARGET_DIR:-$PWD/target-cuda}"
# Build scripts run nvcc on every kernel source; keep it to the cores we have.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
mkdir -p "$CARGO_TARGET_DIR"
# Our crate's warnings (its cfg(feature = "cuda") code included) fail the build. Not through
# RUSTFLAGS=-D warnings: that is part of every crate's fingerprint, so it would rebuild the whole
# cached dependency tree (candle-kernels' nvcc pass included, the bulk of a cold build) whenever
# it differs from the cache's.
log="$(mktemp)"
lock="$(mktemp)"
cp Cargo.lock "$lock"
trap 'cp "$lock" Cargo.lock; rm -f "$log" "$lock"' EXIT
loading="$(scripts/cuda-loading.sh "$CARGO_TARGET_DIR/candle-loading")"
eval "loading=($loading)"
for features in cudnn cuda; do
  nice -n 19 cargo build "${loading[@]}" --release --features "$features" --bin turbovsr 2>&1 | tee "$log"
  if grep -q '^warning: `gst-plugin-turbovsr`' "$log"; then
    echo "build-cuda: the $features build of gst-plugin-turbovsr has warnings (see above)" >&2
    exit 1
  fi
  # cargo writes both to release/turbovsr; the cudnn one is kept aside
  if [ "$features" = cudnn ]; then
    cp "$CARGO_TARGET_DIR/release/turbovsr" "$CARGO_TARGET_DIR/release/turbovsr-cudnn"
  fi
done
if [ "${CUDA_CLIPPY:-1}" != 0 ]; then
  # Same profile as the build: candle-kernels' build-script output (the compiled kernels) is
  # reused, only the crates are checked.
  nice -n 19 cargo clippy "${loading[@]}" --release --features cuda --lib --bins -- -D warnings
fi
echo "$CARGO_TARGET_DIR/release/turbovsr"
