#!/usr/bin/env bash
# The GPU measurements of issue 8 in one step: builds the release `turbovsr` binary here with
# `--features cuda` (scripts/build-cuda.sh, no GPU needed), stages it without debug info,
# with the GStreamer/GLib libraries it links, as .gpu/carry/turbovsr.tar.xz (small enough to carry), then runs scripts/gpu-run.sh (parity on CUDA, the ltx-2b test
# model, the 1080p window benchmark): right here when this machine has a GPU, otherwise it prints
# the device tool's `run` call that does it on a GPU machine (the repo's working tree travels,
# fixtures and scripts included; .gpu/carry is named in carry).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(CUDA_CLIPPY=0 scripts/build-cuda.sh | tail -1)"
# The binary also links GStreamer and GLib (the element and `upscale` live in it); a GPU machine
# need not have them, so their libraries (and what they pull in; the C and C++ runtimes and CUDA
# excepted, the binary opens CUDA's itself) go in lib/ next to it, which scripts/gpu-run.sh puts
# on the library path. The device tool carries at most 64 MiB, so the two travel as one xz
# archive.
rm -rf .gpu/stage .gpu/carry && mkdir -p .gpu/stage/lib .gpu/carry
objcopy --strip-debug "$bin" .gpu/stage/turbovsr
# The cuDNN build (build-cuda.sh keeps it beside the other): gpu-run.sh compares the two.
objcopy --strip-debug "$bin-cudnn" .gpu/stage/turbovsr-cudnn
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
  | grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libcurand|libcudnn)\.so' \
  | xargs -r cp -L -t .gpu/stage/lib
tar -C .gpu/stage -cf - turbovsr turbovsr-cudnn lib | xz -T"$(nproc)" -6 > .gpu/carry/turbovsr.tar.xz
echo "gpu: staged .gpu/carry/turbovsr.tar.xz ($(du -h .gpu/carry/turbovsr.tar.xz | cut -f1)):" \
  "the binaries (cuda, cudnn) and $(ls .gpu/stage/lib | wc -l) libraries"
# scripts/bench/gpu-reference.sh times diffusers' transformer there, and the GPU machine's image
# (Python 3.12, no network) lacks diffusers: its wheel travels, with those of its runtime
# requirements the image lacks (the rest, torch, numpy, safetensors, huggingface-hub, ..., are
# there). Pure-python wheels, pinned; --no-deps, so every one is named.
pip=(python3 -m pip)
"${pip[@]}" --version >/dev/null 2>&1 || pip=(/work/venv-ref/bin/python -m pip)
for wheel in diffusers==0.42.1 importlib-metadata==10.2.0 lazy-importer==0.1.0; do
  "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .gpu/carry/whl "$wheel"
done
echo "gpu: staged .gpu/carry/whl ($(du -ch .gpu/carry/whl/*.whl | tail -1 | cut -f1)):" \
  "$(cd .gpu/carry/whl && ls *.whl | tr '\n' ' ')"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  exec scripts/gpu-run.sh .gpu/stage/turbovsr out/gpu
fi
cat <<'MSG'
gpu: no GPU on this machine. From a session lent a GPU machine, call the device tool's run with
  command: BENCH_RUNS=1 scripts/gpu-run.sh .gpu/carry/turbovsr.tar.xz "$OUT"
  carry:   [".gpu/carry"]
  timeout_s: 600
(BENCH_RUNS=1: one later window per steps value, so that every step fits a 15-minute lease)
and record $OUT/gpu.log's lines, with the card, in BENCHMARKS.md's "CUDA" section.
The PyTorch trainer's GPU numbers (issue 24) are a second call with the same carry:
  command: scripts/gpu-train.sh "$OUT"      timeout_s: 420
MSG
