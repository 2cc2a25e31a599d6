//! The neural modules of TurboVSR (DESIGN §3): LTX-Video's causal video VAE and diffusion
//! transformer, written with candle and loaded by their diffusers key names.

pub mod attention;
pub mod autograd;
pub mod checkpoint;
pub mod conv3d;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod flops;
pub mod forward;
pub mod profile;
pub mod transformer;
pub mod turbovsr;
pub mod vae;

use candle_core::{DType, Result, Tensor};

/// Relative L2 error `||a - b|| / ||b||`, computed in f32: the parity measure of DESIGN §3.1.
/// `b` is the reference. A zero reference gives the absolute norm of the difference.
pub fn relative_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    if a.shape() != b.shape() {
        candle_core::bail!(
            "relative_l2: shape {:?} does not match reference shape {:?}",
            a.dims(),
            b.dims()
        );
    }
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    Ok(if norm > 0.0 { diff / norm } else { diff })
}
