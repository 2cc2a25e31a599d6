//! LTX-Video's diffusion transformer: diffusers 0.42.1 `LTXVideoTransformer3DModel`
//! (`diffusers/models/transformers/transformer_ltx.py`), DESIGN §3.1.
//!
//! The forward is split so TurboVSR's denoiser head (DESIGN §3.2) can reach into it:
//! [`LtxVideoTransformer3DModel::embed_timestep`] gives diffusers' `embedded_timestep` (to which the
//! step-size embedding is added), [`LtxVideoTransformer3DModel::prepare`] projects the inputs and
//! builds the per-forward [`BlockContext`], [`LtxVideoTransformer3DModel::forward_blocks`] runs any
//! range of blocks (block 0 alone, then cross normalization, then the rest), and
//! [`LtxVideoTransformer3DModel::output`] applies `norm_out` and `proj_out`.

pub(crate) mod attention;
pub(crate) mod block;
pub(crate) mod config;
pub(crate) mod cpu_kernels;
pub(crate) mod embeddings;
pub(crate) mod layers;
pub(crate) mod rope;

use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use block::{BlockContext, LtxVideoTransformerBlock};
pub use config::{ActivationFn, LtxTransformerConfig};
pub use embeddings::{TimeEmbedding, TimestepRows};
pub use rope::{Rope, RopePositions};

use crate::model::transformer::attention::default_max_score_elems;
use embeddings::{AdaLayerNormSingle, CaptionProjection};
use layers::{layer_norm, modulate, Linear};
use rope::LtxRotaryPosEmbed;

/// Epsilon of `norm_out` (`nn.LayerNorm(inner_dim, eps=1e-6, elementwise_affine=False)`).
const NORM_OUT_EPS: f64 = 1e-6;

/// The inputs of one forward, as diffusers' `LTXVideoTransformer3DModel.forward` takes them.
#[derive(Debug, Clone, Copy)]
pub struct TransformerInputs<'a> {
    /// Latent tokens, (b, n, in_channels), frame-major order of `video_shape`.
    pub hidden_states: &'a Tensor,
    /// Prompt embeddings, (b, L, caption_channels).
    pub encoder_hidden_states: &'a Tensor,
    /// Timesteps, (b,) for one per batch element or (b, n) for one per token.
    pub timestep: &'a Tensor,
    /// 1 for prompt tokens to attend to, 0 for padding, (b, L); `None`: attend to all.
    pub encoder_attention_mask: Option<&'a Tensor>,
    /// (frames, height, width) of the token grid: `n = frames * height * width`.
    pub video_shape: (usize, usize, usize),
    /// Positions for the rotary embedding.
    pub positions: RopePositions<'a>,
}

/// diffusers `LTXVideoTransformer3DModel`.
#[derive(Debug, Clone)]
pub struct LtxVideoTransformer3DModel {
    cfg: LtxTransformerConfig,
    proj_in: Linear,
    /// (2, D): shift and scale of the output modulation.
    scale_shift_table: Tensor,
    time_embed: AdaLayerNormSingle,
    caption_projection: CaptionProjection,
    rope: LtxRotaryPosEmbed,
    transformer_blocks: Vec<LtxVideoTransformerBlock>,
    proj_out: Linear,
    dtype: DType,
    device: Device,
    max_score_elems: usize,
}

impl LtxVideoTransformer3DModel {
    /// Builds the model from `vb`, whose keys are diffusers' (`proj_in.weight`,
    /// `transformer_blocks.0.attn1.to_q.weight`, ...). Activations run in `vb`'s dtype.
    pub fn new(cfg: &LtxTransformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dim = cfg.inner_dim();
        let transformer_blocks = (0..cfg.num_layers)
            .map(|i| LtxVideoTransformerBlock::new(cfg, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            proj_in: Linear::new(cfg.in_channels, dim, true, vb.pp("proj_in"))?,
            scale_shift_table: vb.get((2, dim), "scale_shift_table")?,
            time_embed: AdaLayerNormSingle::new(dim, vb.pp("time_embed"))?,
            caption_projection: CaptionProjection::new(
                cfg.caption_channels,
                dim,
                vb.pp("caption_projection"),
            )?,
            rope: LtxRotaryPosEmbed::new(dim, cfg.patch_size, cfg.patch_size_t),
            transformer_blocks,
            proj_out: Linear::new(dim, cfg.out_channels(), true, vb.pp("proj_out"))?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            max_score_elems: default_max_score_elems(vb.device()),
        })
    }

