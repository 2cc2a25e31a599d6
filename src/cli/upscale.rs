//! `turbovsr upscale IN OUT` (DESIGN §7): one command from a video file to an upscaled video
//! file. It builds a GStreamer pipeline around the `turbovsr` element (registered statically
//! from this crate, so no `GST_PLUGIN_PATH` is needed):
//!
//! ```text
//! uridecodebin --video--> queue ! videoconvert ! turbovsr ! videoconvert ! ENCODER ! MUXER ! filesink
//!              --audio--> queue ! audioconvert ! audioresample ! AUDIO-ENCODER ! MUXER
//! ```
//!
//! The encoder and muxer follow OUT's extension; `.y4m` writes raw frames and a `%d` pattern
//! ending in `.png` writes one PNG per frame. A progress line on stderr counts the frames that
//! leave `turbovsr` against the frames the input's duration promises. Ctrl-C sends EOS, so the
//! window in flight and the tail are finished and the file is closed properly; a second Ctrl-C
//! stops at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use gst::prelude::*;

use super::media::{
    encoder_bin, error_text, first_error, input_uri, link_to_fakesink, make, plan_output,
    require_element, AudioPlan,
};
use super::options::{ColorFixArg, Device, EncodingArgs, PrecisionArg};
use super::range::{Position, Range, RangeGate};
use crate::pipeline::settings::{
    ColorFix, DeviceChoice, Precision, SettingEnum, DEFAULT_SCALE, DEFAULT_STEPS,
    DEFAULT_TILE_OVERLAP, MAX_SCALE,
};
use crate::pipeline::window::{DEFAULT_OVERLAP, DEFAULT_WINDOW};

/// Arguments of `turbovsr upscale`.
#[derive(Args, Debug, Clone)]
pub struct UpscaleArgs {
    /// Input video: a file (any format GStreamer decodes) or a URI.
    pub input: String,
    /// Output: a .mkv, .mp4, .mov, .webm or .y4m file, or a PNG pattern such as out_%05d.png.
    pub output: PathBuf,
    /// TurboVSR checkpoint folder (vae/, transformer/, turbovsr.json), or `bicubic` (default:
    /// the model shipped inside turbovsr).
    #[arg(long)]
    pub model: Option<String>,
    /// Output = input x scale (1..8).
    #[arg(long, default_value_t = DEFAULT_SCALE as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_SCALE as i64))]
    pub scale: u32,
    /// Sampler steps: 1, 2, 4, 8 or 16.
    #[arg(long, default_value_t = DEFAULT_STEPS as u32)]
    pub steps: u32,
    /// Frames per window, 1 + 8k (>= 9); lower needs less memory.
    #[arg(long, default_value_t = DEFAULT_WINDOW as u32)]
    pub window: u32,
    /// Frames shared by consecutive windows, 1 + 8j, smaller than the window.
    #[arg(long, default_value_t = DEFAULT_OVERLAP as u32)]
    pub overlap: u32,
    /// Spatial denoising tile in latents (0: the checkpoint's training tile).
    #[arg(long, default_value_t = 0)]
    pub tile_size: u32,
    /// Overlap between spatial tiles in latents.
    #[arg(long, default_value_t = DEFAULT_TILE_OVERLAP as u32)]
    pub tile_overlap: u32,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// CUDA device number.
    #[arg(long, default_value_t = 0)]
    pub device_id: u32,
    /// Numeric precision of the transformer (auto: bf16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// Numeric precision of the VAE (auto: f32; bf16 misses the parity bound on the fixtures).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub vae_precision: PrecisionArg,
    /// Seed of the fixed sampling noise (same input and seed give the same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Colour correction of the model output towards the bicubic input.
    #[arg(long, value_enum, default_value_t = ColorFixArg::None)]
    pub color_fix: ColorFixArg,
    /// safetensors file with prompt_embeds and prompt_attention_mask (default: the checkpoint's).
    #[arg(long)]
    pub prompt_embeds: Option<PathBuf>,
    #[command(flatten)]
    pub encoding: EncodingArgs,
    /// No progress line (errors and the summary are still printed).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also write one PNG comparing a frame: the input bicubic-upscaled to the output size on
    /// the left, the output on the right, a white line between.
    #[arg(long, value_name = "PNG")]
    pub side_by_side: Option<PathBuf>,
    /// The frame of --side-by-side, counting from 0 (default: the middle frame).
    #[arg(long, value_name = "N", requires = "side_by_side")]
    pub side_by_side_frame: Option<u64>,
    /// Upscale from this position on: a frame (120f) or a time in seconds (4.8, 4.8s, 1:02.5),
    /// frame-accurate (times name the nearest frame); the output's timeline, audio included,
    /// starts half a frame before that frame.
    #[arg(long, value_name = "POS")]
    pub start: Option<Position>,
    /// Stop before this position (the frame it names is not included): 240f, 9.6, 1:05.
    #[arg(long, value_name = "POS")]
    pub end: Option<Position>,
}

