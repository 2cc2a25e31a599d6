//! Randomly initialised checkpoint folders of DESIGN §3.3 (`turbovsr make-test-model`, DESIGN §7),
//! for tests, demos and benchmarks. They upscale nothing meaningfully.
//!
//! The tensors a preset needs are found by building the real modules on a recording
//! `VarBuilder` backend (so the key list can never drift from the loaders), then written to
//! safetensors one tensor at a time, so the 2B preset never holds its weights in memory.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde_json::json;

use super::denoiser::TurboVsrDenoiser;
use crate::model::transformer::LtxTransformerConfig;
use crate::model::vae::{AutoencoderKlLtxVideo, VaeConfig};

/// The shapes of a test checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A few thousand parameters: a 49-frame 64x64 -> 256x256 window in seconds on a CPU.
    Tiny,
    /// LTX-Video 2B (28 blocks of 32 heads x 64, captions of 4096) with the 0.9.1 VAE.
    Ltx2b,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "ltx-2b" => Ok(Preset::Ltx2b),
            _ => Err(format!("unknown preset '{s}': expected tiny or ltx-2b")),
        }
    }
}

/// What [`write_test_model`] writes.
#[derive(Debug, Clone)]
pub struct TestModelOptions {
    pub preset: Preset,
    /// Seed of the random weights.
    pub seed: u64,
    /// Write the shortcut step-size embedder (false: a plain flow-matching checkpoint).
    pub step_embedder: bool,
}

impl TestModelOptions {
    pub fn new(preset: Preset) -> Self {
        Self {
            preset,
            seed: 0,
            step_embedder: true,
        }
    }
}

/// `config.json` of the VAE (diffusers' `AutoencoderKLLTXVideo` keys, 0.9.1 block structure).
pub fn vae_config_json(preset: Preset) -> serde_json::Value {
    let (latent, enc, dec, layers, dec_layers) = match preset {
        // The smallest 0.9.1-structured VAE (see scripts/fixtures/gen_vae.py): residual
        // upsamplers need the decoder channels to halve from block to block, divisible by 8.
        Preset::Tiny => (
            8,
            json!([4, 8, 16, 16]),
            json!([8, 16, 32]),
            json!([1, 1, 1, 1, 1]),
            json!([1, 1, 1, 1]),
        ),
        // diffusers/LTX-Video-0.9.1 vae/config.json (the single-file 0.9.1 preset,
        // checkpoint::ltx_keys)
        Preset::Ltx2b => (
            128,
            json!([128, 256, 512, 512]),
            json!([256, 512, 1024]),
            json!([4, 3, 3, 3, 4]),
            json!([5, 6, 7, 8]),
        ),
    };
    json!({
        "_class_name": "AutoencoderKLLTXVideo",
        "_diffusers_version": "0.42.1",
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent,
        "block_out_channels": enc,
        "down_block_types": ["LTXVideoDownBlock3D", "LTXVideoDownBlock3D",
                             "LTXVideoDownBlock3D", "LTXVideoDownBlock3D"],
        "decoder_block_out_channels": dec,
        "layers_per_block": layers,
        "decoder_layers_per_block": dec_layers,
        "spatio_temporal_scaling": [true, true, true, false],
        "decoder_spatio_temporal_scaling": [true, true, true],
        "decoder_inject_noise": [true, true, true, false],
        "downsample_type": ["conv", "conv", "conv", "conv"],
        "upsample_residual": [true, true, true],
        "upsample_factor": [2, 2, 2],
        "timestep_conditioning": true,
        "patch_size": 4,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "scaling_factor": 1.0,
        "encoder_causal": true,
        "decoder_causal": false,
    })
}

