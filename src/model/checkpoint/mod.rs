//! Checkpoints on disk (DESIGN §3.1, §3.3): finding the VAE's and the transformer's configs and
//! weights in whatever layout a model comes in, with errors that name the file and the key.
//!
//! Layouts ([`Layout`]):
//! - a DESIGN §3.3 folder: `vae/` and `transformer/` in the diffusers layout (`config.json` and
//!   `diffusion_pytorch_model.safetensors`, or shards listed in
//!   `diffusion_pytorch_model.safetensors.index.json`), `turbovsr.json`,
//!   `prompt_embeds.safetensors`;
//! - the same folder with one original single-file LTX-Video checkpoint (`*.safetensors`, keys
//!   `model.diffusion_model.*` and `vae.*`) in place of `vae/` and/or `transformer/`; configs come
//!   from the generation detected from the keys (as diffusers' single-file loader does), unless
//!   `vae/config.json` / `transformer/config.json` are present (like diffusers'
//!   `from_single_file(..., config=...)`);
//! - a single-file checkpoint given as the path itself (`turbovsr.json` defaults);
//! - one diffusers module folder (`config.json` + weights), for `turbovsr forward` and tests.
//!
//! Files by concern: `header` (header and index parsing with validation), [`safetensors`]
//! (memory-mapped files), [`ltx_keys`]
//! (the single-file key mapping and generation detection), `weights` (the `VarBuilder`
//! backend: memory-mapped, converted to the run precision, used keys tracked), [`inspect`]
//! (`turbovsr inspect` and `turbovsr convert`).

pub(crate) mod header;
pub mod inspect;
pub mod ltx_keys;
pub mod safetensors;
pub(crate) mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::model::transformer::config::LtxTransformerConfig;
use crate::model::vae::config::VaeConfig;
pub use ltx_keys::{TransformerPreset, VaeGeneration};
pub use safetensors::{SafetensorsFile, StDtype, TensorInfo};
pub use weights::Weights;

/// Weights of a diffusers module folder.
pub const DIFFUSERS_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
/// The shard index of a sharded diffusers module folder.
pub const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
/// The optional prompt embeddings of a checkpoint folder (DESIGN §3.3).
pub const PROMPT_EMBEDS_FILE: &str = "prompt_embeds.safetensors";

/// How a model path is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A DESIGN §3.3 folder with `vae/` and `transformer/` in the diffusers layout.
    Folder { root: PathBuf },
    /// An original single-file LTX-Video checkpoint; `root` is the checkpoint folder holding it
    /// (`None` when the path names the file itself).
    SingleFile {
        file: PathBuf,
        root: Option<PathBuf>,
    },
    /// One diffusers module folder (`config.json` + weights).
    Module { dir: PathBuf },
}

/// The VAE part of a checkpoint.
#[derive(Debug, Clone)]
pub struct VaeCheckpoint {
    pub config: VaeConfig,
    /// The config as JSON (what `turbovsr convert` writes as `vae/config.json`).
    pub config_json: serde_json::Value,
    /// Where the config came from (a file, or the preset of a generation).
    pub config_source: String,
    pub generation: VaeGeneration,
    pub weights: Weights,
}

/// The transformer part of a checkpoint (with TurboVSR's head keys, if any).
#[derive(Debug, Clone)]
pub struct TransformerCheckpoint {
    pub config: LtxTransformerConfig,
    pub config_json: serde_json::Value,
    pub config_source: String,
    pub weights: Weights,
}

/// A model path, resolved.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: Layout,
    /// The single file, opened and checked (single-file layouts).
    single: Option<Arc<SafetensorsFile>>,
}

/// TurboVSR head keys (DESIGN §3.2), which the plain LTX transformer leaves to the denoiser.
pub fn is_turbovsr_head_key(key: &str) -> bool {
    key.starts_with("cond_embedder.") || key.starts_with("time_embed.emb.step_embedder.")
}

