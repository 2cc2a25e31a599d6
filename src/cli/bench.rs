//! `turbovsr bench`: one window of the diffusion processor at a given output size, timed by stage
//! (VAE encode, first-frame image SR, video denoise, VAE decode) in ms per output frame, with the
//! stage's matmul FLOPs ([`crate::model::flops`]) and the achieved TFLOP/s, and the peak device
//! memory on CUDA (issue 8: one 49-frame 1080p window at 1, 2 and 4 steps).
//!
//! Each steps value loads the processor, runs the stream's first window (which also does the
//! first-frame image pass; reported, and a warm-up), then `runs` later windows conditioned on
//! the previous one (overlap frames as the element uses them): the steady state of a stream. The
//! frames are made on the device, so upload and download are not in the times (the element does
//! one of each per window).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::forward::parse_device;
use crate::model::profile;
use crate::pipeline::resize::resize_bicubic;
use crate::pipeline::{
    CancelToken, DiffusionProcessor, FrameProcessor, Precision, ProcessorSettings, WindowInput,
    WindowStats,
};

/// Arguments of `turbovsr bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// TurboVSR checkpoint folder (e.g. from `make-test-model --preset ltx-2b`).
    #[arg(long)]
    pub model: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// The transformer's: auto (bf16 on CUDA, f32 on the CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// The VAE's: auto (f32), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub vae_precision: String,
    /// Output width.
    #[arg(long, default_value_t = 1920)]
    pub width: usize,
    /// Output height.
    #[arg(long, default_value_t = 1080)]
    pub height: usize,
    /// Input = output / scale.
    #[arg(long, default_value_t = crate::pipeline::settings::DEFAULT_SCALE)]
    pub scale: usize,
    /// Frames per window (1 + 8k).
    #[arg(long, default_value_t = crate::pipeline::window::DEFAULT_WINDOW)]
    pub window: usize,
    /// Frames shared by consecutive windows (1 + 8j).
    #[arg(long, default_value_t = crate::pipeline::window::DEFAULT_OVERLAP)]
    pub overlap: usize,
    /// Sampler steps to measure, comma-separated.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Later windows timed per steps value (the median is printed).
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Spatial denoising tile in latents (0: the checkpoint's).
    #[arg(long, default_value_t = 0)]
    pub tile_size: usize,
    /// Overlap of spatial tiles in latents.
    #[arg(long, default_value_t = crate::pipeline::settings::DEFAULT_TILE_OVERLAP)]
    pub tile_overlap: usize,
    /// After the timed windows of the last steps value (the cheapest in the usual 4,2,1 order),
    /// one more window with the device time of each part of the model (the device synchronized
    /// around every part, so slower; it is not among the timed windows).
    #[arg(long)]
    pub profile: bool,
}

/// One measured window: its stage times and FLOPs, frames emitted, and peak device memory.
#[derive(Debug, Clone)]
pub struct WindowMeasure {
    pub stats: WindowStats,
    pub emitted: usize,
    pub peak_bytes: Option<u64>,
}

/// Stages in print order: (name, time, FLOPs).
pub fn stages(s: &WindowStats) -> [(&'static str, Duration, u64); 4] {
    [
        ("encode", s.encode, s.encode_flops),
        ("first-frame", s.first_frame, s.first_frame_flops),
        ("video", s.video, s.video_flops),
        ("decode", s.decode, s.decode_flops),
    ]
}

pub fn parse_bench_precision(name: &str) -> Result<Precision> {
    match name {
        "auto" => Ok(Precision::Auto),
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        "f16" => Ok(Precision::F16),
        other => bail!("unknown precision {other:?}: expected auto, f32, bf16 or f16"),
    }
}

/// The CUDA memory pool's high-water mark: cudarc allocates with `cuMemAllocAsync` from the
/// device's default pool where the driver supports it, so the pool's `USED_MEM_HIGH` is the peak
/// of the tensors alive at once.
#[cfg(feature = "cuda")]
mod peak {
    use candle_core::Device;
    use cudarc::driver::{result, sys};

    fn pool(device: &Device) -> Option<sys::CUmemoryPool> {
        let cuda = device.as_cuda_device().ok()?;
        let ctx = cuda.cuda_stream().context().clone();
        if !ctx.has_async_alloc() {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        // SAFETY: the device handle comes from a live context.
        unsafe { result::device::get_default_mem_pool(ctx.cu_device()).ok() }
    }

    pub fn reset(device: &Device) {
        if let Some(pool) = pool(device) {
            let mut zero: u64 = 0;
            // SAFETY: USED_MEM_HIGH takes a cuuint64_t; resetting it to 0 is documented.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut zero as *mut u64 as *mut std::ffi::c_void,
                );
            }
        }
    }

    pub fn read(device: &Device) -> Option<u64> {
        let pool = pool(device)?;
        let mut value: u64 = 0;
        // SAFETY: USED_MEM_HIGH is a cuuint64_t.
        let r = unsafe {
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut value as *mut u64 as *mut std::ffi::c_void,
            )
        };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(value)
    }
}

