"""Export to the element's checkpoint folder (DESIGN §3.3): `vae/` and `transformer/` in the
diffusers layout (the transformer's safetensors with the head's keys, DESIGN §3.2) and
`turbovsr.json` with the sampler and conditioning settings the model was trained with."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from diffusers import AutoencoderKLLTXVideo

from .model import DEFAULT_COND_SCALE, TurboVSRTransformer


@dataclass
class TurboVSRSettings:
    """`turbovsr.json` (DESIGN §3.3); the defaults are the element's."""

    scale: int = 4
    cond_scale: float = DEFAULT_COND_SCALE
    step_sizes: list[float] | None = None
    tile: list[int] = field(default_factory=lambda: [7, 32, 32])
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
) -> None:
    """Writes `out/` as the element loads it (`turbovsr inspect out` checks it)."""
    settings = settings or TurboVSRSettings(cond_scale=model.cond_scale)
    if abs(settings.cond_scale - model.cond_scale) > 1e-12:
        raise ValueError(
            f"turbovsr.json's cond_scale {settings.cond_scale} is not the model's {model.cond_scale}"
        )
    os.makedirs(out, exist_ok=True)
    model.transformer.save_pretrained(os.path.join(out, "transformer"), safe_serialization=True)
    vae.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
    with open(os.path.join(out, "turbovsr.json"), "w") as f:
        json.dump(settings.to_json(), f, indent=2)
        f.write("\n")
