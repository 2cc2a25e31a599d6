//! `Upscaler`: the one driver of windows (DESIGN §2, §5). Frames go in one at a time; each
//! time they complete a window, the window runs through the model and its output frames come
//! out, one per input frame, in order. Rust users and `turbovsr eval` call it with float RGB
//! frames; the element runs one on its worker thread with frames that carry their buffers'
//! timing, and takes each window's output as raw frames of its output format.

use std::sync::Arc;

use candle_core::Device;

use super::engine::{OutputFrames, OutputSize, UpscaleEngine};
use super::format::{FrameLayout, RgbFrame};
use super::load::load_processor;
use super::processor::{CancelToken, FrameProcessor, HeldState, ProcessError};
use super::settings::ProcessorSettings;
use super::window::{Window, WindowConfig, WindowScheduler};

/// Upscales a stream of frames, one output frame per input frame, in order, holding at most two
/// windows of frames. `F` is the frame as the caller keeps it: an [`RgbFrame`] for the library,
/// a frame with its timestamps for the element.
///
/// ```no_run
/// use gstturbovsr::pipeline::{OutputSize, ProcessorSettings, RgbFrame, Upscaler, WindowConfig};
/// let mut up = Upscaler::load("bicubic", &ProcessorSettings::default(), WindowConfig::default(),
///     OutputSize::Scale(4))?;
/// let mut out = Vec::new();
/// for _ in 0..60 {
///     let frame = RgbFrame::new(64, 64, vec![0.0; 3 * 64 * 64], None);
///     out.extend(up.push(frame)?);
/// }
/// out.extend(up.finish()?);
/// assert_eq!(out.len(), 60);
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug)]
pub struct Upscaler<F = Arc<RgbFrame>> {
    scheduler: WindowScheduler<F>,
    engine: UpscaleEngine,
    cancel: CancelToken,
}

/// A window the last frame completed, and its output as raw frames (or why there is none).
pub(crate) struct WindowRun<F> {
    pub(crate) window: Window<F>,
    pub(crate) frames: Result<OutputFrames, ProcessError>,
}

impl<F: AsRef<RgbFrame> + Clone> Upscaler<F> {
    pub(crate) fn new(engine: UpscaleEngine, windows: WindowConfig) -> Self {
        Self {
            scheduler: WindowScheduler::new(windows),
            engine,
            cancel: CancelToken::default(),
        }
    }

    /// Drops buffered frames and per-stream state.
    pub fn reset(&mut self) {
        self.scheduler.reset();
        self.engine.reset();
    }

    /// What the model keeps on its device between windows.
    pub(crate) fn held(&self) -> HeldState {
        self.engine.held()
    }

    /// Adds a frame; when it completes a window, runs the window into raw frames of `layout`
    /// (the output size and format), on the device where the format allows. `cancel` stops the
    /// window between its stages.
    pub(crate) fn push_to_layout(
        &mut self,
        frame: F,
        layout: &FrameLayout,
        cancel: &CancelToken,
    ) -> Option<WindowRun<F>> {
        let window = self.scheduler.push(frame)?;
        Some(self.run_to_layout(window, layout, cancel))
    }

    /// Ends the stream: the padded tail window, if any frame is not out yet, into raw frames of
    /// `layout`. The next frame starts a new stream.
    pub(crate) fn finish_to_layout(
        &mut self,
        layout: &FrameLayout,
        cancel: &CancelToken,
    ) -> Option<WindowRun<F>> {
        let tail = self
            .scheduler
            .finish()
            .map(|window| self.run_to_layout(window, layout, cancel));
        self.engine.reset();
        tail
    }

    fn run_to_layout(
        &mut self,
        window: Window<F>,
        layout: &FrameLayout,
        cancel: &CancelToken,
    ) -> WindowRun<F> {
        self.engine.set_output(OutputSize::Fixed {
            width: layout.width,
            height: layout.height,
        });
        let frames = self.engine.run_output(&window, layout, cancel);
        WindowRun { window, frames }
    }

    /// Runs a window to float RGB frames; errors name the window's failure.
    fn run(&mut self, window: &Window<F>) -> anyhow::Result<Vec<RgbFrame>> {
        self.engine.run(window, &self.cancel).map_err(|e| match e {
            ProcessError::Cancelled => anyhow::anyhow!("cancelled"),
            ProcessError::Model(e) => e,
        })
    }
}

impl Upscaler {
    /// An upscaler around your own [`FrameProcessor`] on `device` (the bicubic baseline is
    /// [`crate::pipeline::BicubicProcessor`]).
    pub fn with_processor(
        processor: Box<dyn FrameProcessor>,
        device: Device,
        windows: WindowConfig,
        output: OutputSize,
    ) -> Self {
        Self::new(UpscaleEngine::new(processor, device, output), windows)
    }

    /// Loads `model` (a checkpoint folder, `bicubic`, or "" for the shipped default model) and
    /// builds an upscaler.
    pub fn load(
        model: &str,
        settings: &ProcessorSettings,
        windows: WindowConfig,
        output: OutputSize,
    ) -> anyhow::Result<Self> {
        let (processor, device) = load_processor(model, settings)?;
        Ok(Self::with_processor(processor, device, windows, output))
    }

    /// Adds a frame; returns the output frames that became ready (a window's worth at a time).
    pub fn push(&mut self, frame: RgbFrame) -> anyhow::Result<Vec<RgbFrame>> {
        match self.scheduler.push(Arc::new(frame)) {
            Some(window) => self.run(&window),
            None => Ok(Vec::new()),
        }
    }

    /// Ends the stream: returns the remaining output frames. The upscaler is then ready for a
    /// new stream.
    pub fn finish(&mut self) -> anyhow::Result<Vec<RgbFrame>> {
        let out = match self.scheduler.finish() {
            Some(window) => self.run(&window),
            None => Ok(Vec::new()),
        };
        self.engine.reset();
        out
    }
}
