"""A PyTorch reference of the element's whole window path (DESIGN §2, §4, §5) on diffusers'
modules.

Written from DESIGN.md, not from the Rust: the element's output on the same checkpoint, frames and
seed must match it (relative L2 <= 1e-4 in f32, `tests/window_parity.rs` on the fixtures of
`scripts/fixtures/gen_window.py`). It is also the trainer's evaluation path:
`Reference.load(folder, RunSettings(...)).upscale_clip(frames)`.

By concern, in the order of the data flow:

- checkpoint folder (§3.3): `vae/` as diffusers' `AutoencoderKLLTXVideo`, `transformer/` as
  `TurboVSRTransformer.from_pretrained`, `turbovsr.json`, optional `prompt_embeds.safetensors`;
- fixed noise (§4): one Gaussian value per (channel, latent frame, latent row, latent column),
  from a SplitMix64 hash of the seed and the position and Box-Muller (the element's
  `FixedNoise::at`, the one place where the exact bits are the element's definition);
- schedule (§4): `u_i = 1 - i/N`, shifted with LTX's `calculate_shift` and diffusers'
  `FlowMatchEulerDiscreteScheduler.time_shift`, the nearest trained step size, exact Euler on
  the real step;
- spatial tiles (§5, MultiDiffusion): tiles of the training tile with an overlap, one step per tile,
  Gaussian blending (sigma = tile / 4) of the denoised tiles before the next step;
- window plan (§5, §6): a short first window, then windows of W frames stepping W - O; each window
  starts on the previous one's last output frame; the tail is padded by repeating its last frame;
- one window (§2): bicubic to the output size, replicate-pad to the model grid, VAE encode,
  normalize, first-frame image SR (window 0) or the previous output frame encoded alone, video SR
  with latent 0 held clean, fusion of the latents both windows denoised, denormalize, decode, crop.

Where DESIGN is silent, the choice is written next to the code (marked "DESIGN is silent").
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLLTXVideo
from safetensors.torch import load_file

from .latents import denormalize, normalize, pack, unpack
from .model import DEFAULT_COND_SCALE, TurboVSRTransformer
from .schedule import LTX_SHIFT, Step, default_step_sizes, plan

# ---------------------------------------------------------------------------------------------
# Checkpoint folder (DESIGN §3.3)
# ---------------------------------------------------------------------------------------------


@dataclass
class TurboVSRConfig:
    """`turbovsr.json`, every field with DESIGN §3.3's default."""

    scale: int = 4
    shift: dict | float = field(default_factory=lambda: dict(LTX_SHIFT))
    step_sizes: list[float] = field(default_factory=default_step_sizes)
    cond_scale: float = DEFAULT_COND_SCALE
    tile: list[int] = field(default_factory=lambda: [7, 32, 32])
    #: The most overlap the checkpoint's tiles need (None: half the tile at most).
    tile_overlap: int | None = None
    decode_timestep: float = 0.05
    frame_rate: float = 25.0

    @classmethod
    def load(cls, folder: str) -> TurboVSRConfig:
        path = os.path.join(folder, "turbovsr.json")
        if not os.path.exists(path):
            return cls()
        with open(path) as f:
            values = json.load(f)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        return cls(**values)


@dataclass
class Checkpoint:
    """The modules and settings of a checkpoint folder, in f32."""

    vae: AutoencoderKLLTXVideo
    transformer: TurboVSRTransformer
    config: TurboVSRConfig
    #: Prompt embeddings (1, L, caption_channels) and mask (1, L).
    prompt: torch.Tensor
    prompt_mask: torch.Tensor

    @classmethod
    def load(cls, folder: str) -> Checkpoint:
        config = TurboVSRConfig.load(folder)
        vae = AutoencoderKLLTXVideo.from_pretrained(
            os.path.join(folder, "vae"), torch_dtype=torch.float32
        )
        # DESIGN §5: tiled in space as diffusers' tiled encode/decode (its default tile sizes).
        # DESIGN asks for time too, but a window is coded in one piece, as the element does
        # (src/pipeline/diffusion.rs, `LoadedModel::load`): diffusers' temporal tiles
        # (`use_framewise_decoding`, 16 frames) change a 17-frame window's decode (by 0.13
        # relative L2 on tests/fixtures/window/two_windows) and lag a frame from 33 frames on.
        vae.enable_tiling()
        vae.use_framewise_encoding = vae.use_framewise_decoding = False
        transformer = TurboVSRTransformer.from_pretrained(
            os.path.join(folder, "transformer"), config.cond_scale
        )
        if transformer.transformer.config.patch_size_t != 1:
            raise ValueError("patch_size_t != 1: the conditioning frame must be its own tokens")
        caption = transformer.transformer.config.caption_channels
        prompt_path = os.path.join(folder, "prompt_embeds.safetensors")
        if os.path.exists(prompt_path):
            tensors = load_file(prompt_path)
            prompt = tensors["prompt_embeds"].float()
            mask = tensors.get("prompt_attention_mask", torch.ones(prompt.shape[0])).float()
        else:
            # DESIGN §3.3: a zero embedding of length 1 with mask 1.
            prompt, mask = torch.zeros(1, caption), torch.ones(1)
        return cls(vae.eval(), transformer.eval(), config, prompt[None], mask[None])

    @property
    def patch_size(self) -> int:
        return self.transformer.transformer.config.patch_size

    @property
    def grid(self) -> int:
        """DESIGN §2: frames are padded to the VAE's spatial compression times the patch size."""
        return self.vae.spatial_compression_ratio * self.patch_size


