//! `turbovsr join PLAN OUT`: the segments' frames in order, each segment's context frames
//! cross-faded with the previous segment's last frames, timestamped with the input timestamps
//! the segments recorded, and the input's own audio, once:
//!
//! ```text
//! seg_0000.mkv, seg_0001.mkv, ... -> (decode, cross-fade) -> appsrc ! videoconvert ! ENCODER ! MUXER ! filesink
//! uridecodebin IN --audio--> queue ! audioconvert ! audioresample ! AUDIO-ENCODER ! MUXER
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use clap::Args;
use gst::prelude::*;

use super::media::{self as cli, AudioPlan};
use super::options::EncodingArgs;
use super::plan::{plan_dir, Plan, SegmentDone};

/// Arguments of `turbovsr join`.
#[derive(Args, Debug, Clone)]
pub struct JoinArgs {
    /// plan.json of the segments.
    pub plan: PathBuf,
    /// Output: a .mkv, .mp4, .mov, .webm or .y4m file.
    pub output: PathBuf,
    #[command(flatten)]
    pub encoding: EncodingArgs,
}

/// A decoded frame of a segment: BGRx bytes.
struct Frame {
    data: Vec<u8>,
}

/// Reads one segment's frames as BGRx.
struct SegmentReader {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    path: PathBuf,
}

impl SegmentReader {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let uri = cli::input_uri(&path.to_string_lossy())?;
        let pipeline = gst::parse::launch(&format!(
            "uridecodebin uri=\"{uri}\" ! videoconvert ! video/x-raw,format=BGRx ! \
             appsink name=sink sync=false max-buffers=4"
        ))
        .with_context(|| format!("cannot read '{}'", path.display()))?
        .downcast::<gst::Pipeline>()
        .expect("a launch line of several elements is a pipeline");
        let sink = pipeline
            .by_name("sink")
            .expect("the appsink is named")
            .downcast::<gst_app::AppSink>()
            .expect("appsink");
        pipeline
            .set_state(gst::State::Playing)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        Ok(SegmentReader {
            pipeline,
            sink,
            path: path.to_path_buf(),
        })
    }

    /// The next frame and its caps; None at the end.
    fn next(&self) -> anyhow::Result<Option<(Frame, gst::Caps)>> {
        match self.sink.pull_sample() {
            Ok(sample) => {
                let buffer = sample.buffer().context("a sample without a buffer")?;
                let map = buffer.map_readable()?;
                let caps = sample.caps().context("a sample without caps")?.to_owned();
                Ok(Some((
                    Frame {
                        data: map.as_slice().to_vec(),
                    },
                    caps,
                )))
            }
            Err(_) => {
                let bus = self.pipeline.bus().unwrap();
                if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                    if let gst::MessageView::Error(err) = msg.view() {
                        bail!("cannot decode '{}': {}", self.path.display(), err.error());
                    }
                }
                Ok(None)
            }
        }
    }
}

