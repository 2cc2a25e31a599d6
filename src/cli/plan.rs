//! Scale-out (DESIGN §9): a long input split into time-range segments that are upscaled
//! independently (on other GPUs, other machines) and joined back into one file.
//!
//! ```text
//! turbovsr plan IN DIR --segments N -- [upscale options]   -> DIR/plan.json
//! turbovsr segment DIR/plan.json I                          -> DIR/seg_000I.mkv + .json (one per worker)
//! turbovsr join DIR/plan.json OUT                           -> OUT: the frames, timestamps and audio
//!                                                              of `turbovsr upscale IN OUT`
//! ```
//!
//! Segment `i` owns the frames `start..end`; it also upscales the `context` frames before
//! them (`context_start..start`), so that its first window has the same temporal context as an
//! in-process window would, and those frames are cross-faded at join with the previous
//! segment's last frames, linearly over the overlap: a segment boundary then looks like a
//! window boundary. Intermediates are FFV1 in Matroska (lossless, intra-only) so that joining
//! loses nothing; the sidecar `seg_000I.json`, written last and atomically, holds the input
//! timestamps of the segment's frames and is what marks a segment done (a retry or a second
//! driver skips it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser};
use gst::prelude::*;
use serde::{Deserialize, Serialize};

use super::range::FrameRate;
use super::upscale::UpscaleArgs;

/// Frames before a segment that it upscales again as its first window's context: the model's
/// window overlap.
pub const DEFAULT_CONTEXT: u64 = crate::pipeline::window::DEFAULT_OVERLAP as u64;

const PLAN_VERSION: u32 = 1;

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    /// The input as `turbovsr upscale` takes it (an absolute path or a URI).
    pub input: String,
    /// Frames in the input, from its duration and frame rate (the last segment runs to the
    /// input's real end whatever this says).
    pub frames: u64,
    /// Frame rate, numerator and denominator.
    pub fps: [u64; 2],
    /// Context frames of every segment after the first.
    pub context: u64,
    /// Options of `turbovsr upscale` every segment runs with (model, steps, device, ...).
    pub upscale_args: Vec<String>,
    pub segments: Vec<Segment>,
}

/// One segment of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub index: usize,
    /// First frame upscaled (the context before `start`).
    pub context_start: u64,
    /// First frame this segment owns.
    pub start: u64,
    /// Frame after the last one it owns; None: to the input's end.
    pub end: Option<u64>,
    /// Output file, relative to the plan's folder.
    pub output: String,
    /// Marks the segment done: the frames' input timestamps.
    pub sidecar: String,
}

/// A finished segment's sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDone {
    pub index: usize,
    pub frames: u64,
    /// Input timestamps of the frames written, in nanoseconds.
    pub pts: Vec<u64>,
}

impl Plan {
    pub fn load(path: &Path) -> anyhow::Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the plan '{}'", path.display()))?;
        let plan: Plan = serde_json::from_str(&text)
            .with_context(|| format!("'{}' is not a turbovsr plan", path.display()))?;
        if plan.version != PLAN_VERSION {
            bail!(
                "plan '{}' has version {}; this turbovsr reads version {PLAN_VERSION}",
                path.display(),
                plan.version
            );
        }
        Ok(plan)
    }

    pub fn rate(&self) -> FrameRate {
        FrameRate {
            numer: self.fps[0],
            denom: self.fps[1],
        }
    }

    /// The frames `segment` must write: fixed for all but the last.
    pub fn expected_frames(&self, segment: &Segment) -> Option<u64> {
        segment.end.map(|end| end - segment.context_start)
    }
}