/// Frame counting shared between the pad probes and the progress line.
#[derive(Default)]
struct Counter {
    frames: AtomicU64,
    /// When the first frame reached `turbovsr`: fps and ETA count from there, not from model
    /// loading.
    first_input: std::sync::OnceLock<Instant>,
}

/// Set by the SIGINT handler; read by the bus loop.
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

#[cfg(unix)]
fn install_sigint_handler() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only touches an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

#[cfg(not(unix))]
fn install_sigint_handler() {}

fn format_clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The progress line: `frame 120/250  48%  3.2 fps  elapsed 0:37  ETA 0:40`.
fn progress_line(frames: u64, total: Option<u64>, elapsed: f64) -> String {
    let fps = if elapsed > 0.0 {
        frames as f64 / elapsed
    } else {
        0.0
    };
    match total {
        Some(total) if total > 0 => {
            let pct = (frames as f64 / total as f64 * 100.0).min(100.0);
            let eta = if fps > 0.0 {
                format_clock(total.saturating_sub(frames) as f64 / fps)
            } else {
                "?".into()
            };
            format!(
                "frame {frames}/{total}  {pct:3.0}%  {fps:.2} fps  elapsed {}  ETA {eta}",
                format_clock(elapsed)
            )
        }
        _ => format!(
            "frame {frames}  {fps:.2} fps  elapsed {}",
            format_clock(elapsed)
        ),
    }
}

/// Runs `turbovsr upscale`.
pub fn run(args: &UpscaleArgs) -> anyhow::Result<()> {
    upscale(args, false).map(|_| ())
}

/// What an upscale wrote.
#[derive(Debug, Clone, Default)]
pub struct UpscaleSummary {
    /// Frames written.
    pub frames: u64,
    /// Their presentation timestamps in the input's timeline (ns), when asked for.
    pub pts: Vec<u64>,
}

