//! Training the denoiser (paper §3.3, §3.4, supplementary §6) on the latents of a trained VAE.
//!
//! - Objective: flow matching (`x_s = (1 - s) x0 + s eps`, target `v = eps - x0`, DESIGN §4)
//!   on one batch, the shortcut self-consistency loss on the next (paper eq. 4-5: one step of
//!   size `d` equals two steps of size `d/2`, the two-step target computed without gradient),
//!   alternating. `--objective flow` trains flow matching alone on every batch (the ablation).
//! - Non-uniform bootstrap paths (§3.4): a shortcut batch draws a step count N in
//!   {1, 2, ..., 64} and a step i of the *shifted* N-step schedule the sampler runs at
//!   inference (`schedule::noise_levels`); its real step `d = s_i - s_{i+1}` is split at the
//!   2N-step schedule's midpoint, so both halves are steps the sampler can take. The model is
//!   conditioned on the nearest trained step size (`nearest_step_size`) exactly as at inference.
//!   Flow-matching batches draw `s` from the same shifted distribution and condition on the
//!   smallest step size.
//! - Factorized conditioning as multi-task (§3.3): a batch is image SR of one frame, or video
//!   SR of 1 + 8k frames given the clean first-frame latent (per-token timestep 0, no loss on
//!   its tokens), as the element runs them.
//! - Condition noise augmentation (supplementary §6): with probability `cond_aug`, the
//!   condition latent is noised like a DDPM at a step drawn from 0..=300 (scaled-linear betas
//!   0.00085..0.012, 1000 steps).
//! - Caption-free: the prompt is one zero embedding, what the element uses without
//!   `prompt-embeds`.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::optim::{AdamW, AdamWConfig};
use super::params;
use super::run::RunDir;
use super::source::{step_seed, ClipSource, Normal};
use crate::model::autograd::AutogradScope;
use crate::model::transformer::{LtxTransformerConfig, RopePositions, TransformerInputs};
use crate::model::turbovsr::denoiser::{pack_latents, COND_EMBEDDER};
use crate::model::turbovsr::test_model::{transformer_shapes, write_json};
use crate::model::turbovsr::TurboVsrDenoiser;
use crate::model::vae::AutoencoderKlLtxVideo;
use crate::pipeline::resize::resize_bicubic;
use crate::sample::schedule::{
    default_step_sizes, nearest_step_size, noise_levels, plan, ShiftConfig,
};

/// Caption channels of the small model: it is trained caption-free (a zero prompt).
pub const CAPTION_CHANNELS: usize = 8;
/// Frame rate of the RoPE time axis (turbovsr.json `frame_rate`).
pub const FRAME_RATE: f64 = 25.0;

/// Spatial patch of the small transformer: a token is 2x2 latents (8x8 pixels with the small
/// VAE), `4 * latent_channels` values.
pub const PATCH: usize = 2;

/// `config.json` of the small transformer: LTX's block with 6 heads of 32, 4 layers. The width
/// (192) exceeds a token's values (128 with the small VAE), so the residual stream can carry
/// the noisy latent and the condition side by side.
pub fn small_transformer_config_json(latent_channels: usize) -> serde_json::Value {
    let token = latent_channels * PATCH * PATCH;
    json!({
        "_class_name": "LTXVideoTransformer3DModel",
        "_diffusers_version": "0.42.1",
        "in_channels": token,
        "out_channels": token,
        "patch_size": PATCH,
        "patch_size_t": 1,
        "num_attention_heads": 6,
        "attention_head_dim": 32,
        "cross_attention_dim": 192,
        "num_layers": 4,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": false,
        "norm_eps": 1e-6,
        "caption_channels": CAPTION_CHANNELS,
        "attention_bias": true,
        "attention_out_bias": true,
    })
}

/// Initial values: linears `N(0, 1/fan_in)`; the output projections of attention and
/// feed-forward and the final `proj_out` at zero, so every block starts as the identity and the
/// first prediction is 0 (DiT's adaLN-zero idea); LTX's `scale_shift_table`s `N(0, 1/D)`;
/// norms 1, biases 0.
pub fn denoiser_init(name: &str, shape: &[usize]) -> (f32, f32) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if leaf == "scale_shift_table" {
        let d = shape.last().copied().unwrap_or(1).max(1);
        return (0.0, 1.0 / (d as f32).sqrt());
    }
    if shape.len() <= 1 {
        let one = name.contains("norm") && leaf == "weight";
        return (if one { 1.0 } else { 0.0 }, 0.0);
    }
    if name.starts_with("proj_out") || name.contains("to_out.0") || name.contains("ff.net.2") {
        return (0.0, 0.0);
    }
    let fan_in: usize = shape[1..].iter().product();
    (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
}

/// Which losses a run trains.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Flow matching and shortcut self-consistency on alternating batches (the paper).
    Shortcut,
    /// Flow matching on every batch (the ablation's baseline; no step-size embedder).
    Flow,
    /// Fine-tuning on the sampler's own path: each batch runs the `n`-step schedule the element
    /// runs (`n` drawn from `trajectory_steps`) from noise, without gradient, up to a random
    /// step, and regresses the model's clean-latent prediction there (`x_s - s v`) on the true
    /// HR latent, weighted per channel by the decoder's pixel gain. The last step's prediction
    /// is the output, so the loss is the output's error at every step count trained.
    Trajectory,
}

