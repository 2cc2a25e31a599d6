//! 3D convolution for candle, which has none, and LTX-Video's causal / replicate-padded wrapper.
//!
//! Two paths: on the CPU, our own im2col (row-wise `memcpy`s, the replicate time padding folded
//! into the frame index, in cache-sized chunks of output rows spread over the cores) + one
//! single-threaded GEMM per chunk straight into the output (half
//! precision widened to f32 for the gemm and rounded back, as cuBLAS does); elsewhere (CUDA) the
//! temporal taps are folded into the channels of one candle `conv2d` (im2col + cuBLAS, or cuDNN
//! with the `cudnn` feature). candle's CPU conv2d im2col copies element by element and took half
//! of the VAE's time, hence the first path.
//!
//! Mirrors `LTXVideoCausalConv3d` of diffusers 0.42.1
//! (`diffusers/models/autoencoders/autoencoder_kl_ltx.py`): the frames are padded by repeating the
//! first frame (causal: `k_t - 1` copies in front; non-causal: `(k_t - 1) / 2` copies of the first
//! frame in front and of the last frame behind), then a `Conv3d` with zero padding `k/2` in height
//! and width only.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A plain 3D convolution with zero padding in height and width and none in time.
///
/// `x`: (b, c_in, t, h, w); `weight`: (c_out, c_in, k_t, k_h, k_w); `stride`: (time, height,
/// width), with equal height and width strides; `padding_hw`: zero padding of height and width.
/// Returns (b, c_out, (t - k_t) / s_t + 1, h_out, w_out). The reference of the tests.
#[cfg(test)]
pub fn conv3d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize, usize),
    padding_hw: usize,
) -> Result<Tensor> {
    conv3d_padded(x, weight, bias, stride, padding_hw, (0, 0))
}

/// [`conv3d`] on `x` with its first frame repeated `pad_t.0` times in front and its last frame
/// `pad_t.1` times behind (replicate padding in time).
pub fn conv3d_padded(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize, usize),
    padding_hw: usize,
    pad_t: (usize, usize),
) -> Result<Tensor> {
    let _profile = crate::model::profile::scope("VAE: conv3d", x.device());
    if x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        return conv3d_im2col_cpu(x, weight, bias, stride, padding_hw, pad_t, IM2COL_CHUNK);
    }
    if x.device().is_cpu() && matches!(x.dtype(), DType::BF16 | DType::F16) {
        // candle's CPU conv2d has no half-precision gemm. Do what cuBLAS does on CUDA: half
        // inputs (exact in f32), f32 accumulation, the product rounded to half, then the bias
        // added in half. This is what lets the CPU reproduce the GPU's bf16 parity errors.
        let dtype = x.dtype();
        let y = conv3d_im2col_cpu(
            &x.to_dtype(DType::F32)?,
            &weight.to_dtype(DType::F32)?,
            None,
            stride,
            padding_hw,
            pad_t,
            IM2COL_CHUNK,
        )?
        .to_dtype(dtype)?;
        return match bias {
            Some(b) => y.broadcast_add(&b.to_dtype(dtype)?.reshape((1, (), 1, 1, 1))?),
            None => Ok(y),
        };
    }
    let x = replicate_pad_time(x, pad_t.0, pad_t.1)?;
    conv3d_folded(&x, weight, bias, stride, padding_hw)
}

/// Checks shapes and returns the output size (t_out, h_out, w_out).
fn conv3d_out_dims(
    x_dims: (usize, usize, usize, usize, usize),
    w_dims: (usize, usize, usize, usize, usize),
    stride: (usize, usize, usize),
    padding_hw: usize,
) -> Result<(usize, usize, usize)> {
    let (_, c_in, t, h, w) = x_dims;
    let (_, c_in_k, k_t, k_h, k_w) = w_dims;
    let (s_t, s_h, s_w) = stride;
    if c_in != c_in_k {
        bail!("conv3d: input has {c_in} channels, the kernel expects {c_in_k}");
    }
    if s_h != s_w {
        bail!("conv3d: height and width strides must be equal, got {s_h} and {s_w}");
    }
    if s_t == 0 || s_h == 0 {
        bail!("conv3d: zero stride");
    }
    if t < k_t {
        bail!("conv3d: {t} frames are fewer than the temporal kernel size {k_t}");
    }
    if h + 2 * padding_hw < k_h || w + 2 * padding_hw < k_w {
        bail!("conv3d: frame {h}x{w} is smaller than the kernel {k_h}x{k_w}");
    }
    Ok((
        (t - k_t) / s_t + 1,
        (h + 2 * padding_hw - k_h) / s_h + 1,
        (w + 2 * padding_hw - k_w) / s_w + 1,
    ))
}

