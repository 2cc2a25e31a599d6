#!/usr/bin/env python3
"""Times diffusers' LTXVideoTransformer3DModel (0.42.1) on a fixed config, and writes that model
and its inputs so `examples/bench_transformer.rs` (or `turbovsr forward transformer`) runs the same.

Default (scripts/bench/transformer.sh): the medium config, f32, CPU. 4 blocks, 8 heads of 64
(D = 512), in_channels 128, caption_channels 4096, 2,000 latent tokens (video_shape 5 x 20 x 20),
a 128-token prompt with 32 masked tokens, B = 1, one timestep.

    /work/venv-ref/bin/python scripts/bench/transformer_reference.py --out target/bench/transformer [--repeat 5]

The GPU comparison (scripts/bench/gpu-reference.sh): LTX-Video 2B's transformer (28 blocks, 32
heads of 64, D = 2048) in bf16 on CUDA, at the benchmark tile (7 x 32 x 32 = 7,168 tokens, the
caption-free 1-token prompt):

    python3 scripts/bench/transformer_reference.py --device cuda --dtype bf16 --preset ltx-2b \
        --video-shape 7,32,32 --prompt-len 1 --out DIR

Writes the model (save_pretrained, in the run dtype), `inputs.safetensors` (f32, whatever the run
dtype, so both sides read the same) and `expected.safetensors` (`sample`, as f32). Prints
`reference_forward_ms_median=<ms>` last.
"""

import argparse
import math
import os
import statistics
import time

import torch
from diffusers import LTXVideoTransformer3DModel
from safetensors.torch import save_file

PRESETS = {
    "medium": dict(
        in_channels=128,
        out_channels=128,
        num_attention_heads=8,
        attention_head_dim=64,
        cross_attention_dim=512,
        num_layers=4,
        caption_channels=4096,
    ),
    # LTX-Video 2B's transformer/config.json; the kwargs left out (patch sizes 1, gelu-approximate,
    # rms_norm_across_heads, no norm affine, eps 1e-6, biases) are diffusers' defaults and its too.
    "ltx-2b": dict(
        in_channels=128,
        out_channels=128,
        num_attention_heads=32,
        attention_head_dim=64,
        cross_attention_dim=2048,
        num_layers=28,
        caption_channels=4096,
    ),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
# Prompt tokens masked out at the end of the prompt, when it is longer than this.
MASKED_TAIL = 32


def video_shape(text: str) -> tuple:
    shape = tuple(int(x) for x in text.split(","))
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected F,H,W with each >= 1, got {text!r}")
    return shape


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="target/bench/transformer")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--video-shape", type=video_shape, default=(5, 20, 20), help="F,H,W")
    parser.add_argument("--prompt-len", type=int, default=128)
    args = parser.parse_args()
    config = PRESETS[args.preset]
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    # Built on the meta device: diffusers' own init of 2B parameters on the CPU would take longer
    # than the benchmark, and every parameter is overwritten below anyway (the model holds no
    # buffers). The noise is drawn in f32 on the target device, so the medium f32 CPU run draws
    # exactly what it always has. The cast goes around diffusers' `to`, which warns on any dtype
    # about the modules a model keeps in f32; this one keeps none.
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.device("meta"):
        model = LTXVideoTransformer3DModel(**config)
    model = torch.nn.Module.to(model, dtype).to_empty(device=device).eval()
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, device=device)
            p.copy_(noise / math.sqrt(p.shape[-1]) if p.ndim > 1 else 0.1 * noise)
    f, h, w = args.video_shape
    n, prompt_len = f * h * w, args.prompt_len
    if prompt_len > MASKED_TAIL:
        mask = torch.cat([torch.ones(1, prompt_len - MASKED_TAIL), torch.zeros(1, MASKED_TAIL)], dim=1)
    else:
        mask = torch.ones(1, prompt_len)
    inputs = {
        "hidden_states": torch.randn(1, n, config["in_channels"], generator=gen, device=device).cpu(),
        "encoder_hidden_states": torch.randn(
            1, prompt_len, config["caption_channels"], generator=gen, device=device
        ).cpu(),
        "timestep": torch.tensor([700.0]),
        "encoder_attention_mask": mask,
        "video_shape": torch.tensor(args.video_shape, dtype=torch.int64),
        "rope_interpolation_scale": torch.tensor([8.0 / 25.0, 32.0, 32.0]),
    }
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    save_file(inputs, os.path.join(args.out, "inputs.safetensors"))

    # The timestep and the mask stay f32: diffusers casts them to the hidden dtype itself.
    hidden_states = inputs["hidden_states"].to(device, dtype)
    encoder_hidden_states = inputs["encoder_hidden_states"].to(device, dtype)
    timestep = inputs["timestep"].to(device)
    encoder_attention_mask = mask.to(device)

    def run():
        with torch.no_grad():
            return model(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                encoder_attention_mask=encoder_attention_mask,
                num_frames=f,
                height=h,
                width=w,
                rope_interpolation_scale=(8.0 / 25.0, 32.0, 32.0),
                return_dict=False,
            )[0]

    def sync():
        # CUDA runs asynchronously: without this the clock would stop when the work is queued.
        if device.type == "cuda":
            torch.cuda.synchronize()

    sample = run()  # warm-up
    save_file(
        {"sample": sample.float().cpu().contiguous()}, os.path.join(args.out, "expected.safetensors")
    )
    times = []
    for _ in range(args.repeat):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}, times_ms={[round(t, 1) for t in times]}")
    print(f"reference_forward_ms_median={statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
