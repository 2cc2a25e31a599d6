"""A training run's settings, written once: dataclass fields with their defaults and help, the
command line generated from them (`python -m turbovsr_train.train --help`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field

from .schedule import LTX_SHIFT, default_step_sizes

#: Fields that may change when a run resumes (everything else must match its checkpoint), in
#: both trainers' settings.
RUN_ONLY = (
    "workers",
    "out",
    "steps",
    "export",
    "export_dtype",
    "log_every",
    "checkpoint_every",
    "eval_every",
    "eval_clips",
    "eval_steps",
    "progress",
)


def _f(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--option` per field of the dataclass `cls` (`_f`'s help, type and choices)."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        name = "--" + f.name.replace("_", "-")
        if "action" in meta:
            parser.add_argument(name, default=default, **meta)
        elif f.type in ("bool", bool):
            parser.add_argument(name, action="store_true", default=default, help=meta["help"])
        else:
            kind = meta.pop("type", None) or type(default)
            parser.add_argument(name, type=kind, default=default, **meta)


@dataclass
class DataConfig:
    """Where a trainer's clips come from (`run.make_source`)."""

    data: str = _f(
        "synthetic",
        "'synthetic' (procedural clips) or an image folder with "
        "train.txt (scripts/data/fetch-wallpapers.sh)",
    )
    degrade: str = _f(
        "realesrgan",
        "LR degradation: a preset (clean, mild, realesrgan) or a "
        "mix like 'clean:0.4,mild:0.3,realesrgan:0.3'",
    )


