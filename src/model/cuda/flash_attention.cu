// Fused scaled dot-product attention for CUDA (issue 8): one kernel does Q K^T, the softmax and
// P V for a tile of query rows, with the FlashAttention online softmax over key tiles, so the
// scores never reach device memory. The portable path (src/model/attention.rs) runs the same
// math as a chain of candle kernels around two gemms per chunk, with f32 score blocks in memory.
//
// Layout and precision:
// - q, k, v: (batch, heads, len, D) with any strides for the first three dimensions and D
//   contiguous (the attention's inputs are head views of (batch, len, heads, D) memory), bf16 or
//   f16. Row starts must be 16-byte aligned (the loads move 8 values at a time).
// - bias: optional f32 (batch, kv_len), added to every head's and query's scores (the encoder
//   attention mask as diffusers turns it into a bias); null for none.
// - out: (batch, q_len, heads, D), contiguous, in the input dtype.
// - The products run on the tensor cores (wmma 16x16x16, f32 accumulation); scores, the running
//   max and sum, and the output accumulator stay f32, as in the portable path.
//
// Work split: a block of WARPS warps takes 16 * WARPS query rows of one (batch, head); each warp
// owns 16 rows. Key/value tiles of BC rows are staged in shared memory by the whole block. Per
// tile a warp computes its 16 x BC scores, turns them into probabilities (two lanes per row),
// rescales its output rows and adds P V. wmma leaves the register layout of a fragment
// unspecified, so the scores and the output accumulator go through shared memory, where any
// lane can reach any element.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;

namespace {

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half(x);
}

constexpr float LOG2E = 1.4426950408889634f;

