//! The original single-file LTX-Video layout (keys `model.diffusion_model.*` and `vae.*`) and its
//! mapping to the diffusers names our modules read (DESIGN §3.1). The mapping, the VAE generation
//! test and the checkpoint detection mirror diffusers 0.42.1
//! `src/diffusers/loaders/single_file_utils.py`: `convert_ltx_transformer_checkpoint_to_diffusers`,
//! `convert_ltx_vae_checkpoint_to_diffusers`, `CHECKPOINT_KEY_NAMES["ltx-video"]` and the
//! `ltx-video*` branch of `infer_diffusers_model_type`. Like diffusers, the renames are plain
//! substring replacements applied in order, so a key is renamed exactly as diffusers renames it.
//!
//! The configs of a single file come from the generation (diffusers fetches them from the hub
//! repos `diffusers/LTX-Video-0.9.0`, `-0.9.1`, `Lightricks/LTX-Video-0.9.5`, `-0.9.7-dev`; the
//! values here are those repos' configs as diffusers' `scripts/convert_ltx_to_diffusers.py` writes
//! them).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde_json::json;

use super::safetensors::TensorInfo;

/// Keys by which diffusers recognises an LTX-Video single file (`CHECKPOINT_KEY_NAMES`).
pub const LTX_DETECTION_KEYS: [&str; 6] = [
    "model.diffusion_model.patchify_proj.weight",
    "model.diffusion_model.transformer_blocks.27.scale_shift_table",
    "patchify_proj.weight",
    "transformer_blocks.27.scale_shift_table",
    "vae.decoder.last_scale_shift_table",
    "vae.decoder.up_blocks.9.res_blocks.0.conv1.conv.weight",
];

/// Prefix of the transformer's keys in the single file.
pub const TRANSFORMER_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE's keys in the single file.
pub const VAE_PREFIX: &str = "vae.";

/// Whether `keys` look like an LTX-Video single file to diffusers.
pub fn is_ltx_single_file<V>(keys: &BTreeMap<String, V>) -> bool {
    LTX_DETECTION_KEYS.iter().any(|k| keys.contains_key(*k))
}

/// Whether the single file carries a VAE (diffusers' `has_vae` test) or a transformer.
pub fn has_vae<V>(keys: &BTreeMap<String, V>) -> bool {
    keys.keys().any(|k| k.contains(VAE_PREFIX))
}

pub fn has_transformer<V>(keys: &BTreeMap<String, V>) -> bool {
    keys.keys().any(|k| !k.contains("vae"))
}

/// The VAE generations, which differ in layout and so in key numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeGeneration {
    /// LTX-Video 0.9.0: no timestep conditioning.
    V090,
    /// 0.9.1: timestep-conditioned decoder with noise injection and residual upsamplers.
    V091,
    /// 0.9.5 and 0.9.7 (same VAE configuration): `LTXVideo095DownBlock3D` encoder.
    V095,
}

