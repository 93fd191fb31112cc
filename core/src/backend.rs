//! The small set of LLaMA-sized operations a compute backend provides. The model in `model.rs`
//! is written once against this trait; the CPU backend (`cpu.rs`) is the reference, and the wgpu
//! and training backends implement the same operations.
//!
//! Activations are (n_tokens, width) row-major f32 matrices; a decode step is n_tokens = 1.

use crate::config::Config;
use crate::weights::Matrix;
use crate::Result;

/// One adapter's low-rank pair for one projection, as uploaded: `a` is (r, in), `b` is (out, r).
pub struct LoraPair<'a> {
    pub r: usize,
    pub a: &'a [f32],
    pub b: &'a [f32],
}

pub use crate::layer::{Heads, Rope};

pub trait Backend {
    /// A frozen weight matrix resident on the backend (any stored format).
    type Weight;
    /// A 1-D f32 parameter (norm weights).
    type Vector;
    /// One adapter's (A, B) for one projection.
    type Lora;
    /// (n_tokens, width) f32 activations.
    type Act;
    /// Keys and values of every layer for up to `max_seq` positions.
    type Cache;

    fn name(&self) -> &'static str;
    fn load_matrix(&self, m: &Matrix) -> Result<Self::Weight>;
    fn load_vector(&self, v: &[f32]) -> Result<Self::Vector>;
    fn load_lora(&self, l: &LoraPair) -> Result<Self::Lora>;
    fn new_cache(&self, cfg: &Config, max_seq: usize) -> Result<Self::Cache>;
    /// An independent copy of a cache (beam search forks sequences).
    fn copy_cache(&self, src: &Self::Cache) -> Result<Self::Cache>;
    /// Activations of this shape. Contents are unspecified (a GPU backend reuses buffers): every
    /// operation writes its whole output before anything reads it.
    fn act(&self, n_tokens: usize, width: usize) -> Self::Act;
    fn act_from_host(&self, n_tokens: usize, width: usize, data: &[f32]) -> Self::Act;
    /// Read an activation back to the host: the one read-back every backend implements. A
    /// browser's WebGPU cannot block the thread until the GPU is done, so it is async; native
    /// backends finish at once and [`Backend::to_host`] drives them without an executor. The
    /// futures are not `Send`: a wasm backend's are not.
    #[allow(async_fn_in_trait)]
    async fn read(&self, x: &Self::Act) -> Result<Vec<f32>>;
    /// Index of the largest value of a single-row activation (first on ties): greedy decoding
    /// without reading the logits back. The default reads them back.
    #[allow(async_fn_in_trait)]
    async fn argmax(&self, x: &Self::Act) -> Result<u32> {
        let v = self.read(x).await?;
        Ok(v.iter().enumerate().fold(0usize, |b, (i, &a)| if a > v[b] { i } else { b }) as u32)
    }
    /// Draw a token from a single-row activation of logits: temperature, top-k, top-p in
    /// transformers' order, then the uniform `u` walks the distribution in index order. The
    /// default reads the logits back and samples on the host.
    #[allow(async_fn_in_trait)]
    async fn sample(&self, x: &Self::Act, temperature: f32, top_k: usize, top_p: f32, u: f32) -> Result<u32> {
        let mut v = self.read(x).await?;
        Ok(crate::sample::sample_host(&mut v, temperature, top_k, top_p, u))
    }
    /// `read`, blocking: native backends only (in a browser it is an error, never a hang).
    fn to_host(&self, x: &Self::Act) -> Result<Vec<f32>> {
        blocking(self.read(x))
    }
    /// Keep only the last row (the position whose logits we need).
    fn last_row(&self, x: &Self::Act) -> Self::Act;

    /// out[t] = table[tokens[t]] (rows of a possibly quantised matrix).
    fn embed(&self, out: &mut Self::Act, table: &Self::Weight, tokens: &[u32]);
    /// out = x / rms(x) * w, per row.
    fn rmsnorm(&self, out: &mut Self::Act, x: &Self::Act, w: &Self::Vector, eps: f32);
    /// out = x W^T + sum_i s_i (x A_i^T) B_i^T — LoRA applied unmerged.
    fn matmul(&self, out: &mut Self::Act, x: &Self::Act, w: &Self::Weight, loras: &[(&Self::Lora, f32)]);
    /// Rotate each head of x in place; row t is at position pos0 + t.
    fn rope(&self, x: &mut Self::Act, n_heads: usize, head_dim: usize, pos0: usize, rope: &Rope);
    /// Append k, v (rows at positions pos0..) to the cache of `layer`, then causal attention of q
    /// over positions 0..=pos0+t (only the last `heads.window` of them in a sliding-window
    /// layer) with grouped-query head sharing; scores are scaled by `heads.scale`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Act,
        q: &Self::Act,
        k: &Self::Act,
        v: &Self::Act,
        cache: &mut Self::Cache,
        layer: usize,
        pos0: usize,
        heads: &Heads,
    ) -> Result<()>;
    /// gate = silu(gate) * up.
    fn silu_mul(&self, gate: &mut Self::Act, up: &Self::Act);
    /// gate = gelu_tanh(gate) * up (Gemma's GeGLU).
    fn gelu_mul(&self, gate: &mut Self::Act, up: &Self::Act);
    /// x += y.
    fn add(&self, x: &mut Self::Act, y: &Self::Act);
    /// x *= s.
    fn scale(&self, x: &mut Self::Act, s: f32);
    /// RMSNorm of every `head_dim`-wide head of every row, in place, with the head_dim-long
    /// weight `w` (Gemma-3's QK-norm).
    fn rmsnorm_heads(&self, x: &mut Self::Act, w: &Self::Vector, head_dim: usize, eps: f32);
}

