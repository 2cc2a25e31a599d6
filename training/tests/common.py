"""What several trainer tests share: the element's half of a check (TURBOVSR_BIN, the
`turbovsr` binary, which .ci/run sets), comparing two runs bit for bit, and one intra-op
thread for the CPU-heavy modules."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def element_binary() -> str:
    """The `turbovsr` binary, or a skip of the rest of the test."""
    binary = os.environ.get("TURBOVSR_BIN")
    if not binary:
        pytest.skip("TURBOVSR_BIN is not set: the element half of this check needs the binary")
    return binary


def inspect(model) -> None:
    """`turbovsr inspect MODEL` accepts the folder."""
    run = subprocess.run([element_binary(), "inspect", str(model)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def upscale(model, tmp_path, frames: int, width: int, height: int, steps: int) -> bytes:
    """`turbovsr upscale` of a test clip through `model`: the y4m output, checked for its size
    (4x) and frame count."""
    binary = element_binary()
    inspect(model)
    clip, result = tmp_path / "in.mkv", tmp_path / "out.y4m"
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate=25/1"
    gst = shutil.which("gst-launch-1.0") or "gst-launch-1.0"
    subprocess.run(
        [gst, "-q", "videotestsrc", f"num-buffers={frames}", "!", caps, "!", "x264enc", "!",
         "matroskamux", "!", "filesink", f"location={clip}"],
        check=True,
    )  # fmt: skip
    run = subprocess.run(
        [binary, "upscale", str(clip), str(result), "--model", str(model), "--steps", str(steps),
         "--device", "cpu", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = result.read_bytes()
    header = data.split(b"\n", 1)[0]
    assert header.startswith(b"YUV4MPEG2 ") and f" W{4 * width} H{4 * height} ".encode() in header
    assert data.count(b"FRAME") == frames
    return data


def log(run_dir) -> list[str]:
    """A run's log without its wall-clock column."""
    with open(os.path.join(run_dir, "log.csv")) as f:
        return [line.rsplit(",", 1)[0] for line in f.read().splitlines()]


def same_runs(a_dir, b_dir) -> dict[str, np.ndarray]:
    """Two runs' last checkpoints hold the same weights, bit for bit, and their logs the same
    lines; returns the first one's weights."""
    a = load_file(os.path.join(a_dir, "checkpoint", "model.safetensors"))
    b = load_file(os.path.join(b_dir, "checkpoint", "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert log(a_dir) == log(b_dir)
    return a


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared two-core machine a second thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
