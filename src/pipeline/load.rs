//! Choosing the device and loading a [`FrameProcessor`] for a `model` setting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;

use super::color_fix::ColorFix;
use super::default_model::{default_model_dir, DEFAULT_MODEL_NAME};
use super::diffusion::DiffusionProcessor;
use super::processor::{BicubicProcessor, FrameProcessor, BICUBIC_MODEL};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when built with the `cuda` feature and a GPU is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// Numeric precision of a model's weights and activations.
///
/// For the transformer (`precision`), `Auto` is bf16 on CUDA and f32 on the CPU. For the VAE
/// (`vae-precision`), `Auto` is f32 everywhere: on the committed random-weight VAE fixtures, bf16
/// is 2-4.7e-2 (relative L2) off the f32 result, on CUDA and on the CPU alike, over the 2e-2
/// bound of issue 8, and it stays over it even when only the convolutions' inputs, weights and
/// outputs are rounded to bf16 (BENCHMARKS.md "bf16 and the VAE"). f16 is within 6.4e-3 there,
/// but its range (65504) is a risk for trained decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

/// What a processor is loaded with.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    pub device: DeviceChoice,
    pub device_id: usize,
    pub precision: Precision,
    /// Precision of the VAE (encode and decode); `Auto` is f32 on every device (see
    /// [`Precision`]).
    pub vae_precision: Precision,
    /// Sampler steps per latent sampling pass: 1, 2, 4, 8 or 16 (DESIGN §4).
    pub steps: usize,
    /// Seed of the fixed sampling noise.
    pub seed: u64,
    /// Prompt embeddings to use instead of the checkpoint's `prompt_embeds.safetensors`.
    pub prompt_embeds: Option<PathBuf>,
    /// Spatial denoising tile in latents (0: the checkpoint's training tile, DESIGN §5).
    pub tile_size: usize,
    /// Overlap between spatial tiles in latents.
    pub tile_overlap: usize,
    /// Colour correction of the diffusion output towards the bicubic input (DESIGN §6); the
    /// bicubic baseline ignores it (it is its own reference).
    pub color_fix: ColorFix,
}

/// Default sampler steps (DESIGN §4).
pub const DEFAULT_STEPS: usize = 4;
/// Default overlap of spatial tiles in latents (DESIGN §5).
pub const DEFAULT_TILE_OVERLAP: usize = 8;

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            device: DeviceChoice::default(),
            device_id: 0,
            precision: Precision::default(),
            vae_precision: Precision::default(),
            steps: DEFAULT_STEPS,
            seed: 0,
            prompt_embeds: None,
            tile_size: 0,
            tile_overlap: DEFAULT_TILE_OVERLAP,
            color_fix: ColorFix::None,
        }
    }
}

