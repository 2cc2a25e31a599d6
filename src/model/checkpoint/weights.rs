//! The weights of one module (VAE or transformer) as a candle `VarBuilder` backend: memory-mapped
//! safetensors files (one, several shards, or the part of a single-file checkpoint that belongs
//! to the module) under the module's diffusers names.
//!
//! - Each tensor is copied out of the map once, converted to the run precision (weights stored in
//!   f32, bf16 or f16 load into any of them), and its mapped pages are released, so a model is
//!   never held twice in host memory.
//! - Every name read is recorded, so keys the config does not account for are reported
//!   (DESIGN §3.3), for the transformer as for the VAE.
//! - Missing keys and wrong shapes are errors naming the key, the expected and found shapes and
//!   the file. In a dry run (`turbovsr inspect`) they are collected instead, and zeros stand in.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::safetensors::{SafetensorsFile, ShardIndex, TensorInfo};

/// Where a module key is stored.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    /// The key in the file (differs from the module key in a single-file checkpoint).
    stored: String,
}

/// A key problem found in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Missing {
        key: String,
        expected: Vec<usize>,
    },
    WrongShape {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

struct Inner {
    files: Vec<Arc<SafetensorsFile>>,
    keys: BTreeMap<String, Entry>,
    used: Mutex<HashSet<String>>,
    /// `Some` in a dry run: problems are collected, nothing is read.
    dry: Option<Mutex<Vec<KeyProblem>>>,
}

/// A module's weights (cheap to clone).
#[derive(Clone)]
pub struct Weights(Arc<Inner>);

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("files", &self.files_label())
            .field("tensors", &self.0.keys.len())
            .finish_non_exhaustive()
    }
}

