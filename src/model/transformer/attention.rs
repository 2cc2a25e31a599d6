//! Memory-bounded scaled dot-product attention (issue 4).
//!
//! `candle_nn::ops::sdpa` has no CPU path, and a materialized score matrix does not fit for the
//! sequences TurboVSR runs: a 1080p window is ~14,000 tokens, and 14k x 14k scores x 32 heads in f32
//! are 25 GB. Both paths below split the queries into chunks and, when a row of scores over all keys
//! is too large, the keys too, combining the key chunks with an online softmax (running max and sum,
//! as in FlashAttention). The largest temporary is bounded by `max_score_elems` values, whatever the
//! sequence length.
//!
//! - On the CPU, [`attention`] runs one fused kernel ([`FusedAttention`]): each worker thread takes
//!   (batch, head, 256-query tile) tasks and keeps the tile's scores in its L2 cache between the
//!   `Q K^T` gemm, the softmax and the `P V` gemm (the `gemm` crate candle itself uses, called
//!   single-threaded per tile), reading q, k and v in place and writing the output rows directly.
//!   It is f32 throughout; bf16 and f16 inputs are converted to f32 first.
//! - On CUDA, bf16 inputs with a head size of 64 or 128 run one fused kernel
//!   (`crate::model::cuda::flash_attention`, the `cuda` feature): tiles of queries against tiles
//!   of keys on the tensor cores, with the online softmax in f32 and no scores in device memory.
//! - Otherwise (other devices, f32 or f16 on CUDA, other head sizes, or
//!   `TURBOVSR_ATTENTION=portable`), [`generic_chunked_attention`] does the same from candle
//!   tensor ops. Scores, softmax and the running statistics are f32 whatever the input dtype; the
//!   two matmuls run in the input dtype.

use candle_core::{
    CpuStorage, CustomOp3, DType, Device, IndexOp, Layout, Result, Shape, Tensor, D,
};

#[cfg(target_arch = "x86_64")]
use crate::model::transformer::cpu_kernels::has_avx2;
use crate::model::transformer::cpu_kernels::{fast_exp_with, softmax_last_dim};
use crate::model::SharedOut;

/// Default budget for one block of attention scores, in elements (16 MiB of f32: under glibc's
/// largest mmap threshold, so the blocks are reused from the heap instead of being mapped and
/// zeroed by the kernel each time).
pub const DEFAULT_MAX_SCORE_ELEMS: usize = 4 << 20;

/// The budget on a GPU (128 Mi values: at most 512 MiB of f32 scores per block, plus the
/// softmax's copies of it). The CPU budget above would cut a 1080p tile of LTX-2B (32 heads, 7
/// latent frames of 32 x 32 tokens) into 399 chunks of 18 query rows per layer, each a chain of
/// about eight kernel launches around two thin gemms; this one makes 13 chunks of 585 rows.
pub const DEVICE_MAX_SCORE_ELEMS: usize = 128 << 20;

/// The score budget for attention on `device`: cache-sized on the CPU, where the fused kernel
/// tiles by it, [`DEVICE_MAX_SCORE_ELEMS`] elsewhere.
pub fn default_max_score_elems(device: &Device) -> usize {
    if device.is_cpu() {
        DEFAULT_MAX_SCORE_ELEMS
    } else {
        DEVICE_MAX_SCORE_ELEMS
    }
}

/// Fewest query rows per chunk before the keys are split too: below this the gemm calls become
/// too thin to run well, so splitting the keys (online softmax) is the better trade.
const MIN_QUERY_ROWS: usize = 16;

/// How [`chunked_attention`] splits the work: query rows per chunk and key columns per chunk.
/// `key >= number of keys` means one pass with a plain softmax per query chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub query: usize,
    pub key: usize,
}

impl ChunkSizes {
    /// Chunk sizes whose score block `heads * query * key` stays within `max_score_elems`, for
    /// `q_len` queries against `kv_len` keys. Prefers whole key rows (no online softmax).
    pub fn for_budget(heads: usize, q_len: usize, kv_len: usize, max_score_elems: usize) -> Self {
        let heads = heads.max(1);
        let q_len = q_len.max(1);
        let kv_len = kv_len.max(1);
        let budget = max_score_elems.max(1);
        let row = heads * kv_len;
        if row * MIN_QUERY_ROWS.min(q_len) <= budget {
            Self {
                query: (budget / row).clamp(1, q_len),
                key: kv_len,
            }
        } else {
            let query = MIN_QUERY_ROWS.min(q_len);
            Self {
                query,
                key: (budget / (heads * query)).clamp(1, kv_len),
            }
        }
    }
}

