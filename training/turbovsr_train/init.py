"""Starts for a small denoiser trained from scratch: the model begins as the bicubic baseline
(`condition_start`) or as the best per-token linear restoration of it (`fit_condition_map`),
and training learns what to add. A small model trained from zero spends most of a CPU budget
relearning the identity on the condition; from these starts every sampler schedule already
returns a sensible picture.

The construction works through diffusers' LTX transformer as it is, with every block the
identity (`train.zero_block_outputs`): the token's `C` values and the condition's run on
orthonormal directions `W` of the `D`-wide residual stream, orthogonal to LayerNorm's all-ones
direction and to a bias direction `u` that keeps the token norm near-constant:

- `proj_in`: `W x + beta u`; `cond_embedder`: `-W c + beta u`; cross normalization adds them
  (their statistics match up to the signal, which `beta` dominates): `W (x - c) + 2 beta u`;
- the final LayerNorm divides by about `2 beta / sqrt(D)` and `proj_out = gain W^T` undoes it;
- the timestep embedding, which the output modulation adds to LayerNorm's scale (and shift,
  which `W^T` cancels), is fitted to `1/s - 1` in every channel: the velocity is
  `(x_s - c) / s`, so an Euler step from `s` to `s'` lands on `s'/s x_s + (1 - s'/s) c`, the
  condition at `s' = 0` for any schedule.

Exact up to LayerNorm's per-token gain (a few percent) and the fit of `1/s`.
"""

from __future__ import annotations

import torch

from .model import TurboVSRTransformer
from .schedule import VALID_STEPS, noise_levels

#: Below this level the velocity gain stays at 1 / GAIN_FLOOR_S (the 16-step schedule's last
#: level at shift 2 is 0.118).
GAIN_FLOOR_S = 0.1

#: The bias direction's norm in units of sqrt(C), a unit-variance token's norm. LayerNorm's
#: per-token gain departs from the constant by about |x - c|^2 / (8 beta^2): at 4 the sampler's
#: output was 2 % off the condition (a floor near 38 dB on smooth pictures, and 8-pixel blocks
#: where neighbouring tokens' gains differ); at 16 it is 0.08 %.
BETA_FACTOR = 16.0


def _basis(d: int, c: int, gen: torch.Generator) -> torch.Tensor:
    """`(d, c + 2)` orthonormal columns: the all-ones direction, the bias direction, then `c`
    directions for the token's values."""
    a = torch.cat(
        [torch.ones(d, 1), torch.rand(d, c + 1, generator=gen, dtype=torch.float64) - 0.5], 1
    )
    q, _ = torch.linalg.qr(a.double())
    return q * torch.sign(q[0, 0])  # the first column +ones/sqrt(d)


@torch.no_grad()
def condition_start(model: TurboVSRTransformer, shift: float, seed: int) -> None:
    """Sets `model` (its blocks already the identity) so that every schedule returns its
    condition latent; `shift` is the fixed shift factor whose sampler levels the `1/s` fit
    weights most."""
    tf = model.transformer
    d = tf.config.num_attention_heads * tf.config.attention_head_dim
    c = tf.config.in_channels
    if c + 2 > d or tf.config.out_channels != c:
        raise ValueError(f"condition start: {c} token values do not fit a {d}-wide stream")
    if model.transformer.cond_embedder.in_features != c:
        raise ValueError("condition start: the condition must be packed like the latent")
    basis = _basis(d, c, torch.Generator().manual_seed(seed ^ 0xC0DE))
    u, w = basis[:, 1], basis[:, 2:]  # (d,), (d, c)
    beta = BETA_FACTOR * c**0.5
    gain = 2.0 * beta / d**0.5
    f32 = lambda t: t.float()  # noqa: E731
    tf.proj_in.weight.copy_(f32(w))
    tf.proj_in.bias.copy_(f32(beta * u))
    tf.cond_embedder.weight.copy_(f32(-w))
    tf.cond_embedder.bias.copy_(f32(beta * u))
    tf.proj_out.weight.copy_(f32(gain * w.T))
    tf.proj_out.bias.zero_()
    tf.scale_shift_table.zero_()
    emb = tf.time_embed.emb
    if hasattr(emb, "step_embedder"):
        emb.step_embedder.linear_2.weight.zero_()
        emb.step_embedder.linear_2.bias.zero_()
    # The blocks' modulation from the timestep embedding: that embedding is large here
    # (1/s - 1 in every channel), so a random map would make every block swing with the noise
    # level; at zero the blocks see their own tables only.
    tf.time_embed.linear.weight.zero_()
    tf.time_embed.linear.bias.zero_()
    _fit_inverse_level(emb, shift)


