#!/usr/bin/env bash
# Checks, on a machine without a GPU (CI), what runtime loading of the CUDA libraries promises
# for the binaries scripts/build-cuda.sh writes:
#   - no CUDA library among their NEEDED entries (they start without CUDA installed);
#   - `--device cuda` fails with an error that names the missing library, not a panic;
#   - `--device auto` (the default) runs on the CPU: a clip upscaled with MODEL, every frame out.
#
#   scripts/cuda-smoke.sh TURBOVSR_BINARY MODEL_DIR
#
# On a machine with a working driver the second check does not apply and is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/cuda-smoke.sh TURBOVSR_BINARY MODEL_DIR}"
model="${2:?usage: scripts/cuda-smoke.sh TURBOVSR_BINARY MODEL_DIR}"
fail() { echo "cuda-smoke: $bin: $*" >&2; exit 1; }

needed="$(readelf -d "$bin" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}')"
if grep -E '^lib(cuda|cudart|cublas|cublasLt|curand|nvrtc|cudnn)\.so' <<<"$needed"; then
  fail "links the CUDA libraries above instead of loading them"
fi

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "cuda-smoke: a GPU is present; the missing-driver check is skipped"
else
  set +e
  err="$("$bin" parity --device cuda --tolerance 1e-3 2>&1 >/dev/null)"
  rc=$?
  set -e
  [ "$rc" != 0 ] || fail "'parity --device cuda' succeeded without a GPU"
  grep -q "panicked" <<<"$err" && fail "'parity --device cuda' panicked: $err"
  grep -q "cannot open CUDA device 0: .* is not installed where the dynamic loader looks" <<<"$err" \
    || fail "'parity --device cuda' did not name the missing library: $err"
  echo "cuda-smoke: --device cuda without a driver: $(tail -n1 <<<"$err")"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
log="$("$bin" upscale assets/sample_leaf_96x64.mkv "$out/clip.mkv" --model "$model" --steps 1 2>&1)" \
  || fail "the CPU upscale failed: $log"
# the progress line's total is the input's frame count; the last line the frames written
total="$(grep -oE 'frame [0-9]+/[0-9]+' <<<"$log" | head -n1 | cut -d/ -f2)"
wrote="$(grep -oE 'wrote [0-9]+ frames' <<<"$log" | grep -oE '[0-9]+')"
[ -n "$total" ] && [ "$total" = "$wrote" ] && [ -s "$out/clip.mkv" ] \
  || fail "the CPU upscale wrote ${wrote:-no} frames of ${total:-?}: $log"
echo "cuda-smoke: $bin starts without CUDA, names what is missing and upscales on the CPU"
