"""TurboVSR's denoiser on diffusers' own LTX transformer (DESIGN §3.2, paper §3.3-3.4).

The model is `diffusers.LTXVideoTransformer3DModel`, unchanged; the head is three additions
attached as sub-modules, so that `state_dict()` names them exactly as the element's checkpoint
keys (DESIGN §3.2):

- `cond_embedder` (Linear C_in -> D): projects the patchified condition latent tokens;
- `time_embed.emb.step_embedder` (diffusers' `TimestepEmbedding(256, D)`): the shortcut step size
  `d`, embedded like the timestep (the same sinusoidal projection of `1000 * d`) and added to the
  timestep embedding, which AdaLN-single and the output modulation both read;
- cross normalization (ControlNeXt) of the condition against the first block's output, then
  `h <- (h + c') * cond_scale`.

The additions enter diffusers' forward through two forward hooks (the timestep embedder's output
and the first block's output), so the base model's code is never copied.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import LTXVideoTransformer3DModel
from diffusers.models.embeddings import TimestepEmbedding

#: The sinusoidal projection width of LTX's timestep embedder.
TIMESTEP_PROJ_DIM = 256
#: Cross normalization's epsilon on the condition's deviation (DESIGN §3.2).
CROSS_NORM_EPS = 1e-5
#: The default `cond_scale`, which keeps the variance of h (DESIGN §3.2).
DEFAULT_COND_SCALE = 1.0 / math.sqrt(2.0)


def cross_norm(h: torch.Tensor, c: torch.Tensor, cond_scale: float) -> torch.Tensor:
    """`(h + c') * cond_scale` with `c' = (c - mean c) * std h / (std c + eps) + mean h`; means and
    unbiased deviations over all tokens and channels of each batch element, in f32."""
    if h.shape != c.shape:
        raise ValueError(
            f"condition tokens {tuple(c.shape)} do not match hidden states {tuple(h.shape)}"
        )
    h32, c32 = h.float(), c.float()
    dims = tuple(range(1, h.ndim))
    mean_h, std_h = h32.mean(dim=dims, keepdim=True), h32.std(dim=dims, keepdim=True)
    mean_c, std_c = c32.mean(dim=dims, keepdim=True), c32.std(dim=dims, keepdim=True)
    aligned = (c32 - mean_c) * (std_h / (std_c + CROSS_NORM_EPS)) + mean_h
    return ((h32 + aligned) * cond_scale).to(h.dtype)


@dataclass
class _Call:
    """What the hooks need during one forward: the condition tokens and the step size."""

    cond: torch.Tensor
    step_size: float | None


class TurboVSRTransformer(torch.nn.Module):
    """diffusers' LTX transformer with TurboVSR's head. `shortcut=False` is a plain
    flow-matching model (no step embedder; the step size is ignored), as the element reads a
    checkpoint without `step_embedder` keys."""

    def __init__(
        self,
        transformer: LTXVideoTransformer3DModel,
        cond_channels: int,
        cond_scale: float = DEFAULT_COND_SCALE,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.cond_scale = cond_scale
        dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        # Registered on the diffusers modules so that the state dict has DESIGN §3.2's keys.
        transformer.cond_embedder = torch.nn.Linear(cond_channels, dim)
        if shortcut:
            transformer.time_embed.emb.step_embedder = TimestepEmbedding(TIMESTEP_PROJ_DIM, dim)
        self._call: _Call | None = None
        transformer.time_embed.emb.register_forward_hook(self._add_step_embedding)
        # The condition enters after block 0, or after proj_in in a model without blocks (the
        # element's denoiser does the same).
        blocks = transformer.transformer_blocks
        first = blocks[0] if len(blocks) else transformer.proj_in
        first.register_forward_hook(self._cross_norm_after_block_0)

    @classmethod
    def from_pretrained(
        cls, folder: str, cond_scale: float = DEFAULT_COND_SCALE
    ) -> TurboVSRTransformer:
        """Loads a `transformer/` folder as the element does: the diffusers config and weights
        plus the head's keys (diffusers' own `from_pretrained` would drop those). A folder
        without `step_embedder` keys is a flow-matching model. Every key must be used."""
        import os

        from safetensors.torch import load_file

        config = LTXVideoTransformer3DModel.load_config(folder)
        transformer = LTXVideoTransformer3DModel.from_config(config)
        path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        state = load_file(path)
        if "cond_embedder.weight" not in state:
            raise ValueError(f"{path}: no `cond_embedder.weight`: not a TurboVSR transformer")
        shortcut = any(k.startswith("time_embed.emb.step_embedder.") for k in state)
        model = cls(transformer, state["cond_embedder.weight"].shape[1], cond_scale, shortcut)
        missing, unexpected = transformer.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
        return model

    @property
    def shortcut(self) -> bool:
        return hasattr(self.transformer.time_embed.emb, "step_embedder")

    def _add_step_embedding(self, module, _args, output):
        call = self._call
        if call is None or call.step_size is None or not self.shortcut:
            return output
        d = torch.tensor([1000.0 * call.step_size], device=output.device)
        # The timestep embedder's own projection (flip_sin_to_cos, shift 0), then the MLP.
        proj = module.time_proj(d).to(output.dtype)
        return output + module.step_embedder(proj)

    def _cross_norm_after_block_0(self, _module, _args, output):
        call = self._call
        if call is None:
            raise RuntimeError("TurboVSRTransformer's blocks ran outside its forward")
        hidden = output[0] if isinstance(output, tuple) else output
        c = self.transformer.cond_embedder(call.cond.to(hidden.dtype))
        hidden = cross_norm(hidden, c, self.cond_scale)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    @contextmanager
    def _calling(self, cond: torch.Tensor, step_size: float | None):
        # The call stays set after the forward: gradient checkpointing runs block 0 again
        # during the backward pass, and its hook must see this forward's condition then.
        self._call = _Call(cond, step_size)
        yield

    def forward(
        self,
        hidden_states: torch.Tensor,
        cond: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        step_size: float | None,
        num_frames: int,
        height: int,
        width: int,
        encoder_attention_mask: torch.Tensor | None = None,
        rope_interpolation_scale=None,
    ) -> torch.Tensor:
        """The velocity (b, n, out_channels) for the noisy tokens `hidden_states` (b, n, c), the
        condition tokens `cond` (b, n, cond_channels, patchified like the latent) and the step
        size `step_size` in (0, 1]; `timestep` is [b] or per token [b, n] (the clean conditioning
        frame's tokens at 0)."""
        if cond.shape[:2] != hidden_states.shape[:2]:
            raise ValueError(
                f"condition tokens have shape {tuple(cond.shape)}, expected "
                f"({hidden_states.shape[0]}, {hidden_states.shape[1]}, channels) like the latent"
            )
        with self._calling(cond, step_size):
            return self.transformer(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                encoder_attention_mask=encoder_attention_mask,
                num_frames=num_frames,
                height=height,
                width=width,
                rope_interpolation_scale=rope_interpolation_scale,
                return_dict=False,
            )[0]
