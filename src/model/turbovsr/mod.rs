//! TurboVSR's additions to LTX-Video (paper §3.3, §3.4; DESIGN §3.2, §3.3): the checkpoint's
//! `turbovsr.json` and the cross normalization of the condition.

pub mod config;
pub mod cross_norm;

pub use config::TurboVsrConfig;
pub use cross_norm::cross_norm;
