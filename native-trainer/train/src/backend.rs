//! The operations a training backend provides. The LoRA forward and backward pass in `model.rs`
//! is written once against this trait; `cpu.rs` is the reference implementation, and a CUDA
//! backend implements the same operations on device buffers — there is no second trainer.
//!
//! Buffers are flat f32 arrays; matrices are row-major (rows, cols). Gradient operations
//! *accumulate* (`+=`) into their outputs unless they say otherwise, so a backward pass can sum
//! the contributions of several branches without temporaries.

use vicugna_core::weights::Matrix;
use vicugna_core::Result;

pub use vicugna_core::layer::{Heads, Rope};

pub trait TrainBackend {
    /// An f32 buffer resident on the backend.
    type Buf;
    /// A frozen base matrix in its stored format (F32, F16, BF16, Q8_0, Q4_0, …): QLoRA keeps
    /// it quantised and dequantises on the fly.
    type Frozen;

    fn name(&self) -> &'static str;
    fn frozen(&self, m: &Matrix) -> Result<Self::Frozen>;
    /// Bytes the frozen matrix occupies on the backend.
    fn frozen_bytes(&self, w: &Self::Frozen) -> usize;
    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, v: &[f32]) -> Self::Buf;
    fn download(&self, b: &Self::Buf) -> Vec<f32>;
    fn len(&self, b: &Self::Buf) -> usize;
    fn fill_zero(&self, b: &mut Self::Buf);
    /// dst = src (same length).
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// x += y.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf);

    /// out[t] = table[tokens[t]].
    fn embed(&self, out: &mut Self::Buf, table: &Self::Frozen, tokens: &[u32]);
    /// out (n, out) = x (n, in) · Wᵀ.
    fn linear(&self, out: &mut Self::Buf, x: &Self::Buf, w: &Self::Frozen, n: usize);
    /// dx (n, in) += dy (n, out) · W.
    fn linear_back(&self, dx: &mut Self::Buf, dy: &Self::Buf, w: &Self::Frozen, n: usize);
    /// c (m, n) = beta·c + alpha·op(a)·op(b), where op(a) is (m, k) and op(b) is (k, n); `ta` /
    /// `tb` mean a / b are stored transposed, i.e. as (k, m) / (n, k).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        ta: bool,
        b: &Self::Buf,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        beta: f32,
    );

    /// out = x / rms(x) · w per row of width `w.len()`.
    fn rmsnorm(&self, out: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, eps: f32);
    /// dx += ∂(rmsnorm)/∂x · dy (the norm weights are frozen).
    fn rmsnorm_back(&self, dx: &mut Self::Buf, dy: &Self::Buf, x: &Self::Buf, w: &Self::Buf, eps: f32);
    /// Rotate each head of every row in place (row t at position t); `inverse` rotates by the
    /// negative angle, which is the backward pass of a rotation.
    fn rope(&self, x: &mut Self::Buf, width: usize, head_dim: usize, rope: &Rope, inverse: bool);
    /// Causal grouped-query attention of n rows (within `h.window` when set, scores scaled by
    /// `h.scale`): out (n, heads·hd); `probs` (heads, n, n) keeps the softmax (zero outside each
    /// row's window) for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Buf,
        probs: &mut Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        n: usize,
        h: Heads,
    );
    /// dq, dk, dv += the gradients of `attention` given dout.
    #[allow(clippy::too_many_arguments)]
    fn attention_back(
        &self,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
        dout: &Self::Buf,
        probs: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        n: usize,
        h: Heads,
    );
    /// out = silu(g) · u.
    fn silu_mul(&self, out: &mut Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// out = gelu_tanh(g) · u (Gemma's GeGLU).
    fn gelu_mul(&self, out: &mut Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// dg = dh · u · gelu_tanh'(g), du = dh · gelu_tanh(g) (overwritten, not accumulated).
    fn gelu_mul_back(&self, dg: &mut Self::Buf, du: &mut Self::Buf, dh: &Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// x *= s.
    fn scale(&self, x: &mut Self::Buf, s: f32);
    /// dg = dh · u · silu'(g), du = dh · silu(g) (overwritten, not accumulated).
    fn silu_mul_back(&self, dg: &mut Self::Buf, du: &mut Self::Buf, dh: &Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// out = x · mask / (1 - p), the mask drawn from a counter-based generator keyed by `key`,
    /// so the same key gives the same mask on every backend and after a resume.
    fn dropout(&self, out: &mut Self::Buf, x: &Self::Buf, p: f32, key: u64);

    /// The language-model head and cross-entropy, fused so the (n, vocab) logits never exist at
    /// once: for each row t with `targets[t] >= 0`, adds -log softmax(x_t Wᵀ)[target] to the
    /// returned sum and `grad_scale` · ∂/∂x_t of it to dx. Rows without a target cost nothing.
    fn lm_head_loss(
        &self,
        dx: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Frozen,
        targets: &[i32],
        grad_scale: f32,
    ) -> f64;

    /// Σ g² (for gradient clipping), accumulated in f64.
    fn sum_squares(&self, g: &Self::Buf) -> f64;
    /// torch.optim.AdamW's update of p with gradient `scale · g` at step `t` (1-based).
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        o: &AdamW,
        lr: f32,
        t: u64,
        scale: f32,
    );
}

/// AdamW hyper-parameters (torch's defaults; transformers' Trainer uses weight_decay 0).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}