def _fit_inverse_level(emb, shift: float) -> None:
    """The timestep embedder's last layer, every output channel alike, fitted by least squares
    to `1/s - 1`: on a dense grid, and on the levels the sampler visits with `shift` (weighted
    50 times each: there the fit is close to exact)."""
    grid = [0.02 + 0.98 * i / 399 for i in range(400)]
    for n in VALID_STEPS:
        for level in noise_levels(n, shift)[:n]:
            grid += [level] * 50
    s = torch.tensor(grid, dtype=torch.float64)
    te = emb.timestep_embedder
    proj = emb.time_proj(1000 * s.float())
    phi = torch.nn.functional.silu(te.linear_1(proj)).double()  # (N, d)
    target = 1.0 / s.clamp_min(GAIN_FLOOR_S) - 1.0
    x = torch.cat([phi, torch.ones(len(s), 1, dtype=torch.float64)], 1)
    coef = _ridge(x.T @ x, x.T @ target[:, None], 1e-8)
    d = phi.shape[1]
    te.linear_2.weight.copy_(coef[:d, 0].float().expand(d, d))
    te.linear_2.bias.fill_(float(coef[d, 0]))


def _ridge(gram: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """`(G + ridge tr(G)/k I)^-1 R`: least squares through its normal equations (f64)."""
    k = gram.shape[0]
    gram = gram + ridge * torch.trace(gram) / k * torch.eye(k, dtype=gram.dtype)
    return torch.linalg.solve(gram, rhs)


@torch.no_grad()
def fit_condition_map(model: TurboVSRTransformer, pairs) -> float:
    """After `condition_start`: every schedule returns `M c + m` instead of `c`, with the
    per-token affine map fitted by least squares from the condition's tokens to the clean
    ones over `pairs` (an iterable of packed `(x0, cond)` token batches, `(b, n, C)`). A token
    covers a patch of pixels, so this is the best linear restoration of the bicubic upscale
    within one. Returns the fit's squared error relative to the identity's (in sample)."""
    tf = model.transformer
    k = tf.config.in_channels + 1
    xtx = torch.zeros(k, k, dtype=torch.float64)
    xty = torch.zeros(k, k - 1, dtype=torch.float64)
    identity_err = yy = 0.0
    for x0, cond in pairs:
        y = x0.reshape(-1, k - 1).double()
        c = cond.reshape(-1, k - 1).double()
        x = torch.cat([c, torch.ones(len(c), 1, dtype=torch.float64)], 1)
        xtx += x.T @ x
        xty += x.T @ y
        yy += float((y**2).sum())
        identity_err += float(((y - c) ** 2).sum())
    coef = _ridge(xtx, xty, 1e-6)  # (k, C): y = [c 1] coef
    fit_err = yy - 2 * float((coef * xty).sum()) + float(((xtx @ coef) * coef).sum())
    m_map, offset = coef[:-1].T.float(), coef[-1].float()  # M (C, C), m (C,)
    w_old = tf.cond_embedder.weight.clone()  # -W
    tf.cond_embedder.bias.add_(w_old @ offset)
    tf.cond_embedder.weight.copy_(w_old @ m_map)
    return fit_err / max(identity_err, 1e-300)
