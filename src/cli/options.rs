//! Options several subcommands share, as clap types that map into the core settings
//! ([`crate::pipeline::settings`]).

use clap::{Args, ValueEnum};

use crate::pipeline::settings::{ColorFix, DeviceChoice, Precision};

/// How OUT is written: the options `turbovsr upscale` and `turbovsr join` share.
#[derive(Args, Debug, Clone)]
pub struct EncodingArgs {
    /// Video encoder as a gst-launch description, replacing the default for OUT's extension,
    /// e.g. "x264enc pass=qual quantizer=14 speed-preset=slow".
    #[arg(long)]
    pub encoder: Option<String>,
    /// Audio encoder as a gst-launch description, replacing the default for OUT's extension.
    #[arg(long)]
    pub audio_encoder: Option<String>,
    /// Drop the input's audio.
    #[arg(long)]
    pub no_audio: bool,
    /// Replace OUT if it exists.
    #[arg(short = 'y', long)]
    pub overwrite: bool,
}

/// Where the model runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
}

/// Numeric precision (`--precision`, `--vae-precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Auto,
    F32,
    Bf16,
    F16,
}

/// Colour correction of the model output towards the bicubic input (`--color-fix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorFixArg {
    None,
    Wavelet,
    Adain,
}

impl From<Device> for DeviceChoice {
    fn from(d: Device) -> Self {
        match d {
            Device::Auto => DeviceChoice::Auto,
            Device::Cpu => DeviceChoice::Cpu,
            Device::Cuda => DeviceChoice::Cuda,
        }
    }
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => Precision::Auto,
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

impl From<ColorFixArg> for ColorFix {
    fn from(c: ColorFixArg) -> Self {
        match c {
            ColorFixArg::None => ColorFix::None,
            ColorFixArg::Wavelet => ColorFix::Wavelet,
            ColorFixArg::Adain => ColorFix::Adain,
        }
    }
}
