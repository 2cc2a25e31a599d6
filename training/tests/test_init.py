"""The condition and regression starts: before any step, every schedule returns the condition
latent (the bicubic baseline), or its fitted per-token linear map."""

import pytest
import torch
from diffusers import LTXVideoTransformer3DModel

from turbovsr_train.init import condition_start, fit_condition_map
from turbovsr_train.model import TurboVSRTransformer
from turbovsr_train.recipe import Recipe, RecipeConfig, sample
from turbovsr_train.train import zero_block_outputs


def small(channels=8, patch=2, heads=2, head_dim=24):
    torch.manual_seed(0)
    c = channels * patch * patch
    base = LTXVideoTransformer3DModel(
        in_channels=c,
        out_channels=c,
        patch_size=patch,
        patch_size_t=1,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        num_layers=2,
        caption_channels=8,
    )
    zero_block_outputs(base)
    return TurboVSRTransformer(base, c).eval()


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("frames", [1, 3])
def test_every_schedule_returns_the_condition(frames):
    model = small()
    condition_start(model, shift=2.0, seed=1)
    recipe = Recipe(RecipeConfig(cond_aug=0.0, shift=2.0), 8, 4)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 8, frames, 4, 6, generator=g)
    cond = torch.randn(2, 8, frames, 4, 6, generator=g)
    batch = recipe.batch(model, x0, cond, g)
    for steps in (1, 2, 4, 8):
        out = sample(model, recipe, batch, steps, g, held=batch.cond[:, : batch.first])
        err = rel(out[:, batch.first :], batch.cond[:, batch.first :])
        assert err < 0.03, (steps, err)  # about 1.5 % measured in this narrow stream


def test_the_default_models_width_returns_the_condition_to_a_tenth_of_a_percent():
    # the shipped default's stream: 32 latent channels in 2x2 patches, 6 heads of 32; with the
    # bias direction at init.BETA_FACTOR = 16 (at 4 this was 2 %: a 38 dB floor on smooth
    # pictures and a visible token grid)
    model = small(channels=32, patch=2, heads=6, head_dim=32)
    condition_start(model, shift=2.0, seed=1)
    recipe = Recipe(RecipeConfig(cond_aug=0.0, shift=2.0), 1, 4)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 32, 1, 8, 8, generator=g)
    cond = torch.randn(2, 32, 1, 8, 8, generator=g)
    batch = recipe.batch(model, x0, cond, g)
    for steps in (1, 2, 4):
        err = rel(sample(model, recipe, batch, steps, g), batch.cond)
        assert err < 0.002, (steps, err)  # 0.07-0.08 % measured


def test_regression_start_returns_the_fitted_map():
    model = small()
    condition_start(model, shift=2.0, seed=1)
    g = torch.Generator().manual_seed(3)
    c = 32
    m_true = torch.eye(c) * 0.5 + 0.1 * torch.randn(c, c, generator=g)
    offset = 0.2 * torch.randn(c, generator=g)
    pairs = []
    for _ in range(4):
        cond = torch.randn(2, 24, c, generator=g)
        pairs.append((cond @ m_true.T + offset, cond))
    rel_err = fit_condition_map(model, pairs)
    assert rel_err < 1e-6  # the data is exactly linear
    recipe = Recipe(RecipeConfig(cond_aug=0.0, shift=2.0), 8, 4)
    x0 = torch.randn(1, 8, 1, 4, 6, generator=g)
    cond = torch.randn(1, 8, 1, 4, 6, generator=g)
    batch = recipe.batch(model, x0, cond, g)
    want = batch.cond @ m_true.T + offset
    out = sample(model, recipe, batch, 4, g)
    assert rel(out, want) < 0.03


def test_condition_start_needs_room_in_the_stream():
    model = small(head_dim=8)  # 16 wide, 32 values a token
    with pytest.raises(ValueError, match="do not fit"):
        condition_start(model, 2.0, 0)
