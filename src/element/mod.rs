//! The `turbovsr` GStreamer element (DESIGN §6).
//!
//! # SECTION:element-turbovsr
//!
//! Diffusion video super-resolution: raw video in, raw video at `scale`x the size out, one output
//! frame per input frame with the input's timestamps. Frames are grouped into overlapping windows
//! of `window` frames that a worker thread upscales while the element keeps accepting input (one
//! window queued at most), so memory stays constant for streams of any length.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 videotestsrc num-buffers=100 ! video/x-raw,width=64,height=64 ! \
//!     turbovsr model=bicubic scale=4 ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4
//! ```
//! `model=bicubic` is the bicubic baseline; `model=DIR` names a TurboVSR checkpoint folder.

use gst::glib;
use gst::prelude::*;

mod imp;

/// Where the model runs (`device` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstTurboVsrDevice")]
pub enum DeviceKind {
    #[default]
    #[enum_value(name = "CUDA when available, else CPU", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA (needs a build with --features cuda)", nick = "cuda")]
    Cuda = 2,
}

/// Numeric precision (`precision` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstTurboVsrPrecision")]
pub enum PrecisionKind {
    #[default]
    #[enum_value(name = "bf16 on CUDA, f32 on CPU", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "32-bit float", nick = "f32")]
    F32 = 1,
    #[enum_value(name = "bfloat16", nick = "bf16")]
    Bf16 = 2,
    #[enum_value(name = "16-bit float", nick = "f16")]
    F16 = 3,
}

/// Colour correction of the output towards the input (`color-fix` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstTurboVsrColorFix")]
pub enum ColorFix {
    #[default]
    #[enum_value(name = "No colour correction", nick = "none")]
    None = 0,
    #[enum_value(name = "Wavelet: low frequencies from the input", nick = "wavelet")]
    Wavelet = 1,
    #[enum_value(
        name = "AdaIN: per-channel mean and deviation from the input",
        nick = "adain"
    )]
    Adain = 2,
}

glib::wrapper! {
    pub struct TurboVsr(ObjectSubclass<imp::TurboVsr>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        DeviceKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        PrecisionKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ColorFix::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "turbovsr",
        gst::Rank::NONE,
        TurboVsr::static_type(),
    )
}