/// Whether `dir` holds diffusers weights (one file or an index).
pub fn has_diffusers_weights(dir: &Path) -> bool {
    dir.join(DIFFUSERS_WEIGHTS).is_file() || dir.join(DIFFUSERS_INDEX).is_file()
}

/// The weights of a diffusers module folder: `diffusion_pytorch_model.safetensors`, or the shards
/// its index lists (each checked to exist and to hold the keys assigned to it).
pub fn open_diffusers_weights(dir: &Path) -> Result<Weights> {
    let single = dir.join(DIFFUSERS_WEIGHTS);
    if single.is_file() {
        return Weights::open(&[single]);
    }
    let index_path = dir.join(DIFFUSERS_INDEX);
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path)
            .with_context(|| format!("reading {}", index_path.display()))?;
        let index = safetensors::parse_index(&text, &index_path)?;
        return Weights::open_index(&index_path, &index);
    }
    bail!(
        "no {DIFFUSERS_WEIGHTS} (or {DIFFUSERS_INDEX}) in {}",
        dir.display()
    )
}

fn no_weights(dir: &Path) -> String {
    if !dir.is_dir() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        return format!("missing {name}/ ({})", dir.display());
    }
    format!(
        "{} holds no weights (no {DIFFUSERS_WEIGHTS} or {DIFFUSERS_INDEX})",
        dir.display()
    )
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_vae_config(text: &str, source: &str) -> Result<(VaeConfig, serde_json::Value)> {
    let cfg = VaeConfig::from_json(text).with_context(|| source.to_string())?;
    let json = serde_json::from_str(text).with_context(|| format!("parsing {source}"))?;
    Ok((cfg, json))
}

fn parse_transformer_config(
    text: &str,
    source: &str,
) -> Result<(LtxTransformerConfig, serde_json::Value)> {
    let cfg: LtxTransformerConfig =
        serde_json::from_str(text).with_context(|| format!("parsing {source}"))?;
    let json = serde_json::from_str(text).with_context(|| format!("parsing {source}"))?;
    Ok((cfg, json))
}

/// The `*.safetensors` files of a folder that may be a single-file checkpoint (everything but
/// the prompt embeddings), sorted.
fn single_file_candidates(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().is_some_and(|n| n != PROMPT_EMBEDS_FILE)
        })
        .collect();
    out.sort();
    Ok(out)
}

