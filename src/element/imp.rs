//! `turbovsr`: implementation. Layout follows gst-plugins-rs (debug category, defaults,
//! settings, state, element, then the GObject / GStreamer impls).
//!
//! Threads: the sink pad's streaming thread converts each buffer to float RGB and feeds the
//! window scheduler; full windows go to one worker thread through a one-slot queue (the chain
//! blocks from queuing a window until the worker takes it: back-pressure, never unbounded
//! buffering, and at most one running window plus the next one's new frames on the host).
//! Finished windows come back through the same queue and are pushed downstream as soon as they
//! are done by a push thread, or by the streaming thread when it gets there first; one push lock
//! orders every downstream push, so buffers and serialized events keep their order. The push
//! thread is what keeps a player from stalling: a window's frames must not wait for the next
//! input buffer, which may never come while the player's other sinks wait for this one to
//! preroll. FLUSH_START and PAUSED->READY unblock a waiting chain and cancel the running window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use parking_lot::{Condvar, Mutex};

use super::{ColorFix, DeviceKind, PrecisionKind, VaePrecisionKind};
use crate::pipeline::device_format::{converts_on_device, copy_planes};
use crate::pipeline::{
    frame_to_rgb, load_processor, rgb_to_frame, CancelToken, DeviceChoice, FrameLayout, HeldState,
    OutputSize, PixelFormat, Precision, ProcessError, ProcessorSettings, RgbFrame, UpscaleEngine,
    Window, WindowConfig, WindowScheduler, YuvMatrix,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "turbovsr",
        gst::DebugColorFlags::empty(),
        Some("TurboVSR diffusion video super-resolution"),
    )
});

const DEFAULT_MODEL: Option<&str> = None;
const DEFAULT_SCALE: u32 = 4;
const DEFAULT_STEPS: u32 = 4;
const DEFAULT_WINDOW: u32 = crate::pipeline::window::DEFAULT_WINDOW as u32;
const DEFAULT_OVERLAP: u32 = crate::pipeline::window::DEFAULT_OVERLAP as u32;
const DEFAULT_FIRST_WINDOW: u32 = crate::pipeline::window::DEFAULT_FIRST_WINDOW as u32;
const DEFAULT_TILE_SIZE: u32 = 0;
const DEFAULT_TILE_OVERLAP: u32 = crate::pipeline::settings::DEFAULT_TILE_OVERLAP as u32;
const DEFAULT_DEVICE: DeviceKind = DeviceKind::Auto;
const DEFAULT_DEVICE_ID: u32 = 0;
const DEFAULT_PRECISION: PrecisionKind = PrecisionKind::Auto;
const DEFAULT_VAE_PRECISION: VaePrecisionKind = VaePrecisionKind::Auto;
const DEFAULT_SEED: u64 = 0;
const DEFAULT_PROMPT_EMBEDS: Option<&str> = None;
const DEFAULT_COLOR_FIX: ColorFix = ColorFix::None;

/// Sampler step counts the shortcut model supports (DESIGN §4).
const VALID_STEPS: [u32; 5] = [1, 2, 4, 8, 16];

#[derive(Debug, Clone)]
struct Settings {
    model: Option<String>,
    scale: u32,
    steps: u32,
    window: u32,
    overlap: u32,
    first_window: u32,
    tile_size: u32,
    tile_overlap: u32,
    device: DeviceKind,
    device_id: u32,
    precision: PrecisionKind,
    vae_precision: VaePrecisionKind,
    seed: u64,
    prompt_embeds: Option<String>,
    color_fix: ColorFix,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.map(String::from),
            scale: DEFAULT_SCALE,
            steps: DEFAULT_STEPS,
            window: DEFAULT_WINDOW,
            overlap: DEFAULT_OVERLAP,
            first_window: DEFAULT_FIRST_WINDOW,
            tile_size: DEFAULT_TILE_SIZE,
            tile_overlap: DEFAULT_TILE_OVERLAP,
            device: DEFAULT_DEVICE,
            device_id: DEFAULT_DEVICE_ID,
            precision: DEFAULT_PRECISION,
            vae_precision: DEFAULT_VAE_PRECISION,
            seed: DEFAULT_SEED,
            prompt_embeds: DEFAULT_PROMPT_EMBEDS.map(String::from),
            color_fix: DEFAULT_COLOR_FIX,
        }
    }
}

impl Settings {
    /// Checks the combinations a single property's range cannot express.
    fn validate(&self) -> Result<WindowConfig, String> {
        if !VALID_STEPS.contains(&self.steps) {
            return Err(format!(
                "steps={} is not one of {VALID_STEPS:?}",
                self.steps
            ));
        }
        if self.tile_size != 0 && self.tile_overlap >= self.tile_size {
            return Err(format!(
                "tile-overlap={} must be smaller than tile-size={}",
                self.tile_overlap, self.tile_size
            ));
        }
        if let Some(path) = &self.prompt_embeds {
            if !std::path::Path::new(path).is_file() {
                return Err(format!("prompt-embeds file '{path}' does not exist"));
            }
        }
        WindowConfig::new(self.window as usize, self.overlap as usize)
            .and_then(|w| w.with_first_window(self.first_window as usize))
            .map_err(|e| e.to_string())
    }

    fn processor_settings(&self) -> ProcessorSettings {
        ProcessorSettings {
            device: match self.device {
                DeviceKind::Auto => DeviceChoice::Auto,
                DeviceKind::Cpu => DeviceChoice::Cpu,
                DeviceKind::Cuda => DeviceChoice::Cuda,
            },
            device_id: self.device_id as usize,
            precision: match self.precision {
                PrecisionKind::Auto => Precision::Auto,
                PrecisionKind::F32 => Precision::F32,
                PrecisionKind::Bf16 => Precision::Bf16,
                PrecisionKind::F16 => Precision::F16,
            },
            vae_precision: match self.vae_precision {
                VaePrecisionKind::Auto => Precision::Auto,
                VaePrecisionKind::F32 => Precision::F32,
                VaePrecisionKind::Bf16 => Precision::Bf16,
                VaePrecisionKind::F16 => Precision::F16,
            },
            steps: self.steps as usize,
            seed: self.seed,
            prompt_embeds: self.prompt_embeds.as_ref().map(std::path::PathBuf::from),
            tile_size: self.tile_size as usize,
            tile_overlap: self.tile_overlap as usize,
            color_fix: match self.color_fix {
                ColorFix::None => crate::pipeline::ColorFix::None,
                ColorFix::Wavelet => crate::pipeline::ColorFix::Wavelet,
                ColorFix::Adain => crate::pipeline::ColorFix::Adain,
            },
        }
    }
}

