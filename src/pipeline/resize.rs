//! Bicubic resize to the output grid and padding to the VAE's 32-pixel grid (DESIGN §2).
//!
//! The resize is separable and matches PyTorch's `F.interpolate(mode="bicubic",
//! align_corners=False)` (cubic convolution with a = -0.75, edge taps clamped): each output
//! sample is four gathered input samples times four weights per axis, so it runs on any candle
//! device with O(taps) work rather than a dense interpolation matrix.

use candle_core::{DType, Device, Result, Tensor};

/// The cubic convolution kernel parameter PyTorch and OpenCV use.
const CUBIC_A: f64 = -0.75;

fn cubic_near(x: f64) -> f64 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f64) -> f64 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// Taps for resizing an axis of `n_in` samples to `n_out`: four index vectors and four weight
/// vectors, each of length `n_out`.
fn cubic_taps(n_in: usize, n_out: usize) -> ([Vec<u32>; 4], [Vec<f32>; 4]) {
    let scale = n_in as f64 / n_out as f64;
    let mut idx: [Vec<u32>; 4] = Default::default();
    let mut wts: [Vec<f32>; 4] = Default::default();
    for o in 0..n_out {
        let src = scale * (o as f64 + 0.5) - 0.5;
        let base = src.floor();
        let t = src - base;
        let w = [
            cubic_far(t + 1.0),
            cubic_near(t),
            cubic_near(1.0 - t),
            cubic_far(2.0 - t),
        ];
        for k in 0..4 {
            let i = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1);
            idx[k].push(i as u32);
            wts[k].push(w[k] as f32);
        }
    }
    (idx, wts)
}

/// Resizes dimension `dim` of `x` from its size to `n_out` samples.
fn resize_dim(x: &Tensor, dim: usize, n_out: usize) -> Result<Tensor> {
    let n_in = x.dim(dim)?;
    if n_in == n_out {
        return Ok(x.clone());
    }
    let (idx, wts) = cubic_taps(n_in, n_out);
    // Weights broadcast along every dimension but `dim`.
    let mut wshape = vec![1usize; x.rank()];
    wshape[dim] = n_out;
    let mut acc: Option<Tensor> = None;
    for k in 0..4 {
        let i = Tensor::from_vec(idx[k].clone(), n_out, x.device())?;
        let w =
            Tensor::from_vec(wts[k].clone(), wshape.as_slice(), x.device())?.to_dtype(x.dtype())?;
        let term = x.index_select(&i, dim)?.broadcast_mul(&w)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("empty bicubic tap set".into()))
}

/// Bicubic resize of the last two dimensions (height, width) of `x` to `out_h` x `out_w`.
pub fn resize_bicubic(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 2 {
        candle_core::bail!(
            "resize_bicubic needs at least 2 dimensions, got {:?}",
            x.dims()
        );
    }
    if out_h == 0 || out_w == 0 {
        candle_core::bail!("resize_bicubic to an empty size {out_h}x{out_w}");
    }
    let x = resize_dim(x, rank - 2, out_h)?;
    resize_dim(&x, rank - 1, out_w)
}

/// Pads the last two dimensions of `x` on the bottom and right by replicating the edge, up to
/// multiples of `multiple`. Returns the padded tensor; crop back with [`crop_hw`].
pub fn pad_to_multiple(x: &Tensor, multiple: usize) -> Result<Tensor> {
    let rank = x.rank();
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    let (ph, pw) = (
        h.next_multiple_of(multiple) - h,
        w.next_multiple_of(multiple) - w,
    );
    let x = if ph > 0 {
        x.pad_with_same(rank - 2, 0, ph)?
    } else {
        x.clone()
    };
    if pw > 0 {
        x.pad_with_same(rank - 1, 0, pw)
    } else {
        Ok(x)
    }
}

/// The top-left `h` x `w` of the last two dimensions of `x`.
pub fn crop_hw(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let rank = x.rank();
    x.narrow(rank - 2, 0, h)?.narrow(rank - 1, 0, w)
}

/// A host tensor of `data` with `shape`, moved to `device` in one copy.
pub fn upload(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)?
        .to_device(device)?
        .to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one() {
        for (n_in, n_out) in [(5, 17), (64, 256), (7, 3), (1, 4)] {
            let (_, wts) = cubic_taps(n_in, n_out);
            for o in 0..n_out {
                let s: f32 = wts.iter().map(|w| w[o]).sum();
                assert!((s - 1.0).abs() < 1e-5, "{n_in}->{n_out} at {o}: {s}");
            }
        }
    }

    #[test]
    fn constant_stays_constant_and_identity_is_exact() -> Result<()> {
        let x = Tensor::full(0.25f32, (3, 2, 5, 7), &Device::Cpu)?;
        let y = resize_bicubic(&x, 20, 28)?;
        assert_eq!(y.dims(), &[3, 2, 20, 28]);
        let max_dev = (y - 0.25)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max_dev < 1e-6);
        let r = Tensor::randn(0f32, 1.0, (3, 4, 6), &Device::Cpu)?;
        let same = resize_bicubic(&r, 4, 6)?;
        assert_eq!(same.to_vec3::<f32>()?, r.to_vec3::<f32>()?);
        Ok(())
    }

    #[test]
    fn pad_and_crop_round_trip() -> Result<()> {
        let x = Tensor::arange(0f32, 3.0 * 33.0 * 40.0, &Device::Cpu)?.reshape((3, 33, 40))?;
        let p = pad_to_multiple(&x, 32)?;
        assert_eq!(p.dims(), &[3, 64, 64]);
        // Replicated edge: the padded rows equal the last real row.
        let last = x.narrow(1, 32, 1)?.to_vec3::<f32>()?;
        let padded = p.narrow(1, 63, 1)?.narrow(2, 0, 40)?.to_vec3::<f32>()?;
        assert_eq!(last, padded);
        let c = crop_hw(&p, 33, 40)?;
        assert_eq!(c.to_vec3::<f32>()?, x.to_vec3::<f32>()?);
        Ok(())
    }
}
