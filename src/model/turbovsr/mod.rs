//! TurboVSR's additions to LTX-Video (paper §3.3, §3.4; DESIGN §3.2, §3.3): the checkpoint's
//! `turbovsr.json`, the cross normalization of the condition, the conditional denoiser head,
//! the prompt, the window inference over the VAE and the denoiser, and random test checkpoints.

pub(crate) mod config;
pub(crate) mod cross_norm;
pub(crate) mod denoiser;
pub(crate) mod inference;
pub(crate) mod prompt;
pub(crate) mod test_model;

pub use config::TurboVsrConfig;
pub use cross_norm::cross_norm;
pub use denoiser::{ConditionedDenoiser, TurboVsrDenoiser};
pub use inference::{DenoisePass, LoadOptions, TurboVsrModel};
pub use prompt::load_prompt;
pub use test_model::{write_test_model, Preset, TestModelOptions};
