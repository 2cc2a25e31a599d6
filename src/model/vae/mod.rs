//! LTX-Video's causal video VAE (DESIGN §3.1): `AutoencoderKLLTXVideo` of diffusers 0.42.1
//! (`diffusers/models/autoencoders/autoencoder_kl_ltx.py`) for the configurations of LTX-Video
//! 0.9.0, 0.9.1, 0.9.5 and 0.9.7, loaded from a diffusers folder by its key names.
//!
//! - [`AutoencoderKlLtxVideo::encode`]: video (b, 3, 1 + 8k, h, w) in [-1, 1] -> [`Posterior`].
//! - [`AutoencoderKlLtxVideo::decode`]: latent (+ timestep) -> video.
//! - [`AutoencoderKlLtxVideo::normalize_latents`] / `denormalize_latents`: `latents_mean`,
//!   `latents_std` and `scaling_factor` as the LTX pipelines apply them.
//! - Tiling in space and time ([`VaeTiling`]) bounds memory by the tile size.

pub(crate) mod blocks;
pub(crate) mod config;
pub(crate) mod decoder;
pub(crate) mod encoder;
pub(crate) mod noise;
pub(crate) mod tiling;

use std::path::Path;

use anyhow::Context;
use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::VaeConfig;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use noise::NoiseSource;
pub use tiling::VaeTiling;

/// The diagonal Gaussian posterior of the encoder (diffusers' `DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct Posterior {
    /// (b, latent_channels, f', h', w'): what the LTX pipelines use as the latent.
    pub mean: Tensor,
    /// Same shape, clamped to [-30, 20]; LTX shares one log-variance across channels.
    pub logvar: Tensor,
}

/// `AutoencoderKLLTXVideo`.
#[derive(Debug, Clone)]
pub struct AutoencoderKlLtxVideo {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    latents_mean: Tensor,
    latents_std: Tensor,
    tiling: VaeTiling,
}

