"""A fixed evaluation set on disk, in the folder format `turbovsr eval` reads (`src/eval/set.rs`):

    OUT/manifest.json          {"scale", "frames", "clips": [{"name", "source", "seed"}], ...}
    OUT/clip_XXX/hr_YYY.png    ground truth, RGB8
    OUT/clip_XXX/lr_YYY.png    degraded input, (HR size) / scale, RGB8

Each clip is `make_clip(image, spec, seed)` with the manifest's source and seed, so it can be
rebuilt. Usage:

    python -m turbovsr_train.data.evalset --root data/wallpapers --split heldout --out OUT \\
        --frames 9 --height 256 --width 256 --scale 4 --clips-per-image 2 --seed 0 \\
        --preset realesrgan
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .clips import ClipSpec, make_clip
from .degrade import PRESETS, DegradeConfig, to_uint8
from .images import DEFAULT_MAX_SHORT_SIDE, SPLITS, ImageFolder


def _save_png(frame: torch.Tensor, path: Path) -> None:
    try:
        Image.fromarray(to_uint8(frame), "RGB").save(path, format="PNG")
    except OSError as e:
        raise OSError(f"writing {path}: {e}") from e


def write_eval_set(
    folder: ImageFolder,
    out: str | Path,
    spec: ClipSpec,
    clips_per_image: int,
    seed: int,
    extra: dict | None = None,
) -> dict:
    """Write `clips_per_image` clips of every image of `folder` to `out`; returns the manifest.
    The manifest is written last, so an interrupted run leaves a folder that may be rewritten."""
    out = Path(out)
    if clips_per_image < 1:
        raise ValueError("clips-per-image must be at least 1")
    if (out / "manifest.json").exists():
        raise FileExistsError(
            f"{out} already holds an eval set (manifest.json); choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.Generator(np.random.PCG64(seed))
    clips = []
    for i, source in enumerate(folder.paths):
        for _ in range(clips_per_image):
            clip_seed = int(seeds.integers(0, 2**64, dtype=np.uint64))
            name = f"clip_{len(clips):03d}"
            try:
                clip = make_clip(folder[i], spec, clip_seed)
            except ValueError as e:
                raise ValueError(f"making {name} from {folder.file(source)}: {e}") from e
            clip_dir = out / name
            clip_dir.mkdir(exist_ok=True)
            for k in range(spec.frames):
                _save_png(clip.hr[:, k], clip_dir / f"hr_{k:03d}.png")
                _save_png(clip.lr[:, k], clip_dir / f"lr_{k:03d}.png")
            clips.append({"name": name, "source": source, "seed": clip_seed})
    manifest = {
        "scale": spec.scale,
        "frames": spec.frames,
        "height": spec.hr_height,
        "width": spec.hr_width,
        **(extra or {}),
        "seed": seed,
        "max_short_side": folder.max_short_side,
        "clips": clips,
        "degradation": dataclasses.asdict(spec.degrade),
        "motion": dataclasses.asdict(spec.motion),
        "generator": "turbovsr_train.data.evalset",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m turbovsr_train.data.evalset",
        description="Write a fixed evaluation set (HR and degraded LR PNG clips plus "
        "manifest.json) in the folder format `turbovsr eval` reads.",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("data/wallpapers"),
        help="data root holding train.txt / heldout.txt",
    )
    p.add_argument("--split", choices=SPLITS, default="heldout")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (created; must not already hold a manifest.json)",
    )
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--height", type=int, default=256, help="HR height (a multiple of the scale)")
    p.add_argument("--width", type=int, default=256, help="HR width (a multiple of the scale)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--clips-per-image", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=PRESETS, default="realesrgan", help="degradation preset")
    p.add_argument(
        "--max-short-side",
        type=int,
        default=DEFAULT_MAX_SHORT_SIDE,
        help="short-side cap applied to the photos when loading them",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        spec = ClipSpec(
            args.frames, args.height, args.width, args.scale, DegradeConfig.preset(args.preset)
        )
        if (args.out / "manifest.json").exists():
            raise FileExistsError(
                f"{args.out} already holds an eval set (manifest.json); choose another --out"
            )
        folder = ImageFolder(args.root, args.split, max_short_side=args.max_short_side)
        extra = {"split": args.split, "root": str(args.root)}
        manifest = write_eval_set(folder, args.out, spec, args.clips_per_image, args.seed, extra)
    except (OSError, ValueError) as e:
        print(f"evalset: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {len(manifest['clips'])} clips of {spec.frames} frames "
        f"({spec.hr_width}x{spec.hr_height} HR, x{spec.scale}) from {len(folder)} {args.split} "
        f"images to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
