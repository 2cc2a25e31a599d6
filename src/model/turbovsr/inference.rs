//! TurboVSR on one window's tensors (DESIGN §2, paper §3.1, §3.3): a checkpoint's modules and
//! the passes a window runs through them: VAE encode, the sampler over the denoiser (whole, or in
//! Gaussian-blended spatial tiles), VAE decode. What carries from one window to the next (the
//! conditioning frame, the overlapping latents) is the streaming pipeline's
//! (`pipeline::diffusion`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

use super::config::TurboVsrConfig;
use super::denoiser::{pack_latents, unpack_latents};
use super::denoiser::{ConditionedDenoiser, TurboVsrDenoiser};
use super::prompt::load_prompt;
use crate::model::checkpoint::{Checkpoint, PROMPT_EMBEDS_FILE};
use crate::model::vae::{AutoencoderKlLtxVideo, VaeTiling};
use crate::sample::tiles::{plan_tiles, Tile, TileVelocity, TiledVelocity};
use crate::sample::{plan, sample, FixedNoise, VelocityModel};

/// How a checkpoint is loaded: the transformer's and the VAE's dtypes and the prompt file
/// (`None`: the checkpoint's `prompt_embeds.safetensors`, else a zero prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub dtype: DType,
    pub vae_dtype: DType,
    pub prompt_embeds: Option<PathBuf>,
}

/// One sampling pass: the step count, the spatial tile and its overlap (in latents), and the
/// fixed noise every window starts from.
#[derive(Debug, Clone, Copy)]
pub struct DenoisePass<'a> {
    pub steps: usize,
    pub tile: (usize, usize),
    pub tile_overlap: usize,
    pub noise: &'a FixedNoise,
}

/// A TurboVSR checkpoint loaded on one device, in one precision, with one prompt: what streams
/// running the same model share (issue 10: two elements, one model in memory).
pub struct TurboVsrModel {
    config: TurboVsrConfig,
    vae: AutoencoderKlLtxVideo,
    denoiser: TurboVsrDenoiser,
    /// Prompt embeddings (1, L, caption_channels) and mask (1, L).
    prompt: Tensor,
    prompt_mask: Tensor,
    vae_dtype: DType,
    device: Device,
}

impl TurboVsrModel {
    /// Loads a checkpoint (DESIGN §3.3) on `device`: the VAE, the denoiser, the settings of
    /// `turbovsr.json` and the prompt. Errors name the path and the reason.
    pub fn load(model: &Path, options: &LoadOptions, device: &Device) -> anyhow::Result<Self> {
        let ck = Checkpoint::open(model)?;
        ck.check_complete()?;
        let config = match ck.settings_dir() {
            Some(dir) => TurboVsrConfig::load(dir)?,
            None => TurboVsrConfig::default(),
        };
        let (dtype, vae_dtype) = (options.dtype, options.vae_dtype);
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
        let prompt_path: Option<PathBuf> = options.prompt_embeds.clone().or_else(|| {
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
            device: device.clone(),
        })
    }

    /// The pixel grid a frame is padded to (DESIGN §2): the VAE's spatial compression times the
    /// transformer's patch size, so that the latent splits into whole patches (32 x 1 for
    /// LTX-Video, 4 x 2 for the shipped default). Tiles are whole patches of that latent.
    pub fn spatial_grid(&self) -> usize {
        self.vae.config().spatial_compression() * self.denoiser.config().patch_size
    }

    /// Encodes a (1, 3, f, H, W) clip in [-1, 1] (H, W multiples of the VAE's compression) to
    /// normalized latents (1, C, t, h, w).
    pub fn encode(&self, clip: &Tensor) -> anyhow::Result<Tensor> {
        let mean = self.vae.encode(clip)?.mean;
        Ok(self.vae.normalize_latents(&mean)?.to_dtype(DType::F32)?)
    }

    /// Denoises the latent `(1, C, t, h, w)` from the fixed noise, conditioned on `cond`
    /// (same shape); with `first`, latent 0 is held clean at `first` (1, C, 1, h, w).
    /// Returns the latent, the transformer evaluations (per tile) and the number of tiles.
    pub fn denoise(
        &self,
        cond: &Tensor,
        first: Option<&Tensor>,
        pass: &DenoisePass<'_>,
    ) -> anyhow::Result<(Tensor, usize, usize)> {
        let (_, c, t, h, w) = cond.dims5()?;
        let tc = &self.denoiser.config();
        let (p, pt) = (tc.patch_size, tc.patch_size_t);
        // Every window starts from the same noise, indexed by latent position (DESIGN §4).
        let mut z = pass
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
        let steps = plan(pass.steps, n, &self.config.shift, &self.config.step_sizes)?;
        let vae = self.vae.config();
        let mut model = ConditionedDenoiser {
            model: &self.denoiser,
            cond: &cond_tokens,
            prompt: &self.prompt,
            prompt_mask: Some(&self.prompt_mask),
            video_shape: (t / pt, h / p, w / p),
            rope_interpolation_scale: [
                (vae.temporal_compression() as f64 / self.config.frame_rate) as f32,
                vae.spatial_compression() as f32,
                vae.spatial_compression() as f32,
            ],
            evaluations: 0,
        };
        // Tiles are whole patches so that tile tokens are a sub-grid of the window's tokens.
        let tile = ((pass.tile.0 / p).max(1) * p, (pass.tile.1 / p).max(1) * p);
        let tiles: Vec<Tile> = plan_tiles(
            h / p,
            w / p,
            (tile.0 / p, tile.1 / p),
            pass.tile_overlap / p,
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

    /// Decodes normalized latents (1, C, t, h, w) to the (1, 3, f, H', W') video in [-1, 1]
    /// (not clamped: a caller checks it for NaN first), at the checkpoint's decode timestep.
    pub fn decode(&self, z: &Tensor) -> anyhow::Result<Tensor> {
        let z = self.vae.denormalize_latents(z)?.to_dtype(self.vae_dtype)?;
        let timestep = Tensor::new(&[self.config.decode_timestep as f32], &self.device)?;
        Ok(self.vae.decode(&z, Some(&timestep))?)
    }

    /// The settings of `turbovsr.json` (or their defaults).
    pub fn config(&self) -> &TurboVsrConfig {
        &self.config
    }

    pub fn vae(&self) -> &AutoencoderKlLtxVideo {
        &self.vae
    }

    /// The dtype the VAE runs in (its input clips are cast to it).
    pub fn vae_dtype(&self) -> DType {
        self.vae_dtype
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