impl Drop for SegmentReader {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// `new` weighted by `w` over `old`, per byte, rounded.
fn cross_fade(old: &[u8], new: &[u8], w: f32) -> Vec<u8> {
    old.iter()
        .zip(new)
        .map(|(&a, &b)| (a as f32 * (1.0 - w) + b as f32 * w).round() as u8)
        .collect()
}

/// The weight of the later segment at overlap frame `j` of `len` (0 < w < 1, rising).
pub fn fade_weight(j: usize, len: usize) -> f32 {
    (j + 1) as f32 / (len + 1) as f32
}

/// Checks the plan's segments are all done and returns their sidecars.
fn finished_segments(plan: &Plan, dir: &Path) -> anyhow::Result<Vec<SegmentDone>> {
    let mut missing = Vec::new();
    let mut done = Vec::new();
    for seg in &plan.segments {
        let path = dir.join(&seg.sidecar);
        if !path.exists() || !dir.join(&seg.output).exists() {
            missing.push(seg.index.to_string());
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read '{}'", path.display()))?;
        let record: SegmentDone = serde_json::from_str(&text)
            .with_context(|| format!("'{}' is not a segment record", path.display()))?;
        if record.pts.len() as u64 != record.frames {
            bail!(
                "'{}' lists {} timestamps for {} frames",
                path.display(),
                record.pts.len(),
                record.frames
            );
        }
        if let Some(want) = plan.expected_frames(seg) {
            if record.frames != want {
                bail!(
                    "segment {} has {} frames, the plan expects {} (run `turbovsr segment {} {} --overwrite`)",
                    seg.index,
                    record.frames,
                    want,
                    dir.join("plan.json").display(),
                    seg.index
                );
            }
        }
        done.push(record);
    }
    if !missing.is_empty() {
        bail!(
            "segments {} of '{}' are not done yet (`turbovsr segment PLAN INDEX` runs one)",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(done)
}

/// Runs `turbovsr join`.
pub fn run(args: &JoinArgs) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    let plan = Plan::load(&args.plan)?;
    let dir = plan_dir(&args.plan);
    let records = finished_segments(&plan, &dir)?;
    let out_plan = cli::plan_output(&args.output)?;
    if out_plan.sequence {
        bail!("join writes one file; PNG sequences are not supported");
    }
    if args.output.exists() && !args.encoding.overwrite {
        bail!(
            "output '{}' exists (pass --overwrite to replace it)",
            args.output.display()
        );
    }

    // The first frame gives the caps of the whole output.
    let first = SegmentReader::open(&dir.join(&plan.segments[0].output))?;
    let Some((first_frame, caps)) = first.next()? else {
        bail!("segment 0 ({}) holds no frame", plan.segments[0].output);
    };
    let info = gst_video::VideoInfo::from_caps(&caps)?;
    let rate = plan.rate();
    let out_caps =
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgrx, info.width(), info.height())
            .fps(gst::Fraction::new(rate.numer as i32, rate.denom as i32))
            .build()?
            .to_caps()?;

    let pipeline = gst::Pipeline::new();
    let appsrc = gst_app::AppSrc::builder()
        .caps(&out_caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(4 * info.size() as u64)
        .build();
    let convert = cli::make("videoconvert")?;
    let encoder = match &args.encoding.encoder {
        Some(desc) => cli::encoder_bin(desc, "--encoder")?,
        None => cli::encoder_bin(out_plan.video_encoder, &format!("{} output", out_plan.kind))?,
    };
    let sink = cli::make("filesink")?;
    sink.set_property("location", args.output.to_string_lossy().as_ref());
    pipeline.add_many([appsrc.upcast_ref(), &convert, &encoder, &sink])?;
    gst::Element::link_many([appsrc.upcast_ref(), &convert, &encoder])?;
    let muxer = match out_plan.muxer {
        Some(name) => {
            let mux = cli::make(name)?;
            pipeline.add(&mux)?;
            encoder.link(&mux)?;
            mux.link(&sink)?;
            Some(mux)
        }
        None => {
            encoder.link(&sink)?;
            None
        }
    };
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    // The muxer writes its header when the first buffer arrives: the video waits until the
    // input's audio pad is linked.
    let (pads_done, wait_for_pads) = std::sync::mpsc::channel::<()>();
    let with_audio = !args.encoding.no_audio && !out_plan.audio_encoders.is_empty();
    if with_audio {
        let decode = cli::make("uridecodebin")?;
        decode.set_property("uri", cli::input_uri(&plan.input)?);
        pipeline.add(&decode)?;
        let audio = AudioPlan {
            kind: out_plan.kind,
            encoders: out_plan.audio_encoders,
            custom: args.encoding.audio_encoder.clone(),
            dropped: false,
        };
        let pipeline_weak = pipeline.downgrade();
        let notes = Arc::clone(&notes);
        decode.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let audio_pad = caps
                .structure(0)
                .is_some_and(|s| s.name().starts_with("audio/"));
            if audio_pad {
                if let Err(msg) = audio.link(&pipeline, muxer.as_ref(), pad) {
                    notes.lock().unwrap().push(msg);
                    cli::link_to_fakesink(&pipeline, pad);
                }
            } else {
                cli::link_to_fakesink(&pipeline, pad);
            }
        });
        let pads_done = Mutex::new(pads_done);
        decode.connect_no_more_pads(move |_| {
            let _ = pads_done.lock().unwrap().send(());
        });
    }

    // The frames, from a thread: appsrc blocks while the encoder is behind.
    let feeder = {
        let appsrc = appsrc.clone();
        let plan = plan.clone();
        let dir = dir.clone();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            if with_audio {
                // an error before no-more-pads drops the sender: go on and let the bus tell
                let _ = wait_for_pads.recv();
            }
            let result = feed(&plan, &dir, &records, first, first_frame, &caps, &appsrc);
            let _ = appsrc.end_of_stream();
            result
        })
    };

    let bus = pipeline.bus().expect("a pipeline has a bus");
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        anyhow::anyhow!(
            "cannot start the join pipeline: {}",
            cli::first_error(&bus).unwrap_or_default()
        )
    })?;
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(err) => break Err(anyhow::anyhow!("{}", cli::error_text(err))),
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    let fed = feeder.join().expect("the join feeder does not panic");
    for note in notes.lock().unwrap().drain(..) {
        eprintln!("turbovsr: {note}");
    }
    result?;
    let frames = fed?;
    eprintln!(
        "turbovsr: joined {} segments, {frames} frames, into {}",
        plan.segments.len(),
        args.output.display()
    );
    Ok(())
}

