"""(HR, LR) training clips: a pseudo-video over a still (`motion`, TurboVSR supplementary §6),
degraded to 1/scale (`degrade`, Real-ESRGAN §3), and the sources the trainer draws them from.

Everything is driven by one seed: the same `(image, spec, seed)` gives bit-identical tensors on
every run and in every process (each clip owns a `numpy.random.Generator(PCG64(seed))`; the global
RNGs are never touched).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from .degrade import DegradeConfig, DegradeParams, degrade_frame, quantize
from .images import ImageFolder
from .motion import MotionConfig, place, sample_motion, warp

#: Stream tags that keep a source's own draws independent of those of the clip it makes.
_MIX_STREAM = 0x4D4958
_SYNTHETIC_STREAM = 0xC11B


def _rng(seed: int, *stream: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError(f"clip seeds are non-negative integers, got {seed}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


@dataclass(frozen=True)
class ClipSpec:
    """What clip to make. LR = HR / scale, so both HR sizes must be multiples of `scale`."""

    frames: int
    hr_height: int
    hr_width: int
    scale: int
    degrade: DegradeConfig = field(default_factory=DegradeConfig.realesrgan)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def __post_init__(self) -> None:
        if min(self.frames, self.hr_height, self.hr_width, self.scale) <= 0:
            raise ValueError(
                f"clip spec: frames, height, width and scale must be positive ({self.frames} "
                f"frames, {self.hr_width}x{self.hr_height}, scale {self.scale})"
            )
        if self.hr_height % self.scale or self.hr_width % self.scale:
            raise ValueError(
                f"clip spec: HR size {self.hr_width}x{self.hr_height} is not a multiple of the "
                f"scale {self.scale}"
            )

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.hr_height // self.scale, self.hr_width // self.scale


@dataclass(frozen=True)
class Clip:
    """One training pair, float32 RGB in [0, 1] holding 8-bit values (what an 8-bit video holds).
    `hr` is `[3, F, H, W]`, `lr` `[3, F, H / scale, W / scale]`."""

    hr: torch.Tensor
    lr: torch.Tensor
    #: The source image relative to its folder's root ("" for `make_clip` on a bare image).
    source: str = ""


def make_clip(image: np.ndarray | Image.Image, spec: ClipSpec, seed: int) -> Clip:
    """A clip from one `uint8 [H, W, 3]` image (or a Pillow image): motion path, crop
    placement, horizontal flip half of the time (as Real-ESRGAN flips its crops), the clip's
    degradation parameters, then every frame degraded with them and fresh noise."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"make_clip takes uint8 [H, W, 3] images, got {image.dtype} {list(image.shape)}"
        )
    rng = _rng(seed)
    crop = (spec.hr_height, spec.hr_width)
    path = sample_motion(rng, spec.frames, spec.motion)
    origin, path = place(rng, path, image.shape[:2], crop)
    flip = bool(rng.random() < 0.5)
    params = DegradeParams.sample(spec.degrade, rng)
    hr = warp(image, origin, path, crop)  # (F, 3, H, W)
    if flip:
        hr = hr.flip(-1)
    hr = quantize(hr)
    lr = torch.stack([degrade_frame(f, params, spec.lr_size, rng) for f in hr])
    # (F, 3, h, w) -> (3, F, h, w)
    return Clip(hr.transpose(0, 1).contiguous(), lr.transpose(0, 1).contiguous())


