"""The Ray driver (issue 21). `turbovsr plan` cuts each input into segments, each segment is a
Ray task that runs `turbovsr segment PLAN INDEX` on whichever node has a free slot, and
`turbovsr join` puts an input together once all its segments are done.

The work folder (`--out`) must be shared by every node: they read the plan and write their
segment there. It is also the only state. A segment whose sidecar exists is done, so running
the same command again resumes after the driver died. Each attempt at a segment writes a log to
`DIR/<stem>.segments/logs/`, which the driver reads to report retries."""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray import cloudpickle
from tqdm import tqdm

PROG = "turbovsr-farm"
VIDEO_EXTENSIONS = (".mkv", ".mp4", ".mov", ".webm", ".avi", ".ts", ".y4m")
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


class FarmError(Exception):
    """An input or a command that cannot go on: the driver prints it and exits 1."""


class SegmentFailed(Exception):
    """`turbovsr segment` exited non-zero; Ray retries the task."""


@dataclass
class InputJob:
    """One input: its plan, where its result goes, and its segments still to run."""

    source: str
    plan_path: str
    output: str
    segments: list[dict]
    pending: set[int] = field(default_factory=set)
    attempts_seen: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def workdir(self) -> str:
        return os.path.dirname(self.plan_path)

    def sidecar(self, segment: dict) -> str:
        """The file whose existence means that a segment is done (relative to the plan)."""
        return os.path.join(self.workdir, segment["sidecar"])


# The segment: one invocation, run by the Ray task (the k8s and Slurm jobs run the same line).


def segment_command(binary: str, plan_path: str, index: int, gpu: bool) -> list[str]:
    """`turbovsr segment PLAN INDEX`. A GPU task sees only its own GPU (Ray sets
    CUDA_VISIBLE_DEVICES), which is device 0; the device itself is in the plan's upscale args."""
    command = [binary, "segment", plan_path, str(index)]
    return [*command, "--device-id", "0"] if gpu else command


def run_segment(binary: str, plan_path: str, index: int, gpu: bool, run_id: str) -> str:
    """One attempt at a segment (the Ray task's body). The command's output goes to a new attempt
    log, framed by a header line and an exit line. Returns the log's path; raises SegmentFailed
    when the command fails."""
    command = segment_command(binary, plan_path, index, gpu)
    log_path = new_attempt_log(plan_path, index, run_id)
    with open(log_path, "a") as log:
        log.write(f"# node {current_node()} host {socket.gethostname()} pid {os.getpid()}: ")
        log.write(shlex.join(command) + "\n")
        log.flush()
        code = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        ).returncode
        log.write(f"# exit {code}\n")
    if code != 0:
        raise SegmentFailed(f"`{shlex.join(command)}` {attempt_outcome(log_path)}")
    return log_path


def current_node() -> str:
    """The Ray node this runs on ('-' outside Ray)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the segment killed when the worker that started it dies (a lost node,
    a cancelled task), so that no orphan keeps writing a segment that is retried elsewhere.
    Linux only (None elsewhere); prctl is looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# Attempt logs: logs/segment-INDEX.RUN.ATTEMPT.log in the input's work folder.


def logs_dir(workdir: str) -> str:
    return os.path.join(workdir, "logs")


def new_attempt_log(plan_path: str, index: int, run_id: str) -> str:
    """Creates the next attempt's log of a segment in this run (race-free: O_EXCL)."""
    folder = logs_dir(os.path.dirname(plan_path))
    os.makedirs(folder, exist_ok=True)
    for attempt in itertools.count(1):
        path = os.path.join(folder, f"segment-{index}.{run_id}.{attempt}.log")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def attempt_counts(workdir: str, run_id: str) -> dict[int, int]:
    """Segment index -> attempts started in this run, from the log names."""
    try:
        names = os.listdir(logs_dir(workdir))
    except FileNotFoundError:
        return {}
    counts: dict[int, int] = {}
    for name in names:
        parts = name.split(".")
        if len(parts) == 4 and parts[1] == run_id and parts[0].startswith("segment-"):
            index = int(parts[0].removeprefix("segment-"))
            counts[index] = max(counts.get(index, 0), int(parts[2]))
    return counts


