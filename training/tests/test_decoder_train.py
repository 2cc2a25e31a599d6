"""The decoder trainer (`turbovsr_train.decoder_train`) on the shipped default and synthetic
clips: the output convolution's least-squares fit lowers the error it is fitted on and reads
each frame's own features only, the export changes the decoder's weights and nothing else, and
an interrupted run resumes to the same bits as an uninterrupted one."""

import filecmp
import os

import numpy as np
import pytest
import torch
from common import ROOT, log, one_thread, same_runs  # noqa: F401 (one_thread: autouse)
from safetensors.torch import load_file

from turbovsr_train.decoder_train import (
    MODEL_FILES,
    VAE_WEIGHTS,
    DecoderTrainConfig,
    DecoderTrainer,
    main,
)

MODEL = os.path.join(ROOT, "models/default")


def args(out, *extra):
    return [
        "--model", MODEL, "--out", str(out), "--data", "synthetic", "--crop", "64",
        "--image-batch", "2", "--video-batch", "1", "--frames", "3", "--eval-clips", "0",
        "--no-progress", *extra,
    ]  # fmt: skip


def test_the_fit_lowers_its_error_and_the_export_changes_only_the_decoder(tmp_path):
    from accelerate import Accelerator

    cfg = DecoderTrainConfig.parse(args(tmp_path / "run", "--fit-batches", "3", "--steps", "0"))
    trainer = DecoderTrainer(cfg, Accelerator(cpu=True))
    before, after = trainer.fit_output_conv()
    assert 0 < after < before
    w = trainer.vae.decoder.conv_out.conv.weight
    assert w[:, :, 0].abs().max() == 0 and w[:, :, 2].abs().max() == 0
    assert w[:, :, 1].abs().max() > 0
    out = tmp_path / "model"
    trainer.export(str(out))
    for name in MODEL_FILES:
        assert filecmp.cmp(os.path.join(MODEL, name), out / name, shallow=False), name
    old, new = load_file(os.path.join(MODEL, VAE_WEIGHTS)), load_file(out / VAE_WEIGHTS)
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed == {"decoder.conv_out.conv.weight", "decoder.conv_out.conv.bias"}
    assert all(new[k].dtype == old[k].dtype for k in old)


def test_a_resumed_run_ends_on_the_same_bits(tmp_path):
    main(args(tmp_path / "a", "--steps", "4", "--checkpoint-every", "2"))
    main(args(tmp_path / "b", "--steps", "2", "--checkpoint-every", "2"))
    main(args(tmp_path / "b", "--steps", "4", "--checkpoint-every", "2"))
    weights = same_runs(tmp_path / "a", tmp_path / "b")
    assert len(log(tmp_path / "a")) == 5  # the header and 4 steps
    assert all(np.isfinite(v).all() for v in weights.values())


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(SystemExit):
        DecoderTrainConfig.parse(["--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        DecoderTrainConfig.parse(["--model", str(tmp_path), "--out", str(tmp_path / "o")])
