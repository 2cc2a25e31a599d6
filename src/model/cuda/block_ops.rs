//! The transformer block's elementwise steps as single CUDA kernels (`block_ops.cu`): the q/k
//! RMS norm with the rotary embedding, the RMS norm with the AdaLN modulation, and the gated
//! residual. They replace chains of candle kernels (f32 copies, narrow/cat for the rotation,
//! separate multiply and add passes) over the (tokens x D) activations; the math is that of the
//! CPU kernels in `crate::model::transformer::cpu_kernels`, in f32, rounded once.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor,
};

const BLOCK_OPS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/block_ops.ptx"));
const THREADS: u32 = 256;

/// Whether the block's elementwise steps run these kernels on `x`'s device: CUDA, f32 or bf16,
/// unless `TURBOVSR_BLOCK_OPS=portable` keeps candle's ops (to compare the two).
pub fn block_ops_apply(x: &Tensor) -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *FUSED.get_or_init(|| match std::env::var("TURBOVSR_BLOCK_OPS").as_deref() {
        Ok("portable") => false,
        Ok("fused") | Err(_) => true,
        Ok(other) => {
            eprintln!(
                "turbovsr: TURBOVSR_BLOCK_OPS={other:?} is not fused or portable; using fused"
            );
            true
        }
    });
    enabled
        && x.device().is_cuda()
        // f16 is built but was not among the dtypes run on a GPU (f32 and bf16 parity, H100):
        // it keeps candle's ops until it is.
        && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// (batch rows, token rows) of a parameter of `dims` for activations (b, n, d): (d) is shared,
/// (1 or b, 1 or n, d) per batch element and/or token.
fn param_rows(dims: &[usize], b: usize, n: usize, d: usize, what: &str) -> Result<(i32, i32)> {
    match *dims {
        [pd] if pd == d => Ok((1, 1)),
        [pb, pn, pd] if pd == d && (pb == 1 || pb == b) && (pn == 1 || pn == n) => {
            Ok((pb as i32, pn as i32))
        }
        _ => candle_core::bail!(
            "{what} has shape {dims:?}, expected (1 or {b}, 1 or {n}, {d}) for activations ({b}, {n}, {d})"
        ),
    }
}

fn f32_contiguous(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.contiguous()
}

/// The device memory of a contiguous f32 tensor's storage.
fn f32_view<'a>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    match storage {
        Storage::Cuda(s) => Ok(s.as_cuda_slice::<f32>()?.slice(layout.start_offset()..)),
        _ => candle_core::bail!("{what} is not on the CUDA device"),
    }
}

/// One block per row of `rows`, `THREADS` threads.
fn row_launch(rows: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows)
        .ok()
        .filter(|&r| r > 0 && r < i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!("block ops: {rows} rows (expected 1 to 2^31 - 1)"))
        })?;
    Ok(LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => candle_core::bail!("block ops: unsupported dtype {other:?}"),
    })
}

fn dims_bnd(layout: &Layout) -> Result<(usize, usize, usize)> {
    layout.shape().dims3()
}

/// Runs `launch::<T>` for the storage's dtype.
macro_rules! dispatch {
    ($storage:expr, $f:ident ( $($arg:expr),* )) => {
        match $storage.dtype() {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<half::bf16>($($arg),*),
            DType::F16 => $f::<half::f16>($($arg),*),
            other => candle_core::bail!("block ops: unsupported dtype {other:?}"),
        }
    };
}