impl VaeGeneration {
    pub fn label(self) -> &'static str {
        match self {
            Self::V090 => "0.9.0",
            Self::V091 => "0.9.1",
            Self::V095 => "0.9.5 / 0.9.7",
        }
    }

    /// The generation of a single file's VAE, from its keys. diffusers' tests first (the
    /// encoder's `conv_out` reading 2048 channels: 0.9.5+; the decoder's `last_time_embedder`:
    /// 0.9.1). diffusers only knows the real widths, so a 0.9.5-layout VAE of other widths
    /// (our test fixtures) is recognised by its layout as well: its original `down_blocks.2` is
    /// a block of `res_blocks`, where 0.9.0 / 0.9.1 have the channel-changing resnet there.
    pub fn detect(keys: &BTreeMap<String, TensorInfo>) -> Self {
        let wide_conv_out = keys
            .get("vae.encoder.conv_out.conv.weight")
            .is_some_and(|t| t.shape.get(1) == Some(&2048));
        if wide_conv_out
            || keys
                .keys()
                .any(|k| k.starts_with("vae.encoder.down_blocks.2.res_blocks."))
        {
            Self::V095
        } else if keys
            .contains_key("vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight")
        {
            Self::V091
        } else {
            Self::V090
        }
    }

    /// The generation of a diffusers VAE config.
    pub fn of_config(cfg: &crate::model::vae::config::VaeConfig) -> Self {
        if cfg.is_ltx_095() {
            Self::V095
        } else if cfg.timestep_conditioning {
            Self::V091
        } else {
            Self::V090
        }
    }

    /// diffusers' `config.json` of this generation's VAE.
    pub fn preset_config(self) -> serde_json::Value {
        let mut cfg = json!({
            "_class_name": "AutoencoderKLLTXVideo",
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 128,
            "patch_size": 4,
            "patch_size_t": 1,
            "resnet_norm_eps": 1e-6,
            "scaling_factor": 1.0,
            "encoder_causal": true,
            "decoder_causal": false,
        });
        let specific = match self {
            Self::V090 => json!({
                "block_out_channels": [128, 256, 512, 512],
                "down_block_types": ["LTXVideoDownBlock3D", "LTXVideoDownBlock3D", "LTXVideoDownBlock3D", "LTXVideoDownBlock3D"],
                "decoder_block_out_channels": [128, 256, 512, 512],
                "layers_per_block": [4, 3, 3, 3, 4],
                "decoder_layers_per_block": [4, 3, 3, 3, 4],
                "spatio_temporal_scaling": [true, true, true, false],
                "decoder_spatio_temporal_scaling": [true, true, true, false],
                "decoder_inject_noise": [false, false, false, false, false],
                "downsample_type": ["conv", "conv", "conv", "conv"],
                "upsample_residual": [false, false, false, false],
                "upsample_factor": [1, 1, 1, 1],
                "timestep_conditioning": false,
            }),
            Self::V091 => json!({
                "block_out_channels": [128, 256, 512, 512],
                "down_block_types": ["LTXVideoDownBlock3D", "LTXVideoDownBlock3D", "LTXVideoDownBlock3D", "LTXVideoDownBlock3D"],
                "decoder_block_out_channels": [256, 512, 1024],
                "layers_per_block": [4, 3, 3, 3, 4],
                "decoder_layers_per_block": [5, 6, 7, 8],
                "spatio_temporal_scaling": [true, true, true, false],
                "decoder_spatio_temporal_scaling": [true, true, true],
                "decoder_inject_noise": [true, true, true, false],
                "downsample_type": ["conv", "conv", "conv", "conv"],
                "upsample_residual": [true, true, true],
                "upsample_factor": [2, 2, 2],
                "timestep_conditioning": true,
            }),
            Self::V095 => json!({
                "block_out_channels": [128, 256, 512, 1024, 2048],
                "down_block_types": ["LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D"],
                "decoder_block_out_channels": [256, 512, 1024],
                "layers_per_block": [4, 6, 6, 2, 2],
                "decoder_layers_per_block": [5, 5, 5, 5],
                "spatio_temporal_scaling": [true, true, true, true],
                "decoder_spatio_temporal_scaling": [true, true, true],
                "decoder_inject_noise": [false, false, false, false],
                "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
                "upsample_residual": [true, true, true],
                "upsample_factor": [2, 2, 2],
                "timestep_conditioning": true,
                "spatial_compression_ratio": 32,
                "temporal_compression_ratio": 8,
            }),
        };
        if let (Some(c), serde_json::Value::Object(s)) = (cfg.as_object_mut(), specific) {
            c.extend(s);
        }
        cfg
    }

    /// The renames diffusers applies to this generation's VAE keys, in order (Python's dict
    /// `update` keeps an existing key's position and replaces its value).
    fn renames(self) -> Vec<(&'static str, &'static str)> {
        let mut dict: Vec<(&'static str, &'static str)> = vec![
            ("vae.", ""),
            ("up_blocks.0", "mid_block"),
            ("up_blocks.1", "up_blocks.0"),
            ("up_blocks.2", "up_blocks.1.upsamplers.0"),
            ("up_blocks.3", "up_blocks.1"),
            ("up_blocks.4", "up_blocks.2.conv_in"),
            ("up_blocks.5", "up_blocks.2.upsamplers.0"),
            ("up_blocks.6", "up_blocks.2"),
            ("up_blocks.7", "up_blocks.3.conv_in"),
            ("up_blocks.8", "up_blocks.3.upsamplers.0"),
            ("up_blocks.9", "up_blocks.3"),
            ("down_blocks.0", "down_blocks.0"),
            ("down_blocks.1", "down_blocks.0.downsamplers.0"),
            ("down_blocks.2", "down_blocks.0.conv_out"),
            ("down_blocks.3", "down_blocks.1"),
            ("down_blocks.4", "down_blocks.1.downsamplers.0"),
            ("down_blocks.5", "down_blocks.1.conv_out"),
            ("down_blocks.6", "down_blocks.2"),
            ("down_blocks.7", "down_blocks.2.downsamplers.0"),
            ("down_blocks.8", "down_blocks.3"),
            ("down_blocks.9", "mid_block"),
            ("conv_shortcut", "conv_shortcut.conv"),
            ("res_blocks", "resnets"),
            ("norm3.norm", "norm3"),
            ("per_channel_statistics.mean-of-means", "latents_mean"),
            ("per_channel_statistics.std-of-means", "latents_std"),
        ];
        let decoder_091: [(&'static str, &'static str); 11] = [
            ("up_blocks.0", "mid_block"),
            ("up_blocks.1", "up_blocks.0.upsamplers.0"),
            ("up_blocks.2", "up_blocks.0"),
            ("up_blocks.3", "up_blocks.1.upsamplers.0"),
            ("up_blocks.4", "up_blocks.1"),
            ("up_blocks.5", "up_blocks.2.upsamplers.0"),
            ("up_blocks.6", "up_blocks.2"),
            ("up_blocks.7", "up_blocks.3.upsamplers.0"),
            ("up_blocks.8", "up_blocks.3"),
            ("last_time_embedder", "time_embedder"),
            ("last_scale_shift_table", "scale_shift_table"),
        ];
        let encoder_095: [(&'static str, &'static str); 9] = [
            ("down_blocks.0", "down_blocks.0"),
            ("down_blocks.1", "down_blocks.0.downsamplers.0"),
            ("down_blocks.2", "down_blocks.1"),
            ("down_blocks.3", "down_blocks.1.downsamplers.0"),
            ("down_blocks.4", "down_blocks.2"),
            ("down_blocks.5", "down_blocks.2.downsamplers.0"),
            ("down_blocks.6", "down_blocks.3"),
            ("down_blocks.7", "down_blocks.3.downsamplers.0"),
            ("down_blocks.8", "mid_block"),
        ];
        let mut update = |entries: &[(&'static str, &'static str)]| {
            for &(k, v) in entries {
                match dict.iter_mut().find(|(dk, _)| *dk == k) {
                    Some(slot) => slot.1 = v,
                    None => dict.push((k, v)),
                }
            }
        };
        match self {
            Self::V090 => {}
            Self::V091 => update(&decoder_091),
            Self::V095 => {
                // VAE_095_RENAME_DICT: the decoder entries of 0.9.1, then the encoder's
                update(&decoder_091[..9]);
                update(&encoder_095);
                update(&decoder_091[9..]);
            }
        }
        dict
    }

    /// The diffusers name of a single-file key, `None` for keys that are not the VAE's or that
    /// diffusers drops (`per_channel_statistics.channel`, `.mean-of-stds`).
    pub fn vae_key_to_diffusers(self, key: &str) -> Option<String> {
        if !key.contains(VAE_PREFIX) {
            return None;
        }
        let mut name = key.to_string();
        for (from, to) in self.renames() {
            name = name.replace(from, to);
        }
        const DROPPED: [&str; 3] = [
            "per_channel_statistics.channel",
            "per_channel_statistics.mean-of-means",
            "per_channel_statistics.mean-of-stds",
        ];
        if DROPPED.iter().any(|d| name.contains(d)) {
            return None;
        }
        Some(name)
    }

    /// The single-file name of a diffusers VAE key: the inverse of
    /// [`Self::vae_key_to_diffusers`], checked by mapping it forward again.
    pub fn vae_key_to_original(self, key: &str) -> Result<String> {
        let (decoder, encoder): (&[Rename], &[Rename]) = match self {
            Self::V090 => (&DECODER_090, &ENCODER_090),
            Self::V091 => (&DECODER_091, &ENCODER_090),
            Self::V095 => (&DECODER_091, &ENCODER_095),
        };
        let (part, rest) = match key.split_once('.') {
            Some((p @ ("decoder" | "encoder"), rest)) => (p, rest),
            _ => ("", key),
        };
        let table = if part == "decoder" { decoder } else { encoder };
        let mut rest = rest.to_string();
        if !part.is_empty() {
            if let Some((d, o)) = table
                .iter()
                .find(|(d, _)| rest.starts_with(&format!("{d}.")))
            {
                rest = format!("{o}{}", &rest[d.len()..]);
            } else if part == "decoder" && self != Self::V090 {
                for (d, o) in [
                    ("time_embedder.", "last_time_embedder."),
                    ("scale_shift_table", "last_scale_shift_table"),
                ] {
                    if let Some(tail) = rest.strip_prefix(d) {
                        rest = format!("{o}{tail}");
                    }
                }
            }
        }
        let mut rest = rest
            .replace("resnets", "res_blocks")
            .replace("conv_shortcut.conv", "conv_shortcut")
            .replace("norm3", "norm3.norm");
        if part.is_empty() {
            rest = match rest.as_str() {
                "latents_mean" => "per_channel_statistics.mean-of-means".into(),
                "latents_std" => "per_channel_statistics.std-of-means".into(),
                _ => rest,
            };
        }
        let original = if part.is_empty() {
            format!("{VAE_PREFIX}{rest}")
        } else {
            format!("{VAE_PREFIX}{part}.{rest}")
        };
        match self.vae_key_to_diffusers(&original) {
            Some(back) if back == key => Ok(original),
            _ => bail!(
                "the VAE key `{key}` has no single-file name in the {} layout",
                self.label()
            ),
        }
    }
}

