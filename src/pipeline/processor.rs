//! The seam between the streaming machinery and the model (DESIGN §2): a [`FrameProcessor`]
//! turns one window of frames, already resized to the output grid, into the output frames the
//! window emits.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

/// One window as a processor sees it.
#[derive(Debug)]
pub struct WindowInput<'a> {
    /// Window number since the stream (re)started.
    pub index: u64,
    /// The frames bicubic-resized to the output size: `[3, padded_len, out_h, out_w]`, float RGB
    /// in [-1, 1], on the processor's device. Frames past `real_frames` repeat the last real one.
    pub frames: &'a Tensor,
    /// How many leading frames of `frames` are real.
    pub real_frames: usize,
    /// The frames this window outputs (indices along dimension 1 of `frames`).
    pub emit: Range<usize>,
    /// No earlier window conditions this one (first window after start, flush or discontinuity).
    pub starts_stream: bool,
}

/// Why processing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] anyhow::Error),
}

impl From<candle_core::Error> for ProcessError {
    fn from(err: candle_core::Error) -> Self {
        ProcessError::Model(err.into())
    }
}

/// Set from another thread to ask a running processor to stop at its next check (flush,
/// state change to READY/NULL).
#[derive(Debug, Default)]
pub struct CancelToken(AtomicBool);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once cancelled: call between expensive steps.
    pub fn check(&self) -> Result<(), ProcessError> {
        if self.is_cancelled() {
            Err(ProcessError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Fails when `t` holds a NaN or an infinity: a model that diverged (bad weights, overflow in
/// half precision) must stop the stream with an error naming `what`, never send garbage frames
/// downstream. One reduction on the tensor's device; a non-finite value makes the sum
/// non-finite.
pub fn ensure_finite(t: &Tensor, what: impl FnOnce() -> String) -> Result<(), ProcessError> {
    let sum = t
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if sum.is_finite() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} contains NaN or infinite values", what()).into())
    }
}

/// What a processor keeps on its device from one window to the next (DESIGN §5: device memory
/// bounded whatever the stream length).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldState {
    /// Latent frames kept to be fused with the next window's overlapping latents.
    pub latent_frames: usize,
    /// Output frames kept to condition the next window.
    pub frames: usize,
}

/// A super-resolution model behind the window machinery.
pub trait FrameProcessor: Send {
    /// Short name for logs and messages.
    fn name(&self) -> &str;

    /// Upscales one window: returns `[3, emit.len(), out_h, out_w]` float RGB in [-1, 1] for the
    /// frames in `input.emit`, in order. Windows of one stream arrive in order; a processor may
    /// keep state from one window to the next (the conditioning frame) until [`reset`].
    ///
    /// [`reset`]: FrameProcessor::reset
    fn process(
        &mut self,
        input: &WindowInput<'_>,
        cancel: &CancelToken,
    ) -> Result<Tensor, ProcessError>;

    /// Forgets per-stream state: the next window starts a new stream.
    fn reset(&mut self) {}

    /// What the processor keeps between windows right now.
    fn held(&self) -> HeldState {
        HeldState::default()
    }
}

/// The named baseline `model=bicubic`: outputs the bicubic resize that every model starts from.
/// It runs the same window path as a diffusion model, for A/B comparisons and tests.
#[derive(Debug, Default)]
pub struct BicubicProcessor;

/// The `model` value that selects [`BicubicProcessor`].
pub const BICUBIC_MODEL: &str = "bicubic";

impl FrameProcessor for BicubicProcessor {
    fn name(&self) -> &str {
        BICUBIC_MODEL
    }

    fn process(
        &mut self,
        input: &WindowInput<'_>,
        cancel: &CancelToken,
    ) -> Result<Tensor, ProcessError> {
        cancel.check()?;
        Ok(input
            .frames
            .narrow(1, input.emit.start, input.emit.len())?
            .clamp(-1f32, 1f32)?)
    }
}
