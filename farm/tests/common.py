"""What the farm's tests share: a clip with audio and its in-process upscale (the reference
every farmed result must equal), `turbovsr probe`, and the driver run as users run it
(`python -m turbovsr_farm`)."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FARM = Path(__file__).resolve().parent.parent
FRAMES = 200  # 8 s at 25 fps
AUDIO_RATE = 48000
AUDIO_FRAME = 960  # samples: one 20 ms Opus frame, the tolerance of the audio's duration
UPSCALE_ARGS = ["--model", "bicubic"]  # frame-independent: segments give the same pixels
# The results' encoding, in process and joined: lossless (FFV1, as the segments' intermediates),
# so that the frames' CRCs can be compared.
LOSSLESS = "capsfilter caps=video/x-raw,format=BGRx ! avenc_ffv1"


@dataclass
class Media:
    clip: Path  # alone in its folder (a folder INPUT)
    reference: dict  # probe of `turbovsr upscale clip` in one process


def make_clip(path: Path, width: int, height: int) -> None:
    """FRAMES frames at 25 fps (x264) with exactly FRAMES / 25 s of audio (Opus), in Matroska."""
    gst = shutil.which("gst-launch-1.0") or "gst-launch-1.0"
    buffers = FRAMES * AUDIO_RATE // 25 // AUDIO_FRAME
    subprocess.run(
        [gst, "-q", "videotestsrc", f"num-buffers={FRAMES}", "pattern=ball", "!",
         f"video/x-raw,width={width},height={height},framerate=25/1", "!", "videoconvert", "!",
         "x264enc", "!", "matroskamux", "name=m", "!", "filesink", f"location={path}",
         "audiotestsrc", f"num-buffers={buffers}", f"samplesperbuffer={AUDIO_FRAME}", "!",
         f"audio/x-raw,rate={AUDIO_RATE}", "!", "audioconvert", "!", "opusenc", "!", "m."],
        check=True,
    )  # fmt: skip


def make_media(binary: str, folder: Path, width: int, height: int) -> Media:
    """A clip and the probe of its in-process upscale (lossless)."""
    (folder / "in").mkdir(parents=True)
    clip = folder / "in" / "clip.mkv"
    make_clip(clip, width, height)
    reference = folder / "reference.mkv"
    run = subprocess.run(
        [binary, "upscale", str(clip), str(reference), *UPSCALE_ARGS, "--encoder", LOSSLESS,
         "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return Media(clip, probe(binary, reference))


def probe(binary: str, path: Path) -> dict:
    run = subprocess.run([binary, "probe", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assert_same_video(result: dict, reference: dict) -> None:
    """The farmed result is the in-process upscale: frames, PTS, pixels (CRCs), and the audio's
    duration within one audio frame."""
    video, ref = result["video"], reference["video"]
    assert video["frames"] == ref["frames"] == FRAMES
    assert (video["width"], video["height"]) == (ref["width"], ref["height"])
    assert video["pts"] == ref["pts"]
    assert video["frame_crc"] == ref["frame_crc"]
    assert result["audio"] is not None and reference["audio"] is not None
    tolerance = AUDIO_FRAME * 10**9 // AUDIO_RATE
    assert abs(result["audio"]["duration_ns"] - reference["audio"]["duration_ns"]) <= tolerance


def driver_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "turbovsr_farm", *args]


def driver_env() -> dict[str, str]:
    """The test's environment with the farm importable (as from farm/)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(FARM) + (os.pathsep + path if path else "")}
