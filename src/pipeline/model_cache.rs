//! The process-wide cache of loaded models: streams that run the same checkpoint on the same
//! device, in the same precision, with the same prompt share one copy of its weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};

use candle_core::{DType, Device};
use parking_lot::Mutex;

use super::settings::ProcessorSettings;
use crate::model::turbovsr::inference::{LoadOptions, TurboVsrModel};

/// What makes two loads the same model: the checkpoint's canonical path, the device, the two
/// precisions (transformer, VAE), the prompt file, and the size and modification time of every
/// file under the checkpoint and of the prompt file (weights changed on disk are loaded again,
/// not reused).
type ModelKey = (
    PathBuf,
    String,
    DType,
    DType,
    Option<PathBuf>,
    Vec<FileStamp>,
);

/// A file's path, size and modification time.
type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>);

/// Stamps of `path` (a file) or of the files in it and its sub-folders (a checkpoint folder has
/// two levels: `vae/`, `transformer/`).
fn file_stamps(path: &Path, depth: usize, out: &mut Vec<FileStamp>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
    } else if meta.is_dir() && depth > 0 {
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                file_stamps(&p, depth - 1, out);
            }
        }
    }
}

/// Models loaded in this process, by key; an entry lives as long as a processor uses it.
static MODELS: LazyLock<Mutex<HashMap<ModelKey, Weak<TurboVsrModel>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many processors use the model loaded from `model` right now (on any device).
pub fn model_users(model: &Path) -> usize {
    let Ok(path) = model.canonicalize() else {
        return 0;
    };
    MODELS
        .lock()
        .iter()
        .filter(|(key, _)| key.0 == path)
        .map(|(_, model)| model.strong_count())
        .sum()
}

/// The model for `model` on `device`: the one already loaded by another stream, or a new
/// load. Loads are serialized, so two elements starting together load the weights once.
pub(crate) fn shared_model(
    model: &Path,
    settings: &ProcessorSettings,
    device: &Device,
) -> anyhow::Result<Arc<TurboVsrModel>> {
    let options = LoadOptions {
        dtype: settings.precision.dtype_on(device),
        vae_dtype: settings.vae_precision.vae_dtype(),
        prompt_embeds: settings.prompt_embeds.clone(),
    };
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mut stamps = Vec::new();
    file_stamps(model, 2, &mut stamps);
    if let Some(prompt) = &settings.prompt_embeds {
        file_stamps(prompt, 0, &mut stamps);
    }
    let key: ModelKey = (
        canonical(model),
        // One copy per device: on CUDA the location names it; on the CPU, where every
        // id is the same device, `device-id` still names a copy of its own (one per NUMA
        // node, or per channel of a multi-channel pipeline), so that one pipeline with an
        // element per device-id behaves the same on either.
        format!("{:?}#{}", device.location(), settings.device_id),
        options.dtype,
        options.vae_dtype,
        settings.prompt_embeds.as_deref().map(canonical),
        stamps,
    );
    let mut models = MODELS.lock();
    models.retain(|_, m| m.strong_count() > 0);
    if let Some(loaded) = models.get(&key).and_then(Weak::upgrade) {
        return Ok(loaded);
    }
    let loaded = Arc::new(TurboVsrModel::load(model, &options, device)?);
    models.insert(key, Arc::downgrade(&loaded));
    Ok(loaded)
}
