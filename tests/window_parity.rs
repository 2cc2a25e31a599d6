//! End-to-end parity of the element's window path (DESIGN §2, §4, §5; issue 24) against the
//! PyTorch reference `training/turbovsr_train/reference.py` on diffusers' VAE and transformer,
//! on the fixtures of `scripts/fixtures/gen_window.py`: tiny random checkpoints, small clips,
//! f32 on the CPU.
//!
//! The element runs through [`Upscaler`], the gst-free streaming path the element and the CLI
//! use (window scheduling, one upload, bicubic resize, the diffusion processor, one download),
//! which returns float RGB frames before any 8-bit quantization. Every output frame and the
//! whole clip must be within a relative L2 error of 1e-4 of the reference.
//!
//! Spatial tiles: the element tapers each tile's Gaussian (sigma = tile / 4) linearly to 0 one
//! latent outside the tile on every side that ends inside the latent
//! (`src/sample/tiles.rs::tile_weights`), where DESIGN §5 writes a plain Gaussian: with a plain
//! one a tile's weight is not 0 where the tile ends, so the blend steps there. The project keeps
//! the taper (README, "Checking a module against diffusers"); the reference computes both, and
//! tiled cases are compared with its tapered run (`frames_tapered`; the plain one differs by
//! 3e-3 relative L2 on the `tiled` fixture).
//!
//!     cargo test --test window_parity -- --nocapture              # per-case numbers

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::turbovsr::TurboVsrConfig;
use gstturbovsr::pipeline::{
    ColorFix, DeviceChoice, OutputSize, Precision, ProcessorSettings, RgbFrame, Upscaler,
    WindowConfig,
};
use gstturbovsr::sample::{plan, FixedNoise};
use serde_json::Value;

const F32_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/window")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/fixtures/gen_window.py writes it)",
            path.display()
        )
    })
}

/// One fixture case: its settings (`case.json`), LR frames and reference outputs.
struct Case {
    name: String,
    meta: Value,
    model: PathBuf,
    /// (F, 3, h, w) f32
    frames: Tensor,
    expected: HashMap<String, Tensor>,
}