/// Settings of a denoiser run (stored in its checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DenoiserTrainConfig {
    pub seed: u64,
    pub objective: Objective,
    pub batch: usize,
    /// Frames of a video-SR sample (1 + 8k).
    pub frames: usize,
    /// Share of image-SR batches (factorized conditioning's first task).
    pub image_share: f64,
    /// Fixed shift factor of the schedule, in training and in the exported turbovsr.json.
    pub shift: f64,
    /// Step sizes the model is conditioned on (nearest-neighbour selection).
    pub step_sizes: Vec<f64>,
    /// Largest step count whose steps the shortcut loss bootstraps (its halves come from 2N).
    pub max_bootstrap_steps: usize,
    /// Probability of the DDPM-style noise augmentation of the condition.
    pub cond_aug: f64,
    /// Largest DDPM step of that augmentation.
    pub cond_aug_max_t: usize,
    pub optim: AdamWConfig,
    pub checkpoint_every: usize,
    /// Starting weights of a new run.
    #[serde(default)]
    pub init: DenoiserInit,
    /// Smallest noise level a flow-matching batch draws (0: the whole range).
    #[serde(default)]
    pub min_level: f64,
    /// Step counts the trajectory objective trains (drawn uniformly per batch).
    #[serde(default = "default_trajectory_steps")]
    pub trajectory_steps: Vec<usize>,
    /// Name prefixes of the weights that train (empty: all); the others stay as initialised.
    #[serde(default)]
    pub trainable: Vec<String>,
}

fn default_trajectory_steps() -> Vec<usize> {
    vec![1, 2, 4]
}

/// Starting weights of a denoiser run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DenoiserInit {
    /// [`denoiser_init`]: the velocity starts at 0.
    #[default]
    Zero,
    /// [`condition_start`]: the velocity starts at `x_s - condition`, so that one step from
    /// noise returns the condition (the bicubic-upscaled input's latent).
    Condition,
    /// [`condition_start`] with the condition's per-token map fitted by least squares
    /// ([`fit_condition_map`]): the model starts as the best linear restoration within a token.
    Regression,
}

impl Default for DenoiserTrainConfig {
    fn default() -> Self {
        Self {
            seed: 2,
            objective: Objective::Shortcut,
            batch: 4,
            frames: 9,
            image_share: 0.5,
            shift: 2.0,
            step_sizes: default_step_sizes(),
            max_bootstrap_steps: 64,
            cond_aug: 0.5,
            cond_aug_max_t: 300,
            optim: AdamWConfig {
                lr: 5e-4,
                warmup: 100,
                ..AdamWConfig::default()
            },
            checkpoint_every: 50,
            init: DenoiserInit::Zero,
            min_level: 0.0,
            trajectory_steps: default_trajectory_steps(),
            trainable: Vec::new(),
        }
    }
}

/// A denoiser with trainable weights.
pub struct TrainableDenoiser {
    pub config: LtxTransformerConfig,
    pub config_json: serde_json::Value,
    pub varmap: candle_nn::VarMap,
    pub model: TurboVsrDenoiser,
}

impl TrainableDenoiser {
    pub fn new(latent_channels: usize, shortcut: bool, seed: u64) -> anyhow::Result<Self> {
        let config_json = small_transformer_config_json(latent_channels);
        let config: LtxTransformerConfig = serde_json::from_value(config_json.clone())?;
        let cond_channels = latent_channels * PATCH * PATCH;
        let shapes = transformer_shapes(&config, cond_channels, shortcut)?;
        let varmap = params::init_varmap(&shapes, &denoiser_init, seed)?;
        let model = TurboVsrDenoiser::new(
            &config,
            cond_channels,
            std::f64::consts::FRAC_1_SQRT_2,
            params::var_builder(&varmap),
        )?;
        Ok(Self {
            config,
            config_json,
            varmap,
            model,
        })
    }
}

