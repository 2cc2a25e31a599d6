//! Multi-threaded, vectorized f32 CPU kernels for the transformer's memory-bound steps, each one
//! pass over its data where candle would take several (one per op, most single-threaded, each
//! writing a new tensor):
//! - [`softmax_last_dim`] and [`gelu_tanh`] (the feed-forward's `tokens * 4 D` values), with a
//!   polynomial `exp` (range reduction by powers of 2, degree-6 Taylor on |r| <= ln 2 / 2: relative
//!   error ~1e-7) that the compiler vectorizes;
//! - [`rms_norm_modulate`]: RMS norm and AdaLN scale / shift of a block's hidden states;
//! - [`rms_norm_rope`]: q / k RMS norm across heads and the rotary embedding;
//! - [`gated_residual`]: `h + y * gate`;
//! - [`linear_f32`]: a linear layer whose bias (and residual) the gemm accumulates onto.
//!
//! Rows are split over `candle_core::utils::get_num_threads()` scoped threads, and the loops are
//! compiled a second time for AVX2 + FMA, picked at run time (the crate targets baseline x86-64).
//! Other dtypes and devices fall back to candle's ops, so callers can use these unconditionally.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Storage, Tensor};

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in a part exact in f32 and the remainder (Cody-Waite), for r = x - n ln 2
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer in the low mantissa bits
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `exp(x)` for f32, branch-free; inputs are clamped to [-87.3, 88.3] (results ~1e-38 .. ~2e38).
/// `FMA`: the polynomial in fused multiply-adds, for callers compiled with the `fma` target
/// feature (elsewhere `mul_add` is a slow library call).
#[inline(always)]
pub(crate) fn fast_exp_with<const FMA: bool>(x: f32) -> f32 {
    // a * b + c
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let x = x.clamp(-87.3, 88.3);
    let t = madd(x, LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = madd(-n, LN2_LO, madd(-n, LN2_HI, x));
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd(p, r, c);
    }
    // 2^n from the exponent bits; n in [-126, 127] after the clamp
    let bits = ((t.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32 + 127) << 23) as u32;
    p * f32::from_bits(bits)
}

/// Sum and max over 8 independent lanes: a plain fold is a serial dependency chain that the
/// compiler may not reorder (and so not vectorize).
#[inline(always)]
pub(crate) fn lanes_sum(x: &[f32]) -> f32 {
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
pub(crate) fn lanes_max(x: &[f32]) -> f32 {
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
fn softmax_rows_body<const FMA: bool>(s: &[f32], d: &mut [f32], row: usize) {
    for (s, d) in s.chunks_exact(row).zip(d.chunks_exact_mut(row)) {
        let max = lanes_max(s);
        for (d, &s) in d.iter_mut().zip(s) {
            *d = fast_exp_with::<FMA>(s - max);
        }
        let inv = 1.0 / lanes_sum(d);
        d.iter_mut().for_each(|d| *d *= inv);
    }
}

/// `0.5 x (1 + tanh(y)) = x / (1 + exp(-2 y))`, `y = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
fn gelu_tanh_body<const FMA: bool>(s: &[f32], d: &mut [f32]) {
    let k = (2.0f32 / std::f32::consts::PI).sqrt();
    for (d, &x) in d.iter_mut().zip(s) {
        let y = k * (x + 0.044715 * x * x * x);
        *d = x / (1.0 + fast_exp_with::<FMA>(-2.0 * y));
    }
}

/// The same bodies compiled for AVX2 + FMA (8 lanes), picked at run time: the crate is built for
/// the baseline x86-64 target (4-lane SSE2).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_rows(s: &[f32], d: &mut [f32], row: usize) {
        super::softmax_rows_body::<true>(s, d, row)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_tanh(s: &[f32], d: &mut [f32]) {
        super::gelu_tanh_body::<true>(s, d)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

fn softmax_rows(s: &[f32], d: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { avx2::softmax_rows(s, d, row) };
    }
    softmax_rows_body::<false>(s, d, row)
}

fn gelu_tanh_slice(s: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { avx2::gelu_tanh(s, d) };
    }
    gelu_tanh_body::<false>(s, d)
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

/// The fused kernels below take raw CPU slices (and record no backward op).
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu()
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

/// The contiguous f32 data of a CPU tensor, borrowed while this lives.
struct F32Data<'a> {
    guard: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> F32Data<'a> {
    fn of(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!(
                "cpu kernel: needs a contiguous tensor, got strides {:?}",
                layout.stride()
            );
        };
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            candle_core::bail!("cpu kernel: needs an f32 CPU tensor");
        }
        Ok(Self { guard, start, end })
    }

    fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            // `of` admits only f32 CPU storage
            _ => &[],
        }
    }
}

