//! Training the small VAE of a CPU-sized TurboVSR: LTX-Video's architecture (DESIGN §3.1) with a
//! small configuration, as an autoencoder on high-resolution clips and on the bicubic-upscaled
//! degraded clips the element encodes as its condition.
//!
//! Compression: space by 4 (LTX's `patch_size` 4 patchify, no strided block), time by 1, into
//! 32 channels per 4x4 pixel patch (48 values): 1/1.5 of the values. LTX-Video's own 32x32x8
//! keeps 1/192; a CPU-trained model cannot fill in what such a bottleneck loses, and the
//! element's output is never better than the VAE's reconstruction (an 8x8x8 into 64 channels
//! variant stalled at 15 dB after 1100 steps, BENCHMARKS.md). The transformer patchifies the
//! latent by 2 (`patch_size` 2), so one token still covers 8x8 pixels of one frame.
//!
//! Start: `--init pca` sets the weights to the principal-component autoencoder of the training
//! patches ([`super::pca_init`]; 48.5 dB before any step), `--init he` to random weights (24 dB
//! after 600 steps of 16 + 4 crops). The shipped default model uses the principal-component
//! weights as they are: Adam steps from them lowered the reconstruction (48.0 -> 47.1 dB after
//! 30 steps at a learning rate of 3e-6, 30.2 dB after 2 steps at 8e-6; BENCHMARKS.md).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::optim::{AdamW, AdamWConfig};
use super::params;
use super::run::RunDir;
use super::source::{step_seed, ClipSource, Normal};
use crate::model::autograd::AutogradScope;
use crate::model::turbovsr::test_model::{vae_shapes, write_json};
use crate::model::vae::{AutoencoderKlLtxVideo, VaeConfig};
use crate::pipeline::resize::resize_bicubic;

/// Latent channels of the small VAE.
pub const LATENT_CHANNELS: usize = 32;

/// `config.json` of the small VAE (diffusers `AutoencoderKLLTXVideo` keys, 0.9.1 blocks).
pub fn small_vae_config_json() -> serde_json::Value {
    json!({
        "_class_name": "AutoencoderKLLTXVideo",
        "_diffusers_version": "0.42.1",
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": LATENT_CHANNELS,
        "block_out_channels": [64],
        "down_block_types": ["LTXVideoDownBlock3D"],
        "decoder_block_out_channels": [64],
        // one resnet in the down block and one in the mid block, the same in the decoder; all
        // at the patch grid (a quarter of the pixels in each direction)
        "layers_per_block": [1, 1],
        "decoder_layers_per_block": [1, 1],
        "spatio_temporal_scaling": [false],
        "decoder_spatio_temporal_scaling": [false],
        "decoder_inject_noise": [false, false],
        "downsample_type": ["conv"],
        "upsample_residual": [false],
        "upsample_factor": [1],
        "timestep_conditioning": false,
        "patch_size": 4,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "scaling_factor": 1.0,
        "encoder_causal": true,
        "decoder_causal": false,
    })
}

/// Initial bias of the encoder's and the decoder's first convolution. LTX's blocks normalize
/// every position's feature vector to unit RMS (resnet norms, the final norms): with a zero
/// bias that division discards each patch's brightness and contrast, which the network then
/// has to recover from directions alone (an earlier run stalled with a colour offset). A
/// constant offset larger than the signal keeps the norms in their near-linear range at the
/// start.
pub const CONV_IN_BIAS: f32 = 2.0;

/// Initial values for training: convolutions and linears He-normal for the SiLU that precedes
/// them, a resnet's second convolution scaled by 0.1 (each resnet starts close to identity),
/// norms at 1, biases at 0.
pub fn vae_init(name: &str, shape: &[usize]) -> (f32, f32) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if leaf == "latents_std" {
        return (1.0, 0.0);
    }
    if shape.len() <= 1 {
        if name.ends_with("conv_in.conv.bias") {
            let b = std::env::var("PROBE_BIAS")
                .ok()
                .and_then(|v| v.parse().ok());
            return (b.unwrap_or(CONV_IN_BIAS), 0.0);
        }
        let one = name.contains("norm") && leaf == "weight";
        return (if one { 1.0 } else { 0.0 }, 0.0);
    }
    let fan_in: usize = shape[1..].iter().product();
    let std = (2.0 / fan_in.max(1) as f32).sqrt();
    let std = if name.contains("conv2") {
        0.1 * std
    } else {
        std
    };
    (0.0, std)
}