/// Sets the weights so that the velocity starts at `x_s - cond` for every timestep: one Euler
/// step of size 1 from noise then returns the condition latent, i.e. the model starts as the
/// bicubic baseline and training learns what to add. The transformer's blocks are the identity
/// at this point (zero output projections, [`denoiser_init`]); the path is
///
/// - `proj_in`: the token's `C` values onto `C` orthonormal directions of the `D`-wide residual
///   stream, orthogonal to the all-ones direction (LayerNorm's mean) and to a bias direction
///   `d`; bias `beta d`;
/// - `cond_embedder`: minus the same map, the same bias; cross normalization then adds the two
///   streams (their statistics match up to the signal, which `beta` dominates), giving
///   `W (x_s - cond) + 2 beta d` (over sqrt 2);
/// - the final LayerNorm divides by a near-constant (`beta` again) and `proj_out`, `W^T` times
///   the inverse of that constant, maps back;
/// - the final modulation table and the step-size embedder's last layer start at zero, the
///   timestep embedder's last layer is fitted so that the final scale is `1/s` (below), and
///   the blocks' modulation map from it starts at zero.
///
/// Exact up to LayerNorm's per-token gain (a few percent) and the fit of the timestep gain.
pub fn condition_start(dn: &TrainableDenoiser, seed: u64, shift: f64) -> anyhow::Result<()> {
    let d = dn.config.inner_dim();
    let c = dn.config.in_channels;
    if c + 2 > d {
        anyhow::bail!("condition start: {c} token values do not fit a {d}-wide stream with room");
    }
    // orthonormal basis: ones / sqrt(d), the bias direction, then c directions for the signal
    let mut rng = Normal::new(seed ^ 0xC0DE);
    let mut basis: Vec<Vec<f64>> = vec![vec![1.0 / (d as f64).sqrt(); d]];
    while basis.len() < c + 2 {
        let mut v: Vec<f64> = (0..d).map(|_| rng.uniform() - 0.5).collect();
        for b in &basis {
            let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-6 {
            basis.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    let dir = &basis[1];
    let w = &basis[2..]; // c columns of the (d, c) map, each of length d
                         // beta: a few times a token's typical norm (unit-variance values: sqrt(c))
    let beta = 4.0 * (c as f64).sqrt();
    let gain = 2.0 * beta / (d as f64).sqrt();
    let dev = Device::Cpu;
    let mat = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f64| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| f(i / cols, i % cols) as f32)
            .collect();
        Tensor::from_vec(v, (rows, cols), &dev)
    };
    let vars = params::sorted_vars(&dn.varmap)?;
    let set = |name: &str, value: Tensor| -> anyhow::Result<()> {
        let var = params::named(&vars, name, "condition start: the denoiser")?;
        let value = value.reshape(var.shape())?;
        var.set(&value)?;
        Ok(())
    };
    let zero = |name: &str| -> anyhow::Result<()> {
        if let Ok(v) = params::named(&vars, name, "") {
            v.set(&v.zeros_like()?)?;
        }
        Ok(())
    };
    let bias: Vec<f32> = dir.iter().map(|x| (beta * x) as f32).collect();
    set("proj_in.weight", mat(d, c, &|i, j| w[j][i])?)?;
    set("proj_in.bias", Tensor::from_vec(bias.clone(), d, &dev)?)?;
    set(
        &format!("{}.weight", COND_EMBEDDER),
        mat(d, c, &|i, j| -w[j][i])?,
    )?;
    set(
        &format!("{}.bias", COND_EMBEDDER),
        Tensor::from_vec(bias, d, &dev)?,
    )?;
    set("proj_out.weight", mat(c, d, &|i, j| gain * w[i][j])?)?;
    zero("proj_out.bias")?;
    zero("scale_shift_table")?;
    for p in ["weight", "bias"] {
        zero(&format!("time_embed.emb.step_embedder.linear_2.{p}"))?;
        // The blocks' modulation from the timestep embedding: that embedding is large here
        // (`1/s - 1` in every channel, below), so a random map would make every block's scale,
        // shift and gate swing with the noise level. At zero the blocks see only their own
        // tables: what they learn adds to the clean-latent prediction `x_s - s v` alike at
        // every noise level (the final gain `1/s` and the step's `s` cancel).
        zero(&format!("time_embed.linear.{p}"))?;
    }
    // The timestep embedding is added to the final LayerNorm's scale (and shift, which proj_out
    // cancels: the ones direction is outside W). Its last layer is fitted, every output
    // channel alike, to 1/s - 1 so that the velocity is (x_s - cond) / s: the Euler step from s
    // to s' then lands on s'/s x_s + (1 - s'/s) cond, the condition at s' = 0 for any schedule.
    let what = "condition start: the denoiser";
    let w1 = params::named(
        &vars,
        "time_embed.emb.timestep_embedder.linear_1.weight",
        what,
    )?;
    let b1 = params::named(
        &vars,
        "time_embed.emb.timestep_embedder.linear_1.bias",
        what,
    )?;
    // A dense grid, and the levels the sampler visits with this shift weighted 50 times each:
    // there the fit is close to exact (at s = 1, where the input is all noise, an error of the
    // gain leaves that much of the noise in the prediction).
    let mut grid: Vec<f64> = (0..400).map(|i| 0.02 + 0.98 * i as f64 / 399.0).collect();
    for n in crate::sample::schedule::VALID_STEPS {
        for &level in &noise_levels(n, shift)[..n] {
            grid.extend(std::iter::repeat_n(level, 50));
        }
    }
    let ts: Vec<f32> = grid.iter().map(|&s| (1000.0 * s) as f32).collect();
    let proj = crate::model::transformer::embeddings::timestep_sinusoids(
        &ts,
        crate::model::transformer::embeddings::TIMESTEP_PROJ_DIM,
        &dev,
    )?;
    let phi = proj
        .matmul(&w1.as_tensor().t()?)?
        .broadcast_add(b1.as_tensor())?
        .silu()?; // (N, d)
    let phi: Vec<Vec<f32>> = phi.to_vec2()?;
    let target: Vec<f64> = grid
        .iter()
        .map(|&s| 1.0 / s.max(GAIN_FLOOR_S) - 1.0)
        .collect();
    let coef = least_squares(&phi, &target)?; // d weights, then the bias
    let row: Vec<f64> = coef[..d].to_vec();
    set(
        "time_embed.emb.timestep_embedder.linear_2.weight",
        mat(d, d, &|_, j| row[j])?,
    )?;
    set(
        "time_embed.emb.timestep_embedder.linear_2.bias",
        Tensor::from_vec(vec![coef[d] as f32; d], d, &dev)?,
    )?;
    Ok(())
}

/// Below this noise level the condition start's velocity gain stays at `1 / GAIN_FLOOR_S` (the
/// 16-step schedule's last level with shift 2 is 0.118).
const GAIN_FLOOR_S: f64 = 0.1;

/// Ridge-regularized least squares `min |[x 1] c - y|` (`x` rows of features, a constant column
/// appended), by Gaussian elimination on the normal equations.
fn least_squares(x: &[Vec<f32>], y: &[f64]) -> anyhow::Result<Vec<f64>> {
    let k = x.first().map(|r| r.len()).unwrap_or(0) + 1;
    let mut a = vec![0f64; k * k];
    let mut b = vec![0f64; k];
    for (row, &t) in x.iter().zip(y) {
        let f: Vec<f64> = row.iter().map(|&v| v as f64).chain([1.0]).collect();
        for i in 0..k {
            b[i] += f[i] * t;
            for j in 0..k {
                a[i * k + j] += f[i] * f[j];
            }
        }
    }
    solve_normal_equations(a, b, k, 1, 1e-8)
}

/// Solves `(A + ridge tr(A)/k I) C = B` for the `k x k` Gram matrix `A` and `k x m` right-hand
/// sides `B` (row-major) by Gaussian elimination with partial pivoting; returns `C` (`k x m`).
pub(crate) fn solve_normal_equations(
    mut a: Vec<f64>,
    mut b: Vec<f64>,
    k: usize,
    m: usize,
    ridge: f64,
) -> anyhow::Result<Vec<f64>> {
    let trace: f64 = (0..k).map(|i| a[i * k + i]).sum();
    for i in 0..k {
        a[i * k + i] += ridge * trace / k as f64;
    }
    for col in 0..k {
        let piv = (col..k)
            .max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs()))
            .unwrap_or(col);
        if a[piv * k + col].abs() < 1e-300 {
            anyhow::bail!("least squares: singular normal equations (column {col} of {k})");
        }
        if piv != col {
            for j in 0..k {
                a.swap(piv * k + j, col * k + j);
            }
            for j in 0..m {
                b.swap(piv * m + j, col * m + j);
            }
        }
        for i in col + 1..k {
            let f = a[i * k + col] / a[col * k + col];
            for j in col..k {
                a[i * k + j] -= f * a[col * k + j];
            }
            for j in 0..m {
                b[i * m + j] -= f * b[col * m + j];
            }
        }
    }
    let mut c = vec![0f64; k * m];
    for i in (0..k).rev() {
        for j in 0..m {
            let rest: f64 = (i + 1..k).map(|l| a[i * k + l] * c[l * m + j]).sum();
            c[i * m + j] = (b[i * m + j] - rest) / a[i * k + i];
        }
    }
    Ok(c)
}

