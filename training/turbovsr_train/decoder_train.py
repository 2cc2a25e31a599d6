"""Fine-tunes the VAE decoder of a TurboVSR model folder on its own denoiser's output: the
encoder and the transformer stay frozen, and the decoder learns to turn the latents the sampler
actually produces (not the encoder's latents of the HR clip) into the HR pixels.

    accelerate launch --config_file training/configs/accelerate/cpu.yaml \\
        -m turbovsr_train.decoder_train --model models/default --out runs/dec \\
        --data data/wallpapers --degrade clean:0.7,mild:0.3 --steps 3000 --export runs/model-dec

Why the decoder: the element's decoder is a stack of 3x3x3 convolutions over the latent grid,
one latent per 4x4 output pixels (in the small default VAE), so it sees a neighbourhood of
tokens; the denoiser's tokens are 8x8 pixels each. A decoder trained on the denoiser's output
learns what a per-token map cannot: edges across token borders, the token grid removed, texture
the bicubic condition blurred. The decoder's size and speed do not change (the same config),
so the element runs the fine-tuned model at the same cost.

The latents come from the element's sampler at `--sample-steps` (factorized: image SR of the
first frame, video SR holding it), without condition noise. The loss is L1 in [-1, 1] units
(Real-ESRGAN's PSNR-oriented stage). Image and video batches alternate, images first. The run
folder is train.py's (`run.RunDir`): a rerun of the same command resumes to the same bits as an
uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from . import latents
from .config import RUN_ONLY, DataConfig, _f, add_fields
from .model import TurboVSRTransformer
from .recipe import Recipe, RecipeConfig
from .run import RunDir, make_source, psnr, run_steps, step_generator
from .train import clip_batch, factorized_sample

LOG_HEADER = "step,frames,loss,grad_norm,lr,seconds"

#: Base seed of the fixed evaluation clips (the data's held-out split where it has one).
EVAL_SEED = 0xDEC0DE

#: The model folder's files an export copies as they are (the decoder's weights are replaced).
MODEL_FILES = (
    "turbovsr.json",
    "vae/config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
)
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


@dataclass
class DecoderTrainConfig(DataConfig):
    model: str = _f("", "the TurboVSR model folder whose decoder is fine-tuned (DESIGN §3.3)")
    out: str = _f("", "run folder: checkpoint/, log.csv, settings.json; an existing run resumes")
    steps: int = _f(2000, "total optimizer steps (a resumed run continues up to this count)")
    seed: int = _f(3, "seed of every training draw")
    # data
    crop: int = _f(128, "HR crop in pixels (a multiple of the VAE's compression x patch)")
    frames: int = _f(5, "frames of a video batch's clips (1 + k x the temporal compression)")
    image_batch: int = _f(8, "still images per process per image batch")
    video_batch: int = _f(2, "clips per process per video batch")
    sample_steps: int = _f(1, "sampler steps that make the training latents")
    fit_batches: int = _f(
        0,
        "before any step, fit the decoder's output convolution (its 3x3 spatial taps at the "
        "centre frame) by least squares on this many image batches (0: keep it)",
    )
    fit_ridge: float = _f(1e-5, "the fit's ridge, relative to the features' mean variance")
    train_only: list = _f(
        [],
        "train only the decoder weights whose names start with one of these prefixes (e.g. "
        "mid_block. up_blocks.); the rest stay as they are",
        type=str,
        nargs="*",
    )
    # optimizer
    lr: float = _f(2e-4, "AdamW learning rate after warm-up (cosine decay to 0 at --steps)")
    warmup: int = _f(50, "steps of linear learning-rate warm-up")
    grad_clip: float = _f(1.0, "clip the gradient's global norm to this (0: off)")
    # run
    log_every: int = _f(25, "steps between progress lines")
    checkpoint_every: int = _f(100, "steps between checkpoints (and at the end)")
    eval_every: int = _f(0, "steps between evaluations (0: only at the start and the end)")
    eval_clips: int = _f(16, "fixed clips of each evaluation (of --frames frames)")
    export: str = _f("", "write the model folder with the trained decoder here at the end")
    export_dtype: str = _f(
        "float16", "exported decoder weights' dtype", choices=("float16", "bfloat16", "float32")
    )
    progress: bool = _f(
        True, "progress bar on the main process", action=argparse.BooleanOptionalAction
    )

    def settings(self) -> dict:
        """What a resumed run must share with its checkpoint (the model by content hash would
        be stricter; the path and the sampler settings are what change between recipes)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> DecoderTrainConfig:
        parser = argparse.ArgumentParser(
            prog="python -m turbovsr_train.decoder_train",
            description="Fine-tune a TurboVSR model's VAE decoder on its denoiser's output "
            "(run it with `accelerate launch`).",
        )
        add_fields(parser, cls)
        cfg = cls(**vars(parser.parse_args(argv)))
        if not cfg.out or not cfg.model:
            parser.error("--model and --out are required")
        cfg.model = os.path.abspath(cfg.model)
        if cfg.data != "synthetic":
            cfg.data = os.path.abspath(cfg.data)
        for name in ("turbovsr.json", VAE_WEIGHTS):
            if not os.path.isfile(os.path.join(cfg.model, name)):
                parser.error(f"--model {cfg.model}: no {name} (not a TurboVSR model folder)")
        if min(cfg.image_batch, cfg.video_batch, cfg.sample_steps) < 1:
            parser.error("--image-batch, --video-batch and --sample-steps must be at least 1")
        return cfg

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def cosine_with_warmup(warmup: int, total: int):
    """The learning-rate factor of a step: linear warm-up, then a cosine to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        span = max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))

    return factor


class DecoderTrainer:
    def __init__(self, cfg: DecoderTrainConfig, accelerator: Accelerator) -> None:
        self.cfg, self.acc = cfg, accelerator
        with open(os.path.join(cfg.model, "turbovsr.json")) as f:
            self.model_settings = json.load(f)
        self.scale = int(self.model_settings.get("scale", 4))
        dev = accelerator.device
        self.vae = latents.load_vae(cfg.model).to(dev)
        self.vae.requires_grad_(False)
        self.tc = self.vae.temporal_compression_ratio
        self.sc = self.vae.spatial_compression_ratio
        if (cfg.frames - 1) % self.tc:
            raise SystemExit(f"--frames {cfg.frames} must be 1 + k x {self.tc} (the VAE's)")
        cond_scale = self.model_settings.get("cond_scale", 2**-0.5)
        tf = TurboVSRTransformer.from_pretrained(os.path.join(cfg.model, "transformer"), cond_scale)
        self.transformer = tf.to(dev).eval().requires_grad_(False)
        grid = self.sc * tf.transformer.config.patch_size
        if cfg.crop % grid:
            raise SystemExit(f"--crop {cfg.crop} must be a multiple of {grid} (VAE x patch)")
        recipe = RecipeConfig(cond_aug=0.0, shift=self.model_settings.get("shift", 2.0))
        if self.model_settings.get("step_sizes"):
            recipe.step_sizes = list(self.model_settings["step_sizes"])
        self.recipe = Recipe(recipe, self.tc, self.sc)
        self.source = make_source(cfg, self.scale)
        self.eval_source = self.source
        if cfg.data != "synthetic":
            self.eval_source = make_source(cfg, self.scale, "heldout")
        set_seed(cfg.seed)
        decoder = self.vae.decoder
        for name, prm in decoder.named_parameters():
            prm.requires_grad_(not cfg.train_only or name.startswith(tuple(cfg.train_only)))
        params = [p for p in decoder.parameters() if p.requires_grad]
        if not params:
            raise SystemExit(f"no decoder weight trains (--train-only {cfg.train_only})")
        self.n_params = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_with_warmup(cfg.warmup, cfg.steps)
        )
        # the decoder alone is the trained module (under DDP its gradients are synchronized)
        self.decoder, self.optimizer = accelerator.prepare(decoder, optimizer)
        self.scheduler = scheduler
        accelerator.register_for_checkpointing(scheduler)
        self.settings = cfg.settings()
        self.run = RunDir(cfg.out, LOG_HEADER)

    def task(self, step: int) -> tuple[int, int]:
        """(frames, batch): image and video batches alternate, images first."""
        if step % 2 == 0:
            return 1, self.cfg.image_batch
        return self.cfg.frames, self.cfg.video_batch

    @torch.no_grad()
    def model_latent(self, hr: torch.Tensor, lr: torch.Tensor, gen) -> torch.Tensor:
        """What the element's sampler makes of the pair: normalized latents."""
        x0, cond = latents.encode_pair(self.vae, hr, lr)
        tf = self.transformer
        return factorized_sample(tf, tf, self.recipe, x0, cond, self.cfg.sample_steps, gen)

    @torch.no_grad()
    def fit_output_conv(self) -> tuple[float, float]:
        """Fits the decoder's `conv_out` by least squares: its 3x3 spatial taps at the centre
        frame (the other frames' taps zero, so a frame's output reads its own features only),
        from the features it sees (`norm_out` and SiLU of the decoder's stream) on the latents
        the denoiser makes, to the HR patches in the order its unpatchify reads. With the
        principal-component start the features are an affine image of the latents, so this is
        the best affine map from a 3x3 neighbourhood of the denoiser's latents (12x12 pixels in
        the default) to each 4x4-pixel patch: it sees across the denoiser's token borders.
        Returns the in-sample mean squared error of the map before and after."""
        from torch.nn.functional import unfold

        from .vae_train import patchify

        cfg, vae = self.cfg, self.vae
        dec = vae.decoder
        conv = dec.conv_out.conv
        kt, kh, kw = conv.kernel_size
        if kt % 2 == 0 or kh != 3 or kw != 3 or vae.config.decoder_causal:
            raise SystemExit(
                f"--fit-batches: conv_out {conv.kernel_size} is not a 3x3x3 non-causal conv"
            )
        seen: list[torch.Tensor] = []
        hook = conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        c_in, c_out = conv.in_channels, conv.out_channels
        n_feat = c_in * kh * kw
        xtx = torch.zeros(n_feat + 1, n_feat + 1, dtype=torch.float64)
        xty = torch.zeros(n_feat + 1, c_out, dtype=torch.float64)
        yty = torch.zeros(c_out, dtype=torch.float64)
        old_err = 0.0
        try:
            for i in range(cfg.fit_batches):
                gen, seed = step_generator(cfg.seed ^ 0xF17, i)
                hr, lr = clip_batch(self.source, cfg.image_batch, 1, seed)
                z = latents.denormalize(self.vae, self.model_latent(hr, lr, gen))
                seen.clear()
                out = dec(z, None)
                feats = seen[0][:, :, kt // 2 : seen[0].shape[2] - kt // 2]  # centre frames
                target = patchify(hr * 2 - 1, vae.config.patch_size, vae.config.patch_size_t)
                now = patchify(out, vae.config.patch_size, vae.config.patch_size_t)
                old_err += float((now - target).square().sum())
                b, _, f, h, w = feats.shape
                cols = unfold(feats.transpose(1, 2).reshape(b * f, c_in, h, w), 3, padding=1)
                x = cols.transpose(1, 2).reshape(-1, n_feat).double()
                x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
                y = target.transpose(1, 2).reshape(b * f, c_out, h * w).transpose(1, 2)
                y = y.reshape(-1, c_out).double()
                xtx += x.T @ x
                xty += x.T @ y
                yty += y.square().sum(0)
        finally:
            hook.remove()
        n = float(xtx[-1, -1])
        mean_x, mean_y = xtx[-1, :-1] / n, xty[-1] / n
        cov = xtx[:-1, :-1] / n - torch.outer(mean_x, mean_x)
        cross = xty[:-1] / n - torch.outer(mean_x, mean_y)
        lam = cfg.fit_ridge * float(cov.diagonal().mean())
        weight = torch.linalg.solve(cov + lam * torch.eye(n_feat, dtype=cov.dtype), cross)
        bias = mean_y - mean_x @ weight
        # in-sample error from the moments: E|y - Wx - b|^2 summed over outputs
        full = torch.cat([weight, bias[None]])
        err = float(yty.sum() - 2 * (full * xty).sum() + (full * (xtx @ full)).sum())
        new = torch.zeros_like(conv.weight)
        new[:, :, kt // 2] = weight.T.reshape(c_out, c_in, kh, kw).to(new)
        conv.weight.copy_(new)
        conv.bias.copy_(bias.to(conv.bias))
        values = n * c_out
        return old_err / values, err / values

    def decode(self, decoder, z: torch.Tensor) -> torch.Tensor:
        """Normalized latents to pixels in [-1, 1] (not clamped), with gradients."""
        z = latents.denormalize(self.vae, z)
        temb = None
        if self.vae.config.timestep_conditioning:
            t = float(self.model_settings.get("decode_timestep", 0.05))
            temb = torch.full((z.shape[0],), t, device=z.device, dtype=z.dtype)
        return decoder(z, temb)

    def train_step(self, step: int) -> tuple[float, float, int]:
        cfg, acc = self.cfg, self.acc
        frames, n = self.task(step)
        gen, seed = step_generator(cfg.seed, step, acc.process_index)
        hr, lr = clip_batch(self.source, n, frames, seed)
        hr, lr = hr.to(acc.device), lr.to(acc.device)
        z = self.model_latent(hr, lr, gen)
        with acc.autocast():
            out = self.decode(self.decoder, z)
        loss = (out.float() - (hr * 2 - 1)).abs().mean()
        acc.backward(loss)
        grad_norm = 0.0
        if cfg.grad_clip > 0:
            trained = [p for p in self.decoder.parameters() if p.requires_grad]
            grad_norm = float(acc.clip_grad_norm_(trained, cfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(acc.reduce(loss.detach(), "mean")), grad_norm, frames

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean PSNR (RGB in [0, 1]) of bicubic and of the model on fixed clips of the held-out
        split, split over the processes."""
        cfg, acc = self.cfg, self.acc
        decoder = acc.unwrap_model(self.decoder)
        sums = torch.zeros(2, dtype=torch.float64)
        for k in range(acc.process_index, cfg.eval_clips, acc.num_processes):
            gen, seed = step_generator(EVAL_SEED, k)
            hr, lr = clip_batch(self.eval_source, 1, cfg.frames, seed)
            hr, lr = hr.to(acc.device), lr.to(acc.device)
            up = latents.bicubic_up(lr, *hr.shape[-2:]).clamp(0, 1)
            y = ((self.decode(decoder, self.model_latent(hr, lr, gen)).float() + 1) / 2).clamp(0, 1)
            sums += torch.tensor([psnr(up, hr), psnr(y, hr)], dtype=torch.float64)
        sums = acc.reduce(sums.to(acc.device), "sum").cpu() / max(cfg.eval_clips, 1)
        return {"bicubic_psnr": float(sums[0]), "psnr": float(sums[1])}

    def log_eval(self, step: int, metrics: dict) -> None:
        self.acc.print(
            f"eval at step {step} ({self.cfg.eval_clips} held-out clips of {self.cfg.frames} "
            f"frames, {self.cfg.sample_steps} step(s)): bicubic {metrics['bicubic_psnr']:.2f} dB, "
            f"model {metrics['psnr']:.2f} dB"
        )
        if self.acc.is_main_process:
            with open(os.path.join(self.cfg.out, "eval.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def export(self, out: str) -> None:
        """The model folder with the decoder's weights replaced (the rest byte for byte)."""
        if not self.acc.is_main_process:
            return
        src = self.cfg.model
        for name in MODEL_FILES:
            os.makedirs(os.path.dirname(os.path.join(out, name)) or out, exist_ok=True)
            shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
        weights = load_file(os.path.join(src, VAE_WEIGHTS))
        trained = self.acc.unwrap_model(self.decoder).state_dict()
        dtype = getattr(torch, self.cfg.export_dtype)
        for key, value in trained.items():
            name = "decoder." + key
            if name not in weights:
                raise SystemExit(f"export: {name} is not in {src}/{VAE_WEIGHTS}")
            weights[name] = value.detach().to("cpu", dtype).contiguous()
        save_file(weights, os.path.join(out, VAE_WEIGHTS), metadata={"format": "pt"})

    def fit(self) -> dict:
        cfg, acc, run = self.cfg, self.acc, self.run
        start = run.open(acc, self.settings, cfg.to_json())
        say = acc.print
        if start:
            acc.load_state(run.checkpoint)
            if acc.is_main_process:
                run.cut_log(start)
        else:
            if cfg.eval_clips:
                self.log_eval(0, self.evaluate())
            if cfg.fit_batches:
                before, after = self.fit_output_conv()
                say(
                    f"output convolution fitted on {cfg.fit_batches} batches of "
                    f"{cfg.image_batch}: mean squared error {before:.3e} -> {after:.3e} "
                    f"({10 * math.log10(before / after):+.2f} dB, in sample)"
                )
                if cfg.eval_clips:
                    self.log_eval(0, self.evaluate())
        say(
            f"decoder: {self.n_params:,} parameters trained on {cfg.model}'s "
            f"{cfg.sample_steps}-step output; {acc.num_processes} process(es) on {acc.device}; "
            f"steps {start}..{cfg.steps}"
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
        final = self.evaluate() if cfg.eval_clips else {}
        if cfg.eval_clips:
            self.log_eval(cfg.steps, final)
        if cfg.export:
            self.export(cfg.export)
            say(f"wrote {cfg.export}")
        acc.wait_for_everyone()
        return final


def main(argv: list[str] | None = None) -> None:
    cfg = DecoderTrainConfig.parse(argv)
    DecoderTrainer(cfg, Accelerator()).fit()


if __name__ == "__main__":
    main()
