//! End-to-end checks of the training stack on procedural clips (seconds each).

use candle_core::{DType, Device, Tensor};

use super::denoiser::{
    ddpm_alpha_bar, export_model, train_denoiser, DenoiserTrainConfig, Objective,
};
use super::optim::AdamWConfig;
use super::params;
use super::run::RunDir;
use super::source::SyntheticSource;
use super::vae::{export_vae, train_vae, VaeTrainConfig};
use crate::model::vae::AutoencoderKlLtxVideo;

fn source() -> SyntheticSource {
    SyntheticSource {
        height: 32,
        width: 32,
        scale: 4,
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("turbovsr-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn vae_cfg(steps_between_checkpoints: usize) -> VaeTrainConfig {
    VaeTrainConfig {
        image_batch: 2,
        video_batch: 1,
        checkpoint_every: steps_between_checkpoints,
        optim: AdamWConfig {
            lr: 2e-3,
            warmup: 5,
            ..AdamWConfig::default()
        },
        ..VaeTrainConfig::default()
    }
}

fn dn_cfg(objective: Objective) -> DenoiserTrainConfig {
    DenoiserTrainConfig {
        objective,
        batch: 2,
        checkpoint_every: 2,
        max_bootstrap_steps: 8,
        ..DenoiserTrainConfig::default()
    }
}

fn weights(varmap: &candle_nn::VarMap) -> Vec<(String, Vec<f32>)> {
    params::sorted_vars(varmap)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// The VAE learns: the reconstruction loss of the last steps is well below the first steps'.
#[test]
fn vae_reconstruction_loss_falls() -> anyhow::Result<()> {
    let dir = tmp("vae-falls");
    let run = RunDir::create(&dir)?;
    train_vae(&source(), &run, &vae_cfg(1000), 60, |_| {})?;
    let log = std::fs::read_to_string(run.log_path())?;
    // image steps only (even steps), so the two ends are comparable
    let losses: Vec<f64> = log
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1) == Some("1"))
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.6 * first, "loss {first:.4} -> {last:.4}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A run stopped after its checkpoint and started again ends with the same weights as one that
/// ran through: data, noise and timesteps come from the seed and the step, the optimizer's
/// moments from the checkpoint.
#[test]
fn denoiser_run_resumes_exactly() -> anyhow::Result<()> {
    let vae_dir = tmp("resume-vae");
    let run = RunDir::create(&vae_dir.join("run"))?;
    let vae = train_vae(&source(), &run, &vae_cfg(1000), 1, |_| {})?;
    let cfg = dn_cfg(Objective::Shortcut);
    let straight = RunDir::create(&tmp("resume-a"))?;
    let a = train_denoiser(&source(), &vae.vae, &straight, &cfg, 4, |_| {})?;
    let split = RunDir::create(&tmp("resume-b"))?;
    train_denoiser(&source(), &vae.vae, &split, &cfg, 2, |_| {})?;
    let mut said = Vec::new();
    let b = train_denoiser(&source(), &vae.vae, &split, &cfg, 4, |m| {
        said.push(m.to_string())
    })?;
    assert!(
        said.iter().any(|m| m.contains("resuming from step 2")),
        "{said:?}"
    );
    let (wa, wb) = (weights(&a.varmap), weights(&b.varmap));
    assert_eq!(wa.len(), wb.len());
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let d = max_abs_diff(x, y);
        assert!(d <= 1e-6, "{name} differs by {d} after resuming");
    }
    // the log has one line per step, none repeated by the resumed run
    let log = std::fs::read_to_string(split.log_path())?;
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4"]);
    // other settings: refused, naming the folder
    let other = DenoiserTrainConfig {
        batch: 3,
        ..cfg.clone()
    };
    let err = train_denoiser(&source(), &vae.vae, &split, &other, 6, |_| {})
        .err()
        .expect("a resume with other settings must fail");
    assert!(format!("{err:#}").contains("other settings"), "{err:#}");
    for d in [vae_dir, straight.root().into(), split.root().into()] {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Every weight of the denoiser is reached by the loss (no fused kernel cuts the graph), the
/// step-size embedder only in a shortcut model; the exported folder loads in the element's
/// pipeline and upscales.
#[test]
fn trained_model_exports_and_upscales() -> anyhow::Result<()> {
    use crate::pipeline::{OutputSize, ProcessorSettings, RgbFrame, Upscaler, WindowConfig};
    let dir = tmp("export");
    let vae_run = RunDir::create(&dir.join("vae-run"))?;
    let vae = train_vae(&source(), &vae_run, &vae_cfg(1000), 2, |_| {})?;
    export_vae(&vae, &source(), &dir.join("vae"), DType::F16)?;
    let vae_loaded = AutoencoderKlLtxVideo::load(&dir.join("vae"), &Device::Cpu, DType::F32)?;
    for objective in [Objective::Shortcut, Objective::Flow] {
        let run = RunDir::create(&dir.join(format!("{objective:?}")))?;
        let cfg = dn_cfg(objective);
        let dn = train_denoiser(&source(), &vae_loaded, &run, &cfg, 2, |_| {})?;
        let has_step = params::sorted_vars(&dn.varmap)?
            .iter()
            .any(|(n, _)| n.starts_with(crate::model::turbovsr::denoiser::STEP_EMBEDDER));
        assert_eq!(has_step, objective == Objective::Shortcut);
        let out = dir.join(format!("model-{objective:?}"));
        export_model(&dn, &cfg, &dir.join("vae"), &out, [9, 16, 16], DType::F16)?;
        let mut up = Upscaler::load(
            out.to_str().unwrap(),
            &ProcessorSettings {
                steps: 2,
                ..ProcessorSettings::default()
            },
            WindowConfig::new(9, 1)?,
            OutputSize::Scale(4),
        )?;
        let mut frames = Vec::new();
        for f in 0..9 {
            let rgb = vec![0.1 + 0.05 * f as f32; 8 * 8 * 3];
            frames.extend(up.push(RgbFrame::new(8, 8, rgb, None))?);
        }
        frames.extend(up.finish()?);
        assert_eq!(frames.len(), 9);
        assert!(frames.iter().all(|f| f.width == 32 && f.height == 32));
        assert!(frames.iter().all(|f| f.rgb.iter().all(|v| v.is_finite())));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn gradients_reach_every_denoiser_weight() -> anyhow::Result<()> {
    use super::denoiser::TrainableDenoiser;
    use crate::model::autograd::AutogradScope;
    use crate::model::transformer::{RopePositions, TransformerInputs};
    let dn = TrainableDenoiser::new(8, true, 0)?;
    let (b, n) = (2, 2 * 3 * 4);
    // 8 latent channels, patchified 2x2 into 32 per token
    let x = Tensor::randn(0f32, 1.0, (b, n, 32), &Device::Cpu)?;
    let cond = Tensor::randn(0f32, 1.0, (b, n, 32), &Device::Cpu)?;
    // a random prompt of three tokens: with the zero prompt of training, cross-attention is a
    // constant and its weights rightly get no gradient; here the graph itself is checked
    let prompt = Tensor::randn(
        0f32,
        1.0,
        (b, 3, super::denoiser::CAPTION_CHANNELS),
        &Device::Cpu,
    )?;
    let t = Tensor::new(&[[500f32; 24], [250f32; 24]], &Device::Cpu)?;
    let _scope = AutogradScope::enter();
    let inputs = TransformerInputs {
        hidden_states: &x,
        encoder_hidden_states: &prompt,
        timestep: &t,
        encoder_attention_mask: None,
        video_shape: (2, 3, 4),
        positions: RopePositions::Grid {
            rope_interpolation_scale: Some([0.32, 8.0, 8.0]),
        },
    };
    // zero-initialised output layers pass no gradient further back at step 0: give them values
    for (name, var) in params::sorted_vars(&dn.varmap)? {
        if var.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? == 0.0 {
            var.set(&Tensor::randn(0f32, 0.02, var.shape(), &Device::Cpu)?)?;
        }
        let _ = name;
    }
    let v = dn.model.forward(&inputs, &cond, 0.25)?;
    let grads = v.sqr()?.mean_all()?.backward()?;
    let mut missing = Vec::new();
    for (name, var) in params::sorted_vars(&dn.varmap)? {
        match grads.get(var.as_tensor()) {
            Some(g) if g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0 => {}
            _ => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    Ok(())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

#[test]
fn ddpm_augmentation_schedule() {
    let a0 = ddpm_alpha_bar(0);
    assert!((a0 - (1.0 - 0.00085)).abs() < 1e-12);
    let mut prev = a0;
    for t in [50, 100, 200, 300, 999] {
        let a = ddpm_alpha_bar(t);
        assert!(a < prev && a > 0.0, "t {t}: {a}");
        prev = a;
    }
}

/// One Euler step of size 1 from noise `x1` (b, 24, C) on a (2, 3, 4) token grid, conditioned
/// on `cond`: the clean latent the sampler's 1-step schedule returns.
fn one_step_from_noise(
    dn: &super::denoiser::TrainableDenoiser,
    x1: &Tensor,
    cond: &Tensor,
) -> anyhow::Result<Tensor> {
    use crate::model::transformer::{RopePositions, TransformerInputs};
    let (b, n, _) = x1.dims3()?;
    let prompt = Tensor::zeros(
        (b, 1, super::denoiser::CAPTION_CHANNELS),
        DType::F32,
        &Device::Cpu,
    )?;
    let t = Tensor::full(1000f32, (b, n), &Device::Cpu)?;
    let inputs = TransformerInputs {
        hidden_states: x1,
        encoder_hidden_states: &prompt,
        timestep: &t,
        encoder_attention_mask: None,
        video_shape: (2, 3, 4),
        positions: RopePositions::Grid {
            rope_interpolation_scale: Some([0.04, 4.0, 4.0]),
        },
    };
    Ok((x1 - dn.model.forward(&inputs, cond, 1.0)?)?)
}

/// The condition start: before any step, one Euler step of size 1 from noise returns the
/// condition (the velocity is `x_1 - cond` up to LayerNorm's per-token gain).
#[test]
fn condition_start_returns_the_condition_in_one_step() -> anyhow::Result<()> {
    use super::denoiser::{condition_start, TrainableDenoiser};
    let dn = TrainableDenoiser::new(8, true, 0)?;
    condition_start(&dn, 0, DenoiserTrainConfig::default().shift)?;
    let (b, n) = (2, 2 * 3 * 4);
    let x1 = Tensor::randn(0f32, 1.0, (b, n, 32), &Device::Cpu)?;
    let cond = Tensor::randn(0f32, 1.0, (b, n, 32), &Device::Cpu)?;
    let x0 = one_step_from_noise(&dn, &x1, &cond)?;
    let err = (&x0 - &cond)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
    let signal = cond.sqr()?.mean_all()?.to_scalar::<f32>()?;
    // a few percent of per-token gain error, nothing like the unit-variance noise
    assert!(err < 0.05 * signal, "error {err}, condition power {signal}");
    Ok(())
}

/// The regression start's pieces: the normal-equation solver recovers a known affine map, and
/// after `set_condition_map` one step from noise returns `map cond + offset` (the condition
/// start's few percent of gain error aside).
#[test]
fn condition_map_is_solved_and_returned_in_one_step() -> anyhow::Result<()> {
    use super::denoiser::{
        condition_start, set_condition_map, solve_normal_equations, TrainableDenoiser,
    };
    // y = x A + a from 200 noise-free rows of 3 features: the solution is exact
    let (k, m, rows) = (4, 2, 200);
    let a_true = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 0.1, -0.2]; // (k, m), last row the offset
    let x = Tensor::randn(0f64, 1.0, (rows, k - 1), &Device::Cpu)?;
    let x = Tensor::cat(
        &[&x, &Tensor::ones((rows, 1), DType::F64, &Device::Cpu)?],
        1,
    )?;
    let y = x.matmul(&Tensor::from_vec(a_true.to_vec(), (k, m), &Device::Cpu)?)?;
    let xtx: Vec<f64> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
    let xty: Vec<f64> = x.t()?.matmul(&y)?.flatten_all()?.to_vec1()?;
    let c = solve_normal_equations(xtx, xty, k, m, 1e-12)?;
    for (got, want) in c.iter().zip(a_true) {
        assert!((got - want).abs() < 1e-6, "{c:?} vs {a_true:?}");
    }

    let dn = TrainableDenoiser::new(8, true, 0)?;
    condition_start(&dn, 0, DenoiserTrainConfig::default().shift)?;
    let ct = 32;
    let map = ((Tensor::eye(ct, DType::F32, &Device::Cpu)? * 0.5)?
        + (Tensor::randn(0f32, 0.05, (ct, ct), &Device::Cpu)?))?;
    let offset = Tensor::randn(0f32, 0.3, ct, &Device::Cpu)?;
    set_condition_map(&dn, &map, &offset)?;
    assert!(set_condition_map(&dn, &offset.reshape((ct, 1))?, &offset).is_err());
    let (b, n) = (2, 2 * 3 * 4);
    let x1 = Tensor::randn(0f32, 1.0, (b, n, ct), &Device::Cpu)?;
    let cond = Tensor::randn(0f32, 1.0, (b, n, ct), &Device::Cpu)?;
    let out = one_step_from_noise(&dn, &x1, &cond)?;
    let want = cond.broadcast_matmul(&map.t()?)?.broadcast_add(&offset)?;
    let err = (&out - &want)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
    let signal = want.sqr()?.mean_all()?.to_scalar::<f32>()?;
    let moved = (&want - &cond)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
    assert!(err < 0.05 * signal, "error {err}, target power {signal}");
    assert!(
        err < 0.1 * moved,
        "error {err} against the map's own change {moved}"
    );
    Ok(())
}

/// The trajectory objective from the regression start with `trainable` limited to the blocks:
/// the blocks move, every other weight keeps its start value (the fitted condition map among
/// them), the log names the objective, and a prefix that matches nothing is refused.
#[test]
fn trajectory_fine_tuning_trains_only_the_named_weights() -> anyhow::Result<()> {
    use super::denoiser::DenoiserInit;
    let dir = tmp("trajectory");
    let vae_run = RunDir::create(&dir.join("vae-run"))?;
    let vae = train_vae(&source(), &vae_run, &vae_cfg(1000), 1, |_| {})?;
    let cfg = DenoiserTrainConfig {
        init: DenoiserInit::Regression,
        trainable: vec!["transformer_blocks.".into()],
        ..dn_cfg(Objective::Trajectory)
    };
    let start = train_denoiser(
        &source(),
        &vae.vae,
        &RunDir::create(&dir.join("start"))?,
        &cfg,
        0,
        |_| {},
    )?;
    let run = RunDir::create(&dir.join("run"))?;
    let tuned = train_denoiser(&source(), &vae.vae, &run, &cfg, 3, |_| {})?;
    let mut moved = 0;
    for ((name, a), (_, b)) in weights(&start.varmap).iter().zip(weights(&tuned.varmap)) {
        let d = max_abs_diff(a, &b);
        if name.starts_with("transformer_blocks.") {
            moved += usize::from(d > 0.0);
        } else {
            assert_eq!(d, 0.0, "{name} is not trainable but changed by {d}");
        }
    }
    assert!(moved > 0, "no block weight moved");
    let log = std::fs::read_to_string(run.log_path())?;
    assert_eq!(
        log.lines()
            .skip(1)
            .filter(|l| l.contains(",trajectory,"))
            .count(),
        3,
        "{log}"
    );
    let bad = DenoiserTrainConfig {
        trainable: vec!["no_such_weight".into()],
        ..cfg
    };
    let err = train_denoiser(
        &source(),
        &vae.vae,
        &RunDir::create(&dir.join("bad"))?,
        &bad,
        1,
        |_| {},
    )
    .err()
    .expect("a prefix matching no weight must be refused");
    assert!(format!("{err:#}").contains("no_such_weight"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
