//! Measures of an upscale against its ground truth, behind `turbovsr eval`: PSNR, SSIM,
//! sharpness, blockiness and flicker ([`metrics`]), NIQE ([`niqe`]), and the evaluation sets and
//! their PNG frames ([`set`]).

pub mod metrics;
pub mod niqe;
pub mod set;

#[cfg(test)]
mod tests;