/// Settings of a VAE run (stored in its checkpoint: a resumed run must use the same).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VaeTrainConfig {
    pub seed: u64,
    /// Still images per image batch.
    pub image_batch: usize,
    /// Clips per video batch (batches alternate: image, video, image, ...).
    pub video_batch: usize,
    /// Frames of a video clip (1 + 8k).
    pub frames: usize,
    /// Probability that a sample is the bicubic-upscaled degraded clip instead of the original.
    pub degraded_share: f64,
    pub optim: AdamWConfig,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Starting weights of a new run.
    #[serde(default)]
    pub init: VaeInit,
}

/// Starting weights of a VAE run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VaeInit {
    /// He-normal convolutions ([`vae_init`]).
    #[default]
    He,
    /// The principal-component autoencoder of the training patches ([`super::pca_init`]).
    Pca,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            image_batch: 8,
            video_batch: 2,
            frames: 9,
            degraded_share: 0.3,
            optim: AdamWConfig {
                lr: 1e-3,
                warmup: 50,
                ..AdamWConfig::default()
            },
            checkpoint_every: 50,
            init: VaeInit::He,
        }
    }
}

/// A VAE with trainable weights.
pub struct TrainableVae {
    pub config: VaeConfig,
    pub varmap: candle_nn::VarMap,
    pub vae: AutoencoderKlLtxVideo,
}

impl TrainableVae {
    pub fn new(config_json: &serde_json::Value, seed: u64) -> anyhow::Result<Self> {
        let config = VaeConfig::from_json(&config_json.to_string())?;
        let varmap = params::init_varmap(&vae_shapes(&config)?, &vae_init, seed)?;
        let vae = AutoencoderKlLtxVideo::new(&config, params::var_builder(&varmap))?;
        Ok(Self {
            config,
            varmap,
            vae,
        })
    }

    /// The variables the reconstruction loss trains (not the latent statistics).
    pub fn trained_vars(&self) -> anyhow::Result<Vec<(String, candle_core::Var)>> {
        Ok(params::sorted_vars(&self.varmap)?
            .into_iter()
            .filter(|(n, _)| !n.starts_with("latents_"))
            .collect())
    }
}

/// One batch `[B, 3, F, H, W]` in [-1, 1]: for each sample the HR clip, or (with probability
/// `degraded_share`) its LR clip bicubic-upscaled to the HR size as the element does.
pub fn vae_batch(
    source: &dyn ClipSource,
    batch: usize,
    frames: usize,
    degraded_share: f64,
    seed: u64,
) -> anyhow::Result<Tensor> {
    let mut rng = Normal::new(seed);
    let (h, w) = source.size();
    let mut clips = Vec::with_capacity(batch);
    for i in 0..batch {
        let (hr, lr) = source.clip(frames, seed.wrapping_add(i as u64 * 7919))?;
        let x = if rng.uniform() < degraded_share {
            resize_bicubic(&lr, h, w)?.clamp(0f32, 1f32)?
        } else {
            hr
        };
        clips.push(((x * 2.0)? - 1.0)?);
    }
    Ok(Tensor::stack(&clips, 0)?)
}

/// Reconstruction loss: L1 + MSE, both in [-1, 1] units.
pub fn recon_loss(out: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let d = (out - target)?;
    d.abs()?.mean_all()? + d.sqr()?.mean_all()?
}

