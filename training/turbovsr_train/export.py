"""Export to the element's checkpoint folder (DESIGN §3.3): `vae/` and `transformer/` in the
diffusers layout (the transformer's safetensors with the head's keys, DESIGN §3.2) and
`turbovsr.json` with the sampler and conditioning settings the model was trained with."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from diffusers import AutoencoderKLLTXVideo
from safetensors.torch import save_file

from .model import DEFAULT_COND_SCALE, TurboVSRTransformer


@dataclass
class TurboVSRSettings:
    """`turbovsr.json` (DESIGN §3.3); the defaults are the element's."""

    scale: int = 4
    cond_scale: float = DEFAULT_COND_SCALE
    step_sizes: list[float] | None = None
    tile: list[int] = field(default_factory=lambda: [7, 32, 32])
    #: The most overlap the tiles need (None: the element's default, at most half the tile).
    tile_overlap: int | None = None
    decode_timestep: float = 0.05
    frame_rate: float = 25.0
    shift: dict | float | None = None

    def to_json(self) -> dict:
        # Unset entries are left to the element's defaults.
        return {k: v for k, v in asdict(self).items() if v is not None}


def export_checkpoint(
    out: str,
    model: TurboVSRTransformer,
    vae: AutoencoderKLLTXVideo,
    settings: TurboVSRSettings | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Writes `out/` as the element loads it (`turbovsr inspect out` checks it). `weights`: the
    transformer's full state dict when the model is sharded (accelerate's `get_state_dict`);
    `dtype`: the weights of both are written in it (the VAE's frozen ones too, which the
    trainer may hold in f32 for an f16 file)."""
    settings = settings or TurboVSRSettings(cond_scale=model.cond_scale)
    if abs(settings.cond_scale - model.cond_scale) > 1e-12:
        raise ValueError(
            f"turbovsr.json's cond_scale {settings.cond_scale} is not the model's "
            f"{model.cond_scale}"
        )
    os.makedirs(out, exist_ok=True)
    state = weights if weights is not None else model.transformer.state_dict()
    save_module(model.transformer, state, dtype, os.path.join(out, "transformer"))
    save_module(vae, vae.state_dict(), dtype, os.path.join(out, "vae"))
    with open(os.path.join(out, "turbovsr.json"), "w") as f:
        json.dump(settings.to_json(), f, indent=2)
        f.write("\n")


def save_module(module, state: dict[str, torch.Tensor], dtype: torch.dtype | None, folder: str):
    """A diffusers folder: the module's `config.json` and its weights (`state`) in `dtype`."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.save_config(folder)
    # diffusers records where a loaded module came from: a path on this machine, which would
    # make the same model's folder differ from one checkout to the next
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if config.pop("_name_or_path", None) is not None:
        with open(path, "w") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        os.path.join(folder, "diffusion_pytorch_model.safetensors"),
        metadata={"format": "pt"},
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m turbovsr_train.export RUN OUT`: the model folder from a run's last checkpoint
    (for a run that was stopped before its own `--export`). An FSDP run's sharded checkpoint is
    merged first with `accelerate merge-weights RUN/checkpoint/pytorch_model_fsdp_0 RUN/merged`
    and read with `--weights RUN/merged/model.safetensors`."""
    import argparse

    from safetensors.torch import load_file

    from . import latents
    from .config import TrainConfig
    from .train import build_model, export_run

    parser = argparse.ArgumentParser(
        prog="python -m turbovsr_train.export", description=main.__doc__
    )
    parser.add_argument("run", help="the run folder (settings.json, checkpoint/)")
    parser.add_argument("out", help="the model folder to write")
    parser.add_argument("--weights", help="weights file (default RUN/checkpoint/model.safetensors)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"))
    args = parser.parse_args(argv)
    with open(os.path.join(args.run, "settings.json")) as f:
        cfg = TrainConfig(**json.load(f))
    if args.dtype:
        cfg.export_dtype = args.dtype
    weights = args.weights or os.path.join(args.run, "checkpoint", "model.safetensors")
    if not os.path.isfile(weights):
        raise SystemExit(f"{weights}: no such weights file (a run without a checkpoint yet?)")
    vae = latents.load_vae(cfg.vae)
    model = build_model(cfg, vae.config.latent_channels)
    state = load_file(weights)
    model.load_state_dict(state, strict=True)  # names the missing and unexpected keys
    export_run(cfg, model, vae, state, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
