//! Times the LTX transformer's forward (f32, CPU) on the medium benchmark config written by
//! `scripts/bench/transformer_reference.py` (4 blocks, 8 heads of 64, 2,000 tokens, random
//! weights), and checks the output against the reference's.
//!
//!     cargo run --release --example bench_transformer -- target/bench/transformer [repeat]
//!
//! Prints `forward_ms_median=<ms>` last. `scripts/bench/transformer.sh` runs both sides.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::transformer::{
    LtxVideoTransformer3DModel, RopePositions, TransformerInputs,
};

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
    let model = LtxVideoTransformer3DModel::from_pretrained(&dir, DType::F32, &device)?;
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &device)
        .with_context(|| format!("reading {}/inputs.safetensors", dir.display()))?;
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
    if let Ok(expected) = candle_core::safetensors::load(dir.join("expected.safetensors"), &device)
    {
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