    /// Loads the transformer of a model path: a diffusers folder (`config.json` +
    /// `diffusion_pytorch_model*.safetensors`, sharded or not), a checkpoint folder holding it as
    /// `transformer/`, or a single-file LTX-Video checkpoint (see [`crate::model::checkpoint`]).
    /// Unexpected keys are an error, except TurboVSR's head keys (DESIGN §3.2), which belong to
    /// the denoiser.
    pub fn from_pretrained(dir: &Path, dtype: DType, device: &Device) -> anyhow::Result<Self> {
        let ck = crate::model::checkpoint::Checkpoint::open(dir)?.transformer()?;
        let model = Self::new(&ck.config, ck.weights.var_builder(dtype, device)).with_context(
            crate::model::checkpoint::weights::loading(
                "LTXVideoTransformer3DModel",
                &ck.weights,
                &ck.config_source,
            ),
        )?;
        ck.weights.check_unused(
            &format!("the transformer config ({})", ck.config_source),
            crate::model::checkpoint::is_turbovsr_head_key,
        )?;
        Ok(model)
    }

    pub fn config(&self) -> &LtxTransformerConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The blocks, in order (`transformer_blocks.<i>`).
    pub fn blocks(&self) -> &[LtxVideoTransformerBlock] {
        &self.transformer_blocks
    }

    /// Sets the budget of one attention score block, in elements (default
    /// `attention::DEFAULT_MAX_SCORE_ELEMS` on the CPU,
    /// `attention::DEVICE_MAX_SCORE_ELEMS` on a GPU); smaller uses less memory and
    /// splits the work finer.
    pub fn set_max_attention_scores(&mut self, elems: usize) {
        self.max_score_elems = elems.max(1);
    }

    /// diffusers' `embedded_timestep` (before `time_embed.linear`) for `timestep`, (b,) or (b, n),
    /// per distinct (batch element, timestep): see [`TimestepRows`].
    pub fn embed_timestep(
        &self,
        timestep: &Tensor,
        batch: usize,
        n_tokens: usize,
    ) -> Result<TimeEmbedding> {
        let rows = TimestepRows::new(timestep, batch, n_tokens)?;
        self.time_embed.embed(rows, self.dtype)
    }

    /// Checks `inputs` against the model and each other, then runs `proj_in`, the caption
    /// projection, the mask bias, the rotary embedding and the AdaLN linear of `time`.
    /// Returns the hidden states entering block 0, (b, n, D), and the context of every block.
    pub fn prepare(
        &self,
        inputs: &TransformerInputs,
        time: &TimeEmbedding,
    ) -> Result<(Tensor, BlockContext)> {
        let (b, n, l) = self.check_inputs(inputs)?;
        if time.rows.batch != b || (time.rows.tokens != 1 && time.rows.tokens != n) {
            candle_core::bail!(
                "timestep embedding is for batch {} x {} tokens, the inputs have batch {b} x {n}",
                time.rows.batch,
                time.rows.tokens
            );
        }
        let hidden_states = self
            .proj_in
            .forward(&inputs.hidden_states.to_dtype(self.dtype)?)?;
        let encoder_hidden_states = self
            .caption_projection
            .forward(&inputs.encoder_hidden_states.to_dtype(self.dtype)?)?;
        // diffusers: (1 - mask) * -10000, added to the scores of every head and query
        let encoder_bias = inputs
            .encoder_attention_mask
            .map(|m| -> Result<Tensor> {
                let m = m.to_dtype(DType::F32)?.reshape((b, l))?;
                (m.affine(-1.0, 1.0)? * -10000.0)?.to_device(&self.device)
            })
            .transpose()?;
        // Only the blocks read the rotary embedding (a model without blocks skips it).
        let rope = if self.transformer_blocks.is_empty() {
            None
        } else {
            let r = &self.rope;
            Some(r.forward(inputs.video_shape, inputs.positions, b, &self.device)?)
        };
        let temb = self.time_embed.modulation(&time.embedded)?;
        Ok((
            hidden_states,
            BlockContext {
                encoder_hidden_states,
                encoder_bias,
                rope,
                temb,
                rows: time.rows.clone(),
                max_score_elems: self.max_score_elems,
            },
        ))
    }

