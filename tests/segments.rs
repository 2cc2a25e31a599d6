//! Scale-out (DESIGN §9) end to end with the built binary: `turbovsr upscale --start/--end`,
//! `plan`, `segment`, `join` and `probe` on short clips with audio. With the bicubic baseline,
//! which upscales every frame alone, and lossless files, a joined run must equal the in-process
//! run frame for frame, timestamp for timestamp, sample for sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gst::prelude::*;
use serde_json::Value;

mod common;

/// The lossless encoding both sides of a comparison write.
const LOSSLESS: &str = "capsfilter caps=video/x-raw,format=BGRx ! avenc_ffv1";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("segments-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `frames` frames of 48x32 test video at 25 fps (H.264, key frames every 12) with a tone of
/// the same length in Opus, in Matroska.
fn make_clip(path: &Path, frames: u32) {
    common::init();
    let pipeline = common::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,width=48,height=32,framerate=25/1 ! videoconvert ! \
         x264enc speed-preset=ultrafast key-int-max=12 ! matroskamux name=mux ! \
         filesink location={} \
         audiotestsrc num-buffers={frames} samplesperbuffer=1920 ! \
         audio/x-raw,rate=48000,channels=2 ! audioconvert ! opusenc ! mux.",
        path.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(common::finish(&pipeline), None);
    pipeline.set_state(gst::State::Null).unwrap();
}

fn turbovsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turbovsr"))
        .args(args)
        .output()
        .expect("run turbovsr")
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "turbovsr failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "turbovsr succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn probe(path: &Path) -> Value {
    serde_json::from_str(&ok(turbovsr(&["probe", path.to_str().unwrap()]))).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn start_and_end_select_whole_frames_in_frames_or_seconds() {
    let dir = scratch("range");
    let clip = dir.join("clip.mkv");
    make_clip(&clip, 60);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let full = dir.join("full.mkv");
    ok(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&full),
        "--model",
        "bicubic",
        "--encoder",
        LOSSLESS,
        "-q",
    ]));
    let full = probe(&full);
    let crc = u64s(&full["video"]["frame_crc"]);
    assert_eq!(crc.len(), 60);
    // frame 17 is not a key frame: the seek lands on 12 and decodes up to it
    for (start, end) in [("17f", "41f"), ("0.68", "1.64s"), ("0:00.68", "0:01.64")] {
        let part = dir.join(format!("part-{start}.mkv"));
        ok(turbovsr(&[
            "upscale",
            &s(&clip),
            &s(&part),
            "--model",
            "bicubic",
            "--encoder",
            LOSSLESS,
            "--start",
            start,
            "--end",
            end,
            "-q",
        ]));
        let p = probe(&part);
        assert_eq!(
            u64s(&p["video"]["frame_crc"]),
            crc[17..41],
            "{start}..{end}"
        );
        // the excerpt's timeline starts at the range's start boundary, half a frame before
        // its first frame; one frame every 40 ms
        let pts = u64s(&p["video"]["pts"]);
        assert_eq!(
            pts,
            (0..24)
                .map(|k| 20_000_000 + k * 40_000_000)
                .collect::<Vec<_>>()
        );
        // its audio is the same 0.96 s, to one Opus frame (20 ms)
        let audio = p["audio"]["duration_ns"].as_u64().unwrap() as i64;
        assert!(
            (audio - 960_000_000).abs() <= 20_000_000,
            "audio {audio} ns"
        );
    }
    // to the end, and from the start
    let tail = dir.join("tail.mkv");
    ok(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&tail),
        "--model",
        "bicubic",
        "--encoder",
        LOSSLESS,
        "--start",
        "50f",
        "-q",
    ]));
    assert_eq!(u64s(&probe(&tail)["video"]["frame_crc"]), crc[50..]);
    let head = dir.join("head.mkv");
    ok(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&head),
        "--model",
        "bicubic",
        "--encoder",
        LOSSLESS,
        "--end",
        "5f",
        "-q",
    ]));
    assert_eq!(u64s(&probe(&head)["video"]["frame_crc"]), crc[..5]);

    // An MP4 with B-frames starts two frames late (qtmux's reordering delay) and seeks in
    // stream time: frames still count from its first one.
    let mp4 = dir.join("late.mp4");
    let pipeline = common::launch(&format!(
        "videotestsrc num-buffers=60 pattern=ball ! \
         video/x-raw,width=48,height=32,framerate=25/1 ! videoconvert ! \
         x264enc speed-preset=ultrafast bframes=2 key-int-max=12 ! mp4mux ! filesink location={}",
        mp4.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(common::finish(&pipeline), None);
    pipeline.set_state(gst::State::Null).unwrap();
    let late_full = dir.join("late-full.mkv");
    let late_part = dir.join("late-part.mkv");
    for (out, range) in [
        (&late_full, &[][..]),
        (&late_part, &["--start", "17f", "--end", "41f"][..]),
    ] {
        let mut cmd = vec!["upscale", mp4.to_str().unwrap(), out.to_str().unwrap()];
        cmd.extend(["--model", "bicubic", "--encoder", LOSSLESS, "-q"]);
        cmd.extend(range);
        ok(turbovsr(&cmd));
    }
    let late = probe(&late_full);
    assert_eq!(
        probe(&mp4)["video"]["pts"][0],
        80_000_000u64,
        "the MP4 starts late"
    );
    assert_eq!(
        u64s(&probe(&late_part)["video"]["frame_crc"]),
        u64s(&late["video"]["frame_crc"])[17..41]
    );

    let err = fails(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&dir.join("x.mkv")),
        "--model",
        "bicubic",
        "--start",
        "80f",
    ]));
    assert!(err.contains("no frame") && err.contains("80f"), "{err}");
    let err = fails(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&dir.join("x.mkv")),
        "--start",
        "9f",
        "--end",
        "3f",
    ]));
    assert!(err.contains("not after"), "{err}");
    let err = fails(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&dir.join("x.mkv")),
        "--start",
        "1:75",
    ]));
    assert!(err.contains("not a position"), "{err}");
}

