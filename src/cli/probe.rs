//! `turbovsr probe FILE`: what a file holds, decoded, as JSON: the video's frame count, size,
//! timestamps, a CRC-32 of every decoded frame (RGB) and its mean absolute difference to the
//! previous frame; the audio's decoded duration, samples and rate. It is how the scale-out
//! tests compare a joined file with an in-process run, and how a boundary between segments is
//! measured.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use gst::prelude::*;
use serde::Serialize;

use super::media as cli;

/// Arguments of `turbovsr probe`.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// A video file (or URI).
    pub input: String,
}

#[derive(Debug, Default, Serialize)]
pub struct VideoReport {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub pts: Vec<u64>,
    pub frame_crc: Vec<u32>,
    /// Mean absolute difference to the previous frame over the RGB bytes (0 for the first).
    pub frame_diff: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct AudioReport {
    /// From the first sample's timestamp to the end of the last.
    pub duration_ns: u64,
    pub samples: u64,
    pub rate: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub video: Option<VideoReport>,
    pub audio: Option<AudioReport>,
}

/// The report so far and the previous frame's RGB bytes.
type VideoState = Option<(VideoReport, Vec<u8>)>;

#[derive(Default)]
struct AudioState {
    first_pts: Option<u64>,
    end: u64,
    samples: u64,
    rate: u32,
}

/// Decodes `input` to its end and reports it.
pub fn probe(input: &str) -> anyhow::Result<Report> {
    gst::init().context("cannot initialise GStreamer")?;
    let uri = cli::input_uri(input)?;
    let pipeline = gst::Pipeline::new();
    let decode = cli::make("uridecodebin")?;
    decode.set_property("uri", &uri);
    pipeline.add(&decode)?;
    let video: Arc<Mutex<VideoState>> = Arc::default();
    let audio: Arc<Mutex<Option<AudioState>>> = Arc::default();
    let pipeline_weak = pipeline.downgrade();
    let (v, a) = (Arc::clone(&video), Arc::clone(&audio));
    decode.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let first_video = name.starts_with("video/") && v.lock().unwrap().is_none();
        let first_audio = name.starts_with("audio/") && a.lock().unwrap().is_none();
        let (description, is_video) = if first_video {
            (
                "videoconvert ! capsfilter caps=video/x-raw,format=RGB",
                true,
            )
        } else if first_audio {
            (
                "audioconvert ! capsfilter caps=audio/x-raw,format=S16LE,layout=interleaved",
                false,
            )
        } else {
            cli::link_to_fakesink(&pipeline, pad);
            return;
        };
        let Ok(bin) = gst::parse::bin_from_description(description, true) else {
            return;
        };
        let sink = gst_app::AppSink::builder().sync(false).build();
        if is_video {
            *v.lock().unwrap() = Some((VideoReport::default(), Vec::new()));
            let v = Arc::clone(&v);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                        let caps = sample.caps().ok_or(gst::FlowError::Error)?;
                        let info = gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?;
                        let frame =
                            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                                .map_err(|_| gst::FlowError::Error)?;
                        // rows without their padding
                        let row = info.width() as usize * 3;
                        let stride = info.stride()[0] as usize;
                        let plane = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
                        let mut rgb = Vec::with_capacity(row * info.height() as usize);
                        for y in 0..info.height() as usize {
                            rgb.extend_from_slice(&plane[y * stride..y * stride + row]);
                        }
                        let mut guard = v.lock().unwrap();
                        let (report, prev) = guard.as_mut().expect("set before linking");
                        report.width = info.width();
                        report.height = info.height();
                        report.frames += 1;
                        report
                            .pts
                            .push(buffer.pts().map_or(u64::MAX, |t| t.nseconds()));
                        report.frame_crc.push(crc32fast::hash(&rgb));
                        let diff = if prev.len() == rgb.len() {
                            prev.iter()
                                .zip(&rgb)
                                .map(|(&a, &b)| (a as i32 - b as i32).unsigned_abs() as u64)
                                .sum::<u64>() as f64
                                / rgb.len() as f64
                        } else {
                            0.0
                        };
                        report.frame_diff.push(diff);
                        *prev = rgb;
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        } else {
            *a.lock().unwrap() = Some(AudioState::default());
            let a = Arc::clone(&a);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                        let caps = sample.caps().ok_or(gst::FlowError::Error)?;
                        let s = caps.structure(0).ok_or(gst::FlowError::Error)?;
                        let rate = s.get::<i32>("rate").map_err(|_| gst::FlowError::Error)? as u32;
                        let channels = s
                            .get::<i32>("channels")
                            .map_err(|_| gst::FlowError::Error)?
                            as u64;
                        let samples = buffer.size() as u64 / (2 * channels.max(1));
                        let mut guard = a.lock().unwrap();
                        let state = guard.as_mut().expect("set before linking");
                        state.rate = rate;
                        state.samples += samples;
                        if let Some(pts) = buffer.pts() {
                            state.first_pts.get_or_insert(pts.nseconds());
                            let end = pts.nseconds() + samples * 1_000_000_000 / rate.max(1) as u64;
                            state.end = state.end.max(end);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        let elements = [bin.upcast_ref::<gst::Element>(), sink.upcast_ref()];
        if pipeline.add_many(elements).is_err() || gst::Element::link_many(elements).is_err() {
            return;
        }
        for e in elements {
            let _ = e.sync_state_with_parent();
        }
        let _ = pad.link(&bin.static_pad("sink").expect("ghost sink pad"));
    });
    let bus = pipeline.bus().expect("a pipeline has a bus");
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow::anyhow!("cannot open '{input}'"))?;
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(1)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(err) => {
                break Err(anyhow::anyhow!(
                    "cannot decode '{input}': {}",
                    cli::error_text(err)
                ))
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let video = video.lock().unwrap().take().map(|(report, _)| report);
    let audio = audio.lock().unwrap().take().map(|s| AudioReport {
        duration_ns: s.end.saturating_sub(s.first_pts.unwrap_or(0)),
        samples: s.samples,
        rate: s.rate,
    });
    Ok(Report { video, audio })
}

/// Runs `turbovsr probe`: the report as JSON on stdout.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let report = probe(&args.input)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