/// Batches (alternately single frames and `frames`-frame clips) the condition map is fitted on.
pub const FIT_BATCHES: usize = 32;

/// After [`condition_start`]: replaces the identity on the condition by the per-token affine map
/// `M c + m` that best predicts the clean HR tokens from the condition's (least squares over
/// [`FIT_BATCHES`] training batches, without the condition's noise augmentation), written into
/// `cond_embedder`: every schedule then returns `M cond + m` instead of `cond`. A token is an
/// 8x8-pixel patch, so this is the best linear restoration of the bicubic upscale within a
/// token (deblurring and denoising it); the blocks learn the rest. Returns the in-sample
/// squared error of the fit relative to the identity's.
pub fn fit_condition_map(
    dn: &TrainableDenoiser,
    vae: &AutoencoderKlLtxVideo,
    source: &dyn ClipSource,
    cfg: &DenoiserTrainConfig,
) -> anyhow::Result<f64> {
    let ct = dn.config.in_channels;
    let k = ct + 1;
    let dev = Device::Cpu;
    let mut xtx = Tensor::zeros((k, k), DType::F64, &dev)?;
    let mut xty = Tensor::zeros((k, ct), DType::F64, &dev)?;
    let (mut yy, mut identity_err) = (0f64, 0f64);
    for i in 0..FIT_BATCHES {
        let frames = if i % 2 == 0 { 1 } else { cfg.frames };
        let seed = step_seed(cfg.seed ^ 0xF17_5EED, i);
        let (x0, cond) = encode_batch(vae, source, cfg.batch, frames, seed)?;
        let rows = |z: &Tensor| -> anyhow::Result<Tensor> {
            Ok(pack_latents(z, PATCH, 1)?
                .reshape(((), ct))?
                .to_dtype(DType::F64)?)
        };
        let (y, c) = (rows(&x0)?, rows(&cond)?);
        let x = Tensor::cat(&[&c, &Tensor::ones((c.dim(0)?, 1), DType::F64, &dev)?], 1)?;
        xtx = (xtx + x.t()?.matmul(&x)?)?;
        xty = (xty + x.t()?.matmul(&y)?)?;
        yy += y.sqr()?.sum_all()?.to_scalar::<f64>()?;
        identity_err += (&y - &c)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    let a: Vec<f64> = xtx.flatten_all()?.to_vec1()?;
    let b: Vec<f64> = xty.flatten_all()?.to_vec1()?;
    let coef = solve_normal_equations(a, b, k, ct, 1e-6)?;
    let coef_t = Tensor::from_vec(coef, (k, ct), &dev)?;
    // in-sample error of the fit: |y|^2 - 2 tr(C^T X^T Y) + tr(C^T X^T X C)
    let fit_err = yy - 2.0 * (&coef_t * &xty)?.sum_all()?.to_scalar::<f64>()?
        + (xtx.matmul(&coef_t)? * &coef_t)?
            .sum_all()?
            .to_scalar::<f64>()?;
    // y = c C[..ct] + C[ct]: M = C[..ct]^T, m = C[ct]
    let coef_t = coef_t.to_dtype(DType::F32)?;
    let map = coef_t.narrow(0, 0, ct)?.t()?;
    let offset = coef_t.narrow(0, ct, 1)?.flatten_all()?;
    set_condition_map(dn, &map, &offset)?;
    Ok(fit_err / identity_err.max(f64::MIN_POSITIVE))
}

/// After [`condition_start`]: makes every schedule return `map cond + offset` instead of `cond`
/// (`map` (C, C), `offset` (C,), on packed tokens): `cond_embedder`, `-W` there, becomes
/// `-W map` and its bias gains `-W offset`.
pub fn set_condition_map(
    dn: &TrainableDenoiser,
    map: &Tensor,
    offset: &Tensor,
) -> anyhow::Result<()> {
    let vars = params::sorted_vars(&dn.varmap)?;
    let what = "condition map: the denoiser";
    let w = params::named(&vars, &format!("{COND_EMBEDDER}.weight"), what)?;
    let bias = params::named(&vars, &format!("{COND_EMBEDDER}.bias"), what)?;
    let w_old = w.as_tensor().clone();
    let ct = w_old.dim(1)?;
    if map.dims() != [ct, ct] || offset.dims() != [ct] {
        anyhow::bail!(
            "condition map: expected a ({ct}, {ct}) map and ({ct},) offset, got {:?} and {:?}",
            map.dims(),
            offset.dims()
        );
    }
    let new_bias = (bias.as_tensor() + w_old.matmul(&offset.reshape((ct, 1))?)?.flatten_all()?)?;
    w.set(&w_old.matmul(map)?)?;
    bias.set(&new_bias)?;
    Ok(())
}

/// One training batch in normalized latents: `x0` (clean HR) and `cond` (the LR clip,
/// bicubic-upscaled to the HR size and encoded, as the element does), `(B, C, t, h, w)`.
pub fn encode_batch(
    vae: &AutoencoderKlLtxVideo,
    source: &dyn ClipSource,
    batch: usize,
    frames: usize,
    seed: u64,
) -> anyhow::Result<(Tensor, Tensor)> {
    let (h, w) = source.size();
    let mut hr = Vec::with_capacity(batch);
    let mut lr = Vec::with_capacity(batch);
    for i in 0..batch {
        let (hr_clip, lr_clip) = source.clip(frames, seed.wrapping_add(i as u64 * 7919))?;
        hr.push(((hr_clip * 2.0)? - 1.0)?);
        lr.push(((resize_bicubic(&lr_clip, h, w)? * 2.0)? - 1.0)?);
    }
    let enc = |clips: Vec<Tensor>| -> anyhow::Result<Tensor> {
        let x = Tensor::stack(&clips, 0)?;
        Ok(vae.normalize_latents(&vae.encode(&x)?.mean)?)
    };
    Ok((enc(hr)?, enc(lr)?))
}

/// `alpha_bar` of Stable Diffusion's scaled-linear DDPM schedule at step `t` of 1000.
pub fn ddpm_alpha_bar(t: usize) -> f64 {
    let (b0, b1) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    (0..=t.min(999))
        .map(|i| {
            let beta = (b0 + (b1 - b0) * i as f64 / 999.0).powi(2);
            1.0 - beta
        })
        .product()
}

/// The denoiser bound to one batch's condition, prompt and token grid.
struct Bound<'a> {
    model: &'a TurboVsrDenoiser,
    cond: Tensor,
    prompt: Tensor,
    mask: Tensor,
    video_shape: (usize, usize, usize),
    rope: [f32; 3],
}

