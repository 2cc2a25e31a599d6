"""The Kubernetes Indexed Job and the Slurm array, as far as a machine without either can check
them: the manifests parsed, the scripts parsed by bash, the array's body run here once per index
(SLURM_ARRAY_TASK_ID), and submit.sh run through an sbatch that runs each job here at once, with a
recording stand-in for turbovsr and, when TURBOVSR_BIN is set, with the binary itself (the result
joined and probed like the Ray farm's)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from common import FARM, LOSSLESS, UPSCALE_ARGS, assert_same_video, probe

K8S = FARM / "k8s"
SLURM = FARM / "slurm"
SCRIPTS = [SLURM / "submit.sh", SLURM / "turbovsr-segments.sbatch", SLURM / "turbovsr-join.sbatch",
           FARM.parent / "scripts" / "farm-env.sh"]  # fmt: skip
SEGMENTS = 4

# Records its arguments; `plan IN DIR ...` writes a plan of SEGMENTS segments.
RECORDER = """#!/bin/sh
echo "$*" >> "$TURBOVSR_RECORD"
if [ "$1" = plan ]; then
  mkdir -p "$3"
  echo '{"segments": [{"index": 0}, {"index": 1}, {"index": 2}, {"index": 3}]}' > "$3/plan.json"
fi
"""

# Runs a job at once, here: an array's tasks one after the other with SLURM_ARRAY_TASK_ID (so
# afterok holds). Records its arguments; prints a job id (--parsable).
SBATCH = """#!{python}
import itertools, json, os, subprocess, sys
args = sys.argv[1:]
options = list(itertools.takewhile(lambda a: a.startswith("--"), args))
script = args[len(options):]
with open(os.environ["SBATCH_RECORD"], "a") as f:
    f.write(json.dumps(args) + "\\n")
with open(os.environ["SBATCH_RECORD"]) as f:
    job = 100 + len(f.readlines())
opts = dict((o[2:].split("=", 1) + [""])[:2] for o in options)
tasks = [None]
if "array" in opts:
    first, last = opts["array"].split("-")
    tasks = range(int(first), int(last) + 1)
for task in tasks:
    env = dict(os.environ, SLURM_JOB_ID=str(job))
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    if subprocess.run(["bash", *script], env=env, stdout=sys.stderr).returncode != 0:
        sys.exit(1)
print(job)
"""


def documents(name: str) -> list[dict]:
    with open(K8S / name) as f:
        return list(yaml.safe_load_all(f))


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_k8s_segments_job():
    (job,) = documents("turbovsr-segments.yaml")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and isinstance(spec["parallelism"], int)
    assert isinstance(spec["backoffLimitPerIndex"], int)
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"  # what backoffLimitPerIndex requires
    (container,) = pod["containers"]
    assert container["command"] == [
        "turbovsr", "segment", "/work/plan.json", "$(JOB_COMPLETION_INDEX)"
    ]  # fmt: skip
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert_work_volume(pod, container)


def assert_work_volume(pod: dict, container: dict) -> None:
    """/work is the shared volume, a PVC."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/work"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"]


def test_k8s_plan_and_join_jobs():
    (plan,) = documents("turbovsr-plan.yaml")
    (join,) = documents("turbovsr-join.yaml")
    (segments,) = documents("turbovsr-segments.yaml")
    for job in (plan, join):
        assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
        (container,) = pod_spec(job)["containers"]
        assert_work_volume(pod_spec(job), container)
    (planner,) = pod_spec(plan)["containers"]
    assert planner["command"][:4] == ["turbovsr", "plan", "/work/input.mkv", "/work"]
    cut = planner["command"].index("--segments")
    assert int(planner["command"][cut + 1]) == segments["spec"]["completions"]
    (joiner,) = pod_spec(join)["containers"]
    assert joiner["command"][:3] == ["turbovsr", "join", "/work/plan.json"]


def test_shell_scripts_parse():
    for script in SCRIPTS:
        run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert run.returncode == 0, f"{script}: {run.stderr}"
        assert os.access(script, os.X_OK), f"{script} is not executable"


def recorder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The recording turbovsr and the environment that points at it."""
    fake = tmp_path / "bin" / "turbovsr"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(RECORDER)
    fake.chmod(0o755)
    record = tmp_path / "turbovsr.record"
    env = {**os.environ, "TURBOVSR_BIN": str(fake), "TURBOVSR_RECORD": str(record)}
    env.pop("TURBOVSR_JOIN_ENCODER", None)
    return record, env


def test_array_body_runs_each_segment(tmp_path):
    """The sbatch script as an array task: `turbovsr segment PLAN INDEX` for its index."""
    record, env = recorder(tmp_path)
    plan = tmp_path / "work" / "plan.json"
    for index in range(SEGMENTS):
        task = {**env, "SLURM_ARRAY_TASK_ID": str(index)}
        script = str(SLURM / "turbovsr-segments.sbatch")
        subprocess.run(["bash", script, str(plan)], env=task, check=True)
    assert record.read_text().splitlines() == [f"segment {plan} {i}" for i in range(SEGMENTS)]
    run = subprocess.run(["bash", script, str(plan)], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "SLURM_ARRAY_TASK_ID" in run.stderr


def submit(tmp_path: Path, env: dict[str, str], clip: Path, out: Path) -> list[list[str]]:
    """submit.sh through the local sbatch: its sbatch calls."""
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir(exist_ok=True)
    sbatch.write_text(SBATCH.replace("{python}", sys.executable))
    sbatch.chmod(0o755)
    calls = tmp_path / "sbatch.record"
    env = {**env, "PATH": f"{sbatch.parent}{os.pathsep}{env['PATH']}", "SBATCH_RECORD": str(calls)}
    command = [str(SLURM / "submit.sh"), str(clip), str(tmp_path / "work"), str(out),
               "--segments", str(SEGMENTS), "--", *UPSCALE_ARGS]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["101", "102"]
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_submit_plans_then_array_then_join(tmp_path):
    record, env = recorder(tmp_path)
    clip, out = tmp_path / "clip.mkv", tmp_path / "out.mkv"
    clip.write_bytes(b"")
    calls = submit(tmp_path, env, clip, out)
    plan = tmp_path / "work" / "plan.json"
    assert calls == [
        ["--parsable", f"--array=0-{SEGMENTS - 1}", str(SLURM / "turbovsr-segments.sbatch"),
         str(plan)],
        ["--parsable", "--dependency=afterok:101", str(SLURM / "turbovsr-join.sbatch"), str(plan),
         str(out)],
    ]  # fmt: skip
    work = tmp_path / "work"
    assert record.read_text().splitlines() == [
        f"plan {clip} {work} --segments {SEGMENTS} -- {' '.join(UPSCALE_ARGS)}",
        *[f"segment {plan} {i}" for i in range(SEGMENTS)],
        f"join {plan} {out} --overwrite",
    ]


def test_submit_with_the_binary(binary, media, tmp_path):
    """The Slurm path with the real binary: the in-process upscale."""
    out = tmp_path / "out.mkv"
    env = {**os.environ, "TURBOVSR_BIN": binary, "TURBOVSR_JOIN_ENCODER": LOSSLESS}
    submit(tmp_path, env, media.clip, out)
    assert_same_video(probe(binary, out), media.reference)