/// `turbovsr upscale`; with `record_pts` the summary lists the input timestamps of the frames
/// written (before `--start` shifts the output to 0).
pub fn upscale(args: &UpscaleArgs, record_pts: bool) -> anyhow::Result<UpscaleSummary> {
    gst::init().context("cannot initialise GStreamer")?;
    crate::plugin_register_static().context("cannot register the turbovsr element")?;

    let plan = plan_output(&args.output)?;
    let uri = input_uri(&args.input)?;
    let range = Range {
        start: args.start,
        end: args.end,
    };
    range.validate().map_err(anyhow::Error::msg)?;
    let gate = range.is_set().then(|| RangeGate::new(range));
    let existed = args.output.exists();
    if !plan.sequence && args.output.exists() {
        if let (Ok(a), Ok(b)) = (
            std::fs::canonicalize(&args.input),
            std::fs::canonicalize(&args.output),
        ) {
            if a == b {
                bail!("output '{}' is the input file", args.output.display());
            }
        }
        if !args.encoding.overwrite {
            bail!(
                "output '{}' exists (pass --overwrite to replace it)",
                args.output.display()
            );
        }
    }
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("output folder '{}' does not exist", parent.display());
        }
    }

    let pipeline = gst::Pipeline::new();
    let decode = make("uridecodebin")?;
    decode.set_property("uri", &uri);

    // Video branch, built up front: decodebin's video pad links to `vqueue` when it appears.
    let vqueue = make("queue")?;
    // A few decoded frames decouple the decoder from turbovsr; more would only be frames that
    // Ctrl-C still has to process.
    vqueue.set_property("max-size-buffers", 4u32);
    vqueue.set_property("max-size-bytes", 0u32);
    vqueue.set_property("max-size-time", 0u64);
    let convert_in = make("videoconvert")?;
    let upscaler = gst::ElementFactory::make("turbovsr")
        .build()
        .context("cannot create the turbovsr element")?;
    set_element_properties(&upscaler, args)?;
    let convert_out = make("videoconvert")?;
    let encoder = match &args.encoding.encoder {
        Some(desc) => encoder_bin(desc, "--encoder")?,
        None => encoder_bin(plan.video_encoder, &format!("{} output", plan.kind))?,
    };
    let sink = if plan.sequence {
        let sink = make("multifilesink")?;
        sink.set_property("location", args.output.to_string_lossy().as_ref());
        sink
    } else {
        let sink = make("filesink")?;
        sink.set_property("location", args.output.to_string_lossy().as_ref());
        sink
    };
    let muxer = match plan.muxer {
        Some(name) => {
            require_element(name, &format!("{} output", plan.kind))?;
            Some(make(name)?)
        }
        None => None,
    };
    pipeline.add_many([
        &decode,
        &vqueue,
        &convert_in,
        &upscaler,
        &convert_out,
        &encoder,
        &sink,
    ])?;
    gst::Element::link_many([&vqueue, &convert_in, &upscaler, &convert_out, &encoder])?;
    match &muxer {
        Some(mux) => {
            pipeline.add(mux)?;
            encoder
                .link(mux)
                .with_context(|| format!("the video encoder cannot feed {}", plan.kind))?;
            mux.link(&sink)?;
        }
        None => encoder.link(&sink)?,
    }

    let counter = Arc::new(Counter::default());
    let src_pad = upscaler.static_pad("src").expect("turbovsr has a src pad");
    let recorded_pts: Arc<Mutex<Vec<u64>>> = Arc::default();
    {
        let out_counter = Arc::clone(&counter);
        let recorded_pts = Arc::clone(&recorded_pts);
        // The input's timestamps: the muxer writes running time, which --start moves to 0.
        src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                out_counter.frames.fetch_add(1, Ordering::Relaxed);
                if record_pts {
                    let pts = buffer.pts().map_or(u64::MAX, |t| t.nseconds());
                    recorded_pts.lock().unwrap().push(pts);
                }
            }
            gst::PadProbeReturn::Ok
        });
        let counter = Arc::clone(&counter);
        let sink_pad = upscaler
            .static_pad("sink")
            .expect("turbovsr has a sink pad");
        sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.first_input.get_or_init(Instant::now);
            gst::PadProbeReturn::Ok
        });
    }

    let side_by_side = args.side_by_side.as_ref().map(|path| {
        let capture = Arc::new(SideBySide::new(path.clone(), args.side_by_side_frame));
        capture.attach(&upscaler);
        capture
    });

    // Notes for the user from the pad-added callback (streaming thread) to the main loop.
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let linked_video = Arc::new(AtomicBool::new(false));
    {
        let pipeline_weak = pipeline.downgrade();
        let vqueue = vqueue.clone();
        let muxer = muxer.clone();
        let notes = Arc::clone(&notes);
        let linked_video = Arc::clone(&linked_video);
        let gate = gate.clone();
        let audio = AudioPlan {
            kind: plan.kind,
            encoders: plan.audio_encoders,
            custom: args.encoding.audio_encoder.clone(),
            dropped: args.encoding.no_audio,
        };
        decode.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let media = caps
                .structure(0)
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            let note = |msg: String| notes.lock().unwrap().push(msg);
            let video = media.starts_with("video/");
            if let Some(gate) = &gate {
                // every stream, so that all of them end at the range's end
                gate.attach(pad, video && !linked_video.load(Ordering::SeqCst));
            }
            if video {
                if linked_video.swap(true, Ordering::SeqCst) {
                    note(
                        "the input has more than one video stream; only the first is upscaled"
                            .into(),
                    );
                    link_to_fakesink(&pipeline, pad);
                    return;
                }
                let sinkpad = vqueue.static_pad("sink").expect("queue has a sink pad");
                if let Err(e) = pad.link(&sinkpad) {
                    note(format!("cannot link the decoded video ({caps}): {e:?}"));
                }
            } else if media.starts_with("audio/") {
                if let Err(msg) = audio.link(&pipeline, muxer.as_ref(), pad) {
                    note(msg);
                    link_to_fakesink(&pipeline, pad);
                }
            } else {
                link_to_fakesink(&pipeline, pad);
            }
        });
    }

    let bus = pipeline.bus().expect("a pipeline has a bus");
    if !args.quiet {
        eprintln!(
            "turbovsr: {} -> {} (model {}, scale {}, {} step{})",
            args.input,
            args.output.display(),
            args.model.as_deref().unwrap_or("default"),
            args.scale,
            args.steps,
            if args.steps == 1 { "" } else { "s" }
        );
    }
    install_sigint_handler();
    let interrupts_before = INTERRUPTS.load(Ordering::SeqCst);
    let result = match pipeline.set_state(gst::State::Playing) {
        Err(e) => Err(anyhow::anyhow!(
            "cannot start the pipeline: {}",
            first_error(&bus).unwrap_or_else(|| format!("{e:?}"))
        )),
        Ok(_) => run_bus_loop(
            &pipeline,
            &decode,
            &upscaler,
            &bus,
            &counter,
            &notes,
            args,
            gate.as_deref(),
            interrupts_before,
        ),
    };
    let _ = pipeline.set_state(gst::State::Null);
    for note in notes.lock().unwrap().drain(..) {
        eprintln!("turbovsr: {note}");
    }
    let result = result.and_then(|outcome| {
        if !linked_video.load(Ordering::SeqCst) {
            bail!("input '{}' has no video stream", args.input);
        }
        if let Some(gate) = &gate {
            if let Some(msg) = gate.error() {
                bail!("{msg}");
            }
            if counter.frames.load(Ordering::Relaxed) == 0 {
                bail!(
                    "no frame of '{}' lies in the range {}..{} (the input ends before it)",
                    args.input,
                    range.start.map_or("0f".into(), |p| p.to_string()),
                    range.end.map_or(String::new(), |p| p.to_string()),
                );
            }
        }
        Ok(outcome)
    });
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            // A file without a single frame is no use (and blocks the next run without
            // --overwrite); one with frames is left for the user to judge.
            if !plan.sequence && !existed && counter.frames.load(Ordering::Relaxed) == 0 {
                let _ = std::fs::remove_file(&args.output);
            }
            return Err(e);
        }
    };
    let frames = counter.frames.load(Ordering::Relaxed);
    if let (Some(capture), Outcome::Finished { .. }) = (&side_by_side, &outcome) {
        capture.write().with_context(|| {
            format!(
                "{} was written, but not the side-by-side image",
                args.output.display()
            )
        })?;
    }
    match outcome {
        Outcome::Finished { elapsed } => {
            eprintln!(
                "turbovsr: wrote {frames} frames to {} in {} ({:.2} fps)",
                args.output.display(),
                format_clock(elapsed),
                frames as f64 / elapsed.max(1e-9)
            );
            let pts = std::mem::take(&mut *recorded_pts.lock().unwrap());
            Ok(UpscaleSummary { frames, pts })
        }
        Outcome::Interrupted => bail!(
            "interrupted by Ctrl-C: {} holds the first {frames} frames and is complete",
            args.output.display()
        ),
    }
}

