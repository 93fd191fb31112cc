//! The CPU backend: plain loops, one comment per step. With
//! [`Kernels::Exact`] (`Cpu::EXACT`) it is the reference: f32 activations everywhere, the
//! specification the GPU backends and the golden tests are held to. [`Kernels::Fast`]
//! (`Cpu::FAST`, what the commands run by default) rounds activations to 8 bits per block before
//! each quantised matmul and takes integer dot products (`qdot`), as llama.cpp's CPU backend does,
//! and splits those matmuls' output rows over its `Threads`; the exact path is single-threaded.

use crate::backend::{Backend, Heads, LoraPair, Rope};
use crate::config::Config;
use crate::qdot::{self, ActFormat, QuantActs};
use crate::quant::{dot_f32, dot_row, GgmlType};
use crate::threads::Threads;
use crate::vmath;
use crate::weights::Matrix;
use crate::{Error, Result};

/// How the CPU backend multiplies by quantised weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// f32 activations against the dequantised weights: the reference.
    #[default]
    Exact,
    /// Activations rounded to int8 per block (Q8_0 / Q8_K) and integer SIMD dot products. Float
    /// weights (F32/F16/BF16) take the exact kernels either way.
    Fast,
}

#[derive(Default, Clone, Debug)]
pub struct Cpu {
    pub kernels: Kernels,
    /// The fast path's matmul threads.
    pub threads: Threads,
}

impl Cpu {
    /// The reference: f32 activations in every matmul, one thread.
    pub const EXACT: Cpu = Cpu { kernels: Kernels::Exact, threads: Threads::ONE };
    /// 8-bit activations and integer dot products for quantised weights, one thread.
    pub const FAST: Cpu = Cpu { kernels: Kernels::Fast, threads: Threads::ONE };

    /// This backend with its fast path's matmuls split over `threads`.
    pub fn with_threads(self, threads: Threads) -> Cpu {
        Cpu { threads, ..self }
    }
}

#[derive(Clone, Debug)]
pub struct CpuAct {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>, // (rows, cols)
}

pub struct CpuLora {
    r: usize,
    a: Vec<f32>, // (r, in)
    b: Vec<f32>, // (out, r)
}

#[derive(Clone)]
pub struct CpuCache {
    pub max_seq: usize,
    pub k: Vec<Vec<f32>>, // per layer (max_seq, kv_dim)
    pub v: Vec<Vec<f32>>, // per layer (max_seq, kv_dim)
}

/// out = x W^T: one weight row at a time, every token against it, so prefill reads W once.
/// Types without a fused kernel (the K-quants, Q5_*, Q4_1, BF16) are dequantised a row at a time
/// and dotted with every token, so prefill dequantises each row once.
pub fn matmul_forward(out: &mut [f32], x: &[f32], w: &Matrix, n: usize) {
    let (rows, cols) = (w.rows, w.cols);
    if !matches!(w.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0) {
        let mut tmp = vec![0f32; cols];
        for r in 0..rows {
            w.row_f32(r, &mut tmp);
            for t in 0..n {
                out[t * rows + r] = dot_f32(&tmp, &x[t * cols..(t + 1) * cols]);
            }
        }
        return;
    }
    for r in 0..rows {
        let row = w.row(r);
        for t in 0..n {
            out[t * rows + r] = dot_row(w.ty, row, &x[t * cols..(t + 1) * cols]);
        }
    }
}

/// From this many tokens on, prefill's quantised matmuls use the 8-row GEMM kernels.
const GEMM_MIN_TOKENS: usize = 4;