impl Checkpoint {
    /// Resolves `path` (see the module docs for the layouts). Errors name the path and what is
    /// missing.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot open model path '{}'", path.display()))?;
        if meta.is_file() {
            return Self::single(path.to_path_buf(), None, path);
        }
        if path.join("config.json").is_file() {
            return Ok(Self {
                path: path.to_path_buf(),
                layout: Layout::Module {
                    dir: path.to_path_buf(),
                },
                single: None,
            });
        }
        // `*.safetensors` beside the sub-folders that are LTX single files stand in for them;
        // other safetensors files (inputs, outputs of `turbovsr forward`) are not the model's.
        let mut singles = Vec::new();
        let mut unreadable = None;
        for file in single_file_candidates(path)? {
            match SafetensorsFile::open(&file) {
                Ok(st) if ltx_keys::is_ltx_single_file(&st.header.tensors) => {
                    singles.push((file, st))
                }
                Ok(_) => {}
                Err(e) => {
                    unreadable.get_or_insert(e);
                }
            }
        }
        let has_sub = ["vae", "transformer"].iter().any(|s| path.join(s).is_dir());
        match singles.len() {
            1 => {
                let (file, st) = singles.pop().expect("one");
                Ok(Self {
                    path: path.to_path_buf(),
                    layout: Layout::SingleFile {
                        file,
                        root: Some(path.to_path_buf()),
                    },
                    single: Some(Arc::new(st)),
                })
            }
            0 if has_sub => Ok(Self {
                path: path.to_path_buf(),
                layout: Layout::Folder {
                    root: path.to_path_buf(),
                },
                single: None,
            }),
            0 => match unreadable {
                Some(e) => Err(e.context(format!(
                    "model path '{}' has no vae/ or transformer/, and its .safetensors file \
                     cannot be read",
                    path.display()
                ))),
                None => bail!(
                    "model path '{}' is not a TurboVSR checkpoint folder: missing vae/ and \
                     transformer/ (and no single-file LTX-Video checkpoint *.safetensors in it)",
                    path.display()
                ),
            },
            _ => bail!(
                "model path '{}' holds several single-file LTX-Video checkpoints ({}): a \
                 checkpoint folder holds at most one",
                path.display(),
                singles
                    .iter()
                    .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn single(file: PathBuf, root: Option<PathBuf>, path: &Path) -> Result<Self> {
        let st = SafetensorsFile::open(&file)?;
        if !ltx_keys::is_ltx_single_file(&st.header.tensors) {
            bail!(
                "{} is not a single-file LTX-Video checkpoint: it has none of the keys diffusers \
                 recognises one by ({})",
                file.display(),
                ltx_keys::LTX_DETECTION_KEYS.join(", ")
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            layout: Layout::SingleFile { file, root },
            single: Some(Arc::new(st)),
        })
    }

    /// The folder whose `turbovsr.json` and `prompt_embeds.safetensors` apply (`None`: a bare
    /// single file, defaults).
    pub fn settings_dir(&self) -> Option<&Path> {
        match &self.layout {
            Layout::Folder { root } => Some(root),
            Layout::SingleFile { root, .. } => root.as_deref(),
            Layout::Module { dir } => Some(dir),
        }
    }

    /// A one-line description of the layout.
    pub fn describe(&self) -> String {
        match &self.layout {
            Layout::Folder { .. } => "checkpoint folder (diffusers vae/ and transformer/)".into(),
            Layout::SingleFile {
                file,
                root: Some(_),
            } => format!(
                "checkpoint folder with the single-file LTX-Video checkpoint {}",
                file.file_name().unwrap_or_default().to_string_lossy()
            ),
            Layout::SingleFile { root: None, .. } => "single-file LTX-Video checkpoint".into(),
            Layout::Module { .. } => "diffusers module folder (config.json + weights)".into(),
        }
    }

    /// Fails when the VAE or the transformer has no place in the layout (a folder without
    /// `transformer/`, a single file without `vae.*` keys and no `vae/`), naming what is missing.
    /// A whole TurboVSR model needs both; one module (`turbovsr forward`) needs one.
    pub fn check_complete(&self) -> Result<()> {
        let keys = self.single.as_ref().map(|s| &s.header.tensors);
        let missing: Vec<&str> = [
            ("vae", keys.is_some_and(ltx_keys::has_vae)),
            ("transformer", keys.is_some_and(ltx_keys::has_transformer)),
        ]
        .into_iter()
        .filter(|(sub, in_single)| !in_single && !self.sub(sub).is_some_and(|d| d.is_dir()))
        .map(|(sub, _)| sub)
        .collect();
        if matches!(self.layout, Layout::Module { .. }) || missing.is_empty() {
            return Ok(());
        }
        bail!(
            "model path '{}' is not a TurboVSR checkpoint folder: missing {}",
            self.path.display(),
            missing
                .iter()
                .map(|m| format!("{m}/"))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    }

    /// The single file, when the layout has one.
    pub fn single_file(&self) -> Option<&SafetensorsFile> {
        self.single.as_deref()
    }

    /// A `sub` folder of the checkpoint folder (`vae`, `transformer`), if there is one.
    fn sub(&self, sub: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::Folder { root }
            | Layout::SingleFile {
                root: Some(root), ..
            } => Some(root.join(sub)),
            _ => None,
        }
    }

    /// The VAE's config and weights.
    pub fn vae(&self) -> Result<VaeCheckpoint> {
        if let Layout::Module { dir } = &self.layout {
            return diffusers_vae(dir);
        }
        if let Some(single) = self
            .single
            .as_ref()
            .filter(|s| ltx_keys::has_vae(&s.header.tensors))
        {
            let generation = VaeGeneration::detect(&single.header.tensors);
            let over = self.sub("vae").map(|d| d.join("config.json"));
            let ((config, config_json), config_source) = match over.filter(|p| p.is_file()) {
                Some(p) => {
                    let src = p.display().to_string();
                    (parse_vae_config(&read_text(&p)?, &src)?, src)
                }
                None => {
                    let src = format!(
                        "the LTX-Video {} VAE preset (detected from the keys of {})",
                        generation.label(),
                        single.path.display()
                    );
                    let text = generation.preset_config().to_string();
                    (parse_vae_config(&text, &src)?, src)
                }
            };
            let weights =
                Weights::new(vec![single.clone()], |k| generation.vae_key_to_diffusers(k))?;
            return Ok(VaeCheckpoint {
                config,
                config_json,
                config_source,
                generation,
                weights,
            });
        }
        match self.sub("vae") {
            Some(dir) if has_diffusers_weights(&dir) => diffusers_vae(&dir),
            Some(dir) => bail!(
                "{}: no VAE: {}",
                self.path.display(),
                match &self.single {
                    Some(s) => format!(
                        "{} has no vae.* keys and {}",
                        s.path.display(),
                        no_weights(&dir)
                    ),
                    None => no_weights(&dir),
                }
            ),
            None => bail!(
                "{}: no VAE: the single file has no vae.* keys",
                self.path.display()
            ),
        }
    }

    /// The transformer's config and weights (TurboVSR head keys included).
    pub fn transformer(&self) -> Result<TransformerCheckpoint> {
        if let Layout::Module { dir } = &self.layout {
            return diffusers_transformer(dir);
        }
        if let Some(single) = self
            .single
            .as_ref()
            .filter(|s| ltx_keys::has_transformer(&s.header.tensors))
        {
            let over = self.sub("transformer").map(|d| d.join("config.json"));
            let ((config, config_json), config_source) = match over.filter(|p| p.is_file()) {
                Some(p) => {
                    let src = p.display().to_string();
                    (parse_transformer_config(&read_text(&p)?, &src)?, src)
                }
                None => {
                    let preset = TransformerPreset::detect(&single.header.tensors);
                    let src = format!(
                        "the LTX-Video {} transformer preset (detected from the keys of {})",
                        preset.label(),
                        single.path.display()
                    );
                    let text = preset.preset_config().to_string();
                    (parse_transformer_config(&text, &src)?, src)
                }
            };
            let weights =
                Weights::new(vec![single.clone()], ltx_keys::transformer_key_to_diffusers)?;
            return Ok(TransformerCheckpoint {
                config,
                config_json,
                config_source,
                weights,
            });
        }
        match self.sub("transformer") {
            Some(dir) if has_diffusers_weights(&dir) => diffusers_transformer(&dir),
            Some(dir) => bail!(
                "{}: no transformer: {}{}",
                self.path.display(),
                no_weights(&dir),
                match &self.single {
                    Some(s) => format!(
                        " and {} has no model.diffusion_model.* keys",
                        s.path.display()
                    ),
                    None => String::new(),
                }
            ),
            None => bail!(
                "{}: no transformer: the single file has no model.diffusion_model.* keys",
                self.path.display()
            ),
        }
    }
}

fn diffusers_vae(dir: &Path) -> Result<VaeCheckpoint> {
    let cfg_path = dir.join("config.json");
    let src = cfg_path.display().to_string();
    let (config, config_json) = parse_vae_config(&read_text(&cfg_path)?, &src)?;
    Ok(VaeCheckpoint {
        generation: VaeGeneration::of_config(&config),
        config,
        config_json,
        config_source: src,
        weights: open_diffusers_weights(dir)?,
    })
}

fn diffusers_transformer(dir: &Path) -> Result<TransformerCheckpoint> {
    let cfg_path = dir.join("config.json");
    let src = cfg_path.display().to_string();
    let (config, config_json) = parse_transformer_config(&read_text(&cfg_path)?, &src)?;
    Ok(TransformerCheckpoint {
        config,
        config_json,
        config_source: src,
        weights: open_diffusers_weights(dir)?,
    })
}
