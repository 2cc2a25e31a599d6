//! `turbovsr parity`: runs the committed parity fixtures (`tests/fixtures/vae/*`,
//! `tests/fixtures/transformer/*`) on a device and precision and compares every output with the
//! CPU f32 result of the same module on the same inputs (relative L2, DESIGN §3.1). This is the
//! check a GPU machine runs (issue 8: CUDA f32 within 1e-3 of the CPU, bf16 within 2e-2), with
//! the binary alone: no Rust toolchain is needed there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::forward::{parse_device, parse_precision, ForwardModule, TransformerForward};
use crate::model::vae::{AutoencoderKlLtxVideo, VaeTiling};
use crate::model::{lcg_tensor, relative_l2};

/// Arguments of `turbovsr parity`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParityArgs {
    /// The fixtures folder (holding `vae/` and `transformer/`).
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// The transformer fixtures' precision: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// The VAE fixtures' precision: auto (f32, what the pipeline runs the VAE in), f32, bf16 or
    /// f16.
    #[arg(long, default_value = "auto")]
    pub vae_precision: String,
    /// Largest relative L2 error against the CPU f32 result that passes.
    #[arg(long)]
    pub tolerance: f32,
}

/// One compared output.
#[derive(Debug, Clone)]
pub struct ParityResult {
    pub name: String,
    pub shape: Vec<usize>,
    pub rel_l2: f32,
}

/// The VAE tiling a fixture case was made with (`cases.json`).
fn tiling_of(case: &serde_json::Value) -> Result<VaeTiling> {
    let t = &case["tiling"];
    if t.is_null() {
        return Ok(VaeTiling::default());
    }
    let n = |k: &str| -> Result<usize> {
        t[k].as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("tiling.{k} is missing or not a number"))
    };
    Ok(VaeTiling {
        spatial: true,
        temporal: t["temporal"].as_bool().unwrap_or(false),
        tile_sample_min_height: n("min_height")?,
        tile_sample_min_width: n("min_width")?,
        tile_sample_min_num_frames: n("min_frames")?,
        tile_sample_stride_height: n("stride_height")?,
        tile_sample_stride_width: n("stride_width")?,
        tile_sample_stride_num_frames: n("stride_frames")?,
    })
}

fn to_cpu_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
}

/// Every case of one VAE fixture folder, as (case.output name, output) on `device` in `dtype`.
fn run_vae(dir: &Path, device: &Device, dtype: DType) -> Result<Vec<(String, Tensor)>> {
    let manifest_path = dir.join("cases.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let tensors = candle_core::safetensors::load(dir.join("cases.safetensors"), device)
        .with_context(|| format!("reading {}", dir.join("cases.safetensors").display()))?;
    let mut vae = AutoencoderKlLtxVideo::load(dir, device, dtype)?;
    let cases = manifest["cases"]
        .as_array()
        .with_context(|| format!("{}: no `cases` array", manifest_path.display()))?;
    let mut out = Vec::new();
    for case in cases {
        let name = case["name"]
            .as_str()
            .with_context(|| format!("{}: a case has no name", manifest_path.display()))?;
        vae.set_tiling(tiling_of(case).with_context(|| format!("case {name}"))?)?;
        let get = |k: &str| -> Result<Tensor> {
            let t = tensors.get(&format!("{name}.{k}")).with_context(|| {
                format!(
                    "{}: no tensor {name}.{k}",
                    dir.join("cases.safetensors").display()
                )
            })?;
            Ok(t.to_dtype(dtype)?)
        };
        match case["kind"].as_str() {
            Some("encode") => {
                let post = vae.encode(&get("sample")?)?;
                out.push((format!("{name}.mean"), to_cpu_f32(&post.mean)?));
                out.push((format!("{name}.logvar"), to_cpu_f32(&post.logvar)?));
            }
            Some("decode") => {
                let timestep = tensors.get(&format!("{name}.timestep"));
                let sample = vae.decode(&get("latent")?, timestep)?;
                out.push((format!("{name}.sample"), to_cpu_f32(&sample)?));
            }
            other => bail!(
                "{}: case {name} has unknown kind {other:?}",
                manifest_path.display()
            ),
        }
    }
    Ok(out)
}

/// One transformer fixture folder (`inputs.safetensors`), as (output name, output).
fn run_transformer(dir: &Path, device: &Device, dtype: DType) -> Result<Vec<(String, Tensor)>> {
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), device)
        .with_context(|| format!("reading {}", dir.join("inputs.safetensors").display()))?;
    let module = TransformerForward::load(dir, device, dtype)?;
    let outputs: HashMap<String, Tensor> = module.forward(&inputs)?;
    let mut names: Vec<&String> = outputs.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|k| Ok((k.clone(), to_cpu_f32(&outputs[k])?)))
        .collect()
}