/// out = x W^T with each row of x rounded to int8 per block first and integer dot products
/// against the stored blocks (`qdot`); types without an integer kernel take `matmul_forward`.
/// Each weight row meets every token while it is in cache, as in `matmul_forward`. The output rows
/// are split over `threads` (each element is computed the same way on any thread).
/// `packed`: `w`'s rows repacked eight at a time (Q4_0), read instead of the stored rows it covers.
pub fn matmul_quantized(
    out: &mut [f32],
    x: &[f32],
    w: &Matrix,
    packed: Option<&qdot::PackedQ4_0>,
    n: usize,
    threads: &Threads,
) {
    let (Some(format), Some(kernel)) = (ActFormat::for_weight(w.ty), qdot::kernel(w.ty)) else {
        if let Some(k) = qdot::float_kernel(w.ty) {
            return matmul_float(out, x, w, n, threads, k);
        }
        return matmul_forward(out, x, w, n);
    };
    let xq = QuantActs::quantize(format, x, n, w.cols);
    let rows = w.rows;
    // four tokens at a time where a 4-row kernel exists: each weight block is decoded once for them
    let (kernel4, tiled) = match qdot::kernel4(w.ty) {
        Some(k) => (Some(k), n / 4 * 4),
        None => (None, 0),
    };
    assert!(out.len() >= n * rows, "matmul output of {} for {n} x {rows}", out.len());
    let out = SharedOut(out.as_mut_ptr());
    // decode (one token): four weight rows at a time where a kernel for that exists
    let kernel_w4 = if n == 1 { qdot::kernel_w4(w.ty) } else { None };
    // prefill: eight weight rows repacked once for all the tokens where a GEMM kernel exists (its
    // repack costs about what a few tokens do, so short runs keep the 4-token tiles)
    let gemm8 = if n >= GEMM_MIN_TOKENS { qdot::gemm8(w.ty) } else { None };
    let gemm16 = if gemm8.is_some() { qdot::gemm16(w.ty) } else { None };
    let corr = if gemm8.is_some() { qdot::gemm8_corrections(w.ty, &xq) } else { Vec::new() };
    let packed = packed.zip(qdot::packed_q4_0_kernel());
    // prefill on the K-quants: each row decoded once for all the tokens
    let kernel_rows = if n >= GEMM_MIN_TOKENS { qdot::kernel_rows(w.ty) } else { None };
    threads.for_rows(rows, 16, |range| {
        let mut range = range;
        if let Some((p, k)) = packed {
            // the ranges start at multiples of 16, so the groups of eight fall on them
            let mut y = vec![[0f32; 8]; n];
            while range.len() >= 8 && range.start / 8 < p.groups {
                let r = range.start;
                k(p.group(r / 8), p.blocks, &xq, &mut y);
                for (t, v) in y.iter().enumerate() {
                    // SAFETY: as below; rows r..r + 8 belong to this range
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out.at(t * rows + r), 8) };
                }
                range.start += 8;
            }
        }
        if let Some(g) = gemm16 {
            row_groups::<16>(&mut range, n, rows, out, |r, y| g(std::array::from_fn(|i| w.row(r + i)), &xq, &corr, y));
        }
        if let Some(g) = gemm8 {
            row_groups::<8>(&mut range, n, rows, out, |r, y| g(std::array::from_fn(|i| w.row(r + i)), &xq, &corr, y));
        }
        if let Some(kw) = kernel_w4 {
            let x0 = xq.row(0);
            while range.len() >= 4 {
                let r = range.start;
                let y = kw([w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)], x0);
                for (i, v) in y.into_iter().enumerate() {
                    // SAFETY: as below; rows r..r + 4 belong to this range
                    unsafe { *out.at(r + i) = v };
                }
                range.start += 4;
            }
        }
        if let Some(kr) = kernel_rows {
            let mut y = vec![0f32; n];
            for r in range.clone() {
                kr(w.row(r), &xq, &mut y);
                for (t, &v) in y.iter().enumerate() {
                    // SAFETY: as below
                    unsafe { *out.at(t * rows + r) = v };
                }
            }
            return;
        }
        for r in range {
            let row = w.row(r);
            // SAFETY: `out` holds n * rows values (asserted) and each (t, r) is written by the one
            // range holding r; the ranges are disjoint.
            let put = |t: usize, v: f32| unsafe { *out.at(t * rows + r) = v };
            if let Some(k4) = kernel4 {
                for t in (0..tiled).step_by(4) {
                    let y = k4(row, &[xq.row(t), xq.row(t + 1), xq.row(t + 2), xq.row(t + 3)]);
                    for (i, v) in y.into_iter().enumerate() {
                        put(t + i, v);
                    }
                }
            }
            for t in tiled..n {
                put(t, kernel(row, xq.row(t)));
            }
        }
    });
}

