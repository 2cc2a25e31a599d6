//! Floating-point operation counts of the model's heavy work, for the achieved-TFLOP/s figures of
//! `turbovsr bench` (issue 8): the matmuls of a transformer evaluation, counted from its shapes,
//! and the VAE's 3D convolutions, counted as they run.
//!
//! A multiply-add is 2 FLOPs. Only the matrix products are counted (the work a GPU's tensor
//! cores do); norms, activations, RoPE, softmax and the per-timestep embedding MLPs (a handful of
//! rows, not one per token) are left out, so the achieved rate is the rate of that matrix work.
//!
//! The tally is per thread: a processor runs a window on one thread (the element's worker, the
//! benchmark's main thread), so a stage's count is [`take`] at its end.

use std::cell::Cell;

use crate::model::transformer::config::{ActivationFn, LtxTransformerConfig};

thread_local! {
    static TALLY: Cell<u64> = const { Cell::new(0) };
}

/// Adds `flops` to this thread's tally.
pub fn add(flops: u64) {
    TALLY.with(|t| t.set(t.get().wrapping_add(flops)));
}

/// Returns this thread's tally and resets it to zero.
pub fn take() -> u64 {
    TALLY.with(|t| t.replace(0))
}

/// FLOPs of a 3D convolution producing `out_elems` outputs (b * c_out * t * h * w), each a dot
/// product over `c_in * k_t * k_h * k_w` inputs.
pub fn conv3d(out_elems: usize, c_in: usize, kernel: (usize, usize, usize)) -> u64 {
    2 * out_elems as u64 * c_in as u64 * (kernel.0 * kernel.1 * kernel.2) as u64
}

/// The matmul FLOPs of one evaluation of the TurboVSR denoiser (LTX-Video transformer + the
/// condition embedder of DESIGN §3.2) on `batch` sequences of `tokens` video tokens and
/// `text_tokens` prompt tokens:
///
/// - `proj_in` (in_channels -> D), `cond_embedder` (cond_channels -> D), `proj_out`
///   (D -> out_channels), per video token;
/// - the caption projection (caption_channels -> D -> D), per prompt token;
/// - per block: self-attention q, k, v, out (4 D x D per token), scores Q K^T and P V
///   (2 x tokens x D per token), cross-attention q and out (2 D x D per token), k and v of the
///   prompt (2 D x D per prompt token), scores and P V over the prompt (2 x text_tokens x D per
///   token), and the feed-forward (D -> 4D, or 8D for the gated kinds, then 4D -> D).
pub fn denoiser_evaluation(
    cfg: &LtxTransformerConfig,
    cond_channels: usize,
    batch: usize,
    tokens: usize,
    text_tokens: usize,
) -> u64 {
    let d = cfg.inner_dim() as u64;
    let (n, l) = (tokens as u64, text_tokens as u64);
    let hidden = 4 * d;
    let ff_proj = match cfg.activation_fn {
        ActivationFn::Geglu | ActivationFn::Swiglu => 2 * hidden,
        _ => hidden,
    };
    let mac_per_block = n * 4 * d * d // attn1 q, k, v, out
        + 2 * n * n * d // attn1 Q K^T and P V
        + n * 2 * d * d // attn2 q, out
        + l * 2 * d * d // attn2 k, v
        + 2 * n * l * d // attn2 Q K^T and P V
        + n * d * ff_proj // ff in
        + n * hidden * d; // ff out
    let mac = cfg.num_layers as u64 * mac_per_block
        + n * (cfg.in_channels as u64 + cond_channels as u64 + cfg.out_channels() as u64) * d
        + l * (cfg.caption_channels as u64 * d + d * d);
    2 * batch as u64 * mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denoiser_evaluation_matches_a_hand_count() {
        // D = 2 heads x 4 = 8, one block, gelu FFN (hidden 32), 3 video tokens, 2 prompt tokens.
        let cfg: LtxTransformerConfig = serde_json::from_str(
            r#"{"in_channels": 5, "out_channels": 6, "num_attention_heads": 2,
                "attention_head_dim": 4, "cross_attention_dim": 8, "num_layers": 1,
                "caption_channels": 10, "activation_fn": "gelu-approximate"}"#,
        )
        .unwrap();
        // Multiply-adds, by hand:
        // attn1 projections 3 tokens x 4 x 8 x 8 = 768; scores + PV 2 x 3 x 3 x 8 = 144;
        // attn2 q/out 3 x 2 x 64 = 384; k/v 2 x 2 x 64 = 256; scores + PV 2 x 3 x 2 x 8 = 96;
        // ff 3 x 8 x 32 + 3 x 32 x 8 = 1536; proj_in/cond/proj_out 3 x (5 + 7 + 6) x 8 = 432;
        // caption projection 2 x (10 x 8 + 8 x 8) = 288. Sum 3904, x 2 FLOPs, x batch 2.
        assert_eq!(denoiser_evaluation(&cfg, 7, 2, 3, 2), 2 * 2 * 3904);
        // A gated FFN projects to twice the hidden size: + 3 x 8 x 32 multiply-adds.
        let geglu = LtxTransformerConfig {
            activation_fn: ActivationFn::Geglu,
            ..cfg
        };
        assert_eq!(denoiser_evaluation(&geglu, 7, 1, 3, 2), 2 * (3904 + 768));
    }

    #[test]
    fn conv3d_counts_a_dot_product_per_output() {
        // 2 x 4 x 1 x 5 x 5 outputs of a 3x3x3 kernel over 3 channels: 81 multiply-adds each.
        assert_eq!(conv3d(2 * 4 * 5 * 5, 3, (3, 3, 3)), 2 * 200 * 81);
    }

    #[test]
    fn the_tally_is_taken_and_reset() {
        take();
        add(5);
        add(7);
        assert_eq!(take(), 12);
        assert_eq!(take(), 0);
    }
}