/// `t` as a contiguous f32 tensor (no copy when it already is one).
fn f32_contiguous(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.contiguous()
}

/// Per-row parameters of shape (b, 1 or tokens, D) for rows of (b, tokens, D): the parameter row
/// of activation row `r`.
#[derive(Clone, Copy)]
struct ParamRows {
    tokens: usize,
    per_token: bool,
    /// Parameter rows per batch element: 0 when the parameter is shared by the batch.
    batch_rows: usize,
}

impl ParamRows {
    /// `dims` of a parameter for activations (b, n, d): (1 or b, 1 or n, d) or (d,) (shared).
    fn new(dims: &[usize], b: usize, n: usize, d: usize, what: &str) -> Result<Self> {
        let (pb, pn) = match *dims {
            [pd] if pd == d => (1, 1),
            [pb, pn, pd] if pd == d && (pb == 1 || pb == b) && (pn == 1 || pn == n) => (pb, pn),
            _ => candle_core::bail!(
                "{what} has shape {dims:?}, expected (1 or {b}, 1 or {n}, {d}) for activations \
                 ({b}, {n}, {d})"
            ),
        };
        Ok(Self {
            tokens: n,
            per_token: pn > 1,
            batch_rows: if pb > 1 { pn } else { 0 },
        })
    }

    #[inline(always)]
    fn row(&self, r: usize) -> usize {
        let (bi, t) = (r / self.tokens, r % self.tokens);
        bi * self.batch_rows + if self.per_token { t } else { 0 }
    }
}

/// Runs `f(first_row, rows)` over groups of whole `d`-long rows of `out` on scoped threads.
fn par_out_rows(out: &mut [f32], d: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len() / d.max(1);
    let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
    if threads == 1 || out.len() < 1 << 16 {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = out.chunks_mut(per * d).enumerate();
        let first = chunks.next();
        for (i, chunk) in chunks {
            let f = &f;
            scope.spawn(move || f(i * per, chunk));
        }
        if let Some((_, chunk)) = first {
            f(0, chunk);
        }
    });
}

/// Sum of squares over 8 lanes (see [`lanes_sum`]).
#[inline(always)]
fn lanes_sumsq(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v * *v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The inputs of one row of [`rms_norm_modulate`]: `x * rsqrt(mean(x^2) + eps) * w * (1 + scale)
/// + shift`.
#[inline(always)]
fn rms_modulate_row(
    x: &[f32],
    out: &mut [f32],
    w: Option<&[f32]>,
    eps: f32,
    scale: &[f32],
    shift: &[f32],
) {
    let inv = 1.0 / (lanes_sumsq(x) / x.len() as f32 + eps).sqrt();
    match w {
        Some(w) => {
            for ((((o, &x), &w), &sc), &sh) in out.iter_mut().zip(x).zip(w).zip(scale).zip(shift) {
                *o = (x * inv * w) * (1.0 + sc) + sh;
            }
        }
        None => {
            for (((o, &x), &sc), &sh) in out.iter_mut().zip(x).zip(scale).zip(shift) {
                *o = (x * inv) * (1.0 + sc) + sh;
            }
        }
    }
}

/// One row of [`rms_norm_rope`]: RMS norm with weight, then the rotary embedding of channel
/// pairs (2i, 2i+1): `(y0 cos0 - y1 sin0, y1 cos1 + y0 sin1)`.
#[inline(always)]
fn rms_rope_row(x: &[f32], out: &mut [f32], w: &[f32], eps: f32, rope: Option<(&[f32], &[f32])>) {
    let inv = 1.0 / (lanes_sumsq(x) / x.len() as f32 + eps).sqrt();
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
        *o = x * inv * w;
    }
    if let Some((cos, sin)) = rope {
        for ((o, c), s) in out
            .chunks_exact_mut(2)
            .zip(cos.chunks_exact(2))
            .zip(sin.chunks_exact(2))
        {
            let (y0, y1) = (o[0], o[1]);
            o[0] = y0 * c[0] - y1 * s[0];
            o[1] = y1 * c[1] + y0 * s[1];
        }
    }
}