/// `config.json` of the transformer (diffusers' `LTXVideoTransformer3DModel` keys).
pub fn transformer_config_json(preset: Preset) -> serde_json::Value {
    let (channels, heads, head_dim, layers, caption) = match preset {
        Preset::Tiny => (8, 2, 8, 2, 16),
        Preset::Ltx2b => (128, 32, 64, 28, 4096),
    };
    json!({
        "_class_name": "LTXVideoTransformer3DModel",
        "_diffusers_version": "0.42.1",
        "in_channels": channels,
        "out_channels": channels,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "cross_attention_dim": heads * head_dim,
        "num_layers": layers,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": false,
        "norm_eps": 1e-6,
        "caption_channels": caption,
        "attention_bias": true,
        "attention_out_bias": true,
    })
}

/// Records the name and shape of every tensor a module reads; hands out zero-cost broadcast
/// zeros so that building even the 2B model allocates next to nothing.
#[derive(Clone, Default)]
struct ShapeRecorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(name.to_string(), s.dims().to_vec());
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder: {name} was requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        // Optional tensors (the step embedder) are recorded too; the caller filters them.
        true
    }
}

impl ShapeRecorder {
    fn take(&self) -> BTreeMap<String, Vec<usize>> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The VAE's tensors for `cfg` (name -> shape).
pub fn vae_shapes(cfg: &VaeConfig) -> anyhow::Result<BTreeMap<String, Vec<usize>>> {
    let rec = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    AutoencoderKlLtxVideo::new(cfg, vb).context("enumerating the VAE's tensors")?;
    Ok(rec.take())
}

/// The transformer's tensors (with the TurboVSR head) for `cfg`. Builds one block and repeats
/// its keys, so the 2B model is never built.
pub fn transformer_shapes(
    cfg: &LtxTransformerConfig,
    cond_channels: usize,
    step_embedder: bool,
) -> anyhow::Result<BTreeMap<String, Vec<usize>>> {
    let rec = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    let one = LtxTransformerConfig {
        num_layers: 1,
        ..cfg.clone()
    };
    TurboVsrDenoiser::new(&one, cond_channels, 1.0, vb)
        .context("enumerating the transformer's tensors")?;
    let mut out = BTreeMap::new();
    for (name, shape) in rec.take() {
        if !step_embedder && name.starts_with(super::denoiser::STEP_EMBEDDER) {
            continue;
        }
        match name.strip_prefix("transformer_blocks.0.") {
            Some(rest) => {
                for i in 0..cfg.num_layers {
                    out.insert(format!("transformer_blocks.{i}.{rest}"), shape.clone());
                }
            }
            None => {
                out.insert(name, shape);
            }
        }
    }
    Ok(out)
}

/// SplitMix64: a small, fast, seedable generator for the weights.
pub struct SplitMix(pub u64);

impl SplitMix {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Two standard normal values (Box-Muller).
    pub fn normal_pair(&mut self) -> (f32, f32) {
        let u1 = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        ((r * a.cos()) as f32, (r * a.sin()) as f32)
    }
}

/// How one tensor is initialised: `mean + std * N(0, 1)`.
fn init_for(name: &str, shape: &[usize]) -> (f32, f32) {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if leaf == "latents_std" {
        return (1.0, 0.0);
    }
    if leaf == "latents_mean" {
        return (0.0, 0.0);
    }
    if leaf == "timestep_scale_multiplier" {
        return (1000.0, 0.0);
    }
    if leaf.starts_with("per_channel_scale") {
        return (0.0, 0.05);
    }
    if leaf == "scale_shift_table" {
        let d = shape.last().copied().unwrap_or(1).max(1);
        return (0.0, 1.0 / (d as f32).sqrt());
    }
    if shape.len() <= 1 {
        // norm weights around 1, biases around 0
        return if name.contains("norm") && leaf == "weight" {
            (1.0, 0.0)
        } else {
            (0.0, 0.02)
        };
    }
    let fan_in: usize = shape[1..].iter().product();
    (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
}

pub fn hash_name(seed: u64, name: &str) -> u64 {
    let mut h = SplitMix(seed ^ 0x5151_7a7a);
    let mut acc = h.next();
    for b in name.bytes() {
        acc = SplitMix(acc ^ u64::from(b)).next();
    }
    acc
}

/// Writes `tensors` as a safetensors file with random values, one tensor at a time.
fn write_random_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Vec<usize>>,
    dtype: DType,
    seed: u64,
) -> anyhow::Result<()> {
    let (tag, bytes_per) = match dtype {
        DType::F32 => ("F32", 4),
        DType::BF16 => ("BF16", 2),
        other => bail!("test models are written in f32 or bf16, not {other:?}"),
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * bytes_per;
        header.insert(
            name.clone(),
            json!({"dtype": tag, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    header.insert(
        "__metadata__".into(),
        json!({"format": "pt", "generator": "turbovsr make-test-model"}),
    );
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // the data starts 8-byte aligned, as the reference writer pads it
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write_err = || format!("writing {}", path.display());
    out.write_all(&(header.len() as u64).to_le_bytes())
        .with_context(write_err)?;
    out.write_all(&header).with_context(write_err)?;
    // Each tensor's values depend only on the seed and its name, so the tensors of a group are
    // drawn on all cores and written in order: the same bytes as one thread, several times faster
    // (the 2B test model took 74 s on one core of the GPU machine).
    let list: Vec<(&String, &Vec<usize>)> = tensors.iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut start = 0;
    while start < list.len() {
        let mut end = start;
        let mut group_bytes = 0;
        while end < list.len() && (end == start || group_bytes < GROUP_BYTES) {
            group_bytes += list[end].1.iter().product::<usize>() * bytes_per;
            end += 1;
        }
        let group = &list[start..end];
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<Mutex<Vec<u8>>> = group.iter().map(|_| Mutex::new(Vec::new())).collect();
        std::thread::scope(|scope| {
            for _ in 0..threads.min(group.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, shape)) = group.get(i) else {
                        break;
                    };
                    let bytes = random_tensor_bytes(name, shape, dtype, seed);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = bytes;
                });
            }
        });
        for slot in slots {
            let bytes = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            out.write_all(&bytes).with_context(write_err)?;
        }
        start = end;
    }
    out.flush().with_context(write_err)?;
    Ok(())
}

/// Bytes drawn in parallel before they are written (bounds the memory of `make-test-model`).
const GROUP_BYTES: usize = 512 << 20;

/// The little-endian bytes of one tensor: normal values of [`init_for`]'s mean and deviation
/// from a stream seeded by `seed` and the tensor's name.
fn random_tensor_bytes(name: &str, shape: &[usize], dtype: DType, seed: u64) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let (mean, std) = init_for(name, shape);
    let mut rng = SplitMix(hash_name(seed, name));
    let mut buf = Vec::with_capacity(n * if dtype == DType::F32 { 4 } else { 2 });
    let mut i = 0;
    while i < n {
        let (a, b) = rng.normal_pair();
        for v in [a, b].into_iter().take(n - i) {
            let v = mean + std * v;
            match dtype {
                DType::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                _ => buf.extend_from_slice(&f32_to_bf16(v).to_le_bytes()),
            }
        }
        i += 2;
    }
    buf
}

