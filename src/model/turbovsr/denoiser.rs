//! TurboVSR's conditional denoiser (paper §3.3, §3.4; DESIGN §3.2): the LTX transformer with
//! a `cond_embedder` for the low-resolution condition, cross normalization after the first block,
//! and the shortcut step-size embedder added to the timestep embedding.

use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cross_norm;
use crate::model::transformer::embeddings::{
    timestep_sinusoids, TimestepEmbedding, TIMESTEP_PROJ_DIM,
};
use crate::model::transformer::layers::Linear;
use crate::model::transformer::{
    LtxTransformerConfig, LtxVideoTransformer3DModel, RopePositions, TimeEmbedding,
    TransformerInputs,
};
pub use crate::sample::tokens::{pack_latents, unpack_latents};
use crate::sample::VelocityModel;

/// Key prefix of the shortcut step-size embedder (DESIGN §3.2).
pub const STEP_EMBEDDER: &str = "time_embed.emb.step_embedder";
/// Key prefix of the condition projection (DESIGN §3.2).
pub const COND_EMBEDDER: &str = "cond_embedder";

/// The LTX transformer with TurboVSR's head.
#[derive(Debug, Clone)]
pub struct TurboVsrDenoiser {
    transformer: LtxVideoTransformer3DModel,
    cond_embedder: Linear,
    /// `None`: a plain flow-matching checkpoint, the step size is ignored.
    step_embedder: Option<TimestepEmbedding>,
    cond_scale: f64,
}

impl TurboVsrDenoiser {
    /// Builds the model from `vb` (diffusers keys plus DESIGN §3.2's). The condition has
    /// `cond_channels` channels per token (after patchifying, like the latent).
    pub fn new(
        cfg: &LtxTransformerConfig,
        cond_channels: usize,
        cond_scale: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let transformer = LtxVideoTransformer3DModel::new(cfg, vb.clone())?;
        let dim = cfg.inner_dim();
        let cond_embedder = Linear::new(cond_channels, dim, true, vb.pp(COND_EMBEDDER))?;
        let step_vb = vb.pp("time_embed").pp("emb").pp("step_embedder");
        let has_step = ["linear_1", "linear_2"].iter().any(|l| {
            ["weight", "bias"]
                .iter()
                .any(|p| vb.contains_tensor(&format!("{STEP_EMBEDDER}.{l}.{p}")))
        });
        // Any step key present: all four must be there with the right shapes (the VarBuilder
        // error names the key and the shapes).
        let step_embedder = if has_step {
            Some(TimestepEmbedding::new(TIMESTEP_PROJ_DIM, dim, step_vb)?)
        } else {
            None
        };
        Ok(Self {
            transformer,
            cond_embedder,
            step_embedder,
            cond_scale,
        })
    }

    /// Loads the transformer of a model path (a checkpoint folder's `transformer/`, a diffusers
    /// transformer folder, or a single-file checkpoint). Errors name the file and the key.
    pub fn load(
        dir: &Path,
        cond_channels: usize,
        cond_scale: f64,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let ck = crate::model::checkpoint::Checkpoint::open(dir)?.transformer()?;
        Self::from_checkpoint(&ck, cond_channels, cond_scale, dtype, device)
    }

    /// Builds the denoiser from a resolved checkpoint, weights converted to `dtype`; keys that
    /// neither the LTX transformer nor the TurboVSR head read are an error.
    pub fn from_checkpoint(
        ck: &crate::model::checkpoint::TransformerCheckpoint,
        cond_channels: usize,
        cond_scale: f64,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let model = Self::new(
            &ck.config,
            cond_channels,
            cond_scale,
            ck.weights.var_builder(dtype, device),
        )
        .with_context(crate::model::checkpoint::weights::loading(
            "the TurboVSR transformer",
            &ck.weights,
            &ck.config_source,
        ))?;
        ck.weights.check_unused(
            &format!(
                "the TurboVSR transformer ({} and the head of DESIGN §3.2)",
                ck.config_source
            ),
            |_| false,
        )?;
        Ok(model)
    }

    pub fn transformer(&self) -> &LtxVideoTransformer3DModel {
        &self.transformer
    }

    pub fn config(&self) -> &LtxTransformerConfig {
        self.transformer.config()
    }

    /// Whether the checkpoint has the shortcut step-size embedder (else plain flow matching).
    pub fn is_shortcut(&self) -> bool {
        self.step_embedder.is_some()
    }

    pub fn cond_scale(&self) -> f64 {
        self.cond_scale
    }

