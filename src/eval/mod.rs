//! Evaluation of super-resolution quality on a held-out set (issue 11): PSNR (luma Y and RGB),
//! SSIM and a sharpness measure, for the bicubic baseline and for a model at several sampler
//! step counts, written as a Markdown table (and JSON) by `turbovsr eval`.
//!
//! Every method runs through the library path the element uses ([`Upscaler`]: the processor
//! from [`load_processor`](crate::pipeline::load_processor), windows, bicubic to the output grid,
//! one output frame per input frame), and its output is quantised to 8 bits as the element
//! writes it before it is compared with the ground truth. Metrics are averaged over the frames
//! of a clip, then over clips.

pub mod metrics;
pub mod set;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::pipeline::window::padded_clip_len;
use crate::pipeline::{
    ColorFix, DeviceChoice, OutputSize, ProcessorSettings, Upscaler, WindowConfig,
};
use crate::upscale_cli::{ColorFixArg, Device};
use set::{frame_to_image, EvalSet};

/// Arguments of `turbovsr eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Eval set folder: manifest.json and clip_XXX/{hr,lr}_YYY.png (written by
    /// `python -m turbovsr_train.data.evalset`).
    #[arg(long)]
    pub set: PathBuf,
    /// Model to evaluate beside bicubic: a checkpoint folder (default: the shipped default
    /// model), or `bicubic` for the baseline alone.
    #[arg(long)]
    pub model: Option<String>,
    /// Sampler step counts to evaluate the model at, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 2, 4, 8])]
    pub steps: Vec<usize>,
    /// Write the Markdown table here (it is printed either way).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the results as JSON here (infinite PSNRs, of identical frames, are null).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Frames per window, 1 + 8k (default: the smallest that holds a whole clip, at least 9).
    #[arg(long)]
    pub window: Option<usize>,
    /// Seed of the fixed sampling noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Colour correction of the model output towards the bicubic input.
    #[arg(long, value_enum, default_value_t = ColorFixArg::None)]
    pub color_fix: ColorFixArg,
    /// Evaluate the first N clips only.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// One method to evaluate: a `model` setting at a step count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Row label: `bicubic`, `model@4`.
    pub label: String,
    /// The `model` setting ("" is the shipped default model).
    pub model: String,
    pub steps: usize,
}

/// The averaged metrics of one method.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    pub steps: Option<usize>,
    /// PSNR on luma Y (BT.601), dB, `scale`-pixel border cropped.
    pub psnr_y: f64,
    /// PSNR on RGB, dB, same crop.
    pub psnr_rgb: f64,
    /// SSIM on Y (Gaussian 11 / 1.5), same crop.
    pub ssim: f64,
    /// Mean Sobel gradient magnitude of Y ([`metrics::sharpness`]).
    pub sharpness: f64,
    /// Wall-clock seconds per output frame (loading excluded).
    pub seconds_per_frame: f64,
}

/// The means of one method on one clip (over its frames).
#[derive(Debug, Clone, Serialize)]
pub struct ClipRow {
    pub method: String,
    pub clip: String,
    pub psnr_y: f64,
    pub psnr_rgb: f64,
    pub ssim: f64,
    pub sharpness: f64,
}

/// What [`evaluate`] measures.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean sharpness of the ground truth.
    pub ground_truth_sharpness: f64,
    /// One row per method, averaged over frames then clips.
    pub rows: Vec<Row>,
    /// One row per method and clip.
    pub per_clip: Vec<ClipRow>,
}

/// What `turbovsr eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub set: String,
    pub set_summary: String,
    /// The manifest's `degradation` (how the inputs were made), if it has one.
    pub degradation: Option<serde_json::Value>,
    pub model: String,
    pub clips: usize,
    pub frames_per_clip: usize,
    pub scale: usize,
    pub window: usize,
    pub device: String,
    /// Sharpness of the ground truth, the value the methods should come close to.
    pub ground_truth_sharpness: f64,
    pub rows: Vec<Row>,
    /// Per method and clip (JSON only).
    pub per_clip: Vec<ClipRow>,
}

