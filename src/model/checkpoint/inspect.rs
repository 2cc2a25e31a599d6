//! Checkpoint reports and layout conversion, behind `turbovsr inspect` and `turbovsr convert`
//! (DESIGN §7).
//!
//! `inspect` resolves a model path like the loaders do, builds the VAE and the TurboVSR denoiser
//! on a dry run of their weights (nothing is read, every missing or mis-shaped key is collected
//! rather than the first one failing), and reports the layout, VAE generation, transformer size,
//! parameter counts, dtypes, TurboVSR head keys, `turbovsr.json`, prompt embeddings and every
//! problem. It fails (non-zero exit) when the model cannot run.
//!
//! `convert` rewrites a checkpoint between the single-file LTX-Video layout and the DESIGN §3.3
//! folder, tensor by tensor from the memory maps (never the whole model in memory), optionally
//! casting the weights.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::ltx_keys::{self, TransformerPreset, VaeGeneration};
use super::safetensors::StDtype;
use super::weights::{summarize, KeyProblem, Weights};
use super::{
    is_turbovsr_head_key, Checkpoint, TransformerCheckpoint, VaeCheckpoint, DIFFUSERS_WEIGHTS,
    PROMPT_EMBEDS_FILE,
};
use crate::model::turbovsr::config::CONFIG_FILE;
use crate::model::turbovsr::denoiser::{COND_EMBEDDER, STEP_EMBEDDER};
use crate::model::turbovsr::{TurboVsrConfig, TurboVsrDenoiser};
use crate::model::vae::AutoencoderKlLtxVideo;

