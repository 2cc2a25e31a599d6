"""The trainer's model and export on tiny configs, on the CPU (DESIGN §3.2, §3.3)."""

import json
import os

import pytest
import torch
from common import upscale
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

from turbovsr_train import TurboVSRSettings, TurboVSRTransformer, cross_norm, export_checkpoint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def tiny_transformer(in_channels=8, layers=2) -> LTXVideoTransformer3DModel:
    torch.manual_seed(0)
    return LTXVideoTransformer3DModel(
        in_channels=in_channels,
        out_channels=in_channels,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=layers,
        caption_channels=12,
    )


def inputs(b=2, f=2, h=3, w=4, c=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = f * h * w
    return dict(
        hidden_states=torch.randn(b, n, c, generator=g),
        cond=torch.randn(b, n, c, generator=g),
        encoder_hidden_states=torch.randn(b, 1, 12, generator=g),
        timestep=torch.full((b,), 600.0),
        num_frames=f,
        height=h,
        width=w,
    )


def test_cross_norm_is_the_formula_in_float64():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 4, generator=g, dtype=torch.float64) * 2 + 1
    c = torch.randn(2, 5, 4, generator=g, dtype=torch.float64) * 7 - 3
    out = cross_norm(h, c, 0.5)
    for i in range(2):
        hi, ci = h[i].flatten(), c[i].flatten()
        aligned = (ci - ci.mean()) * hi.std(unbiased=True) / (
            ci.std(unbiased=True) + 1e-5
        ) + hi.mean()
        want = ((hi + aligned) * 0.5).view(5, 4)
        torch.testing.assert_close(out[i], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        cross_norm(h, c[:, :4], 0.5)


def test_the_head_has_the_checkpoint_keys_of_design_3_2():
    model = TurboVSRTransformer(tiny_transformer(), cond_channels=8)
    state = model.transformer.state_dict()
    d = 16
    head = {
        k: tuple(v.shape)
        for k, v in state.items()
        if k.startswith("cond_embedder") or ".step_embedder." in k
    }
    assert head == {
        "cond_embedder.weight": (d, 8),
        "cond_embedder.bias": (d,),
        "time_embed.emb.step_embedder.linear_1.weight": (d, 256),
        "time_embed.emb.step_embedder.linear_1.bias": (d,),
        "time_embed.emb.step_embedder.linear_2.weight": (d, d),
        "time_embed.emb.step_embedder.linear_2.bias": (d,),
    }
    flow = TurboVSRTransformer(tiny_transformer(), cond_channels=8, shortcut=False)
    assert not any(".step_embedder." in k for k in flow.transformer.state_dict())


def test_step_size_and_condition_change_the_velocity_and_gradients_reach_the_head():
    model = TurboVSRTransformer(tiny_transformer(), cond_channels=8)
    x = inputs()
    a = model(**x, step_size=0.25)
    assert a.shape == x["hidden_states"].shape
    assert not torch.allclose(a, model(**x, step_size=0.5))
    y = dict(x, cond=x["cond"] * -1.0)
    assert not torch.allclose(a, model(**y, step_size=0.25))
    a.square().mean().backward()
    for name in ["cond_embedder.weight", "time_embed.emb.step_embedder.linear_1.weight"]:
        grad = model.transformer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    flow = TurboVSRTransformer(tiny_transformer(), cond_channels=8, shortcut=False)
    torch.testing.assert_close(flow(**x, step_size=0.25), flow(**x, step_size=1.0))
    with pytest.raises(ValueError, match="like the latent"):
        model(**dict(x, cond=x["cond"][:, 1:]), step_size=0.25)


def test_a_model_without_blocks_is_one_with_identity_blocks():
    # The condition enters after proj_in when there is no block 0 (the element does the same):
    # the same as a model whose one block adds nothing.
    one = TurboVSRTransformer(tiny_transformer(layers=1), cond_channels=8)
    with torch.no_grad():
        block = one.transformer.transformer_blocks[0]
        for p in [
            *block.attn1.to_out.parameters(),
            *block.attn2.to_out.parameters(),
            *block.ff.net[2].parameters(),
        ]:
            p.zero_()
    none = TurboVSRTransformer(tiny_transformer(layers=0), cond_channels=8)
    state = {k: v for k, v in one.state_dict().items() if ".transformer_blocks." not in k}
    assert none.load_state_dict(state, strict=True)
    x = inputs()
    want = one(**x, step_size=0.25)
    torch.testing.assert_close(none(**x, step_size=0.25), want, rtol=1e-6, atol=1e-6)
    y = dict(x, cond=x["cond"] * -1.0)
    assert not torch.allclose(none(**y, step_size=0.25), want)


def default_vae() -> AutoencoderKLLTXVideo:
    """A randomly initialised VAE of the shipped default model's shape (4x4 spatial, 32 latents)."""
    with open(os.path.join(ROOT, "models", "default", "vae", "config.json")) as f:
        config = json.load(f)
    torch.manual_seed(0)
    return AutoencoderKLLTXVideo.from_config(config)


def test_export_round_trips_and_the_element_upscales_with_it(tmp_path):
    vae = default_vae()
    latent = vae.config.latent_channels
    transformer = LTXVideoTransformer3DModel(
        in_channels=latent * 4,
        out_channels=latent * 4,
        patch_size=2,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        caption_channels=12,
    )
    model = TurboVSRTransformer(transformer, cond_channels=latent * 4, cond_scale=0.6)
    out = tmp_path / "model"
    export_checkpoint(str(out), model, vae, TurboVSRSettings(cond_scale=0.6))
    settings = json.loads((out / "turbovsr.json").read_text())
    assert settings["cond_scale"] == 0.6 and settings["scale"] == 4
    assert sorted(os.listdir(out)) == ["transformer", "turbovsr.json", "vae"]

    again = TurboVSRTransformer.from_pretrained(str(out / "transformer"), cond_scale=0.6)
    x = inputs(c=latent * 4, f=2, h=2, w=2)
    with torch.no_grad():
        torch.testing.assert_close(again(**x, step_size=0.5), model(**x, step_size=0.5))
    with pytest.raises(ValueError, match="cond_scale"):
        export_checkpoint(str(tmp_path / "bad"), model, vae, TurboVSRSettings(cond_scale=0.5))

    # The element loads the export and upscales with it.
    upscale(out, tmp_path, frames=3, width=12, height=10, steps=1)
