//! Timestep and caption embeddings of the LTX transformer:
//! `AdaLayerNormSingle` (`diffusers/models/normalization.py`) with its
//! `PixArtAlphaCombinedTimestepSizeEmbeddings` / `Timesteps` / `TimestepEmbedding`
//! (`diffusers/models/embeddings.py`), and `PixArtAlphaTextProjection` (same file).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu_kernels::gelu_tanh;
use super::layers::Linear;

/// Channels of the sinusoidal timestep projection (`Timesteps(num_channels=256)`).
pub const TIMESTEP_PROJ_DIM: usize = 256;

/// Sinusoidal projection of `get_timestep_embedding` with `flip_sin_to_cos=True`,
/// `downscale_freq_shift=0`, `max_period=10000`: `[cos(t f), sin(t f)]`, f32, shape (n, `dim`).
///
/// The f32 operations are those of the reference, in its order, so the phases of large
/// timesteps (t * f up to 1000 rad) round the same way.
pub fn timestep_sinusoids(timesteps: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let neg_log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((neg_log_period * i as f32) / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let row_start = out.len();
        out.extend(freqs.iter().map(|&f| (t * f).cos()));
        out.extend(freqs.iter().map(|&f| (t * f).sin()));
        // odd `dim`: zero pad at the end
        out.resize(row_start + dim, 0.0);
    }
    Tensor::from_vec(out, (timesteps.len(), dim), device)
}

/// diffusers `TimestepEmbedding` with SiLU: `linear_2(silu(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(in_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_dim, dim, true, vb.pp("linear_1"))?,
            linear_2: Linear::new(dim, dim, true, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// The timesteps of one forward, deduplicated: the embedding MLPs run once per distinct
/// (batch element, timestep) pair, not once per token. With per-token timesteps a window of
/// 14,000 tokens usually holds two values (0 for the conditioning frame and the current one).
#[derive(Debug, Clone)]
pub struct TimestepRows {
    /// Distinct timestep values, one per row.
    pub values: Vec<f32>,
    /// The batch element each row belongs to, u32 (rows,).
    pub row_batch: Tensor,
    /// For each (batch element, token) the row it uses, u32 (batch * tokens,) where `tokens` is 1
    /// for per-batch timesteps and the token count for per-token ones.
    pub index: Tensor,
    pub batch: usize,
    /// 1 (timestep per batch element) or the token count (per token).
    pub tokens: usize,
}

impl TimestepRows {
    /// Reads `timestep`, (b,) or (b, n) (any numeric dtype), with `n` the token count.
    pub fn new(timestep: &Tensor, batch: usize, n_tokens: usize) -> Result<Self> {
        let tokens = match timestep.dims() {
            [b] if *b == batch => 1,
            [b, n] if *b == batch && *n == n_tokens => n_tokens,
            [b, 1] if *b == batch => 1,
            dims => candle_core::bail!(
                "timestep has shape {dims:?}, expected ({batch},) per batch element or \
                 ({batch}, {n_tokens}) per token"
            ),
        };
        let flat = timestep
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut values = Vec::new();
        let mut row_batch = Vec::new();
        let mut index = Vec::with_capacity(flat.len());
        let mut seen: HashMap<(usize, u32), u32> = HashMap::new();
        for (i, &t) in flat.iter().enumerate() {
            let b = i / tokens;
            let row = *seen.entry((b, t.to_bits())).or_insert_with(|| {
                values.push(t);
                row_batch.push(b as u32);
                (values.len() - 1) as u32
            });
            index.push(row);
        }
        let device = timestep.device();
        let rows = row_batch.len();
        Ok(Self {
            values,
            row_batch: Tensor::from_vec(row_batch, rows, device)?,
            index: Tensor::from_vec(index, batch * tokens, device)?,
            batch,
            tokens,
        })
    }

    /// Expands per-row values (rows, ...) to (batch, tokens, ...).
    pub fn expand(&self, rows: &Tensor) -> Result<Tensor> {
        let mut dims = vec![self.batch, self.tokens];
        dims.extend_from_slice(&rows.dims()[1..]);
        rows.index_select(&self.index, 0)?.reshape(dims)
    }
}

/// The timestep embedding of one forward, per distinct row of [`TimestepRows`].
#[derive(Debug, Clone)]
pub struct TimeEmbedding {
    pub rows: TimestepRows,
    /// diffusers' `embedded_timestep` per row, (rows, D): what the final `norm_out` modulation
    /// reads and what TurboVSR adds its step-size embedding to (DESIGN §3.2).
    pub embedded: Tensor,
}

/// diffusers `AdaLayerNormSingle(use_additional_conditions=False)`: keys `time_embed.emb.
/// timestep_embedder.linear_{1,2}` and `time_embed.linear` (D -> 6 D).
#[derive(Debug, Clone)]
pub struct AdaLayerNormSingle {
    timestep_embedder: TimestepEmbedding,
    linear: Linear,
}

impl AdaLayerNormSingle {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            timestep_embedder: TimestepEmbedding::new(
                TIMESTEP_PROJ_DIM,
                dim,
                vb.pp("emb").pp("timestep_embedder"),
            )?,
            linear: Linear::new(dim, 6 * dim, true, vb.pp("linear"))?,
        })
    }

    /// `embedded_timestep` for each row: sinusoids (f32) cast to `dtype`, then the MLP.
    pub fn embed(&self, rows: TimestepRows, dtype: DType) -> Result<TimeEmbedding> {
        let device = rows.row_batch.device().clone();
        let proj = timestep_sinusoids(&rows.values, TIMESTEP_PROJ_DIM, &device)?.to_dtype(dtype)?;
        let embedded = self.timestep_embedder.forward(&proj)?;
        Ok(TimeEmbedding { rows, embedded })
    }

    /// The six AdaLN parameters of every block, per row: `linear(silu(embedded))`, (rows, 6 D).
    pub fn modulation(&self, embedded: &Tensor) -> Result<Tensor> {
        self.linear.forward(&embedded.silu()?)
    }
}