/// Scaled dot-product attention with bounded memory (see the module docs).
///
/// - `q`: (b, heads, q_len, d), `k`: (b, heads, kv_len, d), `v`: (b, heads, kv_len, dv); any strides
///   whose last dimension is contiguous (e.g. a transposed view of (b, len, heads, d)).
/// - `bias`: optional additive bias per key, (b, kv_len), added to the scores of every head and
///   query (diffusers turns the encoder attention mask into such a bias).
/// - `scale`: multiplies the scores (usually `1/sqrt(d)`).
///
/// Returns (b, heads, q_len, dv) in the dtype of `q`. On the CPU it is a transposed view of
/// (b, q_len, heads, dv) memory, so `transpose(1, 2)` of it is contiguous and costs no copy.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    max_score_elems: usize,
) -> Result<Tensor> {
    let (_, heads, q_len, _) = q.dims4()?;
    let kv_len = k.dim(2)?;
    if q.device().is_cpu() {
        check_shapes(q, k, v, bias)?;
        return fused_attention(
            q,
            k,
            v,
            bias,
            scale,
            fused_tiles(q_len, kv_len, max_score_elems),
        );
    }
    #[cfg(feature = "cuda")]
    if let Some(kernel) = device_attention().kernel() {
        if crate::model::cuda::flash_attention_supports(q, k, v) {
            return crate::model::cuda::flash_attention(q, k, v, bias, scale, kernel);
        }
    }
    let chunks = ChunkSizes::for_budget(heads, q_len, kv_len, max_score_elems);
    generic_chunked_attention(q, k, v, bias, scale, chunks)
}

/// The attention on CUDA for the inputs the fused kernels take (bf16, head size 64 or 128),
/// chosen by `TURBOVSR_ATTENTION`: `fused` (the default) or `mma`, the register-resident kernel;
/// `wmma`, the first fused kernel, its scores and output through shared memory; `portable`, the
/// chunked candle-ops path. `scripts/gpu-run.sh` compares them.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAttention {
    Portable,
    Wmma,
    Mma,
}

#[cfg(feature = "cuda")]
impl DeviceAttention {
    /// The fused kernel this choice runs, if any.
    fn kernel(self) -> Option<crate::model::cuda::FlashKernel> {
        use crate::model::cuda::FlashKernel;
        match self {
            Self::Portable => None,
            Self::Wmma => Some(FlashKernel::Wmma),
            Self::Mma => Some(FlashKernel::Mma),
        }
    }
}

/// The process's [`DeviceAttention`], read from `TURBOVSR_ATTENTION` once.
#[cfg(feature = "cuda")]
pub fn device_attention() -> DeviceAttention {
    static CHOICE: std::sync::OnceLock<DeviceAttention> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("TURBOVSR_ATTENTION").as_deref() {
        Ok("portable") => DeviceAttention::Portable,
        Ok("wmma") => DeviceAttention::Wmma,
        Ok("fused") | Ok("mma") | Err(_) => DeviceAttention::Mma,
        Ok(other) => {
            eprintln!(
                "turbovsr: TURBOVSR_ATTENTION={other:?} is not fused, mma, wmma or portable; \
                 using fused"
            );
            DeviceAttention::Mma
        }
    })
}

/// [`attention`] with explicit chunk sizes (the tests use small ones to exercise every path). On
/// the CPU they are the fused kernel's query tile and key block, per worker thread.
#[cfg(test)]
pub fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    chunks: ChunkSizes,
) -> Result<Tensor> {
    if q.device().is_cpu() {
        check_shapes(q, k, v, bias)?;
        if chunks.query == 0 || chunks.key == 0 {
            candle_core::bail!("attention: chunk sizes must be positive, got {chunks:?}");
        }
        return fused_attention(q, k, v, bias, scale, chunks);
    }
    generic_chunked_attention(q, k, v, bias, scale, chunks)
}

