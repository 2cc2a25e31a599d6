"""Trains the VAE of a small TurboVSR: LTX-Video's architecture (DESIGN §3.1, diffusers'
`AutoencoderKLLTXVideo` built from a config) as an autoencoder on high-resolution clips and on
the bicubic-upscaled degraded clips the element encodes as its condition (DESIGN §2).

    accelerate launch --config_file training/configs/accelerate/cpu.yaml \\
        -m turbovsr_train.vae_train --out runs/vae --data data/wallpapers --init pca \\
        --steps 1000 --export runs/vae-export

The default config (`training/configs/vae/small.json`, the shipped `models/default/vae/`)
compresses space by 4 (LTX's patch-4 patchify, no strided block) and time by 1 into 32 channels
per 4x4 patch: 1/1.5 of the values. LTX-Video's own 32x32x8 keeps 1/192; a CPU-trained model
cannot fill in what such a bottleneck loses, and the element's output is never better than the
VAE's reconstruction.

Starts: `--init pca` writes the principal-component autoencoder of the training patches into
LTX's blocks (`pca_init`; about 48 dB on the wallpapers before any step), `--init he` random
weights (about 24 dB after 600 steps of the old trainer). The shipped VAE is the PCA start as it
is: Adam steps from it lowered the reconstruction in the old trainer's runs (48.0 -> 47.1 dB after
30 steps at 3e-6).

The run folder is train.py's (`run.RunDir`): a rerun of the same command resumes to the same
bits as an uninterrupted run; every draw is seeded by (seed, step, process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import AutoencoderKLLTXVideo
from diffusers.optimization import get_scheduler

from .config import RUN_ONLY, DataConfig, _f, add_fields
from .data import ClipSource
from .export import save_module
from .latents import bicubic_up
from .run import RunDir, make_source, psnr, run_steps, step_generator

DEFAULT_CONFIG = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "configs", "vae", "small.json")
)
LOG_HEADER = "step,frames,loss,grad_norm,lr,seconds"

#: Base seeds of the fixed clip sets: evaluation and latent statistics are the same for every
#: run (comparable across seeds); the PCA patches are drawn with the run's seed.
EVAL_SEED = 0xE7A1
STATS_SEED = 0x57A7
PCA_STREAM = 0x9CA

#: Initial bias of the encoder's and the decoder's first convolution under `--init he`. LTX's
#: blocks normalize every position's feature vector to unit RMS: with a zero bias that division
#: discards each patch's brightness and contrast, which the network then has to recover from
#: directions alone (a run of the old trainer stalled with a colour offset). An offset larger
#: than the signal keeps the norms in their near-linear range.
CONV_IN_BIAS = 2.0

#: Standard deviation of a principal component inside the network, relative to the offset 1
#: it rides on (`pca_init`).
SIGNAL_STD = 0.1


@dataclass
class VaeTrainConfig(DataConfig):
    out: str = _f("", "run folder: checkpoint/, log.csv, settings.json; an existing run resumes")
    steps: int = _f(1000, "total optimizer steps (a resumed run continues up to this count)")
    seed: int = _f(1, "seed of the initial weights, the PCA patches and every training draw")
    # model
    config: str = _f(
        DEFAULT_CONFIG,
        "the VAE's diffusers AutoencoderKLLTXVideo config.json (presets in training/configs/vae/)",
    )
    init: str = _f(
        "pca",
        "initial weights: 'pca' (the principal-component autoencoder of the training patches; "
        "needs every block 2 x latent_channels wide and no down- or upsampling) or 'he' "
        "(He-normal convolutions, each resnet near the identity)",
        choices=("pca", "he"),
    )
    pca_images: int = _f(64, "training images whose patches the PCA start is computed from")
    # data
    crop: int = _f(128, "HR crop in pixels (a multiple of the VAE's spatial compression)")
    scale: int = _f(4, "LR = HR / scale (the degraded samples are LR upscaled back by bicubic)")
    frames: int = _f(9, "frames of a video batch's clips (1 + k x the temporal compression)")
    image_batch: int = _f(8, "still images per process per image batch")
    video_batch: int = _f(2, "clips per process per video batch (image and video alternate)")
    degraded_share: float = _f(
        0.3, "probability that a sample is the bicubic-upscaled degraded clip, not the HR one"
    )
    # optimizer
    lr: float = _f(1e-3, "AdamW learning rate after warm-up")
    warmup: int = _f(50, "steps of linear learning-rate warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_clip: float = _f(1.0, "clip the gradient's global norm to this (0: off)")
    # run
    log_every: int = _f(10, "steps between progress lines")
    checkpoint_every: int = _f(50, "steps between checkpoints (and at the end)")
    eval_every: int = _f(0, "steps between reconstruction evaluations (0: only at the end)")
    eval_clips: int = _f(8, "fixed HR clips (of --frames frames) of each evaluation")
    export: str = _f("", "write the trained VAE here at the end (a diffusers VAE folder)")
    export_dtype: str = _f(
        "float16", "exported weights' dtype", choices=("float16", "bfloat16", "float32")
    )
    progress: bool = _f(
        True, "progress bar on the main process", action=argparse.BooleanOptionalAction
    )

    def vae_config(self) -> dict:
        with open(self.config) as f:
            return json.load(f)

    def settings(self) -> dict:
        """What a resumed run must share with its checkpoint: the config file's content as
        `vae` (not its path)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}
        del d["config"]
        d["vae"] = self.vae_config()
        return d

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> VaeTrainConfig:
        parser = argparse.ArgumentParser(
            prog="python -m turbovsr_train.vae_train",
            description="Train the VAE (LTX architecture) as an autoencoder of HR and degraded "
            "clips (run it with `accelerate launch`).",
        )
        add_fields(parser, cls)
        cfg = cls(**vars(parser.parse_args(argv)))
        cfg.config = os.path.abspath(cfg.config)
        if cfg.data != "synthetic":
            cfg.data = os.path.abspath(cfg.data)
        if not cfg.out:
            parser.error("--out is required")
        if min(cfg.image_batch, cfg.video_batch) < 1:
            parser.error("--image-batch and --video-batch must be at least 1")
        if not 0.0 <= cfg.degraded_share <= 1.0:
            parser.error(f"--degraded-share {cfg.degraded_share} must be a probability")
        return cfg

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def build_vae(config: dict) -> AutoencoderKLLTXVideo:
    return AutoencoderKLLTXVideo.from_config(config)


