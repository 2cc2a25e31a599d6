//! Training mode for the model code: every op on a path candle can differentiate.
//!
//! Inference on the CPU runs fused kernels (`attention`, `transformer::cpu_kernels`, the
//! im2col `conv3d`) and candle-nn's `softmax_last_dim` / `rms_norm`, none of which record a
//! backward op: a loss computed through them would silently leave the weights without
//! gradients. While an [`AutogradScope`] is alive on a thread, the model code on that thread
//! takes the generic paths built from candle tensor ops (the ones CUDA uses), which candle's
//! `backward` handles. Inference never enters a scope, so its speed is unchanged.

use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread builds differentiable graphs.
pub fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Differentiable ops on this thread until dropped (scopes nest).
#[must_use = "the scope ends when this value is dropped"]
pub struct AutogradScope {
    previous: bool,
}

impl AutogradScope {
    pub fn enter() -> Self {
        let previous = ENABLED.with(|e| e.replace(true));
        Self { previous }
    }
}

impl Drop for AutogradScope {
    fn drop(&mut self) {
        ENABLED.with(|e| e.set(self.previous));
    }
}
