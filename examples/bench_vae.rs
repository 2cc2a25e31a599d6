//! VAE CPU benchmark: encode and decode times (median and min of 5 after a warm-up) for the fixed small
//! config of `scripts/bench/vae_bench_config.json` on a 17x128x128 clip, in f32.
//!
//! `cargo run --release --example bench_vae [DIR]`: with DIR written by
//! `scripts/bench/vae_reference.py` (see `scripts/bench/vae.sh`), times that model on the same
//! inputs and reports the relative L2 error against the reference outputs; without DIR, uses
//! seeded random weights and inputs of the same shapes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::vae::{AutoencoderKlLtxVideo, NoiseSource, VaeConfig};

const CONFIG: &str = include_str!("../scripts/bench/vae_bench_config.json");
const SHAPE: (usize, usize, usize, usize, usize) = (1, 3, 17, 128, 128);

fn randn(shape: &[usize], std: f32, rng: &mut NoiseSource, dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// The bench model with seeded random weights: build once to list the parameters, fill them,
/// build again from the filled map.
fn random_model(cfg: &VaeConfig, dev: &Device) -> Result<AutoencoderKlLtxVideo> {
    let varmap = VarMap::new();
    AutoencoderKlLtxVideo::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    let mut rng = NoiseSource::new(0);
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        let dims = var.dims().to_vec();
        let value = if name.ends_with("latents_std") || name.ends_with("timestep_scale_multiplier")
        {
            (var.ones_like()? * if name.ends_with("std") { 1.0 } else { 1000.0 })?
        } else if dims.len() >= 2 && !name.contains("scale_shift_table") {
            let fan_in: usize = dims[1..].iter().product();
            randn(&dims, 1.0 / (fan_in as f32).sqrt(), &mut rng, dev)?
        } else {
            randn(&dims, 0.1, &mut rng, dev)?
        };
        var.set(&value)?;
    }
    Ok(AutoencoderKlLtxVideo::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, dev),
    )?)
}

/// (median, min) of 5 timed runs after a warm-up, and the last output.
fn time_ms(mut f: impl FnMut() -> Result<Tensor>) -> Result<(f64, f64, Tensor)> {
    let mut out = f()?; // warm-up
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        out = f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0], out))
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let dir = std::env::args().nth(1).map(PathBuf::from);
    let cfg = VaeConfig::from_json(CONFIG)?;
    let (vae, inputs, reference) = match &dir {
        Some(dir) => {
            let vae = AutoencoderKlLtxVideo::load(&dir.join("vae"), &dev, DType::F32)?;
            let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev)
                .with_context(|| format!("reading {}/inputs.safetensors", dir.display()))?;
            let reference =
                candle_core::safetensors::load(dir.join("outputs.safetensors"), &dev).ok();
            (vae, inputs, reference)
        }
        None => {
            let mut rng = NoiseSource::new(1);
            let (b, c, f, h, w) = SHAPE;
            let (s, t) = (cfg.spatial_compression(), cfg.temporal_compression());
            let latent_shape = [b, cfg.latent_channels, (f - 1) / t + 1, h / s, w / s];
            let inputs = [
                ("sample", randn(&[b, c, f, h, w], 0.5, &mut rng, &dev)?),
                ("latent", randn(&latent_shape, 1.0, &mut rng, &dev)?),
                ("timestep", Tensor::new(&[0.05f32], &dev)?),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            (random_model(&cfg, &dev)?, inputs, None)
        }
    };
    let sample = &inputs["sample"];
    let latent = &inputs["latent"];
    let timestep = inputs.get("timestep");
    let (enc_ms, enc_min, mean) = time_ms(|| Ok(vae.encode(sample)?.mean))?;
    let (dec_ms, dec_min, dec) = time_ms(|| Ok(vae.decode(latent, timestep)?))?;
    println!(
        "candle sample {:?} latent {:?} threads {}",
        sample.dims(),
        latent.dims(),
        candle_core::utils::get_num_threads()
    );
    if let Some(r) = reference {
        println!(
            "candle vs reference: encode rel L2 {:.2e}, decode rel L2 {:.2e}",
            relative_l2(&mean, &r["latent"])?,
            relative_l2(&dec, &r["sample"])?
        );
    }
    println!(
        "candle encode_ms={enc_ms:.1} decode_ms={dec_ms:.1} \
         encode_min_ms={enc_min:.1} decode_min_ms={dec_min:.1}"
    );
    Ok(())
}