# ---------------------------------------------------------------------------------------------
# Fixed noise (DESIGN §4)
# ---------------------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15
_POSITION = np.uint64(0xD6E8FEB86659FD93)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (multiplications wrap modulo 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def fixed_noise(
    seed: int, shape: tuple[int, int, int, int], origin: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """The seeded field over `(channels, frames, height, width)` latents whose top-left latent
    sits at global latent position `origin` (y, x). The value at (c, t, y, x): the hash
    `h = mix(seed ^ GOLDEN)`, then `h = mix(h ^ v * POSITION)` for v = c, t, y, x (wrapping
    uint64), and Box-Muller `sqrt(-2 ln u1) cos(2 pi u2)` of u1 = (h >> 32 + 1) / 2^32 and
    u2 = (h & 0xffffffff) / 2^32, in f64, rounded to f32."""
    c, t, h, w = shape
    y0, x0 = origin
    axes = [np.arange(c), np.arange(t), np.arange(y0, y0 + h), np.arange(x0, x0 + w)]
    state = np.full(shape, (seed % 2**64) ^ _GOLDEN, dtype=np.uint64)
    state = _mix(state)
    for dim, values in enumerate(axes):
        view = [1, 1, 1, 1]
        view[dim] = -1
        state = _mix(state ^ (values.astype(np.uint64).reshape(view) * _POSITION))
    u1 = ((state >> np.uint64(32)).astype(np.float64) + 1.0) / 4294967296.0
    u2 = (state & np.uint64(0xFFFFFFFF)).astype(np.float64) / 4294967296.0
    values = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
    return torch.from_numpy(values.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Spatial tiles (DESIGN §5, paper §3.5, MultiDiffusion)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """A tile's top-left latent and size, in latents."""

    y: int
    x: int
    height: int
    width: int


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` along `n` with at least `overlap` shared. DESIGN is silent on
    placement: evenly stepped by `tile - overlap`, the last tile flush with the end."""
    if n <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, n - tile, stride))
    return starts + [n - tile]


def plan_tiles(
    height: int, width: int, tile: tuple[int, int], overlap: int, patch: int
) -> list[Tile]:
    """Tiles covering a `height` x `width` latent. DESIGN is silent on patches: tiles are whole
    patches (`tile` and `overlap` rounded down to patches, at least one), so that a tile's tokens
    are a sub-grid of the window's."""
    th, tw = max(tile[0] // patch, 1), max(tile[1] // patch, 1)
    ys = tile_starts(height // patch, th, overlap // patch)
    xs = tile_starts(width // patch, tw, overlap // patch)
    h, w = min(th, height // patch) * patch, min(tw, width // patch) * patch
    return [Tile(y * patch, x * patch, h, w) for y in ys for x in xs]


def _axis_gaussian(n: int, taper_start: bool = False, taper_end: bool = False) -> np.ndarray:
    """Gaussian over `n` latents, sigma = n / 4 around the centre (n - 1) / 2, peak 1, in f64.
    With a taper, that half is lowered linearly so that it would reach 0 one latent outside the
    tile (the element's variant, `src/sample/tiles.rs::tile_weights`; not in DESIGN §5)."""
    i = np.arange(n, dtype=np.float64)
    centre, sigma = (n - 1) / 2.0, n / 4.0
    g = np.exp(-((i - centre) ** 2) / (2.0 * sigma * sigma))
    outside = math.exp(-((-1.0 - centre) ** 2) / (2.0 * sigma * sigma))
    tapered = (g - outside) / (1.0 - outside)
    first_half = i < centre
    g = np.where(first_half & taper_start, tapered, g)
    return np.where(~first_half & taper_end, tapered, g)


#: Tile weightings: DESIGN §5's Gaussian, and the element's Gaussian tapered to 0 at inner edges.
TILE_WEIGHTS = ("gaussian", "tapered")


def tile_weights(tile: Tile, height: int, width: int, kind: str = "gaussian") -> torch.Tensor:
    """Blending weights of `tile` (`[tile.height, tile.width]`, f32)."""
    if kind not in TILE_WEIGHTS:
        raise ValueError(f"tile weights {kind!r} is not one of {TILE_WEIGHTS}")
    taper = kind == "tapered"
    wy = _axis_gaussian(tile.height, taper and tile.y > 0, taper and tile.y + tile.height < height)
    wx = _axis_gaussian(tile.width, taper and tile.x > 0, taper and tile.x + tile.width < width)
    return (
        torch.from_numpy(wy.astype(np.float32))[:, None]
        * torch.from_numpy(wx.astype(np.float32))[None, :]
    )


def blend_tiles(
    tiles: list[tuple[Tile, torch.Tensor]], height: int, width: int, kind: str = "gaussian"
) -> torch.Tensor:
    """Weighted average of per-tile tensors (`[..., tile.height, tile.width]`) over the latent.
    One tile covering everything is returned as is (DESIGN §5: exactly the untiled result)."""
    if len(tiles) == 1 and (tiles[0][0].height, tiles[0][0].width) == (height, width):
        return tiles[0][1]
    lead = tiles[0][1].shape[:-2]
    acc = torch.zeros(*lead, height, width)
    weight = torch.zeros(height, width)
    for tile, value in tiles:
        w = tile_weights(tile, height, width, kind)
        ys, xs = slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width)
        acc[..., ys, xs] += value * w
        weight[ys, xs] += w
    return acc / weight


# ---------------------------------------------------------------------------------------------
# Window plan (DESIGN §5, §6)
# ---------------------------------------------------------------------------------------------

TEMPORAL_COMPRESSION = 8


def padded_clip_len(n: int) -> int:
    """The smallest 1 + 8k >= n."""
    return 1 if n <= 1 else 1 + -(-(n - 1) // TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION


@dataclass(frozen=True)
class WindowPlan:
    """One window: its first frame in the stream, its real and padded lengths, and the frames it
    emits (`emit_start <= i < emit_end`, relative to `start`)."""

    start: int
    frames: int
    padded: int
    emit_start: int
    emit_end: int


def plan_windows(
    n_frames: int, window: int = 49, overlap: int = 9, first_window: int = 9
) -> list[WindowPlan]:
    """Windows over a stream of `n_frames`, formed as a stream would form them (a window is run
    as soon as its frames are in, without knowing whether more follow).

    Window 0 holds `first_window` frames (DESIGN §6: a short first window), later ones `window`.
    Each later window starts on the previous window's last output frame (DESIGN §2, §5): windows
    share `overlap` frames, except after a first window no longer than the overlap, which shares
    only its last frame (DESIGN is silent; sharing `overlap` frames would not move the stream on).
    A window emits from its frame 1 (frame 0 for window 0) up to the next window's first frame.
    The tail (the frames left at the end, if any is not emitted yet) is padded to 1 + 8k.
    """
    for name, v in (("window", window), ("overlap", overlap), ("first_window", first_window)):
        if (v - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"{name}={v} is not 1 + 8k")
    if not (overlap < window and first_window <= window and window > 1):
        raise ValueError(f"window={window}, overlap={overlap}, first_window={first_window}")
    plan: list[WindowPlan] = []
    start, emit_start = 0, 0
    while True:
        if not plan:
            length = first_window
            step = first_window - overlap if first_window > overlap else first_window - 1
        else:
            length, step = window, window - overlap
        if start + length <= n_frames:
            plan.append(WindowPlan(start, length, length, emit_start, step + 1))
            start, emit_start = start + step, 1
            continue
        real = n_frames - start
        if start + emit_start < n_frames:
            plan.append(WindowPlan(start, real, padded_clip_len(real), emit_start, real))
        return plan


# ---------------------------------------------------------------------------------------------
# One window (DESIGN §2) and a clip
# ---------------------------------------------------------------------------------------------


@dataclass
class RunSettings:
    """The element's run settings (properties) that change the result."""

    scale: int = 4
    steps: int = 4
    window: int = 49
    overlap: int = 9
    first_window: int = 9
    #: Spatial denoising tile in latents, square (0: the checkpoint's `tile` height and width).
    tile_size: int = 0
    tile_overlap: int = 8
    seed: int = 0
    #: DESIGN §5's "gaussian", or the element's "tapered" variant (see `tile_weights`).
    tile_weights: str = "gaussian"


def bicubic(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(f, 3, h, w) -> (f, 3, height, width): PyTorch's bicubic (a = -0.75, edges clamped), the
    resize the element is checked against (tests/fixtures/bicubic.safetensors)."""
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False)


def pad_to_grid(frames: torch.Tensor, grid: int) -> torch.Tensor:
    """(f, 3, h, w) -> (1, 3, f, h', w'), bottom and right replicate-padded to `grid` multiples."""
    h, w = frames.shape[-2:]
    ph, pw = -h % grid, -w % grid
    if ph or pw:
        frames = F.pad(frames, (0, pw, 0, ph), mode="replicate")
    return frames.permute(1, 0, 2, 3)[None]


class Reference:
    """The window path of DESIGN §2 on a checkpoint."""

    def __init__(self, checkpoint: Checkpoint, settings: RunSettings) -> None:
        self.ck = checkpoint
        self.settings = settings
        cfg = checkpoint.config
        size = settings.tile_size
        self.tile = (size, size) if size else (cfg.tile[1], cfg.tile[2])
        # DESIGN is silent on a checkpoint tile smaller than twice the overlap: as the element,
        # the overlap then shrinks to half the checkpoint's tile (and to the checkpoint's
        # `tile_overlap` where it gives one); an explicit tile size must fit.
        limit = min(self.tile) // 2
        if cfg.tile_overlap is not None:
            limit = min(limit, cfg.tile_overlap)
        self.tile_overlap = min(settings.tile_overlap, limit) if not size else settings.tile_overlap
        if self.tile_overlap >= min(self.tile):
            raise ValueError(
                f"tile-overlap={settings.tile_overlap} must be smaller than the tile {self.tile}"
            )
        vae = checkpoint.vae
        self.t_ratio = vae.temporal_compression_ratio
        self.s_ratio = vae.spatial_compression_ratio
        #: The tiles of the last sampling pass.
        self.tiles: list[Tile] = []

    @classmethod
    def load(cls, folder: str, settings: RunSettings | None = None) -> Reference:
        return cls(Checkpoint.load(folder), settings or RunSettings())

    # -- VAE ------------------------------------------------------------------------------------

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        """(1, 3, f, H, W) in [-1, 1] -> normalized posterior mean (1, C, t, h, w)."""
        vae = self.ck.vae
        mean = vae.encode(clip).latent_dist.mean
        return normalize(vae, mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized (1, C, t, h, w) -> (1, 3, f, H, W). A timestep-conditioned decoder gets
        `decode_timestep` (no decode noise: DESIGN names none)."""
        vae = self.ck.vae
        z = denormalize(vae, z)
        temb = (
            torch.tensor([self.ck.config.decode_timestep])
            if vae.config.timestep_conditioning
            else None
        )
        return vae.decode(z, temb).sample

    # -- denoiser -------------------------------------------------------------------------------

    def velocity(
        self, z: torch.Tensor, cond: torch.Tensor, clean: torch.Tensor, step: Step
    ) -> torch.Tensor:
        """The model's velocity on the latent `z` (1, C, t, h, w) (a window or a tile), conditioned
        on `cond` (same shape); latent frames where `clean` (t,) carry timestep 0 (DESIGN §4:
        per-token timesteps). RoPE positions are the tile's own grid (DESIGN is silent; a tile is
        run as the clip it is)."""
        p = self.ck.patch_size
        _, _, t, h, w = z.shape
        x = pack(z, p, 1)
        c = pack(cond, p, 1)
        # tokens are frame-major: (t, h/p * w/p) -> (1, N)
        per_frame = torch.where(clean, 0.0, 1000.0 * step.s).to(torch.float32)
        timestep = per_frame[:, None].expand(t, (h // p) * (w // p)).reshape(1, -1)
        cfg = self.ck.config
        v = self.ck.transformer(
            x,
            c,
            self.ck.prompt,
            timestep,
            step.d_model,
            num_frames=t,
            height=h // p,
            width=w // p,
            encoder_attention_mask=self.ck.prompt_mask,
            rope_interpolation_scale=(self.t_ratio / cfg.frame_rate, self.s_ratio, self.s_ratio),
        )
        return unpack(v, (t, h // p, w // p), p, 1)

    def denoise(self, cond: torch.Tensor, first: torch.Tensor | None) -> torch.Tensor:
        """Samples the latent (1, C, t, h, w) conditioned on `cond` from the fixed noise; with
        `first`, latent 0 is held clean at it (DESIGN §2 video SR)."""
        s = self.settings
        _, c, t, h, w = cond.shape
        p = self.ck.patch_size
        # Every window starts from the same noise, indexed by latent position (DESIGN §4).
        z = fixed_noise(s.seed, (c, t, h, w))[None]
        clean = torch.zeros(t, dtype=torch.bool)
        if first is not None:
            z[:, :, :1] = first
            clean[0] = True
        steps = plan(s.steps, t * h * w // (p * p), self.ck.config.shift, self.ck.config.step_sizes)
        tiles = plan_tiles(h, w, self.tile, self.tile_overlap, p)
        self.tiles = tiles
        keep = clean[None, None, :, None, None]
        for step in steps:
            denoised = []
            for tile in tiles:
                ys, xs = slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width)
                z_tile = z[..., ys, xs]
                v = self.velocity(z_tile, cond[..., ys, xs], clean, step)
                # Exact Euler on the real step; clean tokens are never updated.
                denoised.append((tile, torch.where(keep, z_tile, z_tile - step.d * v)))
            # MultiDiffusion: each tile one step, then the Gaussian-weighted average.
            blended = blend_tiles(denoised, h, w, s.tile_weights)
            z = torch.where(keep, z, blended)
        return z

    # -- a window, a clip -----------------------------------------------------------------------

    @torch.no_grad()
    def upscale_clip(self, frames: torch.Tensor, stats: list | None = None) -> torch.Tensor:
        """(n, 3, h, w) in [-1, 1] -> (n, 3, h * scale, w * scale) in [-1, 1], one stream.
        `stats`, when given, receives one dict per window (plan, fused latents, tiles)."""
        s = self.settings
        n, _, lr_h, lr_w = frames.shape
        out_h, out_w = lr_h * s.scale, lr_w * s.scale
        outputs: list[torch.Tensor | None] = [None] * n
        prev: tuple[WindowPlan, torch.Tensor] | None = None
        for index, win in enumerate(plan_windows(n, s.window, s.overlap, s.first_window)):
            # Padded frames repeat the last real one (DESIGN §5).
            idx = [win.start + min(i, win.frames - 1) for i in range(win.padded)]
            clip = pad_to_grid(bicubic(frames[idx].float(), out_h, out_w), self.ck.grid)
            cond = self.encode(clip)
            latents = cond.shape[2]
            if index == 0:
                # First-frame image SR: a T=1 latent conditioned on c[:, :1] (paper §3.3).
                z_first = self.denoise(cond[:, :, :1], None)
            else:
                # The previous window's output frame at this window's start, encoded alone.
                frame = outputs[win.start]
                z_first = self.encode(pad_to_grid(frame[None], self.ck.grid))
            first_tiles = len(self.tiles) if index == 0 else 0
            z = z_first if latents == 1 else self.denoise(cond, z_first)
            fused = self.fuse(z, win, prev)
            video = self.decode(z)[0, :, :, :out_h, :out_w].clamp(-1.0, 1.0)
            for i in range(win.emit_start, win.emit_end):
                outputs[win.start + i] = video[:, i]
            prev = (win, z)
            if stats is not None:
                stats.append(
                    dict(
                        window=win,
                        fused=fused,
                        first_frame_tiles=first_tiles,
                        tiles=len(self.tiles) if latents > 1 else 0,
                    )
                )
        return torch.stack(outputs) if outputs else frames.new_zeros(0, 3, out_h, out_w)

    def fuse(
        self, z: torch.Tensor, win: WindowPlan, prev: tuple[WindowPlan, torch.Tensor] | None
    ) -> int:
        """DESIGN §5: this window's latents 1.. that the previous window also denoised (the same
        frames) become the average of both, in place; latent 0 (the conditioning frame) is not
        averaged. Returns how many latents were fused."""
        if prev is None:
            return 0
        prev_win, prev_z = prev
        offset, rest = divmod(win.start - prev_win.start, self.t_ratio)
        if rest or prev_z.shape[3:] != z.shape[3:]:
            return 0
        fused = 0
        for m in range(1, z.shape[2]):
            i = m + offset
            if i < prev_z.shape[2]:
                z[:, :, m] = (z[:, :, m] + prev_z[:, :, i]) * 0.5
                fused += 1
        return fused


def upscale_clip(
    folder: str, frames: torch.Tensor, settings: RunSettings | None = None
) -> torch.Tensor:
    """The reference output of the checkpoint `folder` on `frames` (n, 3, h, w) in [-1, 1]."""
    return Reference.load(folder, settings).upscale_clip(frames)