/// Round to nearest even.
fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a random checkpoint folder (DESIGN §3.3) to `dir`: `turbovsr.json`, `vae/` and
/// `transformer/` in the diffusers layout, the transformer with TurboVSR's keys (DESIGN §3.2).
pub fn write_test_model(dir: &Path, options: &TestModelOptions) -> anyhow::Result<()> {
    let vae_json = vae_config_json(options.preset);
    let tf_json = transformer_config_json(options.preset);
    let vae_cfg = VaeConfig::from_json(&vae_json.to_string())?;
    let tf_cfg: LtxTransformerConfig = serde_json::from_value(tf_json.clone())?;
    let vae_dir = dir.join("vae");
    let tf_dir = dir.join("transformer");
    for d in [&vae_dir, &tf_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let dtype = match options.preset {
        Preset::Tiny => DType::F32,
        Preset::Ltx2b => DType::BF16,
    };
    write_json(
        &dir.join(super::config::CONFIG_FILE),
        &json!({"scale": 4, "cond_scale": std::f64::consts::FRAC_1_SQRT_2}),
    )?;
    write_json(&vae_dir.join("config.json"), &vae_json)?;
    write_random_safetensors(
        &vae_dir.join("diffusion_pytorch_model.safetensors"),
        &vae_shapes(&vae_cfg)?,
        dtype,
        options.seed,
    )?;
    write_json(&tf_dir.join("config.json"), &tf_json)?;
    write_random_safetensors(
        &tf_dir.join("diffusion_pytorch_model.safetensors"),
        &transformer_shapes(
            &tf_cfg,
            vae_cfg.latent_channels * tf_cfg.patch_size * tf_cfg.patch_size * tf_cfg.patch_size_t,
            options.step_embedder,
        )?,
        dtype,
        options.seed.wrapping_add(1),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ltx_2b_preset_has_the_real_shapes_without_building_them() -> anyhow::Result<()> {
        let tf_cfg: LtxTransformerConfig =
            serde_json::from_value(transformer_config_json(Preset::Ltx2b))?;
        let shapes = transformer_shapes(&tf_cfg, 128, true)?;
        let params: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
        // LTX-Video 2B: 1.92 G parameters, plus the head
        assert!((1_850_000_000..2_050_000_000).contains(&params), "{params}");
        assert_eq!(shapes["cond_embedder.weight"], vec![2048, 128]);
        assert_eq!(
            shapes["time_embed.emb.step_embedder.linear_1.weight"],
            vec![2048, 256]
        );
        assert_eq!(
            shapes["time_embed.emb.step_embedder.linear_2.weight"],
            vec![2048, 2048]
        );
        assert!(shapes.contains_key("transformer_blocks.27.attn2.to_k.weight"));
        assert!(!shapes.contains_key("transformer_blocks.28.attn2.to_k.weight"));
        let vae_cfg = VaeConfig::from_json(&vae_config_json(Preset::Ltx2b).to_string())?;
        assert_eq!(vae_cfg.spatial_compression(), 32);
        assert_eq!(vae_cfg.temporal_compression(), 8);
        let vae = vae_shapes(&vae_cfg)?;
        assert!(vae.contains_key("decoder.timestep_scale_multiplier"));
        let no_step = transformer_shapes(&tf_cfg, 128, false)?;
        assert_eq!(no_step.len() + 4, shapes.len());
        Ok(())
    }

    #[test]
    fn written_files_are_valid_safetensors_and_deterministic() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("turbovsr-mtm-{}", std::process::id()));
        write_test_model(&dir, &TestModelOptions::new(Preset::Tiny))?;
        let file = dir.join("transformer/diffusion_pytorch_model.safetensors");
        let first = std::fs::read(&file)?;
        let w = candle_core::safetensors::load(&file, &Device::Cpu)?;
        assert_eq!(w["cond_embedder.weight"].dims(), &[16, 8]);
        let norm = w["transformer_blocks.0.attn1.norm_q.weight"].to_vec1::<f32>()?;
        assert!(norm.iter().all(|v| *v == 1.0));
        let vae = candle_core::safetensors::load(
            dir.join("vae/diffusion_pytorch_model.safetensors"),
            &Device::Cpu,
        )?;
        assert!(vae["latents_std"]
            .to_vec1::<f32>()?
            .iter()
            .all(|v| *v == 1.0));
        write_test_model(&dir, &TestModelOptions::new(Preset::Tiny))?;
        assert_eq!(std::fs::read(&file)?, first);
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.5), 0xc020);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