impl Bound<'_> {
    fn velocity(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        step_size: f64,
    ) -> candle_core::Result<Tensor> {
        let inputs = TransformerInputs {
            hidden_states: x,
            encoder_hidden_states: &self.prompt,
            timestep,
            encoder_attention_mask: Some(&self.mask),
            video_shape: self.video_shape,
            positions: RopePositions::Grid {
                rope_interpolation_scale: Some(self.rope),
            },
        };
        self.model.forward(&inputs, &self.cond, step_size)
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub loss: f32,
    pub shortcut: bool,
    pub frames: usize,
    pub grad_norm: f64,
}

impl StepReport {
    /// The loss this step trained, for the log.
    fn kind(&self, objective: Objective) -> &'static str {
        match objective {
            Objective::Trajectory => "trajectory",
            _ if self.shortcut => "shortcut",
            _ => "flow",
        }
    }
}

/// Builds one step's loss and updates the weights.
fn train_step(
    dn: &TrainableDenoiser,
    vae: &AutoencoderKlLtxVideo,
    source: &dyn ClipSource,
    cfg: &DenoiserTrainConfig,
    opt: &mut AdamW,
    step: usize,
    gains: Option<&Tensor>,
) -> anyhow::Result<StepReport> {
    let seed = step_seed(cfg.seed, step);
    let mut rng = Normal::new(seed ^ 0xD1FF);
    let frames = if rng.uniform() < cfg.image_share {
        1
    } else {
        cfg.frames
    };
    let (x0, cond) = encode_batch(vae, source, cfg.batch, frames, seed)?;
    let (b, c, t, h, w) = x0.dims5()?;
    let p = PATCH;
    let n = t * (h / p) * (w / p);
    let first = if t > 1 { (h / p) * (w / p) } else { 0 };
    // condition augmentation, per sample
    let mut conds = Vec::with_capacity(b);
    for i in 0..b {
        let ci = cond.narrow(0, i, 1)?;
        conds.push(if rng.uniform() < cfg.cond_aug {
            let ab = ddpm_alpha_bar((rng.uniform() * (cfg.cond_aug_max_t + 1) as f64) as usize);
            ((ci * ab.sqrt())? + (rng.tensor(&[1, c, t, h, w])? * (1.0 - ab).sqrt())?)?
        } else {
            ci
        });
    }
    let cond = Tensor::cat(&conds, 0)?;
    let bound = Bound {
        model: &dn.model,
        cond: pack_latents(&cond, p, 1)?,
        prompt: Tensor::zeros((b, 1, CAPTION_CHANNELS), DType::F32, &Device::Cpu)?,
        mask: Tensor::ones((b, 1), DType::F32, &Device::Cpu)?,
        video_shape: (t, h / p, w / p),
        rope: [
            (vae.config().temporal_compression() as f64 / FRAME_RATE) as f32,
            vae.config().spatial_compression() as f32,
            vae.config().spatial_compression() as f32,
        ],
    };
    let x0 = pack_latents(&x0, p, 1)?; // (b, n, c p p)
    let c = c * p * p;
    let eps = rng.tensor(&[b, n, c])?;
    // tokens of the clean first frame: not noised, timestep 0, no loss
    let noisy_mask = {
        let mut m = vec![1f32; n];
        m[..first].fill(0.0);
        Tensor::from_vec(m, (1, n, 1), &Device::Cpu)?
    };
    if cfg.objective == Objective::Trajectory {
        let weights =
            gains.context("the trajectory objective needs the decoder's channel gains")?;
        let traj = Trajectory {
            bound: &bound,
            x0: &x0,
            eps: &eps,
            noisy_mask: &noisy_mask,
            first,
            weights,
        };
        let (loss, grads) = traj.loss(cfg, &mut rng)?;
        let grad_norm = opt.update(&grads)?;
        return Ok(StepReport {
            loss,
            shortcut: false,
            frames,
            grad_norm,
        });
    }
    let shortcut = cfg.objective == Objective::Shortcut && step % 2 == 1;
    let d_min = cfg.step_sizes.iter().copied().fold(1.0, f64::min);
    let nearest = |d: f64| nearest_step_size(d, &cfg.step_sizes).unwrap_or(d);
    // per-sample noise level s (b,), the model's step size, and the target
    let (s, d_model, target) = if shortcut {
        let levels = (cfg.max_bootstrap_steps.max(1) as f64).log2().floor() as u32;
        let big_n = 1usize << ((rng.uniform() * (levels + 1) as f64) as u32).min(levels);
        let i = ((rng.uniform() * big_n as f64) as usize).min(big_n - 1);
        let fine = noise_levels(2 * big_n, cfg.shift);
        let (s0, s_mid, s1) = (fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]);
        let (d1, d2, d) = (s0 - s_mid, s_mid - s1, s0 - s1);
        let s = vec![s0; b];
        let xs = noisy(&x0, &eps, &s, &noisy_mask)?;
        // the two half steps, without gradient (the fused inference kernels)
        let ts0 = timesteps(&s, n, first)?;
        let v1 = bound.velocity(&xs, &ts0, nearest(d1))?.detach();
        let x_mid = (&xs - v1.broadcast_mul(&noisy_mask)?.affine(d1, 0.0)?)?;
        let ts_mid = timesteps(&vec![s_mid; b], n, first)?;
        let v2 = bound.velocity(&x_mid, &ts_mid, nearest(d2))?.detach();
        let target = ((v1.affine(d1, 0.0)? + v2.affine(d2, 0.0)?)? / d)?;
        (s, nearest(d), target)
    } else {
        let s: Vec<f64> = (0..b)
            .map(|_| {
                let u = rng.uniform().clamp(1e-4, 1.0);
                let level = cfg.shift * u / (1.0 + (cfg.shift - 1.0) * u);
                level.max(cfg.min_level)
            })
            .collect();
        (s, d_min, (&eps - &x0)?)
    };
    let xs = noisy(&x0, &eps, &s, &noisy_mask)?;
    let ts = timesteps(&s, n, first)?;
    let (loss, grads) = {
        let _scope = AutogradScope::enter();
        let v = bound.velocity(&xs, &ts, d_model)?;
        let err = (v - &target)?.broadcast_mul(&noisy_mask)?.sqr()?;
        let loss = (err.sum_all()? / (b * (n - first) * c) as f64)?;
        let grads = loss.backward()?;
        (loss.to_scalar::<f32>()?, grads)
    };
    let grad_norm = opt.update(&grads)?;
    Ok(StepReport {
        loss,
        shortcut,
        frames,
        grad_norm,
    })
}