/// Whole groups of `N` rows from the front of `range` (which it advances): `kernel(r, y)` fills
/// y[t] with rows r..r + N for every token, copied into `out` (n tokens × `rows`).
fn row_groups<const N: usize>(
    range: &mut std::ops::Range<usize>,
    n: usize,
    rows: usize,
    out: SharedOut,
    kernel: impl Fn(usize, &mut [[f32; N]]),
) {
    let mut y = vec![[0f32; N]; n];
    while range.len() >= N {
        let r = range.start;
        kernel(r, &mut y);
        for (t, v) in y.iter().enumerate() {
            // SAFETY: as in `matmul_quantized`: rows r..r + N belong to this thread's range only
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out.at(t * rows + r), N) };
        }
        range.start += N;
    }
}

/// Weight bytes of one row block of the F16/BF16 matmul (about half a core's L2).
const FLOAT_BLOCK_BYTES: usize = 256 << 10;

/// The fast path's F16/BF16 matmul: f32 activations, each weight row widened once per four
/// tokens, the rows split over `threads`.
fn matmul_float(out: &mut [f32], x: &[f32], w: &Matrix, n: usize, threads: &Threads, k: qdot::FloatKernel) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(out.len() >= n * rows && x.len() >= n * cols, "matmul of {n} x {cols} by {rows} x {cols}");
    let out = SharedOut(out.as_mut_ptr());
    // blocked: a few rows (in L2) meet one 4-token tile (in L1) at a time, so neither the weights
    // nor the activations stream from further out once per row
    let block = (FLOAT_BLOCK_BYTES / w.row_bytes().max(1)).clamp(1, 64);
    threads.for_rows(rows, 16, |range| {
        let mut y = [[0f32; 4]; 2];
        for r0 in range.clone().step_by(block) {
            let rs = r0..(r0 + block).min(range.end);
            for t in (0..n).step_by(4) {
                let m = (n - t).min(4);
                let xs: [&[f32]; 4] = std::array::from_fn(|i| &x[(t + i.min(m - 1)) * cols..][..cols]);
                // two weight rows per call for prefill (each activation load serves both); one
                // for decode, which streams the weights and measured faster with one stream
                let per = if m == 1 { 1 } else { 2 };
                for r in rs.clone().step_by(per) {
                    let pair = [w.row(r), w.row((r + 1).min(rs.end - 1))];
                    let nw = if r + 1 < rs.end { per } else { 1 };
                    k(&pair[..nw], &xs[..m], &mut y);
                    for (j, yj) in y.iter().enumerate().take(nw) {
                        for (i, &v) in yj.iter().enumerate().take(m) {
                            // SAFETY: as in `matmul_quantized`: row r + j belongs to this range only
                            unsafe { *out.at((t + i) * rows + r + j) = v };
                        }
                    }
                }
            }
        }
    });
}

/// The output of a matmul written from several threads, each to its own rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the threads write disjoint elements (see `matmul_quantized`), and the slice's borrow
// outlives `for_rows`, which returns once every range is done.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` is in bounds and no other thread touches element `i`.
    unsafe fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// out = x / sqrt(mean(x^2) + eps) * w for one row.
pub fn rmsnorm_forward(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss: f32 = dot_f32(x, x) / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for i in 0..x.len() {
        out[i] = x[i] * inv * w[i];
    }
}

/// A weight matrix as the CPU backend holds it: the stored matrix, and on the fast path for Q4_0
/// (where this CPU has the kernel) its full groups of eight rows also repacked with lanes = rows
/// ([`qdot::PackedQ4_0`]), which decode and prefill read instead of the stored rows.
#[derive(Clone, Debug)]
pub struct CpuWeight {
    pub m: Matrix,
    pub packed: Option<std::sync::Arc<qdot::PackedQ4_0>>,
}

