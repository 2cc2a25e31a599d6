//! The transformer's `config.json`, as diffusers 0.42.1 writes it for `LTXVideoTransformer3DModel`
//! (`diffusers/models/transformers/transformer_ltx.py`, `__init__`): same names, same defaults.

use serde::Deserialize;

/// Feed-forward kinds of diffusers' `FeedForward` (`diffusers/models/attention.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ActivationFn {
    /// `GELU` (erf): linear -> gelu.
    #[serde(rename = "gelu")]
    Gelu,
    /// `GELU(approximate="tanh")`: LTX-Video's choice.
    #[serde(rename = "gelu-approximate")]
    GeluApproximate,
    /// `GEGLU`: linear to 2x, `a * gelu(gate)`.
    #[serde(rename = "geglu")]
    Geglu,
    /// `ApproximateGELU`: linear -> `x * sigmoid(1.702 x)`.
    #[serde(rename = "geglu-approximate")]
    GegluApproximate,
    /// `SwiGLU`: linear to 2x, `a * silu(gate)`.
    #[serde(rename = "swiglu")]
    Swiglu,
    /// `LinearActivation(activation="silu")`: linear -> silu.
    #[serde(rename = "linear-silu")]
    LinearSilu,
}

/// `LTXVideoTransformer3DModel`'s config. Unknown keys (`_class_name`, `_diffusers_version`, ...)
/// are ignored, as diffusers does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LtxTransformerConfig {
    pub in_channels: usize,
    /// `None` or 0: same as `in_channels` (diffusers' `out_channels or in_channels`).
    pub out_channels: Option<usize>,
    pub patch_size: usize,
    pub patch_size_t: usize,
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub cross_attention_dim: usize,
    pub num_layers: usize,
    pub activation_fn: ActivationFn,
    /// Only `rms_norm_across_heads` exists in diffusers (anything else raises there).
    pub qk_norm: String,
    pub norm_elementwise_affine: bool,
    pub norm_eps: f64,
    pub caption_channels: usize,
    pub attention_bias: bool,
    pub attention_out_bias: bool,
}

impl Default for LtxTransformerConfig {
    /// diffusers' defaults, which are LTX-Video 0.9.x (2B): 28 blocks of 32 heads of 64.
    fn default() -> Self {
        Self {
            in_channels: 128,
            out_channels: Some(128),
            patch_size: 1,
            patch_size_t: 1,
            num_attention_heads: 32,
            attention_head_dim: 64,
            cross_attention_dim: 2048,
            num_layers: 28,
            activation_fn: ActivationFn::GeluApproximate,
            qk_norm: "rms_norm_across_heads".to_string(),
            norm_elementwise_affine: false,
            norm_eps: 1e-6,
            caption_channels: 4096,
            attention_bias: true,
            attention_out_bias: true,
        }
    }
}

impl LtxTransformerConfig {
    /// `num_attention_heads * attention_head_dim`, the hidden size `D` of the blocks.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Channels of the output tokens.
    pub fn out_channels(&self) -> usize {
        match self.out_channels {
            Some(c) if c > 0 => c,
            _ => self.in_channels,
        }
    }

    /// Rejects what diffusers' forward cannot run either, with the reason.
    pub fn validate(&self) -> candle_core::Result<()> {
        let inner = self.inner_dim();
        if inner == 0 || self.in_channels == 0 || self.caption_channels == 0 {
            candle_core::bail!(
                "transformer config: num_attention_heads ({}), attention_head_dim ({}), \
                 in_channels ({}) and caption_channels ({}) must be positive",
                self.num_attention_heads,
                self.attention_head_dim,
                self.in_channels,
                self.caption_channels
            );
        }
        if self.qk_norm != "rms_norm_across_heads" {
            candle_core::bail!(
                "transformer config: qk_norm {:?} is not supported (diffusers' LTXAttention only \
                 implements \"rms_norm_across_heads\")",
                self.qk_norm
            );
        }
        if self.cross_attention_dim != inner {
            // the caption projection outputs `inner_dim` features, which attn2's to_k/to_v read
            candle_core::bail!(
                "transformer config: cross_attention_dim ({}) must equal num_attention_heads * \
                 attention_head_dim ({inner}): the caption projection feeds attn2 with {inner} features",
                self.cross_attention_dim
            );
        }
        if !inner.is_multiple_of(2) {
            // apply_rotary_emb pairs neighbouring channels of the whole inner dim
            candle_core::bail!(
                "transformer config: num_attention_heads * attention_head_dim = {inner} must be \
                 even for the rotary embedding"
            );
        }
        if self.patch_size == 0 || self.patch_size_t == 0 {
            candle_core::bail!("transformer config: patch_size and patch_size_t must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_diffusers_json_and_fills_defaults() {
        let cfg: LtxTransformerConfig = serde_json::from_str(
            r#"{"_class_name": "LTXVideoTransformer3DModel", "_diffusers_version": "0.42.1",
                "activation_fn": "geglu", "num_layers": 2, "out_channels": null}"#,
        )
        .unwrap();
        assert_eq!(cfg.activation_fn, ActivationFn::Geglu);
        assert_eq!(cfg.num_layers, 2);
        assert_eq!(cfg.out_channels(), 128);
        assert_eq!(cfg.inner_dim(), 2048);
        cfg.validate().unwrap();
        let bad: LtxTransformerConfig = serde_json::from_str(r#"{"qk_norm": "rms_norm"}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("qk_norm"));
        let bad: LtxTransformerConfig =
            serde_json::from_str(r#"{"cross_attention_dim": 4096}"#).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cross_attention_dim"));
    }
}