@dataclass
class TrainConfig(DataConfig):
    out: str = _f("", "run folder: checkpoint/, log.csv, settings.json; an existing run resumes")
    steps: int = _f(1000, "total optimizer steps (a resumed run continues up to this count)")
    seed: int = _f(0, "seed of the initial weights, the data and every draw of the recipe")
    # model
    vae: str = _f(
        "",
        "frozen VAE: a diffusers AutoencoderKLLTXVideo folder, a TurboVSR model "
        "folder (its vae/) or an LTX single-file checkpoint",
    )
    transformer: str = _f(
        "",
        "fresh transformer: a diffusers LTXVideoTransformer3DModel "
        "config.json (presets in training/configs/model/)",
    )
    pretrained: str = _f(
        "",
        "start from weights instead: an LTX transformer folder or single "
        "file (Lightricks' checkpoints; the head is added), or a TurboVSR "
        "model folder",
    )
    init: str = _f(
        "zero",
        "fresh transformer's initial weights: 'zero' (every block's output projection and "
        "proj_out at zero: the blocks start as the identity), 'diffusers' (its default init), "
        "'condition' (zero blocks, and every schedule returns the condition latent: the model "
        "starts as the bicubic baseline) or 'regression' (the condition start with the "
        "condition's per-token affine map fitted by least squares on training batches)",
        choices=("zero", "diffusers", "condition", "regression"),
    )
    cond_scale: float = _f(2**-0.5, "cross normalization's cond_scale (DESIGN §3.2)")
    freeze_ffn: bool = _f(False, "freeze the blocks' feed-forward layers (supplementary §6)")
    gradient_checkpointing: bool = _f(False, "recompute the blocks in backward (less memory)")
    # data
    crop: int = _f(64, "HR crop in pixels (a multiple of the VAE's spatial compression x patch)")
    scale: int = _f(4, "upscaling factor: LR = HR / scale")
    frames: int = _f(9, "frames of a video-SR clip (1 + k x the VAE's temporal compression)")
    batch: int = _f(4, "clips per process per video-SR batch")
    image_batch: int = _f(0, "images per process per image-SR batch (0: --batch)")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    workers: int = _f(
        -1, "data worker processes making the next steps' clips (-1: 0 on a CPU, 4 on a GPU)"
    )
    # optimizer
    lr: float = _f(5e-4, "AdamW learning rate after warm-up")
    warmup: int = _f(100, "steps of linear learning-rate warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_clip: float = _f(1.0, "clip the gradient's global norm to this (0: off)")
    # recipe
    objective: str = _f(
        "shortcut",
        "shortcut (flow matching + shortcut, alternating), flow, or trajectory (fine-tuning "
        "on the sampler's own path: the clean-latent prediction at a step of an n-step "
        "schedule, weighted by the decoder's pixel gains)",
        choices=("shortcut", "flow", "trajectory"),
    )
    trajectory_steps: list = _f(
        [1, 2, 4], "step counts the trajectory objective trains", type=int, nargs="+"
    )
    train_only: list = _f(
        [],
        "train only the transformer weights whose names start with one of these prefixes "
        "(e.g. transformer_blocks.); the rest stay as they start",
        type=str,
        nargs="*",
    )
    step_sizes: list = _f(
        default_step_sizes(),
        "trained step sizes (nearest-neighbour selection, paper §3.4)",
        type=float,
        nargs="+",
    )
    shift: str = _f(
        "2.0", "schedule shift: a fixed factor, or 'ltx' for LTX's token-count-dependent shift"
    )
    max_bootstrap_steps: int = _f(64, "largest step count the shortcut loss bootstraps")
    cond_aug: float = _f(
        0.5,
        "probability of DDPM noise on the condition latent (0 with --init condition or "
        "regression: those starts pass the condition through, and the model is not told its "
        "noise level; at 0.5 fine-tuning the blocks lost 7 dB in 200 steps)",
    )
    cond_aug_max_t: int = _f(300, "largest DDPM step of that noise (supplementary §6: 300)")
    cond_dropout: float = _f(
        0.0, "probability of dropping the condition (unconditional generation, supplementary §6)"
    )
    min_level: float = _f(0.0, "smallest noise level of flow-matching batches")
    # run
    log_every: int = _f(10, "steps between progress lines")
    checkpoint_every: int = _f(
        100, "steps between checkpoints (and at the end); 0: none (benchmarks)"
    )
    eval_every: int = _f(0, "steps between evaluations (0: only at the end)")
    eval_clips: int = _f(8, "clips of each evaluation")
    eval_steps: list = _f([1, 4], "sampler step counts evaluated", type=int, nargs="+")
    export: str = _f("", "write the element's model folder here at the end")
    export_dtype: str = _f(
        "float16", "exported weights' dtype", choices=("float16", "bfloat16", "float32")
    )
    progress: bool = _f(
        True, "progress bar on the main process", action=argparse.BooleanOptionalAction
    )

    def shift_value(self) -> float | dict:
        return dict(LTX_SHIFT) if self.shift == "ltx" else float(self.shift)

    def settings(self) -> dict:
        """What a resumed run must share with its checkpoint."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in RUN_ONLY}

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> TrainConfig:
        parser = argparse.ArgumentParser(
            prog="python -m turbovsr_train.train",
            description="Train TurboVSR's denoiser (run it with `accelerate launch`).",
        )
        add_fields(parser, cls)
        args = parser.parse_args(argv)
        cfg = cls(**vars(args))
        # absolute, so that a run resumes and exports from any working directory
        for name in ("vae", "transformer", "pretrained", "data"):
            value = getattr(cfg, name)
            if value and (name != "data" or value != "synthetic"):
                setattr(cfg, name, os.path.abspath(value))
        if not cfg.out:
            parser.error("--out is required")
        if not cfg.vae:
            parser.error("--vae is required (the frozen VAE the denoiser works in)")
        if bool(cfg.transformer) == bool(cfg.pretrained):
            parser.error("give exactly one of --transformer CONFIG.json and --pretrained PATH")
        if cfg.init in ("condition", "regression"):
            if cfg.pretrained:
                parser.error(f"--init {cfg.init} starts a fresh transformer (not --pretrained)")
            if cfg.shift == "ltx":
                parser.error(f"--init {cfg.init} needs a fixed --shift factor")
            if cfg.cond_aug > 0 and cfg.steps > 0:
                print(
                    f"warning: --cond-aug {cfg.cond_aug} with --init {cfg.init}: condition "
                    "noise undoes the start (use --cond-aug 0)",
                    file=sys.stderr,
                )
        return cfg

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
