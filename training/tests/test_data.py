"""The training data (turbovsr_train.data) on tiny sizes, on the CPU."""

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from turbovsr_train.data import (
    PRESETS,
    ClipSource,
    ClipSpec,
    DegradeConfig,
    DegradeParams,
    FolderSource,
    ImageFolder,
    MixedSource,
    MotionConfig,
    SyntheticSource,
    degrade_frame,
    evalset,
    make_clip,
    read_split,
)
from turbovsr_train.data import degrade as dg
from turbovsr_train.data.motion import CameraPath, place, sample_motion, warp

TRAINING = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def texture(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    """A smooth, detailed uint8 RGB image."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    f = np.sin(x * 0.21 + phase) + np.cos(y * 0.13) + np.sin((x + 2 * y) * 0.05)
    v = (f + 3) / 6 * 255
    return np.stack([v, (x * 3) % 256, 255 - v], -1).astype(np.uint8)


def is_8bit(t: torch.Tensor) -> bool:
    return bool(torch.equal(t * 255, (t * 255).round()))


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return texture(110, 130)


@pytest.fixture()
def root(tmp_path):
    """A data root with two training and two held-out PNGs."""
    for i, name in enumerate(["a.png", "b.png", "sub/c.png", "d.jpg"]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(80 + 8 * i, 96, phase=i)).save(tmp_path / name)
    (tmp_path / "train.txt").write_text("a.png\n# a comment\n\nb.png\n")
    (tmp_path / "heldout.txt").write_text("sub/c.png\nd.jpg\n")
    return tmp_path


# --- clips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_gives_shaped_8bit_clips(image, preset):
    spec = ClipSpec(3, 32, 48, 4, DegradeConfig.preset(preset))
    for seed in range(3):
        clip = make_clip(image, spec, seed)
        assert clip.hr.shape == (3, 3, 32, 48) and clip.lr.shape == (3, 3, 8, 12)
        assert clip.hr.dtype == clip.lr.dtype == torch.float32
        for t in (clip.hr, clip.lr):
            assert float(t.min()) >= 0 and float(t.max()) <= 1 and is_8bit(t)


def test_clips_are_deterministic_from_the_seed(image):
    spec = ClipSpec(3, 32, 32, 4)
    a, b, c = (make_clip(image, spec, s) for s in (42, 42, 43))
    assert torch.equal(a.hr, b.hr) and torch.equal(a.lr, b.lr)
    assert not torch.equal(a.hr, c.hr) and not torch.equal(a.lr, c.lr)
    # the thread count (DataLoader workers run on one) does not change a bit
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        d = make_clip(image, spec, 42)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.hr, d.hr) and torch.equal(a.lr, d.lr)


def _digest(hr: torch.Tensor, lr: torch.Tensor) -> str:
    return hashlib.sha256(hr.numpy().tobytes() + lr.numpy().tobytes()).hexdigest()


def test_clips_are_identical_in_another_process(image, tmp_path):
    np.save(tmp_path / "image.npy", image)
    code = (
        "import sys, numpy as np, hashlib; from turbovsr_train.data import make_clip, ClipSpec; "
        "c = make_clip(np.load(sys.argv[1]), ClipSpec(2, 32, 32, 4), 7); "
        "print(hashlib.sha256(c.hr.numpy().tobytes() + c.lr.numpy().tobytes()).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "image.npy")],
        cwd=TRAINING,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    c = make_clip(image, ClipSpec(2, 32, 32, 4), 7)
    assert out.stdout.strip() == _digest(c.hr, c.lr)


def noiseless(cfg: DegradeConfig) -> DegradeConfig:
    """`cfg` with zero-sigma Gaussian noise in every stage."""

    def quiet(stage):
        return stage and dataclasses.replace(stage, gaussian_noise_prob=1.0, noise_range=(0, 0))

    return dataclasses.replace(cfg, first=quiet(cfg.first), second=quiet(cfg.second))


def test_parameters_are_per_clip_and_noise_per_frame(image):
    spec = ClipSpec(4, 32, 32, 4, DegradeConfig.mild(), MotionConfig.still())
    for seed in range(3):
        clip = make_clip(image, spec, seed)
        for k in range(1, 4):
            assert torch.equal(clip.hr[:, k], clip.hr[:, 0])
            # the same parameters: the frames differ only by their fresh noise
            assert not torch.equal(clip.lr[:, k], clip.lr[:, 0])
            assert mad(clip.lr[:, k], clip.lr[:, 0]) < 0.1
        # without noise, the frames of a still clip are bit-identical, even second-order ones
        quiet = make_clip(
            image, dataclasses.replace(spec, degrade=noiseless(DegradeConfig.realesrgan())), seed
        )
        for k in range(1, 4):
            assert torch.equal(quiet.lr[:, k], quiet.lr[:, 0])


def test_degrade_params_are_drawn_once_and_frames_take_only_noise_from_the_rng(image):
    cfg = DegradeConfig.realesrgan()
    p = DegradeParams.sample(cfg, np.random.default_rng(5))
    q = DegradeParams.sample(cfg, np.random.default_rng(5))
    assert p.resize_first == q.resize_first and p.final_jpeg == q.final_jpeg
    assert torch.equal(p.first.kernel, q.first.kernel)
    hr = dg.from_uint8(image[:32, :32])
    a = degrade_frame(hr, p, (8, 8), np.random.default_rng(1))
    b = degrade_frame(hr, p, (8, 8), np.random.default_rng(1))
    c = degrade_frame(hr, p, (8, 8), np.random.default_rng(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clean_is_a_plain_antialiased_bicubic_downscale(image):
    clip = make_clip(image, ClipSpec(2, 32, 48, 4, DegradeConfig.clean()), 3)
    # (3, F, H, W) -> (F, 3, H, W)
    want = F.interpolate(
        clip.hr.transpose(0, 1), size=(8, 12), mode="bicubic", align_corners=False, antialias=True
    )
    assert torch.equal(clip.lr, dg.quantize(want).transpose(0, 1))


def test_jpeg_quality_changes_the_output(image):
    clean = make_clip(image, ClipSpec(1, 64, 64, 2, DegradeConfig.clean()), 1).lr
    errors = []
    for q in (20, 95):
        cfg = dataclasses.replace(DegradeConfig.clean(), final_jpeg_range=(q, q))
        lr = make_clip(image, ClipSpec(1, 64, 64, 2, cfg), 1).lr
        assert not torch.equal(lr, clean)
        errors.append(mad(lr, clean))
    assert errors[0] > errors[1]
    # the codec keeps the mean and the size
    x = dg.from_uint8(image[:40, :56])
    y = dg.jpeg(x, 30)
    assert y.shape == x.shape and abs(float(y.mean() - x.mean())) < 0.01


# --- degradation pieces -----------------------------------------------------------------------


def test_kernels_sum_to_one_with_their_symmetries():
    for size in (7, 13, 21):
        for kind in ("iso", "generalized_iso", "plateau_iso"):
            k = dg.family_kernel(size, kind, 1.7, 1.7, 0.0, 1.5)
            assert abs(float(k.sum()) - 1) < 1e-5
            assert torch.allclose(k, k.T, atol=1e-7) and torch.allclose(k, k.flip(1), atol=1e-7)
        for kind in ("aniso", "generalized_aniso", "plateau_aniso"):
            k = dg.family_kernel(size, kind, 0.6, 2.8, 0.7, 0.8)
            assert abs(float(k.sum()) - 1) < 1e-5
            assert torch.allclose(k, k.flip(0, 1), atol=1e-7)
            assert float((k - k.T).abs().max()) > 1e-3
        s = dg.sinc_kernel(size, math.pi / 2)
        assert abs(float(s.sum()) - 1) < 1e-5 and bool((s < 0).any())  # a low cutoff rings
    rng = np.random.default_rng(3)
    for _ in range(100):
        k = dg.sample_blur(rng, DegradeConfig.realesrgan().first.blur)
        assert k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert torch.isfinite(k).all() and abs(float(k.sum()) - 1) < 1e-4


def test_filter2d_is_a_reflect_padded_correlation_even_past_the_image_size():
    x = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0))
    k = torch.rand(11, 11, generator=torch.Generator().manual_seed(1))
    got = dg.filter2d(x, k)
    iy, ix = dg._reflect_index(4, 5), dg._reflect_index(6, 5)
    want = torch.zeros_like(x)
    for y in range(4):
        for xx in range(6):
            patch = x[:, iy[y : y + 11]][:, :, ix[xx : xx + 11]]
            want[:, y, xx] = (patch * k).sum(dim=(1, 2))
    assert torch.allclose(got, want, atol=1e-5)
    assert dg._reflect_index(5, 7).tolist()[:7] == [1, 2, 3, 4, 3, 2, 1]


def test_gaussian_and_poisson_noise_have_their_variance():
    rng = np.random.default_rng(11)
    flat = torch.full((3, 96, 96), 0.5)
    for gray in (False, True):
        out = dg.add_noise(flat, dg.GaussianNoise(12 / 255, gray), rng)
        assert abs(float(out.std()) - 12 / 255) < 0.1 * 12 / 255
        assert bool(torch.equal(out[0], out[1])) == gray
    # a flat image has one level: vals = 1, noise = scale * (Poisson(level) - level)
    level = 128 / 255
    out = dg.add_noise(torch.full((3, 96, 96), level), dg.PoissonNoise(0.05, True), rng)
    var = float(((out - level) ** 2).mean())
    assert abs(var - 0.05**2 * level) < 0.1 * 0.05**2 * level


# --- motion -----------------------------------------------------------------------------------


def test_motion_is_smooth_and_moves():
    cfg = MotionConfig()
    src = texture(300, 400)
    moved = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        path = sample_motion(rng, 9, cfg)
        assert np.allclose(path.a[0], np.eye(2)) and np.allclose(path.t[0], 0)
        steps = np.linalg.norm(np.diff(path.t, axis=0), axis=1)
        assert np.all(steps <= cfg.max_shift * math.sqrt(2) + 1e-6)
        # the speed changes by at most the acceleration bound per frame
        assert np.all(np.abs(np.diff(steps)) <= 2 * cfg.max_accel * cfg.max_shift + 1e-6)
        origin, path = place(rng, path, src.shape[:2], (64, 64))
        frames = warp(src, origin, path, (64, 64))
        diffs = [mad(frames[k], frames[k + 1]) for k in range(8)]
        assert max(diffs) < 0.15
        moved += min(diffs) > 0
    assert moved >= 5


def test_the_identity_frame_is_the_exact_crop():
    src = texture(70, 90)
    frame = dg.quantize(warp(src, (13, 9), CameraPath.still(1), (24, 32))[0])
    assert np.array_equal(dg.to_uint8(frame), src[9:33, 13:45])


def test_placement_keeps_every_frame_inside_or_damps_the_motion():
    cfg = MotionConfig(max_shift=40.0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        (ox, oy), used = place(rng, sample_motion(rng, 9, cfg), (70, 80), (64, 64))
        x0, y0, x1, y1 = used.bounds(64, 64)
        assert ox + x0 >= -1e-6 and oy + y0 >= -1e-6
        assert ox + x1 <= 79 + 1e-6 and oy + y1 <= 69 + 1e-6
    with pytest.raises(ValueError, match="a 64x32 crop does not fit in a 50x50 image"):
        place(np.random.default_rng(0), CameraPath.still(1), (50, 50), (32, 64))


def test_a_still_clip_is_a_crop_flipped_half_of_the_time():
    img = texture(40, 50)
    spec = ClipSpec(1, 16, 16, 4, DegradeConfig.clean(), MotionConfig.still())
    flips = 0
    for seed in range(16):
        hr = dg.to_uint8(make_clip(img, spec, seed).hr[:, 0])
        windows = np.lib.stride_tricks.sliding_window_view(img, (16, 16, 3))[:, :, 0]
        fwd = (windows == hr).all(axis=(2, 3, 4)).any()
        rev = (windows == hr[:, ::-1]).all(axis=(2, 3, 4)).any()
        assert fwd or rev
        flips += bool(rev and not fwd)
    assert 3 <= flips <= 13


# --- sources ----------------------------------------------------------------------------------


class Tagged:
    """A source that answers with its tag."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    scale = 4
    size = (8, 8)

    def clip(self, frames, seed):
        return torch.full((3, frames, 8, 8), float(self.tag)), torch.zeros(3, frames, 2, 2)


def test_mixed_source_follows_its_weights():
    mix = MixedSource([(Tagged(0), 0.4), (Tagged(1), 0.3), (Tagged(2), 0.3)])
    assert isinstance(mix, ClipSource)
    counts = np.bincount([mix.choose(s) for s in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.4, 0.3, 0.3], atol=0.03), counts
    assert float(mix.clip(1, 17)[0][0, 0, 0, 0]) == mix.choose(17)
    with pytest.raises(ValueError, match="share scale and size"):
        MixedSource([(Tagged(0), 1), (SyntheticSource(16, 16, 4), 1)])
    with pytest.raises(ValueError, match="weights"):
        MixedSource([(Tagged(0), -1)])


def test_folder_sources_mix_presets_in_one_line(root):
    folder = ImageFolder(root, "train")
    mix = MixedSource(
        [
            (FolderSource(folder, 32, p), w)
            for p, w in [("clean", 0.4), ("mild", 0.3), ("realesrgan", 0.3)]
        ]
    )
    assert (mix.scale, mix.size) == (4, (32, 32))
    hr, lr = mix.clip(2, 5)
    assert hr.shape == (3, 2, 32, 32) and lr.shape == (3, 2, 8, 8)
    again = mix.clip(2, 5)
    assert torch.equal(hr, again[0]) and torch.equal(lr, again[1])
    src = FolderSource(root, (32, 48), DegradeConfig.mild())
    assert isinstance(src, ClipSource) and src.size == (32, 48)
    assert {src.make(1, s).source for s in range(12)} == {"a.png", "b.png"}


def test_synthetic_source_needs_no_files():
    src = SyntheticSource(16, 24, 4)
    assert isinstance(src, ClipSource) and (src.scale, src.size) == (4, (16, 24))
    hr, lr = src.clip(3, 1)
    assert hr.shape == (3, 3, 16, 24) and lr.shape == (3, 3, 4, 6)
    assert is_8bit(hr) and is_8bit(lr)
    box = hr.reshape(3, 3, 4, 4, 6, 4).mean(dim=(3, 5))
    assert float((lr - box).abs().max()) <= 0.5 / 255 + 1e-6
    assert torch.equal(hr, src.clip(3, 1)[0]) and not torch.equal(hr, src.clip(3, 2)[0])
    assert 0 < mad(hr[:, 0], hr[:, 1]) < 0.05  # a sub-pixel drift


# --- errors -----------------------------------------------------------------------------------


def test_bad_specs_and_small_images_are_named(root):
    with pytest.raises(ValueError, match="HR size 64x50 is not a multiple of the scale 4"):
        ClipSpec(2, 50, 64, 4)
    with pytest.raises(ValueError, match="must be positive"):
        ClipSpec(0, 32, 32, 4)
    with pytest.raises(ValueError, match="unknown degradation preset 'nope'"):
        DegradeConfig.preset("nope")
    src = FolderSource(root, 400, "mild")
    with pytest.raises(ValueError, match=r"a\.png|b\.png") as e:
        src.clip(2, 1)
    assert "400x400 crop does not fit" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere.train.txt"):
        ImageFolder(root / "nowhere", "train")


def test_split_lists_are_checked(root):
    assert read_split(root, "train") == ["a.png", "b.png"]
    (root / "heldout.txt").write_text("sub/c.png\nb.png\n")
    with pytest.raises(ValueError, match="b.png is listed in both"):
        read_split(root, "train")
    (root / "heldout.txt").write_text("../x.png\n")
    with pytest.raises(ValueError, match="heldout.txt:1"):
        read_split(root, "heldout")
    (root / "heldout.txt").write_text("missing.png\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ImageFolder(root, "heldout")
    (root / "bad.png").write_bytes(b"not an image")
    (root / "heldout.txt").write_text("bad.png\n")
    with pytest.raises(OSError, match="bad.png"):
        ImageFolder(root, "heldout")[0]


# --- images -----------------------------------------------------------------------------------


def test_images_are_capped_cached_and_composited(tmp_path):
    x = np.arange(300)[None, :].repeat(200, 0)
    big = np.stack([(2 * x) % 256, np.zeros_like(x), np.full_like(x, 7)], -1).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    folder = ImageFolder.from_dir(tmp_path, max_short_side=100)
    assert folder.paths == ["alpha.png", "big.png"]
    assert folder[1].shape == (100, 150, 3)
    assert folder[1][0, 3, 0] == 13  # area filter: the mean of 12 and 14
    assert folder[1] is folder[1]  # cached
    assert folder[0][0, 0].tolist() == [100, 0, 0]  # premultiplied over black
    clip = make_clip(folder[1], ClipSpec(1, 32, 32, 4), 0)
    assert clip.hr.shape == (3, 1, 32, 32)


# --- eval set ---------------------------------------------------------------------------------


def test_eval_set_writes_the_folder_turbovsr_eval_reads(root, capsys):
    out = root / "eval"
    argv = [
        "--root",
        str(root),
        "--split",
        "heldout",
        "--out",
        str(out),
        "--frames",
        "2",
        "--height",
        "32",
        "--width",
        "48",
        "--scale",
        "4",
        "--clips-per-image",
        "2",
        "--seed",
        "3",
        "--preset",
        "mild",
    ]
    assert evalset.main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["scale"], m["frames"], m["height"], m["width"]) == (4, 2, 32, 48)
    assert m["split"] == "heldout" and m["degradation"]["name"] == "mild"
    assert [c["name"] for c in m["clips"]] == [f"clip_{i:03d}" for i in range(4)]
    assert [c["source"] for c in m["clips"]] == ["sub/c.png"] * 2 + ["d.jpg"] * 2
    assert all(0 <= c["seed"] < 2**64 for c in m["clips"])
    # the manifest's seed rebuilds the clip exactly
    spec = ClipSpec(2, 32, 48, 4, DegradeConfig.mild())
    clip = make_clip(ImageFolder(root, "heldout")[1], spec, m["clips"][3]["seed"])
    for k in range(2):
        with (
            Image.open(out / f"clip_003/hr_{k:03d}.png") as hr,
            Image.open(out / f"clip_003/lr_{k:03d}.png") as lr,
        ):
            assert (hr.mode, hr.size, lr.mode, lr.size) == ("RGB", (48, 32), "RGB", (12, 8))
            assert np.array_equal(np.asarray(hr), dg.to_uint8(clip.hr[:, k]))
            assert np.array_equal(np.asarray(lr), dg.to_uint8(clip.lr[:, k]))
    # an existing eval set is not overwritten
    capsys.readouterr()
    assert evalset.main(argv) == 1
    assert "manifest.json" in capsys.readouterr().err
