"""The VAE trainer (`turbovsr_train.vae_train`): the principal-component start reconstructs
clips it has not seen before any step, gradient steps lower the loss, a two-process run
interrupted and resumed ends on the same bits as an uninterrupted one, and its export loads in
diffusers and in the element."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import ROOT, inspect, log, one_thread, same_runs  # noqa: F401 (one_thread: autouse)
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

from turbovsr_train import TurboVSRTransformer, export_checkpoint
from turbovsr_train.data import SyntheticSource
from turbovsr_train.run import RunDir, step_generator
from turbovsr_train.vae_train import (
    DEFAULT_CONFIG,
    LOG_HEADER,
    VaeTrainConfig,
    build_vae,
    he_init,
    latent_moments,
    latent_stats,
    pca_init,
    recon_loss,
    reconstruct,
    reconstruction_psnr,
    vae_batch,
)

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.fixture(scope="module")
def config():
    with open(DEFAULT_CONFIG) as f:
        return json.load(f)


def test_the_shipped_vae_is_the_small_config_without_resnets(config):
    # training/configs/vae/pca.json: the PCA start leaves every resnet the identity
    with open(os.path.join(ROOT, "training/configs/vae/pca.json")) as f:
        pca = json.load(f)
    with open(os.path.join(ROOT, "models/default/vae/config.json")) as f:
        assert build_vae(json.load(f)).config == build_vae(pca).config
    assert pca == dict(config, layers_per_block=[0, 0], decoder_layers_per_block=[0, 0])
    vae = build_vae(config)
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (4, 1)


def test_pca_start_reconstructs_unseen_clips_with_unit_latents(config):
    torch.manual_seed(0)
    src = SyntheticSource(32, 32, 4)
    vae = build_vae(config)
    he_init(vae, torch.Generator().manual_seed(0))
    before = reconstruction_psnr(vae, src, 2, 9)
    pca_init(vae, src, images=32, seed=1)  # the PCA's images are not the evaluation's clips
    after = reconstruction_psnr(vae, src, 2, 9)
    # measured: 6.5 dB from He-normal weights, 48.3 dB from the PCA start
    assert before < 15 and after > 40, (before, after)
    mean, std = latent_stats(latent_moments(vae, src, range(4), 9, "cpu"))
    # measured 0.65..1.2 per channel, means within 0.2
    assert 0.4 < float(std.min()) and float(std.max()) < 2.0, std
    assert float(mean.abs().max()) < 0.5, mean


def test_gradient_steps_lower_the_loss(config):
    torch.manual_seed(0)
    src = SyntheticSource(16, 16, 4)
    vae = build_vae(config)
    he_init(vae, torch.Generator().manual_seed(3))
    gen, seed = step_generator(5, 0)
    x = vae_batch(src, 2, 9, 0.5, gen, seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    losses = []
    for _ in range(6):
        loss = recon_loss(reconstruct(vae, x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        final = float(recon_loss(reconstruct(vae, x), x))
    assert final < 0.7 * losses[0], losses + [final]


ARGS = {
    "--crop": "16",
    "--image-batch": "2",
    "--video-batch": "1",
    "--frames": "5",
    "--pca-images": "16",
    "--checkpoint-every": "2",
    "--warmup": "1",
    "--lr": "1e-4",
    "--degraded-share": "0.5",
    "--eval-clips": "2",
}
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "training"))


def args(out, steps, **changed):
    merged = {**ARGS, **{"--" + k.replace("_", "-"): v for k, v in changed.items()}}
    flat = [x for kv in merged.items() for x in kv]
    return ["-m", "turbovsr_train.vae_train", "--out", out, "--steps", str(steps), *flat]


def start(out, steps, *extra):
    """A two-process CPU run (DDP over gloo) under torchrun, started in the background."""
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", *args(out, steps), "--no-progress"]
    env = dict(ENV, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        cmd + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(proc):
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    return stdout


def test_two_processes_resume_to_the_same_bits_and_export(tmp_path):
    whole, parts, export = str(tmp_path / "whole"), str(tmp_path / "parts"), tmp_path / "vae"
    # one after the other: with two process groups at once on 2 busy cores, one run failed
    # once in the full suite
    out = finish(start(whole, 4, "--export", str(export)))
    finish(start(parts, 2))
    assert "2 process(es)" in out, out
    pca = out.split("principal-component start: reconstruction ")[1]
    assert float(pca.split(" dB")[0]) > 35, out  # measured 46.1 dB at this crop
    resumed = finish(start(parts, 4))
    assert "steps 2..4" in resumed, resumed

    a = same_runs(whole, parts)
    lines = log(whole)
    assert lines[0] == "step,frames,loss,grad_norm,lr"
    assert [line.split(",")[1] for line in lines[1:]] == ["1", "5", "1", "5"]

    # another setting does not resume silently, and names what differs
    cfg = VaeTrainConfig.parse(args(parts, 5, lr="2e-4")[2:])
    with pytest.raises(SystemExit, match=r"\(lr differ\)"):
        RunDir(parts, LOG_HEADER).last_step(cfg.settings(), 2)

    # the export: a diffusers VAE folder with the trained weights (f16) and latent statistics
    vae = AutoencoderKLLTXVideo.from_pretrained(str(export))
    assert vae.config.latent_channels == 32 and vae.config.patch_size == 4
    state = {k: v.numpy() for k, v in vae.state_dict().items()}
    for k in a:
        if not k.startswith("latents_"):
            np.testing.assert_allclose(state[k], a[k], rtol=1e-3, atol=1e-4, err_msg=k)
    assert np.all(state["latents_std"] > 0.1) and np.all(state["latents_std"] < 10)
    # it reconstructs the run's evaluation clips as the trained weights did (f16 rounding only)
    with open(os.path.join(whole, "eval.jsonl")) as f:
        evals = [json.loads(line) for line in f]
    assert [e["step"] for e in evals] == [4], evals
    exported = reconstruction_psnr(vae, SyntheticSource(16, 16, 4), 2, 5)
    assert abs(exported - evals[0]["psnr"]) < 0.2, (exported, evals)

    # the element loads a model folder made of it and a tiny transformer
    with open(os.path.join(ROOT, "training/configs/model/tiny.json")) as f:
        transformer = LTXVideoTransformer3DModel.from_config(json.load(f))
    model = TurboVSRTransformer(transformer, cond_channels=32 * 4)
    export_checkpoint(str(tmp_path / "model"), model, vae)
    inspect(tmp_path / "model")
