//! `Upscaler`: the whole streaming path without GStreamer, for Rust users and the CLI.

use std::sync::Arc;

use super::engine::{OutputSize, UpscaleEngine};
use super::format::RgbFrame;
use super::load::load_processor;
use super::processor::{CancelToken, ProcessError};
use super::settings::ProcessorSettings;
use super::window::{Window, WindowConfig, WindowScheduler};

/// Upscales a stream of frames, one output frame per input frame, in order, holding at most two
/// windows of frames.
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
pub struct Upscaler {
    scheduler: WindowScheduler<Arc<RgbFrame>>,
    engine: UpscaleEngine,
    cancel: CancelToken,
}

impl Upscaler {
    pub fn new(engine: UpscaleEngine, windows: WindowConfig) -> Self {
        Self {
            scheduler: WindowScheduler::new(windows),
            engine,
            cancel: CancelToken::default(),
        }
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
        Ok(Self::new(
            UpscaleEngine::new(processor, device, output),
            windows,
        ))
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

    /// Drops buffered frames and per-stream state.
    pub fn reset(&mut self) {
        self.scheduler.reset();
        self.engine.reset();
    }

    fn run(&mut self, window: &Window<Arc<RgbFrame>>) -> anyhow::Result<Vec<RgbFrame>> {
        self.engine.run(window, &self.cancel).map_err(|e| match e {
            ProcessError::Cancelled => anyhow::anyhow!("cancelled"),
            ProcessError::Model(e) => e,
        })
    }
}
