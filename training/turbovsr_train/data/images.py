"""Training photos on disk: a split list of `scripts/data/fetch-wallpapers.sh`, or any folder.

`root/train.txt` and `root/heldout.txt` list image paths relative to `root`, one per line. Images
are decoded lazily (a training run touches thousands of them, each worker process only some) and
kept in a small LRU cache as RGB8, area-downscaled so that the short side is at most
`max_short_side`: the wallpapers are 1080p-5K while training crops are small, and downscaling
first also averages away the camera noise and JPEG blocks that would otherwise be part of the
"ground truth".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The short-side cap images are loaded with (the Rust `DEFAULT_MAX_SHORT_SIDE`).
DEFAULT_MAX_SHORT_SIDE = 720
#: How many decoded images an `ImageFolder` keeps (720p RGB8 is ~2.8 MB each).
DEFAULT_CACHE_SIZE = 32
SPLITS = ("train", "heldout")
#: What `ImageFolder.from_dir` picks up.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def split_file(root: Path, split: str) -> Path:
    """`root/train.txt` or `root/heldout.txt`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (train or heldout)")
    return root / f"{split}.txt"


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"split list {path} does not exist (run scripts/data/fetch-wallpapers.sh first)"
        ) from None
    entries = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = PurePosixPath(line)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{path}:{n}: {line!r} must be a path relative to the data root")
        entries.append(line)
    return entries


def read_split(root: str | Path, split: str) -> list[str]:
    """The entries of `root/<split>.txt`, checked against the other split: an image listed in
    both is an error, since held-out images must never be trained on."""
    root = Path(root)
    path = split_file(root, split)
    entries = _read_list(path)
    other = split_file(root, SPLITS[1 - SPLITS.index(split)])
    if other.exists():
        shared = set(_read_list(other))
        for entry in entries:
            if entry in shared:
                raise ValueError(
                    f"{entry} is listed in both {path.name} and {other.name}: the training "
                    "and held-out sets must not share files"
                )
    if not entries:
        raise ValueError(f"{path} lists no images")
    return entries


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency premultiplied (composited over black, as a desktop shows a
    transparent wallpaper over its dark background: the hidden colours are arbitrary)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    return img.convert("RGB")


def cap_short_side(img: Image.Image, max_short_side: int) -> Image.Image:
    """Area-downscale (Pillow's box filter: each output pixel the mean of the input it covers)
    so that the short side is at most `max_short_side`; 0 disables the cap."""
    w, h = img.size
    short = min(w, h)
    if max_short_side <= 0 or short <= max_short_side:
        return img
    f = max_short_side / short
    if w <= h:
        size = (max_short_side, max(1, round(h * f)))
    else:
        size = (max(1, round(w * f)), max_short_side)
    return img.resize(size, Image.Resampling.BOX)


def load_image(path: str | Path, max_short_side: int = DEFAULT_MAX_SHORT_SIDE) -> np.ndarray:
    """Decode one file to `uint8 [H, W, 3]` with its short side capped; EXIF orientation is
    applied so that users' own phone photos come out upright."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            rgb = cap_short_side(_to_rgb(img), max_short_side)
            return np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise OSError(f"cannot decode image {path}: {e}") from e


class ImageFolder(Sequence[np.ndarray]):
    """A list of images under `root`, decoded on first use and cached. `folder[i]` is
    `uint8 [H, W, 3]`; `folder.paths[i]` its path relative to `root`, as the split list says."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        max_short_side: int = DEFAULT_MAX_SHORT_SIDE,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.root = Path(root)
        self.split: str | None = split
        self._init(read_split(self.root, split), max_short_side, cache_size)

    def _init(self, paths: Iterable[str | Path], max_short_side: int, cache_size: int) -> None:
        self.paths = [str(p) for p in paths]
        self.max_short_side = max_short_side
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # a missing file is found now rather than hours into a run
        for p in self.paths:
            if not self.file(p).is_file():
                raise FileNotFoundError(f"image {self.file(p)} does not exist (listed for {self})")

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | Path],
        root: str | Path = ".",
        max_short_side: int = DEFAULT_MAX_SHORT_SIDE,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> ImageFolder:
        """Images given explicitly (relative to `root`, or absolute)."""
        folder = cls.__new__(cls)
        folder.root = Path(root)
        folder.split = None
        folder._init(paths, max_short_side, cache_size)
        if not folder.paths:
            raise ValueError("an image folder needs at least one image")
        return folder

    @classmethod
    def from_dir(
        cls,
        folder: str | Path,
        max_short_side: int = DEFAULT_MAX_SHORT_SIDE,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> ImageFolder:
        """Every image file under `folder` (recursively, sorted), for users' own photos."""
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        found = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not found:
            raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return cls.from_paths(found, root, max_short_side, cache_size)

    def file(self, path: str) -> Path:
        return self.root / path

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of a folder of {len(self)}")
        i %= len(self)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = load_image(self.file(self.paths[i]), self.max_short_side)
        if self.cache_size > 0:
            self._cache[i] = img
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def __getstate__(self) -> dict:
        # DataLoader workers get the list, not the parent's decoded images
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        what = f"{self.split} split" if self.split else "images"
        return f"ImageFolder({self.root}, {what}, {len(self.paths)} images)"