/// The attention kernel on `device` in `dtype` against the CPU's f32 attention of the same
/// (rounded) inputs, at the shapes the fixtures do not reach: head sizes 64 and 128 (the fused
/// CUDA kernel's; the transformer fixtures have heads of 4), lengths that are not a multiple of
/// its tiles, a masking key bias, and q/k/v as head views of (b, len, heads, d) memory, as the
/// transformer passes them.
fn attention_results(device: &Device, dtype: DType) -> Result<Vec<ParityResult>> {
    use crate::model::transformer::attention::{attention, default_max_score_elems};
    // (label, batch, heads, q_len, kv_len, head size, masked keys)
    let cases = [
        ("self d64", 2, 4, 1000, 1000, 64, 0),
        ("cross d64 masked", 2, 4, 333, 77, 64, 20),
        ("self d128", 1, 2, 300, 300, 128, 0),
    ];
    let mut results = Vec::new();
    for (i, &(label, b, heads, q_len, kv_len, d, masked)) in cases.iter().enumerate() {
        let seed = 3 * i as u64;
        // (b, len, heads, d) -> (b, heads, len, d) views, rounded to `dtype` once for both sides
        let make = |len: usize, s: u64| -> Result<Tensor> {
            Ok(lcg_tensor(&[b, len, heads, d], s)?.to_dtype(dtype)?)
        };
        let (q, k, v) = (
            make(q_len, seed)?,
            make(kv_len, seed + 1)?,
            make(kv_len, seed + 2)?,
        );
        let bias = (masked > 0)
            .then(|| -> Result<Tensor> {
                let row: Vec<f32> = (0..kv_len)
                    .map(|j| if j + masked >= kv_len { -10_000.0 } else { 0.0 })
                    .collect();
                Ok(Tensor::from_vec(row, (1, kv_len), &Device::Cpu)?.repeat((b, 1))?)
            })
            .transpose()?;
        let scale = 1.0 / (d as f64).sqrt();
        let run = |dev: &Device, t: DType| -> Result<Tensor> {
            let view = |x: &Tensor| -> Result<Tensor> {
                Ok(x.to_dtype(t)?.to_device(dev)?.transpose(1, 2)?)
            };
            let bias = bias.as_ref().map(|x| x.to_device(dev)).transpose()?;
            let out = attention(
                &view(&q)?,
                &view(&k)?,
                &view(&v)?,
                bias.as_ref(),
                scale,
                default_max_score_elems(dev),
            )?;
            to_cpu_f32(&out)
        };
        let want = run(&Device::Cpu, DType::F32)?;
        let have = run(device, dtype)?;
        results.push(ParityResult {
            name: format!("attention/{label} {b}x{heads}x{q_len}x{kv_len} out"),
            shape: want.dims().to_vec(),
            rel_l2: relative_l2(&have, &want)?,
        });
    }
    Ok(results)
}

