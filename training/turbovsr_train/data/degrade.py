"""The Real-ESRGAN high-order degradation model, for video.

Wang et al. 2021, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data", §3 (what it does follows their `degradations.py`, `realesrgan_dataset.py` and
`realesrgan_model.py`, the ranges their `train_realesrgan_x4plus.yml`): blur -> resize -> noise ->
JPEG, twice, then a final resize to the LR size with a 2-D sinc filter and a last JPEG, in random
order.

For video (pseudo-video clips, TurboVSR supplementary §6) the PARAMETERS are drawn once per clip
(`DegradeParams.sample`) and every frame is degraded with them; only the noise is drawn afresh per
frame, as a real camera's sensor noise would be.

Frames are float32 `[3, H, W]` tensors in [0, 1]; randomness comes only from the
`numpy.random.Generator` passed in, so a seed fixes everything.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

KernelKind = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"
]
ResizeMode = Literal["area", "bilinear", "bicubic"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")
_ISO_KINDS = ("iso", "generalized_iso", "plateau_iso")


def _odd(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, 2))


_REALESRGAN_KINDS: tuple[tuple[KernelKind, float], ...] = (
    ("iso", 0.45),
    ("aniso", 0.25),
    ("generalized_iso", 0.12),
    ("generalized_aniso", 0.03),
    ("plateau_iso", 0.12),
    ("plateau_aniso", 0.03),
)


@dataclass(frozen=True)
class BlurConfig:
    #: Odd kernel sizes, drawn uniformly (Real-ESRGAN: 7, 9, ..., 21).
    sizes: tuple[int, ...] = _odd(7, 21)
    #: Kernel families with their probabilities (Real-ESRGAN's `random_mixed_kernels`).
    kinds: tuple[tuple[KernelKind, float], ...] = _REALESRGAN_KINDS
    #: Gaussian sigma range in pixels (each axis of an anisotropic kernel).
    sigma: tuple[float, float] = (0.2, 3.0)
    #: Shape range of the generalized Gaussian, exp(-0.5 d^beta).
    betag: tuple[float, float] = (0.5, 4.0)
    #: Shape range of the plateau kernel, 1 / (d^beta + 1).
    betap: tuple[float, float] = (1.0, 2.0)
    #: Probability of a 2-D sinc (ringing / overshoot) kernel instead of the families.
    sinc_prob: float = 0.1


@dataclass(frozen=True)
class StageConfig:
    """One blur -> resize -> noise -> JPEG round."""

    #: Probability that the stage blurs at all (Real-ESRGAN: 1 first, 0.8 second).
    blur_prob: float = 1.0
    blur: BlurConfig = field(default_factory=BlurConfig)
    #: Probabilities of up / down / keep.
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    #: Scale range: up draws from (1, max), down from (min, 1).
    resize_range: tuple[float, float] = (0.15, 1.5)
    #: Probability of Gaussian (else Poisson) noise.
    gaussian_noise_prob: float = 0.5
    #: Gaussian noise sigma range, in 8-bit levels.
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    #: Probability that the noise is the same in all three channels.
    gray_noise_prob: float = 0.4
    #: JPEG quality range closing this stage; None: none here (the second stage's JPEG is the
    #: final one, `DegradeConfig.final_jpeg_range`).
    jpeg_range: tuple[int, int] | None = (30, 95)


@dataclass(frozen=True)
class DegradeConfig:
    """How HR frames become LR ones. `first` / `second` None skip those stages; `clean` skips
    both and everything else: a plain antialiased bicubic downscale."""

    name: str
    first: StageConfig | None
    #: None: single-order degradation.
    second: StageConfig | None
    #: Probability of the final sinc filter (else no filter).
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = _odd(7, 21)
    #: None: no final JPEG.
    final_jpeg_range: tuple[int, int] | None = (30, 95)
    #: Modes the final resize to the LR size draws from.
    final_modes: tuple[ResizeMode, ...] = RESIZE_MODES
    #: Antialias downscales. Real-ESRGAN does not (its `F.interpolate` calls alias, which is part
    #: of the degradation); a properly downscaled video does.
    antialias: bool = False

    @staticmethod
    def realesrgan() -> DegradeConfig:
        """Real-ESRGAN's x4 training settings (`train_realesrgan_x4plus.yml`)."""
        second_blur = BlurConfig(sigma=(0.2, 1.5))
        return DegradeConfig(
            name="realesrgan",
            first=StageConfig(),
            second=StageConfig(
                blur_prob=0.8,
                blur=second_blur,
                resize_prob=(0.3, 0.4, 0.3),
                resize_range=(0.3, 1.2),
                noise_range=(1.0, 25.0),
                poisson_scale_range=(0.05, 2.5),
                jpeg_range=None,
            ),
        )

    @staticmethod
    def mild() -> DegradeConfig:
        """A single-order, gentler pipeline for footage that is merely low-resolution and lightly
        compressed: Gaussian-family blur with sigma up to 1.5, mild resizing, noise up to 10
        levels, JPEG 60-95."""
        blur = BlurConfig(
            sizes=_odd(7, 15),
            kinds=(("iso", 0.6), ("aniso", 0.2), ("generalized_iso", 0.1), ("plateau_iso", 0.1)),
            sigma=(0.2, 1.5),
            sinc_prob=0.0,
        )
        first = StageConfig(
            blur=blur,
            resize_prob=(0.2, 0.5, 0.3),
            resize_range=(0.5, 1.2),
            noise_range=(1.0, 10.0),
            poisson_scale_range=(0.05, 1.0),
            jpeg_range=None,
        )
        return DegradeConfig(
            name="mild", first=first, second=None, final_sinc_prob=0.3, final_jpeg_range=(60, 95)
        )

    @staticmethod
    def clean() -> DegradeConfig:
        """A plain bicubic (antialiased) downscale and nothing else: what users feed from
        properly downscaled video."""
        return DegradeConfig(
            name="clean",
            first=None,
            second=None,
            final_sinc_prob=0.0,
            final_jpeg_range=None,
            final_modes=("bicubic",),
            antialias=True,
        )

    @staticmethod
    def preset(name: str) -> DegradeConfig:
        """A preset by name: `realesrgan`, `mild` or `clean`."""
        presets = {
            "realesrgan": DegradeConfig.realesrgan,
            "mild": DegradeConfig.mild,
            "clean": DegradeConfig.clean,
        }
        if name not in presets:
            raise ValueError(f"unknown degradation preset {name!r} ({', '.join(presets)})")
        return presets[name]()


