//! Small building blocks shared by the transformer's modules: a linear layer that runs in any
//! dtype on any device, and RMS / layer norms computed in f32.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu_kernels::linear_f32;
use crate::model::transformer::attention::matmul_dtype;

/// `torch.nn.Linear`: `y = x W^T + b`, weights `weight` (out, in) and `bias` (out).
///
/// candle's CPU gemm has no bf16 kernel, so bf16 on the CPU multiplies in f32 and rounds the
/// result back to bf16 (weights stay bf16 in memory).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias` is true) under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }
}

impl Linear {
    /// `residual + self.forward(x)`, with the residual (same shape as the output) added inside
    /// the gemm on the CPU.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let in_dim = self.weight.dim(1)?;
        let rows = match x.dims().split_last() {
            Some((&k, lead)) if k == in_dim => lead.iter().product::<usize>(),
            _ => candle_core::bail!(
                "linear: input has shape {:?}, expected (..., {in_dim})",
                x.dims()
            ),
        };
        let fused = linear_f32(
            &x.reshape((rows, in_dim))?,
            &self.weight,
            self.bias.as_ref(),
            Some(&residual.reshape((rows, self.out_dim()))?),
        )?;
        match fused {
            Some(y) => y.reshape(residual.shape()),
            None => residual + self.forward(x)?,
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let mm = matmul_dtype(dtype, x.device());
        let dims = x.dims().to_vec();
        let (rows, in_dim) = match dims.split_last() {
            Some((&k, lead)) => (lead.iter().product::<usize>(), k),
            None => candle_core::bail!("linear: scalar input"),
        };
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_dim();
        }
        // (..., in) -> (rows, in): one gemm for all tokens of all batch elements
        let x2 = x.reshape((rows, in_dim))?;
        // f32 on the CPU: the bias is added inside the gemm
        if let Some(y) = linear_f32(&x2, &self.weight, self.bias.as_ref(), None)? {
            return y.reshape(out_dims);
        }
        let x2 = x2.to_dtype(mm)?;
        let w = self.weight.to_dtype(mm)?;
        let mut y = x2.matmul(&w.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(mm)?)?;
        }
        y.to_dtype(dtype)?.reshape(out_dims)
    }
}

/// RMS norm over the last dimension, computed in f32 and returned in `x`'s dtype:
/// `x / sqrt(mean(x^2) + eps) * weight` (diffusers `RMSNorm`, `torch.nn.RMSNorm`).
/// `weight` is `None` for `elementwise_affine=False`.
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?.contiguous()?;
    let dim = x32.dim(D::Minus1)?;
    let ones;
    let w = match weight {
        Some(w) => w.to_dtype(DType::F32)?,
        None => {
            ones = Tensor::ones(dim, DType::F32, x.device())?;
            ones
        }
    };
    candle_nn::ops::rms_norm(&x32, &w, eps as f32)?.to_dtype(dtype)
}

/// Layer norm over the last dimension without affine parameters, in f32, centred before the
/// variance (`torch.nn.LayerNorm(elementwise_affine=False)`).
pub fn layer_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let mean = x32.mean_keepdim(D::Minus1)?;
    let centred = x32.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .to_dtype(dtype)
}

/// `x * (1 + scale) + shift`, the AdaLN modulation, with `scale` and `shift` broadcast over the
/// tokens when they are per batch element.
pub fn modulate(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}
