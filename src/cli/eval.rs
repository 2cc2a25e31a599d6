//! `turbovsr eval` (DESIGN §7): super-resolution quality on a held-out set (issues 11 and 25): PSNR (luma Y
//! and RGB), SSIM, NIQE (no reference), blockiness at the model's token grid, temporal flicker,
//! a sharpness measure and frames per second, for the bicubic baseline, a model at several
//! sampler step counts and other methods' output frames (`--outputs`,
//! `scripts/bench/peers.py`), written as a Markdown table (and JSON) by `turbovsr eval`.
//!
//! Every model method runs through the library path the element uses ([`Upscaler`]: the
//! processor from [`load_processor`](crate::pipeline::load_processor), windows, bicubic to the
//! output grid, one output frame per input frame), and its output is quantised to 8 bits as the
//! element writes it before it is compared with the ground truth. Metrics are averaged over the
//! frames of a clip, then over clips.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use super::options::{ColorFixArg, Device};
use crate::eval::metrics::{self, Image};
use crate::eval::niqe;
use crate::eval::set::{self, frame_to_image, EvalSet};
use crate::pipeline::window::padded_clip_len;
use crate::pipeline::{OutputSize, ProcessorSettings, Upscaler, WindowConfig};

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
    /// Other methods' output frames to score beside bicubic and the model, as NAME=DIR:
    /// DIR/clip_XXX/sr_YYY.png for every clip and frame (and DIR/timing.json with
    /// `seconds_per_frame`, if it exists), as `scripts/bench/peers.py` writes them.
    #[arg(long, value_delimiter = ',')]
    pub outputs: Vec<String>,
    /// Grid of the blockiness measure in output pixels: the model's token (the VAE's spatial
    /// compression x the transformer's patch; 8 for the shipped default).
    #[arg(long, default_value_t = 8)]
    pub block_grid: usize,
}

/// One method to evaluate: a `model` setting at a step count, or another method's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Row label: `bicubic`, `model@4`, `lanczos`.
    pub label: String,
    /// The `model` setting ("" is the shipped default model); unused with `frames`.
    pub model: String,
    pub steps: usize,
    /// Precomputed output frames: DIR/clip_XXX/sr_YYY.png (`--outputs NAME=DIR`).
    pub frames: Option<PathBuf>,
}

impl Method {
    /// `NAME=DIR` of `--outputs`.
    pub fn outputs(spec: &str) -> anyhow::Result<Method> {
        let (name, dir) = spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
            .with_context(|| format!("--outputs '{spec}': expected NAME=DIR"))?;
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--outputs '{spec}': '{}' is not a folder", dir.display());
        }
        Ok(Method {
            label: name.to_string(),
            model: String::new(),
            steps: 0,
            frames: Some(dir),
        })
    }
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
    /// NIQE of the output ([`niqe`], lower is more natural), over the frames of at least
    /// 194x194 (none: every frame is smaller).
    pub niqe: Option<f64>,
    /// [`metrics::blockiness`] at the token grid (1: no grid).
    pub blockiness: f64,
    /// [`metrics::flicker`], 8-bit luma units (none for one-frame clips).
    pub flicker: Option<f64>,
    /// Wall-clock seconds per output frame (loading excluded; for `--outputs`, what its
    /// timing.json says, if it has one).
    pub seconds_per_frame: Option<f64>,
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
    pub niqe: Option<f64>,
    pub blockiness: f64,
    pub flicker: Option<f64>,
}

/// What [`evaluate`] measures.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean sharpness of the ground truth.
    pub ground_truth_sharpness: f64,
    /// Mean NIQE and blockiness of the ground truth.
    pub ground_truth_niqe: Option<f64>,
    pub ground_truth_blockiness: f64,
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
    pub ground_truth_niqe: Option<f64>,
    pub ground_truth_blockiness: f64,
    /// The blockiness grid in pixels.
    pub block_grid: usize,
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
    blockiness: f64,
    n: usize,
    /// Values not every frame has (NIQE of large frames, flicker after the first frame).
    niqe: Partial,
    flicker: Partial,
}