/// What `inspect` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The report, line by line.
    pub lines: Vec<String>,
    /// Why the model cannot run (empty: it can).
    pub problems: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    pub fn can_run(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as printed by `turbovsr inspect`.
    pub fn text(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        if self.problems.is_empty() {
            out.push_str("status: ok, the model can run\n");
        } else {
            out.push_str(&format!(
                "status: the model cannot run ({} problem(s)):\n",
                self.problems.len()
            ));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }
}

fn params_label(n: usize) -> String {
    if n >= 1_000_000_000 {
        format!("{n} ({:.2} G)", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{n} ({:.1} M)", n as f64 / 1e6)
    } else {
        format!("{n}")
    }
}

fn dtypes_label(d: &BTreeMap<String, usize>) -> String {
    d.iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(keys: &[String], max: usize) -> String {
    let mut s = keys
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > max {
        s.push_str(&format!(", ... ({} in all)", keys.len()));
    }
    s
}

/// Adds the dry-run problems and unexpected keys of a module to the report.
fn key_findings(r: &mut Report, what: &str, weights: &Weights, unexpected: Vec<String>) {
    let problems = weights.problems();
    let missing: Vec<String> = problems
        .iter()
        .filter_map(|p| match p {
            KeyProblem::Missing { key, expected } => Some(format!("{key} {expected:?}")),
            _ => None,
        })
        .collect();
    let shapes: Vec<String> = problems
        .iter()
        .filter_map(|p| match p {
            KeyProblem::WrongShape {
                key,
                expected,
                found,
            } => Some(format!("{key}: found {found:?}, expected {expected:?}")),
            _ => None,
        })
        .collect();
    r.line(format!(
        "  missing keys: {}",
        if missing.is_empty() {
            "none".into()
        } else {
            list(&missing, 8)
        }
    ));
    if !shapes.is_empty() {
        r.line(format!("  wrong shapes: {}", list(&shapes, 8)));
    }
    r.line(format!(
        "  unexpected keys: {}",
        if unexpected.is_empty() {
            "none".into()
        } else {
            list(&unexpected, 8)
        }
    ));
    let files = weights.files_label();
    if !missing.is_empty() {
        r.problems.push(format!(
            "{what}: {} missing key(s) in {files}: {}",
            missing.len(),
            list(&missing, 4)
        ));
    }
    if !shapes.is_empty() {
        r.problems.push(format!(
            "{what}: {} key(s) of the wrong shape in {files}: {}",
            shapes.len(),
            list(&shapes, 4)
        ));
    }
    if !unexpected.is_empty() {
        r.problems.push(format!(
            "{what}: {} unexpected key(s) in {files}: {}",
            unexpected.len(),
            list(&unexpected, 4)
        ));
    }
}

fn inspect_vae(r: &mut Report, vae: &VaeCheckpoint) {
    let tensors = vae.weights.tensors();
    let (params, dtypes) = summarize(tensors.values().copied());
    r.line("VAE:");
    r.line(format!(
        "  generation: LTX-Video {}",
        vae.generation.label()
    ));
    r.line(format!("  config: {}", vae.config_source));
    r.line(format!("  files: {}", vae.weights.files_label()));
    r.line(format!(
        "  tensors: {}, parameters: {}",
        tensors.len(),
        params_label(params)
    ));
    r.line(format!("  dtypes: {}", dtypes_label(&dtypes)));
    let dry = vae.weights.dry_run();
    if let Err(e) =
        AutoencoderKlLtxVideo::new(&vae.config, dry.var_builder(DType::F32, &Device::Cpu))
    {
        r.problems
            .push(format!("VAE: {} ({})", e, vae.config_source));
        return;
    }
    key_findings(r, "VAE", &dry, dry.unused());
}

fn inspect_transformer(r: &mut Report, tf: &TransformerCheckpoint, cond_channels: usize) {
    let tensors = tf.weights.tensors();
    let (params, dtypes) = summarize(tensors.values().copied());
    let cfg = &tf.config;
    let size = if cfg.num_layers == 28 && cfg.inner_dim() == 2048 {
        "LTX-Video 2B".to_string()
    } else if cfg.num_layers == 48 && cfg.inner_dim() == 4096 {
        "LTX-Video 13B".to_string()
    } else {
        "custom size".to_string()
    };
    r.line("transformer:");
    r.line(format!(
        "  size: {size}: {} blocks of {} heads x {} (hidden {}), caption channels {}, \
         {} latent channels, patch {}x{}x{}",
        cfg.num_layers,
        cfg.num_attention_heads,
        cfg.attention_head_dim,
        cfg.inner_dim(),
        cfg.caption_channels,
        cfg.in_channels,
        cfg.patch_size_t,
        cfg.patch_size,
        cfg.patch_size
    ));
    r.line(format!("  config: {}", tf.config_source));
    r.line(format!("  files: {}", tf.weights.files_label()));
    let head: usize = tensors
        .iter()
        .filter(|(k, _)| is_turbovsr_head_key(k))
        .map(|(_, t)| t.elem_count())
        .sum();
    r.line(format!(
        "  tensors: {}, parameters: {} (TurboVSR head: {})",
        tensors.len(),
        params_label(params),
        params_label(head)
    ));
    r.line(format!("  dtypes: {}", dtypes_label(&dtypes)));
    let present = |k: &str| tf.weights.contains(k);
    let cond: Vec<&str> = ["weight", "bias"]
        .into_iter()
        .filter(|p| present(&format!("{COND_EMBEDDER}.{p}")))
        .collect();
    let step: Vec<String> = ["linear_1", "linear_2"]
        .iter()
        .flat_map(|l| ["weight", "bias"].map(|p| format!("{l}.{p}")))
        .filter(|k| present(&format!("{STEP_EMBEDDER}.{k}")))
        .collect();
    r.line(format!(
        "  TurboVSR keys: {COND_EMBEDDER}.{{{}}} ({} of 2), {STEP_EMBEDDER}.* ({} of 4): {}",
        cond.join(","),
        cond.len(),
        step.len(),
        match (cond.len(), step.len()) {
            (2, 4) => "shortcut model (DESIGN §3.2)",
            (2, 0) => "plain flow-matching model: the step size is ignored",
            (0, 0) => "none: a plain LTX-Video transformer, not a TurboVSR denoiser",
            _ => "incomplete",
        }
    ));
    if cond.is_empty() {
        r.problems.push(format!(
            "transformer: no TurboVSR head ({COND_EMBEDDER}.weight / .bias of DESIGN §3.2) in {}: \
             a plain LTX-Video transformer cannot run as the TurboVSR denoiser",
            tf.weights.files_label()
        ));
    }
    let dry = tf.weights.dry_run();
    if let Err(e) = TurboVsrDenoiser::new(
        cfg,
        cond_channels,
        1.0,
        dry.var_builder(DType::F32, &Device::Cpu),
    ) {
        r.problems
            .push(format!("transformer: {e} ({})", tf.config_source));
        return;
    }
    key_findings(r, "transformer", &dry, dry.unused());
}

/// Inspects a model path; never fails, problems are in the report.
pub fn inspect(path: &Path) -> Report {
    let mut r = Report::default();
    r.line(format!("model: {}", path.display()));
    let ck = match Checkpoint::open(path) {
        Ok(ck) => ck,
        Err(e) => {
            r.problems.push(format!("{e:#}"));
            return r;
        }
    };
    r.line(format!("layout: {}", ck.describe()));
    if let Some(single) = ck.single_file() {
        let (params, dtypes) = summarize(single.header.tensors.values());
        r.line(format!(
            "single file: {} ({} bytes, {} tensors, {} parameters; {})",
            single.path.display(),
            single.file_len,
            single.header.tensors.len(),
            params_label(params),
            dtypes_label(&dtypes)
        ));
        let other: Vec<String> = single
            .header
            .tensors
            .keys()
            .filter(|k| k.contains("vae") && !k.contains(ltx_keys::VAE_PREFIX))
            .cloned()
            .collect();
        if !other.is_empty() {
            r.problems.push(format!(
                "{}: key(s) that belong to neither the VAE nor the transformer: {}",
                single.path.display(),
                list(&other, 4)
            ));
        }
    }
    let vae = match ck.vae() {
        Ok(v) => {
            inspect_vae(&mut r, &v);
            Some(v)
        }
        Err(e) => {
            r.problems.push(format!("VAE: {e:#}"));
            None
        }
    };
    match ck.transformer() {
        Ok(tf) => {
            let p = tf.config.patch_size;
            let cond_channels = vae
                .as_ref()
                .map(|v| v.config.latent_channels * p * p)
                .unwrap_or(tf.config.in_channels);
            if tf.config.in_channels != cond_channels || tf.config.out_channels() != cond_channels {
                r.problems.push(format!(
                    "{}: in_channels={} / out_channels={} do not match the VAE's latent channels \
                     patchified ({cond_channels})",
                    tf.config_source,
                    tf.config.in_channels,
                    tf.config.out_channels()
                ));
            }
            if tf.config.patch_size_t != 1 {
                r.problems.push(format!(
                    "{}: patch_size_t={} is not supported",
                    tf.config_source, tf.config.patch_size_t
                ));
            }
            inspect_transformer(&mut r, &tf, cond_channels);
            settings(&mut r, &ck, tf.config.caption_channels);
        }
        Err(e) => {
            r.problems.push(format!("transformer: {e:#}"));
        }
    }
    r
}

/// `turbovsr.json` and the prompt embeddings.
fn settings(r: &mut Report, ck: &Checkpoint, caption_channels: usize) {
    let Some(dir) = ck.settings_dir() else {
        r.line(format!(
            "{CONFIG_FILE}: none (a bare single file: defaults); prompt embeddings: none \
             (zero embedding unless prompt-embeds is set)"
        ));
        return;
    };
    let cfg_path = dir.join(CONFIG_FILE);
    match TurboVsrConfig::load(dir) {
        Ok(c) if cfg_path.is_file() => r.line(format!(
            "{CONFIG_FILE}: scale {}, cond_scale {:.4}, tile {:?}, {} step sizes",
            c.scale,
            c.cond_scale,
            c.tile,
            c.step_sizes.len()
        )),
        Ok(_) => r.line(format!("{CONFIG_FILE}: absent (defaults of DESIGN §3.3)")),
        Err(e) => r.problems.push(format!("{e:#}")),
    }
    let prompt = dir.join(PROMPT_EMBEDS_FILE);
    if prompt.is_file() {
        match crate::model::turbovsr::prompt::load_prompt(&prompt, caption_channels, &Device::Cpu) {
            Ok((e, _)) => r.line(format!(
                "prompt embeddings: {} tokens x {} channels",
                e.dim(1).unwrap_or(0),
                caption_channels
            )),
            Err(e) => r.problems.push(format!("{e:#}")),
        }
    } else {
        r.line("prompt embeddings: none (zero embedding of length 1, DESIGN §3.3)");
    }
}

/// A tensor to write: its name in the output and where its bytes come from.
struct OutTensor<'a> {
    name: String,
    src: &'a super::SafetensorsFile,
    info: &'a super::TensorInfo,
}

fn st_dtype_of(d: DType) -> Result<StDtype> {
    Ok(match d {
        DType::F32 => StDtype::F32,
        DType::BF16 => StDtype::Bf16,
        DType::F16 => StDtype::F16,
        other => bail!("cannot write weights as {other:?}"),
    })
}

/// Writes `tensors` (sorted by name) to a safetensors file, one tensor at a time from the
/// source maps, float tensors cast to `cast` when given.
fn write_safetensors(path: &Path, tensors: &mut [OutTensor], cast: Option<DType>) -> Result<()> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let out_dtype = |t: &OutTensor| -> Result<StDtype> {
        match cast {
            Some(d) if t.info.dtype.is_float() => st_dtype_of(d),
            _ => Ok(t.info.dtype),
        }
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors.iter() {
        let dt = out_dtype(t)?;
        let len = t.info.elem_count() * dt.size_in_bytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dt.name(), "shape": t.info.shape,
                               "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "generator": "turbovsr convert"}),
    );
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let werr = || format!("writing {}", path.display());
    out.write_all(&(header.len() as u64).to_le_bytes())
        .with_context(werr)?;
    out.write_all(&header).with_context(werr)?;
    for t in tensors.iter() {
        let bytes = t.src.bytes(t.info);
        let dt = out_dtype(t)?;
        if dt == t.info.dtype {
            out.write_all(bytes).with_context(werr)?;
        } else {
            let from = t
                .info
                .dtype
                .to_candle()
                .with_context(|| format!("key `{}`: dtype {}", t.name, t.info.dtype))?;
            let to = dt.to_candle().expect("a float dtype");
            Tensor::from_raw_buffer(bytes, from, &t.info.shape, &Device::Cpu)?
                .to_dtype(to)?
                .write_bytes(&mut out)
                .with_context(werr)?;
        }
        t.src.release(t.info);
    }
    out.flush().with_context(werr)?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The module tensors of `weights` renamed by `rename`.
fn renamed<'a>(
    weights: &'a Weights,
    rename: impl Fn(&str) -> Result<String>,
) -> Result<Vec<OutTensor<'a>>> {
    weights
        .tensors()
        .keys()
        .map(|k| {
            let (stored, path) = weights.stored(k).expect("a listed key");
            let src = weights
                .files()
                .iter()
                .find(|f| f.path == path)
                .expect("the key's file");
            Ok(OutTensor {
                name: rename(k)?,
                src,
                info: &src.header.tensors[stored],
            })
        })
        .collect()
}

/// Copies `turbovsr.json` and the prompt embeddings of `ck`'s folder into `dst`.
fn copy_settings(ck: &Checkpoint, dst: &Path) -> Result<()> {
    if let Some(dir) = ck.settings_dir() {
        for name in [CONFIG_FILE, PROMPT_EMBEDS_FILE] {
            let src = dir.join(name);
            if src.is_file() {
                std::fs::copy(&src, dst.join(name))
                    .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            }
        }
    }
    Ok(())
}

/// Which way `convert` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertTo {
    /// The DESIGN §3.3 folder (`vae/`, `transformer/` in the diffusers layout).
    Folder,
    /// The original single-file LTX-Video layout.
    SingleFile,
}