/// The fixture folders under `fixtures`: (label, folder, is_vae), sorted.
fn fixture_dirs(fixtures: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut dirs = Vec::new();
    for (sub, is_vae) in [("vae", true), ("transformer", false)] {
        let root = fixtures.join(sub);
        let entries = std::fs::read_dir(&root)
            .with_context(|| format!("reading the fixtures folder {}", root.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.join("config.json").is_file() {
                let label = format!(
                    "{sub}/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
                dirs.push((label, path, is_vae));
            }
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "no fixtures under {} (expected vae/*/ and transformer/*/ folders with config.json)",
            fixtures.display()
        );
    }
    Ok(dirs)
}

/// Runs the attention checks and every fixture on `device` (the transformer's and the attention's
/// in `dtype`, the VAE's in `vae_dtype`) and on the CPU in f32; returns each output's error.
pub fn compare(
    fixtures: &Path,
    device: &Device,
    dtype: DType,
    vae_dtype: DType,
) -> Result<Vec<ParityResult>> {
    let mut results = attention_results(device, dtype).context("the attention checks")?;
    for (label, dir, is_vae) in fixture_dirs(fixtures)? {
        let dtype = if is_vae { vae_dtype } else { dtype };
        let run = |d: &Device, t: DType| {
            if is_vae {
                run_vae(&dir, d, t)
            } else {
                run_transformer(&dir, d, t)
            }
        };
        let reference = run(&Device::Cpu, DType::F32).with_context(|| format!("{label} on cpu"))?;
        let got = run(device, dtype).with_context(|| format!("{label} on {device:?}"))?;
        for ((name, want), (_, have)) in reference.iter().zip(&got) {
            if have.dims() != want.dims() {
                bail!(
                    "{label} {name}: shape {:?} on the device, {:?} on the CPU",
                    have.dims(),
                    want.dims()
                );
            }
            results.push(ParityResult {
                name: format!("{label} {name}"),
                shape: want.dims().to_vec(),
                rel_l2: relative_l2(have, want)?,
            });
        }
    }
    Ok(results)
}

/// Runs `turbovsr parity`: one line per output, then a `N passed, N failed` summary; an error if
/// any output is off by more than the tolerance.
pub fn run(args: &ParityArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_precision(&args.precision)?;
    // The pipeline's VAE default (`vae-precision` auto) is f32 (pipeline::Precision).
    let vae_precision = match args.vae_precision.as_str() {
        "auto" => "f32",
        other => other,
    };
    let vae_dtype = parse_precision(vae_precision)?;
    let results = compare(&args.fixtures, &device, dtype, vae_dtype)?;
    let mut failed = 0;
    for r in &results {
        let ok = r.rel_l2 <= args.tolerance;
        failed += usize::from(!ok);
        println!(
            "{} {:<48} shape {:?} relative L2 {:.2e}",
            if ok { "ok  " } else { "FAIL" },
            r.name,
            r.shape,
            r.rel_l2
        );
    }
    println!(
        "parity {} {} (VAE {vae_precision}): {} passed, {failed} failed (tolerance {:e})",
        args.device,
        args.precision,
        results.len() - failed,
        args.tolerance
    );
    if failed > 0 {
        bail!(
            "{failed} of {} outputs differ from the CPU f32 result by more than {:e}",
            results.len(),
            args.tolerance
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[test]
    fn a_transformer_fixture_compares_equal_to_itself_on_the_cpu() {
        let dir = fixtures().join("transformer/ltx_heads2x4_geglu_approximate");
        let a = run_transformer(&dir, &Device::Cpu, DType::F32).unwrap();
        let b = run_transformer(&dir, &Device::Cpu, DType::F16).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, "sample");
        let f16_err = relative_l2(&b[0].1, &a[0].1).unwrap();
        // f16 rounding shows (so the comparison sees differences) but stays small.
        assert!(f16_err > 0.0 && f16_err < 2e-2, "{f16_err}");
    }

    #[test]
    fn vae_fixture_cases_give_every_output() {
        let dir = fixtures().join("vae/0.9.0");
        let out = run_vae(&dir, &Device::Cpu, DType::F32).unwrap();
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"enc_img.mean"), "{names:?}");
        assert!(names.contains(&"dec_img.sample"), "{names:?}");
    }

    /// Issue 8's bf16 bound (2e-2) on the CPU, whose half-precision gemms round as cuBLAS's do:
    /// the transformer in bf16 with the VAE at the pipeline's default (f32) passes every output.
    /// The VAE itself in bf16 does not (the GPU showed 11 of 37 over; the random-weight fixtures
    /// amplify bf16 rounding), while f16 stays well within it: what `vae-precision` auto rests on.
    #[test]
    fn bf16_meets_the_bound_with_the_vae_in_f32_and_not_with_the_vae_in_bf16() {
        let worst = |dtype, vae_dtype, kind: &str| -> f32 {
            compare(&fixtures(), &Device::Cpu, dtype, vae_dtype)
                .unwrap()
                .iter()
                .filter(|r| r.name.starts_with(kind))
                .map(|r| r.rel_l2)
                .fold(0f32, f32::max)
        };
        let transformer = worst(DType::BF16, DType::F32, "transformer/");
        assert!(transformer > 1e-3 && transformer < 2e-2, "{transformer}");
        assert!(worst(DType::BF16, DType::F32, "vae/") < 1e-5);
        let vae_bf16 = worst(DType::F32, DType::BF16, "vae/");
        assert!(vae_bf16 > 2e-2, "{vae_bf16}");
        let vae_f16 = worst(DType::F32, DType::F16, "vae/");
        assert!(vae_f16 < 1e-2, "{vae_f16}");
    }

    /// The attention checks reach the fused CUDA kernel's shapes (head sizes 64 and 128, a
    /// masked cross-attention, lengths off its tiles); on the CPU, bf16 inputs differ from the f32
    /// run only by the output's rounding, f32 not at all.
    #[test]
    fn the_attention_checks_cover_the_cuda_kernels_shapes() {
        let bf16 = attention_results(&Device::Cpu, DType::BF16).unwrap();
        let names: Vec<&str> = bf16.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("attention/")),
            "{names:?}"
        );
        assert_eq!(bf16[0].shape, vec![2, 4, 1000, 64]);
        assert_eq!(bf16[1].shape, vec![2, 4, 333, 64]);
        assert_eq!(bf16[2].shape, vec![1, 2, 300, 128]);
        for r in &bf16 {
            assert!(
                r.rel_l2 > 1e-4 && r.rel_l2 < 4e-3,
                "{} {}",
                r.name,
                r.rel_l2
            );
        }
        for r in attention_results(&Device::Cpu, DType::F32).unwrap() {
            assert!(r.rel_l2 < 1e-6, "{} {}", r.name, r.rel_l2);
        }
    }

    #[test]
    fn a_missing_fixtures_folder_is_an_error_naming_it() {
        let e = format!(
            "{:#}",
            compare(
                Path::new("/nonexistent/fx"),
                &Device::Cpu,
                DType::F32,
                DType::F32
            )
            .unwrap_err()
        );
        assert!(e.contains("/nonexistent/fx/vae"), "{e}");
    }
}