    /// The timestep embedding with the step-size embedding of `step_size` added to every row
    /// (DESIGN §3.2: what AdaLN-single and the output modulation read).
    pub fn embed_time(
        &self,
        timestep: &Tensor,
        batch: usize,
        n_tokens: usize,
        step_size: f64,
    ) -> Result<TimeEmbedding> {
        let mut time = self.transformer.embed_timestep(timestep, batch, n_tokens)?;
        if let Some(step) = &self.step_embedder {
            let proj = timestep_sinusoids(
                &[(1000.0 * step_size) as f32],
                TIMESTEP_PROJ_DIM,
                time.embedded.device(),
            )?
            .to_dtype(self.transformer.dtype())?;
            // (1, D), the same for every (batch element, timestep) row
            let d_emb = step.forward(&proj)?;
            time.embedded = time.embedded.broadcast_add(&d_emb)?;
        }
        Ok(time)
    }

    /// The velocity for `inputs` given the condition tokens `cond` (b, n, cond_channels), patchified
    /// like `inputs.hidden_states`, and the step size `step_size`: (b, n, out_channels).
    pub fn forward(
        &self,
        inputs: &TransformerInputs,
        cond: &Tensor,
        step_size: f64,
    ) -> Result<Tensor> {
        let (b, n, _) = inputs.hidden_states.dims3()?;
        if cond.dims3()?.0 != b || cond.dims3()?.1 != n {
            candle_core::bail!(
                "condition tokens have shape {:?}, expected ({b}, {n}, channels) like the latent",
                cond.dims()
            );
        }
        let time = self.embed_time(inputs.timestep, b, n, step_size)?;
        let (h, ctx) = self.transformer.prepare(inputs, &time)?;
        // The condition enters after block 0 (DESIGN §3.2), or after `proj_in` in a model
        // without blocks (a per-token map, like the shipped default).
        let blocks = self.transformer.blocks().len();
        let first = blocks.min(1);
        let h = self.transformer.forward_blocks(&h, &ctx, 0..first)?;
        let c = self
            .cond_embedder
            .forward(&cond.to_dtype(self.transformer.dtype())?)?;
        let h = cross_norm(&h, &c, self.cond_scale)?;
        let h = self.transformer.forward_blocks(&h, &ctx, first..blocks)?;
        crate::model::flops::add(crate::model::flops::denoiser_evaluation(
            self.config(),
            cond.dim(2)?,
            b,
            n,
            inputs.encoder_hidden_states.dim(1)?,
        ));
        self.transformer.output(&h, &time)
    }
}

/// One sampling pass's fixed inputs: the denoiser bound to its condition and prompt, as the
/// sampler's [`VelocityModel`]. Counts its evaluations.
pub struct ConditionedDenoiser<'a> {
    pub model: &'a TurboVsrDenoiser,
    /// Condition tokens (b, n, cond_channels).
    pub cond: &'a Tensor,
    /// Prompt embeddings (b, L, caption_channels) and mask (b, L).
    pub prompt: &'a Tensor,
    pub prompt_mask: Option<&'a Tensor>,
    /// Token grid (frames, height, width).
    pub video_shape: (usize, usize, usize),
    /// diffusers' `rope_interpolation_scale`: (temporal compression / frame rate, spatial
    /// compression, spatial compression).
    pub rope_interpolation_scale: [f32; 3],
    /// Transformer evaluations so far.
    pub evaluations: usize,
}