template <typename T, int D, int WARPS>
__device__ __forceinline__ void flash_attention(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const float* __restrict__ bias, T* __restrict__ out, int heads, int q_len, int kv_len,
    long long q_sb, long long q_sh, long long q_sn, long long k_sb, long long k_sh,
    long long k_sn, long long v_sb, long long v_sh, long long v_sn, float scale) {
  constexpr int BR = 16 * WARPS;  // query rows per block
  constexpr int BC = 32;          // keys per tile
  constexpr int VEC = 8;          // values per 16-byte load
  // Row pitches in elements, padded against bank conflicts; wmma wants a multiple of 8 (16-bit)
  // or 4 (f32) and 32-byte aligned fragment starts, which these give for D in {64, 128}.
  constexpr int LD_T = D + 8;
  constexpr int LD_S = BC + 4;
  constexpr int LD_P = 2 * LD_S;  // P overwrites its own score row, in 16-bit values
  constexpr int LD_O = D + 4;
  static_assert(D % 16 == 0 && BC % 16 == 0, "wmma tiles are 16 x 16");
  static_assert(BR * LD_T * sizeof(T) <= BR * LD_O * sizeof(float), "Q is staged in O");

  __shared__ __align__(128) T k_tile[BC * LD_T];
  __shared__ __align__(128) T v_tile[BC * LD_T];
  __shared__ __align__(128) float s_tile[BR * LD_S];
  __shared__ __align__(128) float o_tile[BR * LD_O];

  const int bh = blockIdx.y;
  const int b = bh / heads;
  const int h = bh % heads;
  const int q0 = blockIdx.x * BR;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const T* qb = q + b * q_sb + h * q_sh;
  const T* kb = k + b * k_sb + h * k_sh;
  const T* vb = v + b * v_sb + h * v_sh;
  const float* bias_b = bias == nullptr ? nullptr : bias + (long long)b * kv_len;

  // Q: staged through the output tile's memory into registers, kept there for every key tile.
  T* q_stage = reinterpret_cast<T*>(o_tile);
  for (int i = threadIdx.x; i < BR * (D / VEC); i += WARPS * 32) {
    const int r = i / (D / VEC);
    const int c = (i % (D / VEC)) * VEC;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (q0 + r < q_len) val = *reinterpret_cast<const uint4*>(qb + (q0 + r) * q_sn + c);
    *reinterpret_cast<uint4*>(q_stage + r * LD_T + c) = val;
  }
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> q_frag[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wmma::load_matrix_sync(q_frag[kk], q_stage + warp * 16 * LD_T + kk * 16, LD_T);
  __syncthreads();

  float* o_warp = o_tile + warp * 16 * LD_O;
  float* s_warp = s_tile + warp * 16 * LD_S;
  T* p_warp = reinterpret_cast<T*>(s_warp);
  for (int i = lane; i < 16 * D; i += 32) o_warp[(i / D) * LD_O + i % D] = 0.f;

  // Two lanes per query row: `row` within the warp's 16, `half` of the tile's columns (and of
  // the output's). Both lanes of a pair keep the row's running max and sum.
  const int row = lane >> 1;
  const int half = lane & 1;
  const float scale_log2 = scale * LOG2E;
  float m_run = -CUDART_INF_F;
  float l_run = 0.f;

  for (int k0 = 0; k0 < kv_len; k0 += BC) {
    __syncthreads();  // every warp is done with the previous K and V tiles
    for (int i = threadIdx.x; i < BC * (D / VEC); i += WARPS * 32) {
      const int r = i / (D / VEC);
      const int c = (i % (D / VEC)) * VEC;
      uint4 kval = make_uint4(0, 0, 0, 0);
      uint4 vval = make_uint4(0, 0, 0, 0);
      if (k0 + r < kv_len) {
        kval = *reinterpret_cast<const uint4*>(kb + (k0 + r) * k_sn + c);
        vval = *reinterpret_cast<const uint4*>(vb + (k0 + r) * v_sn + c);
      }
      *reinterpret_cast<uint4*>(k_tile + r * LD_T + c) = kval;
      *reinterpret_cast<uint4*>(v_tile + r * LD_T + c) = vval;
    }
    __syncthreads();

    // S = Q K^T for the warp's 16 rows (K^T is K's rows read column-major).
#pragma unroll
    for (int j = 0; j < BC / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> k_frag;
        wmma::load_matrix_sync(k_frag, k_tile + j * 16 * LD_T + kk * 16, LD_T);
        wmma::mma_sync(acc, q_frag[kk], k_frag, acc);
      }
      wmma::store_matrix_sync(s_warp + j * 16, acc, LD_S, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax in base 2: scores scaled by scale * log2(e), keys past the end masked.
    constexpr int COLS = BC / 2;
    float p[COLS];
    float tile_max = -CUDART_INF_F;
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
      const int col = half * COLS + c;
      float x = -CUDART_INF_F;
      if (k0 + col < kv_len) {
        x = s_warp[row * LD_S + col] * scale_log2;
        if (bias_b != nullptr) x += bias_b[k0 + col] * LOG2E;
      }
      p[c] = x;
      tile_max = fmaxf(tile_max, x);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m_run, tile_max);
    // A row whose keys so far are all -inf (a bias can do that) has no maximum to subtract.
    const float m_ref = m_new == -CUDART_INF_F ? 0.f : m_new;
    const float alpha = exp2f(m_run - m_ref);
    float tile_sum = 0.f;
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
      p[c] = exp2f(p[c] - m_ref);
      tile_sum += p[c];
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    l_run = l_run * alpha + tile_sum;
    m_run = m_new;
    __syncwarp();  // every lane has read its scores before P overwrites them
#pragma unroll
    for (int c = 0; c < COLS; ++c) p_warp[row * LD_P + half * COLS + c] = from_f32<T>(p[c]);
    float* o_row = o_warp + row * LD_O + half * (D / 2);
#pragma unroll
    for (int c = 0; c < D / 2; ++c) o_row[c] *= alpha;
    __syncwarp();

    // O += P V
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_warp + j * 16, LD_O, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p_frag;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> v_frag;
        wmma::load_matrix_sync(p_frag, p_warp + kk * 16, LD_P);
        wmma::load_matrix_sync(v_frag, v_tile + kk * 16 * LD_T + j * 16, LD_T);
        wmma::mma_sync(acc, p_frag, v_frag, acc);
      }
      wmma::store_matrix_sync(o_warp + j * 16, acc, LD_O, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out[b, q, h, :] = O / l. A row with no key left (every bias -inf) is written as zeros.
  const int qr = q0 + warp * 16 + row;
  if (qr < q_len) {
    const float inv = l_run > 0.f ? 1.f / l_run : 0.f;
    const float* o_row = o_warp + row * LD_O + half * (D / 2);
    T* dst = out + (((long long)b * q_len + qr) * heads + h) * D + half * (D / 2);
#pragma unroll
    for (int c = 0; c < D / 2; ++c) dst[c] = from_f32<T>(o_row[c] * inv);
  }
}

}  // namespace

// One entry point per (dtype, head dim). 64 (LTX-Video 2B) runs 4 warps per block; 128 runs 2,
// which keeps the static shared memory under 48 KiB.
#define FLASH_ATTENTION_KERNEL(NAME, T, D, WARPS)                                               \
  extern "C" __global__ void __launch_bounds__(WARPS * 32) NAME(                               \
      const T* q, const T* k, const T* v, const float* bias, T* out, int heads, int q_len,     \
      int kv_len, long long q_sb, long long q_sh, long long q_sn, long long k_sb,              \
      long long k_sh, long long k_sn, long long v_sb, long long v_sh, long long v_sn,          \
      float scale) {                                                                           \
    flash_attention<T, D, WARPS>(q, k, v, bias, out, heads, q_len, kv_len, q_sb, q_sh, q_sn, \
                                 k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, scale);                   \
  }

FLASH_ATTENTION_KERNEL(flash_attention_bf16_d64, __nv_bfloat16, 64, 4)
FLASH_ATTENTION_KERNEL(flash_attention_f16_d64, __half, 64, 4)
FLASH_ATTENTION_KERNEL(flash_attention_bf16_d128, __nv_bfloat16, 128, 2)
FLASH_ATTENTION_KERNEL(flash_attention_f16_d128, __half, 128, 2)