/// Largest column buffer of one im2col chunk, in f32 values (768 KiB: most of a core's 1 MiB L2
/// on the dev machine, so the columns a chunk gathers are still in cache when its gemm packs them).
const IM2COL_CHUNK: usize = 192 << 10;

/// CPU f32 conv3d as im2col + gemm, in cache-sized chunks. The output rows of a batch element,
/// (frame, row) pairs in order, are cut into chunks of whole rows whose columns
/// (c_in * k_t * k_h * k_w, rows * w_out) fit `chunk_values`; the workers
/// (`get_num_threads()` scoped threads) take chunks in turn, gather each one's columns with
/// row-wise copies into their own buffer, and multiply the (c_out, c_in * k_t * k_h * k_w) kernel
/// by them with a single-threaded gemm straight into the channels-first output, which holds the
/// bias beforehand. The columns never leave the worker's cache, and the output is written once.
fn conv3d_im2col_cpu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize, usize),
    pad: usize,
    pad_t: (usize, usize),
    chunk_values: usize,
) -> Result<Tensor> {
    let (b, c_in, t, h, w) = x.dims5()?;
    let w_dims = weight.dims5()?;
    let (c_out, _, k_t, k_h, k_w) = w_dims;
    if t == 0 {
        bail!("conv3d: no frames");
    }
    let t_padded = t + pad_t.0 + pad_t.1;
    let (t_out, h_out, w_out) = conv3d_out_dims((b, c_in, t_padded, h, w), w_dims, stride, pad)?;
    let (s_t, s, _) = stride;
    let k = c_in * k_t * k_h * k_w;
    // The (c_out, k) kernel read in place (no copy when the weight is already contiguous).
    let weight = weight.contiguous()?;
    let (w_storage, w_layout) = weight.storage_and_layout();
    let kernel: &[f32] = match &*w_storage {
        candle_core::Storage::Cpu(cpu) => {
            &cpu.as_slice::<f32>()?[w_layout.start_offset()..][..c_out * k]
        }
        _ => bail!("conv3d: the im2col path needs a CPU weight"),
    };
    let bias = bias
        .map(|b| b.flatten_all()?.to_vec1::<f32>())
        .transpose()?;
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let data: &[f32] = match &*storage {
        candle_core::Storage::Cpu(cpu) => &cpu.as_slice::<f32>()?[layout.start_offset()..],
        _ => bail!("conv3d: the im2col path needs a CPU tensor"),
    };
    let plane = h_out * w_out;
    let rows = t_out * h_out; // output rows per (batch element, channel)
    let rows_per_chunk = (chunk_values / (k * w_out).max(1)).clamp(1, rows.max(1));
    let chunks_per_batch = rows.div_ceil(rows_per_chunk);
    let tasks = b * chunks_per_batch;
    let channel_stride = t_out * plane;
    // The output starts as the bias of each channel; the gemms add the products to it.
    let mut out = vec![0f32; b * c_out * channel_stride];
    if let Some(bias) = &bias {
        for (i, channel) in out.chunks_exact_mut(channel_stride).enumerate() {
            channel.fill(bias[i % c_out]);
        }
    }
    // Each chunk's workers write only that chunk's output rows of every channel.
    let out_ptr = crate::model::SharedOut(out.as_mut_ptr());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut col = vec![0f32; k * rows_per_chunk * w_out];
        loop {
            let task = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if task >= tasks {
                break;
            }
            let (bi, chunk) = (task / chunks_per_batch, task % chunks_per_batch);
            let row0 = chunk * rows_per_chunk;
            let nrows = rows_per_chunk.min(rows - row0);
            let n = nrows * w_out;
            for (r, dst_row) in col.chunks_exact_mut(n).take(k).enumerate() {
                // Row r of the columns is kernel tap (ci, a, kh, kw), the order of the weight.
                let kw = r % k_w;
                let kh = (r / k_w) % k_h;
                let a = (r / (k_w * k_h)) % k_t;
                let ci = r / (k_w * k_h * k_t);
                // Output columns ow whose input column ow * s + kw - pad is inside the frame.
                let ow_lo = pad.saturating_sub(kw).div_ceil(s).min(w_out);
                let ow_hi = (w + pad).saturating_sub(kw).div_ceil(s).clamp(ow_lo, w_out);
                for (i, dst) in dst_row.chunks_exact_mut(w_out).enumerate() {
                    let (t_o, oh) = ((row0 + i) / h_out, (row0 + i) % h_out);
                    let ih = oh * s + kh;
                    if ih < pad || ih - pad >= h || ow_lo == ow_hi {
                        dst.fill(0.0);
                        continue;
                    }
                    // Replicate padding: padded frame p is input frame clamp(p - front).
                    let ti = (t_o * s_t + a).saturating_sub(pad_t.0).min(t - 1);
                    let src_row =
                        &data[((bi * c_in + ci) * t + ti) * h * w + (ih - pad) * w..][..w];
                    dst[..ow_lo].fill(0.0);
                    dst[ow_hi..].fill(0.0);
                    if s == 1 {
                        let first = ow_lo + kw - pad;
                        dst[ow_lo..ow_hi].copy_from_slice(&src_row[first..first + ow_hi - ow_lo]);
                    } else {
                        for (ow, d) in dst.iter_mut().enumerate().take(ow_hi).skip(ow_lo) {
                            *d = src_row[ow * s + kw - pad];
                        }
                    }
                }
            }
            // SAFETY: dst is this chunk's rows of batch element bi: c_out rows of n values,
            // `channel_stride` apart, inside `out` and written by this task alone; lhs is the
            // (c_out, k) kernel, rhs the (k, n) columns just gathered.
            unsafe {
                gemm::gemm(
                    c_out,
                    n,
                    k,
                    out_ptr
                        .get()
                        .add(bi * c_out * channel_stride + row0 * w_out),
                    1,
                    channel_stride as isize,
                    true,
                    kernel.as_ptr(),
                    1,
                    k as isize,
                    col.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    };
    let threads = candle_core::utils::get_num_threads().clamp(1, tasks.max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    drop((storage, w_storage));
    Tensor::from_vec(out, (b, c_out, t_out, h_out, w_out), x.device())
}

/// The portable path: the k_t temporal taps folded into the channels of one candle conv2d.
fn conv3d_folded(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize, usize),
    padding_hw: usize,
) -> Result<Tensor> {
    let (b, c_in, t, h, w) = x.dims5()?;
    let w_dims = weight.dims5()?;
    let (c_out, _, k_t, k_h, k_w) = w_dims;
    let (s_t, s_h, _) = stride;
    let (t_out, _, _) = conv3d_out_dims((b, c_in, t, h, w), w_dims, stride, padding_hw)?;

    // Gather, for every output frame, its k_t input frames next to each other:
    // (b, c_in, t, h, w) -> k_t x (b, t_out, c_in, h, w) -> (b * t_out, k_t * c_in, h, w).
    let x_t = x.permute((0, 2, 1, 3, 4))?; // (b, t, c_in, h, w)
                                           // index_select needs a contiguous source; the unit-stride path only narrows the view.
    let x_t = if s_t == 1 { x_t } else { x_t.contiguous()? };
    let mut taps = Vec::with_capacity(k_t);
    for k in 0..k_t {
        let tap = if s_t == 1 {
            x_t.narrow(1, k, t_out)?
        } else {
            let idx: Vec<u32> = (0..t_out).map(|i| (k + i * s_t) as u32).collect();
            let idx = Tensor::new(idx.as_slice(), x.device())?;
            x_t.index_select(&idx, 1)?
        };
        taps.push(tap);
    }
    let stacked = if k_t == 1 {
        taps.remove(0).contiguous()?
    } else {
        Tensor::stack(&taps, 2)? // (b, t_out, k_t, c_in, h, w)
    };
    let stacked = stacked.reshape((b * t_out, k_t * c_in, h, w))?;

    // (c_out, c_in, k_t, k_h, k_w) -> (c_out, k_t * c_in, k_h, k_w), matching the stacking order.
    let kernel = weight
        .permute((0, 2, 1, 3, 4))?
        .reshape((c_out, k_t * c_in, k_h, k_w))?;
    let y = stacked.conv2d(&kernel, padding_hw, s_h, 1, 1)?; // (b * t_out, c_out, h', w')
    let (_, _, h_out, w_out) = y.dims4()?;
    // (b * t_out, c_out, h', w') -> (b, c_out, t_out, h', w')
    let y = y
        .reshape((b, t_out, c_out, h_out, w_out))?
        .permute((0, 2, 1, 3, 4))?;
    let y = match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, c_out, 1, 1, 1))?)?,
        None => y,
    };
    y.contiguous()
}