/// The shapes [`attention`] accepts (see there).
fn check_shapes(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    let (b, heads, _, d) = q.dims4()?;
    let (kb, kh, kv_len, kd) = k.dims4()?;
    let (vb, vh, v_len, _dv) = v.dims4()?;
    if (kb, kh, kd) != (b, heads, d) || (vb, vh, v_len) != (b, heads, kv_len) {
        candle_core::bail!(
            "attention: q {:?}, k {:?} and v {:?} do not agree (expected (b, heads, len, d))",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if let Some(bias) = bias {
        if bias.dims() != [b, kv_len] {
            candle_core::bail!(
                "attention: key bias has shape {:?}, expected (batch, keys) = ({b}, {kv_len})",
                bias.dims()
            );
        }
    }
    Ok(())
}

/// The fused CPU kernel ([`FusedAttention`]) on f32 copies of other dtypes (bf16 and f16 inputs
/// run in f32 throughout, which is also what the softmax needs).
fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    tiles: ChunkSizes,
) -> Result<Tensor> {
    let dtype = q.dtype();
    let f32_rows = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_dtype(DType::F32)?;
        if t.stride()[3] != 1 && t.dim(3)? > 1 {
            t.contiguous()
        } else {
            Ok(t)
        }
    };
    let bias = bias
        .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
        .transpose()?;
    let op = FusedAttention {
        scale: scale as f32,
        bias,
        tiles,
    };
    // (b, q_len, heads, dv) -> (b, heads, q_len, dv)
    f32_rows(q)?
        .apply_op3_no_bwd(&f32_rows(k)?, &f32_rows(v)?, &op)?
        .to_dtype(dtype)?
        .transpose(1, 2)
}

/// Chunked attention from candle tensor ops, for any device: query chunks, and key chunks with an
/// online softmax when a whole row of scores does not fit `chunks`. Returns (b, heads, q_len, dv),
/// contiguous.
pub fn generic_chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    chunks: ChunkSizes,
) -> Result<Tensor> {
    check_shapes(q, k, v, bias)?;
    let (b, _, q_len, _) = q.dims4()?;
    let kv_len = k.dim(2)?;
    if chunks.query == 0 || chunks.key == 0 {
        candle_core::bail!("attention: chunk sizes must be positive, got {chunks:?}");
    }
    let out_dtype = q.dtype();
    let mm_dtype = matmul_dtype(out_dtype, q.device());
    let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;

    let mut per_batch = Vec::with_capacity(b);
    for bi in 0..b {
        // (heads, len, d), the softmax scale folded into q (q_len*d work, not q_len*kv_len).
        // Contiguous per head: the inputs are head views of (b, len, heads, d) memory, and
        // CUDA's batched gemm needs each head's matrix dense (or densely transposed).
        let qb = (q.i(bi)?.to_dtype(DType::F32)? * scale)?
            .to_dtype(mm_dtype)?
            .contiguous()?;
        let kb = k.i(bi)?.to_dtype(mm_dtype)?.contiguous()?;
        let vb = v.i(bi)?.to_dtype(mm_dtype)?.contiguous()?;
        // (heads, d, kv_len)
        let kt = kb.t()?;
        let bias_b = bias.as_ref().map(|t| t.i(bi)).transpose()?;
        let mut outs = Vec::with_capacity(q_len.div_ceil(chunks.query));
        let mut start = 0;
        while start < q_len {
            let len = chunks.query.min(q_len - start);
            let qc = qb.narrow(1, start, len)?;
            let o = if chunks.key >= kv_len {
                one_pass(&qc, &kt, &vb, bias_b.as_ref())?
            } else {
                online_softmax(&qc, &kt, &vb, bias_b.as_ref(), chunks.key)?
            };
            outs.push(o.to_dtype(out_dtype)?);
            start += len;
        }
        // (heads, q_len, dv)
        per_batch.push(Tensor::cat(&outs, 1)?);
    }
    // (b, heads, q_len, dv)
    Tensor::stack(&per_batch, 0)
}

/// Query rows per task of the fused CPU kernel. With [`FUSED_KEY_BLOCK`] keys the f32 score tile
/// is 256 KiB and stays in a core's L2 (512 KiB on the dev machine's EPYC) between the two gemms
/// and the softmax; more rows amortize the packing of each key and value block over more work.
/// (Measured on the 2-core dev machine: 64 x 512 and 128 x 512 tiles took 10-15% more CPU time.)
pub const FUSED_QUERY_ROWS: usize = 256;

/// Keys per block of the fused CPU kernel; longer rows of keys go through the online softmax.
pub const FUSED_KEY_BLOCK: usize = 256;

/// Tile sizes of the fused CPU kernel for `threads` workers under a total score budget: every
/// worker holds one `query x key` tile.
fn fused_tiles(q_len: usize, kv_len: usize, max_score_elems: usize) -> ChunkSizes {
    let threads = candle_core::utils::get_num_threads().max(1);
    let query = FUSED_QUERY_ROWS.min(q_len.max(1));
    let key = (max_score_elems / (threads * query)).clamp(1, FUSED_KEY_BLOCK.min(kv_len.max(1)));
    ChunkSizes { query, key }
}