impl AutoencoderKlLtxVideo {
    /// Builds the model from `cfg` with weights under their diffusers names in `vb`.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let encoder = Encoder::new(cfg, vb.pp("encoder"))?;
        let decoder = Decoder::new(cfg, vb.pp("decoder"))?;
        let latents_mean = vb.get(cfg.latent_channels, "latents_mean")?;
        let latents_std = vb.get(cfg.latent_channels, "latents_std")?;
        Ok(Self {
            config: cfg.clone(),
            encoder,
            decoder,
            latents_mean: latents_mean.to_dtype(DType::F32)?,
            latents_std: latents_std.to_dtype(DType::F32)?,
            tiling: VaeTiling::default(),
        })
    }

    /// Loads the VAE of a model path: a diffusers VAE folder, a checkpoint folder with `vae/`,
    /// or a single-file LTX-Video checkpoint (see [`crate::model::checkpoint`]). Errors name the
    /// file and, for weights, the missing, mis-shaped or unexpected key.
    pub fn load(model: &Path, device: &Device, dtype: DType) -> anyhow::Result<Self> {
        let ck = crate::model::checkpoint::Checkpoint::open(model)?.vae()?;
        Self::from_checkpoint(&ck, device, dtype)
    }

    /// Builds the VAE from a resolved checkpoint, weights converted to `dtype`; keys the config
    /// does not read are an error.
    pub fn from_checkpoint(
        ck: &crate::model::checkpoint::VaeCheckpoint,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        let vae = Self::new(&ck.config, ck.weights.var_builder(dtype, device)).with_context(
            crate::model::checkpoint::weights::loading("the VAE", &ck.weights, &ck.config_source),
        )?;
        ck.weights
            .check_unused(&format!("the VAE config ({})", ck.config_source), |_| false)?;
        Ok(vae)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    pub fn tiling(&self) -> &VaeTiling {
        &self.tiling
    }

    /// Sets the tiling of encode and decode (diffusers' `enable_tiling` + framewise flags).
    pub fn set_tiling(&mut self, tiling: VaeTiling) -> Result<()> {
        tiling.validate()?;
        self.tiling = tiling;
        Ok(())
    }

    pub fn is_timestep_conditioned(&self) -> bool {
        self.decoder.is_timestep_conditioned()
    }

    /// Checks a video (b, in_channels, 1 + k t, h, w) with h and w multiples of s.
    fn check_sample(&self, x: &Tensor) -> Result<()> {
        let cfg = &self.config;
        let Ok((_, c, f, h, w)) = x.dims5() else {
            bail!(
                "VAE encode: expected a video [B, C, F, H, W], got shape {:?}",
                x.dims()
            )
        };
        if c != cfg.in_channels {
            bail!(
                "VAE encode: the video has {c} channels, the VAE takes {}",
                cfg.in_channels
            );
        }
        let (s, t) = (cfg.spatial_compression(), cfg.temporal_compression());
        if f == 0 || (f - 1) % t != 0 {
            bail!("VAE encode: frame count {f} is not 1 + {t}k (k = 0, 1, 2, ...)");
        }
        if h == 0 || w == 0 || h % s != 0 || w % s != 0 {
            bail!("VAE encode: frame size {h}x{w} (HxW) is not a multiple of {s}");
        }
        Ok(())
    }

    /// Encodes a video (b, 3, 1 + 8k, h, w) in [-1, 1]: `_encode` + `DiagonalGaussianDistribution`.
    pub fn encode(&self, x: &Tensor) -> Result<Posterior> {
        self.check_sample(x)?;
        let moments = self.encode_moments(x)?;
        let l = self.config.latent_channels;
        let mean = moments.narrow(1, 0, l)?;
        let (b, _, f, h, w) = mean.dims5()?;
        // The last channel is the log-variance of every latent channel (`last_channel.repeat`).
        let logvar = moments
            .narrow(1, l, 1)?
            .clamp(-30f32, 20f32)?
            .broadcast_as((b, l, f, h, w))?
            .contiguous()?;
        Ok(Posterior { mean, logvar })
    }

    /// `_encode`: the encoder's moments, tiled in time and/or space per [`VaeTiling`].
    fn encode_moments(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.tiling;
        let f = x.dim(2)?;
        let ratio = self.config.temporal_compression();
        if t.temporal && f > t.tile_sample_min_num_frames {
            return tiling::temporal_tiled_encode(x, &t, ratio, &mut |tile| {
                self.encode_spatial(tile)
            });
        }
        self.encode_spatial(x)
    }

    /// `tiled_encode` when the frame exceeds a tile and spatial tiling is on, else the encoder.
    fn encode_spatial(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.tiling;
        let (_, _, _, h, w) = x.dims5()?;
        if !(t.spatial && (h > t.tile_sample_min_height || w > t.tile_sample_min_width)) {
            return self.encoder.forward(x);
        }
        let s = self.config.spatial_compression();
        tiling::spatial_tiles(
            x,
            (t.tile_sample_min_height, t.tile_sample_min_width),
            (t.tile_sample_stride_height, t.tile_sample_stride_width),
            (t.tile_sample_min_height / s, t.tile_sample_min_width / s),
            (
                t.tile_sample_stride_height / s,
                t.tile_sample_stride_width / s,
            ),
            (h / s, w / s),
            &mut |tile| self.encoder.forward(tile),
        )
    }

    /// Decodes latents (b, latent_channels, f, h, w) to a video (b, 3, 1 + 8(f - 1), 32h, 32w).
    /// `timestep` (b,) (or one value for the batch) is required by timestep-conditioned decoders
    /// (0.9.1+) and ignored by the others. Noise injection (0.9.1) is seeded with 0.
    pub fn decode(&self, z: &Tensor, timestep: Option<&Tensor>) -> Result<Tensor> {
        self.decode_with_noise(z, timestep, &mut NoiseSource::new(0))
    }

    /// [`Self::decode`] drawing the injected noise (0.9.1 decoders) from `noise`.
    pub fn decode_with_noise(
        &self,
        z: &Tensor,
        timestep: Option<&Tensor>,
        noise: &mut NoiseSource,
    ) -> Result<Tensor> {
        let Ok((_, c, f, _, _)) = z.dims5() else {
            bail!(
                "VAE decode: expected latents [B, C, F, H, W], got shape {:?}",
                z.dims()
            )
        };
        if c != self.config.latent_channels {
            bail!(
                "VAE decode: the latent has {c} channels, the VAE has {}",
                self.config.latent_channels
            );
        }
        if f == 0 {
            bail!("VAE decode: the latent has no frames");
        }
        let t = self.tiling;
        let ratio = self.config.temporal_compression();
        if t.temporal && f > t.tile_sample_min_num_frames / ratio {
            return tiling::temporal_tiled_decode(z, &t, ratio, &mut |tile| {
                self.decode_spatial(tile, timestep, noise)
            });
        }
        self.decode_spatial(z, timestep, noise)
    }

    /// `tiled_decode` when the latent exceeds a tile and spatial tiling is on, else the decoder.
    fn decode_spatial(
        &self,
        z: &Tensor,
        timestep: Option<&Tensor>,
        noise: &mut NoiseSource,
    ) -> Result<Tensor> {
        let t = self.tiling;
        let s = self.config.spatial_compression();
        let (_, _, _, h, w) = z.dims5()?;
        let (tile_h, tile_w) = (t.tile_sample_min_height / s, t.tile_sample_min_width / s);
        if !(t.spatial && (h > tile_h || w > tile_w)) {
            return self.decoder.forward(z, timestep, noise);
        }
        tiling::spatial_tiles(
            z,
            (tile_h, tile_w),
            (
                (t.tile_sample_stride_height / s).max(1),
                (t.tile_sample_stride_width / s).max(1),
            ),
            (t.tile_sample_min_height, t.tile_sample_min_width),
            (t.tile_sample_stride_height, t.tile_sample_stride_width),
            (h * s, w * s),
            &mut |tile| self.decoder.forward(tile, timestep, noise),
        )
    }

    fn channel_stats(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.config.latent_channels;
        let shape = (1, c, 1, 1, 1);
        let mean = self.latents_mean.to_dtype(z.dtype())?.reshape(shape)?;
        let std = self.latents_std.to_dtype(z.dtype())?.reshape(shape)?;
        Ok((mean, std))
    }

    /// `(z - latents_mean) * scaling_factor / latents_std`, as the LTX pipelines'
    /// `_normalize_latents`.
    pub fn normalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.channel_stats(z)?;
        (z.broadcast_sub(&mean)? * self.config.scaling_factor)?.broadcast_div(&std)
    }

    /// `z * latents_std / scaling_factor + latents_mean`, as `_denormalize_latents`.
    pub fn denormalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.channel_stats(z)?;
        (z.broadcast_mul(&std)? / self.config.scaling_factor)?.broadcast_add(&mean)
    }
}
