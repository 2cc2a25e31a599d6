"""The reference window path's own pieces (turbovsr_train/reference.py), on the CPU, fast: the fixed
noise against the element's formula computed by hand, tiles, the window plan, and
the committed end-to-end fixtures (tests/fixtures/window) reproduced exactly."""

import json
import math
import os

import numpy as np
import pytest
import torch

from turbovsr_train import latents
from turbovsr_train import reference as ref

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "window")
M64 = 2**64 - 1


def noise_at(seed: int, c: int, t: int, y: int, x: int) -> np.float32:
    """`FixedNoise::at` of src/sample/noise.rs, one value, in Python integers and `math`."""

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    h = mix(seed ^ 0x9E3779B97F4A7C15)
    for v in (c, t, y, x):
        h = mix(h ^ ((v * 0xD6E8FEB86659FD93) & M64))
    u1 = ((h >> 32) + 1.0) / 4294967296.0
    u2 = (h & 0xFFFFFFFF) / 4294967296.0
    return np.float32(math.sqrt(-2.0 * math.log(u1)) * math.cos(math.tau * u2))


# ----------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("seed", [0, 42, 2**40 + 3, 2**64 - 1])
def test_noise_is_the_elements_formula_bit_for_bit(seed):
    field = ref.fixed_noise(seed, (3, 2, 4, 5), origin=(6, 7)).numpy()
    for c, t, y, x in [(0, 0, 0, 0), (2, 1, 3, 4), (1, 0, 2, 3), (0, 1, 0, 4), (2, 0, 3, 0)]:
        want = noise_at(seed, c, t, 6 + y, 7 + x)
        assert field[c, t, y, x].tobytes() == want.tobytes(), (seed, c, t, y, x)


def test_noise_tiles_are_cuts_of_the_whole_field_and_the_seed_matters():
    whole = ref.fixed_noise(42, (2, 3, 10, 12))
    tile = ref.fixed_noise(42, (2, 3, 4, 5), origin=(6, 7))
    assert torch.equal(tile, whole[:, :, 6:10, 7:12])
    assert not torch.equal(tile, ref.fixed_noise(43, (2, 3, 4, 5), origin=(6, 7)))
    big = ref.fixed_noise(7, (8, 5, 50, 50)).double()
    assert abs(big.mean()) < 0.02 and abs(big.var() - 1.0) < 0.03


# ----------------------------------------------------------------------------------------- tiles


def test_tiles_cover_the_latent_and_the_last_one_is_flush():
    assert ref.tile_starts(96, 32, 8) == [0, 24, 48, 64]
    assert ref.tile_starts(20, 32, 8) == [0]
    for h, w in [(6, 8), (5, 7), (33, 57), (4, 4)]:
        for patch in (1, 2):
            if h % patch or w % patch:
                continue
            covered = torch.zeros(h, w)
            for t in ref.plan_tiles(h, w, (4, 4), 2, patch):
                assert t.y % patch == t.x % patch == t.height % patch == 0
                covered[t.y : t.y + t.height, t.x : t.x + t.width] += 1
            assert (covered >= 1).all(), (h, w, patch)
    # 6 x 8 latents in 2x2 patches, tiles of 4 latents overlapping by 2: 2 x 3 tiles.
    assert len(ref.plan_tiles(6, 8, (4, 4), 2, 2)) == 6


@pytest.mark.parametrize("kind", ref.TILE_WEIGHTS)
def test_a_frame_that_fits_one_tile_is_the_untiled_result(kind):
    x = torch.randn(1, 4, 2, 6, 8)
    tiles = ref.plan_tiles(6, 8, (8, 8), 2, 2)
    assert tiles == [ref.Tile(0, 0, 6, 8)]
    assert torch.equal(ref.blend_tiles([(tiles[0], x)], 6, 8, kind), x)


@pytest.mark.parametrize("kind", ref.TILE_WEIGHTS)
def test_tiles_that_agree_blend_back_to_the_whole(kind):
    whole = torch.randn(3, 2, 10, 14)
    tiles = [
        (t, whole[..., t.y : t.y + t.height, t.x : t.x + t.width])
        for t in ref.plan_tiles(10, 14, (4, 6), 2, 1)
    ]
    assert len(tiles) > 4
    assert torch.allclose(ref.blend_tiles(tiles, 10, 14, kind), whole, atol=1e-6)


def test_gaussian_weights_by_hand():
    w = ref.tile_weights(ref.Tile(0, 0, 8, 8), 8, 8)
    # sigma = 2, centre 3.5: row 1 is 2.5 away, column 3 is 0.5 away.
    assert w[1, 3].item() == pytest.approx(math.exp(-6.25 / 8) * math.exp(-0.25 / 8), rel=1e-6)
    assert w[3, 3] == w[4, 4] and w[3, 3] > w[0, 0]
    # The element's taper: an inner edge fades to 0 one latent outside the tile, outer edges keep
    # the Gaussian.
    # Rows 4..7 of 12 (inner edges above and below), all 4 columns (outer edges): n = 4,
    # sigma = 1, centre 1.5; one latent outside is 2.5 from the centre.
    t = ref.tile_weights(ref.Tile(4, 0, 4, 4), 12, 4, "tapered")
    g = ref.tile_weights(ref.Tile(4, 0, 4, 4), 12, 4, "gaussian")
    g0, outside = math.exp(-(1.5**2) / 2), math.exp(-(2.5**2) / 2)
    assert g[0, 0].item() == pytest.approx(g0 * g0, rel=1e-6)
    assert t[0, 0].item() == pytest.approx((g0 - outside) / (1 - outside) * g0, rel=1e-6)
    assert t[3, 0].item() == pytest.approx(t[0, 0].item(), rel=1e-6)
    assert (t < g).all()