/// Read-only statistics exposed as properties.
#[derive(Debug, Default)]
struct Stats {
    frames_processed: u64,
    window_ms: f64,
    /// Longest window so far: the processing part of the reported latency.
    max_window_ms: f64,
    /// What the model kept on its device after the last window.
    held: HeldState,
}

/// Counts the input frames alive on the host (`frames-held`): each [`InFrame`] holds one count
/// from its conversion until the last window that uses it is done with it.
#[derive(Debug)]
struct HeldFrame(Arc<AtomicU64>);

impl HeldFrame {
    fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for HeldFrame {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Timing and identity of one input frame, restored on its output frame.
#[derive(Debug, Clone, Copy)]
struct FrameMeta {
    pts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
    offset: u64,
    offset_end: u64,
}

#[derive(Debug)]
struct InFrame {
    rgb: RgbFrame,
    meta: FrameMeta,
    _held: HeldFrame,
}

/// A frame shared by the windows that overlap on it.
#[derive(Debug, Clone)]
struct Frame(Arc<InFrame>);

impl AsRef<RgbFrame> for Frame {
    fn as_ref(&self) -> &RgbFrame {
        &self.0.rgb
    }
}

/// A window for the worker, with what it needs to build the output buffers.
struct Job {
    window: Window<Frame>,
    generation: u64,
    out_info: gst_video::VideoInfo,
    out_layout: FrameLayout,
}

struct JobResult {
    window: u64,
    buffers: Result<Vec<gst::Buffer>, String>,
    elapsed_ms: f64,
    /// What the model keeps on its device after this window.
    held: HeldState,
}

/// The one-slot queue between the streaming thread and the worker.
#[derive(Default)]
struct Queue {
    job: Option<Job>,
    busy: bool,
    results: VecDeque<JobResult>,
    flushing: bool,
    shutdown: bool,
    /// Bumped on flush: results of an older generation are dropped.
    generation: u64,
    /// Cancels the window the worker is running.
    running_cancel: Option<Arc<CancelToken>>,
    /// What downstream last refused from the push thread (not-linked, EOS, an error): returned
    /// by the next chain, like a pad's last flow return, until the next flush.
    downstream: Option<gst::FlowError>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    cond: Condvar,
}

impl Shared {
    /// Starts or ends flushing. Starting unblocks a waiting streaming thread and cancels the
    /// running window (FLUSH_START, PAUSED->READY, shutdown); ending drops the queued window and
    /// the finished ones, whose results belong to the flushed stream (FLUSH_STOP).
    fn set_flushing(&self, flushing: bool) {
        let mut q = self.queue.lock();
        q.flushing = flushing;
        if flushing {
            if let Some(c) = &q.running_cancel {
                c.cancel();
            }
        } else {
            q.job = None;
            q.results.clear();
            q.downstream = None;
            q.generation += 1;
        }
        self.cond.notify_all();
    }
}

/// The model's worker thread and the push thread, which share the queue.
struct Worker {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
    pusher: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        engine: UpscaleEngine,
        element: glib::WeakRef<super::TurboVsr>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("turbovsr-worker".into())
            .spawn(move || worker_loop(engine, &thread_shared))?;
        let mut worker = Self {
            shared: shared.clone(),
            handle: Some(handle),
            pusher: None,
        };
        worker.pusher = Some(
            std::thread::Builder::new()
                .name("turbovsr-push".into())
                .spawn(move || push_loop(&shared, &element))?,
        );
        Ok(worker)
    }

    fn stop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.set_flushing(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.pusher.take() {
            // The push thread may hold the last reference to the element, and so stop here.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// The push thread: pushes each finished window downstream as soon as the worker is done
/// with it, whether or not another input buffer comes.
fn push_loop(shared: &Shared, element: &glib::WeakRef<super::TurboVsr>) {
    loop {
        {
            let mut q = shared.queue.lock();
            while !q.shutdown && (q.results.is_empty() || q.flushing || q.downstream.is_some()) {
                shared.cond.wait(&mut q);
            }
            if q.shutdown {
                return;
            }
        }
        let Some(element) = element.upgrade() else {
            return;
        };
        if let Err(err) = element.imp().push_ready(PushMode::Pusher) {
            let mut q = shared.queue.lock();
            if err != gst::FlowError::Flushing && !q.flushing {
                q.downstream.get_or_insert(err);
                // A chain waiting to queue a window returns the error instead.
                shared.cond.notify_all();
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker_loop(mut engine: UpscaleEngine, shared: &Shared) {
    let mut last_generation = 0;
    loop {
        let (job, cancel) = {
            let mut q = shared.queue.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(job) = q.job.take() {
                    let cancel = Arc::new(CancelToken::default());
                    q.running_cancel = Some(cancel.clone());
                    q.busy = true;
                    // A slot freed up: wake a chain waiting to queue the next window.
                    shared.cond.notify_all();
                    break (job, cancel);
                }
                shared.cond.wait(&mut q);
            }
        };
        if job.generation != last_generation {
            engine.reset();
            last_generation = job.generation;
        }
        let start = Instant::now();
        engine.set_output(OutputSize::Fixed {
            width: job.out_layout.width,
            height: job.out_layout.height,
        });
        // On a GPU the output format is made on the device and only its bytes come back; on
        // the CPU, and for formats with alpha (resized on the host), the host converts.
        let outcome = if !engine.device().is_cpu() && converts_on_device(&job.out_layout) {
            engine
                .run_to_layout(&job.window, &job.out_layout, &cancel)
                .map(OutFrames::Planes)
        } else {
            engine.run(&job.window, &cancel).map(OutFrames::Rgb)
        };
        let buffers = match outcome {
            Ok(frames) => Some(build_buffers(&job, &frames)),
            Err(ProcessError::Cancelled) => None,
            Err(ProcessError::Model(e)) => Some(Err(format!("{e:#}"))),
        };
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        let held = engine.held();
        // The window's input frames are released here, before the result is announced, so
        // `frames-held` never counts a finished window.
        let (index, generation) = (job.window.index, job.generation);
        drop(job);
        let mut q = shared.queue.lock();
        q.busy = false;
        q.running_cancel = None;
        if let Some(buffers) = buffers {
            if generation == q.generation && !q.flushing {
                q.results.push_back(JobResult {
                    window: index,
                    buffers,
                    elapsed_ms,
                    held,
                });
            }
        }
        shared.cond.notify_all();
    }
}

/// The emitted frames of a window: float RGB for the host to convert, or the output format's
/// planes, converted on the model's device (tightly packed, one vector per plane).
enum OutFrames {
    Rgb(Vec<RgbFrame>),
    Planes(Vec<Vec<Vec<u8>>>),
}

impl OutFrames {
    fn len(&self) -> usize {
        match self {
            OutFrames::Rgb(f) => f.len(),
            OutFrames::Planes(f) => f.len(),
        }
    }

    /// Writes frame `k` into the mapped `planes` of an output buffer of `layout`.
    fn write(
        &self,
        k: usize,
        layout: &FrameLayout,
        planes: &mut [&mut [u8]],
        strides: &[usize],
    ) -> Result<(), String> {
        match self {
            OutFrames::Rgb(f) => {
                rgb_to_frame(&f[k], layout, planes, strides).map_err(|e| e.to_string())
            }
            OutFrames::Planes(f) => copy_planes(layout, &f[k], planes, strides),
        }
    }
}

/// Output buffers for the emitted frames of a job, with their input frames' timing.
fn build_buffers(job: &Job, frames: &OutFrames) -> Result<Vec<gst::Buffer>, String> {
    let window = &job.window;
    if frames.len() != window.emit.len() {
        return Err(format!(
            "window {}: {} frames came back for {} to emit",
            window.index,
            frames.len(),
            window.emit.len()
        ));
    }
    window
        .emit
        .clone()
        .enumerate()
        .map(|(k, i)| {
            let meta = window.frames[i].0.meta;
            let mut buffer = gst::Buffer::with_size(job.out_info.size())
                .map_err(|e| format!("cannot allocate an output buffer: {e}"))?;
            {
                let buffer = buffer.get_mut().expect("new buffer is writable");
                buffer.set_pts(meta.pts);
                buffer.set_duration(meta.duration);
                buffer.set_offset(meta.offset);
                buffer.set_offset_end(meta.offset_end);
                let mut vframe =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &job.out_info)
                        .map_err(|e| format!("cannot map an output buffer: {e}"))?;
                let strides: Vec<usize> =
                    vframe.plane_stride().iter().map(|s| *s as usize).collect();
                let n_planes = vframe.n_planes() as usize;
                let mut planes: Vec<&mut [u8]> = Vec::with_capacity(n_planes);
                // Each plane borrows the frame mutably; split the borrows through raw parts.
                for p in 0..n_planes {
                    let data = vframe
                        .plane_data_mut(p as u32)
                        .map_err(|e| format!("cannot map output plane {p}: {e}"))?;
                    // SAFETY: planes of one video frame are disjoint regions of the buffer,
                    // and `vframe` outlives `planes`.
                    planes.push(unsafe {
                        std::slice::from_raw_parts_mut(data.as_mut_ptr(), data.len())
                    });
                }
                frames
                    .write(k, &job.out_layout, &mut planes, &strides)
                    .map_err(|e| format!("frame {}: {e}", window.start + i as u64))?;
            }
            Ok(buffer)
        })
        .collect()
}

/// Per-stream state, from READY->PAUSED to PAUSED->READY.
struct State {
    scheduler: WindowScheduler<Frame>,
    in_info: Option<gst_video::VideoInfo>,
    in_layout: Option<FrameLayout>,
    out_info: Option<gst_video::VideoInfo>,
    out_layout: Option<FrameLayout>,
    /// Serialized events that arrived after `.0` frames: forwarded once that many are pushed.
    pending_events: VecDeque<(u64, gst::Event)>,
    /// Frames received / pushed since the stream (re)started.
    frames_in: u64,
    frames_out: u64,
    discont_next: bool,
    started: Instant,
    /// The current segment, to tell a repeated SEGMENT from a new one.
    segment: Option<gst::Segment>,
}

impl State {
    fn new(windows: WindowConfig) -> Self {
        Self {
            scheduler: WindowScheduler::new(windows),
            in_info: None,
            in_layout: None,
            out_info: None,
            out_layout: None,
            pending_events: VecDeque::new(),
            frames_in: 0,
            frames_out: 0,
            discont_next: true,
            started: Instant::now(),
            segment: None,
        }
    }

    fn reset_stream(&mut self) {
        self.scheduler.reset();
        self.segment = None;
        self.pending_events.clear();
        self.frames_in = 0;
        self.frames_out = 0;
        self.discont_next = true;
    }

    /// Queues a serialized event to follow the frames received before it.
    fn defer_event(&mut self, event: gst::Event) -> Option<gst::Event> {
        if self.frames_out == self.frames_in && self.pending_events.is_empty() {
            Some(event)
        } else {
            self.pending_events.push_back((self.frames_in, event));
            None
        }
    }
}

/// Who pushes finished windows, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushMode {
    /// The streaming thread after each buffer: only if no push is in progress.
    Chain,
    /// The push thread: waits for a push in progress.
    Pusher,
    /// Draining (EOS, new segment, caps): first waits until the worker is idle.
    Drain,
}

/// What the streaming thread pushes, in order, once it has let go of the state lock.
enum Item {
    Buffer(gst::Buffer),
    Event(gst::Event),
    Progress(gst::Structure),
    /// Our latency changed: the application should recompute the pipeline's.
    Latency,
}

pub struct TurboVsr {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    worker: Mutex<Option<Worker>>,
    /// The worker's queue, reachable without the worker lock (FLUSH_START, state changes).
    shared: Mutex<Option<Arc<Shared>>>,
    stats: Mutex<Stats>,
    /// Input frames alive on the host (`frames-held`).
    frames_held: Arc<AtomicU64>,
    /// Windows of the current configuration, for the LATENCY query.
    windows: Mutex<WindowConfig>,
    /// Orders every downstream push of frames and serialized events between the streaming
    /// thread and the push thread.
    push_lock: Mutex<()>,
}

pub(crate) fn layout_from_info(info: &gst_video::VideoInfo) -> Result<FrameLayout, String> {
    let format = PixelFormat::from_name(info.format().to_str()).ok_or_else(|| {
        format!(
            "format {} is not supported (supported: {})",
            info.format().to_str(),
            PixelFormat::ALL.map(|f| f.name()).join(", ")
        )
    })?;
    if info.interlace_mode() != gst_video::VideoInterlaceMode::Progressive {
        return Err(format!(
            "interlace-mode {} is not supported: deinterlace first",
            info.interlace_mode().to_str()
        ));
    }
    let colorimetry = info.colorimetry();
    let matrix = match colorimetry.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::Bt2020,
        gst_video::VideoColorMatrix::Smpte240m => YuvMatrix::Smpte240m,
        _ => YuvMatrix::Bt601,
    };
    Ok(FrameLayout {
        format,
        width: info.width() as usize,
        height: info.height() as usize,
        matrix,
        full_range: colorimetry.range() == gst_video::VideoColorRange::Range0_255,
    })
}

/// `caps` with width, height and pixel-aspect-ratio free: any size maps to any other.
fn free_size(caps: &gst::Caps) -> gst::Caps {
    let mut caps = caps.clone();
    for s in caps.make_mut().iter_mut() {
        s.set("width", gst::IntRange::new(1, i32::MAX));
        s.set("height", gst::IntRange::new(1, i32::MAX));
        s.remove_field("pixel-aspect-ratio");
    }
    caps
}

impl TurboVsr {
    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.lock().clone()
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if buffer.flags().contains(gst::BufferFlags::DISCONT) {
            let started = self.state.lock().as_ref().is_some_and(|s| s.frames_in > 0);
            if started {
                gst::debug!(
                    CAT,
                    imp = self,
                    "DISCONT: draining and starting a new stream"
                );
                self.drain()?;
            }
        }
        let window = {
            let mut state_guard = self.state.lock();
            let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let (Some(in_info), Some(layout)) = (state.in_info.as_ref(), state.in_layout) else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ["Received a buffer before caps"]
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            let rgb = {
                let vframe =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), in_info)
                        .map_err(|_| {
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Format,
                                [
                                    "Buffer of {} bytes does not hold a {}x{} {} frame",
                                    buffer.size(),
                                    in_info.width(),
                                    in_info.height(),
                                    in_info.format().to_str()
                                ]
                            );
                            gst::FlowError::Error
                        })?;
                let strides: Vec<usize> =
                    vframe.plane_stride().iter().map(|s| *s as usize).collect();
                let planes: Vec<&[u8]> = (0..vframe.n_planes())
                    .map(|p| vframe.plane_data(p).unwrap_or(&[]))
                    .collect();
                frame_to_rgb(&layout, &planes, &strides).map_err(|e| {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["Frame {}: {}", state.frames_in, e]
                    );
                    gst::FlowError::Error
                })?
            };
            let frame = Frame(Arc::new(InFrame {
                rgb,
                meta: FrameMeta {
                    pts: buffer.pts(),
                    duration: buffer.duration(),
                    offset: buffer.offset(),
                    offset_end: buffer.offset_end(),
                },
                _held: HeldFrame::new(&self.frames_held),
            }));
            state.frames_in += 1;
            state
                .scheduler
                .push(frame)
                .map(|w| self.make_job(state, w))
                .transpose()?
        };
        if let Some(job) = window {
            self.submit(job)?;
        }
        self.push_ready(PushMode::Chain)
    }

    fn make_job(&self, state: &State, window: Window<Frame>) -> Result<Job, gst::FlowError> {
        let (Some(out_info), Some(out_layout)) = (state.out_info.clone(), state.out_layout) else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let generation = self
            .shared()
            .map(|s| s.queue.lock().generation)
            .ok_or(gst::FlowError::Flushing)?;
        Ok(Job {
            window,
            generation,
            out_info,
            out_layout,
        })
    }

    /// Queues a window for the worker and waits until the worker takes it. The streaming thread
    /// gathers the next window's frames only while this one runs, so the host holds at most the
    /// running window and the next one's new frames (DESIGN §5: two windows at most). It also
    /// waits while a finished window is not yet pushed: downstream's back-pressure reaches
    /// upstream, and finished output never piles up.
    fn submit(&self, job: Job) -> Result<(), gst::FlowError> {
        let shared = self.shared().ok_or(gst::FlowError::Flushing)?;
        let mut q = shared.queue.lock();
        while (q.job.is_some() || !q.results.is_empty()) && !q.flushing && q.downstream.is_none() {
            shared.cond.wait(&mut q);
        }
        if q.flushing {
            return Err(gst::FlowError::Flushing);
        }
        if let Some(err) = q.downstream {
            return Err(err);
        }
        gst::trace!(
            CAT,
            imp = self,
            "queueing window {} ({} frames from {})",
            job.window.index,
            job.window.frames.len(),
            job.window.start
        );
        q.job = Some(Job {
            generation: q.generation,
            ..job
        });
        shared.cond.notify_all();
        while q.job.is_some() && !q.flushing {
            shared.cond.wait(&mut q);
        }
        if q.flushing {
            return Err(gst::FlowError::Flushing);
        }
        Ok(())
    }

    /// Pushes finished windows downstream (and the events queued behind their frames).
    fn push_ready(&self, mode: PushMode) -> Result<gst::FlowSuccess, gst::FlowError> {
        let shared = self.shared().ok_or(gst::FlowError::Flushing)?;
        if mode == PushMode::Drain {
            let mut q = shared.queue.lock();
            while (q.job.is_some() || q.busy) && !q.flushing {
                shared.cond.wait(&mut q);
            }
        }
        // Held until the items are pushed: results leave the queue in order and are pushed in
        // that order, by whichever thread drained them. The chain leaves a push in progress to
        // the push thread, which takes every result there is before it waits again: the
        // streaming thread goes back to its input instead of blocking on a sink that waits in
        // preroll for the other branches, which need that input to flow.
        let _push = if mode == PushMode::Chain {
            match self.push_lock.try_lock() {
                Some(guard) => guard,
                None => return Ok(gst::FlowSuccess::Ok),
            }
        } else {
            self.push_lock.lock()
        };
        let results: Vec<JobResult> = {
            let mut q = shared.queue.lock();
            if q.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if let Some(err) = q.downstream {
                return Err(err);
            }
            let results = q.results.drain(..).collect();
            // A chain waiting to queue the next window may go on.
            shared.cond.notify_all();
            results
        };
        if results.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let mut items = Vec::new();
        {
            let mut state_guard = self.state.lock();
            let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            for result in results {
                let buffers = match result.buffers {
                    Ok(b) => b,
                    Err(msg) => {
                        drop(state_guard);
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Failed,
                            ["Window {} failed: {}", result.window, msg]
                        );
                        return Err(gst::FlowError::Error);
                    }
                };
                let n = buffers.len() as u64;
                for mut buffer in buffers {
                    if state.discont_next {
                        buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                        state.discont_next = false;
                    }
                    items.push(Item::Buffer(buffer));
                    state.frames_out += 1;
                    while state
                        .pending_events
                        .front()
                        .is_some_and(|(pos, _)| *pos <= state.frames_out)
                    {
                        let (_, event) = state.pending_events.pop_front().unwrap();
                        items.push(Item::Event(event));
                    }
                }
                let (total, latency_grew) = {
                    let mut stats = self.stats.lock();
                    stats.frames_processed += n;
                    stats.window_ms = result.elapsed_ms;
                    stats.held = result.held;
                    gst::debug!(
                        CAT,
                        imp = self,
                        "window {} done in {:.1} ms: {} input frames held on the host, the model \
                         keeps {} latent frames and {} conditioning frames on its device",
                        result.window,
                        result.elapsed_ms,
                        self.frames_held.load(Ordering::Relaxed),
                        result.held.latent_frames,
                        result.held.frames
                    );
                    // Re-announce latency when processing takes noticeably longer than the
                    // latency reported so far.
                    let grew = result.elapsed_ms > stats.max_window_ms * 1.1 + 1.0;
                    if result.elapsed_ms > stats.max_window_ms {
                        stats.max_window_ms = result.elapsed_ms;
                    }
                    (stats.frames_processed, grew)
                };
                if latency_grew {
                    items.push(Item::Latency);
                }
                // A window must be processed within the time its new frames last, or a live
                // stream falls behind.
                let step_ms = self.frame_ms(state) * n as f64;
                if step_ms > 0.0 && result.elapsed_ms > step_ms {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "window {} took {:.1} ms for {:.1} ms of video: slower than real time",
                        result.window,
                        result.elapsed_ms,
                        step_ms
                    );
                }
                let secs = state.started.elapsed().as_secs_f64().max(1e-9);
                items.push(Item::Progress(
                    gst::Structure::builder("turbovsr-progress")
                        .field("window", result.window)
                        .field("frames", n)
                        .field("frames-processed", total)
                        .field("window-ms", result.elapsed_ms)
                        .field("fps", n as f64 * 1e3 / result.elapsed_ms.max(1e-6))
                        .field("average-fps", state.frames_out as f64 / secs)
                        .build(),
                ));
            }
        }
        self.push_items(items)
    }

    fn push_items(&self, items: Vec<Item>) -> Result<gst::FlowSuccess, gst::FlowError> {
        for item in items {
            match item {
                Item::Buffer(buffer) => {
                    self.srcpad.push(buffer)?;
                }
                Item::Event(event) => {
                    self.srcpad.push_event(event);
                }
                Item::Progress(s) => {
                    let _ = self
                        .obj()
                        .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
                }
                Item::Latency => {
                    let _ = self
                        .obj()
                        .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Pushes a serialized event now if every frame received before it is pushed, else queues
    /// it behind them. Under the push lock, so that it cannot overtake frames the push thread
    /// is pushing.
    fn push_serialized(&self, event: gst::Event) -> bool {
        let _push = self.push_lock.lock();
        let ready = self
            .state
            .lock()
            .as_mut()
            .map_or(Some(event.clone()), |s| s.defer_event(event));
        match ready {
            Some(event) => self.srcpad.push_event(event),
            None => true,
        }
    }

    /// Processes the partial tail window, pushes every frame and queued event, and starts a new
    /// stream: before EOS, caps changes, new segments and discontinuities.
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let tail = {
            let mut state_guard = self.state.lock();
            let Some(state) = state_guard.as_mut() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            match state.scheduler.finish() {
                Some(window) => Some(self.make_job(state, window)?),
                None => None,
            }
        };
        if let Some(job) = tail {
            gst::debug!(
                CAT,
                imp = self,
                "draining tail window of {} frames (padded to {})",
                job.window.frames.len(),
                job.window.padded_len
            );
            self.submit(job)?;
        }
        self.push_ready(PushMode::Drain)?;
        let _push = self.push_lock.lock();
        let events = {
            let mut state_guard = self.state.lock();
            let Some(state) = state_guard.as_mut() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let events: Vec<Item> = state
                .pending_events
                .drain(..)
                .map(|(_, e)| Item::Event(e))
                .collect();
            state.frames_in = 0;
            state.frames_out = 0;
            events
        };
        self.push_items(events)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "handling event {:?}", event.type_());
        match event.view() {
            EventView::FlushStart(_) => {
                self.unblock();
                self.srcpad.push_event(event)
            }
            EventView::FlushStop(_) => {
                // The push thread is done with the flushed stream's frames before the flush
                // ends (its pushes fail fast since FLUSH_START).
                let _push = self.push_lock.lock();
                if let Some(shared) = self.shared() {
                    shared.set_flushing(false);
                }
                if let Some(state) = self.state.lock().as_mut() {
                    state.reset_stream();
                }
                self.srcpad.push_event(event)
            }
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                // Identical caps sent again (some decoders do) must not cut the stream.
                let new_info = gst_video::VideoInfo::from_caps(&caps).ok();
                let same = new_info.is_some()
                    && self
                        .state
                        .lock()
                        .as_ref()
                        .is_some_and(|s| s.in_info == new_info);
                if same {
                    return true;
                }
                if self.drain().is_err() {
                    return false;
                }
                self.set_caps(&caps)
            }
            EventView::Segment(seg) => {
                // A repeated identical segment does not cut the stream; a new one drains first.
                let segment = seg.segment().clone();
                let repeated = {
                    let mut state = self.state.lock();
                    match state.as_mut() {
                        Some(s) if s.segment.as_ref() == Some(&segment) => true,
                        Some(s) => {
                            s.segment = Some(segment);
                            false
                        }
                        None => false,
                    }
                };
                if repeated {
                    self.push_serialized(event)
                } else {
                    match self.drain() {
                        Ok(_) => self.srcpad.push_event(event),
                        Err(_) => false,
                    }
                }
            }
            // The end of a segment seek's range: its last frames are due now (a looping
            // player seeks again on SEGMENT_DONE, and that flush would drop them).
            EventView::SegmentDone(_) => match self.drain() {
                Ok(_) => self.srcpad.push_event(event),
                Err(_) => false,
            },
            EventView::Eos(_) | EventView::StreamStart(_) => {
                match self.drain() {
                    Ok(_) => self.srcpad.push_event(event),
                    Err(gst::FlowError::Flushing) => false,
                    Err(err) => {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "draining before {:?} failed: {err:?}",
                            event.type_()
                        );
                        // The error was posted; still let EOS through so the pipeline ends.
                        matches!(event.view(), EventView::Eos(_)) && self.srcpad.push_event(event)
                    }
                }
            }
            _ if event.is_serialized() => self.push_serialized(event),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// New input caps: negotiate the output caps (input x scale, or what downstream fixes).
    fn set_caps(&self, caps: &gst::Caps) -> bool {
        match self.negotiate(caps) {
            Ok(out_caps) => self.srcpad.push_event(gst::event::Caps::new(&out_caps)),
            Err(msg) => {
                gst::element_imp_error!(self, gst::CoreError::Negotiation, ["{}", msg]);
                false
            }
        }
    }

    /// Reads the input caps, picks the output caps and stores both; returns the output caps.
    fn negotiate(&self, caps: &gst::Caps) -> Result<gst::Caps, String> {
        let in_info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| format!("Unsupported caps {caps}"))?;
        let in_layout =
            layout_from_info(&in_info).map_err(|msg| format!("Unsupported caps {caps}: {msg}"))?;
        let scale = self.settings.lock().scale;
        let out_caps = self
            .negotiate_src_caps(&in_info, scale)
            .ok_or_else(|| format!("Downstream accepts no output caps for input {caps}"))?;
        let out_info = gst_video::VideoInfo::from_caps(&out_caps)
            .map_err(|_| format!("Cannot use output caps {out_caps}"))?;
        let out_layout = layout_from_info(&out_info)
            .map_err(|msg| format!("Unsupported output caps {out_caps}: {msg}"))?;
        gst::info!(CAT, imp = self, "negotiated {} -> {}", caps, out_caps);
        if let Some(state) = self.state.lock().as_mut() {
            state.in_info = Some(in_info);
            state.in_layout = Some(in_layout);
            state.out_info = Some(out_info);
            state.out_layout = Some(out_layout);
        }
        Ok(out_caps)
    }

    /// The input caps at `scale`x the size if downstream takes them, else the size downstream
    /// fixes (nearest to the scaled size).
    fn negotiate_src_caps(&self, in_info: &gst_video::VideoInfo, scale: u32) -> Option<gst::Caps> {
        let (w, h) = (in_info.width() as i32, in_info.height() as i32);
        let (sw, sh) = (
            w.saturating_mul(scale as i32),
            h.saturating_mul(scale as i32),
        );
        let in_caps = in_info.to_caps().ok()?;
        let mut preferred = in_caps.clone();
        {
            let s = preferred.make_mut().structure_mut(0)?;
            s.set("width", sw);
            s.set("height", sh);
        }
        let peer = self.srcpad.peer_query_caps(None);
        if preferred.can_intersect(&peer) {
            return Some(preferred);
        }
        let mut fixed = free_size(&in_caps).intersect(&peer);
        if fixed.is_empty() {
            return None;
        }
        fixed.truncate();
        {
            let s = fixed.make_mut().structure_mut(0)?;
            s.fixate_field_nearest_int("width", sw);
            s.fixate_field_nearest_int("height", sh);
        }
        fixed.fixate();
        // Keep the display aspect ratio of the input with the size downstream chose.
        let par_in = in_info.par();
        {
            let s = fixed.make_mut().structure_mut(0)?;
            let (ow, oh) = (s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?);
            let num = par_in.numer() as i64 * w as i64 * oh as i64;
            let den = par_in.denom() as i64 * h as i64 * ow as i64;
            let g = gcd(num, den).max(1);
            let par = gst::Fraction::new((num / g) as i32, (den / g) as i32);
            s.set("pixel-aspect-ratio", par);
        }
        if fixed.can_intersect(&peer) {
            Some(fixed)
        } else {
            // Downstream fixed the pixel-aspect-ratio too: take its.
            let mut caps = free_size(&in_caps).intersect(&peer);
            caps.fixate();
            Some(caps)
        }
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Caps(q) => {
                // Any input size gives any output size: downstream's formats and rates, any size.
                let peer = self.srcpad.peer_query_caps(None);
                let mut caps = free_size(&peer).intersect(&pad.pad_template_caps());
                if let Some(filter) = q.filter() {
                    caps = filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                }
                q.set_result(&caps);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Caps(q) => {
                let peer = self.sinkpad.peer_query_caps(None);
                let scale = self.settings.lock().scale as i32;
                // Prefer the scaled size of fixed upstream sizes, then any size.
                let mut scaled = gst::Caps::new_empty();
                for s in peer.iter() {
                    if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
                        let mut s = s.to_owned();
                        s.set("width", w.saturating_mul(scale));
                        s.set("height", h.saturating_mul(scale));
                        s.remove_field("pixel-aspect-ratio");
                        scaled.make_mut().append_structure(s);
                    }
                }
                scaled.merge(free_size(&peer));
                let mut caps = scaled
                    .intersect_with_mode(&pad.pad_template_caps(), gst::CapsIntersectMode::First);
                if let Some(filter) = q.filter() {
                    caps = filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                }
                q.set_result(&caps);
                true
            }
            QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let ours = self.own_latency();
                gst::debug!(
                    CAT,
                    imp = self,
                    "upstream latency {min}-{max:?}, ours {ours}"
                );
                q.set(live, min + ours, max.map(|m| m + ours));
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    /// Duration of one frame of the current input in ms (0 when the framerate is unknown).
    fn frame_ms(&self, state: &State) -> f64 {
        state
            .in_info
            .as_ref()
            .map(|i| i.fps())
            .filter(|fps| fps.numer() > 0)
            .map_or(0.0, |fps| 1e3 * fps.denom() as f64 / fps.numer() as f64)
    }

    /// A window of frames is held before processing starts, plus the longest processing time
    /// seen so far (DESIGN §6).
    fn own_latency(&self) -> gst::ClockTime {
        let window = self.windows.lock().window() as u64;
        let frame = self
            .state
            .lock()
            .as_ref()
            .and_then(|s| s.in_info.as_ref().map(|i| i.fps()))
            .filter(|fps| fps.numer() > 0)
            .and_then(|fps| {
                gst::ClockTime::SECOND.mul_div_ceil(fps.denom() as u64, fps.numer() as u64)
            })
            .unwrap_or(gst::ClockTime::ZERO);
        let processing_ms = self.stats.lock().max_window_ms;
        frame * window + gst::ClockTime::from_nseconds((processing_ms * 1e6) as u64)
    }

    /// Posts a `progress` message about model loading.
    fn post_load_progress(&self, ty: gst::ProgressType, text: &str) {
        let obj = self.obj();
        let _ = obj.post_message(
            gst::message::Progress::builder(ty, "load-model", text)
                .src(&*obj)
                .build(),
        );
    }

    /// Loads the model and starts the worker (READY->PAUSED).
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().clone();
        let windows = settings.validate().map_err(|msg| {
            gst::error_msg!(gst::LibraryError::Settings, ["Invalid settings: {}", msg])
        })?;
        let model_setting = settings.model.clone().unwrap_or_default();
        // Unset (or empty) is the shipped default model (pipeline::default_model).
        let model = if model_setting.is_empty() {
            crate::pipeline::default_model::DEFAULT_MODEL_NAME.to_string()
        } else {
            format!("'{model_setting}'")
        };
        self.post_load_progress(gst::ProgressType::Start, &format!("Loading model {model}"));
        let loaded = load_processor(&model_setting, &settings.processor_settings());
        let (processor, device) = match loaded {
            Ok(p) => p,
            Err(err) => {
                self.post_load_progress(
                    gst::ProgressType::Error,
                    &format!("Failed to load model {model}"),
                );
                return Err(gst::error_msg!(
                    gst::LibraryError::Init,
                    ["Failed to load model {}: {:#}", model, err]
                ));
            }
        };
        gst::info!(CAT, imp = self, "loaded model {model} on {device:?}");
        self.post_load_progress(
            gst::ProgressType::Complete,
            &format!("Loaded model {model}"),
        );
        let engine = UpscaleEngine::new(
            processor,
            device,
            OutputSize::Scale(settings.scale as usize),
        );
        let worker = Worker::spawn(engine, self.obj().downgrade()).map_err(|e| {
            gst::error_msg!(
                gst::CoreError::Failed,
                ["Cannot start the worker threads: {}", e]
            )
        })?;
        *self.shared.lock() = Some(worker.shared.clone());
        *self.worker.lock() = Some(worker);
        *self.windows.lock() = windows;
        *self.state.lock() = Some(State::new(windows));
        *self.stats.lock() = Stats::default();
        Ok(())
    }

    /// Unblocks the streaming thread and cancels the running window (FLUSH_START, and before
    /// the pads deactivate at PAUSED->READY).
    fn unblock(&self) {
        if let Some(shared) = self.shared() {
            shared.set_flushing(true);
        }
    }

    fn stop(&self) {
        if let Some(mut worker) = self.worker.lock().take() {
            worker.stop();
        }
        *self.shared.lock() = None;
        *self.state.lock() = None;
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for TurboVsr {
    const NAME: &'static str = "GstTurboVsr";
    type Type = super::TurboVsr;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                TurboVsr::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                TurboVsr::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                TurboVsr::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                TurboVsr::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            worker: Mutex::new(None),
            shared: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            frames_held: Arc::new(AtomicU64::new(0)),
            windows: Mutex::new(WindowConfig::default()),
            push_lock: Mutex::new(()),
        }
    }
}