/// Width of the white line between the two halves of the side-by-side image.
pub const SIDE_BY_SIDE_SEPARATOR: usize = 4;

/// A captured frame: its number, the buffer and its caps.
type Captured = (u64, gst::Buffer, gst::Caps);

/// `--side-by-side`: the same frame captured where it enters `turbovsr` and where it leaves it
/// (one output frame per input frame, in order, so the n-th buffer on each pad is frame n).
/// Only the target frame's buffers are held (until it arrives, the latest frame, so that a
/// stream shorter than announced still gives an image of its last frame).
struct SideBySide {
    path: PathBuf,
    requested: Option<u64>,
    state: Mutex<SideBySideState>,
}

#[derive(Default)]
struct SideBySideState {
    target: Option<u64>,
    inputs: u64,
    outputs: u64,
    input: Option<Captured>,
    output: Option<Captured>,
    note: Option<String>,
}

impl SideBySide {
    fn new(path: PathBuf, requested: Option<u64>) -> Self {
        Self {
            path,
            requested,
            state: Mutex::default(),
        }
    }

    fn attach(self: &Arc<Self>, upscaler: &gst::Element) {
        for (name, input) in [("sink", true), ("src", false)] {
            let pad = upscaler.static_pad(name).expect("turbovsr has its pads");
            let this = Arc::clone(self);
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                if let Some(buffer) = info.buffer() {
                    this.on_buffer(pad, buffer, input);
                }
                gst::PadProbeReturn::Ok
            });
        }
    }

    fn on_buffer(&self, pad: &gst::Pad, buffer: &gst::Buffer, input: bool) {
        let mut s = self.state.lock().unwrap();
        if s.target.is_none() {
            s.target = Some(match self.requested {
                Some(n) => n,
                None => match middle_frame(pad) {
                    Some(n) => n,
                    None => {
                        s.note = Some(
                            "the input's length is unknown: the side-by-side image shows frame 0"
                                .into(),
                        );
                        0
                    }
                },
            });
        }
        let target = s.target.expect("set above");
        let count = if input { &mut s.inputs } else { &mut s.outputs };
        let index = *count;
        *count += 1;
        let slot = if input { &mut s.input } else { &mut s.output };
        if slot.as_ref().is_none_or(|(i, _, _)| *i != target) {
            if let Some(caps) = pad.current_caps() {
                *slot = Some((index, buffer.clone(), caps));
            }
        }
    }

    /// Writes the image once the stream has ended.
    fn write(&self) -> anyhow::Result<()> {
        let s = self.state.lock().unwrap();
        let (Some((i_in, in_buf, in_caps)), Some((i_out, out_buf, out_caps))) =
            (&s.input, &s.output)
        else {
            bail!("no frame reached the output");
        };
        if i_in != i_out {
            bail!("captured input frame {i_in} but output frame {i_out}");
        }
        let target = s.target.unwrap_or(0);
        if *i_in != target {
            eprintln!(
                "turbovsr: --side-by-side-frame {target} is past the last frame ({i_in}): the \
                 image shows frame {i_in}"
            );
        }
        if let Some(note) = &s.note {
            eprintln!("turbovsr: {note}");
        }
        let input = buffer_to_rgb(in_buf, in_caps).context("input frame")?;
        let output = buffer_to_rgb(out_buf, out_caps).context("output frame")?;
        let (w, h) = (output.width, output.height);
        let lr = candle_core::Tensor::from_vec(
            input.rgb.clone(),
            (3, input.height, input.width),
            &candle_core::Device::Cpu,
        )?;
        let up = crate::pipeline::resize::resize_bicubic(&lr, h, w)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let left =
            crate::eval::set::frame_to_rgb8(&crate::pipeline::RgbFrame::new(w, h, up, None))?;
        let right = crate::eval::set::frame_to_rgb8(&output)?;
        let width = 2 * w + SIDE_BY_SIDE_SEPARATOR;
        let mut canvas = vec![255u8; 3 * width * h];
        for y in 0..h {
            let row = &mut canvas[3 * width * y..3 * width * (y + 1)];
            row[..3 * w].copy_from_slice(&left[3 * w * y..3 * w * (y + 1)]);
            row[3 * (w + SIDE_BY_SIDE_SEPARATOR)..]
                .copy_from_slice(&right[3 * w * y..3 * w * (y + 1)]);
        }
        crate::eval::set::write_png_rgb8(&self.path, width, h, &canvas)?;
        eprintln!(
            "turbovsr: wrote {} (frame {i_in}: input bicubic-upscaled | output, {width}x{h})",
            self.path.display()
        );
        Ok(())
    }
}

