//! AdamW (Loshchilov & Hutter) with its moments kept as named tensors, so that a checkpoint
//! holds the whole optimizer state and a resumed run continues exactly where it stopped.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Linear warm-up of the learning rate over this many steps.
    pub warmup: usize,
    /// Gradients are scaled down to this global L2 norm when larger (0: off).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup: 100,
            clip_norm: 1.0,
        }
    }
}

/// The optimizer over a fixed, named list of variables.
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far.
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> anyhow::Result<Self> {
        let zeros = |v: &Var| Tensor::zeros(v.shape(), DType::F32, &Device::Cpu);
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            vars,
            m,
            v,
            step: 0,
        })
    }

    /// The learning rate of the next update (after warm-up).
    pub fn lr(&self) -> f64 {
        let warm = self.config.warmup.max(1) as f64;
        self.config.lr * ((self.step + 1) as f64 / warm).min(1.0)
    }

    /// One update from `grads`; returns the global gradient norm before clipping. Variables
    /// without a gradient (not reached by the loss) keep their value and moments.
    pub fn update(&mut self, grads: &GradStore) -> anyhow::Result<f64> {
        let mut sq = 0f64;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            bail!("the gradient norm is {norm}: the loss diverged (lower the learning rate)");
        }
        let clip = if self.config.clip_norm > 0.0 && norm > self.config.clip_norm {
            self.config.clip_norm / norm
        } else {
            1.0
        };
        let lr = self.lr();
        self.step += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = (g * clip)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let step = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor();
            let decayed = (theta * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (step * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }

    /// Writes the moments (`m.<name>`, `v.<name>`) to a safetensors file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut tensors = std::collections::HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads the moments written by [`AdamW::save`]; `step` is set by the caller.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let stored = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let Some(t) = stored.get(&key) else {
                    bail!("{} has no optimizer tensor `{key}`", path.display());
                };
                if t.dims() != var.dims() {
                    bail!(
                        "{}: `{key}` has shape {:?}, the variable has {:?}",
                        path.display(),
                        t.dims(),
                        var.dims()
                    );
                }
                *slot = t.clone();
            }
        }
        Ok(())
    }
}