/// Where a plan's relative file names point.
pub fn plan_dir(plan_path: &Path) -> PathBuf {
    plan_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Splits `frames` into `count` segments of (nearly) equal length, each after the first with
/// `context` frames before it. Fewer segments when they would be shorter than their context.
pub fn split(frames: u64, count: usize, context: u64) -> Vec<Segment> {
    let min_len = context.max(1);
    let count = (count.max(1) as u64).min((frames / min_len).max(1));
    (0..count)
        .map(|i| {
            let start = frames * i / count;
            let end = frames * (i + 1) / count;
            Segment {
                index: i as usize,
                context_start: start.saturating_sub(context),
                start,
                end: (i + 1 < count).then_some(end),
                output: format!("seg_{i:04}.mkv"),
                sidecar: format!("seg_{i:04}.json"),
            }
        })
        .collect()
}

/// Arguments of `turbovsr plan`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("count").required(true).args(["segments", "segment_seconds"])))]
pub struct PlanArgs {
    /// Input video (a file or a URI), as for `turbovsr upscale`.
    pub input: String,
    /// Folder for plan.json and the segments' outputs (created).
    pub dir: PathBuf,
    /// Number of segments.
    #[arg(long)]
    pub segments: Option<usize>,
    /// Length of a segment in seconds (the last one takes the rest).
    #[arg(long)]
    pub segment_seconds: Option<f64>,
    /// Frames before each segment that it upscales again as context, cross-faded at join
    /// (at least 9: one window overlap).
    #[arg(long, default_value_t = DEFAULT_CONTEXT, value_parser = clap::value_parser!(u64).range(9..))]
    pub context: u64,
    /// Replace an existing plan.json (the segments already done are deleted).
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// Options of `turbovsr upscale` for every segment, after `--`: --model DIR --steps 4 ...
    #[arg(last = true, value_name = "UPSCALE_OPTIONS")]
    pub upscale_args: Vec<String>,
}

/// Options a plan sets itself.
const PLAN_OWNED: &[&str] = &[
    "--start",
    "--end",
    "--encoder",
    "--audio-encoder",
    "--no-audio",
    "--side-by-side",
    "--side-by-side-frame",
    "--overwrite",
    "-y",
];

#[derive(Parser)]
#[command(name = "turbovsr upscale")]
struct UpscaleOnly {
    #[command(flatten)]
    args: UpscaleArgs,
}

/// `upscale_args` parsed as `turbovsr upscale INPUT OUTPUT upscale_args...`.
pub(crate) fn upscale_args(
    input: &str,
    output: &Path,
    extra: &[String],
    upscale_args: &[String],
) -> anyhow::Result<UpscaleArgs> {
    let argv = ["turbovsr upscale".to_string(), input.to_string()]
        .into_iter()
        .chain([output.to_string_lossy().into_owned()])
        .chain(upscale_args.iter().cloned())
        .chain(extra.iter().cloned());
    UpscaleOnly::try_parse_from(argv)
        .map(|u| u.args)
        .map_err(|e| anyhow::anyhow!("the plan's upscale options: {e}"))
}

/// Frame rate and duration of the input's video, from a paused pipeline.
pub fn probe_input(uri: &str) -> anyhow::Result<(FrameRate, gst::ClockTime)> {
    let pipeline = gst::Pipeline::new();
    let decode = gst::ElementFactory::make("uridecodebin")
        .property("uri", uri)
        .build()
        .context("cannot create uridecodebin (Debian: gstreamer1.0-plugins-base)")?;
    pipeline.add(&decode)?;
    let video_caps = std::sync::Arc::new(std::sync::Mutex::new(None::<gst::Caps>));
    {
        let video_caps = std::sync::Arc::clone(&video_caps);
        let pipeline_weak = pipeline.downgrade();
        decode.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let sink = gst::ElementFactory::make("fakesink").build().unwrap();
            sink.set_property("sync", false);
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            if caps
                .structure(0)
                .is_some_and(|s| s.name().starts_with("video/"))
            {
                video_caps.lock().unwrap().get_or_insert(caps);
            } else {
                sink.set_property("async", false);
            }
            let _ = pipeline.add(&sink);
            let _ = sink.sync_state_with_parent();
            let _ = pad.link(&sink.static_pad("sink").unwrap());
        });
    }
    let bus = pipeline.bus().unwrap();
    let result = (|| {
        pipeline
            .set_state(gst::State::Paused)
            .map_err(|_| anyhow::anyhow!("cannot open '{uri}'"))?;
        let done = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::AsyncDone, gst::MessageType::Error],
        );
        match done.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::AsyncDone(_)) => {}
            Some(gst::MessageView::Error(err)) => {
                bail!("cannot read '{uri}': {}", err.error())
            }
            _ => bail!("'{uri}' did not open within a minute"),
        }
        let caps = video_caps
            .lock()
            .unwrap()
            .clone()
            .with_context(|| format!("'{uri}' has no video stream"))?;
        let rate = FrameRate::from_caps(&caps).with_context(|| {
            format!("the video of '{uri}' has no constant frame rate ({caps}); plan needs one")
        })?;
        let duration = pipeline
            .query_duration::<gst::ClockTime>()
            .with_context(|| format!("'{uri}' does not say how long it is; plan needs that"))?;
        Ok((rate, duration))
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Runs `turbovsr plan`.
pub fn run_plan(args: &PlanArgs) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    for arg in &args.upscale_args {
        let name = arg.split('=').next().unwrap_or(arg);
        if PLAN_OWNED.contains(&name) {
            bail!(
                "{name} is set by the plan for each segment; leave it out of the upscale options"
            );
        }
    }
    // the options must parse, before any worker finds out
    upscale_args(&args.input, Path::new("x.mkv"), &[], &args.upscale_args)?;
    let uri = super::media::input_uri(&args.input)?;
    let input = if uri.starts_with("file://") {
        std::fs::canonicalize(&args.input)?
            .to_string_lossy()
            .into_owned()
    } else {
        args.input.clone()
    };
    let (rate, duration) = probe_input(&uri)?;
    let frames =
        (duration.nseconds() as f64 * rate.numer as f64 / (rate.denom as f64 * 1e9)).round() as u64;
    if frames == 0 {
        bail!("'{}' holds no frame", args.input);
    }
    let count = match (args.segments, args.segment_seconds) {
        (Some(n), _) => n,
        (None, Some(s)) if s > 0.0 && s.is_finite() => {
            (duration.nseconds() as f64 / (s * 1e9)).ceil().max(1.0) as usize
        }
        _ => bail!("--segment-seconds must be a positive number of seconds"),
    };
    if count == 0 {
        bail!("--segments must be at least 1");
    }
    let segments = split(frames, count, args.context);
    if segments.len() < count {
        eprintln!(
            "turbovsr: {frames} frames make {} segments of at least {} frames (the context), not {count}",
            segments.len(),
            args.context
        );
    }
    let plan = Plan {
        version: PLAN_VERSION,
        input,
        frames,
        fps: [rate.numer, rate.denom],
        context: args.context,
        upscale_args: args.upscale_args.clone(),
        segments,
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the folder '{}'", args.dir.display()))?;
    let path = args.dir.join("plan.json");
    if path.exists() {
        if !args.overwrite {
            let old = Plan::load(&path).ok();
            if old.as_ref() == Some(&plan) {
                eprintln!("turbovsr: {} is already this plan", path.display());
                println!("{}", path.display());
                return Ok(());
            }
            bail!(
                "'{}' exists and is another plan (pass --overwrite to replace it and its \
                 segments)",
                path.display()
            );
        }
        if let Ok(old) = Plan::load(&path) {
            for seg in &old.segments {
                let _ = std::fs::remove_file(args.dir.join(&seg.sidecar));
                let _ = std::fs::remove_file(args.dir.join(&seg.output));
            }
        }
    }
    write_atomically(&path, &serde_json::to_vec_pretty(&plan)?)?;
    eprintln!(
        "turbovsr: {} frames at {}/{} fps in {} segments of about {} frames (+{} context) -> {}",
        plan.frames,
        rate.numer,
        rate.denom,
        plan.segments.len(),
        plan.frames / plan.segments.len() as u64,
        plan.context,
        path.display()
    );
    println!("{}", path.display());
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// `path` is either absent or complete.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename '{}' to '{}'", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::range::Position;

    #[test]
    fn segments_cover_every_frame_once_with_context_before_each() {
        let segs = split(200, 4, 9);
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].context_start, 0);
        assert_eq!(segs[0].start, 0);
        for w in segs.windows(2) {
            assert_eq!(w[0].end, Some(w[1].start));
            assert_eq!(w[1].start - w[1].context_start, 9);
        }
        assert_eq!(segs[3].end, None);
        assert_eq!(
            segs.iter().map(|s| s.start).collect::<Vec<_>>(),
            [0, 50, 100, 150]
        );
    }

    #[test]
    fn segments_are_never_shorter_than_their_context() {
        let segs = split(20, 8, 9);
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|s| s.end.unwrap_or(20) - s.start >= 9));
        assert_eq!(split(5, 3, 9).len(), 1);
    }

    #[test]
    fn positions_parse_as_frames_or_seconds() {
        assert_eq!("120f".parse(), Ok(Position::Frame(120)));
        assert_eq!("4.8".parse(), Ok(Position::Seconds(4.8)));
        assert_eq!("4.8s".parse(), Ok(Position::Seconds(4.8)));
        assert_eq!("1:02.5".parse(), Ok(Position::Seconds(62.5)));
        assert_eq!("1:00:02".parse(), Ok(Position::Seconds(3602.0)));
        for bad in ["", "f", "-1", "1:75", "1.5:00", "abc", "1::2", "nan"] {
            let err = bad.parse::<Position>().unwrap_err();
            assert!(err.contains("not a position"), "{bad}: {err}");
        }
    }

    #[test]
    fn range_boundaries_lie_half_a_frame_before_the_frame() {
        let rate = FrameRate {
            numer: 25,
            denom: 1,
        };
        let range = crate::cli::range::Range {
            start: Some(Position::Frame(10)),
            end: Some(Position::Seconds(1.0)),
        };
        let b = range.bounds(Some(rate), 0).unwrap();
        let later = range.bounds(Some(rate), 80_000_000).unwrap();
        assert_eq!((later.start, later.end), (460_000_000, Some(1_060_000_000)));
        assert_eq!(b.start, 380_000_000);
        assert_eq!(b.end, Some(980_000_000));
        assert_eq!(range.frames(rate), (10, Some(25)));
        let ntsc = FrameRate {
            numer: 30000,
            denom: 1001,
        };
        assert_eq!(ntsc.frame_at(ntsc.frame_time(12345) as f64 / 1e9), 12345);
        let frames_only = crate::cli::range::Range {
            start: Some(Position::Frame(3)),
            end: None,
        };
        assert!(frames_only
            .bounds(None, 0)
            .unwrap_err()
            .contains("constant frame rate"));
        assert!(crate::cli::range::Range {
            start: Some(Position::Frame(5)),
            end: Some(Position::Frame(5)),
        }
        .validate()
        .is_err());
    }
}
