"""Trains TurboVSR's denoiser with the paper's recipe (`recipe.py`) on a frozen LTX VAE, under
`accelerate`: one CPU, one GPU, many GPUs or nodes (DDP, or FSDP for LTX-Video 2B), bf16 mixed
precision, gradient checkpointing; the run folder resumes after an interruption to the same
result as an uninterrupted run.

    accelerate launch --config_file training/configs/accelerate/cpu.yaml \\
        -m turbovsr_train.train --out runs/tiny --vae models/default/vae \\
        --transformer training/configs/model/tiny.json --steps 200 --export runs/tiny-model

Every draw (the clips, the recipe's noise and levels) comes from a generator seeded by
(seed, step, process, micro-batch): which step a process runs decides what it sees, so a resumed
run sees exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import LTXVideoTransformer3DModel
from diffusers.optimization import get_scheduler

from . import latents
from .config import TrainConfig
from .export import TurboVSRSettings, export_checkpoint
from .init import condition_start, fit_condition_map
from .model import TurboVSRTransformer
from .recipe import Recipe, RecipeConfig, sample
from .run import RunDir, make_source, psnr, step_generator

LOG_HEADER = "step,objective,frames,loss,grad_norm,lr,seconds"
#: Training batches the regression start is fitted on.
FIT_BATCHES = 32


def build_model(cfg: TrainConfig, latent_channels: int) -> TurboVSRTransformer:
    """A fresh transformer from a config, Lightricks' weights with a new head, or a TurboVSR
    model to continue from. The condition tokens are patchified like the latent's."""
    shortcut = cfg.objective != "flow"  # the step-size embedder; a flow model has none
    if cfg.pretrained:
        path = cfg.pretrained
        if os.path.isdir(os.path.join(path, "transformer")):
            path = os.path.join(path, "transformer")
        if is_turbovsr_transformer(path):
            return TurboVSRTransformer.from_pretrained(path, cfg.cond_scale)
        if os.path.isfile(path):
            base = LTXVideoTransformer3DModel.from_single_file(path)
        else:
            base = LTXVideoTransformer3DModel.from_pretrained(path)
    else:
        with open(cfg.transformer) as f:
            base = LTXVideoTransformer3DModel.from_config(json.load(f))
        if cfg.init != "diffusers":
            zero_block_outputs(base)
    p, pt = base.config.patch_size, base.config.patch_size_t
    model = TurboVSRTransformer(base, latent_channels * p * p * pt, cfg.cond_scale, shortcut)
    if model.shortcut:
        # d's embedding starts at 0: a new head leaves the base model's timestep embedding as it is
        emb = model.transformer.time_embed.emb.step_embedder.linear_2
        torch.nn.init.zeros_(emb.weight)
        torch.nn.init.zeros_(emb.bias)
    return model


def is_turbovsr_transformer(folder: str) -> bool:
    """A transformer folder whose weights already hold TurboVSR's head (an exported model)."""
    from safetensors import safe_open

    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(path):
        return False
    with safe_open(path, "pt") as f:
        return "cond_embedder.weight" in f.keys()


def zero_block_outputs(transformer: LTXVideoTransformer3DModel) -> None:
    """Every block's attention and feed-forward output projection and the final `proj_out` at
    zero: each block starts as the identity and the first velocity is 0 (DiT's adaLN-zero idea),
    which trains stably from scratch."""
    for name, module in transformer.named_modules():
        if name == "proj_out" or name.endswith(("attn1.to_out.0", "attn2.to_out.0", "ff.net.2")):
            torch.nn.init.zeros_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