/// FlashAttention-style CPU attention over f32 tensors, as one candle op: every task is one
/// (batch, head, query tile); it computes the tile's scores against a block of keys with one
/// single-threaded gemm (the softmax scale folded into it), updates the running max and sum and
/// rescales its accumulator (online softmax), accumulates `P V` with a second gemm, and at the end
/// writes its normalized rows straight into a (b, q_len, heads, dv) output. The scores never leave
/// the worker's cache-sized tile, nothing is copied or permuted, and the tasks are spread over
/// `get_num_threads()` scoped threads.
struct FusedAttention {
    scale: f32,
    /// (b, kv_len) additive key bias, row-major.
    bias: Option<Vec<f32>>,
    tiles: ChunkSizes,
}

/// The part of a CPU f32 storage a layout addresses, with its four strides.
fn f32_view<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<(&'a [f32], [usize; 4])> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("fused attention: {what} must be f32");
    };
    let s = layout.stride();
    if s.len() != 4 || (s[3] != 1 && layout.dims()[3] > 1) {
        candle_core::bail!(
            "fused attention: {what} needs a contiguous last dimension, strides {s:?}"
        );
    }
    Ok((&data[layout.start_offset()..], [s[0], s[1], s[2], 1]))
}

/// One worker's scratch: a score tile, the accumulator and the running max and sum per row.
struct Scratch {
    /// (rows x key block) scores, then probabilities, column-major.
    scores: Vec<f32>,
    /// (rows x dv) unnormalized output, column-major.
    acc: Vec<f32>,
    /// Per row: running max, running sum, and two temporaries of `softmax_update`.
    max: Vec<f32>,
    sum: Vec<f32>,
    block: Vec<f32>,
    correction: Vec<f32>,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "turbovsr-fused-attention-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, qs) = f32_view(s1, l1, "q")?;
        let (k, ks) = f32_view(s2, l2, "k")?;
        let (v, vs) = f32_view(s3, l3, "v")?;
        let [b, heads, n, d] = <[usize; 4]>::try_from(l1.dims()).map_err(|_| {
            candle_core::Error::Msg(format!("fused attention: q has shape {:?}", l1.dims()))
        })?;
        let m = l2.dims()[2];
        let dv = l3.dims()[3];
        let ChunkSizes { query: bq, key: bk } = self.tiles;
        let q_tiles = n.div_ceil(bq);
        let tasks = b * heads * q_tiles;
        let mut out = vec![0f32; b * n * heads * dv];
        if tasks == 0 || m == 0 || dv == 0 {
            return Ok((CpuStorage::F32(out), (b, n, heads, dv).into()));
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let worker = || {
            let mut scratch = Scratch {
                scores: vec![0f32; bq * bk.min(m)],
                acc: vec![0f32; bq * dv],
                max: vec![0f32; bq],
                sum: vec![0f32; bq],
                block: vec![0f32; bq],
                correction: vec![0f32; bq],
            };
            loop {
                let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t >= tasks {
                    break;
                }
                let (bh, tile) = (t / q_tiles, t % q_tiles);
                let (bi, hi) = (bh / heads, bh % heads);
                let q0 = tile * bq;
                let rows = bq.min(n - q0);
                let bias = self.bias.as_ref().map(|bias| &bias[bi * m..(bi + 1) * m]);
                // SAFETY: the offsets stay inside the views (bi < b, hi < heads, q0 + rows <= n)
                // and the gemm calls read only within the layouts' shapes and strides.
                unsafe {
                    let qp = q.as_ptr().add(bi * qs[0] + hi * qs[1] + q0 * qs[2]);
                    let kp = k.as_ptr().add(bi * ks[0] + hi * ks[1]);
                    let vp = v.as_ptr().add(bi * vs[0] + hi * vs[1]);
                    let op = out_ptr
                        .get()
                        .add(bi * n * heads * dv + q0 * heads * dv + hi * dv);
                    attention_tile(
                        &mut scratch,
                        TileArgs {
                            q: qp,
                            q_rs: qs[2],
                            k: kp,
                            k_rs: ks[2],
                            v: vp,
                            v_rs: vs[2],
                            out: op,
                            out_rs: heads * dv,
                            rows,
                            m,
                            d,
                            dv,
                            bk,
                            scale: self.scale,
                            bias,
                        },
                    );
                }
            }
        };
        let threads = candle_core::utils::get_num_threads().clamp(1, tasks);
        if threads == 1 {
            worker();
        } else {
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(worker);
                }
                worker();
            });
        }
        Ok((CpuStorage::F32(out), (b, n, heads, dv).into()))
    }
}