impl ObjectImpl for TurboVsr {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("TurboVSR checkpoint folder (vae/, transformer/, turbovsr.json), or \
                            \"bicubic\" for the bicubic baseline. Unset: the default model \
                            shipped inside the plugin")
                    .default_value(DEFAULT_MODEL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("scale")
                    .nick("Scale")
                    .blurb("Output size as a multiple of the input size (unless downstream fixes a size)")
                    .minimum(1)
                    .maximum(8)
                    .default_value(DEFAULT_SCALE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("steps")
                    .nick("Steps")
                    .blurb("Sampler steps per window: 1, 2, 4, 8 or 16")
                    .minimum(1)
                    .maximum(16)
                    .default_value(DEFAULT_STEPS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("window")
                    .nick("Window")
                    .blurb("Frames per temporal window: 1 + 8k (9, 17, ..., 49, ...)")
                    .minimum(9)
                    .maximum(1025)
                    .default_value(DEFAULT_WINDOW)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("overlap")
                    .nick("Overlap")
                    .blurb("Frames shared by consecutive windows: 1 + 8j, smaller than window")
                    .minimum(1)
                    .maximum(1017)
                    .default_value(DEFAULT_OVERLAP)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("first-window")
                    .nick("First window")
                    .blurb(
                        "Frames of the first window after the stream starts, a flush or a new \
                         segment: 1 + 8k up to window. The first frame is pushed after this many \
                         input frames, before a player's queues fill",
                    )
                    .minimum(1)
                    .maximum(1025)
                    .default_value(DEFAULT_FIRST_WINDOW)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb("Spatial tile size in latents for denoising (0 = the checkpoint's training tile)")
                    .minimum(0)
                    .maximum(1024)
                    .default_value(DEFAULT_TILE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-overlap")
                    .nick("Tile overlap")
                    .blurb("Overlap between spatial tiles in latents (with the checkpoint's tile, at most half of it)")
                    .minimum(0)
                    .maximum(1023)
                    .default_value(DEFAULT_TILE_OVERLAP)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", DEFAULT_DEVICE)
                    .nick("Device")
                    .blurb("Where the model runs")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("device-id")
                    .nick("Device ID")
                    .blurb("CUDA device index")
                    .minimum(0)
                    .maximum(63)
                    .default_value(DEFAULT_DEVICE_ID)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", DEFAULT_PRECISION)
                    .nick("Precision")
                    .blurb("Numeric precision of the transformer's weights and activations")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("vae-precision", DEFAULT_VAE_PRECISION)
                    .nick("VAE precision")
                    .blurb(
                        "Numeric precision of the VAE (encode, decode); auto is f32: bf16 \
                         misses the 2e-2 parity bound on the reference fixtures",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of the fixed sampling noise: same input and seed give the same output")
                    .default_value(DEFAULT_SEED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt-embeds")
                    .nick("Prompt embeddings")
                    .blurb("safetensors file with prompt_embeds [L, C] and prompt_attention_mask [L] \
                            (default: the checkpoint's, else a zero embedding)")
                    .default_value(DEFAULT_PROMPT_EMBEDS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("color-fix", DEFAULT_COLOR_FIX)
                    .nick("Colour fix")
                    .blurb("Colour correction of the model output towards the bicubic input: wavelet \
                            (low frequencies from the input) or adain (per-channel mean and \
                            deviation); no effect with model=bicubic")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-processed")
                    .nick("Frames processed")
                    .blurb("Output frames produced since READY")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("window-ms")
                    .nick("Window time")
                    .blurb("Processing time of the last window in milliseconds")
                    .minimum(0.0)
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-held")
                    .nick("Frames held")
                    .blurb(
                        "Input frames held on the host now: gathered for the next window, queued \
                         or being processed (at most 2 x window - overlap)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("latents-held")
                    .nick("Latents held")
                    .blurb(
                        "Latent frames the model keeps on its device between windows, to fuse \
                         with the next window's overlap",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock();
        match pspec.name() {
            "model" => s.model = value.get().expect("type checked upstream"),
            "scale" => s.scale = value.get().expect("type checked upstream"),
            "steps" => s.steps = value.get().expect("type checked upstream"),
            "window" => s.window = value.get().expect("type checked upstream"),
            "overlap" => s.overlap = value.get().expect("type checked upstream"),
            "first-window" => s.first_window = value.get().expect("type checked upstream"),
            "tile-size" => s.tile_size = value.get().expect("type checked upstream"),
            "tile-overlap" => s.tile_overlap = value.get().expect("type checked upstream"),
            "device" => s.device = value.get().expect("type checked upstream"),
            "device-id" => s.device_id = value.get().expect("type checked upstream"),
            "precision" => s.precision = value.get().expect("type checked upstream"),
            "vae-precision" => s.vae_precision = value.get().expect("type checked upstream"),
            "seed" => s.seed = value.get().expect("type checked upstream"),
            "prompt-embeds" => s.prompt_embeds = value.get().expect("type checked upstream"),
            "color-fix" => s.color_fix = value.get().expect("type checked upstream"),
            other => unreachable!("no writable property {other}"),
        }
        gst::debug!(CAT, imp = self, "set {} = {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock();
        match pspec.name() {
            "model" => s.model.to_value(),
            "scale" => s.scale.to_value(),
            "steps" => s.steps.to_value(),
            "window" => s.window.to_value(),
            "overlap" => s.overlap.to_value(),
            "first-window" => s.first_window.to_value(),
            "tile-size" => s.tile_size.to_value(),
            "tile-overlap" => s.tile_overlap.to_value(),
            "device" => s.device.to_value(),
            "device-id" => s.device_id.to_value(),
            "precision" => s.precision.to_value(),
            "vae-precision" => s.vae_precision.to_value(),
            "seed" => s.seed.to_value(),
            "prompt-embeds" => s.prompt_embeds.to_value(),
            "color-fix" => s.color_fix.to_value(),
            "frames-processed" => self.stats.lock().frames_processed.to_value(),
            "window-ms" => self.stats.lock().window_ms.to_value(),
            "frames-held" => self.frames_held.load(Ordering::Relaxed).to_value(),
            "latents-held" => (self.stats.lock().held.latent_frames as u64).to_value(),
            other => unreachable!("no property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for TurboVsr {}

impl ElementImpl for TurboVsr {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "TurboVSR video super-resolution",
                "Filter/Effect/Converter/Video/Scaler",
                "Upscales video with the TurboVSR diffusion model (or the bicubic baseline), \
                 one output frame per input frame",
                "TurboVSR developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let formats: Vec<&str> = PixelFormat::ALL.iter().map(|f| f.name()).collect();
            let caps = gst::Caps::builder("video/x-raw")
                .field("format", gst::List::new(formats))
                .field("width", gst::IntRange::new(1, i32::MAX))
                .field("height", gst::IntRange::new(1, i32::MAX))
                .field(
                    "framerate",
                    gst::FractionRange::new(
                        gst::Fraction::new(0, 1),
                        gst::Fraction::new(i32::MAX, 1),
                    ),
                )
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "changing state {transition:?}");
        match transition {
            gst::StateChange::ReadyToPaused => {
                if let Err(err) = self.start() {
                    self.post_error_message(err);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => self.unblock(),
            _ => (),
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady
            || (ret.is_err() && transition == gst::StateChange::ReadyToPaused)
        {
            self.stop();
        }
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of two emitted frames at 5x3 (odd: GStreamer pads the strides) in `format`.
    fn job(format: gst_video::VideoFormat) -> (Job, Vec<RgbFrame>) {
        gst::init().unwrap();
        let out_info = gst_video::VideoInfo::builder(format, 5, 3).build().unwrap();
        let out_layout = layout_from_info(&out_info).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let rgb: Vec<RgbFrame> = (0..2)
            .map(|f| {
                let v = (0..45).map(|i| ((i * 7 + f * 13) % 31) as f32 / 15.0 - 1.0);
                RgbFrame::new(5, 3, v.collect(), None)
            })
            .collect();
        let frames = (0..3u64)
            .map(|i| {
                Frame(Arc::new(InFrame {
                    rgb: rgb[0].clone(),
                    meta: FrameMeta {
                        pts: Some(gst::ClockTime::from_mseconds(40 * i)),
                        duration: Some(gst::ClockTime::from_mseconds(40)),
                        offset: i,
                        offset_end: i + 1,
                    },
                    _held: HeldFrame::new(&counter),
                }))
            })
            .collect();
        let window = Window {
            index: 1,
            start: 8,
            frames,
            padded_len: 9,
            emit: 1..3,
        };
        let job = Job {
            window,
            generation: 0,
            out_info,
            out_layout,
        };
        (job, rgb)
    }

    /// The buffers from planes converted on the device equal those the host converts, with the
    /// emitted frames' timestamps; a frame count that does not match the window is an error.
    #[test]
    fn device_converted_planes_fill_the_same_buffers_as_the_host() {
        for format in [
            gst_video::VideoFormat::I420,
            gst_video::VideoFormat::Nv12,
            gst_video::VideoFormat::Rgb,
            gst_video::VideoFormat::Bgrx,
        ] {
            let (job, rgb) = job(format);
            let host = build_buffers(&job, &OutFrames::Rgb(rgb.clone())).unwrap();
            // The device conversion on the CPU device, as the GPU runs it.
            let data: Vec<f32> = (0..3)
                .flat_map(|c| {
                    rgb.iter()
                        .flat_map(move |f| f.rgb[c * 15..(c + 1) * 15].to_vec())
                })
                .collect();
            let window =
                candle_core::Tensor::from_vec(data, (3, 2, 3, 5), &candle_core::Device::Cpu)
                    .unwrap();
            let planes = crate::pipeline::device_format::rgb_to_planes(&window, &job.out_layout)
                .unwrap()
                .unwrap();
            let planes = crate::pipeline::device_format::download_planes(&planes).unwrap();
            let device = build_buffers(&job, &OutFrames::Planes(planes.clone())).unwrap();
            assert_eq!(host.len(), 2);
            for (k, (a, b)) in host.iter().zip(&device).enumerate() {
                // Compare plane rows only: stride padding is not written by either path.
                let frame_a =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(a, &job.out_info).unwrap();
                let frame_b =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(b, &job.out_info).unwrap();
                for p in 0..frame_a.n_planes() {
                    let row = job.out_layout.min_stride(p as usize);
                    let stride = frame_a.plane_stride()[p as usize] as usize;
                    let (da, db) = (
                        frame_a.plane_data(p).unwrap(),
                        frame_b.plane_data(p).unwrap(),
                    );
                    for y in 0..job.out_layout.plane_size(p as usize).1 {
                        assert_eq!(
                            da[y * stride..y * stride + row],
                            db[y * stride..y * stride + row],
                            "{format:?} frame {k} plane {p} row {y}"
                        );
                    }
                }
                assert_eq!(
                    b.pts(),
                    Some(gst::ClockTime::from_mseconds(40 * (k as u64 + 1)))
                );
                assert_eq!(b.offset(), k as u64 + 1);
            }
            let short = OutFrames::Planes(planes[..1].to_vec());
            let e = build_buffers(&job, &short).unwrap_err();
            assert!(e.contains("1 frames came back for 2"), "{e}");
        }
    }
}
