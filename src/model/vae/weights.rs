//! Loading a diffusers model's safetensors through `VarBuilder` while recording which tensors the
//! model read, so that keys the config does not account for are reported (DESIGN §3.3: missing,
//! unexpected or mis-shaped keys are errors). Without this, a 0.9.1 checkpoint read with a 0.9.0
//! config would silently drop its timestep and noise-injection weights.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

struct Inner {
    files: MmapedSafetensors,
    used: Mutex<HashSet<String>>,
}

/// Memory-mapped safetensors that remember the names read through them.
#[derive(Clone)]
pub struct TrackedWeights(Arc<Inner>);

impl TrackedWeights {
    /// Maps `paths` read-only.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        // SAFETY: memory-mapped read-only; like every safetensors loader we assume nobody
        // truncates the files while the model is being built (tensors are copied out).
        let files = unsafe { MmapedSafetensors::multi(paths)? };
        Ok(Self(Arc::new(Inner {
            files,
            used: Mutex::new(HashSet::new()),
        })))
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    fn mark(&self, name: &str) {
        if let Ok(mut used) = self.0.used.lock() {
            used.insert(name.to_string());
        }
    }

    /// The tensors in the files that nothing read, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = match self.0.used.lock() {
            Ok(u) => u.clone(),
            Err(_) => return Vec::new(),
        };
        let mut names: Vec<String> = self
            .0
            .files
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| !used.contains(name))
            .collect();
        names.sort();
        names
    }
}

impl SimpleBackend for TrackedWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.mark(name);
        SimpleBackend::get(&self.0.files, s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.mark(name);
        self.0.files.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.files.contains_tensor(name)
    }
}