/// One query tile of one head: raw pointers into q, k, v (at the tile's first row / the head's
/// first key) and the output (the tile's first row, the head's first column).
struct TileArgs<'a> {
    q: *const f32,
    q_rs: usize,
    k: *const f32,
    k_rs: usize,
    v: *const f32,
    v_rs: usize,
    out: *mut f32,
    out_rs: usize,
    rows: usize,
    m: usize,
    d: usize,
    dv: usize,
    bk: usize,
    scale: f32,
    bias: Option<&'a [f32]>,
}

/// # Safety
/// The pointers of `a` must address `rows` query rows of `d`, `m` key rows of `d`, `m` value rows
/// of `dv` and `rows` output rows of `dv` with the given row strides (columns contiguous), and no
/// other thread may touch those output elements.
///
/// The score tile and the accumulator are column-major (query rows contiguous): the gemm
/// microkernels then read and write them without packing or transposing, and the softmax
/// reductions over keys run down the columns as plain vector operations across rows.
unsafe fn attention_tile(s: &mut Scratch, a: TileArgs) {
    use gemm::{gemm, Parallelism};
    let (rows, dv) = (a.rows, a.dv);
    let mut key0 = 0;
    while key0 < a.m {
        let kl = a.bk.min(a.m - key0);
        let first = key0 == 0;
        // scores (rows x kl) = scale * Q K^T; K^T's column j is key row j
        gemm(
            rows,
            kl,
            a.d,
            s.scores.as_mut_ptr(),
            rows as isize,
            1,
            false,
            a.q,
            1,
            a.q_rs as isize,
            a.k.add(key0 * a.k_rs),
            a.k_rs as isize,
            1,
            0.0,
            a.scale,
            false,
            false,
            false,
            Parallelism::None,
        );
        softmax_update(
            &mut s.scores[..rows * kl],
            a.bias.map(|b| &b[key0..key0 + kl]),
            Rows {
                max: &mut s.max[..rows],
                sum: &mut s.sum[..rows],
                block: &mut s.block[..rows],
                correction: &mut s.correction[..rows],
            },
            &mut s.acc[..rows * dv],
            first,
        );
        // acc (rows x dv) (+)= P V
        gemm(
            rows,
            dv,
            kl,
            s.acc.as_mut_ptr(),
            rows as isize,
            1,
            !first,
            s.scores.as_ptr(),
            rows as isize,
            1,
            a.v.add(key0 * a.v_rs),
            1,
            a.v_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
        key0 += kl;
    }
    for (i, inv) in s.sum[..rows].iter().map(|&l| 1.0 / l).enumerate() {
        let dst = std::slice::from_raw_parts_mut(a.out.add(i * a.out_rs), dv);
        for (c, o) in dst.iter_mut().enumerate() {
            *o = s.acc[c * rows + i] * inv;
        }
    }
}

/// Per-row state of one tile: the running max and sum, and scratch for the block's max and the
/// accumulator's correction factor.
struct Rows<'a> {
    max: &'a mut [f32],
    sum: &'a mut [f32],
    block: &'a mut [f32],
    correction: &'a mut [f32],
}

/// Turns a column-major (rows x keys) score tile into unnormalized probabilities against the
/// running row max, updates the running max and sum, and rescales the accumulator rows by how much
/// the max grew (online softmax). `bias` (keys) is added to every row first.
fn softmax_update(scores: &mut [f32], bias: Option<&[f32]>, r: Rows, acc: &mut [f32], first: bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { softmax_update_avx2(scores, bias, r, acc, first) };
    }
    softmax_update_body::<false>(scores, bias, r, acc, first)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_update_avx2(
    scores: &mut [f32],
    bias: Option<&[f32]>,
    r: Rows,
    acc: &mut [f32],
    first: bool,
) {
    softmax_update_body::<true>(scores, bias, r, acc, first)
}

