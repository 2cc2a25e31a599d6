//! TurboVSR: diffusion video super-resolution as a GStreamer element (`turbovsr`), a Rust
//! library and a command-line tool (`turbovsr`). docs/ARCHITECTURE.md maps the data flow of
//! DESIGN §2 onto the folders.
//!
//! The library is the gst-free core, in three layers:
//! - [`pipeline`]: the streaming path. [`pipeline::Upscaler`] takes float RGB frames
//!   ([`pipeline::RgbFrame`]; [`pipeline::frame_to_rgb`] and [`pipeline::rgb_to_frame`] convert
//!   raw frames of every [`pipeline::PixelFormat`]) and gives one upscaled frame per input frame,
//!   in order, holding at most two windows. [`pipeline::Settings`] and
//!   [`pipeline::ProcessorSettings`] are every setting, with their defaults and checks (the
//!   element's properties and the command line's options are the same settings); a
//!   [`pipeline::FrameProcessor`] of your own runs through [`pipeline::Upscaler::with_processor`].
//! - [`model`]: the neural modules (LTX-Video's VAE and transformer, TurboVSR's denoiser and its
//!   window inference), loaded from checkpoints of every layout ([`model::checkpoint`]).
//! - [`sample`]: the shortcut sampler, its fixed noise and the spatial tiles.
//!
//! In a GStreamer application, [`plugin_register_static`] registers the element without a
//! plugin path.
//!
//! Upscaling 20 frames of 32x24 by 4 with the bicubic baseline (`model` is a checkpoint folder,
//! `bicubic`, or "" for the model shipped inside the crate):
//!
//! ```
//! use gstturbovsr::pipeline::{OutputSize, ProcessorSettings, RgbFrame, Upscaler, WindowConfig};
//!
//! let windows = WindowConfig::new(9, 1)?;
//! let mut upscaler =
//!     Upscaler::load("bicubic", &ProcessorSettings::default(), windows, OutputSize::Scale(4))?;
//! let mut out = Vec::new();
//! for i in 0..20 {
//!     // Planar RGB in [-1, 1]: red, then green, then blue.
//!     let rgb = vec![i as f32 / 20.0 - 0.5; 3 * 32 * 24];
//!     out.extend(upscaler.push(RgbFrame::new(32, 24, rgb, None))?);
//! }
//! out.extend(upscaler.finish()?);
//! assert_eq!(out.len(), 20);
//! assert_eq!((out[0].width, out[0].height), (128, 96));
//! # Ok::<(), anyhow::Error>(())
//! ```

use gst::glib;

#[doc(hidden)]
pub mod cli;
mod element;
mod eval;
pub mod model;
pub mod pipeline;
pub mod sample;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    element::register(plugin)
}

gst::plugin_define!(
    turbovsr,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
