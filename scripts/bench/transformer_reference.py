#!/usr/bin/env python3
"""Times diffusers' LTXVideoTransformer3DModel (0.42.1, f32, CPU) on the fixed medium benchmark
config, and writes that model and its inputs so `examples/bench_transformer.rs` runs the same.

Config: 4 blocks, 8 heads of 64 (D = 512), in_channels 128, caption_channels 4096, 2,000 latent
tokens (video_shape 5 x 20 x 20), a 128-token prompt with 32 masked tokens, B = 1, one timestep.

    /work/venv-ref/bin/python scripts/bench/transformer_reference.py --out target/bench/transformer [--repeat 5]

Prints `reference_forward_ms_median=<ms>` last.
"""

import argparse
import math
import os
import statistics
import time

import torch
from diffusers import LTXVideoTransformer3DModel
from safetensors.torch import save_file

CONFIG = dict(
    in_channels=128,
    out_channels=128,
    num_attention_heads=8,
    attention_head_dim=64,
    cross_attention_dim=512,
    num_layers=4,
    caption_channels=4096,
)
VIDEO_SHAPE = (5, 20, 20)
PROMPT_LEN = 128


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="target/bench/transformer")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    model = LTXVideoTransformer3DModel(**CONFIG).eval()
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(noise / math.sqrt(p.shape[-1]) if p.ndim > 1 else 0.1 * noise)
    f, h, w = VIDEO_SHAPE
    n = f * h * w
    inputs = {
        "hidden_states": torch.randn(1, n, CONFIG["in_channels"], generator=gen),
        "encoder_hidden_states": torch.randn(1, PROMPT_LEN, CONFIG["caption_channels"], generator=gen),
        "timestep": torch.tensor([700.0]),
        "encoder_attention_mask": torch.cat([torch.ones(1, PROMPT_LEN - 32), torch.zeros(1, 32)], dim=1),
        "video_shape": torch.tensor(VIDEO_SHAPE, dtype=torch.int64),
        "rope_interpolation_scale": torch.tensor([8.0 / 25.0, 32.0, 32.0]),
    }
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    save_file(inputs, os.path.join(args.out, "inputs.safetensors"))

    def run():
        with torch.no_grad():
            return model(
                hidden_states=inputs["hidden_states"],
                encoder_hidden_states=inputs["encoder_hidden_states"],
                timestep=inputs["timestep"],
                encoder_attention_mask=inputs["encoder_attention_mask"],
                num_frames=f,
                height=h,
                width=w,
                rope_interpolation_scale=(8.0 / 25.0, 32.0, 32.0),
                return_dict=False,
            )[0]

    sample = run()  # warm-up
    save_file({"sample": sample.contiguous()}, os.path.join(args.out, "expected.safetensors"))
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, times_ms={[round(t, 1) for t in times]}")
    print(f"reference_forward_ms_median={statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
