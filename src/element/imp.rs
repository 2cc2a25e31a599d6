//! `turbovsr`: implementation. Layout follows gst-plugins-rs (debug category, defaults,
//! settings, state, element, then the GObject / GStreamer impls).
//!
//! Threads: the sink pad's streaming thread converts each buffer to float RGB and queues it for
//! the worker thread, which feeds the frames to the core's [`Upscaler`] (the one driver of
//! windows, DESIGN §5) and turns each window it completes into output buffers. While the worker
//! runs a window, the queue holds at most the next window's new frames, and the chain waits for
//! room before it reads the next buffer: back-pressure, never unbounded buffering, and at most
//! one running window plus the next one's new frames on the host. Finished windows come back
//! through the same queue and are pushed downstream as soon as they are done by a push thread, or by the streaming thread when it gets there first; one push lock
//! orders every downstream push, so buffers and serialized events keep their order. The push
//! thread is what keeps a player from stalling: a window's frames must not wait for the next
//! input buffer, which may never come while the player's other sinks wait for this one to
//! preroll. FLUSH_START and PAUSED->READY unblock a waiting chain and cancel the running window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use parking_lot::Mutex;

use super::buffers::read_frame;
use super::caps::{layout_from_info, sink_caps, src_caps, src_caps_for, template_caps};
use super::worker::{Input, Job, JobResult, OutFormat, PushMode, Shared, Worker};
use super::{ColorFixKind, DeviceKind, PrecisionKind, VaePrecisionKind};
use crate::pipeline::settings::{Settings, MAX_SCALE, VALID_STEPS};
use crate::pipeline::upscaler::Upscaler;
use crate::pipeline::{
    load_processor, FrameLayout, HeldState, OutputSize, UpscaleEngine, WindowConfig,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "turbovsr",
        gst::DebugColorFlags::empty(),
        Some("TurboVSR diffusion video super-resolution"),
    )
});

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

/// Per-stream state, from READY->PAUSED to PAUSED->READY: the worker, the windows being
/// gathered, the negotiated formats and the serialized events waiting behind frames.
struct State {
    /// The worker and push threads (stopped outside the state lock: the push thread takes it).
    worker: Worker,
    /// The worker's queue.
    shared: Arc<Shared>,
    /// Windows of the current configuration (the LATENCY query).
    windows: WindowConfig,
    in_info: Option<gst_video::VideoInfo>,
    in_layout: Option<FrameLayout>,
    out_format: Option<Arc<OutFormat>>,
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
    fn new(worker: Worker, windows: WindowConfig) -> Self {
        Self {
            shared: worker.shared.clone(),
            worker,
            windows,
            in_info: None,
            in_layout: None,
            out_format: None,
            pending_events: VecDeque::new(),
            frames_in: 0,
            frames_out: 0,
            discont_next: true,
            started: Instant::now(),
            segment: None,
        }
    }

