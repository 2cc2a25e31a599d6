"""The frozen LTX VAE of training (DESIGN §2, §3.1): the bicubic-upscaled LR clip and the HR clip
to normalized latents, as the element encodes its windows, and latents back to pixels for
evaluation. Everything here runs without gradient."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLLTXVideo


def load_vae(path: str, dtype: torch.dtype = torch.float32) -> AutoencoderKLLTXVideo:
    """A diffusers `AutoencoderKLLTXVideo` folder, a TurboVSR checkpoint folder (its `vae/`), or
    an LTX single-file checkpoint (`*.safetensors` with keys under `vae.`)."""
    if os.path.isfile(path):
        vae = AutoencoderKLLTXVideo.from_single_file(path, torch_dtype=dtype)
    else:
        folder = os.path.join(path, "vae") if os.path.isdir(os.path.join(path, "vae")) else path
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(
                f"{path}: not a VAE (no config.json there or in vae/), nor a single-file checkpoint"
            )
        vae = AutoencoderKLLTXVideo.from_pretrained(folder, torch_dtype=dtype)
    vae.requires_grad_(False)
    return vae.eval()


# diffusers keeps the next four as static methods of `LTXPipeline`
# (`pipelines/ltx/pipeline_ltx.py`), which cannot be imported without `transformers` (the T5
# text encoder, which a caption-free trainer never loads); they are restated here.


def normalize(vae: AutoencoderKLLTXVideo, z: torch.Tensor) -> torch.Tensor:
    """`(z - latents_mean) * scaling_factor / latents_std` per channel of `(b, c, t, h, w)`."""
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(z)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(z)
    return (z - mean) * vae.config.scaling_factor / std


def denormalize(vae: AutoencoderKLLTXVideo, z: torch.Tensor) -> torch.Tensor:
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(z)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(z)
    return z * std / vae.config.scaling_factor + mean


def pack(z: torch.Tensor, p: int, pt: int) -> torch.Tensor:
    """`(b, c, t, h, w)` to tokens `(b, t/pt * h/p * w/p, c * pt * p * p)`, frame-major."""
    b, c, t, h, w = z.shape
    z = z.reshape(b, c, t // pt, pt, h // p, p, w // p, p)
    # (b, c, t', pt, h', p, w', p) -> (b, t', h', w', c, pt, p, p)
    return z.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack(tokens: torch.Tensor, grid: tuple[int, int, int], p: int, pt: int) -> torch.Tensor:
    """The inverse of `pack` for a token grid `(t', h', w')`."""
    b = tokens.shape[0]
    t, h, w = grid
    z = tokens.reshape(b, t, h, w, -1, pt, p, p)
    # (b, t', h', w', c, pt, p, p) -> (b, c, t', pt, h', p, w', p)
    return z.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, t * pt, h * p, w * p)


def bicubic_up(lr: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`(b, 3, f, h, w)` to `(b, 3, f, height, width)`, PyTorch's bicubic (a = -0.75, edge taps
    clamped), which is what the element's resize matches (`tests/bicubic_parity.rs`)."""
    b, c, f, h, w = lr.shape
    frames = lr.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    up = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False)
    return up.reshape(b, f, c, height, width).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def encode(vae: AutoencoderKLLTXVideo, pixels: torch.Tensor) -> torch.Tensor:
    """RGB `(b, 3, f, h, w)` in [0, 1] to normalized latents (the posterior mean, as the element
    encodes; normalized as LTX's pipeline does)."""
    x = pixels.to(vae.device, vae.dtype) * 2 - 1
    z = vae.encode(x).latent_dist.mean
    return normalize(vae, z)


@torch.no_grad()
def decode(vae: AutoencoderKLLTXVideo, z: torch.Tensor, decode_timestep: float) -> torch.Tensor:
    """Normalized latents to RGB in [0, 1] (clamped), with the decode timestep of
    timestep-conditioned decoders (DESIGN §3.3 `decode_timestep`)."""
    z = denormalize(vae, z.to(vae.dtype))
    temb = None
    if vae.config.timestep_conditioning:
        temb = torch.full((z.shape[0],), decode_timestep, device=z.device, dtype=z.dtype)
    x = vae.decode(z, temb).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


@torch.no_grad()
def encode_pair(
    vae: AutoencoderKLLTXVideo, hr: torch.Tensor, lr: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's clean latent `x0` (the HR clip) and condition latent `cond` (the LR clip
    upscaled to the HR size, the element's input to its encoder), both `(b, c, t, h, w)`."""
    height, width = hr.shape[-2:]
    return encode(vae, hr), encode(vae, bicubic_up(lr, height, width))


@torch.no_grad()
def decoder_channel_gains(
    vae: AutoencoderKLLTXVideo, decode_timestep: float = 0.05
) -> torch.Tensor:
    """The pixel energy a unit change of each normalized latent channel makes through the decoder
    (a finite difference at the latent mean, at the centre of a 3x3 latent patch), scaled to mean
    1: the weights that make a squared error in latents approximate the one in pixels."""
    c, k, delta = vae.config.latent_channels, 3, 0.5
    zero = torch.zeros(1, c, 1, k, k, device=vae.device)
    base = decode(vae, zero, decode_timestep)
    gains = []
    for ch in range(c):
        z = zero.clone()
        z[0, ch, 0, k // 2, k // 2] = delta
        gains.append(float(((decode(vae, z, decode_timestep) - base) ** 2).sum()) / delta**2)
    g = torch.tensor(gains, dtype=torch.float64)
    if not (g.mean() > 0 and torch.isfinite(g).all()):
        raise ValueError(f"the VAE decoder's channel gains are degenerate ({g.tolist()})")
    return (g / g.mean()).float()