/// A (from, to) key-part rename.
type Rename = (&'static str, &'static str);

/// diffusers -> original block prefixes of the 0.9.0 decoder (longest first where they nest).
const DECODER_090: [(&str, &str); 10] = [
    ("mid_block", "up_blocks.0"),
    ("up_blocks.0", "up_blocks.1"),
    ("up_blocks.1.upsamplers.0", "up_blocks.2"),
    ("up_blocks.1", "up_blocks.3"),
    ("up_blocks.2.conv_in", "up_blocks.4"),
    ("up_blocks.2.upsamplers.0", "up_blocks.5"),
    ("up_blocks.2", "up_blocks.6"),
    ("up_blocks.3.conv_in", "up_blocks.7"),
    ("up_blocks.3.upsamplers.0", "up_blocks.8"),
    ("up_blocks.3", "up_blocks.9"),
];
/// The same for the 0.9.1+ decoder.
const DECODER_091: [(&str, &str); 9] = [
    ("mid_block", "up_blocks.0"),
    ("up_blocks.0.upsamplers.0", "up_blocks.1"),
    ("up_blocks.0", "up_blocks.2"),
    ("up_blocks.1.upsamplers.0", "up_blocks.3"),
    ("up_blocks.1", "up_blocks.4"),
    ("up_blocks.2.upsamplers.0", "up_blocks.5"),
    ("up_blocks.2", "up_blocks.6"),
    ("up_blocks.3.upsamplers.0", "up_blocks.7"),
    ("up_blocks.3", "up_blocks.8"),
];
const ENCODER_090: [(&str, &str); 10] = [
    ("down_blocks.0.downsamplers.0", "down_blocks.1"),
    ("down_blocks.0.conv_out", "down_blocks.2"),
    ("down_blocks.0", "down_blocks.0"),
    ("down_blocks.1.downsamplers.0", "down_blocks.4"),
    ("down_blocks.1.conv_out", "down_blocks.5"),
    ("down_blocks.1", "down_blocks.3"),
    ("down_blocks.2.downsamplers.0", "down_blocks.7"),
    ("down_blocks.2", "down_blocks.6"),
    ("down_blocks.3", "down_blocks.8"),
    ("mid_block", "down_blocks.9"),
];
const ENCODER_095: [(&str, &str); 9] = [
    ("down_blocks.0.downsamplers.0", "down_blocks.1"),
    ("down_blocks.0", "down_blocks.0"),
    ("down_blocks.1.downsamplers.0", "down_blocks.3"),
    ("down_blocks.1", "down_blocks.2"),
    ("down_blocks.2.downsamplers.0", "down_blocks.5"),
    ("down_blocks.2", "down_blocks.4"),
    ("down_blocks.3.downsamplers.0", "down_blocks.7"),
    ("down_blocks.3", "down_blocks.6"),
    ("mid_block", "down_blocks.8"),
];

