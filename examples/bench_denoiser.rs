//! Diffusion processor CPU benchmark: ms per output frame, split by stage (VAE encode,
//! first-frame image SR, video denoise, VAE decode), for the tiny test checkpoint
//! (`turbovsr make-test-model --preset tiny`) at 64x64 -> 256x256, 49-frame windows, f32.
//!
//! `cargo run --release --example bench_denoiser [-- STEPS [RUNS]]` (defaults 4 and 3).
//!
//! `cargo run --release --example bench_denoiser -- scaling [RUNS]` prints how the steady-state
//! cost (a later window, overlap 9) grows with the output area (256², 512², 1024², window 49)
//! and with the window length (17, 25, 33, 49 frames at 256²), and what spatial denoising tiles
//! add at 1024² (tiles of 8 latents with overlap 4), 4 steps, f32.
//! Each run processes a stream's first window (frames 0..=40 emitted, with the first-frame pass)
//! and a later window (frames 1..=40, conditioned on the previous output); the median of the
//! runs after a warm-up is printed per stage.

use std::time::Duration;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions};
use gstturbovsr::pipeline::resize_bicubic;
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

/// Stage times of a later window (frames `1..=window-9` emitted, overlap 9) of `size`² output,
/// median of `runs` after a warm-up; returns (emitted frames, tiles, stats).
fn steady_window(
    dir: &std::path::Path,
    size: usize,
    window: usize,
    tile: (usize, usize),
    runs: usize,
) -> Result<(usize, usize, Vec<WindowStats>)> {
    let settings = ProcessorSettings {
        steps: 4,
        tile_size: tile.0,
        tile_overlap: tile.1,
        ..Default::default()
    };
    let mut p = DiffusionProcessor::load(dir, &settings, &Device::Cpu)?;
    let lr = Tensor::randn(0f32, 0.3, (3, window, size / 4, size / 4), &Device::Cpu)?
        .clamp(-1f32, 1f32)?;
    let frames = resize_bicubic(&lr, size, size)?;
    let cancel = CancelToken::default();
    let emit = window - 9;
    let mut stats = Vec::new();
    // The first window of the stream sets up the conditioning frame; the later ones are timed.
    p.process(
        &WindowInput {
            index: 0,
            frames: &frames,
            real_frames: window,
            emit: 0..emit + 1,
            starts_stream: true,
        },
        &cancel,
    )?;
    for run in 0..=runs {
        p.process(
            &WindowInput {
                index: 1 + run as u64,
                frames: &frames,
                real_frames: window,
                emit: 1..emit + 1,
                starts_stream: false,
            },
            &cancel,
        )?;
        if run > 0 {
            stats.push(p.stats().clone());
        }
    }
    let tiles = stats[0].tiles;
    Ok((emit, tiles, stats))
}

fn scaling(runs: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("turbovsr-bench-scaling-{}", std::process::id()));
    write_test_model(&dir, &TestModelOptions::new(Preset::Tiny))?;
    println!("tiny test model, later windows (overlap 9), 4 steps, f32 CPU, median of {runs}");
    println!(
        "output     window  tiles  emitted  encode  video  decode  total (ms per output frame)  per megapixel"
    );
    let cases = [
        (256, 49, (0, 8)),
        (512, 49, (0, 8)),
        (1024, 49, (0, 8)),
        (256, 17, (0, 8)),
        (256, 25, (0, 8)),
        (256, 33, (0, 8)),
        (1024, 49, (8, 4)),
    ];
    for (size, window, tile) in cases {
        let (emitted, tiles, stats) = steady_window(&dir, size, window, tile, runs)?;
        let per = |f: &dyn Fn(&WindowStats) -> Duration| {
            median(stats.iter().map(|s| ms(f(s))).collect()) / emitted as f64
        };
        let (e, v, d) = (per(&|s| s.encode), per(&|s| s.video), per(&|s| s.decode));
        let total = e + v + d;
        let mpix = (size * size) as f64 / 1e6;
        println!(
            "{:<10} {window:>6} {tiles:>6} {emitted:>8} {e:>7.2} {v:>6.2} {d:>7.2} {total:>7.2} {:>28.2}",
            format!("{size}x{size}"),
            total / mpix
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("scaling") {
        let runs = std::env::args()
            .nth(2)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(2);
        return scaling(runs);
    }
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
