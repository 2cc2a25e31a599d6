//! `LTXVideoEncoder3d` of diffusers 0.42.1 (`autoencoder_kl_ltx.py`): patchify, causal conv in,
//! down blocks, mid block, pixel norm, SiLU, conv out to `latent_channels + 1` moments.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{pixel_rms_norm, DownBlock, DownsamplerKind, MidBlock, ResnetOpts};
use super::config::{DownBlockType, DownsampleType, VaeConfig};
use super::noise::NoiseSource;
use crate::model::conv3d::CausalConv3d;

#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    conv_out: CausalConv3d,
    patch_size: usize,
    patch_size_t: usize,
}

/// Spatial patchify with diffusers' channel order (c, p_t, p_w, p_h):
/// (b, c, f, h, w) -> (b, c * p_t * p * p, f / p_t, h / p, w / p).
pub fn patchify(x: &Tensor, p: usize, p_t: usize) -> Result<Tensor> {
    let (b, c, f, h, w) = x.dims5()?;
    let (f2, h2, w2) = (f / p_t, h / p, w / p);
    // (b, c, f2, p_t, h2, p, w2, p) -> (b, c, p_t, p[w], p[h], f2, h2, w2)
    x.reshape(vec![b, c, f2, p_t, h2, p, w2, p])?
        .permute([0, 1, 3, 7, 5, 2, 4, 6])?
        .reshape((b, c * p_t * p * p, f2, h2, w2))
}

impl Encoder {
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let opts = ResnetOpts {
            eps: cfg.resnet_norm_eps,
            is_causal: cfg.encoder_causal,
            inject_noise: false,
            timestep_conditioning: false,
        };
        let blocks = &cfg.block_out_channels;
        let mut out_c = blocks[0];
        // diffusers sizes conv_in by the spatial patch only (in_channels * patch_size ** 2).
        let conv_in = CausalConv3d::new(
            cfg.in_channels * p * p,
            out_c,
            3,
            (1, 1, 1),
            cfg.encoder_causal,
            vb.pp("conv_in"),
        )?;
        let is_095 = cfg.is_ltx_095();
        let n = cfg.num_down_blocks();
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let in_c = out_c;
            out_c = if is_095 || i + 1 < n {
                blocks[i + 1]
            } else {
                blocks[i]
            };
            let scale = cfg.spatio_temporal_scaling[i];
            let vbi = vb.pp("down_blocks").pp(i);
            let layers = cfg.layers_per_block[i];
            let block = match cfg.down_block_type(i)? {
                DownBlockType::Ltx => {
                    let ds = scale.then_some(DownsamplerKind::StridedConv);
                    DownBlock::new(in_c, out_c, layers, ds, true, opts, vbi)?
                }
                DownBlockType::Ltx095 => {
                    let ds = if scale {
                        Some(match cfg.downsample_type(i)? {
                            DownsampleType::Conv => DownsamplerKind::StridedConv,
                            DownsampleType::Spatial => DownsamplerKind::Residual((1, 2, 2)),
                            DownsampleType::Temporal => DownsamplerKind::Residual((2, 1, 1)),
                            DownsampleType::Spatiotemporal => DownsamplerKind::Residual((2, 2, 2)),
                        })
                    } else {
                        None
                    };
                    DownBlock::new(in_c, out_c, layers, ds, false, opts, vbi)?
                }
            };
            down_blocks.push(block);
        }
        let mid_layers = cfg.layers_per_block.last().copied().unwrap_or(0);
        let mid_block = MidBlock::new(out_c, mid_layers, opts, vb.pp("mid_block"))?;
        let conv_out = CausalConv3d::new(
            out_c,
            cfg.latent_channels + 1,
            3,
            (1, 1, 1),
            cfg.encoder_causal,
            vb.pp("conv_out"),
        )?;
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block,
            conv_out,
            patch_size: p,
            patch_size_t: cfg.patch_size_t,
        })
    }

    /// (b, c, f, h, w) -> moments (b, latent_channels + 1, f', h', w'): the posterior mean and, in
    /// the last channel, the log-variance shared by all latent channels.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The encoder has no noise injection; the source is never drawn from.
        let mut noise = NoiseSource::new(0);
        let mut h = patchify(x, self.patch_size, self.patch_size_t)?;
        h = self.conv_in.forward(&h)?;
        for block in &self.down_blocks {
            h = block.forward(&h, &mut noise)?;
        }
        h = self.mid_block.forward(&h, None, &mut noise)?;
        h = pixel_rms_norm(&h, 1e-8)?.silu()?;
        self.conv_out.forward(&h)
    }
}
