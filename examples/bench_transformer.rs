//! Times the LTX transformer's forward (f32, CPU) on the medium benchmark config written by
//! `scripts/bench/transformer_reference.py` (4 blocks, 8 heads of 64, 2,000 tokens, random
//! weights), and checks the output against the reference's.
//!
//!     cargo run --release --example bench_transformer -- target/bench/transformer [repeat]
//!
//! Without that folder it builds the same config with its own random weights and inputs.
//!
//! Prints `forward_ms_median=<ms>` last. `scripts/bench/transformer.sh` runs both sides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::transformer::{
    LtxTransformerConfig, LtxVideoTransformer3DModel, RopePositions, TransformerInputs,
};

/// The medium benchmark config (as `scripts/bench/transformer_reference.py`).
fn bench_config() -> LtxTransformerConfig {
    LtxTransformerConfig {
        num_attention_heads: 8,
        attention_head_dim: 64,
        cross_attention_dim: 512,
        num_layers: 4,
        ..Default::default()
    }
}

/// Random weights of any requested shape: N(0, 1/fan_in) for matrices, N(0, 0.01) for vectors.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        _name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let std = match s.dims() {
            [_, fan_in] => 1.0 / (*fan_in as f64).sqrt(),
            _ => 0.1,
        };
        Tensor::randn(0f32, std as f32, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn random_setup(device: &Device) -> Result<(LtxVideoTransformer3DModel, HashMap<String, Tensor>)> {
    let cfg = bench_config();
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    let model = LtxVideoTransformer3DModel::new(&cfg, vb)?;
    let (f, h, w, l) = (5usize, 20usize, 20usize, 128usize);
    let mask: Vec<f32> = (0..l).map(|i| if i < l - 32 { 1.0 } else { 0.0 }).collect();
    let inputs = HashMap::from([
        (
            "hidden_states".to_string(),
            Tensor::randn(0f32, 1.0, (1, f * h * w, cfg.in_channels), device)?,
        ),
        (
            "encoder_hidden_states".to_string(),
            Tensor::randn(0f32, 1.0, (1, l, cfg.caption_channels), device)?,
        ),
        ("timestep".to_string(), Tensor::new(&[700f32], device)?),
        (
            "encoder_attention_mask".to_string(),
            Tensor::from_vec(mask, (1, l), device)?,
        ),
        (
            "video_shape".to_string(),
            Tensor::new(&[f as i64, h as i64, w as i64], device)?,
        ),
        (
            "rope_interpolation_scale".to_string(),
            Tensor::new(&[8f32 / 25.0, 32.0, 32.0], device)?,
        ),
    ]);
    Ok((model, inputs))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/bench/transformer".into()),
    );
    let repeat: usize = match args.next() {
        Some(r) => r.parse().context("repeat must be a number")?,
        None => 5,
    };
    let device = Device::Cpu;
    let (model, inputs) = if dir.join("config.json").is_file() {
        let model = LtxVideoTransformer3DModel::from_pretrained(&dir, DType::F32, &device)?;
        let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &device)
            .with_context(|| format!("reading {}/inputs.safetensors", dir.display()))?;
        (model, inputs)
    } else {
        println!("{} not found: random weights and inputs", dir.display());
        random_setup(&device)?
    };
    let vs = inputs["video_shape"].to_vec1::<i64>()?;
    let s = inputs["rope_interpolation_scale"].to_vec1::<f32>()?;
    let x = TransformerInputs {
        hidden_states: &inputs["hidden_states"],
        encoder_hidden_states: &inputs["encoder_hidden_states"],
        timestep: &inputs["timestep"],
        encoder_attention_mask: inputs.get("encoder_attention_mask"),
        video_shape: (vs[0] as usize, vs[1] as usize, vs[2] as usize),
        positions: RopePositions::Grid {
            rope_interpolation_scale: Some([s[0], s[1], s[2]]),
        },
    };
    let sample = model.forward(&x)?; // warm-up
    let expected = dir.join("expected.safetensors");
    if let Ok(expected) = candle_core::safetensors::load(&expected, &device) {
        println!(
            "relative L2 vs reference: {:.2e}",
            relative_l2(&sample, &expected["sample"])?
        );
    }
    let mut times = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        model.forward(&x)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "candle {} threads, times_ms={:?}",
        candle_core::utils::get_num_threads(),
        times
            .iter()
            .map(|t| (t * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    times.sort_by(f64::total_cmp);
    println!("forward_ms_median={:.3}", times[times.len() / 2]);
    Ok(())
}