class Trainer:
    def __init__(self, cfg: TrainConfig, accelerator: Accelerator) -> None:
        self.cfg, self.acc = cfg, accelerator
        self.vae = latents.load_vae(cfg.vae).to(accelerator.device)
        self.tc = self.vae.temporal_compression_ratio
        self.sc = self.vae.spatial_compression_ratio
        if (cfg.frames - 1) % self.tc:
            raise SystemExit(
                f"--frames {cfg.frames} must be 1 + k x {self.tc} (the VAE's temporal compression)"
            )
        self.source = make_source(cfg, cfg.scale)
        self.recipe_cfg = RecipeConfig(
            objective=cfg.objective,
            step_sizes=list(cfg.step_sizes),
            shift=cfg.shift_value(),
            max_bootstrap_steps=cfg.max_bootstrap_steps,
            cond_aug=cfg.cond_aug,
            cond_aug_max_t=cfg.cond_aug_max_t,
            cond_dropout=cfg.cond_dropout,
            min_level=cfg.min_level,
            trajectory_steps=list(cfg.trajectory_steps),
        )
        self.recipe = Recipe(self.recipe_cfg, self.tc, self.sc)
        set_seed(cfg.seed)  # the initial weights: the same on every process
        latent_channels = self.vae.config.latent_channels
        model = build_model(cfg, latent_channels)
        tcfg = model.transformer.config
        packed = latent_channels * tcfg.patch_size**2 * tcfg.patch_size_t
        if tcfg.in_channels != packed:
            raise SystemExit(
                f"the transformer takes {tcfg.in_channels} channels per token but the VAE's "
                f"{latent_channels} latent channels in {tcfg.patch_size_t}x{tcfg.patch_size}x"
                f"{tcfg.patch_size} patches make {packed}"
            )
        grid = self.sc * tcfg.patch_size
        if cfg.crop % grid or (cfg.crop // cfg.scale) * cfg.scale != cfg.crop:
            raise SystemExit(
                f"--crop {cfg.crop} must be a multiple of {grid} (VAE x patch) "
                f"and of --scale {cfg.scale}"
            )
        if cfg.init in ("condition", "regression"):
            condition_start(model, float(cfg.shift), cfg.seed)
            if cfg.init == "regression":
                rel = fit_condition_map(model, self.fit_pairs(model))
                accelerator.print(
                    f"regression start: the condition's per-token map fitted on {FIT_BATCHES} "
                    f"batches, squared error {100 * rel:.1f} % of the identity's (in sample)"
                )
        if cfg.gradient_checkpointing:
            model.transformer.enable_gradient_checkpointing()
        for name, prm in model.transformer.named_parameters():
            if cfg.freeze_ffn and ".ff." in name:
                prm.requires_grad_(False)
            if cfg.train_only and not name.startswith(tuple(cfg.train_only)):
                prm.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise SystemExit(f"no transformer weight trains (--train-only {cfg.train_only})")
        # the trajectory loss's weights in packed (c, pt, p, p) order: each channel's gain
        self.gains = None
        if cfg.objective == "trajectory":
            gains = latents.decoder_channel_gains(self.vae)
            self.gains = gains.repeat_interleave(tcfg.patch_size**2 * tcfg.patch_size_t)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trained = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # Stepped once per optimizer step here (accelerate's wrapper would step it once per
        # process), and saved with the rest of the state.
        self.scheduler = scheduler
        accelerator.register_for_checkpointing(scheduler)
        self.settings = cfg.settings()
        self.run = RunDir(cfg.out, LOG_HEADER)

    def fit_pairs(self, model: TurboVSRTransformer):
        """The regression start's data: packed (x0, cond) tokens of `FIT_BATCHES` training
        batches, single frames and clips alternating, without the condition's noise."""
        for i in range(FIT_BATCHES):
            _, seed = step_generator(self.cfg.seed ^ 0xF175EED, i)
            frames = 1 if i % 2 == 0 else self.cfg.frames
            x0, cond = latents.encode_pair(self.vae, *self.clips(self.cfg.batch, frames, seed))
            cfg = model.transformer.config
            yield (
                latents.pack(x0, cfg.patch_size, cfg.patch_size_t).cpu(),
                latents.pack(cond, cfg.patch_size, cfg.patch_size_t).cpu(),
            )

    def loader(self, start: int) -> torch.utils.data.DataLoader:
        """The clips of steps `start`.. of this process, made ahead by `--workers` worker
        processes (on a GPU the data would otherwise leave it idle); the same seeds as made in
        line, so the workers change no bit of the run."""
        workers = self.cfg.workers
        if workers < 0:
            workers = 0 if self.acc.device.type == "cpu" else 4
        steps = StepClips(self.source, self.task, self.cfg, self.acc.process_index)
        return torch.utils.data.DataLoader(
            steps,
            sampler=range(start, self.cfg.steps),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            persistent_workers=False,
        )

    def clips(self, n: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr, lr = clip_batch(self.source, n, frames, seed)
        return hr.to(self.acc.device), lr.to(self.acc.device)

    def task(self, step: int) -> tuple[bool, int, int]:
        """(shortcut, frames, batch) of a step: flow matching and shortcut alternate every step,
        image and video SR every two, so four steps hold every combination."""
        cfg = self.cfg
        shortcut = cfg.objective == "shortcut" and step % 2 == 1
        if (step // 2) % 2 == 0:
            return shortcut, 1, cfg.image_batch or cfg.batch
        return shortcut, cfg.frames, cfg.batch

    def train_step(self, step: int, clips: list) -> tuple[float, float, dict]:
        shortcut, frames, _ = self.task(step)
        total, info = 0.0, {}
        for micro, (hr, lr) in enumerate(clips):
            gen, _ = step_generator(self.cfg.seed, step, self.acc.process_index, micro)
            dev = self.acc.device
            x0, cond = latents.encode_pair(self.vae, hr.to(dev), lr.to(dev))
            with self.acc.accumulate(self.model):
                b = self.recipe.batch(self.acc.unwrap_model(self.model), x0, cond, gen)
                with self.acc.autocast():
                    if self.gains is not None:
                        loss, info = self.recipe.trajectory_loss(self.model, b, gen, self.gains)
                    else:
                        loss, info = self.recipe.loss(self.model, b, shortcut, gen)
                self.acc.backward(loss)
                grad_norm = 0.0
                if self.acc.sync_gradients and self.cfg.grad_clip > 0:
                    grad_norm = float(
                        self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
                    )
                self.optimizer.step()
                if self.acc.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(self.acc.reduce(loss.detach(), "mean")) / self.cfg.grad_accum
        info["frames"] = frames
        return total, grad_norm, info

    @torch.no_grad()
    def evaluate(self) -> dict:
        """PSNR of the sampler's output (factorized: image SR of frame 0, then video SR with it
        held) against the HR clips, and of bicubic, on fixed clips split over the processes."""
        cfg, acc = self.cfg, self.acc
        model = self.acc.unwrap_model(self.model) if acc.num_processes == 1 else self.model
        sums = torch.zeros(len(cfg.eval_steps) + 1, dtype=torch.float64)
        for k in range(acc.process_index, cfg.eval_clips, acc.num_processes):
            gen, seed = step_generator(cfg.seed ^ 0xE7A1, k)
            hr, lr = self.clips(1, cfg.frames, seed)
            x0, cond = latents.encode_pair(self.vae, hr, lr)
            up = latents.bicubic_up(lr, *hr.shape[-2:]).clamp(0, 1)
            sums[0] += psnr(up, hr)
            for j, steps in enumerate(cfg.eval_steps):
                g = torch.Generator().manual_seed(seed + steps)
                z = self.factorized_sample(model, x0, cond, steps, g)
                sums[j + 1] += psnr(latents.decode(self.vae, z, 0.05), hr)
        sums = acc.reduce(sums.to(acc.device), "sum").cpu() / cfg.eval_clips
        out = {"bicubic_psnr": float(sums[0])}
        out.update(
            {f"psnr_{s}step": float(v) for s, v in zip(cfg.eval_steps, sums[1:], strict=True)}
        )
        return out

    def factorized_sample(self, model, x0, cond, steps, gen) -> torch.Tensor:
        """Latent `(1, c, t, h, w)`: frame 0 by image SR, the rest by video SR holding it."""
        no_aug = Recipe(
            RecipeConfig(**{**self.recipe_cfg.__dict__, "cond_aug": 0.0, "cond_dropout": 0.0}),
            self.tc,
            self.sc,
        )
        inner = self.acc.unwrap_model(self.model)
        return factorized_sample(model, inner, no_aug, x0, cond, steps, gen)

    def export(self, out: str) -> None:
        state = self.acc.get_state_dict(self.model)  # gathered from the shards under FSDP
        if self.acc.is_main_process:
            export_run(self.cfg, self.acc.unwrap_model(self.model), self.vae, state, out)

    def fit(self) -> None:
        cfg, acc, run = self.cfg, self.acc, self.run
        start = run.open(acc, self.settings, cfg.to_json())
        if start:
            acc.load_state(run.checkpoint)
            if acc.is_main_process:
                run.cut_log(start)
        say = acc.print
        say(
            f"denoiser: {self.n_params:,} parameters ({self.n_trained:,} trained), "
            f"{acc.num_processes} process(es) on {acc.device}, mixed precision "
            f"{acc.mixed_precision}; steps {start}..{cfg.steps}"
        )
        bar = None
        if cfg.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True)
        t0 = time.monotonic()
        loader = self.loader(start)
        for step, clips in zip(range(start, cfg.steps), loader, strict=False):
            loss, gnorm, info = self.train_step(step, clips)
            if not math.isfinite(loss):
                raise SystemExit(f"step {step + 1}: the loss is {loss} ({info})")
            lr_now = self.scheduler.get_last_lr()[0]
            if acc.is_main_process:
                run.log(
                    f"{step + 1},{info['objective']},{info['frames']},{loss:.6f},"
                    f"{gnorm:.4f},{lr_now:.3e},{time.monotonic() - t0:.2f}"
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", kind=info["objective"][0])
            elif (step + 1) % cfg.log_every == 0:
                rate = (time.monotonic() - t0) / (step + 1 - start)
                say(
                    f"step {step + 1}/{cfg.steps} {info['objective']} loss {loss:.4f} "
                    f"|g| {gnorm:.3f} ({rate:.2f} s/step)"
                )
            done = step + 1 == cfg.steps
            if cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or done):
                run.save(acc, step + 1, self.settings)
            if step + 1 - start == min(3, cfg.steps - start):
                t_warm, steps_warm = time.monotonic(), step + 1
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or (done and cfg.eval_clips):
                metrics = self.evaluate()
                say(
                    f"eval at step {step + 1}: "
                    + ", ".join(f"{k} {v:.2f} dB" for k, v in metrics.items())
                )
                if acc.is_main_process:
                    with open(os.path.join(cfg.out, "eval.jsonl"), "a") as f:
                        f.write(json.dumps({"step": step + 1, **metrics}) + "\n")
        if bar is not None:
            bar.close()
        if cfg.steps - start > 3:
            rate = (time.monotonic() - t_warm) / (cfg.steps - steps_warm)
            say(f"{rate:.3f} s/step over steps {steps_warm + 1}..{cfg.steps} (after 3 to warm up)")
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated(acc.device) / 2**30
            say(f"peak device memory {peak:.2f} GiB (process 0, torch's allocator)")
        if cfg.export:
            self.export(cfg.export)
            say(f"wrote {cfg.export}")
        acc.wait_for_everyone()


class StepClips(torch.utils.data.Dataset):
    """Item `step`: one `(hr, lr)` batch per micro-batch of that step, from the clip seeds of
    (seed, step, process, micro-batch)."""

    def __init__(self, source, task, cfg: TrainConfig, rank: int) -> None:
        self.source, self.task, self.cfg, self.rank = source, task, cfg, rank

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        _, frames, batch = self.task(step)
        seeds = [
            step_generator(self.cfg.seed, step, self.rank, m)[1] for m in range(self.cfg.grad_accum)
        ]
        return [clip_batch(self.source, batch, frames, seed) for seed in seeds]


def clip_batch(source, n: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` clip pairs stacked `(n, 3, frames, H, W)`, the i-th from seed `seed + 7919 i`."""
    pairs = [source.clip(frames, seed + 7919 * i) for i in range(n)]
    return torch.stack([h for h, _ in pairs]), torch.stack([lr for _, lr in pairs])


def export_run(cfg: TrainConfig, model: TurboVSRTransformer, vae, state: dict, out: str) -> None:
    """The element's model folder from a run's weights (`state`: the trainer's state dict, keys
    under `transformer.`), with the sampler settings it was trained with in `turbovsr.json`; the
    training crop in latents is the element's denoising tile."""
    tc, sc = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    settings = TurboVSRSettings(
        scale=cfg.scale,
        cond_scale=cfg.cond_scale,
        step_sizes=list(cfg.step_sizes) if model.shortcut else None,
        tile=[1 + (cfg.frames - 1) // tc, cfg.crop // sc, cfg.crop // sc],
        # Without blocks no token sees another: overlapping tiles would compute each token
        # several times for the same value (up to the cross normalization's tile statistics).
        tile_overlap=0 if not model.transformer.transformer_blocks else None,
        shift=cfg.shift_value(),
    )
    prefix = "transformer."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    dtype = getattr(torch, cfg.export_dtype)
    export_checkpoint(out, model, vae, settings, weights=weights, dtype=dtype)


@torch.no_grad()
def factorized_sample(model, inner, recipe: Recipe, x0, cond, steps: int, gen) -> torch.Tensor:
    """The element's factorized sampling of a window (DESIGN §4): frame 0 by image SR, the rest
    by video SR holding it. `model` runs the steps (wrapped or not), `inner` is the unwrapped
    `TurboVSRTransformer`; `recipe` should draw no condition noise. Returns the latent
    `(b, c, t, h, w)`."""
    first = recipe.batch(inner, x0[:, :, :1], cond[:, :, :1], gen)
    z0 = sample(model, recipe, first, steps, gen)
    if x0.shape[2] == 1:
        tokens, grid = z0, first.grid
    else:
        video = recipe.batch(inner, x0, cond, gen)
        tokens = sample(model, recipe, video, steps, gen, held=z0)
        grid = video.grid
    return unpack(tokens, grid, inner.transformer.config)


def unpack(tokens: torch.Tensor, grid: tuple[int, int, int], tcfg) -> torch.Tensor:
    return latents.unpack(tokens, grid, tcfg.patch_size, tcfg.patch_size_t)


def main(argv: list[str] | None = None) -> None:
    cfg = TrainConfig.parse(argv)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    Trainer(cfg, accelerator).fit()


if __name__ == "__main__":
    main()