/// The middle frame of the input, from the duration upstream of `pad` and its framerate.
fn middle_frame(pad: &gst::Pad) -> Option<u64> {
    let duration = pad.peer_query_duration::<gst::ClockTime>()?;
    let caps = pad.current_caps()?;
    let fps = caps
        .structure(0)?
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)?;
    let frames = (duration.nseconds() as f64 * fps.numer() as f64 / (fps.denom() as f64 * 1e9))
        .round() as u64;
    (frames > 0).then(|| (frames - 1) / 2)
}

/// A raw video buffer as float RGB, converted as the element converts its input.
fn buffer_to_rgb(
    buffer: &gst::Buffer,
    caps: &gst::Caps,
) -> anyhow::Result<crate::pipeline::RgbFrame> {
    use gst_video::prelude::*;
    let info = gst_video::VideoInfo::from_caps(caps).with_context(|| format!("caps {caps}"))?;
    let layout = crate::element::layout_from_info(&info).map_err(anyhow::Error::msg)?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &info)
        .map_err(|_| {
            anyhow::anyhow!("a buffer of {} bytes is not a {caps} frame", buffer.size())
        })?;
    let strides: Vec<usize> = frame.plane_stride().iter().map(|s| *s as usize).collect();
    let planes: Vec<&[u8]> = (0..frame.n_planes())
        .map(|p| frame.plane_data(p).unwrap_or(&[]))
        .collect();
    Ok(crate::pipeline::frame_to_rgb(&layout, &planes, &strides)?)
}