/// `LTXVideoCausalConv3d`: pads time by repeating edge frames, then [`conv3d`]. The weights are
/// at `<prefix>.conv.{weight,bias}` as in diffusers.
#[derive(Debug, Clone)]
pub struct CausalConv3d {
    weight: Tensor,
    bias: Tensor,
    kernel: (usize, usize, usize),
    stride: (usize, usize, usize),
    is_causal: bool,
}

impl CausalConv3d {
    /// A cubic kernel of size `kernel` with stride `stride` (time, height, width).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: (usize, usize, usize),
        is_causal: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = vb.get(
            (out_channels, in_channels, kernel, kernel, kernel),
            "weight",
        )?;
        let bias = vb.get(out_channels, "bias")?;
        Ok(Self {
            weight,
            bias,
            kernel: (kernel, kernel, kernel),
            stride,
            is_causal,
        })
    }
}

/// Pads the frame axis (dim 2) by repeating the first frame `front` times and the last `back` times.
pub fn replicate_pad_time(x: &Tensor, front: usize, back: usize) -> Result<Tensor> {
    if front == 0 && back == 0 {
        return Ok(x.clone());
    }
    let t = x.dim(2)?;
    if t == 0 {
        bail!("replicate_pad_time: no frames to repeat");
    }
    let mut parts = Vec::with_capacity(3);
    if front > 0 {
        parts.push(x.narrow(2, 0, 1)?.repeat((1, 1, front, 1, 1))?);
    }
    parts.push(x.clone());
    if back > 0 {
        parts.push(x.narrow(2, t - 1, 1)?.repeat((1, 1, back, 1, 1))?);
    }
    Tensor::cat(&parts, 2)
}