/// `apply_rotary_emb(rms_norm(x, weight, eps), (cos, sin))` (or the norm alone): `x` (b, n, D),
/// `weight` (D), `cos`/`sin` (1 or b, n, D).
pub fn rms_norm_rope(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    if rope.is_some() && d % 2 != 0 {
        candle_core::bail!("rotary embedding over an odd width {d}");
    }
    let (table_b, tables) = match rope {
        Some((cos, sin)) => {
            let (tb, tn) = param_rows(cos.dims(), b, n, d, "rotary cos")?;
            if sin.dims() != cos.dims() || tn as usize != n {
                candle_core::bail!(
                    "rotary tables cos {:?} / sin {:?} do not cover ({b}, {n}, {d})",
                    cos.dims(),
                    sin.dims()
                );
            }
            (tb, Some((f32_contiguous(cos)?, f32_contiguous(sin)?)))
        }
        None => (1, None),
    };
    if weight.dims() != [d] {
        candle_core::bail!(
            "rms norm weight has shape {:?}, expected ({d})",
            weight.dims()
        );
    }
    let op = RmsNormRope {
        weight: f32_contiguous(weight)?,
        tables,
        table_b,
        eps: eps as f32,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

struct RmsNormRope {
    weight: Tensor,
    tables: Option<(Tensor, Tensor)>,
    table_b: i32,
    eps: f32,
}

impl CustomOp1 for RmsNormRope {
    fn name(&self) -> &'static str {
        "turbovsr-rms-norm-rope"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("rms_norm_rope: CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        fn launch<T: CudaDType + DeviceRepr>(
            op: &RmsNormRope,
            s: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let dev = s.device();
            let (b, n, d) = dims_bnd(l)?;
            let x = s.as_cuda_slice::<T>()?.slice(l.start_offset()..);
            let func = dev.get_or_load_custom_func(
                &format!("rms_norm_rope_{}", suffix(s.dtype())?),
                "turbovsr_block_ops",
                BLOCK_OPS_PTX,
            )?;
            // SAFETY: the kernel writes every element of every row.
            let out = unsafe { dev.alloc::<T>(b * n * d)? };
            let (wg, wl) = op.weight.storage_and_layout();
            let w = f32_view(&wg, wl, "rms norm weight")?;
            let tables = op
                .tables
                .as_ref()
                .map(|(c, s)| (c.storage_and_layout(), s.storage_and_layout()));
            let views = match &tables {
                Some(((cg, cl), (sg, sl))) => Some((
                    f32_view(cg, cl, "rotary cos")?,
                    f32_view(sg, sl, "rotary sin")?,
                )),
                None => None,
            };
            let null: u64 = 0;
            let (d_i, n_i) = (d as i32, n as i32);
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&w);
            match &views {
                Some((c, s)) => {
                    builder.arg(c);
                    builder.arg(s);
                }
                None => {
                    builder.arg(&null);
                    builder.arg(&null);
                }
            }
            builder.arg(&out);
            builder.arg(&d_i);
            builder.arg(&n_i);
            builder.arg(&op.table_b);
            builder.arg(&op.eps);
            // SAFETY: arguments as in block_ops.cu's rms_norm_rope; shapes checked by the caller.
            unsafe { builder.launch(row_launch(b * n)?) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from((b, n, d)),
            ))
        }
        dispatch!(s, launch(self, s, l))
    }
}

