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

#include "convert.cuh"

using namespace nvcuda;

namespace {

using turbovsr::from_f32;

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

// ---------------------------------------------------------------------------------------------
// The same attention with the products as raw `mma.sync.m16n8k16` instructions, whose register
// layouts PTX documents, so that the scores, the probabilities and the output accumulator stay in
// registers (FlashAttention-2's scheme) instead of going through shared memory as with wmma:
//
// - a warp owns 16 query rows; its Q fragments are loaded once from device memory;
// - per tile of 64 keys the block stages K and V in shared memory; each warp computes S = Q K^T
//   as 8 accumulators of 16 x 8 (K read as 32-bit pairs, conflict-free with a 144-byte pitch);
// - the accumulator layout of two adjacent 16 x 8 score tiles is the A-operand layout of one
//   16 x 16 probability tile, so P goes from S to the next product without leaving registers;
// - V's B operand comes from row-major shared memory through `ldmatrix.trans`;
// - a thread holds 2 rows (g and g + 8 of its warp's 16, g = lane / 4) and 2 columns of each
//   8-column tile; the 4 threads of a row reduce its max with two shuffles, and its sum once at
//   the end.
namespace {

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// d += a * b for one 16 x 8 x 16 tile, f32 accumulation.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                 uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 x 8 16-bit matrices from shared memory, transposed: lane l gives the address of row
// l % 8 of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename T, int D>
__device__ __forceinline__ void flash_attention_mma(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const float* __restrict__ bias, T* __restrict__ out, int heads, int q_len, int kv_len,
    long long q_sb, long long q_sh, long long q_sn, long long k_sb, long long k_sh,
    long long k_sn, long long v_sb, long long v_sh, long long v_sn, float scale) {
  constexpr int WARPS = 4;
  constexpr int BR = 16 * WARPS;  // query rows per block
  constexpr int BC = 64;          // keys per tile
  constexpr int VEC = 8;          // values per 16-byte load
  constexpr int LD = D + 8;       // shared row pitch: 16-byte aligned rows, no bank conflicts
  constexpr int KS = D / 16;      // k-steps of Q K^T
  constexpr int NS = BC / 8;      // 8-key score tiles
  constexpr int NO = D / 8;       // 8-column output tiles
  static_assert(D % 16 == 0 && NO % 2 == 0, "head size a multiple of 16");

  __shared__ __align__(128) T k_tile[BC * LD];
  __shared__ __align__(128) T v_tile[BC * LD];

  const int bh = blockIdx.y;
  const int b = bh / heads;
  const int h = bh % heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane >> 2;   // row within the 8-row half
  const int tg = lane & 3;   // column pair within an 8-column tile
  const int row0 = blockIdx.x * BR + warp * 16 + g;  // this thread's rows: row0, row0 + 8
  const T* qb = q + b * q_sb + h * q_sh;
  const T* kb = k + b * k_sb + h * k_sh;
  const T* vb = v + b * v_sb + h * v_sh;
  const float* bias_b = bias == nullptr ? nullptr : bias + (long long)b * kv_len;

  // Q as A fragments (rows row0 and row0 + 8; columns 2 tg, 2 tg + 1 and 8 further).
  uint32_t qf[KS][4];
  {
    const bool in0 = row0 < q_len;
    const bool in1 = row0 + 8 < q_len;
    const T* r0 = qb + (long long)row0 * q_sn;
    const T* r1 = qb + (long long)(row0 + 8) * q_sn;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      const int c = kk * 16 + 2 * tg;
      qf[kk][0] = in0 ? *reinterpret_cast<const uint32_t*>(r0 + c) : 0u;
      qf[kk][1] = in1 ? *reinterpret_cast<const uint32_t*>(r1 + c) : 0u;
      qf[kk][2] = in0 ? *reinterpret_cast<const uint32_t*>(r0 + c + 8) : 0u;
      qf[kk][3] = in1 ? *reinterpret_cast<const uint32_t*>(r1 + c + 8) : 0u;
    }
  }

  float o[NO][4];
#pragma unroll
  for (int j = 0; j < NO; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F};
  float l_part[2] = {0.f, 0.f};  // this thread's share of each row's sum
  const float scale_log2 = scale * LOG2E;

