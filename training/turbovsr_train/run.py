"""What every trainer's run shares (the denoiser's `train.py`, the VAE's `vae_train.py`): the run
folder that resumes to the same bits as an uninterrupted run, the seeding of every draw by
(seed, step, process, ...), the clip source of the data settings, and PSNR."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from accelerate import Accelerator

from .data import ClipSource, FolderSource, ImageFolder, MixedSource, SyntheticSource


class DataSettings(Protocol):
    """The data fields of a run's config (`TrainConfig`, `VaeTrainConfig`)."""

    data: str
    degrade: str
    crop: int


def step_generator(seed: int, *key: int) -> tuple[torch.Generator, int]:
    """A generator and a clip seed for one (step, process, micro-batch, ...) of a run."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) >> 1), int(state[1]) >> 1


def make_source(cfg: DataSettings, scale: int, split: str = "train") -> ClipSource:
    """The clips of the run's data (`split`: the image folder's `train` or `heldout` list)."""
    if cfg.data == "synthetic":
        return SyntheticSource(cfg.crop, cfg.crop, scale)
    images = ImageFolder(cfg.data, split)  # one image cache for every part of a mix
    parts = [p.split(":") for p in cfg.degrade.split(",")]
    if len(parts) == 1 and len(parts[0]) == 1:
        return FolderSource(images, cfg.crop, parts[0][0], scale)
    if any(len(p) != 2 for p in parts):
        raise SystemExit(f"--degrade {cfg.degrade!r}: expected a preset or 'name:weight,...'")
    return MixedSource(
        [(FolderSource(images, cfg.crop, name, scale), float(w)) for name, w in parts]
    )


class RunDir:
    """`out/`: `settings.json`, `checkpoint/` (accelerate's state plus `state.json`, swapped in
    atomically), `log.csv` (cut back to the checkpoint's step on resume)."""

    def __init__(self, root: str, header: str) -> None:
        self.root = root
        self.header = header  # log.csv's first line
        self.checkpoint = os.path.join(root, "checkpoint")
        self.log_path = os.path.join(root, "log.csv")

    def open(self, accelerator: Accelerator, settings: dict, settings_json: str) -> int:
        """Starts or resumes the run on every process: the step to continue from (0: fresh).
        A run started with other settings is refused before anything in the folder changes."""
        if accelerator.is_main_process:
            os.makedirs(self.root, exist_ok=True)
            old = os.path.join(self.root, "checkpoint.old")
            if not os.path.isdir(self.checkpoint) and os.path.isdir(old):
                os.replace(old, self.checkpoint)  # a crash between the two renames of `save`
        accelerator.wait_for_everyone()
        start = self.last_step(settings, accelerator.num_processes)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(self.root, "settings.json"), "w") as f:
                f.write(settings_json + "\n")
        return start

    def last_step(self, settings: dict, world_size: int) -> int:
        """The checkpoint's step (0 without one); its settings must be these."""
        path = os.path.join(self.checkpoint, "state.json")
        if not os.path.isfile(path):
            return 0
        with open(path) as f:
            state = json.load(f)
        if state["settings"] != settings:
            changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
            raise SystemExit(
                f"{self.root} was started with other settings ({', '.join(changed)} differ): "
                "use another --out folder, or the same settings"
            )
        if state.get("world_size") != world_size:
            print(
                f"warning: {self.root} was trained with {state.get('world_size')} processes, "
                f"now {world_size}: the data each step sees differs from an uninterrupted run",
                file=sys.stderr,
            )
        return int(state["step"])

    def save(self, accelerator: Accelerator, step: int, settings: dict) -> None:
        tmp = os.path.join(self.root, "checkpoint.tmp")
        if accelerator.is_main_process and os.path.isdir(tmp):
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(tmp, safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(
                    {"step": step, "settings": settings, "world_size": accelerator.num_processes},
                    f,
                    indent=2,
                )
            old = os.path.join(self.root, "checkpoint.old")
            if os.path.isdir(self.checkpoint):
                os.replace(self.checkpoint, old)
            os.replace(tmp, self.checkpoint)
            shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def log(self, line: str) -> None:
        new = not os.path.isfile(self.log_path)
        with open(self.log_path, "a") as f:
            if new:
                f.write(self.header + "\n")
            f.write(line + "\n")

    def cut_log(self, step: int) -> None:
        """Drops the log lines of steps after `step` (lost with the interruption)."""
        if not os.path.isfile(self.log_path):
            return
        with open(self.log_path) as f:
            lines = f.read().splitlines()
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]
        with open(self.log_path, "w") as f:
            f.write("\n".join(kept) + "\n")


class StepSettings(Protocol):
    """The run fields of a config that `run_steps` reads (`VaeTrainConfig`,
    `DecoderTrainConfig`)."""

    steps: int
    progress: bool
    log_every: int
    checkpoint_every: int
    eval_every: int


def run_steps(
    acc: Accelerator,
    run: RunDir,
    cfg: StepSettings,
    settings: dict,
    start: int,
    train_step: Callable[[int], tuple[float, float, int]],
    scheduler,
    evaluate: Callable[[int], None],
) -> None:
    """Steps `start`..`cfg.steps` of a run whose steps return (loss, gradient norm, frames):
    a `log.csv` line per step (`step,frames,loss,grad_norm,lr,seconds`), a progress bar or a
    line every `log_every` steps, a checkpoint every `checkpoint_every` steps and at the end,
    and `evaluate(step)` every `eval_every` steps before the last (the caller evaluates the
    end). A loss that is not finite stops the run."""
    bar = None
    if cfg.progress and acc.is_main_process and start < cfg.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True)
    t0 = time.monotonic()
    for step in range(start, cfg.steps):
        loss, gnorm, frames = train_step(step)
        if not math.isfinite(loss):
            raise SystemExit(f"step {step + 1}: the loss is {loss}")
        lr_now = scheduler.get_last_lr()[0]
        if acc.is_main_process:
            run.log(
                f"{step + 1},{frames},{loss:.6f},{gnorm:.4f},{lr_now:.3e},"
                f"{time.monotonic() - t0:.2f}"
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", frames=frames)
        elif (step + 1) % cfg.log_every == 0:
            rate = (time.monotonic() - t0) / (step + 1 - start)
            acc.print(
                f"step {step + 1}/{cfg.steps} frames {frames} loss {loss:.4f} "
                f"|g| {gnorm:.3f} ({rate:.2f} s/step)"
            )
        done = step + 1 == cfg.steps
        if (step + 1) % cfg.checkpoint_every == 0 or done:
            run.save(acc, step + 1, settings)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and not done:
            evaluate(step + 1)
    if bar is not None:
        bar.close()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = float(((x.float() - y.float()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))