/// One batch of [`Objective::Trajectory`].
struct Trajectory<'a> {
    bound: &'a Bound<'a>,
    /// Packed clean latents (b, n, c) and the noise the path starts from.
    x0: &'a Tensor,
    eps: &'a Tensor,
    /// (1, n, 1): 0 on the clean first frame's tokens.
    noisy_mask: &'a Tensor,
    first: usize,
    /// (c,) loss weight of each packed channel.
    weights: &'a Tensor,
}

impl Trajectory<'_> {
    /// The weighted squared error of the clean-latent prediction at a random step of a random
    /// step count's schedule, and its gradients.
    fn loss(
        &self,
        cfg: &DenoiserTrainConfig,
        rng: &mut Normal,
    ) -> anyhow::Result<(f32, candle_core::backprop::GradStore)> {
        let (b, n, c) = self.x0.dims3()?;
        let counts = &cfg.trajectory_steps;
        if counts.is_empty() {
            anyhow::bail!("the trajectory objective needs at least one step count");
        }
        let steps_n =
            counts[((rng.uniform() * counts.len() as f64) as usize).min(counts.len() - 1)];
        let schedule = plan(steps_n, n, &ShiftConfig::Fixed(cfg.shift), &cfg.step_sizes)?;
        let at = ((rng.uniform() * steps_n as f64) as usize).min(steps_n - 1);
        // the path up to step `at`, as the sampler runs it (fast kernels, no gradient)
        let mut x = noisy(self.x0, self.eps, &vec![1.0; b], self.noisy_mask)?;
        for st in &schedule[..at] {
            let ts = timesteps(&vec![st.s; b], n, self.first)?;
            let v = self.bound.velocity(&x, &ts, st.d_model)?.detach();
            x = (&x - v.broadcast_mul(self.noisy_mask)?.affine(st.d, 0.0)?)?;
        }
        let st = schedule[at];
        let ts = timesteps(&vec![st.s; b], n, self.first)?;
        let _scope = AutogradScope::enter();
        let v = self.bound.velocity(&x, &ts, st.d_model)?;
        let x0_pred = (&x - v.affine(st.s, 0.0)?)?;
        let err = (x0_pred - self.x0)?
            .broadcast_mul(self.noisy_mask)?
            .sqr()?
            .broadcast_mul(&self.weights.reshape((1, 1, c))?)?;
        let loss = (err.sum_all()? / (b * (n - self.first) * c) as f64)?;
        let grads = loss.backward()?;
        Ok((loss.to_scalar::<f32>()?, grads))
    }
}

