//! The diffusion [`FrameProcessor`] (DESIGN §2, paper §3.1, §3.3): one window of bicubic frames
//! -> VAE encode -> first-frame image SR (first window of a stream) -> video SR with latent 0
//! held clean -> VAE decode -> the window's output frames. The passes themselves are the
//! model's ([`crate::model::turbovsr::inference`]); this is the streaming state between them.
//!
//! Factorized conditioning (paper §3.3): a stream's first window super-resolves its first frame
//! as an image (a one-latent clip) and then the video with latent 0 fixed at that result; every
//! later window takes latent 0 from the encoding of the previous window's last output frame,
//! which is the same frame (DESIGN §5: window k starts where window k - 1 stops emitting). The
//! latents both windows denoised (after that frame) are averaged before decoding.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use super::color_fix::ColorFix;
use super::device::explain_out_of_memory;
use super::model_cache::shared_model;
use super::processor::{
    ensure_finite, CancelToken, FrameProcessor, HeldState, ProcessError, WindowInput,
};
use super::resize::{crop_hw, pad_to_multiple};
use super::settings::{check_steps, ProcessorSettings};
use crate::model::turbovsr::inference::{DenoisePass, TurboVsrModel};
use crate::sample::FixedNoise;

/// Transformer evaluations and time per stage of the last window (for tests and benchmarks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Transformer evaluations of the first-frame image pass (0 when the window had none).
    pub first_frame_evaluations: usize,
    /// Transformer evaluations of the video pass (per spatial tile).
    pub video_evaluations: usize,
    /// Spatial tiles the video pass was denoised in (1: untiled).
    pub tiles: usize,
    /// Wall time of VAE encoding (the window and, for later windows, the conditioning frame).
    pub encode: Duration,
    pub first_frame: Duration,
    pub video: Duration,
    pub decode: Duration,
    /// Latents averaged with the previous window's overlapping latents (DESIGN §5).
    pub fused_latents: usize,
    /// Matmul FLOPs of each stage (`model::flops`: VAE convolutions, transformer evaluations).
    pub encode_flops: u64,
    pub first_frame_flops: u64,
    pub video_flops: u64,
    pub decode_flops: u64,
}

/// TurboVSR on a checkpoint folder.
pub struct DiffusionProcessor {
    name: String,
    /// The weights, shared with every other stream that runs the same checkpoint.
    model: Arc<TurboVsrModel>,
    steps: usize,
    /// Spatial denoising tile (height, width) and overlap, in latents (DESIGN §5).
    tile: (usize, usize),
    tile_overlap: usize,
    color_fix: ColorFix,
    noise: FixedNoise,
    device: Device,
    /// The previous window's last output frame, (1, 3, 1, h, w) in [-1, 1], at the output size:
    /// the next window's first frame.
    last_frame: Option<Tensor>,
    /// The previous window's denoised latents after its last output frame, (1, C, j, h, w),
    /// normalized: averaged into this window's latents 1..=j before decoding (DESIGN §5).
    overlap_latents: Option<Tensor>,
    stats: WindowStats,
}

