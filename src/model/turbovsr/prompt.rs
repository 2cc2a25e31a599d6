//! The prompt a TurboVSR checkpoint is conditioned on (DESIGN §3.3): `prompt_embeds` and its
//! mask, read from a safetensors file and checked against the transformer.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

/// Reads `prompt_embeds` `[L, C]` and `prompt_attention_mask` `[L]` (optional: all ones) from
/// `path` (DESIGN §3.3), checked against the transformer's `caption_channels`: (1, L, C) and
/// (1, L) on `device`. Errors name the file, the key and the expected shape.
pub fn load_prompt(
    path: &Path,
    caption_channels: usize,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor)> {
    let p = path.display();
    let tensors = crate::model::checkpoint::weights::read_all(path)
        .with_context(|| format!("reading prompt embeddings {p}"))?;
    let embeds = tensors.get("prompt_embeds").with_context(|| {
        format!(
            "{p}: missing key `prompt_embeds` (expected shape [L, {caption_channels}]; it has: {})",
            tensors.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let (l, c) = embeds
        .dims2()
        .ok()
        .filter(|&(l, c)| l > 0 && c == caption_channels)
        .with_context(|| {
            format!(
                "{p}: key `prompt_embeds` has shape {:?}, expected [L, {caption_channels}] (L >= 1; \
                 {caption_channels} = the transformer's caption_channels)",
                embeds.dims()
            )
        })?;
    if !embeds.dtype().is_float() {
        bail!(
            "{p}: key `prompt_embeds` has dtype {:?}, expected a float type",
            embeds.dtype()
        );
    }
    let embeds = embeds.to_dtype(DType::F32)?;
    if embeds
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite())
    {
        bail!("{p}: key `prompt_embeds` holds NaN or infinite values");
    }
    let mask = match tensors.get("prompt_attention_mask") {
        Some(m) if m.dims() == [l] => {
            let m = m.to_dtype(DType::F32)?;
            let values = m.to_vec1::<f32>()?;
            if values.iter().any(|v| *v != 0.0 && *v != 1.0) {
                bail!("{p}: key `prompt_attention_mask` must hold only 0 and 1");
            }
            if !values.contains(&1.0) {
                bail!("{p}: key `prompt_attention_mask` masks every prompt token");
            }
            m
        }
        Some(m) => bail!(
            "{p}: key `prompt_attention_mask` has shape {:?}, expected [{l}] (one entry per \
             prompt_embeds row)",
            m.dims()
        ),
        None => Tensor::ones(l, DType::F32, &Device::Cpu)?,
    };
    Ok((
        embeds.reshape((1, l, c))?.to_device(device)?,
        mask.reshape((1, l))?.to_device(device)?,
    ))
}