def attempt_log(workdir: str, index: int, run_id: str, attempt: int) -> str:
    return os.path.join(logs_dir(workdir), f"segment-{index}.{run_id}.{attempt}.log")


def attempt_outcome(log_path: str) -> str:
    """How an attempt ended, from its log: the exit code and the command's last line, or that it
    never wrote its exit line (its worker or node was lost)."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except FileNotFoundError:
        lines = []
    if not lines or not lines[-1].startswith("# exit "):
        return "did not finish (its worker or node was lost)"
    output = [line for line in lines if not line.startswith("# ")]
    last = f": {output[-1]}" if output else ""
    return f"exited with {lines[-1].removeprefix('# exit ')}{last}"


# The command line.


def split_upscale_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """The driver's arguments and those after the first `--`."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, and after `--` the upscale arguments that the plan hands every segment."""
    ours, upscale = split_upscale_args(argv)
    parser = argparse.ArgumentParser(
        prog="python -m turbovsr_farm",
        description="Upscale videos on a Ray cluster: turbovsr plan, one Ray task per "
        "segment (turbovsr segment), turbovsr join. Rerunning resumes.",
        epilog="Arguments after -- go to every segment's upscale, e.g. -- --model bicubic "
        "or -- --device cuda --steps 4.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=f"video files or folders (their {' '.join(VIDEO_EXTENSIONS)} files, sorted)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="results DIR/<stem>EXT, work folders DIR/<stem>.segments (shared by every node)",
    )
    parser.add_argument(
        "--address",
        help="Ray cluster (default: auto when RAY_ADDRESS is set, "
        "else a local Ray started for this run)",
    )
    cut = parser.add_mutually_exclusive_group()
    cut.add_argument("--segments", type=int, metavar="N", help="segments per input")
    cut.add_argument(
        "--segment-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="segment length instead (default: %(default)s)",
    )
    parser.add_argument(
        "--context",
        type=int,
        metavar="F",
        help="frames each segment re-runs before its start (default: turbovsr plan's)",
    )
    parser.add_argument(
        "--gpus-per-segment",
        type=float,
        default=0,
        metavar="G",
        help="Ray GPUs per segment task (default: %(default)s)",
    )
    parser.add_argument(
        "--cpus-per-segment",
        type=float,
        default=1,
        metavar="C",
        help="Ray CPUs per segment task (default: %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="R",
        help="retries of a failed or lost segment (default: %(default)s)",
    )
    parser.add_argument(
        "--turbovsr",
        metavar="PATH",
        help="the binary, the same path on every "
        "node (default: $TURBOVSR_BIN, else turbovsr on PATH)",
    )
    parser.add_argument(
        "--encoder",
        metavar="DESC",
        help="the results' video encoder, a gst-launch description (turbovsr join --encoder; "
        "default: join's for EXT)",
    )
    parser.add_argument(
        "--audio-encoder",
        metavar="DESC",
        help="the results' audio encoder (turbovsr join --audio-encoder; default: join's)",
    )
    parser.add_argument(
        "--output-ext",
        default=".mkv",
        metavar="EXT",
        help="the results' container (default: %(default)s)",
    )
    args = parser.parse_args(ours)
    args.upscale_args = upscale
    if not args.output_ext.startswith("."):
        args.output_ext = "." + args.output_ext
    return args


def resolve_binary(path: str | None) -> str:
    """--turbovsr, else $TURBOVSR_BIN, else `turbovsr`: a path made absolute, or a bare name
    that each node looks up on its own PATH."""
    binary = path or os.environ.get("TURBOVSR_BIN") or "turbovsr"
    if os.sep in binary:
        binary = os.path.abspath(binary)
    if shutil.which(binary) is None:
        raise FarmError(f"{binary}: no such executable (--turbovsr PATH or TURBOVSR_BIN)")
    return binary


