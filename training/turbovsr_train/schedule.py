"""The non-uniform shortcut schedule (paper §3.4, DESIGN §4): shifted flow-matching noise levels,
the real step between two of them, and the nearest step size the model was trained on. The
trainer draws its levels and step sizes from these functions and the reference sampler
(`reference.py`) runs them, so what the model is trained on is what the element asks of it
(`src/sample/schedule.rs`, checked end to end by `tests/window_parity.rs`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from diffusers import FlowMatchEulerDiscreteScheduler

#: Step counts the element's sampler accepts (DESIGN §4).
VALID_STEPS = (1, 2, 4, 8, 16)

#: LTX-Video's resolution-dependent shift (the values of LTX's scheduler config; DESIGN §3.3).
LTX_SHIFT = {"base_seq_len": 1024, "max_seq_len": 4096, "base_shift": 0.95, "max_shift": 2.05}

Shift = dict | float

#: diffusers' exponential time shift `e^mu / (e^mu + (1/u - 1))`, as LTX's pipeline runs it.
_SHIFTER = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")

#: Distances closer than this are a tie (a 1-ulp difference in `s_i` must not change the choice).
_TIE = 1e-12


def default_step_sizes() -> list[float]:
    """The shortcut model's powers of two from 1 to 1/128 plus extras between the large ones,
    where nearest-neighbour selection errs most (paper §3.4; DESIGN lists none: these are the
    element's geometric midpoints 3/4, 3/8, 3/16, 3/32); largest first."""
    return sorted([2.0**-k for k in range(8)] + [0.75, 0.375, 0.1875, 0.09375], reverse=True)


def shift_mu(shift: Shift, seq_len: int) -> float:
    """`mu` for `seq_len` tokens: linear in the token count as diffusers' LTX pipeline's
    `calculate_shift` (restated: that module needs `transformers`), or the log of a fixed
    factor."""
    if isinstance(shift, dict):
        m = (shift["max_shift"] - shift["base_shift"]) / (
            shift["max_seq_len"] - shift["base_seq_len"]
        )
        return shift["base_shift"] + m * (seq_len - shift["base_seq_len"])
    if not (math.isfinite(float(shift)) and float(shift) > 0):
        raise ValueError(f"shift factor {shift} must be positive and finite")
    return math.log(float(shift))


def shift_factor(shift: Shift, seq_len: int) -> float:
    """`e^mu` for `seq_len` tokens."""
    return float(shift) if not isinstance(shift, dict) else math.exp(shift_mu(shift, seq_len))


def shifted(u: float, factor: float) -> float:
    """The shift of a uniform level `u` in [0, 1]: `f u / (1 + (f - 1) u)`."""
    return factor * u / (1.0 + (factor - 1.0) * u)


def noise_levels(steps: int, shift: Shift, seq_len: int = 0) -> list[float]:
    """`s_0 = 1 > s_1 > ... > s_N = 0`: `u_i = 1 - i/N` shifted, diffusers' exponential time
    shift for LTX's dynamic `mu`, the same function in closed form for a fixed factor."""
    u = 1.0 - np.arange(steps, dtype=np.float64) / steps
    if isinstance(shift, dict):
        s = _SHIFTER.time_shift(shift_mu(shift, seq_len), 1.0, u)
    else:
        s = np.array([shifted(v, shift_factor(shift, seq_len)) for v in u])
    return [float(v) for v in s] + [0.0]


def nearest_step_size(d: float, step_sizes: list[float]) -> float:
    """The trained step size nearest to `d` (paper §3.4); a tie goes to the smaller step."""
    if not step_sizes:
        raise ValueError("step_sizes is empty")
    best = min(abs(a - d) for a in step_sizes)
    return min(a for a in step_sizes if abs(a - d) <= best + _TIE)


@dataclass(frozen=True)
class Step:
    """Evaluate the model at level `s` conditioned on step size `d_model`, move by `d`."""

    s: float
    d: float
    d_model: float


def plan(steps: int, seq_len: int, shift: Shift, step_sizes: list[float]) -> list[Step]:
    """The steps of a `steps`-step run over a latent of `seq_len` tokens (the whole latent's:
    clean conditioning tokens and every spatial tile included, as LTX counts the whole video)."""
    if steps not in VALID_STEPS:
        raise ValueError(f"steps={steps} is not one of {list(VALID_STEPS)}")
    if not step_sizes or any(not (0 < d <= 1) for d in step_sizes):
        raise ValueError(
            f"step_sizes must be a non-empty set of values in (0, 1], got {step_sizes}"
        )
    s = noise_levels(steps, shift, seq_len)
    return [
        Step(s[i], s[i] - s[i + 1], nearest_step_size(s[i] - s[i + 1], step_sizes))
        for i in range(steps)
    ]
