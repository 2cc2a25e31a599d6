//! The diffusion [`FrameProcessor`] (DESIGN §2, paper §3.1, §3.3): one window of bicubic frames
//! -> VAE encode -> first-frame image SR (first window of a stream) -> video SR with latent 0
//! held clean -> VAE decode -> the window's output frames.
//!
//! Factorized conditioning (paper §3.3): a stream's first window super-resolves its first frame
//! as an image (a one-latent clip) and then the video with latent 0 fixed at that result; every
//! later window takes latent 0 from the encoding of the previous window's last output frame,
//! which is the same frame (DESIGN §5: window k starts where window k - 1 stops emitting). The
//! latents both windows denoised (after that frame) are averaged before decoding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use parking_lot::Mutex;

use super::color_fix::ColorFix;
use super::load::{Precision, ProcessorSettings};
use super::processor::{
    ensure_finite, CancelToken, FrameProcessor, HeldState, ProcessError, WindowInput,
};
use super::resize::{crop_hw, pad_to_multiple};
use crate::model::checkpoint::Checkpoint;
use crate::model::turbovsr::denoiser::{pack_latents, unpack_latents};
use crate::model::turbovsr::{ConditionedDenoiser, TurboVsrConfig, TurboVsrDenoiser};
use crate::model::vae::{AutoencoderKlLtxVideo, VaeTiling};
use crate::sample::tiles::{plan_tiles, Tile, TileVelocity, TiledVelocity};
use crate::sample::{plan, sample, FixedNoise, VelocityModel};

pub use crate::model::checkpoint::PROMPT_EMBEDS_FILE;

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
    model: Arc<LoadedModel>,
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