/// Converts `ck` to the `to` layout at `dst`; returns what was written, one line each.
pub fn convert(
    ck: &Checkpoint,
    dst: &Path,
    to: ConvertTo,
    cast: Option<DType>,
) -> Result<Vec<String>> {
    let vae = ck.vae()?;
    let tf = ck.transformer()?;
    let mut written = Vec::new();
    match to {
        ConvertTo::Folder => {
            for (sub, json, weights) in [
                ("vae", &vae.config_json, &vae.weights),
                ("transformer", &tf.config_json, &tf.weights),
            ] {
                let dir = dst.join(sub);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                write_json(&dir.join("config.json"), json)?;
                let mut tensors = renamed(weights, |k| Ok(k.to_string()))?;
                let path = dir.join(DIFFUSERS_WEIGHTS);
                write_safetensors(&path, &mut tensors, cast)?;
                written.push(format!(
                    "wrote {} ({} tensors)",
                    path.display(),
                    tensors.len()
                ));
            }
            copy_settings(ck, dst)?;
        }
        ConvertTo::SingleFile => {
            let bare = dst.extension().is_some_and(|e| e == "safetensors");
            // A single file's configs are the presets of its generation; others travel as
            // config files beside it (like diffusers' `from_single_file(config=...)`).
            let vae_preset = serde_json::from_value::<crate::model::vae::VaeConfig>(
                vae.generation.preset_config(),
            )
            .ok();
            let vae_custom = vae_preset.as_ref() != Some(&vae.config);
            let preset = if tf.config.num_layers == 48 {
                TransformerPreset::Ltx13b
            } else {
                TransformerPreset::Ltx2b
            };
            let tf_preset =
                serde_json::from_value::<crate::model::transformer::LtxTransformerConfig>(
                    preset.preset_config(),
                )
                .ok();
            let tf_custom = tf_preset.as_ref() != Some(&tf.config);
            if bare && (vae_custom || tf_custom) {
                bail!(
                    "{}: the {} config differs from the LTX-Video preset a single file is read \
                     with; convert to a folder (a DST without .safetensors) so that the configs \
                     are written beside the file",
                    ck.path.display(),
                    if vae_custom { "VAE" } else { "transformer" }
                );
            }
            let file = if bare {
                if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                dst.to_path_buf()
            } else {
                std::fs::create_dir_all(dst)
                    .with_context(|| format!("creating {}", dst.display()))?;
                dst.join("ltx-video.safetensors")
            };
            let generation: VaeGeneration = vae.generation;
            let mut tensors = renamed(&vae.weights, |k| generation.vae_key_to_original(k))?;
            tensors.extend(renamed(&tf.weights, ltx_keys::transformer_key_to_original)?);
            write_safetensors(&file, &mut tensors, cast)?;
            written.push(format!(
                "wrote {} ({} tensors; VAE {}, transformer)",
                file.display(),
                tensors.len(),
                generation.label()
            ));
            if !bare {
                for (custom, sub, json) in [
                    (vae_custom, "vae", &vae.config_json),
                    (tf_custom, "transformer", &tf.config_json),
                ] {
                    if custom {
                        let dir = dst.join(sub);
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        write_json(&dir.join("config.json"), json)?;
                        written.push(format!(
                            "wrote {}/config.json (the config is not the preset)",
                            dir.display()
                        ));
                    }
                }
                copy_settings(ck, dst)?;
            }
        }
    }
    Ok(written)
}
