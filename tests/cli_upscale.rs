//! `turbovsr upscale` end to end (DESIGN §7): short videos made with GStreamer, the built binary
//! run on them with the tiny random checkpoint and with the bicubic baseline, and the output files
//! read back with a decoding pipeline (frame count, size, duration, audio).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, Once};

use gst::prelude::*;

mod common;

static INIT: Once = Once::new();

fn init() {
    INIT.call_once(|| gst::init().unwrap());
}

/// A scratch folder per test (cargo's per-target temp dir; the pid keeps concurrent runs apart).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-upscale-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a gst-launch style description to EOS.
fn run_launch(description: &str) {
    init();
    let pipeline = gst::parse::launch(description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{description}: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// `frames` frames of `width`x`height` test video at 25 fps, H.264 in Matroska, with
/// `frames`/25 s of a sine tone in Opus when `audio`.
fn make_input(path: &Path, frames: u32, width: u32, height: u32, audio: bool) {
    let mut desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,width={width},height={height},framerate=25/1 ! videoconvert ! \
         x264enc speed-preset=ultrafast ! matroskamux name=mux ! filesink location={}",
        path.display()
    );
    if audio {
        // 48 kHz in 1920-sample buffers: one buffer per video frame.
        desc += &format!(
            " audiotestsrc num-buffers={frames} samplesperbuffer=1920 ! \
             audio/x-raw,rate=48000,channels=2 ! audioconvert ! opusenc ! mux."
        );
    }
    run_launch(&desc);
}

fn upscale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turbovsr"))
        .arg("upscale")
        .args(args)
        .output()
        .expect("run turbovsr")
}

fn check_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "turbovsr upscale failed: {stderr}");
    stderr
}

/// What a decoding pipeline finds in a file.
#[derive(Debug, Default)]
struct Probe {
    video_frames: u64,
    size: Option<(i32, i32)>,
    duration: Option<gst::ClockTime>,
    /// End of the last video frame.
    video_end: Option<gst::ClockTime>,
    audio_buffers: u64,
}

fn probe(path: &Path) -> Probe {
    init();
    let result = Arc::new(Mutex::new(Probe::default()));
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().unwrap())
        .build()
        .unwrap();
    let decode = gst::ElementFactory::make("decodebin").build().unwrap();
    pipeline.add_many([&src, &decode]).unwrap();
    src.link(&decode).unwrap();
    let weak = pipeline.downgrade();
    let r = Arc::clone(&result);
    decode.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let caps = pad.current_caps().unwrap();
        let s = caps.structure(0).unwrap();
        let video = s.name().starts_with("video/");
        if video {
            r.lock().unwrap().size = Some((s.get("width").unwrap(), s.get("height").unwrap()));
        }
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        let r = Arc::clone(&r);
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let buffer = info.buffer().unwrap();
                let mut r = r.lock().unwrap();
                if video {
                    r.video_frames += 1;
                    let end = buffer.pts().unwrap() + buffer.duration().unwrap_or_default();
                    r.video_end = r.video_end.max(Some(end));
                } else {
                    r.audio_buffers += 1;
                }
                gst::PadProbeReturn::Ok
            });
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("probing {}: {}", path.display(), e.error()),
            gst::MessageView::AsyncDone(_) => {
                result.lock().unwrap().duration = pipeline.query_duration::<gst::ClockTime>();
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let probe = std::mem::take(&mut *result.lock().unwrap());
    probe
}

/// Frame count, size and duration of an upscaled file (25 fps input).
fn assert_video(p: &Probe, frames: u64, width: i32, height: i32) {
    assert_eq!(p.video_frames, frames, "{p:?}");
    assert_eq!(p.size, Some((width, height)), "{p:?}");
    let want = gst::ClockTime::from_mseconds(40 * frames);
    let frame = gst::ClockTime::from_mseconds(40);
    let near = |t: gst::ClockTime| t + frame >= want && t <= want + frame;
    let end = p.video_end.expect("video timestamps");
    assert!(
        near(end),
        "last frame ends at {end}, expected {want}: {p:?}"
    );
    let duration = p.duration.expect("a duration");
    assert!(
        near(duration),
        "duration {duration}, expected {want}: {p:?}"
    );
}