/// One row of [`gated_residual`]: `h + y * gate`.
#[inline(always)]
fn gated_residual_row(h: &[f32], y: &[f32], gate: &[f32], out: &mut [f32]) {
    for (((o, &h), &y), &g) in out.iter_mut().zip(h).zip(y).zip(gate) {
        *o = h + y * g;
    }
}

/// Compiles `$body` twice, for the baseline target and for AVX2 + FMA, and picks one at run time.
macro_rules! dispatch_avx2 {
    ($body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast(f: impl FnOnce()) {
                f()
            }
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                unsafe { fast(|| $body) };
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $body
    }};
}

/// `rms_norm(x, weight, eps) * (1 + scale) + shift` over the last dimension, in f32, returned in
/// `x`'s dtype: the RMS norm and AdaLN modulation of an LTX block in one pass. `x` (b, n, D),
/// `weight` (D) or `None`, `scale` and `shift` (1 or b, 1 or n, D).
pub fn rms_norm_modulate(
    x: &Tensor,
    weight: Option<&Tensor>,
    eps: f64,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::model::cuda::block_ops::block_ops_apply(x) {
        return crate::model::cuda::block_ops::rms_norm_modulate(x, weight, eps, scale, shift);
    }
    if !fused(x) {
        let h = super::layers::rms_norm(x, weight, eps)?;
        return super::layers::modulate(&h, scale, shift);
    }
    let (b, n, d) = x.dims3()?;
    let p_scale = ParamRows::new(scale.dims(), b, n, d, "modulation scale")?;
    let p_shift = ParamRows::new(shift.dims(), b, n, d, "modulation shift")?;
    let (x32, scale, shift) = (
        f32_contiguous(x)?,
        f32_contiguous(scale)?,
        f32_contiguous(shift)?,
    );
    let w = weight.map(f32_contiguous).transpose()?;
    let (xs, sc, sh) = (
        F32Data::of(&x32)?,
        F32Data::of(&scale)?,
        F32Data::of(&shift)?,
    );
    let wd = w.as_ref().map(F32Data::of).transpose()?;
    let (xs, sc, sh) = (xs.slice(), sc.slice(), sh.slice());
    let w = wd.as_ref().map(|w| w.slice());
    if w.is_some_and(|w| w.len() != d) {
        candle_core::bail!(
            "rms norm weight has {} values, expected {d}",
            w.map_or(0, |w| w.len())
        );
    }
    let mut out = vec![0f32; b * n * d];
    let eps = eps as f32;
    par_out_rows(&mut out, d, |row0, chunk| {
        dispatch_avx2!({
            for (i, o) in chunk.chunks_exact_mut(d).enumerate() {
                let r = row0 + i;
                let (a, c) = (p_scale.row(r) * d, p_shift.row(r) * d);
                rms_modulate_row(
                    &xs[r * d..(r + 1) * d],
                    o,
                    w,
                    eps,
                    &sc[a..a + d],
                    &sh[c..c + d],
                );
            }
        })
    });
    Tensor::from_vec(out, (b, n, d), x.device())?.to_dtype(x.dtype())
}