def find_inputs(paths: list[str]) -> list[str]:
    """The input files as absolute paths: files as given, folders' video files sorted. Inputs
    must differ in stem (it names the result and the work folder)."""
    inputs: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name.lower().endswith(VIDEO_EXTENSIONS)
                and os.path.isfile(os.path.join(path, name))
            )
            if not found:
                raise FarmError(f"{path}: no video files ({' '.join(VIDEO_EXTENSIONS)})")
            inputs += found
        elif os.path.isfile(path):
            inputs.append(path)
        else:
            raise FarmError(f"{path}: no such file or folder")
    inputs = list(dict.fromkeys(os.path.abspath(p) for p in inputs))  # once each
    stems: dict[str, str] = {}
    for path in inputs:
        other = stems.setdefault(stem(path), path)
        if other != path:
            raise FarmError(f"{other} and {path} have the same stem: their results would collide")
    return inputs


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# Plan and join, on the driver.


def plan_command(binary: str, source: str, workdir: str, args: argparse.Namespace) -> list[str]:
    """`turbovsr plan INPUT WORKDIR --segments N|--segment-seconds S [--context F] [-- ARGS]`."""
    if args.segments is not None:
        cut = ["--segments", str(args.segments)]
    else:
        cut = ["--segment-seconds", f"{args.segment_seconds:g}"]
    context = [] if args.context is None else ["--context", str(args.context)]
    upscale = ["--", *args.upscale_args] if args.upscale_args else []
    return [binary, "plan", source, workdir, *cut, *context, *upscale]


def run_checked(command: list[str], source: str) -> str:
    """Runs a driver-side command (plan, join); its stderr's last line on success."""
    run = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-20:])
        raise FarmError(f"{source}: `{shlex.join(command)}` exited with {run.returncode}:\n{tail}")
    lines = run.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def load_plan(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def ensure_plan(
    binary: str, source: str, workdir: str, args: argparse.Namespace, run_id: str
) -> str:
    """WORKDIR/plan.json for these arguments: planned when absent. An existing plan is kept when a
    fresh plan equals it (a resume); a different one replaces it only while no segment of it is
    done, else the work folder is refused."""
    plan_path = os.path.join(workdir, "plan.json")
    if not os.path.exists(plan_path):
        run_checked(plan_command(binary, source, workdir, args), source)
        return plan_path
    fresh_dir = os.path.join(workdir, f"replan-{run_id}")
    try:
        run_checked(plan_command(binary, source, fresh_dir, args), source)
        fresh_path = os.path.join(fresh_dir, "plan.json")
        old = load_plan(plan_path)
        if load_plan(fresh_path) != old:
            if any(os.path.exists(os.path.join(workdir, s["sidecar"])) for s in old["segments"]):
                raise FarmError(
                    f"{source}: {workdir} holds finished segments of another plan (other "
                    "arguments or another input): remove it or choose another --out"
                )
            os.replace(fresh_path, plan_path)
    finally:
        shutil.rmtree(fresh_dir, ignore_errors=True)
    return plan_path


def prepare(binary: str, source: str, args: argparse.Namespace, run_id: str) -> InputJob:
    """Plans an input and reports the segments that are done already (skipped)."""
    workdir = os.path.join(os.path.abspath(args.out), stem(source) + ".segments")
    plan_path = ensure_plan(binary, source, workdir, args, run_id)
    output = os.path.join(os.path.abspath(args.out), stem(source) + args.output_ext)
    job = InputJob(source, plan_path, output, load_plan(plan_path)["segments"])
    for segment in job.segments:
        if os.path.exists(job.sidecar(segment)):
            print(
                f"{PROG}: {source}: segment {segment['index']} already done "
                f"({segment['sidecar']}), skipped",
                file=sys.stderr,
            )
        else:
            job.pending.add(segment["index"])
    return job


def join_command(binary: str, job: InputJob, args: argparse.Namespace) -> list[str]:
    """`turbovsr join PLAN OUT --overwrite [--encoder DESC] [--audio-encoder DESC]`."""
    command = [binary, "join", job.plan_path, job.output, "--overwrite"]
    if args.encoder is not None:
        command += ["--encoder", args.encoder]
    if args.audio_encoder is not None:
        command += ["--audio-encoder", args.audio_encoder]
    return command


def join(binary: str, job: InputJob, args: argparse.Namespace) -> None:
    """Joins an input once every segment of it is done; a failure is the input's."""
    try:
        run_checked(join_command(binary, job, args), job.source)
        tqdm.write(f"{PROG}: {job.source}: joined into {job.output}", file=sys.stderr)
    except FarmError as err:
        job.failures.append(str(err))
        tqdm.write(f"{PROG}: {err}", file=sys.stderr)


# The Ray side.


def connect(address: str | None) -> None:
    """--address, else `auto` when RAY_ADDRESS is set, else a local Ray for this run."""
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    ray.init(address=address)


def submit(jobs: list[InputJob], binary: str, args: argparse.Namespace, run_id: str) -> dict:
    """One Ray task per pending segment: ObjectRef -> (job, index)."""
    # By value: the workers need Ray and turbovsr, not this package.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(
        num_cpus=args.cpus_per_segment,
        num_gpus=args.gpus_per_segment,
        max_retries=args.retries,
        retry_exceptions=True,
    )(run_segment)
    gpu = args.gpus_per_segment > 0
    return {
        task.remote(binary, job.plan_path, index, gpu, run_id): (job, index)
        for job in jobs
        for index in sorted(job.pending)
    }


