//! Opening the device a setting names, and what a device's errors leave out.

use anyhow::bail;
#[cfg(feature = "cuda")]
use anyhow::Context;
use candle_core::Device;

use super::settings::{DeviceChoice, ProcessorSettings};

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