/// `apply_rotary_emb(rms_norm(x, weight, eps), rope)`: the q / k normalization across heads of
/// `LTXAttention` and its rotary embedding in one pass, in f32, returned in `x`'s dtype. `x`
/// (b, n, D), `weight` (D), `cos` and `sin` (1 or b, n, D).
pub fn rms_norm_rope(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    rope: Option<&super::rope::Rope>,
) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    #[cfg(feature = "cuda")]
    if crate::model::cuda::block_ops::block_ops_apply(x) && d % 2 == 0 {
        return crate::model::cuda::block_ops::rms_norm_rope(
            x,
            weight,
            eps,
            rope.map(|r| (&r.cos, &r.sin)),
        );
    }
    if !fused(x) || d % 2 != 0 {
        let h = super::layers::rms_norm(x, Some(weight), eps)?;
        return match rope {
            Some(rope) => super::rope::apply_rotary_emb(&h, rope),
            None => Ok(h),
        };
    }
    let rope32 = rope
        .map(|r| -> Result<(Tensor, Tensor, ParamRows)> {
            let rows = ParamRows::new(r.cos.dims(), b, n, d, "rotary cos")?;
            if r.sin.dims() != r.cos.dims() || r.cos.dims().get(1) != Some(&n) {
                candle_core::bail!(
                    "rotary tables cos {:?} / sin {:?} do not cover ({b}, {n}, {d})",
                    r.cos.dims(),
                    r.sin.dims()
                );
            }
            Ok((f32_contiguous(&r.cos)?, f32_contiguous(&r.sin)?, rows))
        })
        .transpose()?;
    let (x32, w32) = (f32_contiguous(x)?, f32_contiguous(weight)?);
    let (xd, wd) = (F32Data::of(&x32)?, F32Data::of(&w32)?);
    let (xs, w) = (xd.slice(), wd.slice());
    if w.len() != d {
        candle_core::bail!("rms norm weight has {} values, expected {d}", w.len());
    }
    let tables = rope32
        .as_ref()
        .map(|(c, s, rows)| -> Result<_> { Ok((F32Data::of(c)?, F32Data::of(s)?, *rows)) })
        .transpose()?;
    let mut out = vec![0f32; b * n * d];
    let eps = eps as f32;
    par_out_rows(&mut out, d, |row0, chunk| {
        dispatch_avx2!({
            for (i, o) in chunk.chunks_exact_mut(d).enumerate() {
                let r = row0 + i;
                let rope = tables.as_ref().map(|(c, s, rows)| {
                    let a = rows.row(r) * d;
                    (&c.slice()[a..a + d], &s.slice()[a..a + d])
                });
                rms_rope_row(&xs[r * d..(r + 1) * d], o, w, eps, rope);
            }
        })
    });
    Tensor::from_vec(out, (b, n, d), x.device())?.to_dtype(x.dtype())
}

/// `h + y * gate` (the gated residual of an LTX block), in f32, returned in `h`'s dtype. `h` and
/// `y` (b, n, D), `gate` (1 or b, 1 or n, D).
pub fn gated_residual(h: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::model::cuda::block_ops::block_ops_apply(h) && y.dtype() == h.dtype() {
        return crate::model::cuda::block_ops::gated_residual(h, y, gate);
    }
    if !fused(h) {
        return h + y.broadcast_mul(gate)?;
    }
    let (b, n, d) = h.dims3()?;
    if y.dims() != h.dims() {
        candle_core::bail!(
            "gated residual: update {:?} does not match {:?}",
            y.dims(),
            h.dims()
        );
    }
    let rows = ParamRows::new(gate.dims(), b, n, d, "residual gate")?;
    let (h32, y32, g32) = (
        f32_contiguous(h)?,
        f32_contiguous(y)?,
        f32_contiguous(gate)?,
    );
    let (hd, yd, gd) = (F32Data::of(&h32)?, F32Data::of(&y32)?, F32Data::of(&g32)?);
    let (hs, ys, gs) = (hd.slice(), yd.slice(), gd.slice());
    let mut out = vec![0f32; b * n * d];
    par_out_rows(&mut out, d, |row0, chunk| {
        dispatch_avx2!({
            for (i, o) in chunk.chunks_exact_mut(d).enumerate() {
                let r = row0 + i;
                let g = rows.row(r) * d;
                gated_residual_row(
                    &hs[r * d..(r + 1) * d],
                    &ys[r * d..(r + 1) * d],
                    &gs[g..g + d],
                    o,
                );
            }
        })
    });
    Tensor::from_vec(out, (b, n, d), h.device())?.to_dtype(h.dtype())
}