/// `FMA`: the caller is compiled with fused multiply-add (see [`fast_exp_with`]).
#[inline(always)]
fn softmax_update_body<const FMA: bool>(
    scores: &mut [f32],
    bias: Option<&[f32]>,
    r: Rows,
    acc: &mut [f32],
    first: bool,
) {
    let rows = r.max.len();
    let bias_of = |j: usize| bias.map_or(0.0, |b| b[j]);
    // block max per row, down the columns (`f32::max`: a compare-select written back as is
    // becomes a masked store, which is slow on AMD cores)
    r.block.fill(f32::NEG_INFINITY);
    for (j, col) in scores.chunks_exact(rows).enumerate() {
        let b = bias_of(j);
        for (m, &s) in r.block.iter_mut().zip(col) {
            *m = m.max(s + b);
        }
    }
    for i in 0..rows {
        let new_max = if first || r.block[i] > r.max[i] {
            r.block[i]
        } else {
            r.max[i]
        };
        r.correction[i] = if first {
            0.0
        } else {
            fast_exp_with::<FMA>(r.max[i] - new_max)
        };
        r.max[i] = new_max;
    }
    // probabilities and their row sums
    r.block.fill(0.0);
    for (j, col) in scores.chunks_exact_mut(rows).enumerate() {
        let b = bias_of(j);
        for ((p, sum), &m) in col.iter_mut().zip(r.block.iter_mut()).zip(r.max.iter()) {
            *p = fast_exp_with::<FMA>(*p + b - m);
            *sum += *p;
        }
    }
    if first {
        r.sum.copy_from_slice(r.block);
    } else {
        for ((l, &c), &b) in r
            .sum
            .iter_mut()
            .zip(r.correction.iter())
            .zip(r.block.iter())
        {
            *l = *l * c + b;
        }
        for col in acc.chunks_exact_mut(rows) {
            for (a, &c) in col.iter_mut().zip(r.correction.iter()) {
                *a *= c;
            }
        }
    }
}

/// Reference attention that materializes the full (b, heads, q_len, kv_len) score tensor in f32.
/// For tests and small inputs only.
#[cfg(test)]
pub fn naive_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, _, _, _) = q.dims4()?;
    let kv_len = k.dim(2)?;
    let q32 = q.to_dtype(DType::F32)?.contiguous()?;
    let k32 = k.to_dtype(DType::F32)?.contiguous()?;
    let v32 = v.to_dtype(DType::F32)?.contiguous()?;
    let mut scores = (q32.matmul(&k32.t()?.contiguous()?)? * scale)?;
    if let Some(bias) = bias {
        // (b, kv_len) -> (b, 1, 1, kv_len)
        let bias = bias.to_dtype(DType::F32)?.reshape((b, 1, 1, kv_len))?;
        scores = scores.broadcast_add(&bias)?;
    }
    let p = candle_nn::ops::softmax_last_dim(&scores)?;
    p.matmul(&v32)?.to_dtype(q.dtype())
}

/// The dtype the matmuls of `dtype` tensors run in on `device`.
pub(crate) fn matmul_dtype(dtype: DType, device: &Device) -> DType {
    match (dtype, device) {
        (DType::BF16, Device::Cpu) => DType::F32,
        (dt, _) => dt,
    }
}

/// Softmax over all keys at once: `q` (heads, n, d), `kt` (heads, d, m), `v` (heads, m, dv).
fn one_pass(q: &Tensor, kt: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    // (heads, n, m)
    let mut s = q.matmul(kt)?.to_dtype(DType::F32)?;
    if let Some(bias) = bias {
        // (m,) -> (1, 1, m)
        s = s.broadcast_add(&bias.reshape((1, 1, ()))?)?;
    }
    let p = softmax_last_dim(&s)?.to_dtype(v.dtype())?;
    // (heads, n, dv)
    p.matmul(v)?.to_dtype(DType::F32)
}