impl Module for CausalConv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (k_t, k_h, _) = self.kernel;
        let pad_t = if self.is_causal {
            (k_t - 1, 0)
        } else {
            ((k_t - 1) / 2, (k_t - 1) / 2)
        };
        let w = self.weight.to_dtype(x.dtype())?;
        let b = self.bias.to_dtype(x.dtype())?;
        let y = conv3d_padded(x, &w, Some(&b), self.stride, k_h / 2, pad_t)?;
        crate::model::flops::add(crate::model::flops::conv3d(
            y.elem_count(),
            self.weight.dim(1)?,
            self.kernel,
        ));
        Ok(y)
    }
}

/// Naive direct conv3d over the last three dims (zero padding `pad_hw` in height and width), used
/// as the reference in tests.
#[cfg(test)]
fn conv3d_naive(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: (usize, usize, usize),
    pad_hw: usize,
) -> Result<Tensor> {
    let (b, c_in, t, h, w) = x.dims5()?;
    let (c_out, _, k_t, k_h, k_w) = weight.dims5()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let ws = weight.flatten_all()?.to_vec1::<f32>()?;
    let bs = bias.to_vec1::<f32>()?;
    let t_o = (t - k_t) / stride.0 + 1;
    let h_o = (h + 2 * pad_hw - k_h) / stride.1 + 1;
    let w_o = (w + 2 * pad_hw - k_w) / stride.2 + 1;
    let mut out = vec![0f32; b * c_out * t_o * h_o * w_o];
    for bi in 0..b {
        for co in 0..c_out {
            for to in 0..t_o {
                for ho in 0..h_o {
                    for wo in 0..w_o {
                        let mut acc = bs[co] as f64;
                        for ci in 0..c_in {
                            for kt in 0..k_t {
                                for kh in 0..k_h {
                                    for kw in 0..k_w {
                                        let ti = to * stride.0 + kt;
                                        let hi = (ho * stride.1 + kh) as isize - pad_hw as isize;
                                        let wi = (wo * stride.2 + kw) as isize - pad_hw as isize;
                                        if hi < 0 || wi < 0 || hi >= h as isize || wi >= w as isize
                                        {
                                            continue;
                                        }
                                        let xi = (((bi * c_in + ci) * t + ti) * h + hi as usize)
                                            * w
                                            + wi as usize;
                                        let wi_ =
                                            (((co * c_in + ci) * k_t + kt) * k_h + kh) * k_w + kw;
                                        acc += xs[xi] as f64 * ws[wi_] as f64;
                                    }
                                }
                            }
                        }
                        out[(((bi * c_out + co) * t_o + to) * h_o + ho) * w_o + wo] = acc as f32;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, c_out, t_o, h_o, w_o), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::relative_l2;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn check(
        shape: (usize, usize, usize, usize, usize),
        c_out: usize,
        k: usize,
        stride: (usize, usize, usize),
    ) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., shape, &dev)?;
        let w = Tensor::randn(0f32, 1., (c_out, shape.1, k, k, k), &dev)?;
        let b = Tensor::randn(0f32, 1., c_out, &dev)?;
        let want = conv3d_naive(&x, &w, &b, stride, k / 2)?;
        let im2col = conv3d(&x, &w, Some(&b), stride, k / 2)?;
        let folded = conv3d_folded(&x, &w, Some(&b), stride, k / 2)?;
        // One output frame per im2col chunk: exercises the chunk seams.
        let chunked = conv3d_im2col_cpu(&x, &w, Some(&b), stride, k / 2, (0, 0), 1)?;
        for (path, got) in [("im2col", im2col), ("chunked", chunked), ("folded", folded)] {
            let err = relative_l2(&got, &want)?;
            assert!(
                err < 1e-5,
                "{path}: shape {shape:?} k {k} stride {stride:?}: rel l2 {err}"
            );
        }
        Ok(())
    }

    #[test]
    fn conv3d_matches_naive_loop() -> Result<()> {
        check((2, 3, 5, 6, 7), 4, 3, (1, 1, 1))?;
        check((1, 5, 7, 8, 6), 3, 3, (2, 2, 2))?;
        check((2, 4, 3, 5, 5), 6, 1, (1, 1, 1))?;
        check((1, 2, 6, 9, 4), 3, 3, (2, 1, 1))?;
        check((2, 3, 4, 7, 9), 5, 3, (1, 2, 2))?;
        Ok(())
    }

    /// Half precision on the CPU (what reproduces CUDA's bf16 errors here): the output keeps the
    /// dtype, lands within the dtype's rounding of the f32 convolution of the same half values,
    /// and equals the product rounded once and then the half bias added.
    #[test]
    fn half_precision_conv3d_on_the_cpu_rounds_like_cublas() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 5, 6, 7), &dev)?;
        let w = Tensor::randn(0f32, 0.2, (3, 4, 3, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1., 3, &dev)?;
        for (dtype, bound) in [(DType::BF16, 1e-2), (DType::F16, 2e-3)] {
            let (xh, wh, bh) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, b.to_dtype(dtype)?);
            let got = conv3d_padded(&xh, &wh, Some(&bh), (1, 2, 2), 1, (2, 0))?;
            assert_eq!(got.dtype(), dtype);
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32);
            let exact = conv3d_padded(&f32_of(&xh)?, &f32_of(&wh)?, None, (1, 2, 2), 1, (2, 0))?;
            assert_eq!(got.dims(), exact.dims());
            let once = exact
                .to_dtype(dtype)?
                .broadcast_add(&bh.reshape((1, 3, 1, 1, 1))?)?;
            assert_eq!(max_abs(&(f32_of(&got)? - f32_of(&once)?)?)?, 0.0);
            let exact = exact.broadcast_add(&f32_of(&bh)?.reshape((1, 3, 1, 1, 1))?)?;
            let err = relative_l2(&f32_of(&got)?, &exact)?;
            assert!(err > 0.0 && err < bound, "{dtype:?}: rel l2 {err}");
        }
        Ok(())
    }

    fn max_abs(t: &Tensor) -> Result<f32> {
        t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn conv3d_rejects_bad_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 2, 4, 4), DType::F32, &dev)?;
        let w = Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &dev)?;
        assert!(conv3d(&x, &w, None, (1, 1, 1), 1).is_err()); // 2 frames < k_t = 3
        let w4 = Tensor::zeros((2, 4, 1, 1, 1), DType::F32, &dev)?;
        assert!(conv3d(&x, &w4, None, (1, 1, 1), 0).is_err()); // channel mismatch
        assert!(conv3d(&x, &w4.narrow(1, 0, 3)?, None, (1, 2, 1), 0).is_err());
        Ok(())
    }

    /// Causal padding repeats the first frame k_t - 1 times; non-causal pads (k_t - 1) / 2 on both
    /// sides with the first and last frames. Checked against padding by hand + the naive loop.
    #[test]
    fn causal_conv3d_pads_time_by_replication() -> Result<()> {
        let dev = Device::Cpu;
        let (c_in, c_out, t) = (3, 2, 4);
        let w = Tensor::randn(0f32, 1., (c_out, c_in, 3, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1., c_out, &dev)?;
        let x = Tensor::randn(0f32, 1., (1, c_in, t, 5, 6), &dev)?;
        for causal in [true, false] {
            let vars = HashMap::from([
                ("conv.weight".to_string(), w.clone()),
                ("conv.bias".to_string(), b.clone()),
            ]);
            let vb = VarBuilder::from_tensors(vars, DType::F32, &dev);
            let conv = CausalConv3d::new(c_in, c_out, 3, (1, 1, 1), causal, vb)?;
            let got = conv.forward(&x)?;
            let first = x.narrow(2, 0, 1)?;
            let last = x.narrow(2, t - 1, 1)?;
            let padded = if causal {
                Tensor::cat(&[&first, &first, &x], 2)?
            } else {
                Tensor::cat(&[&first, &x, &last], 2)?
            };
            let want = conv3d_naive(&padded, &w, &b, (1, 1, 1), 1)?;
            assert_eq!(got.dims(), &[1, c_out, t, 5, 6]);
            let err = relative_l2(&got, &want)?;
            assert!(err < 1e-5, "causal={causal}: rel l2 {err}");
            // The portable path (CUDA, half precision) pads explicitly; same result.
            let folded = conv3d_folded(&padded, &w, Some(&b), (1, 1, 1), 1)?;
            let err = relative_l2(&folded, &want)?;
            assert!(err < 1e-5, "causal={causal}, folded: rel l2 {err}");
        }
        Ok(())
    }

    #[test]
    fn causal_conv3d_missing_weight_names_key() {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &dev);
        let err = CausalConv3d::new(2, 2, 3, (1, 1, 1), true, vb.pp("encoder.conv_in"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("encoder.conv_in.conv.weight"), "{err}");
    }

    #[test]
    fn a_conv_forward_adds_its_flops_to_the_tally() {
        use candle_core::{DType, Device, Module, Tensor};
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        let conv = CausalConv3d::new(3, 4, 3, (1, 1, 1), true, vb).unwrap();
        let x = Tensor::zeros((1, 3, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
        crate::model::flops::take();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), &[1, 4, 2, 5, 5]);
        assert_eq!(crate::model::flops::take(), 2 * (4 * 2 * 5 * 5) * 3 * 27);
    }
}