impl Weights {
    /// The tensors of `files` whose names `rename` maps to a module key (`None`: not this
    /// module's). A module key found twice is an error naming both places.
    pub fn new(
        files: Vec<Arc<SafetensorsFile>>,
        rename: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut keys: BTreeMap<String, Entry> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for stored in f.header.tensors.keys() {
                let Some(key) = rename(stored) else { continue };
                if let Some(prev) = keys.get(&key) {
                    bail!(
                        "the key `{key}` is stored twice: as `{}` in {} and as `{stored}` in {}",
                        prev.stored,
                        files[prev.file].path.display(),
                        f.path.display()
                    );
                }
                keys.insert(
                    key,
                    Entry {
                        file: i,
                        stored: stored.clone(),
                    },
                );
            }
        }
        Ok(Self(Arc::new(Inner {
            files,
            keys,
            used: Mutex::new(HashSet::new()),
            dry: None,
        })))
    }

    /// Opens diffusers-named safetensors files (one file or all shards) with their keys as is.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let files = paths
            .iter()
            .map(|p| SafetensorsFile::open(p).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::new(files, |k| Some(k.to_string()))
    }

    /// Opens the shards of an index JSON, checking that each shard exists and holds the keys
    /// the index assigns to it.
    pub fn open_index(index_path: &Path, index: &ShardIndex) -> anyhow::Result<Self> {
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files = Vec::new();
        for shard in index.shards() {
            let path = dir.join(&shard);
            if !path.is_file() {
                let key = index
                    .weight_map
                    .iter()
                    .find(|(_, s)| **s == shard)
                    .map(|(k, _)| k.as_str())
                    .unwrap_or_default();
                bail!(
                    "{}: key `{key}` is in shard {shard}, which does not exist ({})",
                    index_path.display(),
                    path.display()
                );
            }
            files.push(Arc::new(SafetensorsFile::open(&path)?));
        }
        for (key, shard) in &index.weight_map {
            let f = files
                .iter()
                .find(|f| f.path.file_name() == Some(std::ffi::OsStr::new(shard)))
                .expect("every shard was opened");
            if !f.header.tensors.contains_key(key) {
                bail!(
                    "{}: key `{key}` is assigned to {}, which does not hold it",
                    index_path.display(),
                    f.path.display()
                );
            }
        }
        Self::new(files, |k| Some(k.to_string()))
    }

    /// The same weights in a dry run: missing or mis-shaped keys are collected (see
    /// [`Self::problems`]) and zeros are handed out, nothing is read from the files.
    pub fn dry_run(&self) -> Self {
        Self(Arc::new(Inner {
            files: self.0.files.clone(),
            keys: self.0.keys.clone(),
            used: Mutex::new(HashSet::new()),
            dry: Some(Mutex::new(Vec::new())),
        }))
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// The files, comma-separated, for messages.
    pub fn files_label(&self) -> String {
        self.0
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn files(&self) -> &[Arc<SafetensorsFile>] {
        &self.0.files
    }

    /// Module key -> its tensor header.
    pub fn tensors(&self) -> BTreeMap<&str, &TensorInfo> {
        self.0
            .keys
            .iter()
            .map(|(k, e)| (k.as_str(), &self.0.files[e.file].header.tensors[&e.stored]))
            .collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.keys.contains_key(key)
    }

    /// The key as stored in its file, and the file.
    pub fn stored(&self, key: &str) -> Option<(&str, &Path)> {
        self.0
            .keys
            .get(key)
            .map(|e| (e.stored.as_str(), self.0.files[e.file].path.as_path()))
    }

    /// Problems collected by a dry run (empty otherwise).
    pub fn problems(&self) -> Vec<KeyProblem> {
        self.0
            .dry
            .as_ref()
            .and_then(|d| d.lock().ok().map(|p| p.clone()))
            .unwrap_or_default()
    }

    /// The module keys nothing read, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.0.used.lock().map(|u| u.clone()).unwrap_or_default();
        self.0
            .keys
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }

    /// Fails when keys were left unread, except those `allowed` accepts; names the keys and
    /// the files. `what` says what reads the keys ("the VAE config ...").
    pub fn check_unused(&self, what: &str, allowed: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let unused: Vec<String> = self.unused().into_iter().filter(|k| !allowed(k)).collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown = unused
            .iter()
            .take(8)
            .map(|k| match self.stored(k) {
                Some((s, _)) if s != k => format!("{k} (stored as {s})"),
                _ => k.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "{}: {} unexpected key(s) that {what} does not account for: {shown}{}",
            self.files_label(),
            unused.len(),
            if unused.len() > 8 { ", ..." } else { "" }
        )
    }

    fn mark(&self, name: &str) {
        if let Ok(mut used) = self.0.used.lock() {
            used.insert(name.to_string());
        }
    }

    fn where_is(&self, name: &str) -> String {
        match self.0.keys.get(name) {
            Some(e) if e.stored != name => format!(
                "{} (stored as `{}`)",
                self.0.files[e.file].path.display(),
                e.stored
            ),
            Some(e) => self.0.files[e.file].path.display().to_string(),
            None => self.files_label(),
        }
    }

    /// Reads `name`, converting float weights to `dtype`.
    fn load(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let e = self.0.keys.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: missing key `{name}`", self.files_label()))
        })?;
        let file = &self.0.files[e.file];
        let info = &file.header.tensors[&e.stored];
        let disk = info.dtype.to_candle().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: key `{name}` has dtype {}, which cannot be loaded",
                self.where_is(name),
                info.dtype
            ))
        })?;
        let t = Tensor::from_raw_buffer(file.bytes(info), disk, &info.shape, &Device::Cpu)?;
        file.release(info);
        // Integer tensors (none in the LTX modules) keep their type; weights take the run's.
        let t = if info.dtype.is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        t.to_device(dev)
    }
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.mark(name);
        let found = self
            .0
            .keys
            .get(name)
            .map(|e| self.0.files[e.file].header.tensors[&e.stored].shape.clone());
        let problem = match &found {
            None => Some(KeyProblem::Missing {
                key: name.to_string(),
                expected: s.dims().to_vec(),
            }),
            Some(f) if f.as_slice() != s.dims() => Some(KeyProblem::WrongShape {
                key: name.to_string(),
                expected: s.dims().to_vec(),
                found: f.clone(),
            }),
            Some(_) => None,
        };
        if let Some(dry) = &self.0.dry {
            if let (Some(p), Ok(mut list)) = (problem, dry.lock()) {
                list.push(p);
            }
            return Tensor::zeros((), dtype, dev)?.broadcast_as(s);
        }
        match problem {
            Some(KeyProblem::Missing { .. }) => candle_core::bail!(
                "{}: missing key `{name}` (expected shape {:?})",
                self.files_label(),
                s.dims()
            ),
            Some(KeyProblem::WrongShape {
                expected, found, ..
            }) => candle_core::bail!(
                "{}: key `{name}` has shape {found:?}, expected {expected:?}",
                self.where_is(name)
            ),
            None => self.load(name, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.mark(name);
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.keys.contains_key(name)
    }
}

/// Parameter count and element types of `tensors`.
pub fn summarize<'a>(
    tensors: impl IntoIterator<Item = &'a TensorInfo>,
) -> (usize, BTreeMap<String, usize>) {
    let mut params = 0;
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors {
        params += t.elem_count();
        *dtypes.entry(t.dtype.name().to_string()).or_default() += 1;
    }
    (params, dtypes)
}

/// `anyhow` context for a module build: the files it reads and where its config came from (a
/// shape error against a preset says so).
pub fn loading(what: &str, weights: &Weights, config_source: &str) -> impl FnOnce() -> String {
    let label = weights.files_label();
    let what = what.to_string();
    let config = config_source.to_string();
    move || format!("loading {what} from {label} with the config of {config}")
}

/// Reads a safetensors file fully through the checked parser (small files: prompt embeddings).
pub fn read_all(path: &Path) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let file = SafetensorsFile::open(path)?;
    let mut out = BTreeMap::new();
    for (name, info) in &file.header.tensors {
        let dtype = info.dtype.to_candle().with_context(|| {
            format!(
                "{}: key `{name}` has dtype {}, which cannot be loaded",
                path.display(),
                info.dtype
            )
        })?;
        let t = Tensor::from_raw_buffer(file.bytes(info), dtype, &info.shape, &Device::Cpu)
            .with_context(|| format!("{}: key `{name}`", path.display()))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}
