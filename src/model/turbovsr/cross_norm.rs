//! Cross normalization (ControlNeXt, paper §3.3, DESIGN §3.2): aligns the condition's
//! statistics to the hidden states' before adding it after the first transformer block.

use candle_core::{DType, Result, Tensor};

/// Added to the condition's deviation so a constant condition does not divide by zero.
const EPS: f64 = 1e-5;

/// Mean and unbiased standard deviation over all of N and D, per batch element: `[B, 1, 1]`.
fn stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, n, d) = x.dims3()?;
    let count = (n * d) as f64;
    let mean = x.mean_keepdim(2)?.mean_keepdim(1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered
        .sqr()?
        .sum_keepdim(2)?
        .sum_keepdim(1)?
        .affine(1.0 / (count - 1.0).max(1.0), 0.0)?;
    Ok((mean, var.sqrt()?))
}

/// `h <- (h + c') * cond_scale` with
/// `c' = (c - mean(c)) * std(h) / (std(c) + 1e-5) + mean(h)`; `h` and `c` are `[B, N, D]`.
/// Computed in f32 whatever the input precision.
pub fn cross_norm(h: &Tensor, c: &Tensor, cond_scale: f64) -> Result<Tensor> {
    if h.dims() != c.dims() {
        candle_core::bail!(
            "cross normalization: condition tokens {:?} do not match hidden states {:?}",
            c.dims(),
            h.dims()
        );
    }
    let dtype = h.dtype();
    let h32 = h.to_dtype(DType::F32)?;
    let c32 = c.to_dtype(DType::F32)?;
    let (mean_h, std_h) = stats(&h32)?;
    let (mean_c, std_c) = stats(&c32)?;
    let c_aligned = c32
        .broadcast_sub(&mean_c)?
        .broadcast_mul(&std_h.broadcast_div(&(std_c + EPS)?)?)?
        .broadcast_add(&mean_h)?;
    ((h32 + c_aligned)? * cond_scale)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The formula element by element in f64.
    fn direct(h: &[Vec<f64>], c: &[Vec<f64>], scale: f64) -> Vec<Vec<f64>> {
        let stat = |x: &[Vec<f64>]| {
            let all: Vec<f64> = x.iter().flatten().copied().collect();
            let m = all.iter().sum::<f64>() / all.len() as f64;
            let v = all.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (all.len() - 1) as f64;
            (m, v.sqrt())
        };
        let (mh, sh) = stat(h);
        let (mc, sc) = stat(c);
        h.iter()
            .zip(c)
            .map(|(hr, cr)| {
                hr.iter()
                    .zip(cr)
                    .map(|(a, b)| (a + (b - mc) * sh / (sc + 1e-5) + mh) * scale)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_the_direct_formula_per_batch_element() -> Result<()> {
        let dev = Device::Cpu;
        let h = (Tensor::randn(0f32, 2.0, (2, 5, 3), &dev)? + 1.0)?;
        let c = (Tensor::randn(0f32, 0.3, (2, 5, 3), &dev)? - 4.0)?;
        let out = cross_norm(&h, &c, 0.7)?.to_vec3::<f32>()?;
        let hv = h.to_dtype(DType::F64)?.to_vec3::<f64>()?;
        let cv = c.to_dtype(DType::F64)?.to_vec3::<f64>()?;
        for b in 0..2 {
            let expected = direct(&hv[b], &cv[b], 0.7);
            for (row_o, row_e) in out[b].iter().zip(&expected) {
                for (o, e) in row_o.iter().zip(row_e) {
                    assert!((*o as f64 - e).abs() < 1e-4, "batch {b}: {o} vs {e}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn aligned_condition_has_the_hidden_statistics() -> Result<()> {
        let dev = Device::Cpu;
        let h = (Tensor::randn(0f32, 3.0, (1, 64, 16), &dev)? + 2.0)?;
        let c = Tensor::randn(0f32, 0.01, (1, 64, 16), &dev)?;
        // With scale 1: out - h = c', which has h's mean and deviation.
        let c_aligned = (cross_norm(&h, &c, 1.0)? - &h)?;
        let (m_a, s_a) = stats(&c_aligned)?;
        let (m_h, s_h) = stats(&h)?;
        let d = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        assert!(d(&m_a, &m_h)? < 1e-3);
        assert!(d(&s_a, &s_h)? < 1e-2);
        assert!(cross_norm(&h, &c.narrow(1, 0, 3)?, 1.0).is_err());
        Ok(())
    }
}
