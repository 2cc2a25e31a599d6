//! `LTXVideoDecoder3d` of diffusers 0.42.1 (`autoencoder_kl_ltx.py`): conv in, mid block, up blocks
//! (all lists of the config read in reverse), pixel norm, optional timestep modulation, SiLU,
//! conv out, unpatchify.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{pixel_rms_norm, MidBlock, ResnetOpts, TimestepEmbedder, UpBlock, UpOpts};
use super::config::VaeConfig;
use super::noise::NoiseSource;
use crate::model::conv3d::CausalConv3d;

/// The timestep conditioning of the decoder output (`timestep_scale_multiplier`,
/// `time_embedder`, `scale_shift_table`).
#[derive(Debug, Clone)]
struct OutputConditioning {
    timestep_scale_multiplier: Tensor,
    time_embedder: TimestepEmbedder,
    scale_shift_table: Tensor,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_out: CausalConv3d,
    cond: Option<OutputConditioning>,
    patch_size: usize,
    patch_size_t: usize,
}

/// `v` read from the end, as diffusers reverses the decoder lists: `reversed(v)[i]`.
fn rev<T: Copy>(v: &[T], i: usize, name: &str) -> Result<T> {
    match v.len().checked_sub(i + 1) {
        Some(j) => Ok(v[j]),
        None => bail!(
            "VAE config: `{name}` has {} entries, entry {i} (from the end) is needed",
            v.len()
        ),
    }
}

/// Inverse of the encoder's patchify:
/// (b, c * p_t * p * p, f, h, w) -> (b, c, f * p_t, h * p, w * p).
pub fn unpatchify(x: &Tensor, p: usize, p_t: usize) -> Result<Tensor> {
    let (b, c, f, h, w) = x.dims5()?;
    let c2 = c / (p_t * p * p);
    // (b, c2, p_t, p[w], p[h], f, h, w) -> (b, c2, f, p_t, h, p[h], w, p[w])
    x.reshape(vec![b, c2, p_t, p, p, f, h, w])?
        .permute([0, 1, 5, 2, 6, 4, 7, 3])?
        .reshape((b, c2, f * p_t, h * p, w * p))
}

impl Decoder {
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let tc = cfg.timestep_conditioning;
        let opts = |inject_noise| ResnetOpts {
            eps: cfg.resnet_norm_eps,
            is_causal: cfg.decoder_causal,
            inject_noise,
            timestep_conditioning: tc,
        };
        let blocks = &cfg.decoder_block_out_channels;
        let layers = &cfg.decoder_layers_per_block;
        let noise = &cfg.decoder_inject_noise;
        let mut out_c = rev(blocks, 0, "decoder_block_out_channels")?;
        let conv_in = CausalConv3d::new(
            cfg.latent_channels,
            out_c,
            3,
            (1, 1, 1),
            cfg.decoder_causal,
            vb.pp("conv_in"),
        )?;
        let mid_block = MidBlock::new(
            out_c,
            rev(layers, 0, "decoder_layers_per_block")?,
            opts(rev(noise, 0, "decoder_inject_noise")?),
            vb.pp("mid_block"),
        )?;
        let mut up_blocks = Vec::with_capacity(blocks.len());
        for i in 0..blocks.len() {
            let factor = rev(&cfg.upsample_factor, i, "upsample_factor")?;
            let in_c = out_c / factor;
            out_c = rev(blocks, i, "decoder_block_out_channels")? / factor;
            let up = UpOpts {
                num_layers: rev(layers, i + 1, "decoder_layers_per_block")?,
                spatio_temporal_scale: rev(
                    &cfg.decoder_spatio_temporal_scaling,
                    i,
                    "decoder_spatio_temporal_scaling",
                )?,
                upsample_residual: rev(&cfg.upsample_residual, i, "upsample_residual")?,
                upscale_factor: factor,
            };
            let o = opts(rev(noise, i + 1, "decoder_inject_noise")?);
            up_blocks.push(UpBlock::new(in_c, out_c, up, o, vb.pp("up_blocks").pp(i))?);
        }
        let conv_out = CausalConv3d::new(
            out_c,
            cfg.out_channels * p * p,
            3,
            (1, 1, 1),
            cfg.decoder_causal,
            vb.pp("conv_out"),
        )?;
        let cond = if tc {
            Some(OutputConditioning {
                timestep_scale_multiplier: vb
                    .get((), "timestep_scale_multiplier")?
                    .to_dtype(DType::F32)?,
                time_embedder: TimestepEmbedder::new(2 * out_c, vb.pp("time_embedder"))?,
                scale_shift_table: vb.get((2, out_c), "scale_shift_table")?,
            })
        } else {
            None
        };
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_out,
            cond,
            patch_size: p,
            patch_size_t: cfg.patch_size_t,
        })
    }

    pub fn is_timestep_conditioned(&self) -> bool {
        self.cond.is_some()
    }

    /// z: (b, latent_channels, f, h, w); `timestep`: (b,) for a timestep-conditioned decoder
    /// (ignored otherwise). Noise injection draws from `noise`.
    pub fn forward(
        &self,
        z: &Tensor,
        timestep: Option<&Tensor>,
        noise: &mut NoiseSource,
    ) -> Result<Tensor> {
        let b = z.dim(0)?;
        let t = match &self.cond {
            Some(c) => {
                let Some(t) = timestep else {
                    bail!("this VAE decoder is timestep-conditioned: a `timestep` [B] is required")
                };
                let t = t.flatten_all()?.to_dtype(DType::F32)?;
                let t = match t.elem_count() {
                    n if n == b => t,
                    1 => t.repeat(b)?,
                    n => bail!("decoder timestep has {n} values for a batch of {b}"),
                };
                Some(t.broadcast_mul(&c.timestep_scale_multiplier)?)
            }
            None => None,
        };
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h, t.as_ref(), noise)?;
        for block in &self.up_blocks {
            h = block.forward(&h, t.as_ref(), noise)?;
        }
        h = pixel_rms_norm(&h, 1e-8)?;
        if let (Some(c), Some(t)) = (&self.cond, &t) {
            let temb = c.time_embedder.forward(t, h.dtype())?; // (b, 2 * c, 1, 1, 1)
            let (n, ch) = c.scale_shift_table.dims2()?;
            // (b, 2 * c, 1, 1, 1) -> (b, 2, c, 1, 1, 1) + table
            let m = temb.reshape((b, n, ch, 1, 1, 1))?.broadcast_add(
                &c.scale_shift_table
                    .to_dtype(h.dtype())?
                    .reshape((1, n, ch, 1, 1, 1))?,
            )?;
            let shift = m.narrow(1, 0, 1)?.squeeze(1)?;
            let scale = m.narrow(1, 1, 1)?.squeeze(1)?;
            h = h.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
        }
        h = self.conv_out.forward(&h.silu()?)?;
        unpatchify(&h, self.patch_size, self.patch_size_t)
    }
}
