//! TurboVSR: diffusion video super-resolution as a GStreamer element (`turbovsr`), a Rust
//! library ([`pipeline::Upscaler`]) and a command-line tool.
//!
//! The gst-free core follows the data flow of DESIGN §2: [`pipeline`] (frames, windows, resize,
//! the processor seam) and [`model`] (the neural modules). [`element`] is the GStreamer element.

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