/// The pixel energy a unit change of each normalized latent channel makes through the decoder
/// (finite difference at the latent mean, one latent position), scaled to mean 1: the weights
/// that make a latent-space squared error approximate the pixel-space one.
pub fn decoder_channel_gains(vae: &AutoencoderKlLtxVideo) -> anyhow::Result<Tensor> {
    let c = vae.config().latent_channels;
    let (k, delta) = (3usize, 0.5f64);
    let at_mean = Tensor::zeros((1, c, 1, k, k), DType::F32, &Device::Cpu)?;
    let base = vae.decode(&vae.denormalize_latents(&at_mean)?, None)?;
    let mut gains = Vec::with_capacity(c);
    for ch in 0..c {
        let mut v = vec![0f32; c * k * k];
        v[ch * k * k + k * k / 2] = delta as f32; // the centre position
        let z = Tensor::from_vec(v, (1, c, 1, k, k), &Device::Cpu)?;
        let out = vae.decode(&vae.denormalize_latents(&z)?, None)?;
        let e = (out - &base)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        gains.push(e / (delta * delta));
    }
    let mean = gains.iter().sum::<f64>() / c as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        anyhow::bail!("the VAE decoder's channel gains are degenerate (mean {mean})");
    }
    let gains: Vec<f32> = gains.iter().map(|g| (g / mean) as f32).collect();
    Ok(Tensor::from_vec(gains, c, &Device::Cpu)?)
}

/// `x_s = (1 - s) x0 + s eps` on the noisy tokens, `x0` on the clean ones.
fn noisy(x0: &Tensor, eps: &Tensor, s: &[f64], noisy_mask: &Tensor) -> candle_core::Result<Tensor> {
    let b = s.len();
    let s_t = Tensor::from_vec(
        s.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (b, 1, 1),
        &Device::Cpu,
    )?;
    let s_tok = s_t.broadcast_mul(noisy_mask)?; // (b, n, 1): 0 on clean tokens
    let keep = (1.0 - &s_tok)?;
    x0.broadcast_mul(&keep)? + eps.broadcast_mul(&s_tok)?
}

