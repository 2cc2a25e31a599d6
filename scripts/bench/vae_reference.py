#!/usr/bin/env python3
"""Reference timing for scripts/bench/vae.sh: diffusers 0.42.1 AutoencoderKLLTXVideo on the CPU in
f32, with the fixed config of vae_bench_config.json and random weights, or the weights of a VAE
folder (`--vae models/default/vae`: the shipped default's), and random inputs (seeded) of
`--frames`, `--height` and `--width`.

Writes <out>/vae (diffusers folder), <out>/inputs.safetensors (`sample`, `latent`, `timestep`) and
<out>/outputs.safetensors (reference `latent` mean and `sample`), so that examples/bench_vae.rs
times the same model on the same inputs and checks it got the same outputs.
Prints `reference encode_ms=<median> decode_ms=<median> encode_min_ms=<min> decode_min_ms=<min>`.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="target/bench-vae")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--vae", help="a diffusers VAE folder (default: the bench config, random)")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    gen = torch.Generator().manual_seed(0)
    if args.vae:
        vae = AutoencoderKLLTXVideo.from_pretrained(args.vae).eval()
        cfg = dict(vae.config)
    else:
        cfg = {
            k: v
            for k, v in json.loads((HERE / "vae_bench_config.json").read_text()).items()
            if not k.startswith("_")
        }
        vae = AutoencoderKLLTXVideo(**cfg).eval()
        with torch.no_grad():
            for name, p in list(vae.named_parameters()) + list(vae.named_buffers()):
                if name.endswith("latents_std"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
                elif name.endswith("timestep_scale_multiplier"):
                    p.fill_(1000.0)
                elif p.dim() >= 2 and "scale_shift_table" not in name:
                    p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    vae.save_pretrained(out / "vae", safe_serialization=True)

    s, t = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    sample = torch.randn((1, 3, args.frames, args.height, args.width), generator=gen).clamp(-1, 1)
    latent = torch.randn(
        (1, cfg["latent_channels"], (args.frames - 1) // t + 1, args.height // s, args.width // s),
        generator=gen,
    )
    timestep = torch.tensor([0.05])
    save_file(
        {"sample": sample, "latent": latent, "timestep": timestep}, out / "inputs.safetensors"
    )

    def timed(fn):
        fn()  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), min(times), result

    with torch.inference_mode():
        enc_ms, enc_min, mean = timed(lambda: vae.encode(sample).latent_dist.mean)
        dec_ms, dec_min, dec = timed(lambda: vae.decode(latent, timestep).sample)
    save_file(
        {"latent": mean.contiguous(), "sample": dec.contiguous()}, out / "outputs.safetensors"
    )
    print(
        f"reference sample {list(sample.shape)} latent {list(latent.shape)} "
        f"threads {torch.get_num_threads()} torch {torch.__version__}"
    )
    print(
        f"reference encode_ms={enc_ms:.1f} decode_ms={dec_ms:.1f} "
        f"encode_min_ms={enc_min:.1f} decode_min_ms={dec_min:.1f}"
    )


if __name__ == "__main__":
    main()
