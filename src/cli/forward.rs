//! `turbovsr forward ...` (DESIGN §7): run one module on tensors read from a safetensors file and
//! write its outputs to another, for parity checks against diffusers and for timing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::model::transformer::{LtxVideoTransformer3DModel, RopePositions, TransformerInputs};
use crate::model::vae::AutoencoderKlLtxVideo;

/// Which module `forward` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardModuleKind {
    /// `sample` [B,3,F,H,W] in [-1,1] -> `latent` (posterior mean, not normalized).
    VaeEncode,
    /// `latent` (+ `timestep` [B]) -> `sample`.
    VaeDecode,
    /// `hidden_states`, `encoder_hidden_states`, `timestep`, `encoder_attention_mask`,
    /// `video_shape`, `rope_interpolation_scale` -> `sample`.
    Transformer,
}

/// A loaded module that maps named input tensors to named output tensors.
pub trait ForwardModule {
    fn forward(&self, inputs: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>>;
}

/// Arguments of `turbovsr forward`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForwardArgs {
    /// Module to run.
    #[arg(value_enum)]
    pub module: ForwardModuleKind,
    /// Module folder (diffusers layout: `config.json` + `diffusion_pytorch_model*.safetensors`),
    /// or a TurboVSR checkpoint folder holding `vae/` and `transformer/`.
    #[arg(long)]
    pub model: PathBuf,
    /// Input tensors (safetensors).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the output tensors (safetensors).
    #[arg(long)]
    pub output: PathBuf,
    /// Run the forward this many times and print `forward_ms_median=<ms>` last.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Compute precision: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// cpu, or cuda[:N] when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Parses `cpu`, `cuda` or `cuda:N` into a candle device.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let id = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .with_context(|| format!("bad CUDA device index in {s:?}"))?,
                None => 0,
            };
            crate::pipeline::device::open_cuda(id)
        }
        other => anyhow::bail!("unknown device {other:?}: expected cpu, cuda or cuda:N"),
    }
}

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_precision(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => anyhow::bail!("unknown precision {other:?}: expected f32, bf16 or f16"),
    }
}

/// `forward vae-encode`: `sample` -> `latent` (the posterior mean, not normalized).
struct VaeEncodeModule(AutoencoderKlLtxVideo, DType);

impl ForwardModule for VaeEncodeModule {
    fn forward(&self, inputs: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let sample = input(inputs, "sample")?.to_dtype(self.1)?;
        let posterior = self.0.encode(&sample)?;
        Ok(HashMap::from([("latent".to_string(), posterior.mean)]))
    }
}

/// `forward vae-decode`: `latent` (+ `timestep`) -> `sample`.
struct VaeDecodeModule(AutoencoderKlLtxVideo, DType);

impl ForwardModule for VaeDecodeModule {
    fn forward(&self, inputs: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let latent = input(inputs, "latent")?.to_dtype(self.1)?;
        let timestep = inputs.get("timestep");
        if self.0.is_timestep_conditioned() && timestep.is_none() {
            anyhow::bail!(
                "this VAE decoder is timestep-conditioned: the input needs `timestep` [B]"
            );
        }
        let sample = self.0.decode(&latent, timestep)?;
        Ok(HashMap::from([("sample".to_string(), sample)]))
    }
}

/// The input tensor `name`, or an error listing the inputs present.
fn input<'a>(inputs: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    inputs.get(name).with_context(|| {
        let mut have: Vec<&str> = inputs.keys().map(String::as_str).collect();
        have.sort_unstable();
        format!(
            "the input file has no tensor `{name}` (it has: {})",
            have.join(", ")
        )
    })
}

/// Loads the module `kind` from `args.model`.
fn load_module(
    kind: ForwardModuleKind,
    args: &ForwardArgs,
    device: &Device,
    dtype: DType,
) -> Result<Box<dyn ForwardModule>> {
    match kind {
        ForwardModuleKind::VaeEncode => Ok(Box::new(VaeEncodeModule(
            AutoencoderKlLtxVideo::load(&args.model, device, dtype)?,
            dtype,
        ))),
        ForwardModuleKind::VaeDecode => Ok(Box::new(VaeDecodeModule(
            AutoencoderKlLtxVideo::load(&args.model, device, dtype)?,
            dtype,
        ))),
        ForwardModuleKind::Transformer => Ok(Box::new(TransformerForward::load(
            &args.model,
            device,
            dtype,
        )?)),
    }
}

/// Runs `turbovsr forward`.
pub fn run(args: &ForwardArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_precision(&args.precision)?;
    let inputs = candle_core::safetensors::load(&args.input, &device)
        .with_context(|| format!("reading input tensors from {}", args.input.display()))?;
    let module = load_module(args.module, args, &device, dtype)?;
    let mut times = Vec::with_capacity(args.repeat.max(1));
    let mut outputs = HashMap::new();
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        outputs = module.forward(&inputs)?;
        // Reading one value back waits for the device to finish the queued work.
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let outputs: HashMap<String, Tensor> = outputs
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&outputs, &args.output)
        .with_context(|| format!("writing output tensors to {}", args.output.display()))?;
    if args.repeat > 1 {
        times.sort_by(f64::total_cmp);
        println!("forward_ms_median={:.3}", times[times.len() / 2]);
    }
    Ok(())
}

/// The transformer as a [`ForwardModule`]. Inputs: `hidden_states` (b, n, C),
/// `encoder_hidden_states` (b, L, Ccap), `timestep` (b) or (b, n), `encoder_attention_mask`
/// (b, L) (absent: no mask), `video_shape` i64 (3) = (frames, height, width),
/// `rope_interpolation_scale` f32 (3) (absent: raw grid) or `video_coords` (b, 3, n).
/// Output: `sample` (b, n, out_channels).
pub(crate) struct TransformerForward {
    model: LtxVideoTransformer3DModel,
    device: Device,
}

impl TransformerForward {
    /// `dir`: the transformer folder or a checkpoint folder holding `transformer/`.
    pub(crate) fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            model: LtxVideoTransformer3DModel::from_pretrained(dir, dtype, device)?,
            device: device.clone(),
        })
    }
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
