"""The sampler schedule and the training recipe on tiny shapes (paper §3.3, §3.4, DESIGN §4)."""

import json
import math
import os

import pytest
import torch
from diffusers import LTXVideoTransformer3DModel

from turbovsr_train import latents
from turbovsr_train.model import TurboVSRTransformer
from turbovsr_train.recipe import Recipe, RecipeConfig, ddpm_alphas_cumprod, sample
from turbovsr_train.schedule import (
    LTX_SHIFT,
    default_step_sizes,
    nearest_step_size,
    noise_levels,
    plan,
    shift_factor,
    shift_mu,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_schedules_match_the_elements_worked_examples():
    # the cases of src/sample/schedule.rs's tests, which the element's sampler passes
    assert noise_levels(4, 1.0) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert noise_levels(2, 3.0) == [1.0, 0.75, 0.0]
    assert noise_levels(1, 7.0) == [1.0, 0.0]
    assert abs(shift_factor(LTX_SHIFT, 1024) - torch.e**0.95) < 1e-9
    assert abs(shift_factor(LTX_SHIFT, 2560) - torch.e**1.5) < 1e-9
    sizes = default_step_sizes()
    assert nearest_step_size(0.74, sizes) == 0.75
    assert nearest_step_size(0.3, sizes) == 0.25
    assert nearest_step_size(0.001, sizes) == 1 / 128
    assert nearest_step_size(0.75, [1.0, 0.5]) == 0.5  # a tie goes to the smaller step
    steps = plan(2, 0, 3.0, [1.0, 0.5, 0.25])
    assert [(s.s, s.d, s.d_model) for s in steps] == [(1.0, 0.25, 0.25), (0.75, 0.75, 0.5)]
    for n in (1, 2, 4, 8, 16):
        assert abs(sum(s.d for s in plan(n, 4096, LTX_SHIFT, sizes)) - 1) < 1e-12
    with pytest.raises(ValueError, match="steps=3"):
        plan(3, 0, 2.0, sizes)
    # the dynamic shift is the same function of e^mu (diffusers' time shift)
    dynamic = noise_levels(4, LTX_SHIFT, 2560)
    assert dynamic == pytest.approx(noise_levels(4, math.exp(1.5)), abs=1e-14)
    assert shift_mu(LTX_SHIFT, 1024) == pytest.approx(0.95)
    # a 1-ulp difference in the level must not flip a tie
    assert nearest_step_size(0.75 + 1e-16, [1.0, 0.5]) == 0.5


def test_ddpm_schedule_is_stable_diffusions():
    ab = ddpm_alphas_cumprod()
    assert ab.shape == (1000,)
    assert abs(float(ab[0]) - (1 - 0.00085)) < 1e-6  # diffusers computes it in f32
    # scaled-linear betas: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) over 1000 steps
    b0, b1 = 0.00085**0.5, 0.012**0.5
    want = 1.0
    for i in range(301):
        want *= 1 - (b0 + (b1 - b0) * i / 999) ** 2
    assert abs(float(ab[300]) - want) < 1e-5  # the augmentation's largest step: 0.59


class Oracle(torch.nn.Module):
    """The exact velocity of the straight path to `x0`: `(x - x0) / s` on every token whose
    timestep is not 0 (and 0 there). Flow matching's and the shortcut's targets are both this
    velocity, so every loss must be 0 if the recipe noises, holds and times the tokens right."""

    def __init__(self, x0, config):
        super().__init__()
        self.x0, self.config = x0, config
        self.seen = []

    def forward(self, hidden_states, timestep, step_size, **kw):
        self.seen.append((timestep.clone(), step_size))
        s = (timestep / 1000)[..., None]
        v = torch.where(s > 0, (hidden_states - self.x0) / s.clamp_min(1e-12), 0.0)
        return v


def tiny(patch=2, channels=4):
    torch.manual_seed(0)
    base = LTXVideoTransformer3DModel(
        in_channels=channels * patch * patch,
        out_channels=channels * patch * patch,
        patch_size=patch,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        caption_channels=8,
    )
    return TurboVSRTransformer(base, channels * patch * patch)


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("shortcut", [False, True])
def test_both_losses_are_zero_for_the_exact_velocity(frames, shortcut):
    model = tiny()
    recipe = Recipe(RecipeConfig(cond_aug=0.0), temporal_compression=8, spatial_compression=4)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(2, 4, frames, 4, 6, generator=g)
    batch = recipe.batch(model, x0, torch.randn_like(x0), g)
    oracle = Oracle(batch.x0, model.transformer.config)
    loss, info = recipe.loss(oracle, batch, shortcut, g)
    assert float(loss) < 1e-10, info
    assert info["objective"] == ("shortcut" if shortcut else "flow")
    first = 6 if frames > 1 else 0  # the held first frame: (4/2) x (6/2) tokens
    assert batch.first == first
    for ts, d in oracle.seen:
        assert (ts[:, :first] == 0).all() and (ts[:, first:] > 0).all()
        assert d in default_step_sizes()
    # a shortcut batch: two half steps without gradient, then the trained one
    assert len(oracle.seen) == (3 if shortcut else 1)


def test_the_held_frame_carries_no_loss_and_a_wrong_velocity_does():
    model = tiny()
    recipe = Recipe(RecipeConfig(cond_aug=0.0), 8, 4)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 2, 4, 4, generator=g)
    batch = recipe.batch(model, x0, x0.clone(), g)
    oracle = Oracle(batch.x0, None)

    def off_on_held(**kw):
        v = oracle(**kw)
        v[:, : batch.first] += 100.0  # ignored: the held tokens have no loss
        return v

    assert float(recipe.loss(off_on_held, batch, False, g)[0]) < 1e-10

    def off(**kw):
        return oracle(**kw) + 1.0

    assert abs(float(recipe.loss(off, batch, False, g)[0]) - 1.0) < 1e-5


