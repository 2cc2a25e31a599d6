//! One LTX transformer block and its parts: `LTXAttention` with `LTXVideoAttnProcessor`,
//! diffusers' `FeedForward`, and `LTXVideoTransformerBlock`
//! (`diffusers/models/transformers/transformer_ltx.py`, `diffusers/models/attention.py`,
//! `diffusers/models/activations.py`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{ActivationFn, LtxTransformerConfig};
use super::cpu_kernels::{gated_residual, gelu_tanh, rms_norm_modulate, rms_norm_rope};
use super::layers::Linear;
use super::rope::Rope;
use crate::model::profile;
use crate::model::transformer::attention::attention;

/// `LTXAttention`'s q/k RMS norm epsilon (hard-coded there).
const QK_NORM_EPS: f64 = 1e-5;

/// diffusers `LTXAttention` (self- or cross-attention) with `LTXVideoAttnProcessor`:
/// q, k, v projections, RMS norm of q and k across all heads (over the inner dim), optional
/// rotary embedding of q and k, attention, `to_out.0`.
#[derive(Debug, Clone)]
pub struct LtxAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    heads: usize,
    head_dim: usize,
}

impl LtxAttention {
    /// `kv_dim`: features of the keys' source (`cross_attention_dim`, or the hidden size).
    pub fn new(cfg: &LtxTransformerConfig, kv_dim: usize, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let inner = cfg.inner_dim();
        let bias = cfg.attention_bias;
        Ok(Self {
            to_q: Linear::new(dim, inner, bias, vb.pp("to_q"))?,
            to_k: Linear::new(kv_dim, inner, bias, vb.pp("to_k"))?,
            to_v: Linear::new(kv_dim, inner, bias, vb.pp("to_v"))?,
            to_out: Linear::new(inner, dim, cfg.attention_out_bias, vb.pp("to_out").pp("0"))?,
            norm_q: vb.pp("norm_q").get(inner, "weight")?,
            norm_k: vb.pp("norm_k").get(inner, "weight")?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.attention_head_dim,
        })
    }

    /// `x`: (b, n, D) queries' source; `context`: (b, m, Dkv) keys' source (`None`: self-attention);
    /// `key_bias`: (b, m) additive, f32; `rope` applied to q and k when given.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        key_bias: Option<&Tensor>,
        rope: Option<&Rope>,
        max_score_elems: usize,
    ) -> Result<Tensor> {
        let o = self.attend(x, context, key_bias, rope, max_score_elems)?;
        self.to_out.forward(&o)
    }

    /// `residual + self.forward(..)`, the residual added inside `to_out`'s gemm.
    pub fn forward_add(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        key_bias: Option<&Tensor>,
        rope: Option<&Rope>,
        max_score_elems: usize,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let o = self.attend(x, context, key_bias, rope, max_score_elems)?;
        self.to_out.forward_add(&o, residual)
    }

    /// Everything before `to_out`: (b, n, H*d).
    fn attend(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        key_bias: Option<&Tensor>,
        rope: Option<&Rope>,
        max_score_elems: usize,
    ) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let projections = profile::scope("attention: q/k/v projections, norms, rope", x.device());
        // RMS norm across heads and the rotary embedding, one pass each for q and k
        let q = rms_norm_rope(&self.to_q.forward(x)?, &self.norm_q, QK_NORM_EPS, rope)?;
        let k = rms_norm_rope(
            &self.to_k.forward(context)?,
            &self.norm_k,
            QK_NORM_EPS,
            rope,
        )?;
        let v = self.to_v.forward(context)?;
        drop(projections);
        let (b, n, _) = q.dims3()?;
        let m = k.dim(1)?;
        // (b, n, H*d) -> (b, n, H, d) -> (b, H, n, d): a strided view, no copy
        let q = q
            .reshape((b, n, self.heads, self.head_dim))?
            .transpose(1, 2)?;
        let k = k
            .reshape((b, m, self.heads, self.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, m, self.heads, self.head_dim))?
            .transpose(1, 2)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let _core = profile::scope("attention: scores, softmax, values", x.device());
        let o = attention(&q, &k, &v, key_bias, scale, max_score_elems)?;
        // (b, H, n, d) -> (b, n, H, d) -> (b, n, H*d); no copy on the CPU, where attention
        // writes (b, n, H, d) memory
        o.transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, self.heads * self.head_dim))
    }
}

/// diffusers `FeedForward(dim, activation_fn=...)` (mult 4, biases): `net.0` (the activation
/// module with its `proj`), `net.2` (the output linear).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
    activation: ActivationFn,
}