/// `TRANSFORMER_KEYS_RENAME_DICT`, in order.
const TRANSFORMER_RENAMES: [(&str, &str); 5] = [
    (TRANSFORMER_PREFIX, ""),
    ("patchify_proj", "proj_in"),
    ("adaln_single", "time_embed"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
];

/// The diffusers name of a single-file transformer key; `None` for the VAE's (diffusers keeps
/// every key without "vae" in it). TurboVSR's head keys (DESIGN §3.2) follow the same renames:
/// `model.diffusion_model.cond_embedder.*` and `model.diffusion_model.adaln_single.emb.
/// step_embedder.*`.
pub fn transformer_key_to_diffusers(key: &str) -> Option<String> {
    if key.contains("vae") {
        return None;
    }
    let mut name = key.to_string();
    for (from, to) in TRANSFORMER_RENAMES {
        name = name.replace(from, to);
    }
    Some(name)
}

/// The single-file name of a diffusers transformer key, checked by mapping it forward again.
pub fn transformer_key_to_original(key: &str) -> Result<String> {
    let mut name = key.to_string();
    for (original, diffusers) in TRANSFORMER_RENAMES[1..].iter().rev() {
        name = name.replace(diffusers, original);
    }
    let original = format!("{TRANSFORMER_PREFIX}{name}");
    match transformer_key_to_diffusers(&original) {
        Some(back) if back == key => Ok(original),
        _ => bail!("the transformer key `{key}` has no single-file name"),
    }
}

/// Transformer sizes diffusers' single-file loader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformerPreset {
    /// LTX-Video 0.9.0 - 0.9.5 (and 0.9.7 distilled 2B): 28 blocks of 32 heads x 64.
    Ltx2b,
    /// LTX-Video 0.9.7 13B: 48 blocks of 32 heads x 128 (`transformer_blocks.47` present).
    Ltx13b,
}