impl std::fmt::Debug for DiffusionProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffusionProcessor")
            .field("name", &self.name)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl DiffusionProcessor {
    /// Loads a checkpoint folder (DESIGN §3.3) on `device`, or shares the weights another
    /// stream already loaded from it. Errors name the path and the reason.
    pub fn load(
        model: &Path,
        settings: &ProcessorSettings,
        device: &Device,
    ) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let loaded = shared_model(model, settings, device)?;
        let config = loaded.config();
        let tile = match settings.tile_size {
            0 => (config.tile[1], config.tile[2]),
            t => (t, t),
        };
        // A checkpoint trained on small crops has a small tile: the default overlap then shrinks
        // to half of it rather than refusing the model (an explicit tile-size must fit it:
        // `ProcessorSettings::validate`), and to the checkpoint's `tile_overlap` where it gives
        // one (a model whose tokens do not see each other needs no overlap).
        let tile_overlap = match settings.tile_size {
            0 => settings
                .tile_overlap
                .min(tile.0.min(tile.1) / 2)
                .min(config.tile_overlap.unwrap_or(usize::MAX)),
            _ => settings.tile_overlap,
        };
        Ok(Self {
            name: model.display().to_string(),
            model: loaded,
            steps: settings.steps,
            tile,
            tile_overlap,
            color_fix: settings.color_fix,
            noise: FixedNoise::new(settings.seed),
            device: device.clone(),
            last_frame: None,
            overlap_latents: None,
            stats: WindowStats::default(),
        })
    }

    /// Changes the sampler steps from the next window on; the stream state (the conditioning
    /// frame, the overlapping latents) carries over, so a live pipeline can trade quality for
    /// time mid-stream, and `turbovsr bench` times every steps value in one stream.
    pub fn set_steps(&mut self, steps: usize) -> anyhow::Result<()> {
        check_steps(steps).map_err(anyhow::Error::msg)?;
        self.steps = steps;
        Ok(())
    }

    /// Whether this processor and `other` run on the same weights in memory.
    pub fn shares_weights_with(&self, other: &DiffusionProcessor) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
    }

    /// Drops the per-stream state: the conditioning frame and the overlapping latents.
    fn forget(&mut self) {
        self.last_frame = None;
        self.overlap_latents = None;
    }

    /// Stage times and evaluation counts of the last window.
    pub fn stats(&self) -> &WindowStats {
        &self.stats
    }

    fn run(
        &mut self,
        input: &WindowInput<'_>,
        cancel: &CancelToken,
    ) -> Result<Tensor, ProcessError> {
        let (_, frames, out_h, out_w) = input.frames.dims4()?;
        if input.emit.end > frames || input.emit.is_empty() {
            return Err(anyhow::anyhow!(
                "window {}: emit range {:?} is outside its {frames} frames",
                input.index,
                input.emit
            )
            .into());
        }
        let grid = self.model.spatial_grid();
        let dtype = self.model.vae_dtype();
        let mut stats = WindowStats::default();
        if input.starts_stream {
            self.forget();
        }

        // CUDA runs the queued work asynchronously: each stage's time ends at a synchronize, so
        // that it is that stage's device time, not the time to queue it.
        self.device.synchronize()?;
        crate::model::flops::take();
        let t0 = Instant::now();
        // (3, f, H, W) -> (1, 3, f, H', W'), replicate-padded to the model's grid (DESIGN §2)
        let clip = pad_to_multiple(&input.frames.unsqueeze(0)?, grid)?.to_dtype(dtype)?;
        let cond = self.model.encode(&clip)?;
        let z_first_encoded = match &self.last_frame {
            Some(frame) => Some(
                self.model
                    .encode(&pad_to_multiple(frame, grid)?.to_dtype(dtype)?)?,
            ),
            None => None,
        };
        self.device.synchronize()?;
        stats.encode = t0.elapsed();
        stats.encode_flops = crate::model::flops::take();
        cancel.check()?;

        let t0 = Instant::now();
        let z_first = match z_first_encoded {
            Some(z) => z,
            None => {
                // Image SR of the first frame: a one-latent clip (paper §3.3).
                let (z, evals, _) =
                    self.model
                        .denoise(&cond.narrow(2, 0, 1)?, None, &self.pass())?;
                stats.first_frame_evaluations = evals;
                z
            }
        };
        self.device.synchronize()?;
        stats.first_frame = t0.elapsed();
        stats.first_frame_flops = crate::model::flops::take();
        cancel.check()?;

        let t0 = Instant::now();
        let latent_frames = cond.dim(2)?;
        let mut z = if latent_frames == 1 {
            // A one-frame clip is image SR: the first-frame latent is the result.
            z_first
        } else {
            let (z, evals, tiles) = self.model.denoise(&cond, Some(&z_first), &self.pass())?;
            stats.video_evaluations = evals;
            stats.tiles = tiles;
            z
        };
        // Fusion (DESIGN §5): latents 1..=j, which the previous window also denoised, are the
        // average of both; latent 0 is this window's conditioning frame and stays.
        if let Some(prev) = self.overlap_latents.take() {
            let j = prev.dim(2)?.min(latent_frames - 1);
            if j > 0 && prev.dims()[3..] == z.dims()[3..] {
                let fused = ((z.narrow(2, 1, j)? + prev.narrow(2, 0, j)?)? * 0.5)?;
                let mut parts = vec![z.narrow(2, 0, 1)?, fused];
                if 1 + j < latent_frames {
                    parts.push(z.narrow(2, 1 + j, latent_frames - 1 - j)?);
                }
                z = Tensor::cat(&parts, 2)?;
                stats.fused_latents = j;
            }
        }
        // The latents after the last frame this window emits overlap the next window.
        let t_ratio = self.model.vae().config().temporal_compression();
        let last = input.emit.end - 1;
        let after = last / t_ratio + 1;
        self.overlap_latents = if last.is_multiple_of(t_ratio) && after < latent_frames {
            Some(z.narrow(2, after, latent_frames - after)?.contiguous()?)
        } else {
            None
        };
        self.device.synchronize()?;
        stats.video = t0.elapsed();
        stats.video_flops = crate::model::flops::take();
        ensure_finite(&z, || {
            format!("window {}: the denoised latent", input.index)
        })?;
        cancel.check()?;

        let t0 = Instant::now();
        let video = self.model.decode(&z)?;
        // Checked before clamping, which would hide NaN as a valid pixel value.
        ensure_finite(&video, || {
            format!("window {}: the decoded video", input.index)
        })?;
        // (1, 3, f, H', W') -> (3, f, H, W)
        let video = crop_hw(&video, out_h, out_w)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .clamp(-1f32, 1f32)?;
        self.device.synchronize()?;
        stats.decode = t0.elapsed();
        stats.decode_flops = crate::model::flops::take();
        if video.dim(1)? != frames {
            return Err(anyhow::anyhow!(
                "window {}: the VAE decoded {} frames from {frames}",
                input.index,
                video.dim(1)?
            )
            .into());
        }
        let out = video
            .narrow(1, input.emit.start, input.emit.len())?
            .contiguous()?;
        // Colour from the bicubic input (DESIGN §6 `color-fix`), before the last frame is kept:
        // the next window is conditioned on the frame the user sees.
        let reference = input.frames.narrow(1, input.emit.start, input.emit.len())?;
        let out = self.color_fix.apply(&out, &reference)?.contiguous()?;
        // The next window starts on the last frame this one emits.
        self.last_frame = Some(
            out.narrow(1, input.emit.len() - 1, 1)?
                .unsqueeze(0)?
                .contiguous()?,
        );
        self.stats = stats;
        Ok(out)
    }

    /// This processor's sampling pass.
    fn pass(&self) -> DenoisePass<'_> {
        DenoisePass {
            steps: self.steps,
            tile: self.tile,
            tile_overlap: self.tile_overlap,
            noise: &self.noise,
        }
    }
}

impl FrameProcessor for DiffusionProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        input: &WindowInput<'_>,
        cancel: &CancelToken,
    ) -> Result<Tensor, ProcessError> {
        let result = self.run(input, cancel).map_err(|e| match e {
            ProcessError::Model(err) => {
                let (_, f, h, w) = input.frames.dims4().unwrap_or_default();
                ProcessError::Model(explain_out_of_memory(
                    err,
                    &self.device,
                    &format!("window {} ({f} frames of {w}x{h})", input.index),
                ))
            }
            other => other,
        });
        if result.is_err() {
            // A failed or cancelled window leaves no conditioning state behind.
            self.forget();
        }
        result
    }

    fn reset(&mut self) {
        self.forget();
    }

    fn held(&self) -> HeldState {
        HeldState {
            latent_frames: self
                .overlap_latents
                .as_ref()
                .map_or(0, |z| z.dims().get(2).copied().unwrap_or(0)),
            frames: usize::from(self.last_frame.is_some()),
        }
    }
}