impl std::ops::Deref for CpuWeight {
    type Target = Matrix;
    fn deref(&self) -> &Matrix {
        &self.m
    }
}

impl Backend for Cpu {
    type Weight = CpuWeight;
    type Vector = Vec<f32>;
    type Lora = CpuLora;
    type Act = CpuAct;
    type Cache = CpuCache;

    fn name(&self) -> &'static str {
        match self.kernels {
            Kernels::Exact => "cpu (exact)",
            Kernels::Fast => "cpu",
        }
    }
    fn load_matrix(&self, m: &Matrix) -> Result<CpuWeight> {
        let packed = (self.kernels == Kernels::Fast
            && m.ty == GgmlType::Q4_0
            && m.rows >= 8
            && qdot::packed_q4_0_kernel().is_some())
        .then(|| std::sync::Arc::new(qdot::PackedQ4_0::pack(&m.data, m.rows, m.cols)));
        Ok(CpuWeight { m: m.clone(), packed })
    }
    fn load_vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }
    fn load_lora(&self, l: &LoraPair) -> Result<CpuLora> {
        Ok(CpuLora { r: l.r, a: l.a.to_vec(), b: l.b.to_vec() })
    }
    fn new_cache(&self, cfg: &Config, max_seq: usize) -> Result<CpuCache> {
        let n = max_seq * cfg.kv_dim();
        Ok(CpuCache { max_seq, k: vec![vec![0.0; n]; cfg.num_layers], v: vec![vec![0.0; n]; cfg.num_layers] })
    }
    fn copy_cache(&self, src: &CpuCache) -> Result<CpuCache> {
        Ok(src.clone())
    }
    fn act(&self, rows: usize, cols: usize) -> CpuAct {
        CpuAct { rows, cols, data: vec![0.0; rows * cols] }
    }
    fn act_from_host(&self, rows: usize, cols: usize, data: &[f32]) -> CpuAct {
        CpuAct { rows, cols, data: data.to_vec() }
    }
    async fn read(&self, x: &CpuAct) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }
    fn last_row(&self, x: &CpuAct) -> CpuAct {
        CpuAct { rows: 1, cols: x.cols, data: x.data[(x.rows - 1) * x.cols..].to_vec() }
    }

    fn embed(&self, out: &mut CpuAct, table: &CpuWeight, tokens: &[u32]) {
        for (t, &tok) in tokens.iter().enumerate() {
            table.row_f32(tok as usize, &mut out.data[t * out.cols..(t + 1) * out.cols]);
        }
    }

    fn rmsnorm(&self, out: &mut CpuAct, x: &CpuAct, w: &Vec<f32>, eps: f32) {
        let c = x.cols;
        for t in 0..x.rows {
            rmsnorm_forward(&mut out.data[t * c..(t + 1) * c], &x.data[t * c..(t + 1) * c], w, eps);
        }
    }

    fn matmul(&self, out: &mut CpuAct, x: &CpuAct, w: &CpuWeight, loras: &[(&CpuLora, f32)]) {
        let n = x.rows;
        match self.kernels {
            Kernels::Exact => matmul_forward(&mut out.data, &x.data, w, n),
            Kernels::Fast => matmul_quantized(&mut out.data, &x.data, w, w.packed.as_deref(), n, &self.threads),
        }
        for (l, s) in loras {
            // ax = x A^T  (n, r); out += s * ax B^T
            let mut ax = vec![0f32; n * l.r];
            for t in 0..n {
                let xt = &x.data[t * w.cols..(t + 1) * w.cols];
                for j in 0..l.r {
                    ax[t * l.r + j] = dot_f32(&l.a[j * w.cols..(j + 1) * w.cols], xt);
                }
            }
            for t in 0..n {
                let axt = &ax[t * l.r..(t + 1) * l.r];
                for o in 0..w.rows {
                    out.data[t * w.rows + o] += s * dot_f32(&l.b[o * l.r..(o + 1) * l.r], axt);
                }
            }
        }
    }

    fn rope(&self, x: &mut CpuAct, n_heads: usize, hd: usize, pos0: usize, rope: &Rope) {
        for t in 0..x.rows {
            let row = &mut x.data[t * x.cols..t * x.cols + n_heads * hd];
            for head in row.chunks_exact_mut(hd) {
                rope_head(head, (pos0 + t) as f32, rope, false);
            }
        }
    }

    fn attention(
        &self,
        out: &mut CpuAct,
        q: &CpuAct,
        k: &CpuAct,
        v: &CpuAct,
        cache: &mut CpuCache,
        layer: usize,
        pos0: usize,
        heads: &Heads,
    ) -> Result<()> {
        let (n, hd, kvd) = (q.rows, heads.head_dim, heads.kv_dim());
        if pos0 + n > cache.max_seq {
            return Err(Error::ContextOverflow { positions: pos0 + n, capacity: cache.max_seq });
        }
        // store the new keys and values
        cache.k[layer][pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&k.data);
        cache.v[layer][pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&v.data);
        let (kc, vc) = (&cache.k[layer], &cache.v[layer]);
        let group = heads.n_heads / heads.n_kv_heads;
        let mut att = vec![0f32; pos0 + n];
        for t in 0..n {
            // causal: positions first..=pos0+t (a sliding-window layer sees only the last w)
            let (first, len) = (heads.first_visible(pos0 + t), pos0 + t + 1);
            for h in 0..heads.n_heads {
                let kvh = h / group;
                let qh = &q.data[t * q.cols + h * hd..t * q.cols + (h + 1) * hd];
                // p = softmax(q . k * scale)
                for j in first..len {
                    att[j] = dot_f32(qh, &kc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd]) * heads.scale;
                }
                softmax(&mut att[first..len]);
                // out = sum_j p_j v_j
                let o = &mut out.data[t * out.cols + h * hd..t * out.cols + (h + 1) * hd];
                o.fill(0.0);
                for j in first..len {
                    let vj = &vc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                    for d in 0..hd {
                        o[d] += att[j] * vj[d];
                    }
                }
            }
        }
        Ok(())
    }

    fn silu_mul(&self, gate: &mut CpuAct, up: &CpuAct) {
        if self.kernels == Kernels::Fast {
            return vmath::silu_mul(&mut gate.data, &up.data);
        }
        for (g, u) in gate.data.iter_mut().zip(&up.data) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    fn add(&self, x: &mut CpuAct, y: &CpuAct) {
        for (a, b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
    }

    fn gelu_mul(&self, gate: &mut CpuAct, up: &CpuAct) {
        // the same bits on both paths (and every width): see `vmath`
        vmath::gelu_mul(&mut gate.data, &up.data)
    }

    fn scale(&self, x: &mut CpuAct, s: f32) {
        x.data.iter_mut().for_each(|v| *v *= s);
    }

    fn rmsnorm_heads(&self, x: &mut CpuAct, w: &Vec<f32>, head_dim: usize, eps: f32) {
        let mut tmp = vec![0f32; head_dim];
        for head in x.data.chunks_exact_mut(head_dim) {
            rmsnorm_forward(&mut tmp, head, w, eps);
            head.copy_from_slice(&tmp);
        }
    }
}

/// Rotate one head at position `pos` (the angle in f32, as transformers computes it); `inverse`
/// rotates back (the training backward pass).
pub fn rope_head(head: &mut [f32], pos: f32, rope: &Rope, inverse: bool) {
    let half = head.len() / 2;
    for (i, f) in rope.inv_freq.iter().enumerate().take(half) {
        let (sin, cos) = (pos * f).sin_cos();
        let sin = if inverse { -sin } else { sin };
        let (a, b) = if rope.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x1 * cos + x0 * sin;
    }
}

/// Softmax in place: exp(x - max) / sum.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

pub use crate::vmath::gelu_tanh;
