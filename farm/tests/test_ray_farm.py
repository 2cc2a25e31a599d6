"""The Ray driver against a cluster of three Ray nodes on the loopback address (a head without
CPUs, so that segments run on the two workers), run as users run it: `python -m turbovsr_farm
... --address ADDR`. Farmed results must be the in-process upscale exactly; a worker node lost in
the middle of a segment costs a retry, not the result; a finished work folder resumes to
"every segment skipped" and the same output."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from common import (
    LOSSLESS,
    UPSCALE_ARGS,
    assert_same_video,
    driver_command,
    driver_env,
    make_media,
    probe,
)
from ray.cluster_utils import Cluster

LOOPBACK = "127.0.0.1"
DRIVER_TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster():
    """Started and shut down by the module, also when a test fails. Quick health checks, so
    that a removed node is declared dead (and its task retried) within about a second."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": LOOPBACK,
            "include_dashboard": False,
            "_system_config": {
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 200,
                "health_check_failure_threshold": 3,
            },
        },
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def farm_args(cluster, binary: str, inputs, out: Path, *options: str) -> list[str]:
    return [*map(str, inputs), "--out", str(out), "--address", cluster.address,
            "--turbovsr", binary, "--encoder", LOSSLESS, *options, "--", *UPSCALE_ARGS]  # fmt: skip


def drive(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        driver_command(*args), env=driver_env(), capture_output=True, text=True,
        timeout=DRIVER_TIMEOUT,
    )  # fmt: skip


def test_segments_are_the_in_process_upscale(binary, media, cluster, tmp_path):
    out = tmp_path / "out"
    run = drive(*farm_args(cluster, binary, [media.clip.parent], out, "--segments", "4"))
    assert run.returncode == 0, run.stderr
    plan = json.loads((out / "clip.segments" / "plan.json").read_text())
    assert [s["index"] for s in plan["segments"]] == [0, 1, 2, 3]
    assert_same_video(probe(binary, out / "clip.mkv"), media.reference)


def test_failed_segment_names_input_and_segment(binary, media, cluster, tmp_path):
    """A segment that fails every attempt: each retry reported, a non-zero exit naming the input
    and the segment, the other segments done, nothing joined."""
    flaky = tmp_path / "turbovsr"
    flaky.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = segment ] && [ "$3" = 2 ]; then\n'
        '  echo "injected failure of segment 2" >&2; exit 3\n'
        "fi\n"
        f'exec "{binary}" "$@"\n'
    )
    flaky.chmod(0o755)
    out = tmp_path / "out"
    args = farm_args(cluster, str(flaky), [media.clip], out, "--segments", "4", "--retries", "1")
    run = drive(*args)
    assert run.returncode == 1, run.stderr
    assert f"{media.clip}: segment 2: attempt 1 exited with 3" in run.stderr
    assert "retry 1 of 1" in run.stderr
    assert f"{media.clip}: segment 2 failed after 2 attempts" in run.stderr
    assert "injected failure of segment 2" in run.stderr
    plan = json.loads((out / "clip.segments" / "plan.json").read_text())
    done = [(out / "clip.segments" / s["sidecar"]).exists() for s in plan["segments"]]
    assert done == [True, True, False, True]
    assert not (out / "clip.mkv").exists()


@pytest.fixture(scope="module")
def slow_media(binary, tmp_path_factory):
    """A larger clip: segments long enough to lose a node in the middle of one."""
    return make_media(binary, tmp_path_factory.mktemp("slow-media"), 128, 96)


def segment_in_progress(workdir: Path) -> tuple[int, str] | None:
    """A segment whose output has appeared (under its name or a temporary one: seg_0001.*) while
    its sidecar has not, and the Ray node running it (from its attempt log's header), or None."""
    plan_path = workdir / "plan.json"
    if not plan_path.exists():
        return None
    for segment in json.loads(plan_path.read_text())["segments"]:
        sidecar = workdir / segment["sidecar"]
        outputs = workdir.glob(Path(segment["output"]).stem + ".*")
        if not sidecar.exists() and any(path != sidecar for path in outputs):
            logs = sorted((workdir / "logs").glob(f"segment-{segment['index']}.*.log"))
            header = logs[-1].read_text().split("\n", 1)[0] if logs else ""
            if header.startswith("# node "):
                return segment["index"], header.split()[2]
    return None


def kill_mid_segment(cluster, workdir: Path, driver: subprocess.Popen) -> int:
    """Waits for a segment in progress, removes its worker node and adds a fresh one (the same
    capacity). The segment's index."""
    deadline = time.monotonic() + DRIVER_TIMEOUT
    while (found := segment_in_progress(workdir)) is None:
        assert driver.poll() is None, "the driver ended before a segment was seen in progress"
        assert time.monotonic() < deadline, "no segment was seen in progress"
        time.sleep(0.01)
    index, node_id = found
    victim = next(node for node in cluster.worker_nodes if node.node_id == node_id)
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    return index


def test_lost_node_then_resume(binary, slow_media, cluster, tmp_path):
    out = tmp_path / "out"
    args = farm_args(cluster, binary, [slow_media.clip], out, "--segments", "4")
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            driver_command(*args), env=driver_env(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            index = kill_mid_segment(cluster, out / "clip.segments", driver)
            assert driver.wait(timeout=DRIVER_TIMEOUT) == 0, log_path.read_text()
        finally:
            driver.kill()
    log = log_path.read_text()
    assert f"segment {index}: attempt 1 did not finish" in log, log
    result = probe(binary, out / "clip.mkv")
    assert_same_video(result, slow_media.reference)

    again = drive(*args)
    assert again.returncode == 0, again.stderr
    for i in range(4):
        assert f"{slow_media.clip}: segment {i} already done" in again.stderr, again.stderr
    assert probe(binary, out / "clip.mkv") == result
