//! Diffusion processor CPU benchmark: ms per output frame, split by stage (VAE encode,
//! first-frame image SR, video denoise, VAE decode), for the tiny test checkpoint
//! (`turbovsr make-test-model --preset tiny`) at 64x64 -> 256x256, 49-frame windows, f32.
//!
//! `cargo run --release --example bench_denoiser [-- STEPS [RUNS]]` (defaults 4 and 3).
//! Each run processes a stream's first window (frames 0..=40 emitted, with the first-frame pass)
//! and a later window (frames 1..=40, conditioned on the previous output); the median of the
//! runs after a warm-up is printed per stage.

use std::time::Duration;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions};
use gstturbovsr::pipeline::resize::resize_bicubic;
use gstturbovsr::pipeline::{
    CancelToken, DiffusionProcessor, FrameProcessor, ProcessorSettings, WindowInput, WindowStats,
};

const FRAMES: usize = 49;
const EMIT: usize = 41;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("turbovsr-bench-denoiser-{}", std::process::id()));
    write_test_model(&dir, &TestModelOptions::new(Preset::Tiny))?;
    let settings = ProcessorSettings {
        steps,
        ..Default::default()
    };
    let mut p = DiffusionProcessor::load(&dir, &settings, &Device::Cpu)
        .with_context(|| format!("loading {}", dir.display()))?;
    // A smooth 64x64 test clip, bicubic-upsampled to the output grid as the engine does.
    let lr = Tensor::randn(0f32, 0.3, (3, FRAMES, 64, 64), &Device::Cpu)?.clamp(-1f32, 1f32)?;
    let frames = resize_bicubic(&lr, 256, 256)?;
    let cancel = CancelToken::default();
    let mut first: Vec<WindowStats> = Vec::new();
    let mut later: Vec<WindowStats> = Vec::new();
    for run in 0..=runs {
        p.reset();
        let w0 = WindowInput {
            index: 0,
            frames: &frames,
            real_frames: FRAMES,
            emit: 0..EMIT,
            starts_stream: true,
        };
        p.process(&w0, &cancel)?;
        let s0 = p.stats().clone();
        let w1 = WindowInput {
            index: 1,
            emit: 1..EMIT,
            starts_stream: false,
            ..w0
        };
        p.process(&w1, &cancel)?;
        if run > 0 {
            first.push(s0);
            later.push(p.stats().clone());
        }
    }
    println!(
        "tiny test model, 64x64 -> 256x256, window {FRAMES}, steps {steps}, f32 CPU, median of {runs}"
    );
    println!(
        "window       emitted  encode  first-frame  video  decode  total  (ms per output frame)"
    );
    for (name, stats, emitted) in [("first", &first, EMIT), ("later", &later, EMIT - 1)] {
        let per = |f: &dyn Fn(&WindowStats) -> Duration| {
            median(stats.iter().map(|s| ms(f(s))).collect()) / emitted as f64
        };
        let (e, f, v, d) = (
            per(&|s| s.encode),
            per(&|s| s.first_frame),
            per(&|s| s.video),
            per(&|s| s.decode),
        );
        println!(
            "{name:<12} {emitted:>7} {e:>7.2} {f:>12.2} {v:>6.2} {d:>7.2} {:>6.2}",
            e + f + v + d
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
