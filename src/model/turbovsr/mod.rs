//! TurboVSR's additions to LTX-Video (paper §3.3, §3.4; DESIGN §3.2, §3.3): the checkpoint's
//! `turbovsr.json`, the cross normalization of the condition, the
//! conditional denoiser head and random test checkpoints.

pub mod config;
pub mod cross_norm;
pub mod denoiser;
pub mod test_model;

pub use config::TurboVsrConfig;
pub use cross_norm::cross_norm;
pub use denoiser::{ConditionedDenoiser, TurboVsrDenoiser};
pub use test_model::{write_test_model, Preset, TestModelOptions};