#[test]
fn plan_segments_and_join_give_the_in_process_run() {
    let dir = scratch("join");
    let clip = dir.join("clip.mkv");
    make_clip(&clip, 100);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let reference = dir.join("reference.mkv");
    ok(turbovsr(&[
        "upscale",
        &s(&clip),
        &s(&reference),
        "--model",
        "bicubic",
        "--encoder",
        LOSSLESS,
        "-q",
    ]));
    let work = dir.join("work");
    let plan = work.join("plan.json");
    let out = ok(turbovsr(&[
        "plan",
        &s(&clip),
        &s(&work),
        "--segments",
        "3",
        "--",
        "--model",
        "bicubic",
    ]));
    assert_eq!(out.trim(), s(&plan));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(p["frames"], 100);
    let starts: Vec<u64> = p["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|seg| seg["start"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [0, 33, 66]);
    assert_eq!(p["segments"][1]["context_start"], 24);

    // joining before every segment is done names the missing ones
    // what a lost attempt leaves is removed by the next one
    std::fs::write(work.join("seg_0002.part.99999.mkv"), b"partial").unwrap();
    ok(turbovsr(&["segment", &s(&plan), "2", "-q"]));
    assert!(!work.join("seg_0002.part.99999.mkv").exists());
    let err = fails(turbovsr(&["join", &s(&plan), &s(&dir.join("early.mkv"))]));
    assert!(
        err.contains("segments 0, 1") && err.contains("not done"),
        "{err}"
    );
    for i in ["1", "0"] {
        ok(turbovsr(&["segment", &s(&plan), i, "-q"]));
    }
    let again = turbovsr(&["segment", &s(&plan), "1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already done"));
    ok(again);

    let joined = dir.join("joined.mkv");
    ok(turbovsr(&[
        "join",
        &s(&plan),
        &s(&joined),
        "--encoder",
        LOSSLESS,
    ]));
    let (a, b) = (probe(&reference), probe(&joined));
    assert_eq!(a["video"]["frames"], 100);
    assert_eq!(a["video"]["frame_crc"], b["video"]["frame_crc"]);
    assert_eq!(a["video"]["pts"], b["video"]["pts"]);
    assert_eq!(a["audio"], b["audio"]);
    assert_eq!(b["audio"]["duration_ns"], 4_000_000_000u64);

    // the default encoders: H.264 and AAC in MP4
    let mp4 = dir.join("joined.mp4");
    ok(turbovsr(&["join", &s(&plan), &s(&mp4)]));
    let m = probe(&mp4);
    assert_eq!(m["video"]["frames"], 100);
    assert_eq!(m["video"]["pts"], a["video"]["pts"]);
    assert_eq!(
        (m["video"]["width"].as_u64(), m["video"]["height"].as_u64()),
        (Some(192), Some(128))
    );
    let audio = m["audio"]["duration_ns"].as_u64().unwrap() as i64;
    assert!(
        (audio - 4_000_000_000).abs() <= 25_000_000,
        "audio {audio} ns"
    );
    let err = fails(turbovsr(&["join", &s(&plan), &s(&mp4)]));
    assert!(err.contains("exists"), "{err}");
}

#[test]
fn segments_of_a_model_cross_fade_their_context() {
    // The tiny random checkpoint depends on the window: a segment's context frames differ
    // from the previous segment's, and join blends them instead of cutting.
    let dir = scratch("fade");
    let clip = dir.join("clip.mkv");
    make_clip(&clip, 40);
    let model = common::tiny_model("segments");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let work = dir.join("work");
    let plan = work.join("plan.json");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--window",
        "17",
        "--overlap",
        "9",
    ];
    let mut plan_cmd = vec![
        "plan",
        clip.to_str().unwrap(),
        work.to_str().unwrap(),
        "--segments",
        "2",
        "--",
    ];
    plan_cmd.extend(args);
    ok(turbovsr(&plan_cmd));
    for i in ["0", "1"] {
        ok(turbovsr(&["segment", &s(&plan), i, "-q"]));
    }
    let joined = dir.join("joined.mkv");
    ok(turbovsr(&[
        "join",
        &s(&plan),
        &s(&joined),
        "--encoder",
        LOSSLESS,
    ]));
    let j = probe(&joined);
    assert_eq!(j["video"]["frames"], 40);
    let seg0 = probe(&work.join("seg_0000.mkv"));
    let seg1 = probe(&work.join("seg_0001.mkv"));
    let (c0, c1, cj) = (
        u64s(&seg0["video"]["frame_crc"]),
        u64s(&seg1["video"]["frame_crc"]),
        u64s(&j["video"]["frame_crc"]),
    );
    // segment 1 starts at 20 with 9 context frames from 11
    assert_eq!((c0.len(), c1.len()), (20, 29));
    assert_eq!(cj[..11], c0[..11]);
    assert_eq!(cj[20..], c1[9..]);
    for k in 11..20 {
        assert_ne!(cj[k], c0[k], "frame {k} is not blended");
        assert_ne!(cj[k], c1[k - 11], "frame {k} is not blended");
    }
}

