#!/usr/bin/env bash
# The GPU measurements of issue 8 in one step: builds the release `turbovsr` binary here with
# `--features cuda` (scripts/build-cuda.sh, no GPU needed), stages it without debug info in
# .gpu/ (small enough to carry), then runs scripts/gpu-run.sh (parity on CUDA, the ltx-2b test
# model, the 1080p window benchmark): right here when this machine has a GPU, otherwise it prints
# the device tool's `run` call that does it on a GPU machine (the repo's working tree travels,
# fixtures and scripts included; .gpu/ is named in carry).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(CUDA_CLIPPY=0 scripts/build-cuda.sh | tail -1)"
mkdir -p .gpu
objcopy --strip-debug "$bin" .gpu/turbovsr
echo "gpu: staged .gpu/turbovsr ($(du -h .gpu/turbovsr | cut -f1))"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  exec scripts/gpu-run.sh .gpu/turbovsr out/gpu
fi
cat <<'MSG'
gpu: no GPU on this machine. From a session lent a GPU machine, call the device tool's run with
  command: scripts/gpu-run.sh .gpu/turbovsr "$OUT"
  carry:   [".gpu"]
  timeout_s: 600
and record $OUT/gpu.log's lines, with the card, in BENCHMARKS.md's "CUDA" section.
MSG
