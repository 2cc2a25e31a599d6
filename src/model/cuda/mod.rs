//! This crate's own CUDA kernels (issue 8), compiled to PTX by `build.rs` with the `cuda` feature
//! and loaded into candle's CUDA context on first use.
//!
//! - [`flash_attention`]: fused attention (`flash_attention.cu`): Q K^T, the online softmax and
//!   P V in one kernel per call, on the tensor cores, with no score matrix in device memory. Two
//!   kernels ([`FlashKernel`]): `Mma`, the default, and `Wmma`, the first one, kept to compare.
//! - [`block_ops`]: the transformer block's norms, rotary embedding, modulation and gated
//!   residual, one kernel each.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
};

pub mod block_ops;

const FLASH_ATTENTION_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));

/// Head sizes the fused kernel is built for: 64 (LTX-Video 2B) and 128 (the 13B models).
const HEAD_DIMS: [usize; 2] = [64, 128];

/// The fused attention kernels of `flash_attention.cu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKernel {
    /// `mma.sync` with the scores, probabilities and output in registers (FlashAttention-2's
    /// scheme); 4 warps of 16 query rows per block, tiles of 64 keys.
    Mma,
    /// wmma fragments, with the scores and the output accumulator in shared memory; tiles of 32
    /// keys, 4 warps per block for head size 64, 2 for 128.
    Wmma,
}

impl FlashKernel {
    /// The kernel's entry point for `dtype` ("bf16" or "f16") and head size `d`, and its warps
    /// per block (16 query rows each).
    fn entry(self, dtype: &str, d: usize) -> (String, usize) {
        match self {
            Self::Mma => (format!("flash_attention_mma_{dtype}_d{d}"), 4),
            Self::Wmma => (
                format!("flash_attention_{dtype}_d{d}"),
                if d == 64 { 4 } else { 2 },
            ),
        }
    }
}

/// Whether [`flash_attention`] runs these inputs (see there); otherwise the caller keeps the
/// portable path. `bias`, when present, is (b, kv_len) of any float dtype.
pub fn flash_attention_supports(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let dtype = q.dtype();
    if !q.device().is_cuda()
        // The f16 kernels are built but were not run on a GPU (bf16 parity, H100): f16 keeps the
        // portable path until they are.
        || dtype != DType::BF16
        || k.dtype() != dtype
        || v.dtype() != dtype
    {
        return false;
    }
    let (Ok((b, heads, _, d)), Ok((kb, kh, kv_len, kd)), Ok((vb, vh, v_len, vd))) =
        (q.dims4(), k.dims4(), v.dims4())
    else {
        return false;
    };
    if !HEAD_DIMS.contains(&d)
        || (kb, kh, kd) != (b, heads, d)
        || (vb, vh, v_len, vd) != (b, heads, kv_len, d)
    {
        return false;
    }
    // Rows are read 8 values (16 bytes) at a time: the head dimension contiguous, and every row
    // start a multiple of 8 values from an aligned allocation.
    [q, k, v].iter().all(|t| {
        let layout = t.layout();
        layout.stride()[3] == 1
            && layout.start_offset() % 8 == 0
            && layout.stride()[..3].iter().all(|s| s % 8 == 0)
    })
}

/// Fused scaled dot-product attention on CUDA: `q` (b, heads, q_len, d), `k` and `v`
/// (b, heads, kv_len, d), bf16, any strides with `d` contiguous (heads views of
/// (b, len, heads, d) memory, as the transformer makes them); `bias` an additive per-key bias
/// (b, kv_len); `scale` multiplies the scores. Returns (b, heads, q_len, d) as a transposed view
/// of (b, q_len, heads, d) memory, like the CPU kernel, so `transpose(1, 2)` of it is free.
///
/// The caller checks [`flash_attention_supports`] first.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    kernel: FlashKernel,
) -> Result<Tensor> {
    if !flash_attention_supports(q, k, v) {
        candle_core::bail!(
            "flash attention: unsupported inputs q {:?} {:?}, k {:?}, v {:?} (CUDA, bf16, \
             head size 64 or 128, rows 16-byte aligned)",
            q.dims(),
            q.dtype(),
            k.dims(),
            v.dims()
        );
    }
    let (b, _, _, _) = q.dims4()?;
    let kv_len = k.dim(2)?;
    let bias = match bias {
        Some(t) => {
            if t.dims() != [b, kv_len] {
                candle_core::bail!(
                    "flash attention: key bias has shape {:?}, expected (batch, keys) = ({b}, {kv_len})",
                    t.dims()
                );
            }
            Some(t.to_dtype(DType::F32)?.contiguous()?)
        }
        None => None,
    };
    let op = FlashAttention {
        scale: scale as f32,
        bias,
        kernel,
    };
    q.apply_op3_no_bwd(k, v, &op)?.transpose(1, 2)
}