@runtime_checkable
class ClipSource(Protocol):
    """Where the trainer gets clips: `clip(frames, seed)` gives `(hr [3, F, H, W],
    lr [3, F, H/scale, W/scale])` in [0, 1], the same for the same seed."""

    def clip(self, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    @property
    def scale(self) -> int: ...

    @property
    def size(self) -> tuple[int, int]:
        """HR (height, width)."""
        ...


def _crop_size(crop: int | tuple[int, int]) -> tuple[int, int]:
    return (crop, crop) if isinstance(crop, int) else (int(crop[0]), int(crop[1]))


class FolderSource:
    """Clips from an image folder: the seed picks the image and everything about the clip."""

    def __init__(
        self,
        folder: ImageFolder | str | Path,
        crop: int | tuple[int, int],
        degrade: str | DegradeConfig = "realesrgan",
        scale: int = 4,
        motion: MotionConfig | None = None,
    ) -> None:
        """`folder` an `ImageFolder`, or a data root whose train split is used; `crop` the HR
        size (an int for a square, or (height, width)); `degrade` a preset name or a config."""
        self.folder = folder if isinstance(folder, ImageFolder) else ImageFolder(folder, "train")
        if isinstance(degrade, str):
            degrade = DegradeConfig.preset(degrade)
        h, w = _crop_size(crop)
        self.spec = ClipSpec(1, h, w, scale, degrade, motion or MotionConfig())

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.hr_height, self.spec.hr_width

    def pick(self, seed: int) -> tuple[int, int]:
        """The image index and the per-image clip seed for `seed`."""
        rng = _rng(seed)
        return int(rng.integers(len(self.folder))), int(rng.integers(2**63))

    def make(self, frames: int, seed: int) -> Clip:
        """The clip for `seed`, with its source path."""
        i, sub = self.pick(seed)
        source = self.folder.paths[i]
        spec = ClipSpec(
            frames,
            self.spec.hr_height,
            self.spec.hr_width,
            self.spec.scale,
            self.spec.degrade,
            self.spec.motion,
        )
        try:
            clip = make_clip(self.folder[i], spec, sub)
        except ValueError as e:
            raise ValueError(f"making a clip from {self.folder.file(source)}: {e}") from e
        return Clip(clip.hr, clip.lr, source)

    def clip(self, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.make(frames, seed)
        return c.hr, c.lr

    def __repr__(self) -> str:
        h, w = self.size
        return f"FolderSource({self.folder!r}, {w}x{h}, x{self.scale}, {self.spec.degrade.name})"


class MixedSource:
    """Each clip from one of several sources, chosen from the seed with the given weights:
    `MixedSource([(clean, 0.4), (mild, 0.3), (realesrgan, 0.3)])`."""

    def __init__(self, parts: Sequence[tuple[ClipSource, float]]) -> None:
        if not parts:
            raise ValueError("MixedSource needs at least one (source, weight)")
        weights = np.array([float(w) for _, w in parts])
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(
                f"MixedSource weights must be non-negative with a positive sum, "
                f"got {weights.tolist()}"
            )
        first = parts[0][0]
        for source, _ in parts[1:]:
            if (source.scale, source.size) != (first.scale, first.size):
                raise ValueError(
                    f"MixedSource parts must share scale and size: {first!r} is x{first.scale} "
                    f"{first.size}, {source!r} is x{source.scale} {source.size}"
                )
        self.sources = [s for s, _ in parts]
        self.cumulative = np.cumsum(weights / weights.sum())

    @property
    def scale(self) -> int:
        return self.sources[0].scale

    @property
    def size(self) -> tuple[int, int]:
        return self.sources[0].size

    def choose(self, seed: int) -> int:
        """The index of the source clip `seed` comes from (a stream of its own, so the choice is
        independent of what the chosen source draws from the same seed)."""
        u = _rng(seed, _MIX_STREAM).random()
        return min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.sources) - 1)

    def clip(self, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sources[self.choose(seed)].clip(frames, seed)


class SyntheticSource:
    """Procedural clips for tests and CI, needing no files: soft blobs and a hard edge drifting
    by a fraction of a pixel per frame; LR by box averaging. Both quantized to 8 bits."""

    def __init__(self, height: int, width: int, scale: int) -> None:
        ClipSpec(1, height, width, scale)  # the same checks
        self.height, self.width, self._scale = height, width, scale

    @property
    def scale(self) -> int:
        return self._scale

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def clip(self, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w, s = self.height, self.width, self._scale
        rng = _rng(seed, _SYNTHETIC_STREAM)
        # 6 blobs: centre (x, y), radius, colour
        centre = rng.random((6, 2))
        radius = 0.05 + 0.2 * rng.random(6)
        colour = rng.random((6, 3))
        vel = rng.random(2) - 0.5  # pixels per frame
        edge = rng.random()
        k = np.arange(frames, dtype=np.float64)[:, None, None]
        v, u = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
        u = u[None] + vel[0] * k / w  # (F, H, W)
        v = v[None] + vel[1] * k / h
        d2 = (u[..., None] - centre[:, 0]) ** 2 + (v[..., None] - centre[:, 1]) ** 2
        weight = np.exp(-d2 / radius**2)  # (F, H, W, 6)
        rgb = 0.2 + 0.5 * weight @ colour  # (F, H, W, 3)
        rgb *= np.where(u + 0.5 * v > edge + 0.25, 0.6, 1.0)[..., None]
        hr = quantize(torch.from_numpy(np.clip(rgb, 0, 1).astype(np.float32)))
        hr = hr.permute(3, 0, 1, 2).contiguous()  # (F, H, W, 3) -> (3, F, H, W)
        # (3, F, H, W) -> (3, F, h, s, w, s) -> box mean
        lr = hr.reshape(3, frames, h // s, s, w // s, s).mean(dim=(3, 5))
        return hr, quantize(lr)

    def __repr__(self) -> str:
        return f"SyntheticSource({self.width}x{self.height}, x{self._scale})"


def seconds_per_clip(source: ClipSource, frames: int, clips: int = 8) -> float:
    """Mean wall time of `source.clip`, to size the DataLoader's workers."""
    start = time.perf_counter()
    for seed in range(clips):
        source.clip(frames, seed)
    return (time.perf_counter() - start) / max(clips, 1)
