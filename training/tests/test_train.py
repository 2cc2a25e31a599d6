"""The trainer itself, as CI runs it: two processes on the CPU (DDP over gloo, launched by
PyTorch's `torchrun`), a tiny config on an image folder with mixed degradations; an interrupted
run resumed to the same bits as an uninterrupted one; the export loaded by the element."""

import json
import os
import subprocess
import sys

import numpy as np
from common import ROOT, log, same_runs, upscale
from PIL import Image
from safetensors.numpy import load_file

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def images(root):
    """Three photos-to-be (smooth gradients and edges) and a train split."""
    os.makedirs(root)
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        y, x = np.mgrid[0:120, 0:160]
        img = np.stack([x * 1.5, y * 2.0, (x + y) % 97 * 2.6], -1) + rng.normal(0, 8, (120, 160, 3))
        name = f"img{i}.png"
        Image.fromarray(np.clip(img + 40 * i, 0, 255).astype(np.uint8)).save(
            os.path.join(root, name)
        )
        names.append(name)
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return root


def train(out, steps, data, *extra, processes=2):
    cmd = [
        TORCHRUN,
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "turbovsr_train.train",
        "--out",
        out,
        "--steps",
        str(steps),
        "--vae",
        os.path.join(ROOT, "models/default/vae"),
        "--transformer",
        os.path.join(ROOT, "training/configs/model/tiny.json"),
        "--data",
        data,
        "--degrade",
        "clean:0.5,realesrgan:0.5",
        "--crop",
        "32",
        "--batch",
        "2",
        "--checkpoint-every",
        "6",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--eval-clips",
        "2",
        "--no-progress",
        *extra,
    ]
    env = dict(
        os.environ,
        ACCELERATE_USE_CPU="true",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.path.join(ROOT, "training"),
    )
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_two_processes_resume_to_the_same_bits_and_export(tmp_path):
    data = images(str(tmp_path / "images"))
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    # the uninterrupted run makes its clips in a worker process, the interrupted one in line
    run = train(whole, 24, data, "--workers", "1")
    assert "2 process(es)" in run.stdout, run.stdout
    # interrupted after step 12 (a checkpoint every 6 steps), resumed to 24
    train(parts, 12, data)
    assert json.load(open(os.path.join(parts, "checkpoint", "state.json")))["step"] == 12
    run = train(parts, 24, data, "--export", str(tmp_path / "model"))
    assert "steps 12..24" in run.stdout, run.stdout

    a = same_runs(whole, parts)
    lines = log(whole)
    assert lines[0] == "step,objective,frames,loss,grad_norm,lr"
    kinds = [(line.split(",")[1], line.split(",")[2]) for line in lines[1:]]
    assert kinds[:4] == [("flow", "1"), ("shortcut", "1"), ("flow", "9"), ("shortcut", "9")]
    # some weights moved: the run trained
    start = json.load(open(os.path.join(ROOT, "training/configs/model/tiny.json")))
    assert start and any(np.abs(v).sum() > 0 for k, v in a.items() if "proj_out" in k)

    # another setting does not resume silently
    cmd_fail = subprocess.run(
        [
            sys.executable,
            "-m",
            "turbovsr_train.train",
            "--out",
            parts,
            "--steps",
            "25",
            "--vae",
            os.path.join(ROOT, "models/default/vae"),
            "--transformer",
            os.path.join(ROOT, "training/configs/model/tiny.json"),
            "--data",
            data,
            "--crop",
            "32",
            "--lr",
            "2e-3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "training")),
    )
    assert cmd_fail.returncode != 0 and "lr" in cmd_fail.stderr, cmd_fail.stderr

    # the standalone export of the run's checkpoint is the end-of-run export
    again = subprocess.run(
        [sys.executable, "-m", "turbovsr_train.export", parts, str(tmp_path / "again")],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "training")),
    )
    assert again.returncode == 0, again.stderr
    for f in (
        "turbovsr.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "transformer/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ):
        assert (tmp_path / "again" / f).read_bytes() == (tmp_path / "model" / f).read_bytes(), f

    model = tmp_path / "model"
    settings = json.loads((model / "turbovsr.json").read_text())
    # 9 frames, no temporal compression in this VAE; 32 px over its 4x spatial compression
    assert settings["tile"] == [9, 8, 8] and settings["shift"] == 2.0
    assert settings["step_sizes"][0] == 1.0
    exported = load_file(str(model / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert exported["cond_embedder.weight"].dtype == np.float16
    assert "time_embed.emb.step_embedder.linear_2.weight" in exported
    np.testing.assert_allclose(
        exported["proj_out.weight"].astype(np.float32),
        a["transformer.proj_out.weight"],
        rtol=1e-3,
        atol=1e-4,
    )

    upscale(model, tmp_path, frames=11, width=20, height=12, steps=2)