/// A sum over the frames that have the value.
#[derive(Default, Clone, Copy)]
struct Partial {
    sum: f64,
    n: usize,
}

impl Partial {
    fn of(v: Option<f64>) -> Partial {
        v.map_or_else(Partial::default, |sum| Partial { sum, n: 1 })
    }

    fn add(&mut self, o: Partial) {
        self.sum += o.sum;
        self.n += o.n;
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The mean as one value again (for averaging clip means).
    fn mean_partial(&self) -> Partial {
        Partial::of(self.mean())
    }
}

impl Acc {
    fn add(&mut self, other: &Acc) {
        self.psnr_y += other.psnr_y;
        self.psnr_rgb += other.psnr_rgb;
        self.ssim += other.ssim;
        self.sharpness += other.sharpness;
        self.blockiness += other.blockiness;
        self.n += other.n;
        self.niqe.add(other.niqe);
        self.flicker.add(other.flicker);
    }

    fn mean(&self) -> Acc {
        let n = self.n.max(1) as f64;
        Acc {
            psnr_y: self.psnr_y / n,
            psnr_rgb: self.psnr_rgb / n,
            ssim: self.ssim / n,
            sharpness: self.sharpness / n,
            blockiness: self.blockiness / n,
            n: 1,
            niqe: self.niqe.mean_partial(),
            flicker: self.flicker.mean_partial(),
        }
    }
}

/// NIQE of frames of at least NIQE's [`niqe::MIN_SIDE`] per side, `None` for smaller ones.
fn niqe_of(img: &Image) -> anyhow::Result<Option<f64>> {
    if img.width < niqe::MIN_SIDE || img.height < niqe::MIN_SIDE {
        return Ok(None);
    }
    niqe::niqe(&img.luma()).map(Some)
}

/// Seconds per frame from an `--outputs` folder's timing.json, if it has one.
fn outputs_timing(dir: &Path) -> anyhow::Result<Option<f64>> {
    let path = dir.join("timing.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("'{}' is not JSON", path.display()))?;
    v.get("seconds_per_frame")
        .and_then(|s| s.as_f64())
        .map(Some)
        .with_context(|| format!("'{}' has no number seconds_per_frame", path.display()))
}

/// One method's output frames of one clip, in order.
struct ClipOutput {
    frames: Vec<Image>,
    seconds: f64,
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
/// `grid`: the blockiness grid in pixels.
pub fn evaluate(
    set: &EvalSet,
    methods: &[Method],
    settings: &ProcessorSettings,
    windows: WindowConfig,
    clips: usize,
    grid: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Evaluation> {
    let scale = set.manifest.scale;
    let border = scale;
    let mut gt = Acc::default();
    let mut rows = Vec::new();
    let mut per_clip = Vec::new();
    for (m, method) in methods.iter().enumerate() {
        let mut upscaler = match &method.frames {
            Some(_) => None,
            None => {
                let settings = ProcessorSettings {
                    steps: method.steps,
                    ..settings.clone()
                };
                Some(
                    Upscaler::load(&method.model, &settings, windows, OutputSize::Scale(scale))
                        .with_context(|| format!("cannot load {}", method.label))?,
                )
            }
        };
        let mut total = Acc::default();
        let mut seconds = 0.0;
        let mut frames_out = 0usize;
        for c in 0..clips {
            let clip = set.load_clip(c)?;
            let out = match (&mut upscaler, &method.frames) {
                (Some(upscaler), _) => upscale_clip(upscaler, &clip)?,
                (None, Some(dir)) => read_outputs(dir, &clip)?,
                (None, None) => unreachable!("a method is a model or frames"),
            };
            seconds += out.seconds;
            if out.frames.len() != clip.hr.len() {
                bail!(
                    "{} returned {} frames for clip {} of {} frames",
                    method.label,
                    out.frames.len(),
                    clip.name,
                    clip.hr.len()
                );
            }
            frames_out += out.frames.len();
            let mut acc = Acc::default();
            for (f, (sr, hr)) in out.frames.iter().zip(&clip.hr).enumerate() {
                let what = || format!("{} frame {f} of {}", method.label, clip.name);
                let flicker = match f {
                    0 => None,
                    _ => Some(
                        metrics::flicker(&out.frames[f - 1], sr, &clip.hr[f - 1], hr, border)
                            .with_context(what)?,
                    ),
                };
                acc.add(&Acc {
                    psnr_y: metrics::psnr_y(sr, hr, border).with_context(what)?,
                    psnr_rgb: metrics::psnr_rgb(sr, hr, border).with_context(what)?,
                    ssim: metrics::ssim_y(sr, hr, border).with_context(what)?,
                    sharpness: metrics::sharpness(sr, border).with_context(what)?,
                    blockiness: metrics::blockiness(sr, grid).with_context(what)?,
                    n: 1,
                    niqe: Partial::of(niqe_of(sr).with_context(what)?),
                    flicker: Partial::of(flicker),
                });
                if m == 0 {
                    gt.add(&Acc {
                        sharpness: metrics::sharpness(hr, border)?,
                        blockiness: metrics::blockiness(hr, grid)?,
                        niqe: Partial::of(niqe_of(hr)?),
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
                niqe: clip_mean.niqe.mean(),
                blockiness: clip_mean.blockiness,
                flicker: clip_mean.flicker.mean(),
            });
        }
        let mean = total.mean();
        let seconds_per_frame = match &method.frames {
            Some(dir) => outputs_timing(dir)?,
            None => Some(seconds / frames_out.max(1) as f64),
        };
        rows.push(Row {
            method: method.label.clone(),
            steps: (method.frames.is_none()
                && method.model != crate::pipeline::processor::BICUBIC_MODEL)
                .then_some(method.steps),
            psnr_y: mean.psnr_y,
            psnr_rgb: mean.psnr_rgb,
            ssim: mean.ssim,
            sharpness: mean.sharpness,
            niqe: mean.niqe.mean(),
            blockiness: mean.blockiness,
            flicker: mean.flicker.mean(),
            seconds_per_frame,
        });
    }
    // Ground-truth values averaged over all frames: clips have the same frame count, so
    // this equals the mean over clips of the clip means, as for the rows.
    let gt = gt.mean();
    Ok(Evaluation {
        ground_truth_sharpness: gt.sharpness,
        ground_truth_niqe: gt.niqe.mean(),
        ground_truth_blockiness: gt.blockiness,
        rows,
        per_clip,
    })
}

/// One clip through `upscaler`, timed.
fn upscale_clip(upscaler: &mut Upscaler, clip: &set::Clip) -> anyhow::Result<ClipOutput> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(clip.lr.len());
    for frame in &clip.lr {
        out.extend(upscaler.push(frame.clone())?);
    }
    out.extend(upscaler.finish()?);
    let seconds = start.elapsed().as_secs_f64();
    let frames = out
        .iter()
        .map(frame_to_image)
        .collect::<anyhow::Result<_>>()?;
    Ok(ClipOutput { frames, seconds })
}

/// An `--outputs` folder's frames of one clip: DIR/clip_XXX/sr_YYY.png, each the ground truth's
/// size.
fn read_outputs(dir: &Path, clip: &set::Clip) -> anyhow::Result<ClipOutput> {
    let mut frames = Vec::with_capacity(clip.hr.len());
    for (f, hr) in clip.hr.iter().enumerate() {
        let path = dir.join(&clip.name).join(format!("sr_{f:03}.png"));
        let (w, h, px) = set::read_png_rgb8(&path)?;
        if (w, h) != (hr.width, hr.height) {
            bail!(
                "'{}' is {w}x{h}, the ground truth is {}x{}",
                path.display(),
                hr.width,
                hr.height
            );
        }
        frames.push(set::rgb8_to_image(w, h, &px));
    }
    Ok(ClipOutput {
        frames,
        seconds: 0.0,
    })
}

/// The methods of a run: bicubic, then `model` at each step count (none for `bicubic`).
pub fn methods(model: &str, steps: &[usize]) -> Vec<Method> {
    let bicubic = crate::pipeline::processor::BICUBIC_MODEL;
    let mut out = vec![Method {
        label: bicubic.to_string(),
        model: bicubic.to_string(),
        steps: 1,
        frames: None,
    }];
    if model != bicubic {
        out.extend(steps.iter().map(|&s| Method {
            label: format!("model@{s}"),
            model: model.to_string(),
            steps: s,
            frames: None,
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

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"))
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
         frames then clips; PSNR-Y and SSIM on luma Y (BT.601); NIQE (lower is more natural) \
         on frames of at least 194x194; blockiness = mean luma step across the {}-pixel token \
         grid / elsewhere (1: no grid); flicker = mean |output's frame-to-frame change - the \
         ground truth's| in 8-bit luma; sharpness = mean Sobel gradient magnitude of Y \
         (closer to the ground truth's is better); fps = output frames per second.\n",
        report.model,
        report.clips,
        report.frames_per_clip,
        report.scale,
        report.window,
        report.device,
        report.scale,
        report.block_grid
    );
    let _ = writeln!(
        s,
        "| method | PSNR-Y (dB) | PSNR-RGB (dB) | SSIM | NIQE | blockiness | flicker | sharpness | fps |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| ground truth | | | | {} | {:.3} | 0 | {:.4} | |",
        fmt_opt(report.ground_truth_niqe, 2),
        report.ground_truth_blockiness,
        report.ground_truth_sharpness
    );
    for r in &report.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {} | {:.3} | {} | {:.4} | {} |",
            r.method,
            fmt_db(r.psnr_y),
            fmt_db(r.psnr_rgb),
            r.ssim,
            fmt_opt(r.niqe, 2),
            r.blockiness,
            fmt_opt(r.flicker, 2),
            r.sharpness,
            fmt_opt(r.seconds_per_frame.map(|s| 1.0 / s.max(1e-9)), 2)
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
        device: args.device.into(),
        seed: args.seed,
        color_fix: args.color_fix.into(),
        ..ProcessorSettings::default()
    };
    let device = crate::pipeline::device::select_device(&settings)?;
    let mut methods = methods(&model, &args.steps);
    for spec in &args.outputs {
        methods.push(Method::outputs(spec)?);
    }
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
    let evaluation = evaluate(
        &set,
        &methods,
        &settings,
        windows,
        clips,
        args.block_grid,
        |line| eprintln!("turbovsr eval: {line}"),
    )?;
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
        ground_truth_niqe: evaluation.ground_truth_niqe,
        ground_truth_blockiness: evaluation.ground_truth_blockiness,
        block_grid: args.block_grid,
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
            niqe: Some(4.5),
            blockiness: 1.02,
            flicker: None,
            seconds_per_frame: Some(0.01),
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
            ground_truth_niqe: None,
            ground_truth_blockiness: 1.0,
            block_grid: 8,
            rows: vec![row("bicubic", 31.234), row("model@1", f64::INFINITY)],
            per_clip: Vec::new(),
        };
        let md = markdown(&report, "turbovsr eval --set set");
        assert!(md.contains("`turbovsr eval --set set`"), "{md}");
        assert!(
            md.contains(
                "| bicubic | 31.23 | 31.23 | 0.9000 | 4.50 | 1.020 | n/a | 0.0500 | 100.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| model@1 | inf | inf |"), "{md}");
        assert!(md.contains("Degradation: `{\"kind\":\"box\"}`"), "{md}");
        assert!(
            md.contains("| ground truth | | | | n/a | 1.000 | 0 | 0.0700 | |"),
            "{md}"
        );
    }
}