PRESETS = ("realesrgan", "mild", "clean")


# --- kernels: the only formulas written by hand -------------------------------------------------


def _normalized(weights: torch.Tensor) -> torch.Tensor:
    return (weights / weights.sum()).to(torch.float32)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets from the centre, (y, x), float64 `[size, size]`."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    return torch.meshgrid(r, r, indexing="ij")


def family_kernel(
    size: int, kind: KernelKind, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> torch.Tensor:
    """A bivariate kernel of Real-ESRGAN's families over d = x^T Sigma^-1 x,
    Sigma = R diag(sx^2, sy^2) R^T: Gaussian exp(-d/2), generalized exp(-d^beta/2), plateau
    1 / (d^beta + 1); normalised, float32 `[size, size]`."""
    s, c = math.sin(theta), math.cos(theta)
    a, b = sigma_x**2, sigma_y**2
    i00, i01, i11 = c * c / a + s * s / b, c * s / a - c * s / b, s * s / a + c * c / b
    v, u = _grid(size)
    d = i00 * u * u + 2 * i01 * u * v + i11 * v * v
    if kind in ("iso", "aniso"):
        w = torch.exp(-0.5 * d)
    elif kind in ("generalized_iso", "generalized_aniso"):
        w = torch.exp(-0.5 * d.pow(beta))
    else:
        w = 1.0 / (d.pow(beta) + 1.0)
    return _normalized(w)


def sinc_kernel(size: int, omega: float) -> torch.Tensor:
    """The 2-D sinc (circular low-pass) kernel with cutoff `omega` in radians per pixel,
    omega J1(omega r) / (2 pi r) (Real-ESRGAN `circular_lowpass_kernel`); normalised."""
    v, u = _grid(size)
    r = torch.sqrt(u * u + v * v)
    safe = torch.where(r > 0, r, torch.ones_like(r))
    w = omega * torch.special.bessel_j1(omega * safe) / (2 * math.pi * safe)
    w = torch.where(r > 0, w, torch.full_like(r, omega * omega / (4 * math.pi)))
    return _normalized(w)


# --- drawing the parameters of a clip -----------------------------------------------------------


@dataclass(frozen=True)
class GaussianNoise:
    #: In [0, 1] units.
    sigma: float
    gray: bool


@dataclass(frozen=True)
class PoissonNoise:
    scale: float
    gray: bool


Noise = GaussianNoise | PoissonNoise


@dataclass(frozen=True)
class StageParams:
    """What one stage applies, drawn once per clip."""

    kernel: torch.Tensor | None
    resize_scale: float
    resize_mode: ResizeMode
    noise: Noise
    jpeg_quality: int | None


@dataclass(frozen=True)
class DegradeParams:
    """All parameters of one clip's degradation."""

    first: StageParams | None
    second: StageParams | None
    #: True: resize + sinc, then JPEG; False: JPEG, then resize + sinc.
    resize_first: bool
    final_sinc: torch.Tensor | None
    final_mode: ResizeMode
    final_jpeg: int | None
    antialias: bool = False

    @staticmethod
    def sample(cfg: DegradeConfig, rng: np.random.Generator) -> DegradeParams:
        """Draw a clip's parameters (Real-ESRGAN's `feed_data`, once per clip)."""
        first = _sample_stage(rng, cfg.first) if cfg.first else None
        second = _sample_stage(rng, cfg.second) if cfg.second else None
        resize_first = bool(rng.random() < 0.5)
        final_sinc = None
        if rng.random() < cfg.final_sinc_prob:
            size = int(rng.choice(cfg.final_sinc_sizes))
            final_sinc = sinc_kernel(size, _uniform(rng, (math.pi / 3, math.pi)))
        final_mode = cfg.final_modes[int(rng.integers(len(cfg.final_modes)))]
        final_jpeg = _quality(rng, cfg.final_jpeg_range) if cfg.final_jpeg_range else None
        return DegradeParams(
            first, second, resize_first, final_sinc, final_mode, final_jpeg, cfg.antialias
        )


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def _quality(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    return int(rng.integers(min(lo, hi), hi, endpoint=True))


def _weighted(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def _sample_beta(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Real-ESRGAN draws a shape beta below 1 or above 1 with equal odds."""
    lo, hi = bounds
    mid = min(max(lo, 1.0), hi)
    return _uniform(rng, (lo, mid)) if rng.random() < 0.5 else _uniform(rng, (mid, hi))


def sample_blur(rng: np.random.Generator, cfg: BlurConfig) -> torch.Tensor:
    """One blur kernel (Real-ESRGAN `random_mixed_kernels`, or a sinc with `sinc_prob`)."""
    size = int(rng.choice(cfg.sizes))
    if rng.random() < cfg.sinc_prob:
        # small kernels cannot hold a low cutoff's ringing, so Real-ESRGAN raises its floor
        lo = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, _uniform(rng, (lo, math.pi)))
    kind = cfg.kinds[_weighted(rng, tuple(p for _, p in cfg.kinds))][0]
    sx = _uniform(rng, cfg.sigma)
    if kind in _ISO_KINDS:
        sy, theta = sx, 0.0
    else:
        sy, theta = _uniform(rng, cfg.sigma), _uniform(rng, (-math.pi, math.pi))
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _sample_beta(rng, cfg.betag)
    elif kind.startswith("plateau"):
        beta = _sample_beta(rng, cfg.betap)
    return family_kernel(size, kind, sx, sy, theta, beta)


def _sample_stage(rng: np.random.Generator, cfg: StageConfig) -> StageParams:
    kernel = sample_blur(rng, cfg.blur) if rng.random() < cfg.blur_prob else None
    lo, hi = cfg.resize_range
    direction = _weighted(rng, cfg.resize_prob)  # up, down, keep
    resize_scale = 1.0
    if direction == 0:
        resize_scale = _uniform(rng, (1.0, max(hi, 1.0)))
    elif direction == 1:
        resize_scale = _uniform(rng, (min(lo, 1.0), 1.0))
    resize_mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    gaussian = rng.random() < cfg.gaussian_noise_prob
    gray = bool(rng.random() < cfg.gray_noise_prob)
    noise: Noise
    if gaussian:
        noise = GaussianNoise(_uniform(rng, cfg.noise_range) / 255.0, gray)
    else:
        noise = PoissonNoise(_uniform(rng, cfg.poisson_scale_range), gray)
    jpeg_quality = _quality(rng, cfg.jpeg_range) if cfg.jpeg_range else None
    return StageParams(kernel, resize_scale, resize_mode, noise, jpeg_quality)


# --- the operations ------------------------------------------------------------------------------


def quantize(x: torch.Tensor) -> torch.Tensor:
    """`clamp(round(x * 255), 0, 255) / 255`, the quantisation Real-ESRGAN ends with (and what an
    8-bit PNG of the frame holds)."""
    return (x * 255.0).round().clamp(0.0, 255.0) / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """`[3, H, W]` in [0, 1] to `uint8 [H, W, 3]`."""
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """`uint8 [H, W, 3]` to `[3, H, W]` in [0, 1]."""
    return torch.from_numpy(np.array(a, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0


def _trimmed(kernel: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """The centred sub-square outside which the rings carry under `tol` of the total weight:
    Real-ESRGAN pads all kernels to 21 x 21 and a small sigma leaves most of it at ~0, so the
    trimmed filter is the same far below 8-bit precision and several times cheaper."""
    a = kernel.abs()
    total = float(a.sum())
    n = kernel.shape[0]
    r = n // 2
    while r > 0:
        lo, hi = n // 2 - r, n // 2 + r
        ring = float(a[lo : hi + 1, lo : hi + 1].sum() - a[lo + 1 : hi, lo + 1 : hi].sum())
        if ring > tol * total:
            break
        r -= 1
    return kernel[n // 2 - r : n // 2 + r + 1, n // 2 - r : n // 2 + r + 1]


def _reflect_index(n: int, pad: int) -> torch.Tensor:
    """Indices of `F.pad(mode="reflect")` (edge not repeated), repeating the reflection when
    `pad >= n`, which `F.pad` refuses but a 21-tap kernel on a small intermediate needs."""
    i = torch.arange(-pad, n + pad)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = i.remainder(period)
    return torch.where(m >= n, period - m, m)


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel of `[3, H, W]` correlated with a square odd kernel, same size, reflect
    padding (Real-ESRGAN `filter2D`)."""
    k = _trimmed(kernel)
    r = k.shape[0] // 2
    if r == 0:
        return x * k[0, 0]
    _, h, w = x.shape
    padded = x[:, _reflect_index(h, r)][:, :, _reflect_index(w, r)]
    weight = k.to(x.dtype).expand(x.shape[0], 1, *k.shape)
    return F.conv2d(padded[None], weight, groups=x.shape[0])[0]


def resize(
    x: torch.Tensor, size: tuple[int, int], mode: ResizeMode, antialias: bool = False
) -> torch.Tensor:
    """`[3, H, W]` to `[3, *size]` with `F.interpolate` (what Real-ESRGAN calls; align_corners
    False). `antialias` applies where bilinear / bicubic downscale (area already averages)."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    kwargs: dict = {}
    if mode != "area":
        kwargs["align_corners"] = False
        down = size[0] < x.shape[1] or size[1] < x.shape[2]
        kwargs["antialias"] = antialias and down
    return F.interpolate(x[None], size=size, mode=mode, **kwargs)[0]


def add_noise(x: torch.Tensor, noise: Noise, rng: np.random.Generator) -> torch.Tensor:
    """Fresh noise from `rng`, then clamped to [0, 1] (Real-ESRGAN
    `random_add_gaussian_noise_pt` / `random_add_poisson_noise_pt`)."""
    c, h, w = x.shape
    if isinstance(noise, GaussianNoise):
        n = rng.standard_normal((1 if noise.gray else c, h, w), dtype=np.float32) * noise.sigma
        return (x + torch.from_numpy(n)).clamp(0.0, 1.0)
    # Real-ESRGAN: on the 8-bit image (or its luma), vals = 2^ceil(log2(#distinct levels)),
    # noise = Poisson(img * vals) / vals - img, so a smooth image (few levels) is noisier than a
    # detailed one
    img = x
    if noise.gray:
        img = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    img = quantize(img).double().numpy()
    vals = 2.0 ** math.ceil(math.log2(max(1, len(np.unique(img)))))
    n = rng.poisson(img * vals) / vals - img
    return (x + torch.from_numpy((noise.scale * n).astype(np.float32))).clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip through Pillow (libjpeg) at `quality` 1-100, 4:2:0 chroma as in video."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x), "RGB").save(
        buf, format="JPEG", quality=int(min(max(quality, 1), 100)), subsampling="4:2:0"
    )
    buf.seek(0)
    with Image.open(buf) as img:
        return from_uint8(np.asarray(img.convert("RGB")))


def _scaled(n: int, f: float) -> int:
    return max(1, int(n * f))


def _stage(
    x: torch.Tensor,
    p: StageParams,
    size: tuple[int, int],
    antialias: bool,
    rng: np.random.Generator,
) -> torch.Tensor:
    if p.kernel is not None:
        x = filter2d(x, p.kernel)
    x = resize(
        x,
        (_scaled(size[0], p.resize_scale), _scaled(size[1], p.resize_scale)),
        p.resize_mode,
        antialias,
    )
    x = add_noise(x, p.noise, rng)
    if p.jpeg_quality is not None:
        x = jpeg(x, p.jpeg_quality)
    return x


def degrade_frame(
    frame: torch.Tensor, params: DegradeParams, lr_size: tuple[int, int], rng: np.random.Generator
) -> torch.Tensor:
    """One HR frame `[3, H, W]` to the LR size `(h, w)` with a clip's `params`; `rng` supplies
    only the noise. The result is quantized to 8 bits."""
    x = frame.float()
    if params.first is not None:
        # first stage sizes are relative to the HR frame (F.interpolate(scale_factor=...))
        x = _stage(x, params.first, tuple(frame.shape[1:]), params.antialias, rng)
    if params.second is not None:
        # second stage sizes are relative to the LR target (Real-ESRGAN: ori / scale * s)
        x = _stage(x, params.second, lr_size, params.antialias, rng)

    def resize_sinc(y: torch.Tensor) -> torch.Tensor:
        y = resize(y, lr_size, params.final_mode, params.antialias)
        return filter2d(y, params.final_sinc) if params.final_sinc is not None else y

    if params.resize_first:
        x = resize_sinc(x).clamp(0.0, 1.0)
        if params.final_jpeg is not None:
            x = jpeg(x, params.final_jpeg)
    else:
        x = x.clamp(0.0, 1.0)
        if params.final_jpeg is not None:
            x = jpeg(x, params.final_jpeg)
        x = resize_sinc(x)
    return quantize(x)