/// `x W^T + bias (+ residual)` for f32 CPU tensors in one gemm: the output starts as the bias
/// (plus the residual) and the gemm accumulates into it, instead of a zero-filled product and
/// separate broadcast adds. `x` (rows, in) contiguous, `weight` (out, in), `bias` (out),
/// `residual` (rows, out). Returns `None` when the inputs do not fit this path (not f32 on the
/// CPU), for the caller to fall back.
pub fn linear_f32(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let all_f32 = [Some(x), Some(weight), bias, residual]
        .into_iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32 && t.device().is_cpu());
    if !all_f32 {
        return Ok(None);
    }
    let (rows, in_dim) = x.dims2()?;
    let (out_dim, w_in) = weight.dims2()?;
    if w_in != in_dim {
        candle_core::bail!(
            "linear: input has {in_dim} features, weight {:?}",
            weight.dims()
        );
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let (xd, wd) = (F32Data::of(&x)?, F32Data::of(&weight)?);
    let mut out: Vec<f32> = Vec::with_capacity(rows * out_dim);
    match residual {
        Some(res) => {
            if res.dims() != [rows, out_dim] {
                candle_core::bail!(
                    "linear: residual {:?}, expected ({rows}, {out_dim})",
                    res.dims()
                );
            }
            let res = res.contiguous()?;
            out.extend_from_slice(F32Data::of(&res)?.slice());
        }
        None => out.resize(rows * out_dim, 0.0),
    }
    if let Some(bias) = bias {
        let bias = bias.contiguous()?;
        let bd = F32Data::of(&bias)?;
        let bs = bd.slice();
        if bs.len() != out_dim {
            candle_core::bail!("linear: bias has {} values, expected {out_dim}", bs.len());
        }
        for row in out.chunks_exact_mut(out_dim.max(1)) {
            row.iter_mut().zip(bs).for_each(|(o, b)| *o += b);
        }
    }
    let read_dst = residual.is_some() || bias.is_some();
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    if rows > 0 && out_dim > 0 {
        // SAFETY: dst is rows x out_dim row-major, lhs rows x in_dim row-major, and rhs = W^T
        // reads W (out_dim x in_dim, row-major) with its column j = W's row j.
        unsafe {
            gemm::gemm(
                rows,
                out_dim,
                in_dim,
                out.as_mut_ptr(),
                1,
                out_dim as isize,
                read_dst,
                xd.slice().as_ptr(),
                1,
                in_dim as isize,
                wd.slice().as_ptr(),
                in_dim as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    Ok(Some(Tensor::from_vec(out, (rows, out_dim), x.device())?))
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
            let err = ((fast_exp_with::<false>(x) as f64 - want) / want).abs();
            worst = worst.max(err);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        // the fused multiply-add form (its rounding differs, not its accuracy)
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (
                fast_exp_with::<true>(x) as f64,
                fast_exp_with::<false>(x) as f64,
            );
            assert!(((a - b) / b).abs() < 5e-7, "{x}: {a} vs {b}");
            x += 0.0731;
        }
        assert!(fast_exp_with::<false>(-1e4) < 1e-37 && fast_exp_with::<false>(-1e4) >= 0.0);
        assert_eq!(fast_exp_with::<false>(0.0), 1.0);
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
    /// (b, n, d) normal values; big enough for the threaded path (>= 64k values).
    fn randn(shape: &[usize]) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
    }

    #[test]
    fn fused_norm_modulate_and_residual_match_candle_ops() -> Result<()> {
        use super::super::layers::{modulate, rms_norm};
        let (b, n, d) = (2, 130, 256);
        let x = (randn(&[b, n, d])? * 3.0)?;
        let w = randn(&[d])?;
        // per-batch-element and per-token parameters, and one shared by the batch
        for rows in [[b, 1, d], [b, n, d], [1, n, d]] {
            let (scale, shift, gate) = (randn(&rows)?, randn(&rows)?, randn(&rows)?);
            for weight in [Some(&w), None] {
                let want = modulate(&rms_norm(&x, weight, 1e-6)?, &scale, &shift)?;
                let got = rms_norm_modulate(&x, weight, 1e-6, &scale, &shift)?;
                let err = crate::model::relative_l2(&got, &want)?;
                assert!(err < 1e-6, "{rows:?}, weight {}: {err}", weight.is_some());
            }
            let y = randn(&[b, n, d])?;
            let want = (&x + y.broadcast_mul(&gate)?)?;
            let got = gated_residual(&x, &y, &gate)?;
            assert!(crate::model::relative_l2(&got, &want)? < 1e-6, "{rows:?}");
        }
        // bf16 in, bf16 out
        let xb = x.to_dtype(DType::BF16)?;
        let s1 = randn(&[b, 1, d])?;
        let got = rms_norm_modulate(&xb, Some(&w), 1e-6, &s1, &s1)?;
        assert_eq!(got.dtype(), DType::BF16);
        // parameters that fit neither the tokens nor the batch are named
        let err = rms_norm_modulate(&x, None, 1e-6, &randn(&[b, 7, d])?, &s1).unwrap_err();
        assert!(err.to_string().contains("modulation scale"), "{err}");
        Ok(())
    }

    #[test]
    fn fused_norm_rope_matches_candle_ops() -> Result<()> {
        use super::super::layers::rms_norm;
        use super::super::rope::{apply_rotary_emb, Rope};
        let (b, n, d) = (2, 130, 256);
        let x = (randn(&[b, n, d])? * 2.0)?;
        let w = randn(&[d])?;
        for rope_batch in [1, b] {
            let phase = randn(&[rope_batch, n, d])?;
            let rope = Rope {
                cos: phase.cos()?,
                sin: phase.sin()?,
            };
            let want = apply_rotary_emb(&rms_norm(&x, Some(&w), 1e-5)?, &rope)?;
            let got = rms_norm_rope(&x, &w, 1e-5, Some(&rope))?;
            let err = crate::model::relative_l2(&got, &want)?;
            assert!(err < 1e-6, "rope batch {rope_batch}: {err}");
        }
        let want = rms_norm(&x, Some(&w), 1e-5)?;
        let got = rms_norm_rope(&x, &w, 1e-5, None)?;
        assert!(crate::model::relative_l2(&got, &want)? < 1e-6);
        Ok(())
    }

    #[test]
    fn linear_accumulates_bias_and_residual() -> Result<()> {
        let (rows, din, dout) = (67, 96, 80);
        let x = randn(&[rows, din])?;
        let w = randn(&[dout, din])?;
        let bias = randn(&[dout])?;
        let res = randn(&[rows, dout])?;
        let xw = x.matmul(&w.t()?)?;
        let cases = [
            (None, None, xw.clone()),
            (Some(&bias), None, xw.broadcast_add(&bias)?),
            (None, Some(&res), (&xw + &res)?),
            (Some(&bias), Some(&res), (xw.broadcast_add(&bias)? + &res)?),
        ];
        for (b, r, want) in cases {
            let got = linear_f32(&x, &w, b, r)?.expect("f32 CPU inputs take the fused path");
            let err = crate::model::relative_l2(&got, &want)?;
            assert!(
                err < 1e-6,
                "bias {}, residual {}: {err}",
                b.is_some(),
                r.is_some()
            );
        }
        // a transposed (strided) input is read correctly
        let xt = x.t()?.contiguous()?.t()?;
        let got = linear_f32(&xt, &w, Some(&bias), None)?.expect("f32");
        assert!(crate::model::relative_l2(&got, &xw.broadcast_add(&bias)?)? < 1e-6);
        // other dtypes are left to the caller
        assert!(linear_f32(&x.to_dtype(DType::BF16)?, &w, None, None)?.is_none());
        let err = linear_f32(&x, &w.narrow(1, 0, 10)?, None, None).unwrap_err();
        assert!(err.to_string().contains("features"), "{err}");
        Ok(())
    }
}