#[test]
fn plans_refuse_what_they_set_themselves_and_bad_indices() {
    let dir = scratch("errors");
    let clip = dir.join("clip.mkv");
    make_clip(&clip, 30);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let work = dir.join("work");
    let err = fails(turbovsr(&[
        "plan",
        &s(&clip),
        &s(&work),
        "--segments",
        "2",
        "--",
        "--start",
        "3f",
    ]));
    assert!(err.contains("--start is set by the plan"), "{err}");
    let err = fails(turbovsr(&[
        "plan",
        &s(&clip),
        &s(&work),
        "--segments",
        "2",
        "--",
        "--steps",
        "x",
    ]));
    assert!(err.contains("upscale options"), "{err}");
    let err = fails(turbovsr(&[
        "plan",
        &s(&clip),
        &s(&work),
        "--segments",
        "2",
        "--context",
        "4",
    ]));
    assert!(err.contains("context"), "{err}");
    ok(turbovsr(&[
        "plan",
        &s(&clip),
        &s(&work),
        "--segment-seconds",
        "0.5",
    ]));
    let plan = work.join("plan.json");
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    // 30 frames in segments of at least 9 frames
    assert_eq!(p["segments"].as_array().unwrap().len(), 3);
    let err = fails(turbovsr(&["segment", &s(&plan), "3"]));
    assert!(
        err.contains("no segment 3") && err.contains("0..=2"),
        "{err}"
    );
    let err = fails(turbovsr(&["plan", &s(&clip), &s(&work), "--segments", "2"]));
    assert!(err.contains("another plan"), "{err}");
    let err = fails(turbovsr(&[
        "plan",
        &s(&dir.join("nope.mkv")),
        &s(&work),
        "--segments",
        "2",
    ]));
    assert!(err.contains("nope.mkv"), "{err}");
}