/// diffusers `PixArtAlphaTextProjection(act_fn="gelu_tanh")`: `linear_2(gelu_tanh(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct CaptionProjection {
    linear_1: Linear,
    linear_2: Linear,
}

impl CaptionProjection {
    pub fn new(in_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_dim, dim, true, vb.pp("linear_1"))?,
            linear_2: Linear::new(dim, dim, true, vb.pp("linear_2"))?,
        })
    }
}

impl Module for CaptionProjection {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2
            .forward(&gelu_tanh(&self.linear_1.forward(x)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_rows_dedupe_per_batch_and_value() -> Result<()> {
        let t = Tensor::new(
            &[[0f32, 0., 500., 500.], [0., 250., 250., 250.]],
            &Device::Cpu,
        )?;
        let rows = TimestepRows::new(&t, 2, 4)?;
        assert_eq!(rows.values, vec![0., 500., 0., 250.]);
        assert_eq!(rows.row_batch.to_vec1::<u32>()?, vec![0, 0, 1, 1]);
        assert_eq!(rows.index.to_vec1::<u32>()?, vec![0, 0, 1, 1, 2, 3, 3, 3]);
        let per_batch = TimestepRows::new(&Tensor::new(&[3f32, 3.], &Device::Cpu)?, 2, 4)?;
        assert_eq!(per_batch.tokens, 1);
        assert_eq!(per_batch.values.len(), 2);
        let err = TimestepRows::new(&t, 2, 5).unwrap_err().to_string();
        assert!(err.contains("timestep"), "{err}");
        Ok(())
    }

    #[test]
    fn sinusoids_are_cos_then_sin() -> Result<()> {
        let s = timestep_sinusoids(&[0.0, 1.0], 6, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(s[0], vec![1., 1., 1., 0., 0., 0.]);
        // frequencies 1, 10000^(-1/3), 10000^(-2/3)
        assert!((s[1][0] - 1f32.cos()).abs() < 1e-6);
        assert!((s[1][4] - (10000f32.powf(-1.0 / 3.0)).sin()).abs() < 1e-6);
        Ok(())
    }
}