impl TransformerPreset {
    /// diffusers' model type test: `transformer_blocks.47.scale_shift_table` means 13B.
    pub fn detect<V>(keys: &BTreeMap<String, V>) -> Self {
        if keys
            .keys()
            .any(|k| k.ends_with("transformer_blocks.47.scale_shift_table"))
        {
            Self::Ltx13b
        } else {
            Self::Ltx2b
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Ltx2b => "2B",
            Self::Ltx13b => "13B",
        }
    }

    pub fn preset_config(self) -> serde_json::Value {
        let (head_dim, layers) = match self {
            Self::Ltx2b => (64, 28),
            Self::Ltx13b => (128, 48),
        };
        json!({
            "_class_name": "LTXVideoTransformer3DModel",
            "in_channels": 128,
            "out_channels": 128,
            "patch_size": 1,
            "patch_size_t": 1,
            "num_attention_heads": 32,
            "attention_head_dim": head_dim,
            "cross_attention_dim": 32 * head_dim,
            "num_layers": layers,
            "activation_fn": "gelu-approximate",
            "qk_norm": "rms_norm_across_heads",
            "norm_elementwise_affine": false,
            "norm_eps": 1e-6,
            "caption_channels": 4096,
            "attention_bias": true,
            "attention_out_bias": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vae_renumbering_follows_diffusers() {
        let g = VaeGeneration::V090;
        let f = |k: &str| g.vae_key_to_diffusers(k);
        assert_eq!(
            f("vae.decoder.up_blocks.4.conv_shortcut.weight").as_deref(),
            Some("decoder.up_blocks.2.conv_in.conv_shortcut.conv.weight")
        );
        assert_eq!(
            f("vae.encoder.down_blocks.2.norm3.norm.weight").as_deref(),
            Some("encoder.down_blocks.0.conv_out.norm3.weight")
        );
        assert_eq!(
            f("vae.encoder.down_blocks.9.res_blocks.1.conv2.conv.bias").as_deref(),
            Some("encoder.mid_block.resnets.1.conv2.conv.bias")
        );
        assert_eq!(
            f("vae.per_channel_statistics.mean-of-means").as_deref(),
            Some("latents_mean")
        );
        assert_eq!(f("vae.per_channel_statistics.mean-of-stds"), None);
        assert_eq!(f("vae.per_channel_statistics.channel"), None);
        assert_eq!(f("model.diffusion_model.proj_out.weight"), None);

        let g = VaeGeneration::V091;
        assert_eq!(
            g.vae_key_to_diffusers("vae.decoder.up_blocks.1.conv.conv.weight")
                .as_deref(),
            Some("decoder.up_blocks.0.upsamplers.0.conv.conv.weight")
        );
        assert_eq!(
            g.vae_key_to_diffusers("vae.decoder.last_scale_shift_table")
                .as_deref(),
            Some("decoder.scale_shift_table")
        );
        let g = VaeGeneration::V095;
        assert_eq!(
            g.vae_key_to_diffusers("vae.encoder.down_blocks.8.res_blocks.0.conv1.conv.weight")
                .as_deref(),
            Some("encoder.mid_block.resnets.0.conv1.conv.weight")
        );
        assert_eq!(
            g.vae_key_to_diffusers("vae.encoder.down_blocks.3.conv.conv.weight")
                .as_deref(),
            Some("encoder.down_blocks.1.downsamplers.0.conv.conv.weight")
        );
    }

    #[test]
    fn transformer_renames_and_inverse() {
        for (orig, diff) in [
            (
                "model.diffusion_model.patchify_proj.weight",
                "proj_in.weight",
            ),
            (
                "model.diffusion_model.adaln_single.emb.timestep_embedder.linear_1.bias",
                "time_embed.emb.timestep_embedder.linear_1.bias",
            ),
            (
                "model.diffusion_model.transformer_blocks.3.attn2.k_norm.weight",
                "transformer_blocks.3.attn2.norm_k.weight",
            ),
            (
                "model.diffusion_model.adaln_single.emb.step_embedder.linear_2.weight",
                "time_embed.emb.step_embedder.linear_2.weight",
            ),
        ] {
            assert_eq!(transformer_key_to_diffusers(orig).as_deref(), Some(diff));
            assert_eq!(transformer_key_to_original(diff).unwrap(), orig);
        }
        assert_eq!(
            transformer_key_to_diffusers("vae.encoder.conv_in.conv.weight"),
            None
        );
    }
}
