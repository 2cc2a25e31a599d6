//! The `turbovsr` GStreamer element (DESIGN §6).
//!
//! # SECTION:element-turbovsr
//! @title: turbovsr
//! @short_description: TurboVSR diffusion video super-resolution
//!
//! Diffusion video super-resolution: raw video in, raw video at `scale`x the size out, one output
//! frame per input frame with the input's timestamps. Frames are grouped into overlapping windows
//! of `window` frames that a worker thread upscales while the element keeps accepting input (one
//! window queued at most), so memory stays constant for streams of any length. `model=bicubic`
//! is the bicubic baseline through the same window path; `model=DIR` names a TurboVSR checkpoint
//! folder (`vae/`, `transformer/`, `turbovsr.json`), loaded on READY -> PAUSED; a bad folder is
//! an element error naming the path and the reason. `color-fix=wavelet|adain` pulls the model's
//! colours back to the bicubic input. After each window the element posts a `turbovsr-progress`
//! element message (`window`, `frames`, `frames-processed`, `window-ms`, `fps`, `average-fps`).
//!
//! ## Example launch lines
//! The bicubic baseline on test video, to H.264 in MP4:
//! ```sh
//! gst-launch-1.0 videotestsrc num-buffers=100 ! video/x-raw,width=64,height=64 ! \
//!     turbovsr model=bicubic scale=4 ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4
//! ```
//! A file through a checkpoint folder with the wavelet colour fix (`-e` turns Ctrl-C into EOS,
//! so the tail window is processed and the file is finished):
//! ```sh
//! gst-launch-1.0 -e filesrc location=in.mkv ! decodebin ! videoconvert ! \
//!     turbovsr model=/models/turbovsr scale=4 steps=4 color-fix=wavelet ! videoconvert ! \
//!     x264enc ! matroskamux ! filesink location=out.mkv
//! ```
//! The random tiny checkpoint of `turbovsr make-test-model` (it runs the whole model quickly on a
//! CPU and upscales nothing meaningfully), short windows, progress messages printed with `-m`:
//! ```sh
//! turbovsr make-test-model /tmp/tiny --preset tiny
//! gst-launch-1.0 -m videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48 ! \
//!     turbovsr model=/tmp/tiny window=9 overlap=1 color-fix=adain ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

mod buffers;
mod caps;
mod imp;
mod worker;

pub(crate) use caps::layout_from_info;

use crate::pipeline::settings::{ColorFix, DeviceChoice, Precision};

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

/// Numeric precision of the VAE (`vae-precision` property); `auto` is f32 (see
/// `pipeline::Precision`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstTurboVsrVaePrecision")]
pub enum VaePrecisionKind {
    #[default]
    #[enum_value(name = "f32 on every device", nick = "auto")]
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
pub enum ColorFixKind {
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

/// The properties' enums and the core settings' ([`crate::pipeline::settings`]), both ways.
macro_rules! same_values {
    ($glib:ident, $core:ident, $($v:ident),+) => {
        impl From<$glib> for $core {
            fn from(v: $glib) -> Self {
                match v { $($glib::$v => $core::$v),+ }
            }
        }
        impl From<$core> for $glib {
            fn from(v: $core) -> Self {
                match v { $($core::$v => $glib::$v),+ }
            }
        }
    };
}

same_values!(DeviceKind, DeviceChoice, Auto, Cpu, Cuda);
same_values!(PrecisionKind, Precision, Auto, F32, Bf16, F16);
same_values!(VaePrecisionKind, Precision, Auto, F32, Bf16, F16);
same_values!(ColorFixKind, ColorFix, None, Wavelet, Adain);

glib::wrapper! {
    pub struct TurboVsr(ObjectSubclass<imp::TurboVsr>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        DeviceKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        PrecisionKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        VaePrecisionKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ColorFixKind::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "turbovsr",
        gst::Rank::NONE,
        TurboVsr::static_type(),
    )
}