/// Per-clip sums of per-frame values, averaged at the end.
#[derive(Default, Clone, Copy)]
struct Acc {
    psnr_y: f64,
    psnr_rgb: f64,
    ssim: f64,
    sharpness: f64,
    n: usize,
}

impl Acc {
    fn add(&mut self, other: &Acc) {
        self.psnr_y += other.psnr_y;
        self.psnr_rgb += other.psnr_rgb;
        self.ssim += other.ssim;
        self.sharpness += other.sharpness;
        self.n += other.n;
    }

    fn mean(&self) -> Acc {
        let n = self.n.max(1) as f64;
        Acc {
            psnr_y: self.psnr_y / n,
            psnr_rgb: self.psnr_rgb / n,
            ssim: self.ssim / n,
            sharpness: self.sharpness / n,
            n: 1,
        }
    }
}

/// The window for clips of `frames` frames: `window` if given, else the smallest 1 + 8k that
/// holds the clip (at least 9, the shortest window the scheduler takes). The first window is
/// full length too, so that a clip is one window.
pub fn eval_window(frames: usize, window: Option<usize>) -> anyhow::Result<WindowConfig> {
    let window = window.unwrap_or_else(|| padded_clip_len(frames).max(9));
    WindowConfig::new(window, 1)
        .and_then(|w| w.with_first_window(window))
        .with_context(|| format!("--window {window}"))
}

