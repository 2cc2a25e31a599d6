//! The neural modules of TurboVSR (DESIGN §3): LTX-Video's causal video VAE and diffusion
//! transformer, written with candle and loaded by their diffusers key names.

pub mod checkpoint;
pub(crate) mod conv3d;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub(crate) mod flops;
pub(crate) mod profile;
pub mod transformer;
pub mod turbovsr;
pub mod vae;

use candle_core::{DType, Device, Result, Tensor};

/// A raw f32 output pointer shared by worker threads that each write their own disjoint region
/// of it (the fused CPU attention's query tiles, the CPU conv3d's row chunks).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the users hand every thread a region no other thread writes (see their docs).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the whole (Sync) wrapper, not its raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Deterministic values in [-2, 2) of `shape` from a small LCG: inputs that are the same on every
/// machine and do not depend on candle's RNG (the parity attention checks, tests).
pub fn lcg_tensor(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

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