def report_retries(jobs: list[InputJob], retries: int, run_id: str) -> None:
    """A line for each new attempt after the first: how the one before it ended."""
    for job in jobs:
        if not job.pending:
            continue
        for index, count in attempt_counts(job.workdir, run_id).items():
            seen = job.attempts_seen.get(index, 0)
            for attempt in range(max(seen, 1) + 1, count + 1):
                before = attempt_outcome(attempt_log(job.workdir, index, run_id, attempt - 1))
                tqdm.write(
                    f"{PROG}: {job.source}: segment {index}: attempt {attempt - 1} "
                    f"{before}; retry {attempt - 1} of {retries}",
                    file=sys.stderr,
                )
            job.attempts_seen[index] = max(seen, count)


def failure_reason(err: Exception) -> str:
    """The task's own exception for a failed command, else Ray's first line (a lost worker)."""
    cause = getattr(err, "cause", None)
    if cause is not None:
        return str(cause)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def finish(ref: ray.ObjectRef, job: InputJob, index: int, retries: int, run_id: str) -> None:
    """Collects a segment's task: done, or failed after its retries (named with its input)."""
    job.pending.discard(index)
    try:
        ray.get(ref)
    except ray.exceptions.RayError as err:
        attempts = attempt_counts(job.workdir, run_id).get(index, 0)
        message = (
            f"{job.source}: segment {index} failed after {attempts} attempts (--retries "
            f"{retries}): {failure_reason(err)} (logs: {logs_dir(job.workdir)})"
        )
        job.failures.append(message)
        tqdm.write(f"{PROG}: {message}", file=sys.stderr)


def run_jobs(jobs: list[InputJob], binary: str, args: argparse.Namespace, run_id: str) -> int:
    """Fans every pending segment out, joins each input when its last segment is done; the exit
    code (1 when any segment or join failed)."""
    refs = submit(jobs, binary, args, run_id)
    total = sum(len(job.segments) for job in jobs)
    with tqdm(total=total, initial=total - len(refs), unit="segment", desc=PROG) as bar:
        for job in jobs:
            if not job.pending:
                join(binary, job, args)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            report_retries(jobs, args.retries, run_id)
            for ref in done:
                job, index = refs.pop(ref)
                finish(ref, job, index, args.retries, run_id)
                bar.update()
                if not job.pending and not job.failures:
                    join(binary, job, args)
    failures = [failure for job in jobs for failure in job.failures]
    for failure in failures:
        print(f"{PROG}: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def farm(args: argparse.Namespace) -> int:
    binary = resolve_binary(args.turbovsr)
    inputs = find_inputs(args.inputs)
    os.makedirs(args.out, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    jobs = [prepare(binary, source, args, run_id) for source in inputs]
    connect(args.address)
    try:
        return run_jobs(jobs, binary, args, run_id)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return farm(args)
    except FarmError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