/// Evaluates `methods` on the first `clips` clips of `set`; `progress` gets one line per clip.
pub fn evaluate(
    set: &EvalSet,
    methods: &[Method],
    settings: &ProcessorSettings,
    windows: WindowConfig,
    clips: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Evaluation> {
    let scale = set.manifest.scale;
    let border = scale;
    let mut gt_sharpness = Acc::default();
    let mut rows = Vec::new();
    let mut per_clip = Vec::new();
    for (m, method) in methods.iter().enumerate() {
        let settings = ProcessorSettings {
            steps: method.steps,
            ..settings.clone()
        };
        let mut upscaler =
            Upscaler::load(&method.model, &settings, windows, OutputSize::Scale(scale))
                .with_context(|| format!("cannot load {}", method.label))?;
        let mut total = Acc::default();
        let mut seconds = 0.0;
        let mut frames_out = 0usize;
        for c in 0..clips {
            let clip = set.load_clip(c)?;
            let start = Instant::now();
            let mut out = Vec::with_capacity(clip.lr.len());
            for frame in clip.lr {
                out.extend(upscaler.push(frame)?);
            }
            out.extend(upscaler.finish()?);
            seconds += start.elapsed().as_secs_f64();
            if out.len() != clip.hr.len() {
                bail!(
                    "{} returned {} frames for clip {} of {} frames",
                    method.label,
                    out.len(),
                    clip.name,
                    clip.hr.len()
                );
            }
            frames_out += out.len();
            let mut acc = Acc::default();
            for (f, (frame, hr)) in out.iter().zip(&clip.hr).enumerate() {
                let sr = frame_to_image(frame)?;
                let what = || format!("{} frame {f} of {}", method.label, clip.name);
                acc.add(&Acc {
                    psnr_y: metrics::psnr_y(&sr, hr, border).with_context(what)?,
                    psnr_rgb: metrics::psnr_rgb(&sr, hr, border).with_context(what)?,
                    ssim: metrics::ssim_y(&sr, hr, border).with_context(what)?,
                    sharpness: metrics::sharpness(&sr, border).with_context(what)?,
                    n: 1,
                });
                if m == 0 {
                    gt_sharpness.add(&Acc {
                        sharpness: metrics::sharpness(hr, border)?,
                        n: 1,
                        ..Acc::default()
                    });
                }
            }
            let clip_mean = acc.mean();
            progress(&format!(
                "{} clip {}/{} ({}): PSNR-Y {:.2} dB, SSIM {:.4}",
                method.label,
                c + 1,
                clips,
                clip.name,
                clip_mean.psnr_y,
                clip_mean.ssim
            ));
            total.add(&clip_mean);
            per_clip.push(ClipRow {
                method: method.label.clone(),
                clip: clip.name.clone(),
                psnr_y: clip_mean.psnr_y,
                psnr_rgb: clip_mean.psnr_rgb,
                ssim: clip_mean.ssim,
                sharpness: clip_mean.sharpness,
            });
        }
        let mean = total.mean();
        rows.push(Row {
            method: method.label.clone(),
            steps: (method.model != crate::pipeline::processor::BICUBIC_MODEL)
                .then_some(method.steps),
            psnr_y: mean.psnr_y,
            psnr_rgb: mean.psnr_rgb,
            ssim: mean.ssim,
            sharpness: mean.sharpness,
            seconds_per_frame: seconds / frames_out.max(1) as f64,
        });
    }
    // Ground-truth sharpness averaged over all frames: clips have the same frame count, so
    // this equals the mean over clips of the clip means, as for the rows.
    Ok(Evaluation {
        ground_truth_sharpness: gt_sharpness.mean().sharpness,
        rows,
        per_clip,
    })
}

fn device_choice(d: Device) -> DeviceChoice {
    match d {
        Device::Auto => DeviceChoice::Auto,
        Device::Cpu => DeviceChoice::Cpu,
        Device::Cuda => DeviceChoice::Cuda,
    }
}

fn color_fix(c: ColorFixArg) -> ColorFix {
    match c {
        ColorFixArg::None => ColorFix::None,
        ColorFixArg::Wavelet => ColorFix::Wavelet,
        ColorFixArg::Adain => ColorFix::Adain,
    }
}

/// The methods of a run: bicubic, then `model` at each step count (none for `bicubic`).
pub fn methods(model: &str, steps: &[usize]) -> Vec<Method> {
    let bicubic = crate::pipeline::processor::BICUBIC_MODEL;
    let mut out = vec![Method {
        label: bicubic.to_string(),
        model: bicubic.to_string(),
        steps: 1,
    }];
    if model != bicubic {
        out.extend(steps.iter().map(|&s| Method {
            label: format!("model@{s}"),
            model: model.to_string(),
            steps: s,
        }));
    }
    out
}

fn fmt_db(v: f64) -> String {
    if v.is_infinite() {
        "inf".into()
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown report: the command, the set, the model, then the table.
pub fn markdown(report: &Report, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{command}`\n");
    let _ = writeln!(s, "Set: `{}` ({})\n", report.set, report.set_summary);
    if let Some(d) = &report.degradation {
        let _ = writeln!(s, "Degradation: `{d}`\n");
    }
    let _ = writeln!(
        s,
        "Model: {}; {} clips x {} frames, scale {}, window {}, device {}. Metrics on the \
         8-bit output against the ground truth, a {}-pixel border cropped, averaged over \
         frames then clips; PSNR-Y and SSIM on luma Y (BT.601); sharpness = mean Sobel \
         gradient magnitude of Y (closer to the ground truth's is better).\n",
        report.model,
        report.clips,
        report.frames_per_clip,
        report.scale,
        report.window,
        report.device,
        report.scale
    );
    let _ = writeln!(
        s,
        "| method | PSNR-Y (dB) | PSNR-RGB (dB) | SSIM | sharpness | \\|sharpness - GT\\| | s/frame |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| ground truth | | | | {:.4} | 0 | |",
        report.ground_truth_sharpness
    );
    for r in &report.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.3} |",
            r.method,
            fmt_db(r.psnr_y),
            fmt_db(r.psnr_rgb),
            r.ssim,
            r.sharpness,
            (r.sharpness - report.ground_truth_sharpness).abs(),
            r.seconds_per_frame
        );
    }
    s
}

/// `turbovsr eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let set = EvalSet::open(&args.set)?;
    let m = &set.manifest;
    let clips = args.limit.unwrap_or(m.clips.len()).min(m.clips.len());
    if clips == 0 {
        bail!("--limit 0 leaves no clips to evaluate");
    }
    for &s in &args.steps {
        if ![1, 2, 4, 8, 16].contains(&s) {
            bail!("--steps {s}: the sampler takes 1, 2, 4, 8 or 16 steps");
        }
    }
    let windows = eval_window(m.frames, args.window)?;
    let model = args.model.clone().unwrap_or_default();
    let model_name = if model.is_empty() {
        // The hash names the weights, so tables of different default models can be told apart.
        format!(
            "{} (default-{:016x})",
            crate::pipeline::default_model::DEFAULT_MODEL_NAME,
            crate::pipeline::default_model::default_model_hash()
        )
    } else {
        format!("`{model}`")
    };
    let settings = ProcessorSettings {
        device: device_choice(args.device),
        seed: args.seed,
        color_fix: color_fix(args.color_fix),
        ..ProcessorSettings::default()
    };
    let device = crate::pipeline::load::select_device(&settings)?;
    let methods = methods(&model, &args.steps);
    eprintln!(
        "turbovsr eval: {} ({}), {} clip{}, methods {}",
        args.set.display(),
        set.summary(),
        clips,
        if clips == 1 { "" } else { "s" },
        methods
            .iter()
            .map(|m| m.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let evaluation = evaluate(&set, &methods, &settings, windows, clips, |line| {
        eprintln!("turbovsr eval: {line}")
    })?;
    let report = Report {
        set: args.set.display().to_string(),
        set_summary: set.summary(),
        degradation: m.other.get("degradation").cloned(),
        model: model_name,
        clips,
        frames_per_clip: m.frames,
        scale: m.scale,
        window: windows.window(),
        device: format!("{:?}", device.location()),
        ground_truth_sharpness: evaluation.ground_truth_sharpness,
        rows: evaluation.rows,
        per_clip: evaluation.per_clip,
    };
    let command: Vec<String> = std::env::args().collect();
    let table = markdown(&report, &command.join(" "));
    print!("{table}");
    if let Some(path) = &args.out {
        write_file(path, &table)?;
    }
    if let Some(path) = &args.json {
        write_file(path, &(serde_json::to_string_pretty(&report)? + "\n"))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write '{}'", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_holds_the_clip() {
        assert_eq!(eval_window(5, None).unwrap().window(), 9);
        assert_eq!(eval_window(17, None).unwrap().window(), 17);
        assert_eq!(eval_window(18, None).unwrap().window(), 25);
        assert_eq!(eval_window(18, Some(9)).unwrap().window(), 9);
        let e = format!("{:#}", eval_window(5, Some(10)).unwrap_err());
        assert!(e.contains("--window 10"), "{e}");
    }

    #[test]
    fn methods_are_bicubic_then_the_model_per_step_count() {
        let m = methods("", &[1, 4]);
        let labels: Vec<&str> = m.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(labels, ["bicubic", "model@1", "model@4"]);
        assert_eq!((m[2].model.as_str(), m[2].steps), ("", 4));
        assert_eq!(methods("bicubic", &[1, 2]).len(), 1);
    }

    #[test]
    fn markdown_has_the_command_rows_and_infinite_psnr() {
        let row = |method: &str, psnr: f64| Row {
            method: method.into(),
            steps: None,
            psnr_y: psnr,
            psnr_rgb: psnr,
            ssim: 0.9,
            sharpness: 0.05,
            seconds_per_frame: 0.01,
        };
        let report = Report {
            set: "set".into(),
            set_summary: "1 clips x 5 frames, scale 4".into(),
            degradation: Some(serde_json::json!({"kind": "box"})),
            model: "m".into(),
            clips: 1,
            frames_per_clip: 5,
            scale: 4,
            window: 9,
            device: "Cpu".into(),
            ground_truth_sharpness: 0.07,
            rows: vec![row("bicubic", 31.234), row("model@1", f64::INFINITY)],
            per_clip: Vec::new(),
        };
        let md = markdown(&report, "turbovsr eval --set set");
        assert!(md.contains("`turbovsr eval --set set`"), "{md}");
        assert!(
            md.contains("| bicubic | 31.23 | 31.23 | 0.9000 | 0.0500 | 0.0200 | 0.010 |"),
            "{md}"
        );
        assert!(md.contains("| model@1 | inf | inf |"), "{md}");
        assert!(md.contains("Degradation: `{\"kind\":\"box\"}`"), "{md}");
        assert!(md.contains("| ground truth | | | | 0.0700 | 0 | |"), "{md}");
    }
}