# ----------------------------------------------------------------------------------- window plan


def emitted(plan):
    return [w.start + i for w in plan for i in range(w.emit_start, w.emit_end)]


CONFIGS = [
    (w, o, f)
    for w, o in [(9, 1), (17, 9), (25, 9), (49, 9), (49, 17)]
    for f in (1, 9, 17, 49)
    if f <= w
]


@pytest.mark.parametrize("window,overlap,first", CONFIGS)
def test_every_frame_is_emitted_once_from_valid_windows(window, overlap, first):
    for n in range(0, 130):
        plan = ref.plan_windows(n, window, overlap, first)
        assert emitted(plan) == list(range(n)), (n, plan)
        for k, w in enumerate(plan):
            assert (w.padded - 1) % 8 == 0 and w.frames <= w.padded <= window
            assert 0 < w.emit_end <= w.frames
            if k:
                # window k starts on window k-1's last output frame, which conditions it
                assert w.start == plan[k - 1].start + plan[k - 1].emit_end - 1 and w.emit_start == 1
            if k + 1 < len(plan):
                assert w.frames == (first if k == 0 else window)


def test_window_plan_frame_counts():
    # DESIGN defaults: a 9-frame first window, then 49-frame windows stepping 40.
    plan = ref.plan_windows(120)
    assert [(w.start, w.frames, w.emit_start, w.emit_end) for w in plan[:3]] == [
        (0, 9, 0, 9),
        (8, 49, 1, 41),
        (48, 49, 1, 41),
    ]
    assert (plan[-1].start, plan[-1].frames, plan[-1].padded) == (88, 32, 33)
    # The fixtures' clips (tests/fixtures/window/*/case.json).
    assert [(w.start, w.frames, w.padded) for w in ref.plan_windows(21, 17, 9, 17)] == [
        (0, 17, 17),
        (8, 13, 17),
    ]
    assert [(w.start, w.frames, w.padded) for w in ref.plan_windows(29, 17, 9, 9)] == [
        (0, 9, 9),
        (8, 17, 17),
        (16, 13, 17),
    ]
    # A first window longer than the overlap shares the overlap with window 1.
    assert ref.plan_windows(100, 49, 9, 25)[1].start == 16
    # A one-frame stream is image SR; a stream that ends on a full window still has a tail.
    assert ref.plan_windows(1) == [ref.WindowPlan(0, 1, 1, 0, 1)]
    assert [(w.start, w.frames) for w in ref.plan_windows(25, 17, 9, 17)] == [
        (0, 17),
        (8, 17),
        (16, 9),
    ]
    assert (
        ref.padded_clip_len(2) == 9
        and ref.padded_clip_len(9) == 9
        and ref.padded_clip_len(10) == 17
    )
    with pytest.raises(ValueError):
        ref.plan_windows(10, 48, 9, 9)


# ---------------------------------------------------------------------------- helpers, end to end


def test_pack_and_unpack_are_inverse_and_frame_major():
    z = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(1, 3, 2, 4, 4)
    for p in (1, 2):
        x = latents.pack(z, p, 1)
        assert x.shape == (1, 2 * 16 // (p * p), 3 * p * p)
        assert torch.equal(latents.unpack(x, (2, 4 // p, 4 // p), p, 1), z)
    # patch 1: token (t, y, x) = t * 16 + y * 4 + x holds the channels there
    assert torch.equal(latents.pack(z, 1, 1)[0, 16 + 4 + 3], z[0, :, 1, 1, 3])


@pytest.mark.parametrize("name", ["single_window", "two_windows"])
def test_the_committed_fixtures_are_the_references_output(name):
    """The reference reproduces tests/fixtures/window exactly (regenerate them after changing it:
    scripts/fixtures/gen_window.py)."""
    from safetensors.torch import load_file

    folder = os.path.join(FIXTURES, name)
    with open(os.path.join(folder, "case.json")) as f:
        meta = json.load(f)
    keys = (
        "scale",
        "steps",
        "window",
        "overlap",
        "first_window",
        "tile_size",
        "tile_overlap",
        "seed",
    )
    settings = ref.RunSettings(**{k: meta[k] for k in keys})
    reference = ref.Reference.load(os.path.join(FIXTURES, "models", meta["model"]), settings)
    frames = load_file(os.path.join(folder, "inputs.safetensors"))["frames"].float()
    want = load_file(os.path.join(folder, "expected.safetensors"))["frames"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the generator ran
    try:
        stats: list = []
        got = reference.upscale_clip(frames, stats)
    finally:
        torch.set_num_threads(threads)
    assert [s["fused"] for s in stats] == [w["fused"] for w in meta["windows"]]
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