/// Pushes every output frame into `appsrc`; returns the frame count.
fn feed(
    plan: &Plan,
    dir: &Path,
    records: &[SegmentDone],
    first: SegmentReader,
    first_frame: Frame,
    caps: &gst::Caps,
    appsrc: &gst_app::AppSrc,
) -> anyhow::Result<u64> {
    let duration = plan.rate().frame_time(1);
    let mut pushed = 0u64;
    let mut push = |data: Vec<u8>, pts: u64| -> anyhow::Result<()> {
        let mut buffer = gst::Buffer::from_mut_slice(data);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(duration));
        }
        appsrc
            .push_buffer(buffer)
            .map_err(|e| anyhow::anyhow!("the encoder stopped taking frames ({e:?})"))?;
        pushed += 1;
        Ok(())
    };
    // The previous segment's frames that the next one's context overlaps, not yet pushed.
    let mut held: VecDeque<Frame> = VecDeque::new();
    let mut reader = Some(first);
    let mut pending = Some(first_frame);
    for (i, seg) in plan.segments.iter().enumerate() {
        let reader = match reader.take() {
            Some(r) => r,
            None => SegmentReader::open(&dir.join(&seg.output))?,
        };
        let record = &records[i];
        let context = (seg.start - seg.context_start) as usize;
        if held.len() != context {
            bail!(
                "segment {} starts {} frames before its own, but segment {} left {} to fade with",
                i,
                context,
                i.saturating_sub(1),
                held.len()
            );
        }
        let next_context_start = plan.segments.get(i + 1).map(|s| s.context_start);
        let mut j = 0usize;
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match reader.next()? {
                    Some((f, c)) => {
                        if &c != caps {
                            bail!("segment {} has frames of {c}, segment 0 of {caps}", i);
                        }
                        f
                    }
                    None => break,
                },
            };
            let Some(&pts) = record.pts.get(j) else {
                bail!(
                    "segment {} ({}) holds more frames than its record ({})",
                    i,
                    seg.output,
                    record.frames
                );
            };
            let global = seg.context_start + j as u64;
            if j < context {
                let old = held.pop_front().expect("held one frame per context frame");
                push(
                    cross_fade(&old.data, &frame.data, fade_weight(j, context)),
                    pts,
                )?;
            } else if next_context_start.is_some_and(|n| global >= n) {
                held.push_back(frame);
            } else {
                push(frame.data, pts)?;
            }
            j += 1;
        }
        if j as u64 != record.frames {
            bail!(
                "segment {} ({}) holds {} frames, its record {}",
                i,
                seg.output,
                j,
                record.frames
            );
        }
    }
    // The last segment holds nothing back.
    debug_assert!(held.is_empty());
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fade_rises_from_the_old_segment_to_the_new_one() {
        let w: Vec<f32> = (0..9).map(|j| fade_weight(j, 9)).collect();
        assert!(w.windows(2).all(|p| p[1] > p[0]));
        assert!(w[0] > 0.0 && w[8] < 1.0);
        assert_eq!(cross_fade(&[0, 100], &[200, 100], 0.5), vec![100, 100]);
    }
}