/// How the bus loop ended without an error.
enum Outcome {
    Finished {
        elapsed: f64,
    },
    /// Ctrl-C: EOS was sent and the file finished.
    Interrupted,
}

fn set_element_properties(element: &gst::Element, args: &UpscaleArgs) -> anyhow::Result<()> {
    // Unset: the element's default, the shipped default model.
    if let Some(model) = &args.model {
        element.set_property("model", model);
    }
    element.set_property("scale", args.scale);
    element.set_property("steps", args.steps);
    element.set_property("window", args.window);
    element.set_property("overlap", args.overlap);
    element.set_property("tile-size", args.tile_size);
    element.set_property("tile-overlap", args.tile_overlap);
    element.set_property("device-id", args.device_id);
    element.set_property("seed", args.seed);
    element.set_property_from_str("device", DeviceChoice::from(args.device).nick());
    element.set_property_from_str("precision", Precision::from(args.precision).nick());
    element.set_property_from_str("vae-precision", Precision::from(args.vae_precision).nick());
    element.set_property_from_str("color-fix", ColorFix::from(args.color_fix).nick());
    if let Some(path) = &args.prompt_embeds {
        element.set_property("prompt-embeds", path.to_string_lossy().as_ref());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_bus_loop(
    pipeline: &gst::Pipeline,
    decode: &gst::Element,
    upscaler: &gst::Element,
    bus: &gst::Bus,
    counter: &Counter,
    notes: &Mutex<Vec<String>>,
    args: &UpscaleArgs,
    gate: Option<&RangeGate>,
    interrupts_before: u64,
) -> anyhow::Result<Outcome> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let show = !args.quiet;
    let mut total: Option<u64> = None;
    let mut last_print = Instant::now() - Duration::from_secs(60);
    let mut last_frames = u64::MAX;
    let mut interrupted = false;
    let clear = |tty: bool| {
        if tty {
            eprint!("\r\x1b[K");
        }
    };
    loop {
        let msg = bus.timed_pop(gst::ClockTime::from_mseconds(100));
        // Notes first, so they do not land in the middle of a progress line.
        for note in notes.lock().unwrap().drain(..) {
            clear(tty && show);
            eprintln!("turbovsr: {note}");
        }
        let interrupts = INTERRUPTS.load(Ordering::SeqCst) - interrupts_before;
        if interrupts >= 2 {
            clear(tty && show);
            bail!(
                "stopped by a second Ctrl-C: {} is incomplete",
                args.output.display()
            );
        }
        if interrupts == 1 && !interrupted {
            interrupted = true;
            clear(tty && show);
            eprintln!("turbovsr: Ctrl-C: finishing the frames in flight and closing the file (Ctrl-C again to stop at once)");
            // EOS into every branch right after the decoder: turbovsr drains its tail window
            // and the muxer finalizes the file. (EOS sent to the pipeline, as gst-launch -e
            // does, reaches only the file source, which a pull-mode demuxer never reads it
            // from.) The branch's later buffers are refused with EOS, which stops the
            // demuxer. From a thread: sending a serialized event waits for the stream lock,
            // and the bus loop must stay free for a second Ctrl-C.
            let pads: Vec<gst::Pad> = decode.src_pads().iter().filter_map(|p| p.peer()).collect();
            std::thread::spawn(move || {
                for pad in pads {
                    pad.send_event(gst::event::Eos::new());
                }
            });
        }
        if let Some(msg) = msg {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => {
                    // The caller prints the summary in place of the progress line.
                    clear(tty && show);
                    return Ok(if interrupted {
                        Outcome::Interrupted
                    } else {
                        Outcome::Finished {
                            elapsed: counter
                                .first_input
                                .get()
                                .map_or(0.0, |s| s.elapsed().as_secs_f64()),
                        }
                    });
                }
                MessageView::Error(err) => {
                    clear(tty && show);
                    bail!("{}", error_text(err));
                }
                MessageView::Warning(w) => {
                    clear(tty && show);
                    let source = w.src().map(|s| s.name().to_string()).unwrap_or_default();
                    eprintln!("turbovsr: warning from {source}: {}", w.error());
                }
                _ => {}
            }
        }
        let Some(&start) = counter.first_input.get() else {
            continue;
        };
        if total.is_none() {
            total = match gate {
                // the range's length, or from its start to the input's end
                Some(gate) => gate.expected_frames().or_else(|| {
                    let (start, _) = gate.frames()?;
                    expected_frames(pipeline, upscaler).map(|n| n.saturating_sub(start))
                }),
                None => expected_frames(pipeline, upscaler),
            };
        }
        let frames = counter.frames.load(Ordering::Relaxed);
        if !show {
            continue;
        }
        let now = Instant::now();
        let due = if tty {
            now - last_print >= Duration::from_millis(250)
        } else {
            frames != last_frames && now - last_print >= Duration::from_secs(2)
        };
        if due {
            let line = progress_line(frames, total, start.elapsed().as_secs_f64());
            if tty {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
            last_print = now;
            last_frames = frames;
        }
    }
}

/// Frames the input's duration promises at the output framerate, once both are known.
fn expected_frames(pipeline: &gst::Pipeline, upscaler: &gst::Element) -> Option<u64> {
    let duration = pipeline.query_duration::<gst::ClockTime>()?;
    let caps = upscaler.static_pad("src")?.current_caps()?;
    let fps = caps
        .structure(0)?
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)?;
    let frames = duration.nseconds() as f64 * fps.numer() as f64 / (fps.denom() as f64 * 1e9);
    Some(frames.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_has_frames_fps_and_eta() {
        assert_eq!(
            progress_line(50, Some(200), 10.0),
            "frame 50/200   25%  5.00 fps  elapsed 0:10  ETA 0:30"
        );
        assert_eq!(
            progress_line(7, None, 3.5),
            "frame 7  2.00 fps  elapsed 0:04"
        );
        assert_eq!(format_clock(3725.0), "1:02:05");
    }
}