def test_condition_noise_and_dropout_per_sample():
    model = tiny()
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 1, 4, 4, generator=g)
    cond = torch.randn_like(x0)
    dropped = Recipe(RecipeConfig(cond_dropout=1.0), 8, 4).batch(model, x0, cond, g)
    assert (dropped.cond == 0).all()
    kept = Recipe(RecipeConfig(cond_aug=0.0), 8, 4).batch(model, x0, cond, g)
    assert torch.equal(kept.cond, latents.pack(cond, 2, 1))
    noised = Recipe(RecipeConfig(cond_aug=1.0, cond_aug_max_t=300), 8, 4).batch(model, x0, cond, g)
    err = (noised.cond - kept.cond).pow(2).mean(dim=(1, 2))
    assert (err > 0).all() and (err < 1.0).all()  # at most DDPM step 300: alpha_bar > 0.59
    with pytest.raises(ValueError, match="cond_aug"):
        RecipeConfig(cond_aug=1.5).check()


def test_sampler_with_the_exact_velocity_returns_x0_at_every_step_count():
    model = tiny()
    recipe = Recipe(RecipeConfig(cond_aug=0.0), 8, 4)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 4, 2, 4, 4, generator=g)
    batch = recipe.batch(model, x0, x0, g)
    for steps in (1, 2, 4, 16):
        out = sample(
            Oracle(batch.x0, None), recipe, batch, steps, g, held=batch.x0[:, : batch.first]
        )
        torch.testing.assert_close(out, batch.x0, rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny()
        if checkpointing:
            model.transformer.enable_gradient_checkpointing()
        model.train()
        recipe = Recipe(RecipeConfig(), 8, 4)
        g = torch.Generator().manual_seed(4)
        x0 = torch.randn(2, 4, 2, 4, 4, generator=g)
        batch = recipe.batch(model, x0, torch.randn_like(x0), g)
        loss, _ = recipe.loss(model, batch, True, g)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(k.startswith("transformer.cond_embedder") for k in grads[0])
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)


def test_model_presets_fit_the_vaes_they_are_meant_for():
    cfg = json.load(open(os.path.join(ROOT, "models/default/vae/config.json")))
    packed = cfg["latent_channels"] * 4  # the presets' 2x2 patches
    for name in ("tiny", "small", "regression"):
        t = json.load(open(os.path.join(ROOT, f"training/configs/model/{name}.json")))
        assert t["in_channels"] == packed and t["patch_size"] == 2, name
    ltx = json.load(open(os.path.join(ROOT, "training/configs/model/ltx-2b.json")))
    assert ltx["in_channels"] == 128 and ltx["num_layers"] == 28 and ltx["patch_size"] == 1


@pytest.mark.parametrize("frames", [1, 3])
def test_trajectory_loss_is_zero_for_the_exact_velocity_and_weighs_channels(frames):
    model = tiny()
    recipe = Recipe(RecipeConfig(objective="trajectory", cond_aug=0.0), 8, 4)
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 4, frames, 4, 4, generator=g)
    batch = recipe.batch(model, x0, x0, g)
    oracle = Oracle(batch.x0, None)
    ones = torch.ones(16)
    for _ in range(6):  # several step counts and stopping steps
        loss, info = recipe.trajectory_loss(oracle, batch, g, ones)
        assert float(loss) < 1e-10 and info["steps"] in (1, 2, 4)

    def off(**kw):  # every clean-latent prediction off by 1 / s * s = 1 in channel 0
        v = oracle(**kw)
        s = (kw["timestep"] / 1000)[..., None]
        v[..., 0] -= 1 / s[..., 0].clamp_min(1e-12)
        return v

    weights = torch.zeros(16)
    weights[0] = 3.0
    loss, _ = recipe.trajectory_loss(off, batch, g, weights)
    assert abs(float(loss) - 3.0 / 16) < 1e-4
