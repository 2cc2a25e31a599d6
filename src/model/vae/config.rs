//! The VAE's `config.json`, as diffusers 0.42.1 writes it for `AutoencoderKLLTXVideo`
//! (`diffusers/models/autoencoders/autoencoder_kl_ltx.py`, `AutoencoderKLLTXVideo.__init__`).
//! Defaults are diffusers' defaults, which are the LTX-Video 0.9.0 configuration.

use candle_core::{bail, Result};
use serde::Deserialize;

/// Down block flavours of the encoder (`down_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    /// `LTXVideoDownBlock3D` (0.9.0, 0.9.1): resnets, a strided conv, a channel-changing resnet.
    Ltx,
    /// `LTXVideo095DownBlock3D` (0.9.5, 0.9.7): resnets, then a `downsample_type` downsampler.
    Ltx095,
}

/// Downsamplers of `LTXVideo095DownBlock3D` (`downsample_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownsampleType {
    /// A causal conv3d with stride 2 in time, height and width.
    Conv,
    /// `LTXVideoDownsampler3d` with stride (1, 2, 2).
    Spatial,
    /// `LTXVideoDownsampler3d` with stride (2, 1, 1).
    Temporal,
    /// `LTXVideoDownsampler3d` with stride (2, 2, 2).
    Spatiotemporal,
}

fn d_in() -> usize {
    3
}
fn d_latent() -> usize {
    128
}
fn d_blocks() -> Vec<usize> {
    vec![128, 256, 512, 512]
}
fn d_down_types() -> Vec<String> {
    vec!["LTXVideoDownBlock3D".to_string(); 4]
}
fn d_layers() -> Vec<usize> {
    vec![4, 3, 3, 3, 4]
}
fn d_scaling() -> Vec<bool> {
    vec![true, true, true, false]
}
fn d_inject() -> Vec<bool> {
    vec![false; 5]
}
fn d_downsample() -> Vec<String> {
    vec!["conv".to_string(); 4]
}
fn d_residual() -> Vec<bool> {
    vec![false; 4]
}
fn d_factor() -> Vec<usize> {
    vec![1; 4]
}
fn d_patch() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_eps() -> f64 {
    1e-6
}
fn d_scale() -> f64 {
    1.0
}
fn d_true() -> bool {
    true
}

/// `AutoencoderKLLTXVideo` configuration. Unknown fields (`_class_name`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_in")]
    pub in_channels: usize,
    #[serde(default = "d_in")]
    pub out_channels: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_blocks")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_blocks")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: Vec<usize>,
    #[serde(default = "d_layers")]
    pub decoder_layers_per_block: Vec<usize>,
    #[serde(default = "d_scaling")]
    pub spatio_temporal_scaling: Vec<bool>,
    #[serde(default = "d_scaling")]
    pub decoder_spatio_temporal_scaling: Vec<bool>,
    #[serde(default = "d_inject")]
    pub decoder_inject_noise: Vec<bool>,
    #[serde(default = "d_downsample")]
    pub downsample_type: Vec<String>,
    #[serde(default = "d_residual")]
    pub upsample_residual: Vec<bool>,
    #[serde(default = "d_factor")]
    pub upsample_factor: Vec<usize>,
    #[serde(default)]
    pub timestep_conditioning: bool,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_one")]
    pub patch_size_t: usize,
    #[serde(default = "d_eps")]
    pub resnet_norm_eps: f64,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default = "d_true")]
    pub encoder_causal: bool,
    #[serde(default)]
    pub decoder_causal: bool,
    #[serde(default)]
    pub spatial_compression_ratio: Option<usize>,
    #[serde(default)]
    pub temporal_compression_ratio: Option<usize>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("an empty object takes every default")
    }
}

/// Fetches `v[i]` or fails naming the list and its required length.
fn at<T: Copy>(v: &[T], i: usize, name: &str) -> Result<T> {
    match v.get(i) {
        Some(x) => Ok(*x),
        None => bail!(
            "VAE config: `{name}` has {} entries, entry {i} is needed",
            v.len()
        ),
    }
}

impl VaeConfig {
    /// Parses `config.json` text and checks it.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| candle_core::Error::msg(format!("VAE config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of encoder down blocks (diffusers: one less than `block_out_channels` for 0.9.5+).
    pub fn num_down_blocks(&self) -> usize {
        if self.is_ltx_095() {
            self.block_out_channels.len().saturating_sub(1)
        } else {
            self.block_out_channels.len()
        }
    }

    /// diffusers keys the 0.9.5 encoder layout on the last down block type.
    pub fn is_ltx_095(&self) -> bool {
        self.down_block_types.last().map(String::as_str) == Some("LTXVideo095DownBlock3D")
    }