impl Case {
    fn open(name: &str) -> Self {
        let dir = root().join(name);
        let text = std::fs::read_to_string(dir.join("case.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("case.json").display()));
        let meta: Value = serde_json::from_str(&text).unwrap();
        let model = root()
            .join("models")
            .join(meta["model"].as_str().expect("case.json: model"));
        let frames = load(&dir.join("inputs.safetensors"))["frames"]
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let expected = load(&dir.join("expected.safetensors"));
        Self {
            name: name.to_string(),
            meta,
            model,
            frames,
            expected,
        }
    }

    fn usize(&self, key: &str) -> usize {
        self.meta[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: case.json has no integer `{key}`", self.name))
            as usize
    }

    fn seed(&self) -> u64 {
        self.meta["seed"].as_u64().expect("case.json: seed")
    }

    /// The element's settings for this case: f32 on the CPU, no colour correction.
    fn settings(&self) -> ProcessorSettings {
        ProcessorSettings {
            device: DeviceChoice::Cpu,
            precision: Precision::F32,
            vae_precision: Precision::F32,
            steps: self.usize("steps"),
            seed: self.seed(),
            tile_size: self.usize("tile_size"),
            tile_overlap: self.usize("tile_overlap"),
            color_fix: ColorFix::None,
            ..Default::default()
        }
    }

    fn windows(&self) -> WindowConfig {
        WindowConfig::new(self.usize("window"), self.usize("overlap"))
            .and_then(|w| w.with_first_window(self.usize("first_window")))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The frames each window of the reference's plan emits.
    fn reference_batches(&self) -> Vec<usize> {
        self.meta["windows"]
            .as_array()
            .expect("case.json: windows")
            .iter()
            .map(|w| (w["emit_end"].as_u64().unwrap() - w["emit_start"].as_u64().unwrap()) as usize)
            .collect()
    }
}

/// Runs the clip through the element's streaming path; returns the output frames (F, 3, H, W)
/// and how many frames each window emitted (one non-empty batch per window).
fn run_element(case: &Case) -> (Tensor, Vec<usize>) {
    let mut up = Upscaler::load(
        case.model.to_str().unwrap(),
        &case.settings(),
        case.windows(),
        OutputSize::Scale(case.usize("scale")),
    )
    .unwrap_or_else(|e| panic!("{}: {e:#}", case.name));
    let (n, _, h, w) = case.frames.dims4().unwrap();
    let mut out: Vec<RgbFrame> = Vec::new();
    let mut batches = Vec::new();
    let mut take = |frames: Vec<RgbFrame>| {
        if !frames.is_empty() {
            batches.push(frames.len());
            out.extend(frames);
        }
    };
    for i in 0..n {
        let rgb: Vec<f32> = case
            .frames
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        take(
            up.push(RgbFrame::new(w, h, rgb, None))
                .unwrap_or_else(|e| panic!("{}: frame {i}: {e:#}", case.name)),
        );
    }
    take(
        up.finish()
            .unwrap_or_else(|e| panic!("{}: finish: {e:#}", case.name)),
    );
    let (oh, ow) = (out[0].height, out[0].width);
    let data: Vec<f32> = out.iter().flat_map(|f| f.rgb.iter().copied()).collect();
    (
        Tensor::from_vec(data, (out.len(), 3, oh, ow), &Device::Cpu).unwrap(),
        batches,
    )
}

/// Compares the element's output on `name` with the reference output `key`; prints the
/// per-frame and whole-clip relative L2 errors and asserts both are within [`F32_TOL`].
fn check(name: &str, key: &str) {
    let case = Case::open(name);
    let expected = case
        .expected
        .get(key)
        .unwrap_or_else(|| panic!("{name}: expected.safetensors has no `{key}`"));
    let t0 = std::time::Instant::now();
    let (got, batches) = run_element(&case);
    let elapsed = t0.elapsed();
    assert_eq!(got.dims(), expected.dims(), "{name}: output shape");
    assert_eq!(
        batches,
        case.reference_batches(),
        "{name}: frames emitted per window (the reference's window plan)"
    );
    let per_frame: Vec<f32> = (0..got.dim(0).unwrap())
        .map(|i| relative_l2(&got.get(i).unwrap(), &expected.get(i).unwrap()).unwrap())
        .collect();
    let clip = relative_l2(&got, expected).unwrap();
    let (worst, worst_at) = per_frame
        .iter()
        .copied()
        .enumerate()
        .map(|(i, e)| (e, i))
        .fold((0f32, 0usize), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!(
        "{name} [{key}]: {} frames {:?}, windows {batches:?}: clip relative L2 {clip:.2e}, \
         worst frame {worst_at} {worst:.2e}, per frame [{}] ({:.1} s)",
        got.dim(0).unwrap(),
        &got.dims()[2..],
        per_frame
            .iter()
            .map(|e| format!("{e:.1e}"))
            .collect::<Vec<_>>()
            .join(" "),
        elapsed.as_secs_f64()
    );
    assert!(
        clip <= F32_TOL && worst <= F32_TOL,
        "{name} [{key}]: relative L2 clip {clip:.3e}, frame {worst_at} {worst:.3e} > {F32_TOL}"
    );
}

#[test]
fn cases_are_the_generated_ones() {
    let text = std::fs::read_to_string(root().join("cases.json")).unwrap();
    let names: Vec<String> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        names,
        ["single_window", "two_windows", "three_windows", "tiled"],
        "a case without its test here"
    );
}

/// The fixed noise field (DESIGN §4) of every case's seed, bit for bit.
#[test]
fn noise_field_is_the_references_bit_for_bit() {
    for name in ["single_window", "two_windows", "three_windows", "tiled"] {
        let case = Case::open(name);
        let want = &case.expected["noise"];
        let (c, t, h, w) = want.dims4().unwrap();
        let got = FixedNoise::new(case.seed())
            .tile((c, t, h, w), (0, 0), &Device::Cpu)
            .unwrap();
        let got: Vec<u32> = got
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u32> = want
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{name}: {differ} of {} noise values differ",
            want.len()
        );
    }
}

/// The schedule of every sampling pass (DESIGN §4): noise levels, real steps, and the trained
/// step size the model is conditioned on.
#[test]
fn schedules_are_the_references() {
    for name in ["single_window", "two_windows", "three_windows", "tiled"] {
        let case = Case::open(name);
        let config = TurboVsrConfig::load(&case.model).unwrap();
        for (tokens, want) in case.meta["schedules"].as_object().unwrap() {
            let n: usize = tokens.parse().unwrap();
            let got = plan(case.usize("steps"), n, &config.shift, &config.step_sizes).unwrap();
            let want = want.as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{name}, {n} tokens");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                let w: Vec<f64> = w
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
                assert!(
                    close(g.s, w[0]) && close(g.d, w[1]) && close(g.d_model, w[2]),
                    "{name}, {n} tokens, step {i}: element (s, d, d_model) = ({}, {}, {}), \
                     reference {w:?}",
                    g.s,
                    g.d,
                    g.d_model
                );
            }
        }
    }
}

/// (a) One window of 13 frames padded to 17, output padded to the model grid and cropped; 1 step.
#[test]
fn single_window() {
    check("single_window", "frames");
}

/// (b) Two windows: fusion of the overlapping latent, the one-frame re-encode of output frame
/// 8, a padded tail; a timestep-conditioned decoder; 2 steps.
#[test]
fn two_windows() {
    check("two_windows", "frames");
}

/// (b') The short first window (9 frames), a full window and a padded tail fused with it; 2x2
/// patches, a fixed shift, a masked prompt; 4 steps.
#[test]
fn three_windows() {
    check("three_windows", "frames");
}

/// (c) A frame larger than the tile: 2 x 3 spatial tiles blended every step, in the first-frame
/// image SR and the video SR; 4 steps. Compared with the reference run with the element's
/// tapered tile weights.
#[test]
fn tiled_with_the_elements_tile_weights() {
    check("tiled", "frames_tapered");
}