impl FeedForward {
    pub fn new(dim: usize, activation: ActivationFn, vb: VarBuilder) -> Result<Self> {
        let hidden = 4 * dim;
        // gated kinds project to twice the hidden size and split it into (value, gate)
        let proj_out = match activation {
            ActivationFn::Geglu | ActivationFn::Swiglu => 2 * hidden,
            _ => hidden,
        };
        Ok(Self {
            proj: Linear::new(dim, proj_out, true, vb.pp("net").pp("0").pp("proj"))?,
            out: Linear::new(hidden, dim, true, vb.pp("net").pp("2"))?,
            activation,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let h = match self.activation {
            ActivationFn::Gelu => h.gelu_erf()?,
            ActivationFn::GeluApproximate => gelu_tanh(&h)?,
            ActivationFn::LinearSilu => h.silu()?,
            ActivationFn::GegluApproximate => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            ActivationFn::Geglu | ActivationFn::Swiglu => {
                let half = h.dim(candle_core::D::Minus1)? / 2;
                let value = h.narrow(candle_core::D::Minus1, 0, half)?;
                let gate = h.narrow(candle_core::D::Minus1, half, half)?;
                let gate = if self.activation == ActivationFn::Geglu {
                    gate.gelu_erf()?
                } else {
                    gate.silu()?
                };
                (value * gate)?
            }
        };
        self.out.forward(&h)
    }
}

/// What every block reads besides the hidden states: the projected prompt, its key bias, the
/// rotary embedding and the AdaLN parameters. Built once per forward by
/// [`super::LtxVideoTransformer3DModel::prepare`].
#[derive(Debug, Clone)]
pub struct BlockContext {
    /// Caption tokens after `caption_projection`, (b, L, D).
    pub encoder_hidden_states: Tensor,
    /// `(1 - mask) * -10000` per prompt token, f32 (b, L); `None`: no mask.
    pub encoder_bias: Option<Tensor>,
    /// The rotary embedding of the tokens; `None` only in a model without blocks.
    pub rope: Option<Rope>,
    /// `time_embed.linear(silu(embedded_timestep))` per timestep row, (rows, 6 D).
    pub temb: Tensor,
    /// Maps rows to (batch, tokens); see [`super::embeddings::TimestepRows`].
    pub rows: super::embeddings::TimestepRows,
    /// Budget of one attention score block, in elements (see `transformer::attention`).
    pub max_score_elems: usize,
}

/// diffusers `LTXVideoTransformerBlock`.
#[derive(Debug, Clone)]
pub struct LtxVideoTransformerBlock {
    norm1: Option<Tensor>,
    attn1: LtxAttention,
    norm2: Option<Tensor>,
    attn2: LtxAttention,
    ff: FeedForward,
    /// (6, D): shift/scale/gate for attention, shift/scale/gate for the feed-forward.
    scale_shift_table: Tensor,
    eps: f64,
}

impl LtxVideoTransformerBlock {
    pub fn new(cfg: &LtxTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let norm = |name: &str| -> Result<Option<Tensor>> {
            if cfg.norm_elementwise_affine {
                Ok(Some(vb.pp(name).get(dim, "weight")?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: LtxAttention::new(cfg, dim, vb.pp("attn1"))?,
            norm2: norm("norm2")?,
            attn2: LtxAttention::new(cfg, cfg.cross_attention_dim, vb.pp("attn2"))?,
            ff: FeedForward::new(dim, cfg.activation_fn, vb.pp("ff"))?,
            scale_shift_table: vb.get((6, dim), "scale_shift_table")?,
            eps: cfg.norm_eps,
        })
    }

    /// `hidden_states` (b, n, D) -> (b, n, D).
    pub fn forward(&self, hidden_states: &Tensor, ctx: &BlockContext) -> Result<Tensor> {
        let device = hidden_states.device();
        let _block = profile::scope("transformer block", device);
        let dtype = hidden_states.dtype();
        let (rows, six_d) = ctx.temb.dims2()?;
        let dim = six_d / 6;
        // (rows, 6 D) -> (rows, 6, D), plus the block's table
        let ada = ctx.temb.reshape((rows, 6, dim))?.broadcast_add(
            &self
                .scale_shift_table
                .to_dtype(ctx.temb.dtype())?
                .unsqueeze(0)?,
        )?;
        // each (b, 1 or n, D)
        let param = |i: usize| -> Result<Tensor> {
            ctx.rows
                .expand(&ada.narrow(1, i, 1)?.squeeze(1)?.contiguous()?)?
                .to_dtype(dtype)
        };
        let (shift_msa, scale_msa, gate_msa) = (param(0)?, param(1)?, param(2)?);

        let norm_h = rms_norm_modulate(
            hidden_states,
            self.norm1.as_ref(),
            self.eps,
            &scale_msa,
            &shift_msa,
        )?;
        let self_attention = profile::scope("transformer block: self-attention", device);
        let attn =
            self.attn1
                .forward(&norm_h, None, None, ctx.rope.as_ref(), ctx.max_score_elems)?;
        drop(self_attention);
        let h = gated_residual(hidden_states, &attn, &gate_msa)?;

        // cross-attention reads the un-normalized hidden states and has no gate
        let cross_attention = profile::scope("transformer block: cross-attention", device);
        let h = self.attn2.forward_add(
            &h,
            Some(&ctx.encoder_hidden_states),
            ctx.encoder_bias.as_ref(),
            None,
            ctx.max_score_elems,
            &h,
        )?;

        drop(cross_attention);
        let (shift_mlp, scale_mlp, gate_mlp) = (param(3)?, param(4)?, param(5)?);
        let norm_h = rms_norm_modulate(&h, self.norm2.as_ref(), self.eps, &scale_mlp, &shift_mlp)?;
        let feed_forward = profile::scope("transformer block: feed-forward", device);
        let ff = self.ff.forward(&norm_h)?;
        drop(feed_forward);
        gated_residual(&h, &ff, &gate_mlp)
    }
}
