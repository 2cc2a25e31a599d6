//! Trainable weights: a candle `VarMap` holding every tensor a module reads, under the same
//! diffusers names the loaders use, so a trained model is saved as an ordinary checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::model::turbovsr::test_model::{hash_name, SplitMix};

/// How one tensor starts: `mean + std * N(0, 1)`, values drawn from a generator seeded by the
/// run seed and the tensor's name (so adding a tensor does not change the others).
pub type InitRule = dyn Fn(&str, &[usize]) -> (f32, f32);

/// A `VarMap` with one variable per entry of `shapes`, initialised by `rule`.
pub fn init_varmap(
    shapes: &BTreeMap<String, Vec<usize>>,
    rule: &InitRule,
    seed: u64,
) -> anyhow::Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
        for (name, shape) in shapes {
            let (mean, std) = rule(name, shape);
            let n: usize = shape.iter().product();
            let mut values = Vec::with_capacity(n);
            let mut rng = SplitMix(hash_name(seed, name));
            while values.len() < n {
                let (a, b) = rng.normal_pair();
                values.push(mean + std * a);
                if values.len() < n {
                    values.push(mean + std * b);
                }
            }
            let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?;
            data.insert(name.clone(), Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

/// A builder over `varmap` for the model constructors: every `get` returns the variable itself
/// (not a copy), so the loss's gradients reach it. A name the map lacks is an error.
pub fn var_builder(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu)
}

/// The variables sorted by name (a stable order for the optimizer and its checkpoint).
pub fn sorted_vars(varmap: &VarMap) -> anyhow::Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Number of scalar parameters.
/// The variable called `name` in a [`sorted_vars`] list; the error names it and `what` owns it.
pub fn named<'a>(vars: &'a [(String, Var)], name: &str, what: &str) -> anyhow::Result<&'a Var> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| anyhow::anyhow!("{what} has no weight {name}"))
}

pub fn count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Writes the variables as a safetensors file (f32, or `dtype` for an exported model).
pub fn save(varmap: &VarMap, path: &Path, dtype: DType) -> anyhow::Result<()> {
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in sorted_vars(varmap)? {
        tensors.insert(name, var.as_tensor().to_dtype(dtype)?);
    }
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Sets every variable from a safetensors file written by [`save`]: the names and shapes must
/// match exactly (a run resumed with another model configuration is an error).
pub fn load(varmap: &VarMap, path: &Path) -> anyhow::Result<()> {
    let stored = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let vars = sorted_vars(varmap)?;
    for (name, var) in &vars {
        let Some(t) = stored.get(name) else {
            bail!("{} has no tensor `{name}`", path.display());
        };
        if t.dims() != var.dims() {
            bail!(
                "{}: `{name}` has shape {:?}, the model needs {:?}",
                path.display(),
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    if stored.len() != vars.len() {
        let extra: Vec<&String> = stored
            .keys()
            .filter(|k| !vars.iter().any(|(n, _)| n == *k))
            .take(3)
            .collect();
        bail!(
            "{} has tensors the model does not have, e.g. {extra:?}",
            path.display()
        );
    }
    Ok(())
}
