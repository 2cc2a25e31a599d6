"""The paper's training recipe (§3.3, §3.4, supplementary §6) on packed latent tokens.

- Flow matching (`x_s = (1 - s) x0 + s eps`, target `v = eps - x0`, DESIGN §4) on one batch, the
  shortcut self-consistency loss on the next (paper eq. 4-5: one step of size `d` equals its two
  halves, the two-step target computed without gradient), alternating.
- Non-uniform bootstrap paths (§3.4): a shortcut batch draws a step count `N` in {1, 2, 4, ...,
  `max_bootstrap_steps`} and a step `i` of the *shifted* `N`-step schedule that the element runs
  (`schedule.noise_levels`); its real step `d = s_i - s_{i+1}` is split at the `2N`-step
  schedule's midpoint, so both halves are steps the sampler takes too. Every model evaluation is
  conditioned on the nearest trained step size, as at inference. Flow-matching batches draw `s`
  from the same shifted distribution and condition on the smallest step size.
- Factorized conditioning as multi-task (§3.3): image SR of one frame, or video SR given the
  clean first-frame latent (per-token timestep 0, never noised, no loss on its tokens).
- Condition noise (supplementary §6): with probability `cond_aug` a sample's condition latent is
  noised like a DDPM at a step drawn from 0..`cond_aug_max_t` (Stable Diffusion's scaled-linear
  betas, from diffusers' `DDPMScheduler`); condition dropout: with probability `cond_dropout`
  the condition is dropped (zeros), which trains unconditional generation alongside.
- Caption-free: the prompt is one zero embedding with mask 1, what the element uses without
  `prompt-embeds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers import DDPMScheduler

from . import latents
from .model import TurboVSRTransformer
from .schedule import (
    VALID_STEPS,
    default_step_sizes,
    nearest_step_size,
    noise_levels,
    plan,
    shift_factor,
    shifted,
)


@dataclass
class RecipeConfig:
    """What the losses draw; the defaults are the paper's where it gives them."""

    #: "shortcut" (flow matching and shortcut on alternating batches) or "flow" (every batch).
    objective: str = "shortcut"
    step_sizes: list[float] = field(default_factory=default_step_sizes)
    #: A fixed shift factor, or LTX's token-count-dependent dict (`schedule.LTX_SHIFT`).
    shift: float | dict = 2.0
    max_bootstrap_steps: int = 64
    cond_aug: float = 0.5
    cond_aug_max_t: int = 300
    cond_dropout: float = 0.0
    #: Smallest noise level of flow-matching batches.
    min_level: float = 0.0
    #: Step counts the trajectory objective trains (one drawn per batch).
    trajectory_steps: list[int] = field(default_factory=lambda: [1, 2, 4])

    def check(self) -> None:
        if self.objective not in ("shortcut", "flow", "trajectory"):
            raise ValueError(
                f"objective {self.objective!r}: expected 'shortcut', 'flow' or 'trajectory'"
            )
        bad = [n for n in self.trajectory_steps if n not in VALID_STEPS]
        if not self.trajectory_steps or bad:
            raise ValueError(f"trajectory_steps {self.trajectory_steps}: each one of {VALID_STEPS}")
        if not self.step_sizes or any(not (0 < d <= 1) for d in self.step_sizes):
            raise ValueError(f"step_sizes must be values in (0, 1], got {self.step_sizes}")
        n = self.max_bootstrap_steps
        if n < 1 or n & (n - 1):
            raise ValueError(f"max_bootstrap_steps {n} must be a power of two")
        for name in ("cond_aug", "cond_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)} must be a probability in [0, 1]")
        if not 0 <= self.cond_aug_max_t <= 999:
            raise ValueError(f"cond_aug_max_t {self.cond_aug_max_t} must be in 0..999")


def ddpm_alphas_cumprod() -> torch.Tensor:
    """`alpha_bar` of Stable Diffusion's scaled-linear 1000-step DDPM schedule."""
    ddpm = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return ddpm.alphas_cumprod.double()


def pack(z: torch.Tensor, model: TurboVSRTransformer) -> torch.Tensor:
    """`(b, c, t, h, w)` latents to tokens `(b, t/pt * h/p * w/p, c*pt*p*p)`, frame-major, as
    diffusers' LTX pipeline packs them (`latents.pack`) and the element does."""
    cfg = model.transformer.config
    return latents.pack(z, cfg.patch_size, cfg.patch_size_t)


