#!/usr/bin/env bash
# Transformer GPU comparison: diffusers' LTXVideoTransformer3DModel (PyTorch) against ours
# (`turbovsr forward transformer`), same run, same card, on LTX-Video 2B's transformer in bf16 at
# the real benchmark tile (7 x 32 x 32 = 7,168 latent tokens, the caption-free 1-token prompt).
# Prints both medians, the ratio ours/reference, the relative L2 error of ours' `sample` against
# the reference's, the FLOPs of one forward and both TFLOP/s, as one `gpu-reference:` line per run
# of ours.
#
#   scripts/bench/gpu-reference.sh BIN WORKDIR
#
# Runs on the GPU machine (from any folder: it moves to the repo root), with LD_LIBRARY_PATH set so
# BIN, a `--features cuda` build of turbovsr, runs. diffusers is not in that machine's image: it
# is installed from the wheels scripts/gpu.sh puts in .gpu/carry/whl. Environment:
#   REPEAT=5            timed forwards on each side, after warm-up
#   GPU_REF_ATTENTION="portable wmma mma"
#                       run ours once per TURBOVSR_ATTENTION value listed (src/model/transformer/attention.rs);
#                       empty: once, with TURBOVSR_ATTENTION as it is in the environment
#   PYTHON=python3      the interpreter that has torch
set -euo pipefail
BIN="$(realpath "$1")"
WORKDIR="$(realpath -m "$2")"
cd "$(dirname "$0")/../.."
REPEAT="${REPEAT:-5}"
ATTENTION="${GPU_REF_ATTENTION-portable wmma mma}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$WORKDIR"
# The saved model is 4 GB of bf16 weights; the installed wheels are of no use after the run.
trap 'rm -rf "$WORKDIR/ref" "$WORKDIR/site"' EXIT

if ! "$PYTHON" -c 'import diffusers' 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORKDIR/site" \
        .gpu/carry/whl/*.whl
    export PYTHONPATH="$WORKDIR/site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "gpu-reference: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
"$PYTHON" scripts/bench/transformer_reference.py --device cuda --dtype bf16 --preset ltx-2b \
    --video-shape 7,32,32 --prompt-len 1 --repeat "$REPEAT" --out "$WORKDIR/ref" \
    | tee "$WORKDIR/reference.log"
ref_ms=$(sed -n 's/^reference_forward_ms_median=//p' "$WORKDIR/reference.log")

# One timed run of ours ($1 labels it), then its summary line against the reference.
ours() {
    local label="$1" out="$WORKDIR/ours-$1.safetensors" ours_out ours_ms
    ours_out=$("$BIN" forward transformer --model "$WORKDIR/ref" \
        --input "$WORKDIR/ref/inputs.safetensors" --output "$out" \
        --repeat "$REPEAT" --device cuda --precision bf16)
    echo "$ours_out"
    ours_ms=$(echo "$ours_out" | sed -n 's/^forward_ms_median=//p')
    "$PYTHON" - "$label" "$ours_ms" "$ref_ms" "$WORKDIR/ref" "$out" <<'PY'
import json, math, sys

import torch
from safetensors.torch import load_file

label, ours_ms, ref_ms, ref_dir, ours_path = sys.argv[1:]
ours_ms, ref_ms = float(ours_ms), float(ref_ms)
expected = load_file(f"{ref_dir}/expected.safetensors")["sample"].double()
ours = load_file(ours_path)["sample"].double()
rel_l2 = ((ours - expected).norm() / expected.norm()).item()

# The matmul FLOPs of one forward, as src/model/flops.rs counts them (batch 1, gelu feed-forward
# of 4D) less the condition embedder, which diffusers' model lacks.
with open(f"{ref_dir}/config.json") as f:
    cfg = json.load(f)
inputs = load_file(f"{ref_dir}/inputs.safetensors")
n = math.prod(inputs["video_shape"].tolist())
l = inputs["encoder_hidden_states"].shape[1]
d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
per_block = (
    n * 4 * d * d  # attn1 q, k, v, out
    + 2 * n * n * d  # attn1 Q K^T and P V
    + n * 2 * d * d  # attn2 q, out
    + l * 2 * d * d  # attn2 k, v
    + 2 * n * l * d  # attn2 Q K^T and P V
    + 2 * n * d * 4 * d  # ff in and out
)
macs = (
    cfg["num_layers"] * per_block
    + n * (cfg["in_channels"] + cfg["out_channels"]) * d
    + l * (cfg["caption_channels"] * d + d * d)
)
flops = 2 * macs
print(
    f"gpu-reference: attention={label} ours_ms={ours_ms:.3f} reference_ms={ref_ms:.3f}"
    f" ratio_ours/reference={ours_ms / ref_ms:.3f} rel_l2={rel_l2:.3e}"
    f" tokens={n} prompt={l} gflop={flops / 1e9:.1f}"
    f" ours_tflops={flops / ours_ms / 1e9:.1f} reference_tflops={flops / ref_ms / 1e9:.1f}"
)
PY
}

if [[ -n "$ATTENTION" ]]; then
    for choice in $ATTENTION; do
        TURBOVSR_ATTENTION="$choice" ours "$choice"
    done
else
    ours "${TURBOVSR_ATTENTION:-default}"
fi