@torch.no_grad()
def he_init(vae: AutoencoderKLLTXVideo, gen: torch.Generator) -> None:
    """Convolutions and linears He-normal for the SiLU before them, a resnet's second
    convolution scaled by 0.1 (each resnet starts near the identity), norm weights 1, the first
    convolutions' biases `CONV_IN_BIAS`, other biases 0."""
    for name, p in vae.named_parameters():
        if p.ndim <= 1:
            if name.endswith("conv_in.conv.bias"):
                p.fill_(CONV_IN_BIAS)
            else:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            continue
        std = math.sqrt(2.0 / max(p[0].numel(), 1)) * (0.1 if "conv2" in name else 1.0)
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)


def patchify(x: torch.Tensor, p: int, pt: int) -> torch.Tensor:
    """`(b, c, f, h, w)` to `(b, c * pt * p * p, f/pt, h/p, w/p)` in the channel order of the
    LTX encoder's own patchify, `(c, pt, p_w, p_h)` (diffusers' `LTXVideoEncoder3d.forward`),
    which is also the order its decoder's unpatchify reads."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p)
    # (b, c, f', pt, h', ph, w', pw) -> (b, c, pt, pw, ph, f', h', w')
    return x.permute(0, 1, 3, 7, 5, 2, 4, 6).flatten(1, 4)


def vae_batch(
    source: ClipSource, n: int, frames: int, degraded_share: float, gen: torch.Generator, seed: int
) -> torch.Tensor:
    """`(n, 3, frames, H, W)` in [-1, 1]: each sample the HR clip or, with probability
    `degraded_share`, its LR clip bicubic-upscaled to the HR size and clamped, as the element
    feeds its encoder."""
    height, width = source.size
    degraded = torch.rand(n, generator=gen) < degraded_share
    clips = []
    for i in range(n):
        hr, lr = source.clip(frames, seed + 7919 * i)
        if degraded[i]:
            hr = bicubic_up(lr[None], height, width)[0].clamp(0, 1)
        clips.append(hr)
    return torch.stack(clips) * 2 - 1


def recon_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE, both in [-1, 1] units."""
    d = out.float() - target.float()
    return d.abs().mean() + d.square().mean()


def reconstruct(vae: AutoencoderKLLTXVideo, x: torch.Tensor) -> torch.Tensor:
    """The posterior mean decoded, as the element encodes and decodes."""
    return vae.decode(vae.encode(x).latent_dist.mean).sample