@dataclass
class Batch:
    """One batch's latents and what the transformer needs besides them."""

    x0: torch.Tensor  # (b, n, c) packed clean latents
    cond: torch.Tensor  # (b, n, c_cond) packed condition latents (augmented)
    prompt: torch.Tensor  # (b, 1, caption_channels) zeros
    mask: torch.Tensor  # (b, 1) ones
    grid: tuple[int, int, int]  # token grid (frames, height, width)
    first: int  # leading clean tokens (the held first frame), 0 for image SR
    rope: tuple[float, float, float]

    @property
    def frames(self) -> int:
        return self.grid[0]


class Recipe:
    """Builds each step's loss from a batch of latents and a seeded generator."""

    def __init__(
        self,
        cfg: RecipeConfig,
        temporal_compression: int,
        spatial_compression: int,
        frame_rate: float = 25.0,
    ) -> None:
        cfg.check()
        self.cfg = cfg
        self.alphas_cumprod = ddpm_alphas_cumprod()
        self.rope = (
            temporal_compression / frame_rate,
            float(spatial_compression),
            float(spatial_compression),
        )

    def batch(
        self,
        model: TurboVSRTransformer,
        x0: torch.Tensor,
        cond: torch.Tensor,
        gen: torch.Generator,
    ) -> Batch:
        """Packs `(b, c, t, h, w)` latents with the condition's noise augmentation and dropout
        drawn per sample from `gen`; video SR (t > 1) holds latent 0 clean."""
        cfg, (b, _, t, h, w) = self.cfg, x0.shape
        tcfg = model.transformer.config
        p, pt = tcfg.patch_size, tcfg.patch_size_t
        if h % p or w % p or t % pt:
            raise ValueError(f"latent {t}x{h}x{w} is not a whole number of {pt}x{p}x{p} patches")
        cond = cond.clone()
        for i in range(b):
            if _draw(gen) < cfg.cond_dropout:
                cond[i] = 0
            elif _draw(gen) < cfg.cond_aug:
                step = int(_draw(gen) * (cfg.cond_aug_max_t + 1))
                ab = float(self.alphas_cumprod[min(step, 999)])
                noise = torch.randn(cond[i].shape, generator=gen).to(cond)
                cond[i] = cond[i] * math.sqrt(ab) + noise * math.sqrt(1 - ab)
        grid = (t // pt, h // p, w // p)
        first = grid[1] * grid[2] if grid[0] > 1 else 0
        return Batch(
            x0=pack(x0, model),
            cond=pack(cond, model),
            prompt=torch.zeros(b, 1, tcfg.caption_channels, device=x0.device, dtype=x0.dtype),
            mask=torch.ones(b, 1, device=x0.device, dtype=x0.dtype),
            grid=grid,
            first=first,
            rope=self.rope,
        )

    def velocity(self, model, batch: Batch, x: torch.Tensor, s: torch.Tensor, d: float):
        """The model's velocity at per-sample levels `s` (b,) with step size `d`; the held
        frame's tokens at timestep 0."""
        n = x.shape[1]
        ts = (1000 * s.to(x.device, torch.float32))[:, None].expand(-1, n).clone()
        ts[:, : batch.first] = 0
        return model(
            hidden_states=x,
            cond=batch.cond,
            encoder_hidden_states=batch.prompt,
            timestep=ts,
            step_size=d,
            num_frames=batch.grid[0],
            height=batch.grid[1],
            width=batch.grid[2],
            encoder_attention_mask=batch.mask,
            rope_interpolation_scale=batch.rope,
        )

    def noisy_mask(self, batch: Batch) -> torch.Tensor:
        n = batch.x0.shape[1]
        m = torch.ones(1, n, 1, device=batch.x0.device, dtype=batch.x0.dtype)
        m[:, : batch.first] = 0
        return m

    def noised(self, batch: Batch, eps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """`(1 - s) x0 + s eps` on the noisy tokens, `x0` on the held ones."""
        s_tok = s.to(batch.x0)[:, None, None] * self.noisy_mask(batch)
        return batch.x0 * (1 - s_tok) + eps * s_tok

    def loss(self, model, batch: Batch, shortcut: bool, gen: torch.Generator):
        """The step's loss (mean squared velocity error over the noisy tokens) and what it drew."""
        cfg = self.cfg
        b, n, _ = batch.x0.shape
        factor = shift_factor(cfg.shift, n)
        eps = torch.randn(batch.x0.shape, generator=gen).to(batch.x0)
        mask = self.noisy_mask(batch)
        if shortcut:
            levels = int(math.log2(cfg.max_bootstrap_steps))
            big_n = 2 ** min(int(_draw(gen) * (levels + 1)), levels)
            i = min(int(_draw(gen) * big_n), big_n - 1)
            fine = noise_levels(2 * big_n, cfg.shift, n)
            s0, s_mid, s1 = fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]
            d1, d2, d = s0 - s_mid, s_mid - s1, s0 - s1
            s = torch.full((b,), s0, dtype=torch.float64)
            x = self.noised(batch, eps, s)
            with torch.no_grad():
                near = lambda v: nearest_step_size(v, cfg.step_sizes)  # noqa: E731
                v1 = self.velocity(model, batch, x, s, near(d1))
                x_mid = x - d1 * v1 * mask
                v2 = self.velocity(model, batch, x_mid, torch.full((b,), s_mid), near(d2))
                target = (d1 * v1 + d2 * v2) / d
            d_model = near(d)
            info = {"objective": "shortcut", "level": s0, "step": d}
        else:
            u = torch.rand(b, generator=gen, dtype=torch.float64).clamp(1e-4, 1.0)
            s = torch.tensor([max(shifted(float(v), factor), cfg.min_level) for v in u])
            x = self.noised(batch, eps, s)
            target = eps - batch.x0
            d_model = min(cfg.step_sizes)
            info = {"objective": "flow", "level": float(s.mean())}
        v = self.velocity(model, batch, x, s, d_model)
        err = (v.float() - target.float()) ** 2 * mask
        loss = err.sum() / (b * (n - batch.first) * v.shape[-1])
        return loss, info

    def trajectory_loss(self, model, batch: Batch, gen: torch.Generator, weights: torch.Tensor):
        """Fine-tuning on the sampler's own path: an `n`-step schedule of the element (`n` from
        `trajectory_steps`) run from noise without gradient up to a random step, where the
        model's clean-latent prediction `x_s - s v` is regressed on the true latent, each packed
        channel weighted by its pixel gain through the decoder (`weights` (c,),
        `latents.decoder_channel_gains`). The last step's prediction is the output, so this is
        the output's error at every step count trained."""
        cfg = self.cfg
        b, n, c = batch.x0.shape
        counts = cfg.trajectory_steps
        steps = counts[min(int(_draw(gen) * len(counts)), len(counts) - 1)]
        schedule = plan(steps, n, cfg.shift, cfg.step_sizes)
        at = min(int(_draw(gen) * steps), steps - 1)
        mask = self.noisy_mask(batch)
        x = self.noised(
            batch, torch.randn(batch.x0.shape, generator=gen).to(batch.x0), torch.ones(b)
        )
        with torch.no_grad():
            for st in schedule[:at]:
                v = self.velocity(model, batch, x, torch.full((b,), st.s), st.d_model)
                x = x - st.d * v.to(x) * mask
        st = schedule[at]
        v = self.velocity(model, batch, x, torch.full((b,), st.s), st.d_model)
        err = (x.float() - st.s * v.float() - batch.x0.float()) ** 2 * mask
        loss = (err * weights.to(err)[None, None]).sum() / (b * (n - batch.first) * c)
        return loss, {"objective": "trajectory", "level": st.s, "steps": steps}


@torch.no_grad()
def sample(
    model,
    recipe: Recipe,
    batch: Batch,
    steps: int,
    gen: torch.Generator,
    held: torch.Tensor | None = None,
) -> torch.Tensor:
    """The element's sampler on one batch (DESIGN §4, untiled, one window): `steps` Euler steps
    of the shifted schedule from noise, each conditioned on the nearest trained step size;
    `held` (b, first, c): the clean first-frame tokens of video SR. Returns packed tokens."""
    cfg = recipe.cfg
    b, n, _ = batch.x0.shape
    x = torch.randn(batch.x0.shape, generator=gen).to(batch.x0)
    if batch.first:
        x[:, : batch.first] = held
    mask = recipe.noisy_mask(batch)
    for st in plan(steps, n, cfg.shift, cfg.step_sizes):
        v = recipe.velocity(model, batch, x, torch.full((b,), st.s), st.d_model)
        x = x - st.d * v.to(x) * mask
    return x


def _draw(gen: torch.Generator) -> float:
    """One uniform draw in [0, 1) from `gen` (so that a step's draws depend on its seed only)."""
    return float(torch.rand((), generator=gen, dtype=torch.float64))
