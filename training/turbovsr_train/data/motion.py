"""Pseudo-videos from still images (TurboVSR paper, supplementary §6).

A virtual camera moves over the photo with a smooth random affine motion (translation, rotation,
zoom), and each frame is the camera's view sampled bilinearly from the source. Per clip the
camera gets a random velocity for each motion component plus a small constant acceleration, so the
path is smooth (no jitter between frames) yet not a plain straight pan.

Magnitudes are per frame at the HR crop's resolution and chosen to look like handheld or panning
footage at 24-30 fps: up to 3 px of translation (0.75 px at the 4x LR), up to 0.5 deg of rotation
and up to 1 % of zoom per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: How often `place` halves a path's motion before falling back to a still clip.
MAX_DAMPING = 5


@dataclass(frozen=True)
class MotionConfig:
    #: Largest translation speed, HR pixels per frame.
    max_shift: float = 3.0
    #: Largest rotation speed, degrees per frame.
    max_rotation_deg: float = 0.5
    #: Largest zoom speed, relative scale change per frame (0.01 = 1 %).
    max_zoom: float = 0.01
    #: Largest change of each speed per frame, as a fraction of that speed's maximum.
    max_accel: float = 0.1

    @staticmethod
    def still() -> MotionConfig:
        """No motion: every frame is the same crop."""
        return MotionConfig(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CameraPath:
    """Where frame k's pixel u (pixel centres, crop coordinates) is read from in the source:
    `origin + c + t[k] + a[k] (u - c)`, c the crop centre, a = zoom * rotation.
    `a` is float64 `[F, 2, 2]` acting on (x, y), `t` float64 `[F, 2]`."""

    a: np.ndarray
    t: np.ndarray

    @staticmethod
    def still(frames: int) -> CameraPath:
        return CameraPath(np.tile(np.eye(2), (frames, 1, 1)), np.zeros((frames, 2)))

    def __len__(self) -> int:
        return len(self.t)

    def damped(self, f: float) -> CameraPath:
        """The motion scaled by `f` about the identity."""
        eye = np.eye(2)
        return CameraPath(eye + f * (self.a - eye), f * self.t)

    def bounds(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) of the source coordinates, relative to the crop origin,
        that any frame reads: the crop's corners are the extremes of an affine map."""
        c = np.array([(width - 1) / 2, (height - 1) / 2])
        corners = (
            np.array(
                [[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], dtype=np.float64
            )
            - c
        )
        # (F, 2, 2) @ (2, 4) -> (F, 2, 4)
        pts = self.a @ corners.T + self.t[:, :, None] + c[None, :, None]
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )


def _signed(rng: np.random.Generator, bound: float) -> float:
    return float(rng.uniform(-bound, bound)) if bound > 0 else 0.0


def sample_motion(rng: np.random.Generator, frames: int, cfg: MotionConfig) -> CameraPath:
    """A clip's camera path, frame 0 the identity: constant acceleration on (x, y, rotation,
    log-zoom), speeds clamped to their maxima."""
    if frames <= 1:
        return CameraPath.still(frames)
    limit = np.array(
        [cfg.max_shift, cfg.max_shift, math.radians(cfg.max_rotation_deg), cfg.max_zoom]
    )
    # the translation direction is uniform, its speed uniform in [0, max]
    speed = float(rng.uniform(0.0, 1.0)) * cfg.max_shift
    direction = float(rng.uniform(0.0, 2 * math.pi))
    vel = np.array(
        [
            speed * math.cos(direction),
            speed * math.sin(direction),
            _signed(rng, limit[2]),
            _signed(rng, limit[3]),
        ]
    )
    acc = np.array([_signed(rng, m * cfg.max_accel) for m in limit])
    pos = np.zeros((frames, 4))
    for k in range(1, frames):
        pos[k] = pos[k - 1] + vel
        vel = np.clip(vel + acc, -limit, limit)
    zoom, rot = np.exp(pos[:, 3]), pos[:, 2]
    cos, sin = zoom * np.cos(rot), zoom * np.sin(rot)
    a = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    return CameraPath(a, pos[:, :2].copy())


def place(
    rng: np.random.Generator, path: CameraPath, src_size: tuple[int, int], crop: tuple[int, int]
) -> tuple[tuple[int, int], CameraPath]:
    """An integer crop origin (x, y) such that every frame of `path` reads inside the source
    (sizes are (height, width)); the motion is halved until it fits, and a still clip always
    fits when the crop does. Returns the origin and the path actually used."""
    (sh, sw), (h, w) = src_size, crop
    if h > sh or w > sw:
        raise ValueError(f"a {w}x{h} crop does not fit in a {sw}x{sh} image")
    for attempt in range(MAX_DAMPING + 1):
        if attempt == MAX_DAMPING:
            path = CameraPath.still(len(path))
        x0, y0, x1, y1 = path.bounds(h, w)
        # bilinear reads pixel floor + 1, so the last pixel centre is the limit
        lo_x, hi_x = max(0, math.ceil(-x0)), math.floor(sw - 1 - x1)
        lo_y, hi_y = max(0, math.ceil(-y0)), math.floor(sh - 1 - y1)
        if lo_x <= hi_x and lo_y <= hi_y:
            ox = int(rng.integers(lo_x, hi_x, endpoint=True))
            oy = int(rng.integers(lo_y, hi_y, endpoint=True))
            return (ox, oy), path
        path = path.damped(0.5)
    raise AssertionError("unreachable: a still path fits whenever the crop does")


def warp(
    src: np.ndarray, origin: tuple[int, int], path: CameraPath, crop: tuple[int, int]
) -> torch.Tensor:
    """The clip's frames, float32 `[F, 3, h, w]` in [0, 1]: each the `crop` view at `origin`
    sampled bilinearly from `src` (`uint8 [H, W, 3]`) with `grid_sample`, reads clamped to the
    border."""
    h, w = crop
    frames = len(path)
    # only the region the path reads is converted to float
    bx0, by0, bx1, by1 = path.bounds(h, w)
    ox, oy = origin
    sh, sw = src.shape[:2]
    x_lo, y_lo = max(0, math.floor(ox + bx0)), max(0, math.floor(oy + by0))
    x_hi, y_hi = min(sw - 1, math.ceil(ox + bx1)), min(sh - 1, math.ceil(oy + by1))
    region = torch.from_numpy(np.ascontiguousarray(src[y_lo : y_hi + 1, x_lo : x_hi + 1]))
    region = region.permute(2, 0, 1).float().div(255.0)[None].expand(frames, -1, -1, -1)
    # source pixel coordinates of every crop pixel, in float64: (F, h, w, 2) as (x, y)
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    v, u = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    rel = np.stack([u, v], -1) - c
    xy = np.einsum("fij,hwj->fhwi", path.a, rel) + path.t[:, None, None, :]
    xy += c + np.array([ox - x_lo, oy - y_lo])
    # align_corners=True: -1 and 1 are the centres of the first and last pixel
    rw, rh = region.shape[3], region.shape[2]
    scale = np.array([2 / max(rw - 1, 1), 2 / max(rh - 1, 1)])
    grid = torch.from_numpy((xy * scale - 1).astype(np.float32))
    return F.grid_sample(region, grid, mode="bilinear", padding_mode="border", align_corners=True)