impl VelocityModel for ConditionedDenoiser<'_> {
    fn velocity(&mut self, x: &Tensor, timestep: &Tensor, step_size: f64) -> Result<Tensor> {
        self.evaluations += 1;
        let inputs = TransformerInputs {
            hidden_states: x,
            encoder_hidden_states: self.prompt,
            timestep,
            encoder_attention_mask: self.prompt_mask,
            video_shape: self.video_shape,
            positions: RopePositions::Grid {
                rope_interpolation_scale: Some(self.rope_interpolation_scale),
            },
        };
        self.model
            .forward(&inputs, self.cond, step_size)?
            .to_dtype(x.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_are_inverse_and_frame_major() -> Result<()> {
        let dev = Device::Cpu;
        let z = Tensor::arange(0f32, 3.0 * 2.0 * 4.0 * 4.0, &dev)?.reshape((1, 3, 2, 4, 4))?;
        for (p, pt) in [(1, 1), (2, 1), (2, 2)] {
            let x = pack_latents(&z, p, pt)?;
            assert_eq!(x.dims(), &[1, 2 * 16 / (p * p * pt), 3 * p * p * pt]);
            let back = unpack_latents(&x, (2, 4, 4), p, pt)?;
            assert_eq!(
                back.flatten_all()?.to_vec1::<f32>()?,
                z.flatten_all()?.to_vec1::<f32>()?
            );
        }
        // patch 1: token (t, y, x) holds the channels at that position
        let x = pack_latents(&z, 1, 1)?;
        let tok = x.get(0)?.get(16 + 4 + 3)?.to_vec1::<f32>()?;
        let want: Vec<f32> = (0..3)
            .map(|c| {
                z.get(0)
                    .unwrap()
                    .get(c)
                    .unwrap()
                    .get(1)
                    .unwrap()
                    .get(1)
                    .unwrap()
            })
            .map(|r| r.get(3).unwrap().to_scalar::<f32>().unwrap())
            .collect();
        assert_eq!(tok, want);
        Ok(())
    }

    use std::collections::HashMap;
    use std::path::PathBuf;

    use crate::model::turbovsr::test_model::{write_test_model, Preset, TestModelOptions};

    fn temp_model(tag: &str, step_embedder: bool) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turbovsr-head-{tag}-{}", std::process::id()));
        let options = TestModelOptions {
            step_embedder,
            ..TestModelOptions::new(Preset::Tiny)
        };
        write_test_model(&dir, &options).unwrap();
        dir
    }

    fn weights(dir: &Path) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(
            dir.join("transformer/diffusion_pytorch_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// `x W^T + b` with the checkpoint's tensors.
    fn linear(w: &HashMap<String, Tensor>, key: &str, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&w[&format!("{key}.weight")].t()?)?
            .broadcast_add(&w[&format!("{key}.bias")])
    }

    struct Case {
        x: Tensor,
        cond: Tensor,
        prompt: Tensor,
        timestep: Tensor,
    }

    fn case(model: &TurboVsrDenoiser) -> Result<Case> {
        let dev = Device::Cpu;
        let cfg = model.config();
        // 2 frames of 2 x 3 tokens; frame 0 clean (timestep 0), per-token timesteps
        let n = 12;
        let mut t = vec![0f32; 6];
        t.extend([700f32; 6]);
        Ok(Case {
            x: Tensor::randn(0f32, 1.0, (1, n, cfg.in_channels), &dev)?,
            cond: (Tensor::randn(0f32, 0.5, (1, n, cfg.in_channels), &dev)? + 3.0)?,
            prompt: Tensor::randn(0f32, 1.0, (1, 3, cfg.caption_channels), &dev)?,
            timestep: Tensor::from_vec(t, (1, n), &dev)?,
        })
    }

    fn inputs<'a>(c: &'a Case) -> TransformerInputs<'a> {
        TransformerInputs {
            hidden_states: &c.x,
            encoder_hidden_states: &c.prompt,
            timestep: &c.timestep,
            encoder_attention_mask: None,
            video_shape: (2, 2, 3),
            positions: RopePositions::Grid {
                rope_interpolation_scale: Some([0.32, 32.0, 32.0]),
            },
        }
    }

    #[test]
    fn head_matches_a_direct_computation() -> Result<()> {
        let dir = temp_model("direct", true);
        let model = TurboVsrDenoiser::load(&dir, 8, 0.6, DType::F32, &Device::Cpu).unwrap();
        assert!(model.is_shortcut());
        let w = weights(&dir);
        let c = case(&model)?;
        let d = 0.25;
        let got = model.forward(&inputs(&c), &c.cond, d)?;

        // Step embedding by hand: sinusoids of 1000 d, linear_1, SiLU, linear_2; added to
        // every row of the timestep embedding.
        let tf = model.transformer();
        let mut time = tf.embed_timestep(&c.timestep, 1, 12)?;
        let proj = timestep_sinusoids(&[250.0], TIMESTEP_PROJ_DIM, &Device::Cpu)?;
        let d_emb = linear(
            &w,
            "time_embed.emb.step_embedder.linear_2",
            &linear(&w, "time_embed.emb.step_embedder.linear_1", &proj)?.silu()?,
        )?;
        time.embedded = time.embedded.broadcast_add(&d_emb)?;
        let (h, ctx) = tf.prepare(&inputs(&c), &time)?;
        let h = tf.forward_blocks(&h, &ctx, 0..1)?;
        // Cross normalization by hand, in f64, after block 0.
        let cond = linear(&w, "cond_embedder", &c.cond)?;
        let hv: Vec<f64> = h.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let cv: Vec<f64> = cond.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let stat = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
            (m, var.sqrt())
        };
        let ((mh, sh), (mc, sc)) = (stat(&hv), stat(&cv));
        let fused: Vec<f32> = hv
            .iter()
            .zip(&cv)
            .map(|(a, b)| ((a + (b - mc) * sh / (sc + 1e-5) + mh) * 0.6) as f32)
            .collect();
        let h = Tensor::from_vec(fused, h.shape(), &Device::Cpu)?;
        let h = tf.forward_blocks(&h, &ctx, 1..2)?;
        let want = tf.output(&h, &time)?;
        let err = crate::model::relative_l2(&got, &want)?;
        assert!(err < 1e-5, "relative error {err}");

        // The step size is an input of a shortcut model.
        let other = model.forward(&inputs(&c), &c.cond, 1.0)?;
        assert!(crate::model::relative_l2(&other, &got)? > 1e-4);
        // And the condition is.
        let shifted = (&c.cond * 0.5)?.sin()?;
        let other = model.forward(&inputs(&c), &shifted, d)?;
        assert!(crate::model::relative_l2(&other, &got)? > 1e-4);
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }

    #[test]
    fn flow_matching_checkpoint_ignores_the_step_size() -> Result<()> {
        let dir = temp_model("fm", false);
        let model = TurboVsrDenoiser::load(&dir, 8, 0.7, DType::F32, &Device::Cpu).unwrap();
        assert!(!model.is_shortcut());
        let c = case(&model)?;
        let a = model.forward(&inputs(&c), &c.cond, 1.0)?;
        let b = model.forward(&inputs(&c), &c.cond, 0.125)?;
        assert_eq!(a.dims(), &[1, 12, 8]);
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.flatten_all()?.to_vec1()?, b.flatten_all()?.to_vec1()?);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }

    #[test]
    fn missing_or_misshaped_head_keys_are_named() -> Result<()> {
        let dir = temp_model("keys", true);
        let file = dir.join("transformer/diffusion_pytorch_model.safetensors");
        let full = weights(&dir);
        let load = || {
            format!(
                "{:#}",
                TurboVsrDenoiser::load(&dir, 8, 0.7, DType::F32, &Device::Cpu).unwrap_err()
            )
        };
        let mut w = full.clone();
        w.remove("time_embed.emb.step_embedder.linear_2.bias");
        candle_core::safetensors::save(&w, &file)?;
        let e = load();
        assert!(
            e.contains("time_embed.emb.step_embedder.linear_2.bias"),
            "{e}"
        );
        assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");

        let mut w = full.clone();
        w.insert(
            "cond_embedder.weight".into(),
            Tensor::zeros((16, 5), DType::F32, &Device::Cpu)?,
        );
        candle_core::safetensors::save(&w, &file)?;
        let e = load();
        assert!(e.contains("cond_embedder.weight"), "{e}");

        let mut w = full;
        w.remove("cond_embedder.bias");
        candle_core::safetensors::save(&w, &file)?;
        assert!(load().contains("cond_embedder.bias"));
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }

    #[test]
    fn a_model_without_blocks_is_one_whose_blocks_add_nothing() -> Result<()> {
        // The condition enters after proj_in when there is no block 0: the same velocity as a
        // model whose blocks' output projections are zero (the shipped default's blocks).
        let dir = temp_model("blocks", true);
        let file = dir.join("transformer/diffusion_pytorch_model.safetensors");
        let config = dir.join("transformer/config.json");
        let mut w = weights(&dir);
        for (key, value) in w.iter_mut() {
            let out = key.contains(".to_out.") || key.contains(".ff.net.2.");
            if key.starts_with("transformer_blocks.") && out {
                *value = value.zeros_like()?;
            }
        }
        candle_core::safetensors::save(&w, &file)?;
        let identity = TurboVsrDenoiser::load(&dir, 8, 0.7, DType::F32, &Device::Cpu).unwrap();
        let c = case(&identity)?;
        let want = identity.forward(&inputs(&c), &c.cond, 0.5)?;

        w.retain(|key, _| !key.starts_with("transformer_blocks."));
        candle_core::safetensors::save(&w, &file)?;
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        cfg["num_layers"] = 0.into();
        std::fs::write(&config, cfg.to_string()).unwrap();
        let none = TurboVsrDenoiser::load(&dir, 8, 0.7, DType::F32, &Device::Cpu).unwrap();
        assert!(none.transformer().blocks().is_empty());
        let got = none.forward(&inputs(&c), &c.cond, 0.5)?;
        let err = crate::model::relative_l2(&got, &want)?;
        assert!(err < 1e-6, "relative error {err}");
        // The condition still reaches the output.
        let other = none.forward(&inputs(&c), &(&c.cond * -1.0)?, 0.5)?;
        assert!(crate::model::relative_l2(&other, &got)? > 1e-3);
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }
}
