//! Multi-threaded, vectorizable f32 CPU kernels for the two elementwise hot spots of the
//! transformer: the attention softmax (over `heads * queries * keys` scores) and the tanh GELU of
//! the feed-forward (`tokens * 4 D` values). candle's CPU unary ops run on one thread with a
//! scalar `exp`/`tanh` per element; these split the rows over `candle_core::utils::
//! get_num_threads()` scoped threads and use a polynomial `exp` (range reduction by powers of 2,
//! degree-6 Taylor on |r| <= ln 2 / 2: relative error ~1e-7) that the compiler vectorizes.
//!
//! Other dtypes and devices fall back to candle's ops, so callers can use these unconditionally.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in a part exact in f32 and the remainder (Cody-Waite), for r = x - n ln 2
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer in the low mantissa bits
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `exp(x)` for f32, branch-free; inputs are clamped to [-87.3, 88.3] (results ~1e-38 .. ~2e38).
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the exponent bits; n in [-126, 127] after the clamp
    let bits = ((t.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32 + 127) << 23) as u32;
    p * f32::from_bits(bits)
}

/// Sum and max over 8 independent lanes: a plain fold is a serial dependency chain that the
/// compiler may not reorder (and so not vectorize).
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// Softmax of each `row`-long row of `s` into `d` (a row stays in L1 across the three passes).
#[inline(always)]
fn softmax_rows_body(s: &[f32], d: &mut [f32], row: usize) {
    for (s, d) in s.chunks_exact(row).zip(d.chunks_exact_mut(row)) {
        let max = lanes_max(s);
        for (d, &s) in d.iter_mut().zip(s) {
            *d = fast_exp(s - max);
        }
        let inv = 1.0 / lanes_sum(d);
        d.iter_mut().for_each(|d| *d *= inv);
    }
}

/// `0.5 x (1 + tanh(y)) = x / (1 + exp(-2 y))`, `y = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
fn gelu_tanh_body(s: &[f32], d: &mut [f32]) {
    let k = (2.0f32 / std::f32::consts::PI).sqrt();
    for (d, &x) in d.iter_mut().zip(s) {
        let y = k * (x + 0.044715 * x * x * x);
        *d = x / (1.0 + fast_exp(-2.0 * y));
    }
}

/// The same bodies compiled for AVX2 + FMA (8 lanes), picked at run time: the crate is built for
/// the baseline x86-64 target (4-lane SSE2).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_rows(s: &[f32], d: &mut [f32], row: usize) {
        super::softmax_rows_body(s, d, row)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_tanh(s: &[f32], d: &mut [f32]) {
        super::gelu_tanh_body(s, d)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

fn softmax_rows(s: &[f32], d: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { avx2::softmax_rows(s, d, row) };
    }
    softmax_rows_body(s, d, row)
}

fn gelu_tanh_slice(s: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { avx2::gelu_tanh(s, d) };
    }
    gelu_tanh_body(s, d)
}

/// Runs `f(src_rows, dst_rows)` over groups of whole rows of `row` elements on scoped threads.
fn par_rows(src: &[f32], dst: &mut [f32], row: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    let rows = src.len() / row.max(1);
    let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
    // below ~64k values a thread costs more than it saves
    if threads == 1 || src.len() < 1 << 16 {
        f(src, dst);
        return;
    }
    let per = rows.div_ceil(threads) * row;
    std::thread::scope(|scope| {
        let mut chunks = src.chunks(per).zip(dst.chunks_mut(per));
        let first = chunks.next();
        for (s, d) in chunks {
            let f = &f;
            scope.spawn(move || f(s, d));
        }
        if let Some((s, d)) = first {
            f(s, d);
        }
    });
}

/// The contiguous f32 slice of a CPU storage, or `None` (then the caller falls back).
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        CpuStorage::F32(v) => layout.contiguous_offsets().map(|(a, b)| &v[a..b]),
        _ => None,
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "turbovsr-softmax-last-dim-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some(src) = f32_slice(storage, layout) else {
            candle_core::bail!("{}: needs a contiguous f32 tensor", self.name());
        };
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        par_rows(src, &mut dst, row, |s, d| softmax_rows(s, d, row));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "turbovsr-gelu-tanh-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some(src) = f32_slice(storage, layout) else {
            candle_core::bail!("{}: needs a contiguous f32 tensor", self.name());
        };
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        par_rows(src, &mut dst, row, gelu_tanh_slice);
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

fn fast_path(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// GELU with the tanh approximation (`nn.GELU(approximate="tanh")`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op1_no_bwd(&GeluTanh)
    } else {
        x.gelu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_to_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let err = ((fast_exp(x) as f64 - want) / want).abs();
            worst = worst.max(err);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(fast_exp(-1e4) < 1e-37 && fast_exp(-1e4) >= 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn kernels_match_candle() -> Result<()> {
        // big enough to take the threaded path, with a row length that does not divide evenly
        let x = (Tensor::randn(0f32, 3.0, (97, 1031), &Device::Cpu)? - 1.0)?;
        let want = candle_nn::ops::softmax_last_dim(&x)?;
        let got = softmax_last_dim(&x)?;
        assert!(crate::model::relative_l2(&got, &want)? < 1e-6);
        let want = x.gelu()?;
        let got = gelu_tanh(&x)?;
        assert!(crate::model::relative_l2(&got, &want)? < 1e-6);
        // strided input and the fallback dtype
        let xt = x.t()?;
        assert!(
            crate::model::relative_l2(
                &softmax_last_dim(&xt)?,
                &candle_nn::ops::softmax_last_dim(&xt.contiguous()?)?
            )? < 1e-6
        );
        let xb = x.to_dtype(DType::BF16)?;
        assert_eq!(gelu_tanh(&xb)?.dtype(), DType::BF16);
        Ok(())
    }
}
