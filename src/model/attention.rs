//! Memory-bounded scaled dot-product attention (issue 4).
//!
//! `candle_nn::ops::sdpa` has no CPU path, and a materialized score matrix does not fit for the
//! sequences TurboVSR runs: a 1080p window is ~14,000 tokens, and 14k x 14k scores x 32 heads in f32
//! are 25 GB. [`attention`] splits the queries into chunks, and when even one row of scores over all
//! keys is too large it also splits the keys and combines the chunks with an online softmax
//! (running max and sum, as in FlashAttention). The largest temporary is one score block of at most
//! `max_score_elems` values, whatever the sequence length.
//!
//! Scores, softmax and the running statistics are f32 whatever the input dtype; the two matmuls run
//! in the input dtype (bf16 on the CPU is computed in f32: candle's CPU gemm has no bf16 kernel).

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};

use crate::model::transformer::cpu_kernels::softmax_last_dim;

/// Default budget for one block of attention scores, in elements (16 MiB of f32: under glibc's
/// largest mmap threshold, so the blocks are reused from the heap instead of being mapped and
/// zeroed by the kernel each time).
pub const DEFAULT_MAX_SCORE_ELEMS: usize = 4 << 20;

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
/// Returns (b, heads, q_len, dv), contiguous, in the dtype of `q`.
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
    let chunks = ChunkSizes::for_budget(heads, q_len, kv_len, max_score_elems);
    chunked_attention(q, k, v, bias, scale, chunks)
}

/// [`attention`] with explicit chunk sizes (the tests use small ones to exercise every path).
pub fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
    chunks: ChunkSizes,
) -> Result<Tensor> {
    let (b, heads, q_len, d) = q.dims4()?;
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
    if chunks.query == 0 || chunks.key == 0 {
        candle_core::bail!("attention: chunk sizes must be positive, got {chunks:?}");
    }
    let out_dtype = q.dtype();
    let mm_dtype = matmul_dtype(out_dtype, q.device());
    let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;

    let mut per_batch = Vec::with_capacity(b);
    for bi in 0..b {
        // (heads, len, d) views; the softmax scale is folded into q (q_len*d work, not q_len*kv_len)
        let qb = (q.i(bi)?.to_dtype(DType::F32)? * scale)?.to_dtype(mm_dtype)?;
        let kb = k.i(bi)?.to_dtype(mm_dtype)?;
        let vb = v.i(bi)?.to_dtype(mm_dtype)?;
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

/// Reference attention that materializes the full (b, heads, q_len, kv_len) score tensor in f32.
/// For tests and small inputs only.
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
    use crate::model::relative_l2;

    fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        // A small deterministic generator so the tests do not depend on candle's RNG.
        let n: usize = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu)
    }

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
        let q = heads_view(&random(&[b, n, h, d], 1)?)?;
        let k = heads_view(&random(&[b, m, h, d], 2)?)?;
        let v = heads_view(&random(&[b, m, h, d + 3], 3)?)?;
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
                let got = chunked_attention(&q, &k, &v, bias, scale, ChunkSizes { query, key })?;
                assert_eq!(got.dims(), &[b, h, n, d + 3]);
                let err = relative_l2(&got, &want)?;
                assert!(
                    err < 1e-5,
                    "chunks ({query}, {key}), bias {}: rel L2 {err}",
                    bias.is_some()
                );
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