/// Per-token timesteps `1000 s` (b, n), 0 on the first `first` tokens.
fn timesteps(s: &[f64], n: usize, first: usize) -> candle_core::Result<Tensor> {
    let mut v = Vec::with_capacity(s.len() * n);
    for &si in s {
        v.extend(std::iter::repeat_n(0f32, first));
        v.extend(std::iter::repeat_n((1000.0 * si) as f32, n - first));
    }
    Tensor::from_vec(v, (s.len(), n), &Device::Cpu)
}

/// Trains for `steps` steps in total, resuming from `run`'s checkpoint when there is one.
pub fn train_denoiser(
    source: &dyn ClipSource,
    vae: &AutoencoderKlLtxVideo,
    run: &RunDir,
    cfg: &DenoiserTrainConfig,
    steps: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<TrainableDenoiser> {
    let latent_channels = vae.config().latent_channels;
    let dn = TrainableDenoiser::new(latent_channels, cfg.objective != Objective::Flow, cfg.seed)?;
    let vars: Vec<_> = params::sorted_vars(&dn.varmap)?
        .into_iter()
        .filter(|(name, _)| {
            cfg.trainable.is_empty() || cfg.trainable.iter().any(|p| name.starts_with(p.as_str()))
        })
        .collect();
    if vars.is_empty() {
        anyhow::bail!(
            "no denoiser weight name starts with any of {:?} (trainable prefixes)",
            cfg.trainable
        );
    }
    let mut opt = AdamW::new(vars, cfg.optim)?;
    let settings = json!({"kind": "denoiser", "config": cfg, "transformer": dn.config_json,
                          "size": source.size(), "scale": source.scale()});
    let start = run.resume(&dn.varmap, &mut opt, &settings)?;
    if start > 0 {
        progress(&format!("resuming from step {start}"));
    } else if cfg.init != DenoiserInit::Zero {
        condition_start(&dn, cfg.seed, cfg.shift)?;
        if cfg.init == DenoiserInit::Regression {
            let rel = fit_condition_map(&dn, vae, source, cfg)?;
            progress(&format!(
                "condition map fitted on {FIT_BATCHES} batches: squared error {:.1} % of the \
                 identity's (in sample)",
                100.0 * rel
            ));
        }
    }
    progress(&format!(
        "denoiser: {} parameters, objective {:?}",
        params::count(&dn.varmap),
        cfg.objective
    ));
    // the trajectory loss's weights in packed (c, p, p) order: each channel's gain on its p x p
    // values
    let gains = match cfg.objective {
        Objective::Trajectory => {
            let g = decoder_channel_gains(vae)?;
            Some(
                g.reshape((g.dim(0)?, 1))?
                    .repeat((1, PATCH * PATCH))?
                    .flatten_all()?,
            )
        }
        _ => None,
    };
    let t0 = Instant::now();
    for step in start..steps {
        let r = train_step(&dn, vae, source, cfg, &mut opt, step, gains.as_ref())?;
        run.log(
            "step,objective,frames,loss,grad_norm,lr,seconds",
            &format!(
                "{},{},{},{:.6},{:.4},{:.2e},{:.1}",
                step + 1,
                r.kind(cfg.objective),
                r.frames,
                r.loss,
                r.grad_norm,
                opt.lr(),
                t0.elapsed().as_secs_f64()
            ),
        )?;
        if (step + 1) % 10 == 0 {
            progress(&format!(
                "step {}/{steps} {} loss {:.4} |g| {:.3} ({:.2} s/step)",
                step + 1,
                r.kind(cfg.objective),
                r.loss,
                r.grad_norm,
                t0.elapsed().as_secs_f64() / (step + 1 - start) as f64
            ));
        }
        if (step + 1) % cfg.checkpoint_every == 0 || step + 1 == steps {
            run.save(
                &dn.varmap,
                &opt,
                &json!({"step": step + 1, "settings": settings}),
            )?;
        }
    }
    Ok(dn)
}

/// Writes a complete checkpoint folder (DESIGN §3.3): `vae/` copied from `vae_dir`,
/// `transformer/` with the trained weights in `dtype`, and `turbovsr.json` with the schedule
/// the model was trained with and its training tile in latents (`[frames, height, width]`, the
/// element's default denoising tile).
pub fn export_model(
    dn: &TrainableDenoiser,
    cfg: &DenoiserTrainConfig,
    vae_dir: &Path,
    out: &Path,
    tile: [usize; 3],
    dtype: DType,
) -> anyhow::Result<()> {
    let vae_out = out.join("vae");
    let tf_out = out.join("transformer");
    for d in [&vae_out, &tf_out] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(vae_dir.join(f), vae_out.join(f))
            .with_context(|| format!("copying {}", vae_dir.join(f).display()))?;
    }
    write_json(&tf_out.join("config.json"), &dn.config_json)?;
    params::save(
        &dn.varmap,
        &tf_out.join("diffusion_pytorch_model.safetensors"),
        dtype,
    )?;
    let mut config = json!({
        "scale": 4,
        "shift": cfg.shift,
        "cond_scale": std::f64::consts::FRAC_1_SQRT_2,
        "frame_rate": FRAME_RATE,
        "tile": tile,
    });
    if cfg.objective != Objective::Flow {
        config["step_sizes"] = json!(cfg.step_sizes);
    }
    write_json(
        &out.join(crate::model::turbovsr::config::CONFIG_FILE),
        &config,
    )?;
    Ok(())
}