  for (int k0 = 0; k0 < kv_len; k0 += BC) {
    __syncthreads();  // every warp is done with the previous tiles
    for (int i = threadIdx.x; i < BC * (D / VEC); i += WARPS * 32) {
      const int r = i / (D / VEC);
      const int c = (i % (D / VEC)) * VEC;
      uint4 kval = make_uint4(0, 0, 0, 0);
      uint4 vval = make_uint4(0, 0, 0, 0);
      if (k0 + r < kv_len) {
        kval = *reinterpret_cast<const uint4*>(kb + (long long)(k0 + r) * k_sn + c);
        vval = *reinterpret_cast<const uint4*>(vb + (long long)(k0 + r) * v_sn + c);
      }
      *reinterpret_cast<uint4*>(k_tile + r * LD + c) = kval;
      *reinterpret_cast<uint4*>(v_tile + r * LD + c) = vval;
    }
    __syncthreads();

    // S = Q K^T: tile n covers keys 8 n .. 8 n + 7; B fragment = K row (8 n + g), columns 2 tg.
    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const T* krow = k_tile + (n * 8 + g) * LD + 2 * tg;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + kk * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + kk * 16 + 8);
        mma16816<T>(s[n], qf[kk], b0, b1);
      }
    }

    // Online softmax in base 2; element e of a tile: row g (e < 2) or g + 8, key 8 n + 2 tg + e % 2.
    float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + n * 8 + 2 * tg + (e & 1);
        float x = -CUDART_INF_F;
        if (key < kv_len) {
          x = s[n][e] * scale_log2;
          if (bias_b != nullptr) x += bias_b[key] * LOG2E;
        }
        s[n][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    }
    float alpha[2];
    float m_ref[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m_run[r], tile_max[r]);
      // A row whose keys so far are all -inf (a bias can do that) has no maximum to subtract.
      m_ref[r] = m_new == -CUDART_INF_F ? 0.f : m_new;
      alpha[r] = exp2f(m_run[r] - m_ref[r]);
      m_run[r] = m_new;
      l_part[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }

    // O += P V, 16 keys at a time: score tiles 2 kk and 2 kk + 1 are the A fragment.
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      float p[2][4];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          p[t][e] = exp2f(s[2 * kk + t][e] - m_ref[e >> 1]);
          l_part[e >> 1] += p[t][e];
        }
      }
      const uint32_t pa[4] = {pack2<T>(p[0][0], p[0][1]), pack2<T>(p[0][2], p[0][3]),
                              pack2<T>(p[1][0], p[1][1]), pack2<T>(p[1][2], p[1][3])};
      // ldmatrix.trans: matrices (keys 16 kk + 0..7 | 8..15) x (columns 8 j | 8 (j + 1)).
      const int mat = lane >> 3;
      const T* vrow = v_tile + (kk * 16 + (mat & 1) * 8 + (lane & 7)) * LD + (mat >> 1) * 8;
#pragma unroll
      for (int j = 0; j < NO; j += 2) {
        uint32_t vb4[4];
        ldmatrix_x4_trans(vb4, vrow + j * 8);
        mma16816<T>(o[j], pa, vb4[0], vb4[1]);
        mma16816<T>(o[j + 1], pa, vb4[2], vb4[3]);
      }
    }
  }

  // The rows' sums over their 4 threads; out[b, q, h, :] = O / l (zeros for a row with no key).
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_part[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.f ? 1.f / l : 0.f;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int qr = row0 + 8 * r;
    if (qr >= q_len) continue;
    T* dst = out + (((long long)b * q_len + qr) * heads + h) * D + 2 * tg;
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      *reinterpret_cast<uint32_t*>(dst + j * 8) =
          pack2<T>(o[j][2 * r] * inv[r], o[j][2 * r + 1] * inv[r]);
    }
  }
}

}  // namespace

#define FLASH_ATTENTION_MMA_KERNEL(NAME, T, D)                                                  \
  extern "C" __global__ void __launch_bounds__(128) NAME(                                      \
      const T* q, const T* k, const T* v, const float* bias, T* out, int heads, int q_len,     \
      int kv_len, long long q_sb, long long q_sh, long long q_sn, long long k_sb,              \
      long long k_sh, long long k_sn, long long v_sb, long long v_sh, long long v_sn,          \
      float scale) {                                                                           \
    flash_attention_mma<T, D>(q, k, v, bias, out, heads, q_len, kv_len, q_sb, q_sh, q_sn,      \
                              k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, scale);                      \
  }

FLASH_ATTENTION_MMA_KERNEL(flash_attention_mma_bf16_d64, __nv_bfloat16, 64)
FLASH_ATTENTION_MMA_KERNEL(flash_attention_mma_f16_d64, __half, 64)
FLASH_ATTENTION_MMA_KERNEL(flash_attention_mma_bf16_d128, __nv_bfloat16, 128)
FLASH_ATTENTION_MMA_KERNEL(flash_attention_mma_f16_d128, __half, 128)