/// Opens the device `settings` asks for.
pub fn select_device(settings: &ProcessorSettings) -> anyhow::Result<Device> {
    match settings.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => open_cuda(settings.device_id),
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                if let Ok(device) = open_cuda(settings.device_id) {
                    return Ok(device);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Opens CUDA device `id`. The error names the device and why it cannot be opened: a build
/// without CUDA, a driver that does not initialise (no GPU, driver and library mismatch), or an
/// index past the devices the driver sees.
#[cfg(feature = "cuda")]
pub fn open_cuda(id: usize) -> anyhow::Result<Device> {
    use cudarc::driver::CudaContext;
    if let Some(missing) = missing_cuda_library() {
        bail!("cannot open CUDA device {id}: {missing}");
    }
    // cuInit's own code and message, e.g. CUDA_ERROR_NO_DEVICE "no CUDA-capable device is
    // detected" or CUDA_ERROR_INSUFFICIENT_DRIVER.
    let count = CudaContext::device_count().map_err(|e| {
        anyhow::anyhow!("cannot open CUDA device {id}: the CUDA driver failed to initialise: {e}")
    })?;
    if id >= count.max(0) as usize {
        bail!(
            "cannot open CUDA device {id}: the CUDA driver sees {count} device{} (device-id counts from 0)",
            if count == 1 { "" } else { "s" }
        );
    }
    Device::new_cuda(id).with_context(|| format!("cannot open CUDA device {id}"))
}

/// The CUDA libraries a device needs, as cudarc opens them on first use (scripts/build-cuda.sh
/// builds with its `dynamic-loading`): the driver's, cuBLAS, cuRAND and, with the `cudnn`
/// feature, cuDNN. cudarc panics where none of a library's names opens, so they are tried here
/// first with the same names in the same order (`lib<name>.so`, then `.so.<major>` of the CUDA
/// version built against, `.so.12`, `.so.11`, `.so.10`, `.so.9`, `.so.1`). A linked build has
/// them loaded already, and this finds them.
#[cfg(feature = "cuda")]
const CUDA_LIBRARIES: &[(&str, &str)] = &[
    ("cuda", "the NVIDIA driver's CUDA library"),
    ("cublas", "cuBLAS"),
    ("curand", "cuRAND"),
    #[cfg(feature = "cudnn")]
    ("cudnn", "cuDNN"),
];

/// Names cudarc tries for library `name` on Linux, in its order.
#[cfg(feature = "cuda")]
fn cuda_library_names(name: &str) -> Vec<String> {
    let major = cudarc::driver::sys::CUDA_VERSION / 1000;
    let mut names = vec![format!("lib{name}.so"), format!("lib{name}.so.{major}")];
    for v in [12, 11, 10, 9, 1] {
        let n = format!("lib{name}.so.{v}");
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The first of `CUDA_LIBRARIES` that none of its names opens, as a sentence for the error.
#[cfg(feature = "cuda")]
fn missing_cuda_library() -> Option<String> {
    CUDA_LIBRARIES.iter().find_map(|(name, what)| {
        let names = cuda_library_names(name);
        // SAFETY: dlopen runs the library's initialisers; these are NVIDIA's libraries, the ones
        // cudarc opens next, and the handle is closed again at once.
        let found = names
            .iter()
            .any(|n| unsafe { libloading::Library::new(n) }.is_ok());
        (!found).then(|| {
            format!(
                "{what} is not installed where the dynamic loader looks (none of {} opens; \
                 LD_LIBRARY_PATH is {:?})",
                names.join(", "),
                std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
            )
        })
    })
}

/// Opens CUDA device `id`: without the `cuda` feature, an error saying so.
#[cfg(not(feature = "cuda"))]
pub fn open_cuda(id: usize) -> anyhow::Result<Device> {
    bail!("cannot open CUDA device {id}: this build of turbovsr has no CUDA support (build with --features cuda)")
}

/// Free and total memory of `device` in bytes, when it is a CUDA device.
pub fn device_memory(device: &Device) -> Option<(usize, usize)> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        return cuda.cuda_stream().context().mem_get_info().ok();
    }
    let _ = device;
    None
}

/// Adds what cudarc's out-of-memory error leaves out (it has only the driver's code, not the
/// size asked for): the device, what was being run, and the device's free and total memory now.
pub fn explain_out_of_memory(err: anyhow::Error, device: &Device, what: &str) -> anyhow::Error {
    if !format!("{err:#}").contains("CUDA_ERROR_OUT_OF_MEMORY") {
        return err;
    }
    let id = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
        _ => 0,
    };
    let memory = match device_memory(device) {
        Some((free, total)) => format!(
            "{} MiB of {} MiB free after the failure",
            free >> 20,
            total >> 20
        ),
        None => "free memory unknown".to_string(),
    };
    err.context(format!(
        "CUDA device {id} ran out of memory during {what} ({memory}); a smaller tile-size, a \
         shorter window or precision=bf16 needs less"
    ))
}

/// Loads the processor named by `model`: `bicubic`, a TurboVSR checkpoint folder (DESIGN §3.3)
/// or a single-file LTX-Video checkpoint (see [`crate::model::checkpoint`]); an empty `model`
/// is the shipped default model ([`default_model_dir`]). Every error names the path and the
/// reason.
pub fn load_processor(
    model: &str,
    settings: &ProcessorSettings,
) -> anyhow::Result<(Box<dyn FrameProcessor>, Device)> {
    let device = select_device(settings)?;
    if model == BICUBIC_MODEL {
        return Ok((Box::new(BicubicProcessor), device));
    }
    if model.is_empty() {
        let dir = default_model_dir().context("cannot prepare the shipped default model")?;
        let processor = DiffusionProcessor::load(&dir, settings, &device).with_context(|| {
            format!(
                "cannot load {DEFAULT_MODEL_NAME} (written to '{}')",
                dir.display()
            )
        })?;
        return Ok((Box::new(processor), device));
    }
    let path = Path::new(model);
    let processor = DiffusionProcessor::load(path, settings, &device)
        .with_context(|| format!("cannot load model '{}'", path.display()))?;
    Ok((Box::new(processor), device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(model: &str) -> String {
        format!(
            "{:#}",
            load_processor(model, &ProcessorSettings::default())
                .err()
                .expect("expected an error")
        )
    }

    #[test]
    fn bicubic_loads() {
        let (p, d) = load_processor("bicubic", &ProcessorSettings::default()).unwrap();
        assert_eq!(p.name(), "bicubic");
        assert!(d.is_cpu() || cfg!(feature = "cuda"));
    }

    #[test]
    fn errors_name_the_path_and_reason() {
        let e = err("/nonexistent/turbovsr-model");
        assert!(e.contains("/nonexistent/turbovsr-model"), "{e}");
        assert!(e.contains("No such file"), "{e}");
        let dir = std::env::temp_dir().join(format!("turbovsr-load-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("vae")).unwrap();
        let e = err(dir.to_str().unwrap());
        assert!(e.contains("missing transformer/"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unset_model_is_the_shipped_default() {
        let (p, _) = load_processor("", &ProcessorSettings::default()).unwrap();
        assert_ne!(p.name(), "bicubic");
    }

    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        if cfg!(feature = "cuda") {
            return;
        }
        let settings = ProcessorSettings {
            device: DeviceChoice::Cuda,
            ..Default::default()
        };
        let settings = ProcessorSettings {
            device_id: 3,
            ..settings
        };
        let e = format!("{:#}", load_processor("bicubic", &settings).err().unwrap());
        assert!(e.contains("--features cuda"), "{e}");
        assert!(e.contains("CUDA device 3"), "{e}");
    }
}