struct FlashAttention {
    scale: f32,
    /// (b, kv_len) f32, contiguous.
    bias: Option<Tensor>,
    kernel: FlashKernel,
}

impl FlashAttention {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        kernel_dtype: &str,
        (sq, lq): (&CudaStorage, &Layout),
        (sk, lk): (&CudaStorage, &Layout),
        (sv, lv): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = sq.device();
        let (b, heads, q_len, d) = lq.shape().dims4()?;
        let kv_len = lk.shape().dims()[2];
        let q = sq.as_cuda_slice::<T>()?.slice(lq.start_offset()..);
        let k = sk.as_cuda_slice::<T>()?.slice(lk.start_offset()..);
        let v = sv.as_cuda_slice::<T>()?.slice(lv.start_offset()..);
        let (entry, warps) = self.kernel.entry(kernel_dtype, d);
        let func =
            dev.get_or_load_custom_func(&entry, "turbovsr_flash_attention", FLASH_ATTENTION_PTX)?;
        let out_len = b * q_len * heads * d;
        // SAFETY: every element is written by the kernel (each query row of each head).
        let out = unsafe { dev.alloc::<T>(out_len)? };
        let bias_storage = self.bias.as_ref().map(Tensor::storage_and_layout);
        let bias_view = match &bias_storage {
            Some((storage, layout)) => match &**storage {
                Storage::Cuda(s) => Some(s.as_cuda_slice::<f32>()?.slice(layout.start_offset()..)),
                _ => candle_core::bail!("flash attention: the key bias is not on the CUDA device"),
            },
            None => None,
        };
        let null_bias: u64 = 0;
        let to_i32 = |n: usize, what: &str| -> Result<i32> {
            i32::try_from(n).map_err(|_| {
                candle_core::Error::Msg(format!("flash attention: {what} {n} exceeds i32"))
            })
        };
        let (heads_i, q_len_i, kv_len_i) = (
            to_i32(heads, "heads")?,
            to_i32(q_len, "query length")?,
            to_i32(kv_len, "key length")?,
        );
        let strides: Vec<i64> = [lq, lk, lv]
            .iter()
            .flat_map(|l| l.stride()[..3].iter().map(|&s| s as i64))
            .collect();
        let mut builder = func.builder();
        builder.arg(&q);
        builder.arg(&k);
        builder.arg(&v);
        match &bias_view {
            Some(view) => builder.arg(view),
            None => builder.arg(&null_bias),
        };
        builder.arg(&out);
        builder.arg(&heads_i);
        builder.arg(&q_len_i);
        builder.arg(&kv_len_i);
        for s in &strides {
            builder.arg(s);
        }
        builder.arg(&self.scale);
        let grid_x = u32::try_from(q_len.div_ceil(16 * warps)).map_err(|_| {
            candle_core::Error::Msg(format!("flash attention: {q_len} queries exceed the grid"))
        })?;
        let grid_y = u32::try_from(b * heads)
            .ok()
            .filter(|&y| y <= 65_535)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "flash attention: batch x heads = {} exceeds the grid's 65,535",
                    b * heads
                ))
            })?;
        let cfg = LaunchConfig {
            grid_dim: (grid_x, grid_y, 1),
            block_dim: (32 * warps as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature (flash_attention.cu); the inputs'
        // extents and strides were checked by flash_attention_supports, `out` holds out_len.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((b, q_len, heads, d)),
        ))
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "turbovsr-flash-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("flash attention runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        sq: &CudaStorage,
        lq: &Layout,
        sk: &CudaStorage,
        lk: &Layout,
        sv: &CudaStorage,
        lv: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let inputs = ((sq, lq), (sk, lk), (sv, lv));
        match sq.dtype() {
            DType::BF16 => self.launch::<half::bf16>("bf16", inputs.0, inputs.1, inputs.2),
            DType::F16 => self.launch::<half::f16>("f16", inputs.0, inputs.1, inputs.2),
            other => candle_core::bail!("flash attention: unsupported dtype {other:?}"),
        }
    }
}