/// `rms_norm(x, weight, eps) * (1 + scale) + shift`: `x` (b, n, D), `weight` (D) or none,
/// `scale` and `shift` (D) or (1 or b, 1 or n, D).
pub fn rms_norm_modulate(
    x: &Tensor,
    weight: Option<&Tensor>,
    eps: f64,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    if let Some(w) = weight {
        if w.dims() != [d] {
            candle_core::bail!("rms norm weight has shape {:?}, expected ({d})", w.dims());
        }
    }
    let op = RmsNormModulate {
        weight: weight.map(f32_contiguous).transpose()?,
        scale_rows: param_rows(scale.dims(), b, n, d, "modulation scale")?,
        shift_rows: param_rows(shift.dims(), b, n, d, "modulation shift")?,
        scale: f32_contiguous(scale)?,
        shift: f32_contiguous(shift)?,
        eps: eps as f32,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

struct RmsNormModulate {
    weight: Option<Tensor>,
    scale: Tensor,
    shift: Tensor,
    scale_rows: (i32, i32),
    shift_rows: (i32, i32),
    eps: f32,
}

impl CustomOp1 for RmsNormModulate {
    fn name(&self) -> &'static str {
        "turbovsr-rms-norm-modulate"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("rms_norm_modulate: CUDA only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        fn launch<T: CudaDType + DeviceRepr>(
            op: &RmsNormModulate,
            s: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let dev = s.device();
            let (b, n, d) = dims_bnd(l)?;
            let x = s.as_cuda_slice::<T>()?.slice(l.start_offset()..);
            let func = dev.get_or_load_custom_func(
                &format!("rms_norm_modulate_{}", suffix(s.dtype())?),
                "turbovsr_block_ops",
                BLOCK_OPS_PTX,
            )?;
            // SAFETY: the kernel writes every element of every row.
            let out = unsafe { dev.alloc::<T>(b * n * d)? };
            let weight = op.weight.as_ref().map(Tensor::storage_and_layout);
            let w = match &weight {
                Some((g, wl)) => Some(f32_view(g, wl, "rms norm weight")?),
                None => None,
            };
            let (scg, scl) = op.scale.storage_and_layout();
            let (shg, shl) = op.shift.storage_and_layout();
            let (sc, sh) = (
                f32_view(&scg, scl, "modulation scale")?,
                f32_view(&shg, shl, "modulation shift")?,
            );
            let null: u64 = 0;
            let (d_i, n_i) = (d as i32, n as i32);
            let mut builder = func.builder();
            builder.arg(&x);
            match &w {
                Some(w) => builder.arg(w),
                None => builder.arg(&null),
            };
            builder.arg(&sc);
            builder.arg(&sh);
            builder.arg(&out);
            builder.arg(&d_i);
            builder.arg(&n_i);
            builder.arg(&op.scale_rows.0);
            builder.arg(&op.scale_rows.1);
            builder.arg(&op.shift_rows.0);
            builder.arg(&op.shift_rows.1);
            builder.arg(&op.eps);
            // SAFETY: arguments as in block_ops.cu's rms_norm_modulate; shapes checked above.
            unsafe { builder.launch(row_launch(b * n)?) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from((b, n, d)),
            ))
        }
        dispatch!(s, launch(self, s, l))
    }
}

/// `h + y * gate`: `h` and `y` (b, n, D), `gate` (D) or (1 or b, 1 or n, D).
pub fn gated_residual(h: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, n, d) = h.dims3()?;
    if y.dims() != h.dims() || y.dtype() != h.dtype() {
        candle_core::bail!(
            "gated residual: update {:?} {:?} does not match {:?} {:?}",
            y.dims(),
            y.dtype(),
            h.dims(),
            h.dtype()
        );
    }
    let op = GatedResidual {
        rows: param_rows(gate.dims(), b, n, d, "residual gate")?,
        gate: f32_contiguous(gate)?,
    };
    h.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &op)
}

struct GatedResidual {
    gate: Tensor,
    rows: (i32, i32),
}

impl CustomOp2 for GatedResidual {
    fn name(&self) -> &'static str {
        "turbovsr-gated-residual"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("gated_residual: CUDA only")
    }

    fn cuda_fwd(
        &self,
        sh: &CudaStorage,
        lh: &Layout,
        sy: &CudaStorage,
        ly: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        fn launch<T: CudaDType + DeviceRepr>(
            op: &GatedResidual,
            sh: &CudaStorage,
            lh: &Layout,
            sy: &CudaStorage,
            ly: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let dev = sh.device();
            let (b, n, d) = dims_bnd(lh)?;
            let h = sh.as_cuda_slice::<T>()?.slice(lh.start_offset()..);
            let y = sy.as_cuda_slice::<T>()?.slice(ly.start_offset()..);
            let func = dev.get_or_load_custom_func(
                &format!("gated_residual_{}", suffix(sh.dtype())?),
                "turbovsr_block_ops",
                BLOCK_OPS_PTX,
            )?;
            // SAFETY: the kernel writes every element of every row.
            let out = unsafe { dev.alloc::<T>(b * n * d)? };
            let (gg, gl) = op.gate.storage_and_layout();
            let g = f32_view(&gg, gl, "residual gate")?;
            let (d_i, n_i) = (d as i32, n as i32);
            let mut builder = func.builder();
            builder.arg(&h);
            builder.arg(&y);
            builder.arg(&g);
            builder.arg(&out);
            builder.arg(&d_i);
            builder.arg(&n_i);
            builder.arg(&op.rows.0);
            builder.arg(&op.rows.1);
            // SAFETY: arguments as in block_ops.cu's gated_residual; shapes checked above.
            unsafe { builder.launch(row_launch(b * n)?) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from((b, n, d)),
            ))
        }
        dispatch!(sh, launch(self, sh, lh, sy, ly))
    }
}