    /// A flush (FLUSH_STOP): the worker drops its upscaler's frames when the flush ends.
    fn reset_stream(&mut self) {
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

/// What the streaming thread pushes, in order, once it has let go of the state lock.
enum Item {
    Buffer(gst::Buffer),
    Event(gst::Event),
    Progress(gst::Structure),
    /// Our latency changed: the application should recompute the pipeline's.
    Latency,
}

/// The element. Locks, never two at once except in the order `push_lock`, `state`, the
/// worker's queue, `stats`: `settings` (the properties), `state` (the stream, from READY to
/// PAUSED), `stats` (read-only properties, kept after a stop), and `push_lock`, which orders
/// every downstream push of frames and serialized events between the streaming thread and the
/// push thread.
pub struct TurboVsr {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// Input frames alive on the host (`frames-held`).
    frames_held: Arc<AtomicU64>,
    push_lock: Mutex<()>,
}

impl TurboVsr {
    /// The worker's queue, while the element is started.
    fn shared(&self) -> Option<Arc<Shared>> {
        self.state.lock().as_ref().map(|s| s.shared.clone())
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
        self.wait_for_room()?;
        let job = {
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
            let frame = read_frame(
                &buffer,
                in_info,
                &layout,
                state.frames_in,
                &self.frames_held,
            )
            .map_err(|msg| {
                gst::element_imp_error!(self, gst::StreamError::Format, ["{}", msg]);
                gst::FlowError::Error
            })?;
            state.frames_in += 1;
            Self::job(state, Input::Frame(frame))?
        };
        self.queue(job)?;
        self.push_ready(PushMode::Chain)
    }

    /// `input` for the worker, in the stream's output format.
    fn job(state: &State, input: Input) -> Result<Job, gst::FlowError> {
        let format = state
            .out_format
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        Ok(Job {
            input,
            format,
            generation: 0,
        })
    }

    /// Waits until the worker's queue has room for a frame: while the worker runs a window, the
    /// queue takes the next window's new frames (`window - overlap`), so the host holds at most
    /// the running window and those (DESIGN §5: two windows at most). The worker takes no frame
    /// while a finished window is not yet pushed, so downstream's back-pressure reaches upstream
    /// and finished output never piles up. Before the buffer is read: a waiting chain holds no
    /// frame of its own.
    fn wait_for_room(&self) -> Result<(), gst::FlowError> {
        let (shared, room) = {
            let state = self.state.lock();
            let state = state.as_ref().ok_or(gst::FlowError::Flushing)?;
            (state.shared.clone(), state.windows.step().max(1))
        };
        let mut q = shared.queue.lock();
        while q.jobs.len() >= room && !q.flushing && q.downstream.is_none() {
            shared.cond.wait(&mut q);
        }
        if q.flushing {
            return Err(gst::FlowError::Flushing);
        }
        if let Some(err) = q.downstream {
            return Err(err);
        }
        Ok(())
    }

    /// Hands a job to the worker, in the current flush generation.
    fn queue(&self, job: Job) -> Result<(), gst::FlowError> {
        let shared = self.shared().ok_or(gst::FlowError::Flushing)?;
        let mut q = shared.queue.lock();
        if q.flushing {
            return Err(gst::FlowError::Flushing);
        }
        let generation = q.generation;
        q.jobs.push_back(Job { generation, ..job });
        shared.cond.notify_all();
        Ok(())
    }

    /// Pushes finished windows downstream (and the events queued behind their frames).
    pub(super) fn push_ready(&self, mode: PushMode) -> Result<gst::FlowSuccess, gst::FlowError> {
        let shared = self.shared().ok_or(gst::FlowError::Flushing)?;
        if mode == PushMode::Drain {
            let mut q = shared.queue.lock();
            while (!q.jobs.is_empty() || q.busy) && !q.flushing {
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
        let items = self.items_for(results)?;
        self.push_items(items)
    }

    /// What to push for finished windows: their buffers, the events behind them, latency and
    /// progress messages; a failed window is an element error.
    fn items_for(&self, results: Vec<JobResult>) -> Result<Vec<Item>, gst::FlowError> {
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
                Self::queue_buffers(state, buffers, &mut items);
                let (total, latency_grew) =
                    self.record_window(result.window, n, result.elapsed_ms, result.held);
                if latency_grew {
                    items.push(Item::Latency);
                }
                self.warn_if_slow(state, result.window, n, result.elapsed_ms);
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
        Ok(items)
    }

    /// A window's buffers in push order, each followed by the serialized events that arrived
    /// after its input frame; the stream's first buffer is marked DISCONT.
    fn queue_buffers(state: &mut State, buffers: Vec<gst::Buffer>, items: &mut Vec<Item>) {
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
    }

    /// Counts a finished window in the statistics; returns the frames processed so far and
    /// whether the latency to report grew (processing took noticeably longer than reported).
    fn record_window(
        &self,
        window: u64,
        frames: u64,
        elapsed_ms: f64,
        held: HeldState,
    ) -> (u64, bool) {
        let mut stats = self.stats.lock();
        stats.frames_processed += frames;
        stats.window_ms = elapsed_ms;
        stats.held = held;
        gst::debug!(
            CAT,
            imp = self,
            "window {window} done in {elapsed_ms:.1} ms: {} input frames held on the host, the \
             model keeps {} latent frames and {} conditioning frames on its device",
            self.frames_held.load(Ordering::Relaxed),
            held.latent_frames,
            held.frames
        );
        let grew = elapsed_ms > stats.max_window_ms * 1.1 + 1.0;
        if elapsed_ms > stats.max_window_ms {
            stats.max_window_ms = elapsed_ms;
        }
        (stats.frames_processed, grew)
    }

    /// A window must be processed within the time its new frames last, or a live stream falls
    /// behind: a warning says so.
    fn warn_if_slow(&self, state: &State, window: u64, frames: u64, elapsed_ms: f64) {
        let step_ms = self.frame_ms(state) * frames as f64;
        if step_ms > 0.0 && elapsed_ms > step_ms {
            gst::warning!(
                CAT,
                imp = self,
                "window {window} took {elapsed_ms:.1} ms for {step_ms:.1} ms of video: slower \
                 than real time"
            );
        }
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
            let state_guard = self.state.lock();
            let Some(state) = state_guard.as_ref() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            match state.frames_in {
                0 => None,
                n => {
                    gst::debug!(CAT, imp = self, "draining after {n} frames");
                    Some(Self::job(state, Input::Drain)?)
                }
            }
        };
        if let Some(job) = tail {
            self.queue(job)?;
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
        let peer = self.srcpad.peer_query_caps(None);
        let out_caps = src_caps_for(&in_info, scale, &peer)
            .ok_or_else(|| format!("Downstream accepts no output caps for input {caps}"))?;
        let out_info = gst_video::VideoInfo::from_caps(&out_caps)
            .map_err(|_| format!("Cannot use output caps {out_caps}"))?;
        let out_layout = layout_from_info(&out_info)
            .map_err(|msg| format!("Unsupported output caps {out_caps}: {msg}"))?;
        gst::info!(CAT, imp = self, "negotiated {} -> {}", caps, out_caps);
        if let Some(state) = self.state.lock().as_mut() {
            state.in_info = Some(in_info);
            state.in_layout = Some(in_layout);
            state.out_format = Some(Arc::new(OutFormat {
                info: out_info,
                layout: out_layout,
            }));
        }
        Ok(out_caps)
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Caps(q) => {
                let peer = self.srcpad.peer_query_caps(None);
                q.set_result(&sink_caps(&peer, &pad.pad_template_caps(), q.filter()));
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
                let scale = self.settings.lock().scale;
                q.set_result(&src_caps(
                    &peer,
                    scale,
                    &pad.pad_template_caps(),
                    q.filter(),
                ));
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
        let (window, fps) = match self.state.lock().as_ref() {
            Some(s) => (
                s.windows.window() as u64,
                s.in_info.as_ref().map(|i| i.fps()),
            ),
            None => (WindowConfig::default().window() as u64, None),
        };
        let frame = fps
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
        let model_setting = settings.model_name().to_string();
        // Unset (or empty) is the shipped default model (pipeline::default_model).
        let model = if model_setting.is_empty() {
            crate::pipeline::default_model::DEFAULT_MODEL_NAME.to_string()
        } else {
            format!("'{model_setting}'")
        };
        self.post_load_progress(gst::ProgressType::Start, &format!("Loading model {model}"));
        let loaded = load_processor(&model_setting, &settings.processor);
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
        let engine = UpscaleEngine::new(processor, device, OutputSize::Scale(settings.scale));
        let worker = Worker::spawn(Upscaler::new(engine, windows), self.obj().downgrade())
            .map_err(|e| {
                gst::error_msg!(
                    gst::CoreError::Failed,
                    ["Cannot start the worker threads: {}", e]
                )
            })?;
        *self.stats.lock() = Stats::default();
        *self.state.lock() = Some(State::new(worker, windows));
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
        // Taken out first: the push thread locks the state, so it is joined without the lock.
        let state = self.state.lock().take();
        if let Some(mut state) = state {
            state.worker.stop();
        }
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
            stats: Mutex::new(Stats::default()),
            frames_held: Arc::new(AtomicU64::new(0)),
            push_lock: Mutex::new(()),
        }
    }
}

impl ObjectImpl for TurboVsr {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            // The defaults are the core's (`pipeline::settings`), like every check of them.
            let d = Settings::default();
            let p = &d.processor;
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("TurboVSR checkpoint folder (vae/, transformer/, turbovsr.json), or \
                            \"bicubic\" for the bicubic baseline. Unset: the default model \
                            shipped inside the plugin")
                    .default_value(d.model.as_deref())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("scale")
                    .nick("Scale")
                    .blurb("Output size as a multiple of the input size (unless downstream fixes a size)")
                    .minimum(1)
                    .maximum(MAX_SCALE as u32)
                    .default_value(d.scale as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("steps")
                    .nick("Steps")
                    .blurb("Sampler steps per window: 1, 2, 4, 8 or 16")
                    .minimum(1)
                    .maximum(VALID_STEPS[VALID_STEPS.len() - 1] as u32)
                    .default_value(p.steps as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("window")
                    .nick("Window")
                    .blurb("Frames per temporal window: 1 + 8k (9, 17, ..., 49, ...)")
                    .minimum(9)
                    .maximum(1025)
                    .default_value(d.window as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("overlap")
                    .nick("Overlap")
                    .blurb("Frames shared by consecutive windows: 1 + 8j, smaller than window")
                    .minimum(1)
                    .maximum(1017)
                    .default_value(d.overlap as u32)
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
                    .default_value(d.first_window as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb("Spatial tile size in latents for denoising (0 = the checkpoint's training tile)")
                    .minimum(0)
                    .maximum(1024)
                    .default_value(p.tile_size as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-overlap")
                    .nick("Tile overlap")
                    .blurb("Overlap between spatial tiles in latents (with the checkpoint's tile, at most half of it)")
                    .minimum(0)
                    .maximum(1023)
                    .default_value(p.tile_overlap as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", DeviceKind::from(p.device))
                    .nick("Device")
                    .blurb("Where the model runs")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("device-id")
                    .nick("Device ID")
                    .blurb("CUDA device index")
                    .minimum(0)
                    .maximum(63)
                    .default_value(p.device_id as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", PrecisionKind::from(p.precision))
                    .nick("Precision")
                    .blurb("Numeric precision of the transformer's weights and activations")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default(
                    "vae-precision",
                    VaePrecisionKind::from(p.vae_precision),
                )
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
                    .default_value(p.seed)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt-embeds")
                    .nick("Prompt embeddings")
                    .blurb("safetensors file with prompt_embeds [L, C] and prompt_attention_mask [L] \
                            (default: the checkpoint's, else a zero embedding)")
                    .default_value(p.prompt_embeds.as_ref().and_then(|p| p.to_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("color-fix", ColorFixKind::from(p.color_fix))
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
        let uint = || value.get::<u32>().expect("type checked upstream") as usize;
        let p = &mut s.processor;
        match pspec.name() {
            "model" => s.model = value.get().expect("type checked upstream"),
            "scale" => s.scale = uint(),
            "steps" => p.steps = uint(),
            "window" => s.window = uint(),
            "overlap" => s.overlap = uint(),
            "first-window" => s.first_window = uint(),
            "tile-size" => p.tile_size = uint(),
            "tile-overlap" => p.tile_overlap = uint(),
            "device" => {
                p.device = value
                    .get::<DeviceKind>()
                    .expect("type checked upstream")
                    .into()
            }
            "device-id" => p.device_id = uint(),
            "precision" => {
                p.precision = value
                    .get::<PrecisionKind>()
                    .expect("type checked upstream")
                    .into()
            }
            "vae-precision" => {
                p.vae_precision = value
                    .get::<VaePrecisionKind>()
                    .expect("type checked upstream")
                    .into()
            }
            "seed" => p.seed = value.get().expect("type checked upstream"),
            "prompt-embeds" => {
                p.prompt_embeds = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .map(std::path::PathBuf::from)
            }
            "color-fix" => {
                p.color_fix = value
                    .get::<ColorFixKind>()
                    .expect("type checked upstream")
                    .into()
            }
            other => unreachable!("no writable property {other}"),
        }
        gst::debug!(CAT, imp = self, "set {} = {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock();
        let p = &s.processor;
        let uint = |v: usize| (v as u32).to_value();
        match pspec.name() {
            "model" => s.model.to_value(),
            "scale" => uint(s.scale),
            "steps" => uint(p.steps),
            "window" => uint(s.window),
            "overlap" => uint(s.overlap),
            "first-window" => uint(s.first_window),
            "tile-size" => uint(p.tile_size),
            "tile-overlap" => uint(p.tile_overlap),
            "device" => DeviceKind::from(p.device).to_value(),
            "device-id" => uint(p.device_id),
            "precision" => PrecisionKind::from(p.precision).to_value(),
            "vae-precision" => VaePrecisionKind::from(p.vae_precision).to_value(),
            "seed" => p.seed.to_value(),
            "prompt-embeds" => p
                .prompt_embeds
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .to_value(),
            "color-fix" => ColorFixKind::from(p.color_fix).to_value(),
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
            let caps = template_caps();
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
