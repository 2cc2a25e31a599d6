//! `turbovsr forward transformer` (DESIGN §7): the transformer behind the CLI's named tensors.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use super::{LtxVideoTransformer3DModel, RopePositions, TransformerInputs};
use crate::model::forward::ForwardModule;

/// The transformer as a [`ForwardModule`]. Inputs: `hidden_states` (b, n, C),
/// `encoder_hidden_states` (b, L, Ccap), `timestep` (b) or (b, n), `encoder_attention_mask`
/// (b, L) (absent: no mask), `video_shape` i64 (3) = (frames, height, width),
/// `rope_interpolation_scale` f32 (3) (absent: raw grid) or `video_coords` (b, 3, n).
/// Output: `sample` (b, n, out_channels).
pub struct TransformerForward {
    model: LtxVideoTransformer3DModel,
    device: Device,
}

impl TransformerForward {
    /// `dir`: the transformer folder or a checkpoint folder holding `transformer/`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            model: LtxVideoTransformer3DModel::from_pretrained(dir, dtype, device)?,
            device: device.clone(),
        })
    }
}

fn input<'a>(inputs: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    inputs
        .get(name)
        .with_context(|| format!("input tensor `{name}` is missing"))
}

/// Reads a 3-element tensor as f64 values.
fn triple(t: &Tensor, name: &str) -> Result<[f64; 3]> {
    let v = t
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
        .with_context(|| format!("reading `{name}`"))?;
    match v.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => anyhow::bail!("`{name}` has {} values, expected 3", v.len()),
    }
}

impl ForwardModule for TransformerForward {
    fn forward(&self, inputs: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let vs = triple(input(inputs, "video_shape")?, "video_shape")?;
        if vs.iter().any(|&x| x < 1.0 || x.fract() != 0.0) {
            anyhow::bail!("`video_shape` must hold three positive integers, got {vs:?}");
        }
        let video_shape = (vs[0] as usize, vs[1] as usize, vs[2] as usize);
        let scale = inputs
            .get("rope_interpolation_scale")
            .map(|t| triple(t, "rope_interpolation_scale"))
            .transpose()?
            .map(|s| [s[0] as f32, s[1] as f32, s[2] as f32]);
        let coords = inputs.get("video_coords");
        let positions = match coords {
            Some(c) => RopePositions::Coords(c),
            None => RopePositions::Grid {
                rope_interpolation_scale: scale,
            },
        };
        let dev =
            |name: &str| -> Result<Tensor> { Ok(input(inputs, name)?.to_device(&self.device)?) };
        let mask = inputs
            .get("encoder_attention_mask")
            .map(|m| m.to_device(&self.device))
            .transpose()?;
        let sample = self.model.forward(&TransformerInputs {
            hidden_states: &dev("hidden_states")?,
            encoder_hidden_states: &dev("encoder_hidden_states")?,
            timestep: &dev("timestep")?,
            encoder_attention_mask: mask.as_ref(),
            video_shape,
            positions,
        })?;
        Ok(HashMap::from([("sample".to_string(), sample)]))
    }
}