/// A borrowed backend is a backend: several models (or a model and a test) can share one device.
impl<B: Backend> Backend for &B {
    type Weight = B::Weight;
    type Vector = B::Vector;
    type Lora = B::Lora;
    type Act = B::Act;
    type Cache = B::Cache;

    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn load_matrix(&self, m: &Matrix) -> Result<Self::Weight> {
        (**self).load_matrix(m)
    }
    fn load_vector(&self, v: &[f32]) -> Result<Self::Vector> {
        (**self).load_vector(v)
    }
    fn load_lora(&self, l: &LoraPair) -> Result<Self::Lora> {
        (**self).load_lora(l)
    }
    fn new_cache(&self, cfg: &Config, max_seq: usize) -> Result<Self::Cache> {
        (**self).new_cache(cfg, max_seq)
    }
    fn copy_cache(&self, src: &Self::Cache) -> Result<Self::Cache> {
        (**self).copy_cache(src)
    }
    fn act(&self, n_tokens: usize, width: usize) -> Self::Act {
        (**self).act(n_tokens, width)
    }
    fn act_from_host(&self, n_tokens: usize, width: usize, data: &[f32]) -> Self::Act {
        (**self).act_from_host(n_tokens, width, data)
    }
    async fn read(&self, x: &Self::Act) -> Result<Vec<f32>> {
        (**self).read(x).await
    }
    fn last_row(&self, x: &Self::Act) -> Self::Act {
        (**self).last_row(x)
    }
    async fn argmax(&self, x: &Self::Act) -> Result<u32> {
        (**self).argmax(x).await
    }
    async fn sample(&self, x: &Self::Act, temperature: f32, top_k: usize, top_p: f32, u: f32) -> Result<u32> {
        (**self).sample(x, temperature, top_k, top_p, u).await
    }
    fn embed(&self, out: &mut Self::Act, table: &Self::Weight, tokens: &[u32]) {
        (**self).embed(out, table, tokens)
    }
    fn rmsnorm(&self, out: &mut Self::Act, x: &Self::Act, w: &Self::Vector, eps: f32) {
        (**self).rmsnorm(out, x, w, eps)
    }
    fn matmul(&self, out: &mut Self::Act, x: &Self::Act, w: &Self::Weight, loras: &[(&Self::Lora, f32)]) {
        (**self).matmul(out, x, w, loras)
    }
    fn rope(&self, x: &mut Self::Act, n_heads: usize, head_dim: usize, pos0: usize, rope: &Rope) {
        (**self).rope(x, n_heads, head_dim, pos0, rope)
    }
    fn attention(
        &self,
        out: &mut Self::Act,
        q: &Self::Act,
        k: &Self::Act,
        v: &Self::Act,
        cache: &mut Self::Cache,
        layer: usize,
        pos0: usize,
        heads: &Heads,
    ) -> Result<()> {
        (**self).attention(out, q, k, v, cache, layer, pos0, heads)
    }
    fn silu_mul(&self, gate: &mut Self::Act, up: &Self::Act) {
        (**self).silu_mul(gate, up)
    }
    fn add(&self, x: &mut Self::Act, y: &Self::Act) {
        (**self).add(x, y)
    }
    fn gelu_mul(&self, gate: &mut Self::Act, up: &Self::Act) {
        (**self).gelu_mul(gate, up)
    }
    fn scale(&self, x: &mut Self::Act, s: f32) {
        (**self).scale(x, s)
    }
    fn rmsnorm_heads(&self, x: &mut Self::Act, w: &Self::Vector, head_dim: usize, eps: f32) {
        (**self).rmsnorm_heads(x, w, head_dim, eps)
    }
}

/// Drive a future whose backend finishes synchronously (every native backend) to completion on
/// this thread. A future that stays pending is polled again after yielding the thread; nothing
/// here waits for a browser event loop, so the browser's WebGPU backend must be awaited instead
/// (on wasm a pending future is a programming error and panics rather than hanging the page).
/// Drive a backend future that yields a `Result` to completion on this thread: natively the same as
/// [`block_on`]; in a browser, a future that would have to wait is an error instead of a panic.
pub fn blocking<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => Err(crate::Error::Device(
                "a blocking read-back is impossible in the browser; await the async API".into(),
            )),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    block_on(f)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    #[cfg(target_arch = "wasm32")]
    {
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("block_on: a backend future is pending on wasm; await it instead"),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