    /// Runs `transformer_blocks[range]` on `hidden_states` (b, n, D).
    pub fn forward_blocks(
        &self,
        hidden_states: &Tensor,
        ctx: &BlockContext,
        range: Range<usize>,
    ) -> Result<Tensor> {
        let blocks = self.transformer_blocks.get(range.clone()).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "block range {range:?} is outside the model's {} blocks",
                self.transformer_blocks.len()
            ))
        })?;
        let mut h = hidden_states.clone();
        for block in blocks {
            h = block.forward(&h, ctx)?;
        }
        Ok(h)
    }

    /// `norm_out`, the output modulation by `embedded_timestep` and `proj_out`:
    /// (b, n, D) -> (b, n, out_channels).
    pub fn output(&self, hidden_states: &Tensor, time: &TimeEmbedding) -> Result<Tensor> {
        let (rows, dim) = time.embedded.dims2()?;
        // (rows, 1, D) + (1, 2, D) -> (rows, 2, D)
        let values = time
            .embedded
            .reshape((rows, 1, dim))?
            .broadcast_add(&self.scale_shift_table.unsqueeze(0)?)?;
        let shift = time
            .rows
            .expand(&values.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?)?;
        let scale = time
            .rows
            .expand(&values.narrow(1, 1, 1)?.squeeze(1)?.contiguous()?)?;
        let h = layer_norm(hidden_states, NORM_OUT_EPS)?;
        let h = modulate(&h, &scale, &shift)?;
        self.proj_out.forward(&h)
    }

    /// The whole forward: `sample`, (b, n, out_channels), in the model's dtype.
    pub fn forward(&self, inputs: &TransformerInputs) -> Result<Tensor> {
        let (b, n, _) = self.check_inputs(inputs)?;
        let time = self.embed_timestep(inputs.timestep, b, n)?;
        let (h, ctx) = self.prepare(inputs, &time)?;
        let h = self.forward_blocks(&h, &ctx, 0..self.transformer_blocks.len())?;
        self.output(&h, &time)
    }

    /// Shapes of `inputs` against the config and each other; returns (b, n, L).
    fn check_inputs(&self, inputs: &TransformerInputs) -> Result<(usize, usize, usize)> {
        let (b, n, c) = inputs.hidden_states.dims3().map_err(|_| {
            candle_core::Error::Msg(format!(
                "hidden_states has shape {:?}, expected (batch, tokens, {})",
                inputs.hidden_states.dims(),
                self.cfg.in_channels
            ))
        })?;
        if c != self.cfg.in_channels {
            candle_core::bail!(
                "hidden_states has {c} channels per token, the model's in_channels is {}",
                self.cfg.in_channels
            );
        }
        let (f, h, w) = inputs.video_shape;
        if f * h * w != n {
            candle_core::bail!(
                "hidden_states has {n} tokens but video_shape (frames, height, width) = \
                 ({f}, {h}, {w}) holds {}",
                f * h * w
            );
        }
        let (eb, l, ec) = inputs.encoder_hidden_states.dims3().map_err(|_| {
            candle_core::Error::Msg(format!(
                "encoder_hidden_states has shape {:?}, expected (batch, prompt tokens, {})",
                inputs.encoder_hidden_states.dims(),
                self.cfg.caption_channels
            ))
        })?;
        if eb != b {
            candle_core::bail!("encoder_hidden_states has batch {eb}, hidden_states has batch {b}");
        }
        if ec != self.cfg.caption_channels {
            candle_core::bail!(
                "encoder_hidden_states has {ec} channels, the model's caption_channels is {}",
                self.cfg.caption_channels
            );
        }
        if let Some(mask) = inputs.encoder_attention_mask {
            if mask.dims() != [b, l] {
                candle_core::bail!(
                    "encoder_attention_mask has shape {:?}, expected (batch, prompt tokens) = \
                     ({b}, {l}) to match encoder_hidden_states",
                    mask.dims()
                );
            }
        }
        Ok((b, n, l))
    }
}