    pub fn down_block_type(&self, i: usize) -> Result<DownBlockType> {
        let Some(name) = self.down_block_types.get(i) else {
            bail!(
                "VAE config: `down_block_types` has {} entries, entry {i} is needed",
                self.down_block_types.len()
            )
        };
        match name.as_str() {
            "LTXVideoDownBlock3D" => Ok(DownBlockType::Ltx),
            "LTXVideo095DownBlock3D" => Ok(DownBlockType::Ltx095),
            other => bail!(
                "VAE config: unknown down block type {other:?} in down_block_types[{i}] \
                 (expected \"LTXVideoDownBlock3D\" or \"LTXVideo095DownBlock3D\")"
            ),
        }
    }

    pub fn downsample_type(&self, i: usize) -> Result<DownsampleType> {
        let Some(name) = self.downsample_type.get(i) else {
            bail!(
                "VAE config: `downsample_type` has {} entries, entry {i} is needed",
                self.downsample_type.len()
            )
        };
        match name.as_str() {
            "conv" => Ok(DownsampleType::Conv),
            "spatial" => Ok(DownsampleType::Spatial),
            "temporal" => Ok(DownsampleType::Temporal),
            "spatiotemporal" => Ok(DownsampleType::Spatiotemporal),
            other => bail!(
                "VAE config: unknown downsample type {other:?} in downsample_type[{i}] \
                 (expected conv, spatial, temporal or spatiotemporal)"
            ),
        }
    }

    /// Pixels per latent in height and width (diffusers: `spatial_compression_ratio`, else
    /// `patch_size * 2 ** sum(spatio_temporal_scaling)`).
    pub fn spatial_compression(&self) -> usize {
        self.spatial_compression_ratio.unwrap_or_else(|| {
            let n = self.spatio_temporal_scaling.iter().filter(|&&s| s).count();
            self.patch_size << n
        })
    }

    /// Frames per latent frame after the first (diffusers: `temporal_compression_ratio`, else
    /// `patch_size_t * 2 ** sum(spatio_temporal_scaling)`).
    pub fn temporal_compression(&self) -> usize {
        self.temporal_compression_ratio.unwrap_or_else(|| {
            let n = self.spatio_temporal_scaling.iter().filter(|&&s| s).count();
            self.patch_size_t << n
        })
    }

    /// Checks list lengths and names, so that a bad config fails here rather than mid-build.
    pub fn validate(&self) -> Result<()> {
        let n_down = self.num_down_blocks();
        if n_down == 0 {
            bail!("VAE config: `block_out_channels` is empty");
        }
        for i in 0..n_down {
            let kind = self.down_block_type(i)?;
            at(&self.layers_per_block, i, "layers_per_block")?;
            at(&self.spatio_temporal_scaling, i, "spatio_temporal_scaling")?;
            if kind == DownBlockType::Ltx095 {
                self.downsample_type(i)?;
            }
        }
        at(&self.layers_per_block, n_down, "layers_per_block")?;
        let n_up = self.decoder_block_out_channels.len();
        if n_up == 0 {
            bail!("VAE config: `decoder_block_out_channels` is empty");
        }
        at(
            &self.decoder_layers_per_block,
            n_up,
            "decoder_layers_per_block",
        )?;
        for i in 0..n_up {
            at(
                &self.decoder_spatio_temporal_scaling,
                i,
                "decoder_spatio_temporal_scaling",
            )?;
            at(&self.upsample_residual, i, "upsample_residual")?;
            if at(&self.upsample_factor, i, "upsample_factor")? == 0 {
                bail!("VAE config: upsample_factor[{i}] is 0");
            }
        }
        at(&self.decoder_inject_noise, n_up, "decoder_inject_noise")?;
        if self.patch_size == 0 || self.patch_size_t == 0 {
            bail!("VAE config: patch_size and patch_size_t must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ltx_090() -> Result<()> {
        let cfg = VaeConfig::from_json("{}")?;
        assert_eq!(cfg.spatial_compression(), 32);
        assert_eq!(cfg.temporal_compression(), 8);
        assert_eq!(cfg.num_down_blocks(), 4);
        assert!(!cfg.timestep_conditioning);
        Ok(())
    }

    #[test]
    fn unknown_down_block_type_is_named() {
        let json = r#"{"down_block_types": ["LTXVideoDownBlock3D", "FancyBlock",
            "LTXVideoDownBlock3D", "LTXVideoDownBlock3D"]}"#;
        let err = VaeConfig::from_json(json).unwrap_err().to_string();
        assert!(
            err.contains("FancyBlock") && err.contains("down_block_types[1]"),
            "{err}"
        );
    }

    #[test]
    fn unknown_downsample_type_is_named() {
        let json = r#"{"block_out_channels": [8, 8, 8, 8, 8],
            "down_block_types": ["LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D",
            "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D"],
            "downsample_type": ["spatial", "sideways", "conv", "conv"]}"#;
        let err = VaeConfig::from_json(json).unwrap_err().to_string();
        assert!(
            err.contains("sideways") && err.contains("downsample_type[1]"),
            "{err}"
        );
    }

    #[test]
    fn short_list_is_named() {
        let json = r#"{"layers_per_block": [1, 1]}"#;
        let err = VaeConfig::from_json(json).unwrap_err().to_string();
        assert!(err.contains("layers_per_block"), "{err}");
    }
}