/// Trains for `steps` steps in total (resuming from `run`'s checkpoint when there is one).
pub fn train_vae(
    source: &dyn ClipSource,
    run: &RunDir,
    cfg: &VaeTrainConfig,
    steps: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<TrainableVae> {
    let model = TrainableVae::new(&small_vae_config_json(), cfg.seed)?;
    let mut opt = AdamW::new(model.trained_vars()?, cfg.optim)?;
    let settings = json!({"kind": "vae", "config": cfg, "vae": small_vae_config_json(),
                          "size": source.size(), "scale": source.scale()});
    let start = run.resume(&model.varmap, &mut opt, &settings)?;
    if start > 0 {
        progress(&format!("resuming from step {start}"));
    } else if cfg.init == VaeInit::Pca {
        super::pca_init::pca_init(&model, source, cfg.seed)?;
        let psnr = reconstruction_psnr(&model.vae, source, 8, cfg.frames, 0xE7A1)?;
        progress(&format!(
            "principal-component start: reconstruction {psnr:.2} dB on 8 clips"
        ));
    }
    progress(&format!(
        "VAE: {} parameters, spatial x{}, temporal x{}",
        params::count(&model.varmap),
        model.config.spatial_compression(),
        model.config.temporal_compression()
    ));
    let t0 = Instant::now();
    for step in start..steps {
        let seed = step_seed(cfg.seed, step);
        let (batch, frames) = if step % 2 == 0 {
            (cfg.image_batch, 1)
        } else {
            (cfg.video_batch, cfg.frames)
        };
        let x = vae_batch(source, batch, frames, cfg.degraded_share, seed)?;
        let (loss, grads) = {
            let _scope = AutogradScope::enter();
            let z = model.vae.encode(&x)?.mean;
            let y = model.vae.decode(&z, None)?;
            let loss = recon_loss(&y, &x)?;
            let grads = loss.backward()?;
            (loss.to_scalar::<f32>()?, grads)
        };
        let norm = opt.update(&grads)?;
        run.log(
            "step,frames,loss,grad_norm,lr,seconds",
            &format!(
                "{},{frames},{loss:.6},{norm:.4},{:.2e},{:.1}",
                step + 1,
                opt.lr(),
                t0.elapsed().as_secs_f64()
            ),
        )?;
        if (step + 1) % 10 == 0 {
            progress(&format!(
                "step {}/{steps} frames {frames} loss {loss:.4} |g| {norm:.3} ({:.2} s/step)",
                step + 1,
                t0.elapsed().as_secs_f64() / (step + 1 - start) as f64
            ));
        }
        if (step + 1) % cfg.checkpoint_every == 0 || step + 1 == steps {
            run.save(
                &model.varmap,
                &opt,
                &json!({"step": step + 1, "settings": settings}),
            )?;
        }
    }
    Ok(model)
}

/// Per-channel mean and standard deviation of the encoder's latents over `clips` high-resolution
/// clips (the
/// `latents_mean` / `latents_std` the pipelines normalize with, so the denoiser sees unit
/// variance). The standard deviation is floored at 1e-3 of the largest channel's.
pub fn latent_stats(
    vae: &AutoencoderKlLtxVideo,
    source: &dyn ClipSource,
    clips: usize,
    frames: usize,
    seed: u64,
) -> anyhow::Result<(Tensor, Tensor)> {
    let mut all = Vec::new();
    for i in 0..clips {
        // high-resolution clips only: the statistics normalize what the denoiser generates
        let x = vae_batch(source, 1, frames, 0.0, step_seed(seed, i))?;
        let z = vae.encode(&x)?.mean; // (1, C, t, h, w)
        let c = z.dim(1)?;
        all.push(z.transpose(0, 1)?.reshape((c, ()))?);
    }
    let z = Tensor::cat(&all, 1)?;
    let mean = z.mean(1)?;
    let std = z
        .broadcast_sub(&mean.unsqueeze(1)?)?
        .sqr()?
        .mean(1)?
        .sqrt()?;
    let floor = std.max(0)?.to_scalar::<f32>()? * 1e-3;
    Ok((mean, std.clamp(floor.max(1e-6), f32::MAX)?))
}

/// Writes the trained VAE as a diffusers VAE folder (`config.json`,
/// `diffusion_pytorch_model.safetensors`) with the measured latent statistics.
pub fn export_vae(
    model: &TrainableVae,
    source: &dyn ClipSource,
    dir: &Path,
    dtype: DType,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (mean, std) = latent_stats(&model.vae, source, 64, 9, 0x57A7)?;
    {
        let data = model
            .varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?;
        if let Some(v) = data.get("latents_mean") {
            v.set(&mean)?;
        }
        if let Some(v) = data.get("latents_std") {
            v.set(&std)?;
        }
    }
    write_json(&dir.join("config.json"), &small_vae_config_json())?;
    params::save(
        &model.varmap,
        &dir.join("diffusion_pytorch_model.safetensors"),
        dtype,
    )?;
    Ok(())
}

/// Mean PSNR (dB, RGB, [0, 1] range) of the VAE's reconstruction of `clips` clips.
pub fn reconstruction_psnr(
    vae: &AutoencoderKlLtxVideo,
    source: &dyn ClipSource,
    clips: usize,
    frames: usize,
    seed: u64,
) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for i in 0..clips {
        let x = vae_batch(source, 1, frames, 0.0, step_seed(seed, i))?;
        let y = vae
            .decode(&vae.encode(&x)?.mean, None)?
            .clamp(-1f32, 1f32)?;
        let mse = ((y - &x)? / 2.0)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
        total += -10.0 * mse.max(1e-12).log10();
    }
    Ok(total / clips as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::source::SyntheticSource;
    use candle_core::Device;

    #[test]
    fn small_vae_compresses_4x4x1() -> anyhow::Result<()> {
        let m = TrainableVae::new(&small_vae_config_json(), 0)?;
        assert_eq!(m.config.spatial_compression(), 4);
        assert_eq!(m.config.temporal_compression(), 1);
        let x = Tensor::zeros((1, 3, 9, 16, 24), DType::F32, &Device::Cpu)?;
        let z = m.vae.encode(&x)?.mean;
        assert_eq!(z.dims(), &[1, LATENT_CHANNELS, 9, 4, 6]);
        assert_eq!(m.vae.decode(&z, None)?.dims(), x.dims());
        Ok(())
    }

    /// The loss reaches every trained tensor: none is left out of the graph by a fused kernel.
    #[test]
    fn every_vae_weight_gets_a_gradient() -> anyhow::Result<()> {
        let m = TrainableVae::new(&small_vae_config_json(), 0)?;
        let src = SyntheticSource {
            height: 16,
            width: 16,
            scale: 4,
        };
        let x = vae_batch(&src, 1, 9, 0.0, 3)?;
        let _scope = AutogradScope::enter();
        let y = m.vae.decode(&m.vae.encode(&x)?.mean, None)?;
        let grads = recon_loss(&y, &x)?.backward()?;
        let vars = m.trained_vars()?;
        // the encoder's log-variance channel does not reach the loss
        let missing: Vec<&String> = vars
            .iter()
            .filter(|(_, v)| grads.get(v.as_tensor()).is_none())
            .map(|(n, _)| n)
            .collect();
        assert!(missing.is_empty(), "no gradient for {missing:?}");
        Ok(())
    }

    /// The backward pass is the derivative of the forward one: the gradient's component along
    /// three fixed pseudo-random directions of all weights matches a central finite difference of
    /// the loss. The error is bounded against the spread of such a component (the gradient's norm
    /// times the directions' standard deviation), not against the component itself, which a
    /// direction nearly orthogonal to the gradient makes arbitrarily small (the random direction
    /// this test drew before did that in a few percent of runs: CI once, 1 of 14 runs here).
    #[test]
    fn vae_gradient_matches_finite_differences() -> anyhow::Result<()> {
        let m = TrainableVae::new(&small_vae_config_json(), 5)?;
        let src = SyntheticSource {
            height: 16,
            width: 16,
            scale: 4,
        };
        let x = vae_batch(&src, 2, 9, 0.0, 11)?;
        let loss_of = |m: &TrainableVae| -> anyhow::Result<f64> {
            let y = m.vae.decode(&m.vae.encode(&x)?.mean, None)?;
            let d = (y - &x)?;
            Ok(d.sqr()?
                .mean_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        let vars = m.trained_vars()?;
        let grads = {
            let _scope = AutogradScope::enter();
            let y = m.vae.decode(&m.vae.encode(&x)?.mean, None)?;
            (y - &x)?.sqr()?.mean_all()?.backward()?
        };
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|(n, v)| {
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no gradient for {n}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let dot = |a: &Tensor, b: &Tensor| -> anyhow::Result<f64> {
            Ok((a * b)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        let grad_norm = grads
            .iter()
            .map(|g| dot(g, g))
            .sum::<anyhow::Result<f64>>()?
            .sqrt();
        // lcg_tensor is uniform on [-2, 2): standard deviation 2 / sqrt(3)
        let spread = grad_norm * 2.0 / 3f64.sqrt();
        let eps = 1e-3;
        for seed in [101u64, 202, 303] {
            let dirs: Vec<Tensor> = vars
                .iter()
                .enumerate()
                .map(|(i, (_, v))| crate::model::lcg_tensor(v.dims(), seed + i as u64))
                .collect::<candle_core::Result<_>>()?;
            let mut predicted = 0f64;
            for (g, d) in grads.iter().zip(&dirs) {
                predicted += dot(g, d)?;
            }
            let shift = |sign: f64| -> anyhow::Result<()> {
                for ((_, v), d) in vars.iter().zip(&dirs) {
                    v.set(&(v.as_tensor() + (d * (sign * eps))?)?)?;
                }
                Ok(())
            };
            shift(1.0)?;
            let up = loss_of(&m)?;
            shift(-2.0)?;
            let down = loss_of(&m)?;
            shift(1.0)?;
            let measured = (up - down) / (2.0 * eps);
            // measured at 0.6e-3 to 2e-3 of the spread on a correct gradient (f32 losses)
            assert!(
                (measured - predicted).abs() < 0.01 * spread,
                "direction {seed}: backward {predicted:.6e}, finite difference {measured:.6e}, \
                 spread {spread:.3e}"
            );
        }
        Ok(())
    }
}
