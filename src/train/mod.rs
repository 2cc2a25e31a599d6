//! Training TurboVSR on a CPU (issue 11; paper §3.3, §3.4, §4.1, supplementary §6): the small
//! VAE, then the denoiser with flow matching and the shortcut self-consistency loss, with
//! checkpoints that resume and runs that reproduce from their seed.
//!
//! The model code is the inference code: the modules are built on a `VarMap` whose variables
//! are the weights, and an [`crate::model::autograd::AutogradScope`] routes them through
//! differentiable ops while a loss is built.

pub mod cli;
pub mod data_source;
pub mod denoiser;
pub mod optim;
pub mod params;
pub mod pca_init;
pub mod run;
pub mod source;
pub mod vae;

#[cfg(test)]
mod tests;