@torch.no_grad()
def patch_statistics(
    vae: AutoencoderKLLTXVideo, source: ClipSource, images: int, degraded_share: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(d,)` and covariance `(d, d)` (float64) of the encoder's patch vectors over
    `images` training images, HR and degraded in the share the VAE is trained on."""
    cfg = vae.config
    rows = []
    for i in range(images):
        gen, clip_seed = step_generator(seed ^ PCA_STREAM, i)
        x = vae_batch(source, 1, 1, degraded_share, gen, clip_seed)
        z = patchify(x, cfg.patch_size, cfg.patch_size_t)
        rows.append(z.movedim(1, -1).reshape(-1, z.shape[1]).double())
    x = torch.cat(rows)
    n, d = x.shape
    if n < 2 * d:
        raise SystemExit(f"PCA init: {n} patches are too few for {d} dimensions")
    mean = x.mean(0)
    x = x - mean
    return mean, x.T @ x / (n - 1)


def check_pca_config(cfg) -> None:
    k = cfg.latent_channels
    widths = list(cfg.block_out_channels) + list(cfg.decoder_block_out_channels)
    if (
        any(c != 2 * k for c in widths)
        or any(cfg.spatio_temporal_scaling)
        or any(cfg.decoder_spatio_temporal_scaling)
        or any(cfg.decoder_inject_noise)
        or cfg.timestep_conditioning
    ):
        raise SystemExit(
            f"--init pca needs every block {2 * k} channels wide (twice the {k} latent "
            f"channels), no down- or upsampling, no noise injection and no timestep "
            f"conditioning; this config has widths {widths}, spatio_temporal_scaling "
            f"{cfg.spatio_temporal_scaling} / {cfg.decoder_spatio_temporal_scaling}: use --init he"
        )


@torch.no_grad()
def pca_init(
    vae: AutoencoderKLLTXVideo,
    source: ClipSource,
    images: int = 64,
    degraded_share: float = 0.3,
    seed: int = 0,
) -> None:
    """Sets `vae` to the principal-component autoencoder of the training patches, through LTX's
    blocks as they are, so that training starts from the PCA reconstruction instead of noise:

    - every resnet's second convolution is zero, so each resnet is the identity;
    - the encoder's `conv_in` (centre tap) writes each of the `K` leading components twice,
      `1 + s_k` and `1 - s_k`, `s_k` of standard deviation `SIGNAL_STD`: the per-position RMS
      norms then divide by `sqrt(1 + mean s^2)`, a second-order change only (the pairs cancel
      the first-order one), and SiLU around 1 is close to linear;
    - `conv_out` takes `silu(1 + s) - silu(1 - s) = 2 silu'(1) s + O(s^3)` (the quadratic terms
      cancel too) and scales it to a unit-variance latent;
    - the decoder does the same in reverse, its `conv_out` multiplying by the components and
      adding the patch mean.

    What remains is the discarded components plus the small nonlinear terms above."""
    cfg = vae.config
    check_pca_config(cfg)
    k = cfg.latent_channels
    width = 2 * k
    mean, cov = patch_statistics(vae, source, images, degraded_share, seed)
    d = mean.numel()
    if k > d:
        raise SystemExit(f"PCA init: {k} latent channels exceed the {d} values of a patch")
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, u = values.flip(0)[:k], vectors.flip(1)[:, :k].T  # (k,), (k, d) rows
    std = values.clamp_min(1e-10).sqrt()
    sig = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
    gain = 1.0 / (2.0 * sig * (2.0 - sig) * SIGNAL_STD)  # silu'(1) = sig(1) (2 - sig(1))
    pair = torch.cat([torch.eye(k), -torch.eye(k)]).double()  # (2k, k): +1 and -1 copies

    params = dict(vae.named_parameters())

    def centre_tap(name: str, causal: bool, matrix: torch.Tensor, bias: torch.Tensor) -> None:
        w, b = params[name + ".weight"], params[name + ".bias"]
        kt, kh, kw = w.shape[2:]
        if (w.shape[0], w.shape[1]) != tuple(matrix.shape) or kh % 2 == 0 or kw % 2 == 0:
            raise SystemExit(
                f"PCA init: {name} has shape {list(w.shape)}, expected "
                f"{list(matrix.shape)} x odd kernel"
            )
        w.zero_()
        # the causal conv pads the past only: its last temporal tap is the current frame
        w[:, :, kt - 1 if causal else kt // 2, kh // 2, kw // 2] = matrix.to(w)
        b.copy_(bias.to(b))

    # encoder: s_k = a_k u_k . (x - mean), a_k = SIGNAL_STD / std_k, in channels k and k + K
    a = SIGNAL_STD / std
    project = pair @ (a[:, None] * u)  # (2k, d)
    centre_tap("encoder.conv_in.conv", cfg.encoder_causal, project, 1.0 - project @ mean)
    out_rows = params["encoder.conv_out.conv.weight"].shape[0]  # K means + the log-variance
    to_latent = torch.zeros(out_rows, width, dtype=torch.float64)
    to_latent[:k] = gain * pair.T
    centre_tap("encoder.conv_out.conv", cfg.encoder_causal, to_latent, torch.zeros(out_rows))
    # decoder: 1 +- SIGNAL_STD z_k, then mean + sum_k u_k std_k z_k
    centre_tap("decoder.conv_in.conv", cfg.decoder_causal, SIGNAL_STD * pair, torch.ones(width))
    to_pixels = (u.T * (gain * std)) @ pair.T  # (d, 2k)
    centre_tap("decoder.conv_out.conv", cfg.decoder_causal, to_pixels, mean)
    for name, p in params.items():
        if ".conv2.conv." in name:
            p.zero_()


@torch.no_grad()
def psnr_sum(
    vae: AutoencoderKLLTXVideo,
    source: ClipSource,
    clips: range,
    frames: int,
    device: torch.device | str = "cpu",
) -> float:
    """Summed PSNR (dB, RGB in [0, 1]) of the reconstruction of the fixed HR clips `clips`."""
    total = 0.0
    for i in clips:
        gen, seed = step_generator(EVAL_SEED, i)
        x = vae_batch(source, 1, frames, 0.0, gen, seed).to(device)
        y = reconstruct(vae, x).float().clamp(-1, 1)
        total += psnr((y + 1) / 2, (x + 1) / 2)
    return total


def reconstruction_psnr(
    vae: AutoencoderKLLTXVideo, source: ClipSource, clips: int = 8, frames: int = 9
) -> float:
    """Mean PSNR of the reconstruction of `clips` fixed HR clips (one process)."""
    return psnr_sum(vae, source, range(clips), frames, vae.device) / clips


@torch.no_grad()
def latent_moments(
    vae: AutoencoderKLLTXVideo, source: ClipSource, clips: range, frames: int, device
) -> torch.Tensor:
    """`(3, C)` float64: count, sum and sum of squares per channel of the encoder's latents of
    the fixed HR clips `clips` (high resolution only: the statistics normalize what the
    denoiser generates)."""
    c = vae.config.latent_channels
    out = torch.zeros(3, c, dtype=torch.float64)
    for i in clips:
        gen, seed = step_generator(STATS_SEED, i)
        x = vae_batch(source, 1, frames, 0.0, gen, seed).to(device)
        z = vae.encode(x).latent_dist.mean.double().cpu().transpose(0, 1).reshape(c, -1)
        out += torch.stack([torch.full((c,), float(z.shape[1])), z.sum(1), z.square().sum(1)])
    return out


def latent_stats(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (`latents_mean`, `latents_std`, which the
    pipelines normalize with), the deviation floored at 1e-3 of the largest channel's."""
    n, s, sq = moments
    mean = s / n
    std = (sq / n - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.clamp_min(max(float(std.max()) * 1e-3, 1e-6)).float()


class VaeTrainer:
    def __init__(self, cfg: VaeTrainConfig, accelerator: Accelerator) -> None:
        self.cfg, self.acc = cfg, accelerator
        self.config = cfg.vae_config()
        self.source = make_source(cfg, cfg.scale)
        self.settings = cfg.settings()
        self.run = RunDir(cfg.out, LOG_HEADER)

    def prepare(self, fresh: bool) -> None:
        """The model (its start when `fresh`; a resumed run's weights come from the checkpoint),
        optimizer and scheduler under accelerate."""
        cfg, acc = self.cfg, self.acc
        set_seed(cfg.seed)  # the same weights on every process
        vae = build_vae(self.config)
        tc, sc = vae.temporal_compression_ratio, vae.spatial_compression_ratio
        if (cfg.frames - 1) % tc:
            raise SystemExit(f"--frames {cfg.frames} must be 1 + k x {tc} (temporal compression)")
        if cfg.crop % sc or cfg.crop % cfg.scale:
            raise SystemExit(
                f"--crop {cfg.crop} must be a multiple of {sc} (the VAE's spatial compression) "
                f"and of --scale {cfg.scale}"
            )
        if fresh:
            he_init(vae, torch.Generator().manual_seed(cfg.seed))
            if cfg.init == "pca":
                pca_init(vae, self.source, cfg.pca_images, cfg.degraded_share, cfg.seed)
        self.n_params = sum(p.numel() for p in vae.parameters())
        optimizer = torch.optim.AdamW(
            vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay
        )
        scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup)
        self.model, self.optimizer = acc.prepare(vae.to(acc.device), optimizer)
        # stepped once per optimizer step here, saved with the rest of the state (as train.py)
        self.scheduler = scheduler
        acc.register_for_checkpointing(scheduler)

    @property
    def vae(self) -> AutoencoderKLLTXVideo:
        return self.acc.unwrap_model(self.model)

    def task(self, step: int) -> tuple[int, int]:
        """(frames, batch): image and video batches alternate, images first."""
        if step % 2 == 0:
            return 1, self.cfg.image_batch
        return self.cfg.frames, self.cfg.video_batch

    def train_step(self, step: int) -> tuple[float, float, int]:
        cfg, acc = self.cfg, self.acc
        frames, n = self.task(step)
        gen, seed = step_generator(cfg.seed, step, acc.process_index)
        x = vae_batch(self.source, n, frames, cfg.degraded_share, gen, seed).to(acc.device)
        with acc.autocast():
            loss = recon_loss(self.model(x).sample, x)
        acc.backward(loss)
        grad_norm = 0.0
        if cfg.grad_clip > 0:
            grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(acc.reduce(loss.detach(), "mean")), grad_norm, frames

    def evaluate(self) -> float:
        """Mean reconstruction PSNR of the fixed clips, split over the processes."""
        cfg, acc = self.cfg, self.acc
        mine = range(acc.process_index, cfg.eval_clips, acc.num_processes)
        total = psnr_sum(self.vae, self.source, mine, cfg.frames, acc.device)
        total = acc.reduce(torch.tensor([total], dtype=torch.float64, device=acc.device), "sum")
        return float(total.cpu()[0]) / max(cfg.eval_clips, 1)

    def export(self, out: str) -> None:
        """A diffusers VAE folder with the latent statistics of 64 HR clips of 9 frames."""
        acc = self.acc
        vae = self.vae
        clips = range(acc.process_index, 64, acc.num_processes)
        moments = latent_moments(vae, self.source, clips, 9, acc.device)
        moments = acc.reduce(moments.to(acc.device), "sum").cpu()
        if acc.is_main_process:
            mean, std = latent_stats(moments)
            state = dict(vae.state_dict(), latents_mean=mean, latents_std=std)
            save_module(vae, state, getattr(torch, self.cfg.export_dtype), out)
        acc.wait_for_everyone()

    def fit(self) -> float:
        """Trains up to `cfg.steps`; returns the final reconstruction PSNR."""
        cfg, acc, run = self.cfg, self.acc, self.run
        start = run.open(acc, self.settings, cfg.to_json())
        self.prepare(fresh=start == 0)
        say = acc.print
        if start:
            acc.load_state(run.checkpoint)
            if acc.is_main_process:
                run.cut_log(start)
        elif cfg.init == "pca" and cfg.steps > 0:
            say(f"principal-component start: reconstruction {self.evaluate():.2f} dB")
        vc = self.vae
        say(
            f"VAE: {self.n_params:,} parameters, spatial x{vc.spatial_compression_ratio}, "
            f"temporal x{vc.temporal_compression_ratio}, {vc.config.latent_channels} latent "
            f"channels; {acc.num_processes} process(es) on {acc.device}, mixed precision "
            f"{acc.mixed_precision}; steps {start}..{cfg.steps}"
        )
        run_steps(
            acc,
            run,
            cfg,
            self.settings,
            start,
            self.train_step,
            self.scheduler,
            lambda step: self.log_eval(step, self.evaluate()),
        )
        final = self.evaluate() if cfg.eval_clips else float("nan")
        if cfg.eval_clips:
            self.log_eval(cfg.steps, final)
        if cfg.export:
            self.export(cfg.export)
            say(f"wrote {cfg.export}")
        acc.wait_for_everyone()
        return final

    def log_eval(self, step: int, value: float) -> None:
        self.acc.print(
            f"reconstruction PSNR at step {step} on {self.cfg.eval_clips} clips of "
            f"{self.cfg.frames} frames: {value:.2f} dB"
        )
        if self.acc.is_main_process:
            with open(os.path.join(self.cfg.out, "eval.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "psnr": value}) + "\n")


def main(argv: list[str] | None = None) -> None:
    cfg = VaeTrainConfig.parse(argv)
    VaeTrainer(cfg, Accelerator()).fit()


if __name__ == "__main__":
    main()