/// Keys in chunks of `key_chunk`, combined with a running max `m`, running sum `l` and an
/// unnormalized accumulator (FlashAttention's online softmax), all f32.
fn online_softmax(
    q: &Tensor,
    kt: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    key_chunk: usize,
) -> Result<Tensor> {
    let kv_len = v.dim(1)?;
    let mut state: Option<(Tensor, Tensor, Tensor)> = None;
    let mut start = 0;
    while start < kv_len {
        let len = key_chunk.min(kv_len - start);
        // (heads, n, len)
        let mut s = q.matmul(&kt.narrow(2, start, len)?)?.to_dtype(DType::F32)?;
        if let Some(bias) = bias {
            s = s.broadcast_add(&bias.narrow(0, start, len)?.reshape((1, 1, ()))?)?;
        }
        let vc = v.narrow(1, start, len)?;
        // (heads, n, 1)
        let chunk_max = s.max_keepdim(D::Minus1)?;
        state = Some(match state {
            None => {
                let p = s.broadcast_sub(&chunk_max)?.exp()?;
                let l = p.sum_keepdim(D::Minus1)?;
                let acc = p.to_dtype(vc.dtype())?.matmul(&vc)?.to_dtype(DType::F32)?;
                (chunk_max, l, acc)
            }
            Some((m, l, acc)) => {
                let m_new = m.maximum(&chunk_max)?;
                let p = s.broadcast_sub(&m_new)?.exp()?;
                // rescales what was accumulated against the old max
                let correction = (m - &m_new)?.exp()?;
                let l = ((l * &correction)? + p.sum_keepdim(D::Minus1)?)?;
                let pv = p.to_dtype(vc.dtype())?.matmul(&vc)?.to_dtype(DType::F32)?;
                let acc = (acc.broadcast_mul(&correction)? + pv)?;
                (m_new, l, acc)
            }
        });
        start += len;
    }
    match state {
        Some((_, l, acc)) => acc.broadcast_div(&l),
        None => candle_core::bail!("attention: no keys"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{lcg_tensor, relative_l2};

    /// (b, len, heads, d) -> (b, heads, len, d), a strided view as the transformer passes it.
    fn heads_view(t: &Tensor) -> Result<Tensor> {
        t.transpose(1, 2)
    }

    fn inputs(
        b: usize,
        h: usize,
        n: usize,
        m: usize,
        d: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let q = heads_view(&lcg_tensor(&[b, n, h, d], 1)?)?;
        let k = heads_view(&lcg_tensor(&[b, m, h, d], 2)?)?;
        let v = heads_view(&lcg_tensor(&[b, m, h, d + 3], 3)?)?;
        Ok((q, k, v))
    }

    fn mask_bias(b: usize, m: usize) -> Result<Tensor> {
        // batch 0: all keys; batch i: the last 2i keys masked with diffusers' -10000 bias
        let mut data = vec![0f32; b * m];
        for bi in 1..b {
            for j in m.saturating_sub(2 * bi)..m {
                data[bi * m + j] = -10000.0;
            }
        }
        Tensor::from_vec(data, (b, m), &Device::Cpu)
    }

    #[test]
    fn attention_chunked_matches_naive_for_all_chunkings() -> Result<()> {
        let (b, h, n, m, d) = (2, 3, 37, 29, 8);
        let (q, k, v) = inputs(b, h, n, m, d)?;
        let bias = mask_bias(b, m)?;
        let scale = 1.0 / (d as f64).sqrt();
        for bias in [None, Some(&bias)] {
            let want = naive_attention(&q, &k, &v, bias, scale)?;
            // uneven query and key chunks, single rows, and whole sequences
            for (query, key) in [
                (37, 29),
                (5, 29),
                (1, 1),
                (7, 4),
                (37, 10),
                (16, 28),
                (64, 64),
            ] {
                let chunks = ChunkSizes { query, key };
                // the fused CPU kernel and the tensor-op path every other device takes
                let fused = chunked_attention(&q, &k, &v, bias, scale, chunks)?;
                let generic = generic_chunked_attention(&q, &k, &v, bias, scale, chunks)?;
                for (path, got) in [("fused", fused), ("generic", generic)] {
                    assert_eq!(got.dims(), &[b, h, n, d + 3]);
                    let err = relative_l2(&got, &want)?;
                    assert!(
                        err < 1e-5,
                        "{path}, chunks ({query}, {key}), bias {}: rel L2 {err}",
                        bias.is_some()
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn attention_masked_keys_get_no_weight() -> Result<()> {
        // Masked keys carry huge values: any weight on them would show in the output.
        let (b, h, n, m, d) = (2, 2, 9, 11, 4);
        let (q, k, v) = inputs(b, h, n, m, d)?;
        let bias = mask_bias(b, m)?;
        let spike = Tensor::ones((b, h, m, d + 3), DType::F32, &Device::Cpu)?;
        let keep = (bias.ge(-1.0)?.to_dtype(DType::F32)?.reshape((b, 1, m, 1))? * 1.0)?;
        let poisoned = (v.broadcast_mul(&keep)? + spike.broadcast_mul(&(1.0 - keep)?)? * 1e4)?;
        let clean = chunked_attention(
            &q,
            &k,
            &v,
            Some(&bias),
            0.5,
            ChunkSizes { query: 4, key: 3 },
        )?;
        let dirty = chunked_attention(
            &q,
            &k,
            &poisoned,
            Some(&bias),
            0.5,
            ChunkSizes { query: 4, key: 3 },
        )?;
        assert!(relative_l2(&dirty, &clean)? < 1e-4);
        Ok(())
    }

    /// A 1080p tile of LTX-2B (32 heads; a 49-frame window is 7 latent frames, the tile 32 x 32
    /// tokens each) on a GPU runs in 13 query chunks of whole rows; the CPU's cache-sized budget
    /// would make 399.
    #[test]
    fn the_device_budget_runs_a_1080p_tile_in_few_chunks() {
        assert_eq!(
            default_max_score_elems(&Device::Cpu),
            DEFAULT_MAX_SCORE_ELEMS
        );
        let tokens = 7 * 32 * 32;
        let gpu = ChunkSizes::for_budget(32, tokens, tokens, DEVICE_MAX_SCORE_ELEMS);
        assert_eq!((gpu.query, gpu.key), (585, tokens));
        assert_eq!(tokens.div_ceil(gpu.query), 13);
        let cpu = ChunkSizes::for_budget(32, tokens, tokens, DEFAULT_MAX_SCORE_ELEMS);
        assert_eq!((cpu.query, cpu.key), (18, tokens));
        assert_eq!(tokens.div_ceil(cpu.query), 399);
    }

    #[test]
    fn attention_budget_bounds_the_score_block() -> Result<()> {
        // 14,000 tokens x 32 heads (a 1080p window of LTX-2B) in the default budget.
        let c = ChunkSizes::for_budget(32, 14_000, 14_000, DEFAULT_MAX_SCORE_ELEMS);
        assert!(32 * c.query * c.key <= DEFAULT_MAX_SCORE_ELEMS, "{c:?}");
        // the benchmark's 8 heads x 2,000 tokens take whole rows (no online softmax)
        let c = ChunkSizes::for_budget(8, 2_000, 2_000, DEFAULT_MAX_SCORE_ELEMS);
        assert_eq!(c.key, 2_000);
        // a budget too small for whole rows splits the keys
        let c = ChunkSizes::for_budget(32, 14_000, 14_000, 1 << 20);
        assert!(32 * c.query * c.key <= 1 << 20 && c.key < 14_000, "{c:?}");
        // small problems run in one block
        assert_eq!(
            ChunkSizes::for_budget(2, 10, 7, DEFAULT_MAX_SCORE_ELEMS),
            ChunkSizes { query: 10, key: 7 }
        );
        // the fused CPU kernel's tiles, one per worker thread, stay within the budget too
        let threads = candle_core::utils::get_num_threads().max(1);
        for (n, budget) in [
            (14_000, DEFAULT_MAX_SCORE_ELEMS),
            (14_000, 1 << 12),
            (5, 1 << 20),
        ] {
            let t = fused_tiles(n, n, budget);
            assert!(
                t.query >= 1 && t.key >= 1 && t.query <= n && t.key <= n,
                "{t:?}"
            );
            assert!(
                threads * t.query * t.key <= budget.max(threads * t.query),
                "{n} tokens, budget {budget}: {t:?}"
            );
        }
        // and the budget-driven entry point agrees with the naive one
        let (q, k, v) = inputs(1, 2, 50, 45, 4)?;
        let want = naive_attention(&q, &k, &v, None, 0.5)?;
        for budget in [1, 100, 2 * 45 * 3, 1 << 20] {
            let got = attention(&q, &k, &v, None, 0.5, budget)?;
            assert!(relative_l2(&got, &want)? < 1e-5, "budget {budget}");
        }
        Ok(())
    }

    #[test]
    fn attention_half_precision_close_to_f32() -> Result<()> {
        let (q, k, v) = inputs(2, 2, 21, 13, 8)?;
        let bias = mask_bias(2, 13)?;
        let want = naive_attention(&q, &k, &v, Some(&bias), 0.35)?;
        for dt in [DType::BF16, DType::F16] {
            let got = chunked_attention(
                &q.to_dtype(dt)?,
                &k.to_dtype(dt)?,
                &v.to_dtype(dt)?,
                Some(&bias),
                0.35,
                ChunkSizes { query: 8, key: 5 },
            )?;
            assert_eq!(got.dtype(), dt);
            let err = relative_l2(&got, &want)?;
            assert!(err < 2e-2, "{dt:?}: {err}");
        }
        Ok(())
    }

    #[test]
    fn attention_rejects_mismatched_shapes() -> Result<()> {
        let (q, k, v) = inputs(1, 2, 5, 4, 4)?;
        let bad_bias = Tensor::zeros((1, 5), DType::F32, &Device::Cpu)?;
        let err = attention(&q, &k, &v, Some(&bad_bias), 1.0, 1000).unwrap_err();
        assert!(err.to_string().contains("key bias"), "{err}");
        let err = attention(&q, &k.narrow(3, 0, 3)?, &v, None, 1.0, 1000).unwrap_err();
        assert!(err.to_string().contains("do not agree"), "{err}");
        Ok(())
    }
}
