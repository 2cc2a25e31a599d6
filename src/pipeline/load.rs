//! Loading the [`FrameProcessor`] a `model` setting names, on the device the settings ask for.

use std::path::Path;

use anyhow::Context;
use candle_core::Device;

use super::default_model::{default_model_dir, DEFAULT_MODEL_NAME};
use super::device::select_device;
use super::diffusion::DiffusionProcessor;
use super::processor::{BicubicProcessor, FrameProcessor, BICUBIC_MODEL};
use super::settings::ProcessorSettings;

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
    use crate::pipeline::settings::DeviceChoice;

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