#[cfg(not(feature = "cuda"))]
mod peak {
    use candle_core::Device;
    pub fn reset(_: &Device) {}
    pub fn read(_: &Device) -> Option<u64> {
        None
    }
}

/// The windows measured at one steps value.
#[derive(Debug, Clone)]
pub struct StepsMeasure {
    pub steps: usize,
    /// The stream's first window (with the first-frame image pass): measured at the first steps
    /// value only.
    pub first: Option<WindowMeasure>,
    pub later: Vec<WindowMeasure>,
    /// `--profile`: the profiled window and its parts (last steps value only).
    pub profile: Option<(
        WindowMeasure,
        std::collections::BTreeMap<&'static str, profile::Part>,
    )>,
}

/// Runs one stream: its first window at `args.steps[0]`, then `runs` later windows at each steps
/// value in turn (the processor changes steps mid-stream, so the model loads once and no steps
/// value after the first pays for another first window).
pub fn measure(args: &BenchArgs, device: &Device) -> Result<Vec<StepsMeasure>> {
    if args.scale == 0
        || !args.width.is_multiple_of(args.scale)
        || !args.height.is_multiple_of(args.scale)
    {
        bail!(
            "output {}x{} is not a multiple of scale {}",
            args.width,
            args.height,
            args.scale
        );
    }
    if args.overlap >= args.window {
        bail!(
            "overlap {} must be smaller than the window {}",
            args.overlap,
            args.window
        );
    }
    let Some(&first_steps) = args.steps.first() else {
        bail!("no steps value to measure");
    };
    let settings = ProcessorSettings {
        precision: parse_bench_precision(&args.precision)?,
        vae_precision: parse_bench_precision(&args.vae_precision)?,
        steps: first_steps,
        tile_size: args.tile_size,
        tile_overlap: args.tile_overlap,
        ..Default::default()
    };
    let mut p = DiffusionProcessor::load(&args.model, &settings, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (in_w, in_h) = (args.width / args.scale, args.height / args.scale);
    // A random low-resolution clip, bicubic-upsampled to the output grid as the engine does.
    let lr = Tensor::randn(0f32, 0.3, (3, args.window, in_h, in_w), device)?.clamp(-1f32, 1f32)?;
    let frames = resize_bicubic(&lr, args.height, args.width)?;
    let cancel = CancelToken::default();
    let step = args.window - args.overlap;
    let mut index = 0u64;
    let mut run = |p: &mut DiffusionProcessor| -> Result<_> {
        // Window 0 outputs frames 0..=W-O, a later window 1..=W-O (README "Windows").
        let (emit, starts) = if index == 0 {
            (0..step + 1, true)
        } else {
            (1..step + 1, false)
        };
        device.synchronize()?;
        peak::reset(device);
        let emitted = emit.len();
        p.process(
            &WindowInput {
                index,
                frames: &frames,
                real_frames: args.window,
                emit,
                starts_stream: starts,
            },
            &cancel,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        device.synchronize()?;
        index += 1;
        Ok(WindowMeasure {
            stats: p.stats().clone(),
            emitted,
            peak_bytes: peak::read(device),
        })
    };
    let mut measured = Vec::with_capacity(args.steps.len());
    for (i, &steps) in args.steps.iter().enumerate() {
        p.set_steps(steps)?;
        let first = if i == 0 { Some(run(&mut p)?) } else { None };
        let mut later = Vec::with_capacity(args.runs.max(1));
        for _ in 0..args.runs.max(1) {
            later.push(run(&mut p)?);
        }
        let profiled = if args.profile && i + 1 == args.steps.len() {
            profile::take();
            profile::set_enabled(true);
            let window = run(&mut p);
            profile::set_enabled(false);
            Some((window?, profile::take()))
        } else {
            None
        };
        measured.push(StepsMeasure {
            steps,
            first,
            later,
            profile: profiled,
        });
    }
    Ok(measured)
}

/// The profiled window: its stages, then each part's device time per window and per output
/// frame, its calls, and its share of the window (parts nest: a block includes its attention).
pub fn profile_report(
    window: &WindowMeasure,
    parts: &std::collections::BTreeMap<&'static str, profile::Part>,
) -> String {
    let total: f64 = stages(&window.stats)
        .iter()
        .map(|s| s.1.as_secs_f64() * 1e3)
        .sum();
    let by_stage: Vec<String> = stages(&window.stats)
        .iter()
        .map(|(name, t, _)| format!("{name} {:.1}", t.as_secs_f64() * 1e3))
        .collect();
    let mut out = format!(
        "  profiled window (device synchronized around every part: slower than the timed ones), \
         {total:.1} ms in all ({} ms):",
        by_stage.join(", ")
    );
    let mut rows: Vec<_> = parts.iter().collect();
    rows.sort_by_key(|(_, part)| std::cmp::Reverse(part.time));
    for (name, part) in rows {
        let ms = part.time.as_secs_f64() * 1e3;
        out += &format!(
            "\n    {name:<46} {ms:>10.1} ms {:>8.2} ms/frame {:>7} calls {:>5.1} %",
            ms / window.emitted.max(1) as f64,
            part.calls,
            if total > 0.0 { 100.0 * ms / total } else { 0.0 }
        );
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One printed line per window kind: ms per output frame by stage, TFLOP/s by stage, the
/// window's FLOPs and peak memory.
pub fn report_line(label: &str, windows: &[WindowMeasure]) -> String {
    let emitted = windows[0].emitted as f64;
    let mut line = format!("  {label:<6} {:>3} frames |", windows[0].emitted);
    let mut total_ms = 0.0;
    let mut parts = Vec::new();
    for i in 0..4 {
        let (name, _, flops) = stages(&windows[0].stats)[i];
        let ms = median(
            windows
                .iter()
                .map(|w| stages(&w.stats)[i].1.as_secs_f64() * 1e3)
                .collect(),
        );
        total_ms += ms;
        let tflops = if ms > 0.0 {
            flops as f64 / (ms * 1e-3) / 1e12
        } else {
            0.0
        };
        line += &format!(" {name} {:.2}", ms / emitted);
        parts.push(format!(
            "{name} {:.3} TFLOP, {tflops:.2} TFLOP/s",
            flops as f64 / 1e12
        ));
    }
    line += &format!(" | total {:.2} ms/frame", total_ms / emitted);
    let flops: u64 = stages(&windows[0].stats).iter().map(|s| s.2).sum();
    line += &format!(
        " ({:.2} TFLOP/s overall)",
        flops as f64 / (total_ms * 1e-3) / 1e12
    );
    line += &format!("\n         {}", parts.join("; "));
    if let Some(peak) = windows.iter().filter_map(|w| w.peak_bytes).max() {
        line += &format!("\n         peak device memory {} MiB", peak >> 20);
    }
    line
}

/// Runs `turbovsr bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let name = device_name(&device);
    let memory = crate::pipeline::device::device_memory(&device)
        .map(|(_, total)| format!(", {} MiB", total >> 20))
        .unwrap_or_default();
    println!(
        "turbovsr bench: {} on {}{name}{memory}, precision {} (VAE {}), {}x{} from {}x{}, window {} overlap {}, tile-size {}",
        args.model.display(),
        args.device,
        args.precision,
        args.vae_precision,
        args.width,
        args.height,
        args.width / args.scale.max(1),
        args.height / args.scale.max(1),
        args.window,
        args.overlap,
        args.tile_size
    );
    println!(
        "ms per output frame by stage (median of {} later windows per steps value; one stream, \
         its first window at the first steps value)",
        args.runs.max(1)
    );
    for m in measure(args, &device)? {
        println!(
            "steps {}: {} transformer evaluations per window, {} spatial tiles",
            m.steps,
            m.later[0].stats.video_evaluations * m.later[0].stats.tiles.max(1),
            m.later[0].stats.tiles.max(1)
        );
        if let Some(first) = &m.first {
            println!("{}", report_line("first", std::slice::from_ref(first)));
        }
        println!("{}", report_line("later", &m.later));
        if let Some((window, parts)) = &m.profile {
            println!("{}", profile_report(window, parts));
        }
    }
    Ok(())
}

fn device_name(device: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        if let Ok(name) = cuda.cuda_stream().context().name() {
            return format!(" ({name})");
        }
    }
    let _ = device;
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::turbovsr::{write_test_model, Preset, TestModelOptions};

    #[test]
    fn a_tiny_cpu_window_is_measured_by_stage_with_its_flops() {
        let dir = std::env::temp_dir().join(format!("turbovsr-bench-test-{}", std::process::id()));
        write_test_model(&dir, &TestModelOptions::new(Preset::Tiny)).unwrap();
        let args = BenchArgs {
            model: dir.clone(),
            device: "cpu".into(),
            precision: "auto".into(),
            vae_precision: "auto".into(),
            width: 64,
            height: 64,
            scale: 4,
            window: 9,
            overlap: 1,
            steps: vec![2, 1],
            runs: 1,
            tile_size: 0,
            tile_overlap: 8,
            profile: true,
        };
        let measured = {
            let _lock = profile::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            measure(&args, &Device::Cpu).unwrap()
        };
        assert_eq!(measured.len(), 2);
        let (first, later) = (measured[0].first.clone().unwrap(), &measured[0].later);
        // Window 0 emits 0..=8, a later one 1..=8.
        assert_eq!(first.emitted, 9);
        assert_eq!(later[0].emitted, 8);
        // The first window has the image pass, a later one is conditioned on the last frame.
        assert!(first.stats.first_frame_flops > 0);
        assert_eq!(later[0].stats.first_frame_flops, 0);
        for w in [&first, &later[0]] {
            assert!(w.stats.encode_flops > 0 && w.stats.decode_flops > 0);
            assert!(w.stats.video_flops > 0);
            assert_eq!(w.peak_bytes, None, "no device memory pool on the CPU");
        }
        // Two steps: two transformer evaluations of the same token count per window (untiled).
        assert_eq!(later[0].stats.video_evaluations, 2);
        assert_eq!(later[0].stats.video_flops % 2, 0);
        // --profile: one more window at the last steps value, with every part of the model.
        assert!(measured[0].profile.is_none());
        let (window, parts) = measured[1].profile.as_ref().expect("profiled window");
        assert_eq!(window.emitted, 8);
        assert!(parts["transformer block"].calls > 0, "{parts:?}");
        for part in [
            "transformer block",
            "transformer block: self-attention",
            "transformer block: cross-attention",
            "transformer block: feed-forward",
            "attention: scores, softmax, values",
            "VAE: conv3d",
        ] {
            assert!(
                parts.get(part).is_some_and(|p| p.calls > 0),
                "{part}: {parts:?}"
            );
        }
        assert!(profile_report(window, parts).contains("VAE: conv3d"));
        assert!(!profile::enabled());
        // Then one step in the same stream: no second first window, half the transformer work.
        let one = &measured[1];
        assert_eq!((one.steps, one.first.is_none()), (1, true));
        assert_eq!(one.later[0].emitted, 8);
        assert_eq!(one.later[0].stats.first_frame_flops, 0);
        assert_eq!(one.later[0].stats.video_evaluations, 1);
        assert_eq!(
            2 * one.later[0].stats.video_flops,
            later[0].stats.video_flops
        );
        let line = report_line("later", later);
        assert!(
            line.contains("encode") && line.contains("TFLOP/s"),
            "{line}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_size_off_the_scale_is_an_error() {
        let args = BenchArgs {
            model: "/nonexistent".into(),
            device: "cpu".into(),
            precision: "auto".into(),
            vae_precision: "auto".into(),
            width: 65,
            height: 64,
            scale: 4,
            window: 9,
            overlap: 1,
            steps: vec![1],
            runs: 1,
            tile_size: 0,
            tile_overlap: 8,
            profile: false,
        };
        let e = measure(&args, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("65x64") && e.contains("scale 4"), "{e}");
    }
}