#[test]
fn tiny_model_to_matroska_keeps_frames_size_and_duration() {
    let dir = scratch("tiny");
    let input = dir.join("in.mkv");
    make_input(&input, 12, 32, 24, false);
    let output = dir.join("out.mkv");
    let stderr = check_ok(&upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--model",
        common::tiny_model("cli-upscale").to_str().unwrap(),
        "--steps",
        "1",
        "--window",
        "9",
        "--overlap",
        "1",
        "--color-fix",
        "wavelet",
        "--device",
        "cpu",
    ]));
    assert!(stderr.contains("wrote 12 frames"), "{stderr}");
    assert_video(&probe(&output), 12, 128, 96);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--side-by-side`: one PNG of (input bicubic-upscaled | separator | output). With
/// `--model bicubic` both halves are the same picture, up to the element's 8-bit YUV output.
#[test]
fn side_by_side_png_of_bicubic_has_two_equal_halves() {
    let dir = scratch("side-by-side");
    let input = dir.join("in.mkv");
    make_input(&input, 11, 40, 30, false);
    let png = dir.join("sbs.png");
    let stderr = check_ok(&upscale(&[
        input.to_str().unwrap(),
        dir.join("out.mkv").to_str().unwrap(),
        "--model",
        "bicubic",
        "--side-by-side",
        png.to_str().unwrap(),
    ]));
    // The middle of 11 frames.
    assert!(stderr.contains("(frame 5:"), "{stderr}");
    let sep = gstturbovsr::cli::SIDE_BY_SIDE_SEPARATOR;
    let (w, h, rgb) = common::png::read_rgb8(&png);
    assert_eq!((w, h), (2 * 160 + sep, 120));
    let (mut diff, mut n) = (0u64, 0u64);
    for y in 0..h {
        for x in 0..160 {
            for c in 0..3 {
                let left = rgb[3 * (y * w + x) + c] as i64;
                let right = rgb[3 * (y * w + x + 160 + sep) + c] as i64;
                diff += left.abs_diff(right);
                n += 1;
            }
        }
        // The separator is white.
        assert!(rgb[3 * (y * w + 160)..3 * (y * w + 160 + sep)]
            .iter()
            .all(|&v| v == 255));
    }
    let mean = diff as f64 / n as f64;
    assert!(mean < 3.0, "mean |left - right| = {mean}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No `--model`: the shipped default model upscales every frame 4x; `--side-by-side-frame`
/// picks the frame.
#[test]
fn default_model_and_side_by_side_frame() {
    let dir = scratch("default-model");
    let input = dir.join("in.mkv");
    make_input(&input, 9, 32, 24, false);
    let output = dir.join("out.mkv");
    let png = dir.join("sbs.png");
    let stderr = check_ok(&upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--steps",
        "1",
        "--window",
        "9",
        "--overlap",
        "1",
        "--device",
        "cpu",
        "--side-by-side",
        png.to_str().unwrap(),
        "--side-by-side-frame",
        "2",
    ]));
    assert!(stderr.contains("model default"), "{stderr}");
    assert!(stderr.contains("(frame 2:"), "{stderr}");
    assert_video(&probe(&output), 9, 128, 96);
    let (w, h, _) = common::png::read_rgb8(&png);
    let sep = gstturbovsr::cli::SIDE_BY_SIDE_SEPARATOR;
    assert_eq!((w, h), (2 * 128 + sep, 96));
    // A frame past the end: the last frame, said so.
    let stderr = check_ok(&upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--overwrite",
        "--model",
        "bicubic",
        "--side-by-side",
        png.to_str().unwrap(),
        "--side-by-side-frame",
        "100",
    ]));
    assert!(stderr.contains("past the last frame (8)"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bicubic_to_mp4_passes_audio_through() {
    let dir = scratch("audio");
    let input = dir.join("in.mkv");
    make_input(&input, 10, 40, 30, true);
    let output = dir.join("out.mp4");
    check_ok(&upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--model",
        "bicubic",
        "--scale",
        "2",
    ]));
    let p = probe(&output);
    assert_video(&p, 10, 80, 60);
    assert!(p.audio_buffers > 0, "no audio in the output: {p:?}");
    // Again without audio, over the existing file.
    let out = upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--model",
        "bicubic",
        "--scale",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--overwrite"),
        "{stderr}"
    );
    check_ok(&upscale(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--model",
        "bicubic",
        "--scale",
        "2",
        "--no-audio",
        "--overwrite",
    ]));
    let p = probe(&output);
    assert_video(&p, 10, 80, 60);
    assert_eq!(p.audio_buffers, 0, "{p:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn png_sequence_y4m_and_webm_outputs() {
    let dir = scratch("png");
    let input = dir.join("in.mkv");
    make_input(&input, 5, 16, 16, true);
    let pattern = dir.join("frame_%03d.png");
    let stderr = check_ok(&upscale(&[
        input.to_str().unwrap(),
        pattern.to_str().unwrap(),
        "--model",
        "bicubic",
    ]));
    // PNG holds no audio: the tool says it dropped it.
    assert!(stderr.contains("holds no audio"), "{stderr}");
    let mut pngs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png"))
        .collect();
    pngs.sort();
    assert_eq!(
        pngs,
        (0..5)
            .map(|i| format!("frame_{i:03}.png"))
            .collect::<Vec<_>>()
    );
    let y4m = dir.join("out.y4m");
    check_ok(&upscale(&[
        input.to_str().unwrap(),
        y4m.to_str().unwrap(),
        "--model",
        "bicubic",
        "--scale",
        "3",
    ]));
    let text = std::fs::read(&y4m).unwrap();
    let header = String::from_utf8_lossy(&text[..text.iter().position(|&b| b == b'\n').unwrap()]);
    assert!(
        header.starts_with("YUV4MPEG2 ") && header.contains(" W48 H48 "),
        "{header}"
    );
    let frames = text.windows(6).filter(|w| w == b"FRAME\n").count();
    assert_eq!(frames, 5);
    let webm = dir.join("out.webm");
    check_ok(&upscale(&[
        input.to_str().unwrap(),
        webm.to_str().unwrap(),
        "--model",
        "bicubic",
    ]));
    let p = probe(&webm);
    assert_video(&p, 5, 64, 64);
    assert!(p.audio_buffers > 0, "{p:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_exit_non_zero_and_name_the_problem() {
    let dir = scratch("errors");
    let missing = dir.join("no-such-input.mkv");
    let out = upscale(&[
        missing.to_str().unwrap(),
        dir.join("out.mkv").to_str().unwrap(),
        "--model",
        "bicubic",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-input.mkv"), "{stderr}");

    // Not a video: the pipeline's own error comes back.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a video\n").unwrap();
    let out = upscale(&[
        text.to_str().unwrap(),
        dir.join("out.mkv").to_str().unwrap(),
        "--model",
        "bicubic",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("turbovsr: "), "{stderr}");
    // Nothing was written: no empty file is left behind.
    assert!(!dir.join("out.mkv").exists());

    // A bad model folder: the element's load error names it.
    let input = dir.join("in.mkv");
    make_input(&input, 2, 16, 16, false);
    let out = upscale(&[
        input.to_str().unwrap(),
        dir.join("out.mkv").to_str().unwrap(),
        "--model",
        "/nonexistent/model-dir",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/model-dir"), "{stderr}");

    // An unknown extension.
    let out = upscale(&[
        input.to_str().unwrap(),
        dir.join("out.avi").to_str().unwrap(),
        "--model",
        "bicubic",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("out.avi"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn ctrl_c_finishes_a_playable_file() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = scratch("sigint");
    let input = dir.join("in.mkv");
    // Far more frames than are processed before the signal: the tiny model runs a few windows
    // of 9 frames per second here, the signal goes out at the first progress line.
    make_input(&input, 400, 32, 32, true);
    let output = dir.join("out.mkv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_turbovsr"))
        .args([
            "upscale",
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--model",
            common::tiny_model("cli-upscale").to_str().unwrap(),
            "--steps",
            "1",
            "--window",
            "9",
            "--overlap",
            "1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no progress: {log}"
        );
        log += &line;
        if line.starts_with("frame ") {
            break;
        }
    }
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log += &rest;
    let status = child.wait().unwrap();
    assert!(!status.success(), "{log}");
    let written: u64 = log
        .split("holds the first ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no interruption summary: {log}"));
    assert!(written > 0 && written < 400, "{log}");
    let p = probe(&output);
    assert_eq!(p.video_frames, written, "{p:?}\n{log}");
    assert_eq!(p.size, Some((128, 128)));
    assert!(p.audio_buffers > 0, "{p:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