/// The weight dtype `precision` asks for on `device` (the transformer's).
fn dtype_for(precision: Precision, device: &Device) -> DType {
    match precision {
        Precision::Auto if device.is_cpu() => DType::F32,
        Precision::Auto => DType::BF16,
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

/// The VAE's dtype for `vae-precision`: `Auto` is f32 on every device ([`Precision`]).
fn vae_dtype_for(precision: Precision) -> DType {
    match precision {
        Precision::Auto | Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

/// Reads `prompt_embeds` [L, C] and `prompt_attention_mask` [L] (optional: all ones) from
/// `path` (DESIGN §3.3), checked against the transformer's `caption_channels`: (1, L, C) and
/// (1, L) on `device`. Errors name the file, the key and the expected shape.
pub fn load_prompt(
    path: &Path,
    caption_channels: usize,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor)> {
    let p = path.display();
    let tensors = crate::model::checkpoint::weights::read_all(path)
        .with_context(|| format!("reading prompt embeddings {p}"))?;
    let embeds = tensors.get("prompt_embeds").with_context(|| {
        format!(
            "{p}: missing key `prompt_embeds` (expected shape [L, {caption_channels}]; it has: {})",
            tensors.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let (l, c) = embeds
        .dims2()
        .ok()
        .filter(|&(l, c)| l > 0 && c == caption_channels)
        .with_context(|| {
            format!(
                "{p}: key `prompt_embeds` has shape {:?}, expected [L, {caption_channels}] (L >= 1; \
                 {caption_channels} = the transformer's caption_channels)",
                embeds.dims()
            )
        })?;
    if !embeds.dtype().is_float() {
        bail!(
            "{p}: key `prompt_embeds` has dtype {:?}, expected a float type",
            embeds.dtype()
        );
    }
    let embeds = embeds.to_dtype(DType::F32)?;
    if embeds
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite())
    {
        bail!("{p}: key `prompt_embeds` holds NaN or infinite values");
    }
    let mask = match tensors.get("prompt_attention_mask") {
        Some(m) if m.dims() == [l] => {
            let m = m.to_dtype(DType::F32)?;
            let values = m.to_vec1::<f32>()?;
            if values.iter().any(|v| *v != 0.0 && *v != 1.0) {
                bail!("{p}: key `prompt_attention_mask` must hold only 0 and 1");
            }
            if !values.contains(&1.0) {
                bail!("{p}: key `prompt_attention_mask` masks every prompt token");
            }
            m
        }
        Some(m) => bail!(
            "{p}: key `prompt_attention_mask` has shape {:?}, expected [{l}] (one entry per \
             prompt_embeds row)",
            m.dims()
        ),
        None => Tensor::ones(l, DType::F32, &Device::Cpu)?,
    };
    Ok((
        embeds.reshape((1, l, c))?.to_device(device)?,
        mask.reshape((1, l))?.to_device(device)?,
    ))
}

/// The weights of a checkpoint on one device, in one precision, with one prompt: what streams
/// running the same model share (issue 10: two elements, one model in memory).
pub struct LoadedModel {
    config: TurboVsrConfig,
    vae: AutoencoderKlLtxVideo,
    denoiser: TurboVsrDenoiser,
    /// Prompt embeddings (1, L, caption_channels) and mask (1, L).
    prompt: Tensor,
    prompt_mask: Tensor,
    vae_dtype: DType,
}

/// What makes two loads the same model: the checkpoint's canonical path, the device, the two
/// precisions (transformer, VAE), the prompt file, and the size and modification time of every
/// file under the checkpoint and of the prompt file (weights changed on disk are loaded again,
/// not reused).
type ModelKey = (
    PathBuf,
    String,
    DType,
    DType,
    Option<PathBuf>,
    Vec<FileStamp>,
);

/// A file's path, size and modification time.
type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>);

/// Stamps of `path` (a file) or of the files in it and its sub-folders (a checkpoint folder has
/// two levels: `vae/`, `transformer/`).
fn file_stamps(path: &Path, depth: usize, out: &mut Vec<FileStamp>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
    } else if meta.is_dir() && depth > 0 {
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                file_stamps(&p, depth - 1, out);
            }
        }
    }
}

/// Models loaded in this process, by key; an entry lives as long as a processor uses it.
static MODELS: LazyLock<Mutex<HashMap<ModelKey, Weak<LoadedModel>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many processors use the model loaded from `model` right now (on any device).
pub fn model_users(model: &Path) -> usize {
    let Ok(path) = model.canonicalize() else {
        return 0;
    };
    MODELS
        .lock()
        .iter()
        .filter(|(key, _)| key.0 == path)
        .map(|(_, model)| model.strong_count())
        .sum()
}

impl LoadedModel {
    /// The model for `model` on `device`: the one already loaded by another stream, or a new
    /// load. Loads are serialized, so two elements starting together load the weights once.
    fn shared(
        model: &Path,
        settings: &ProcessorSettings,
        device: &Device,
    ) -> anyhow::Result<Arc<Self>> {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let mut stamps = Vec::new();
        file_stamps(model, 2, &mut stamps);
        if let Some(prompt) = &settings.prompt_embeds {
            file_stamps(prompt, 0, &mut stamps);
        }
        let key: ModelKey = (
            canonical(model),
            // One copy per device: on CUDA the location names it; on the CPU, where every
            // id is the same device, `device-id` still names a copy of its own (one per NUMA
            // node, or per channel of a multi-channel pipeline), so that one pipeline with an
            // element per device-id behaves the same on either.
            format!("{:?}#{}", device.location(), settings.device_id),
            dtype_for(settings.precision, device),
            vae_dtype_for(settings.vae_precision),
            settings.prompt_embeds.as_deref().map(canonical),
            stamps,
        );
        let mut models = MODELS.lock();
        models.retain(|_, m| m.strong_count() > 0);
        if let Some(loaded) = models.get(&key).and_then(Weak::upgrade) {
            return Ok(loaded);
        }
        let loaded = Arc::new(Self::load(model, settings, device)?);
        models.insert(key, Arc::downgrade(&loaded));
        Ok(loaded)
    }

    fn load(model: &Path, settings: &ProcessorSettings, device: &Device) -> anyhow::Result<Self> {
        let ck = Checkpoint::open(model)?;
        ck.check_complete()?;
        let config = match ck.settings_dir() {
            Some(dir) => TurboVsrConfig::load(dir)?,
            None => TurboVsrConfig::default(),
        };
        let dtype = dtype_for(settings.precision, device);
        let vae_dtype = vae_dtype_for(settings.vae_precision);
        let vae_ck = ck.vae()?;
        let mut vae = AutoencoderKlLtxVideo::from_checkpoint(&vae_ck, device, vae_dtype)
            .with_context(|| format!("loading the VAE of {}", model.display()))?;
        drop(vae_ck);
        // Memory bounded by the tile size, not the frame size (DESIGN §5). Time is not tiled: a
        // window is already a bounded clip, and the reference's temporal tiled decode (mirrored
        // for parity in vae/tiling.rs) blends its tiles one frame out of step, so from 33 frames
        // on later frames would lag their timestamps by one.
        vae.set_tiling(VaeTiling {
            spatial: true,
            temporal: false,
            ..VaeTiling::default()
        })?;
        let vae_cfg = vae.config().clone();
        let tf_ck = ck.transformer()?;
        let tf_cfg = &tf_ck.config;
        let (p, pt) = (tf_cfg.patch_size, tf_cfg.patch_size_t);
        if pt != 1 {
            bail!(
                "{}: patch_size_t={pt} is not supported (the conditioning frame must be its own tokens)",
                tf_ck.config_source
            );
        }
        let cond_channels = vae_cfg.latent_channels * p * p;
        if tf_cfg.in_channels != cond_channels || tf_cfg.out_channels() != cond_channels {
            bail!(
                "{}: in_channels={} / out_channels={} do not match the VAE's {} latent channels \
                 patchified by {p}x{p} ({cond_channels})",
                tf_ck.config_source,
                tf_cfg.in_channels,
                tf_cfg.out_channels(),
                vae_cfg.latent_channels
            );
        }
        let denoiser = TurboVsrDenoiser::from_checkpoint(
            &tf_ck,
            cond_channels,
            config.cond_scale,
            dtype,
            device,
        )?;
        drop(tf_ck);
        let caption = denoiser.config().caption_channels;
        let prompt_path: Option<PathBuf> = settings.prompt_embeds.clone().or_else(|| {
            ck.settings_dir()
                .map(|d| d.join(PROMPT_EMBEDS_FILE))
                .filter(|p| p.is_file())
        });
        let (prompt, prompt_mask) = match prompt_path {
            Some(path) => load_prompt(&path, caption, device)?,
            // DESIGN §3.3: a zero embedding of length 1 with mask 1.
            None => (
                Tensor::zeros((1, 1, caption), DType::F32, device)?,
                Tensor::ones((1, 1), DType::F32, device)?,
            ),
        };
        Ok(Self {
            config,
            vae,
            denoiser,
            prompt,
            prompt_mask,
            vae_dtype,
        })
    }

    /// The pixel grid a frame is padded to (DESIGN §2): the VAE's spatial compression times the
    /// transformer's patch size, so that the latent splits into whole patches (32 x 1 for
    /// LTX-Video, 4 x 2 for the shipped default). Tiles are whole patches of that latent.
    fn spatial_grid(&self) -> usize {
        self.vae.config().spatial_compression() * self.denoiser.config().patch_size
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
        if !crate::sample::schedule::VALID_STEPS.contains(&settings.steps) {
            bail!(
                "steps={} is not one of {:?}",
                settings.steps,
                crate::sample::schedule::VALID_STEPS
            );
        }
        let loaded = LoadedModel::shared(model, settings, device)?;
        let config = &loaded.config;
        let tile = match settings.tile_size {
            0 => (config.tile[1], config.tile[2]),
            t => (t, t),
        };
        // A checkpoint trained on small crops has a small tile: the default overlap then shrinks
        // to half of it rather than refusing the model; an explicit tile-size must fit it.
        let tile_overlap = match settings.tile_size {
            0 => settings.tile_overlap.min(tile.0.min(tile.1) / 2),
            _ => settings.tile_overlap,
        };
        if tile_overlap >= tile.0.min(tile.1) {
            bail!(
                "tile-overlap={} must be smaller than the tile ({}x{} latents)",
                settings.tile_overlap,
                tile.0,
                tile.1
            );
        }
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
        if !crate::sample::schedule::VALID_STEPS.contains(&steps) {
            bail!(
                "steps={steps} is not one of {:?}",
                crate::sample::schedule::VALID_STEPS
            );
        }
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

    /// Encodes a (1, 3, f, H, W) clip in [-1, 1] (H, W multiples of the VAE's compression) to
    /// normalized latents (1, C, t, h, w).
    fn encode(&self, clip: &Tensor) -> anyhow::Result<Tensor> {
        let mean = self.model.vae.encode(clip)?.mean;
        Ok(self
            .model
            .vae
            .normalize_latents(&mean)?
            .to_dtype(DType::F32)?)
    }

    /// Denoises the latent `(1, C, t, h, w)` from the fixed noise, conditioned on `cond`
    /// (same shape); with `first`, latent 0 is held clean at `first` (1, C, 1, h, w).
    /// Returns the latent and the number of transformer evaluations.
    fn denoise(
        &self,
        cond: &Tensor,
        first: Option<&Tensor>,
    ) -> anyhow::Result<(Tensor, usize, usize)> {
        let (_, c, t, h, w) = cond.dims5()?;
        let tc = &self.model.denoiser.config();
        let (p, pt) = (tc.patch_size, tc.patch_size_t);
        // Every window starts from the same noise, indexed by latent position (DESIGN §4).
        let mut z = self
            .noise
            .tile((c, t, h, w), (0, 0), &self.device)?
            .unsqueeze(0)?;
        let mut clean = vec![0f32; t * h * w / (p * p * pt)];
        if let Some(first) = first {
            z = Tensor::cat(&[first, &z.narrow(2, 1, t - 1)?], 2)?;
            // tokens are frame-major: frame 0's tokens come first (patch_size_t = 1)
            clean[..h * w / (p * p)].fill(1.0);
        }
        let n = clean.len();
        let clean = Tensor::from_vec(clean, (1, n), &self.device)?;
        let x = pack_latents(&z, p, pt)?;
        let cond_tokens = pack_latents(cond, p, pt)?;
        let steps = plan(
            self.steps,
            n,
            &self.model.config.shift,
            &self.model.config.step_sizes,
        )?;
        let vae = self.model.vae.config();
        let mut model = ConditionedDenoiser {
            model: &self.model.denoiser,
            cond: &cond_tokens,
            prompt: &self.model.prompt,
            prompt_mask: Some(&self.model.prompt_mask),
            video_shape: (t / pt, h / p, w / p),
            rope_interpolation_scale: [
                (vae.temporal_compression() as f64 / self.model.config.frame_rate) as f32,
                vae.spatial_compression() as f32,
                vae.spatial_compression() as f32,
            ],
            evaluations: 0,
        };
        // Tiles are whole patches so that tile tokens are a sub-grid of the window's tokens.
        let tile = ((self.tile.0 / p).max(1) * p, (self.tile.1 / p).max(1) * p);
        let tiles: Vec<Tile> = plan_tiles(
            h / p,
            w / p,
            (tile.0 / p, tile.1 / p),
            self.tile_overlap / p,
        )
        .into_iter()
        .map(|t| Tile {
            y: t.y * p,
            x: t.x * p,
            height: t.height * p,
            width: t.width * p,
        })
        .collect();
        let n_tiles = tiles.len();
        let x = if n_tiles == 1 {
            sample(&mut model, &x, &clean, &steps)?
        } else {
            let mut tiled = TiledVelocity {
                model: TileDenoiser {
                    inner: model,
                    cond: cond.clone(),
                    patch: (p, pt),
                },
                grid: (t, h, w),
                patch: (p, pt),
                tiles,
            };
            let x = sample(&mut tiled, &x, &clean, &steps)?;
            model = tiled.model.inner;
            x
        };
        let evaluations = model.evaluations / n_tiles;
        Ok((unpack_latents(&x, (t, h, w), p, pt)?, evaluations, n_tiles))
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
        let dtype = self.model.vae_dtype;
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
        let cond = self.encode(&clip)?;
        let z_first_encoded = match &self.last_frame {
            Some(frame) => Some(self.encode(&pad_to_multiple(frame, grid)?.to_dtype(dtype)?)?),
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
                let (z, evals, _) = self.denoise(&cond.narrow(2, 0, 1)?, None)?;
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
            let (z, evals, tiles) = self.denoise(&cond, Some(&z_first))?;
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
        let t_ratio = self.model.vae.config().temporal_compression();
        let last = input.emit.end - 1;
        let after = last / t_ratio + 1;
        self.overlap_latents = if last % t_ratio == 0 && after < latent_frames {
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
        let z = self.model.vae.denormalize_latents(&z)?.to_dtype(dtype)?;
        let timestep = Tensor::new(&[self.model.config.decode_timestep as f32], &self.device)?;
        let video = self.model.vae.decode(&z, Some(&timestep))?;
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
                ProcessError::Model(crate::pipeline::load::explain_out_of_memory(
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

/// The denoiser as a [`TileVelocity`]: each tile gets its own cut of the window's condition
/// latent and its own token grid (RoPE positions restart at the tile's corner, as in training on
/// tiles).
struct TileDenoiser<'a> {
    inner: ConditionedDenoiser<'a>,
    /// The window's condition latent (1, C, t, h, w).
    cond: Tensor,
    patch: (usize, usize),
}

impl TileVelocity for TileDenoiser<'_> {
    fn tile_velocity(
        &mut self,
        tile: &Tile,
        x: &Tensor,
        timestep: &Tensor,
        step_size: f64,
    ) -> candle_core::Result<Tensor> {
        let (p, pt) = self.patch;
        let cond = self
            .cond
            .narrow(3, tile.y, tile.height)?
            .narrow(4, tile.x, tile.width)?;
        let cond_tokens = pack_latents(&cond, p, pt)?;
        let mut model = ConditionedDenoiser {
            cond: &cond_tokens,
            video_shape: (self.inner.video_shape.0, tile.height / p, tile.width / p),
            evaluations: 0,
            ..self.inner
        };
        let v = model.velocity(x, timestep, step_size)?;
        self.inner.evaluations += model.evaluations;
        Ok(v)
    }
}
