// The transformer block's elementwise steps as one kernel each on CUDA (issue 8), instead of a
// chain of candle kernels with f32 copies of the (tokens x D) activations between them:
//
// - rms_norm_rope: q or k after its projection: RMS norm over D with a weight, then the rotary
//   embedding (pairs (2i, 2i+1) rotated by the cos/sin tables), or no rotation;
// - rms_norm_modulate: the AdaLN input of attention and feed-forward: RMS norm (weight optional),
//   then x * (1 + scale) + shift;
// - gated_residual: h + y * gate.
//
// Activations are T (f32, bf16 or f16), contiguous (rows, D); the weight, the tables and the
// modulation parameters are f32. Everything is computed in f32 and rounded once, as the CPU
// kernels of src/model/transformer/cpu_kernels.rs do. One block of 256 threads per row.
//
// Parameter rows: the modulation parameters and gates are (pb, pn, D) with pb in {1, batch} and
// pn in {1, tokens}: row r = (bi, ni) of the activations reads parameter row
// (pb == 1 ? 0 : bi) * pn + (pn == 1 ? 0 : ni). The rotary tables are (1 or batch, tokens, D)
// the same way with pn = tokens.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "convert.cuh"

namespace {

constexpr int THREADS = 256;

using turbovsr::from_f32;
using turbovsr::to_f32;

__device__ __forceinline__ long long param_row(long long r, int tokens, int pb, int pn) {
  const long long bi = pb == 1 ? 0 : r / tokens;
  const long long ni = pn == 1 ? 0 : r % tokens;
  return bi * pn + ni;
}

// Sum of `v` over the block; every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[THREADS / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) total += partial[w];
  __syncthreads();  // `partial` may be reused by a later call
  return total;
}

// 1 / sqrt(mean(x^2) + eps) of one row.
template <typename T>
__device__ __forceinline__ float inv_rms(const T* x, int d, float eps) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += THREADS) {
    const float v = to_f32(x[i]);
    ss += v * v;
  }
  return rsqrtf(block_sum(ss) / d + eps);
}

template <typename T>
__device__ void rms_norm_rope(const T* __restrict__ x, const float* __restrict__ weight,
                              const float* __restrict__ cos, const float* __restrict__ sin,
                              T* __restrict__ out, int d, int tokens, int table_b, float eps) {
  const long long r = blockIdx.x;
  const T* xr = x + r * d;
  T* yr = out + r * d;
  const float inv = inv_rms(xr, d, eps);
  if (cos == nullptr) {
    for (int i = threadIdx.x; i < d; i += THREADS) yr[i] = from_f32<T>(to_f32(xr[i]) * inv * weight[i]);
    return;
  }
  const long long t = param_row(r, tokens, table_b, tokens) * d;
  for (int p = threadIdx.x; p < d / 2; p += THREADS) {
    const int i = 2 * p;
    const float re = to_f32(xr[i]) * inv * weight[i];
    const float im = to_f32(xr[i + 1]) * inv * weight[i + 1];
    yr[i] = from_f32<T>(re * cos[t + i] - im * sin[t + i]);
    yr[i + 1] = from_f32<T>(im * cos[t + i + 1] + re * sin[t + i + 1]);
  }
}

template <typename T>
__device__ void rms_norm_modulate(const T* __restrict__ x, const float* __restrict__ weight,
                                  const float* __restrict__ scale,
                                  const float* __restrict__ shift, T* __restrict__ out, int d,
                                  int tokens, int scale_b, int scale_n, int shift_b, int shift_n,
                                  float eps) {
  const long long r = blockIdx.x;
  const T* xr = x + r * d;
  T* yr = out + r * d;
  const float inv = inv_rms(xr, d, eps);
  const float* sc = scale + param_row(r, tokens, scale_b, scale_n) * d;
  const float* sh = shift + param_row(r, tokens, shift_b, shift_n) * d;
  for (int i = threadIdx.x; i < d; i += THREADS) {
    float v = to_f32(xr[i]) * inv;
    if (weight != nullptr) v *= weight[i];
    yr[i] = from_f32<T>(v * (1.f + sc[i]) + sh[i]);
  }
}

template <typename T>
__device__ void gated_residual(const T* __restrict__ h, const T* __restrict__ y,
                               const float* __restrict__ gate, T* __restrict__ out, int d,
                               int tokens, int gate_b, int gate_n) {
  const long long r = blockIdx.x;
  const float* g = gate + param_row(r, tokens, gate_b, gate_n) * d;
  for (int i = threadIdx.x; i < d; i += THREADS) {
    out[r * d + i] = from_f32<T>(to_f32(h[r * d + i]) + to_f32(y[r * d + i]) * g[i]);
  }
}

}  // namespace

#define BLOCK_OPS(SUFFIX, T)                                                                   \
  extern "C" __global__ void __launch_bounds__(THREADS) rms_norm_rope_##SUFFIX(                \
      const T* x, const float* weight, const float* cos, const float* sin, T* out, int d,     \
      int tokens, int table_b, float eps) {                                                    \
    rms_norm_rope<T>(x, weight, cos, sin, out, d, tokens, table_b, eps);                      \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(THREADS) rms_norm_modulate_##SUFFIX(            \
      const T* x, const float* weight, const float* scale, const float* shift, T* out, int d, \
      int tokens, int scale_b, int scale_n, int shift_b, int shift_n, float eps) {             \
    rms_norm_modulate<T>(x, weight, scale, shift, out, d, tokens, scale_b, scale_n, shift_b,   \
                         shift_n, eps);                                                        \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(THREADS) gated_residual_##SUFFIX(               \
      const T* h, const T* y, const float* gate, T* out, int d, int tokens, int gate_b,       \
      int gate_n) {                                                                            \
    gated_residual<T>(h, y, gate, out, d, tokens, gate_b, gate_n);                             \
  }

BLOCK_OPS(f32, float)
BLOCK_OPS(bf16, __nv_bfloat16)
BLOCK_OPS(f16, __half)
