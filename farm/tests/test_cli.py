"""The driver's pieces that need no cluster and no binary: the command line, the inputs, the
commands it runs and the attempt logs that report retries."""

import argparse
import os

import pytest

from turbovsr_farm import ray_driver
from turbovsr_farm.ray_driver import FarmError


def test_arguments_after_dashes_go_to_the_upscale():
    args = ray_driver.parse_args(["a.mkv", "--out", "o", "--", "--model", "bicubic", "--out", "x"])
    assert args.inputs == ["a.mkv"] and args.out == "o"
    assert args.upscale_args == ["--model", "bicubic", "--out", "x"]
    assert (args.segments, args.segment_seconds, args.context) == (None, 10.0, None)
    assert (args.gpus_per_segment, args.cpus_per_segment, args.retries) == (0.0, 1.0, 3)
    assert args.output_ext == ".mkv"
    with pytest.raises(SystemExit):
        ray_driver.parse_args(["a.mkv", "--out", "o", "--segments", "2", "--segment-seconds", "3"])


def test_plan_command():
    args = argparse.Namespace(segments=None, segment_seconds=2.5, context=None, upscale_args=[])
    assert ray_driver.plan_command("tv", "/in.mkv", "/w", args) == [
        "tv", "plan", "/in.mkv", "/w", "--segment-seconds", "2.5"
    ]  # fmt: skip
    args = argparse.Namespace(segments=4, segment_seconds=10.0, context=9, upscale_args=["-x"])
    assert ray_driver.plan_command("tv", "/in.mkv", "/w", args) == [
        "tv", "plan", "/in.mkv", "/w", "--segments", "4", "--context", "9", "--", "-x"
    ]  # fmt: skip


def test_segment_command():
    assert ray_driver.segment_command("tv", "/w/plan.json", 3, False) == [
        "tv", "segment", "/w/plan.json", "3"
    ]  # fmt: skip
    assert ray_driver.segment_command("tv", "/w/plan.json", 3, True)[-2:] == ["--device-id", "0"]


def test_inputs(tmp_path):
    for name in ["b.mp4", "a.mkv", "notes.txt", "c.Y4M"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.mkv").mkdir()
    found = ray_driver.find_inputs([str(tmp_path)])
    assert found == [str(tmp_path / n) for n in ["a.mkv", "b.mp4", "c.Y4M"]]
    assert ray_driver.find_inputs([str(tmp_path / "a.mkv"), str(tmp_path)]) == found
    (tmp_path / "sub.mkv" / "a.mov").write_bytes(b"")
    with pytest.raises(FarmError, match="same stem"):
        ray_driver.find_inputs([str(tmp_path / "a.mkv"), str(tmp_path / "sub.mkv")])
    with pytest.raises(FarmError, match="no such file"):
        ray_driver.find_inputs([str(tmp_path / "missing.mkv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FarmError, match="no video files"):
        ray_driver.find_inputs([str(tmp_path / "empty")])


def test_attempt_logs(tmp_path):
    """Attempts of one run numbered from 1, and how each ended."""
    plan = str(tmp_path / "plan.json")
    first = ray_driver.new_attempt_log(plan, 2, "run1")
    second = ray_driver.new_attempt_log(plan, 2, "run1")
    ray_driver.new_attempt_log(plan, 2, "run0")
    assert ray_driver.attempt_counts(str(tmp_path), "run1") == {2: 2}
    assert second == ray_driver.attempt_log(str(tmp_path), 2, "run1", 2)
    with open(first, "w") as f:
        f.write("# node n host h pid 1: tv segment\nsome progress\nerror: disk full\n# exit 3\n")
    assert ray_driver.attempt_outcome(first) == "exited with 3: error: disk full"
    assert "was lost" in ray_driver.attempt_outcome(second)


def test_run_segment_without_ray(tmp_path):
    """The segment command's exit status and output, through the attempt log."""
    fake = tmp_path / "turbovsr"
    fake.write_text('#!/bin/sh\necho "args: $*"\n[ "$3" != 1 ] || { echo boom >&2; exit 4; }\n')
    fake.chmod(0o755)
    plan = str(tmp_path / "plan.json")
    log = ray_driver.run_segment(str(fake), plan, 0, False, "r")
    with open(log) as f:
        assert f.read().splitlines()[1:] == [f"args: segment {plan} 0", "# exit 0"]
    with pytest.raises(ray_driver.SegmentFailed, match="exited with 4: boom"):
        ray_driver.run_segment(str(fake), plan, 1, False, "r")


def test_existing_plan(tmp_path):
    """A work folder's plan: kept when planning again gives the same, replaced while none of its
    segments is done, else refused."""
    fake = tmp_path / "turbovsr"
    fake.write_text(
        "#!/bin/sh\n"  # plan IN DIR --segments N: N segments
        'mkdir -p "$3" && printf \'{"segments": [%s]}\' '
        '"$(seq -s, -f \'{"sidecar": "s%g.json"}\' 0 $(($5 - 1)))" > "$3/plan.json"\n'
    )
    fake.chmod(0o755)
    workdir = str(tmp_path / "work")

    def plan(segments: int, done: bool = False) -> list[dict]:
        args = argparse.Namespace(segments=segments, context=None, upscale_args=[])
        path = ray_driver.ensure_plan(str(fake), "/in.mkv", workdir, args, "run")
        assert sorted(os.listdir(workdir)) == ["plan.json", *(["s0.json"] if done else [])]
        return ray_driver.load_plan(path)["segments"]

    assert len(plan(2)) == 2 and len(plan(2)) == 2
    assert len(plan(3)) == 3
    (tmp_path / "work" / "s0.json").write_text("{}")
    assert len(plan(3, done=True)) == 3
    with pytest.raises(FarmError, match="finished segments of another plan"):
        plan(4, done=True)
