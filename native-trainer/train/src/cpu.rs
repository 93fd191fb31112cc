//! The CPU reference training backend: f32 GEMMs through the `gemm` crate (single-threaded),
//! frozen quantised weights dequantised a block of rows at a time, everything else plain loops.

use super::backend::{AdamW, Heads, Rope, TrainBackend};
use vicugna_core::cpu::{rope_head, softmax};
use vicugna_core::quant::{dot_f32, GgmlType};
use vicugna_core::weights::Matrix;
use vicugna_core::Result;

#[derive(Default, Clone, Copy)]
pub struct CpuTrain;

/// Rows of a quantised matrix dequantised per GEMM block (bounded scratch, L2-sized).
const ROW_BLOCK: usize = 128;
/// Rows of logits computed at once by the fused LM head.
const LOGIT_ROWS: usize = 128;

pub enum CpuFrozen {
    F32 { rows: usize, cols: usize, data: Vec<f32> },
    Stored(Matrix),
}

impl CpuFrozen {
    fn dims(&self) -> (usize, usize) {
        match self {
            CpuFrozen::F32 { rows, cols, .. } => (*rows, *cols),
            CpuFrozen::Stored(m) => (m.rows, m.cols),
        }
    }
    /// Call f(r0, block) for consecutive row blocks as f32 (rows r0.., row-major).
    fn for_blocks(&self, mut f: impl FnMut(usize, usize, &[f32])) {
        match self {
            CpuFrozen::F32 { rows, data, .. } => f(0, *rows, data),
            CpuFrozen::Stored(m) => {
                let mut buf = vec![0f32; ROW_BLOCK.min(m.rows) * m.cols];
                for r0 in (0..m.rows).step_by(ROW_BLOCK) {
                    let nr = ROW_BLOCK.min(m.rows - r0);
                    for i in 0..nr {
                        m.row_f32(r0 + i, &mut buf[i * m.cols..(i + 1) * m.cols]);
                    }
                    f(r0, nr, &buf[..nr * m.cols]);
                }
            }
        }
    }
}

/// c (m, n) = beta·c + alpha·a·b with explicit strides (row stride, column stride).
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (isize, isize),
    b: &[f32],
    (rsb, csb): (isize, isize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (isize, isize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let span = |r: usize, c: usize, rs: isize, cs: isize| (r as isize - 1) * rs + (c as isize - 1) * cs + 1;
    assert!(k == 0 || span(m, k, rsa, csa) as usize <= a.len(), "gemm: a too short");
    assert!(k == 0 || span(k, n, rsb, csb) as usize <= b.len(), "gemm: b too short");
    assert!(span(m, n, rsc, csc) as usize <= c.len(), "gemm: c too short");
    // SAFETY: the asserts above keep every strided access inside the slices. gemm's convention:
    // dst = alpha·dst + beta·lhs·rhs, with column stride before row stride.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            csc,
            rsc,
            beta != 0.0,
            a.as_ptr(),
            csa,
            rsa,
            b.as_ptr(),
            csb,
            rsb,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Keep freed activation memory in the process for the next step instead of unmapping it and
/// faulting fresh zeroed pages in again (glibc returns large blocks to the kernel by default:
/// ~6% of a training step went to page faults).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before the training allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The counter-based generator behind dropout masks (core's, shared with every test).
pub use vicugna_core::random::{splitmix, uniform};

impl TrainBackend for CpuTrain {
    type Buf = Vec<f32>;
    type Frozen = CpuFrozen;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn frozen(&self, m: &Matrix) -> Result<CpuFrozen> {
        Ok(match m.ty {
            GgmlType::F32 => CpuFrozen::F32 { rows: m.rows, cols: m.cols, data: m.to_f32() },
            _ => CpuFrozen::Stored(m.clone()),
        })
    }
    fn frozen_bytes(&self, w: &CpuFrozen) -> usize {
        match w {
            CpuFrozen::F32 { data, .. } => data.len() * 4,
            CpuFrozen::Stored(m) => m.data.len(),
        }
    }
    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, v: &[f32]) -> Vec<f32> {
        v.to_vec()
    }
    fn download(&self, b: &Vec<f32>) -> Vec<f32> {
        b.clone()
    }
    fn len(&self, b: &Vec<f32>) -> usize {
        b.len()
    }
    fn fill_zero(&self, b: &mut Vec<f32>) {
        b.fill(0.0)
    }
    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.copy_from_slice(src)
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }

    fn embed(&self, out: &mut Vec<f32>, table: &CpuFrozen, tokens: &[u32]) {
        let (_, cols) = table.dims();
        for (t, &tok) in tokens.iter().enumerate() {
            let o = &mut out[t * cols..(t + 1) * cols];
            match table {
                CpuFrozen::F32 { data, .. } => o.copy_from_slice(&data[tok as usize * cols..(tok as usize + 1) * cols]),
                CpuFrozen::Stored(m) => m.row_f32(tok as usize, o),
            }
        }
    }

    fn linear(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &CpuFrozen, n: usize) {
        let (rows, cols) = w.dims();
        w.for_blocks(|r0, nr, blk| {
            // out[:, r0..r0+nr] = x · blkᵀ
            sgemm(
                n,
                cols,
                nr,
                1.0,
                x,
                (cols as isize, 1),
                blk,
                (1, cols as isize),
                0.0,
                &mut out[r0..],
                (rows as isize, 1),
            );
        });
    }

    fn linear_back(&self, dx: &mut Vec<f32>, dy: &Vec<f32>, w: &CpuFrozen, n: usize) {
        let (rows, cols) = w.dims();
        w.for_blocks(|r0, nr, blk| {
            // dx += dy[:, r0..r0+nr] · blk
            sgemm(
                n,
                nr,
                cols,
                1.0,
                &dy[r0..],
                (rows as isize, 1),
                blk,
                (cols as isize, 1),
                1.0,
                dx,
                (cols as isize, 1),
            );
        });
    }

    fn gemm(
        &self,
        c: &mut Vec<f32>,
        a: &Vec<f32>,
        ta: bool,
        b: &Vec<f32>,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        beta: f32,
    ) {
        let sa = if ta { (1, m as isize) } else { (k as isize, 1) };
        let sb = if tb { (1, k as isize) } else { (n as isize, 1) };
        sgemm(m, k, n, alpha, a, sa, b, sb, beta, c, (n as isize, 1));
    }

    fn rmsnorm(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, eps: f32) {
        let d = w.len();
        for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            vicugna_core::cpu::rmsnorm_forward(o, x, w, eps);
        }
    }

    fn rmsnorm_back(&self, dx: &mut Vec<f32>, dy: &Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, eps: f32) {
        let d = w.len();
        let mut g = vec![0f32; d];
        for ((dx, dy), x) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(x.chunks_exact(d)) {
            let inv = 1.0 / (dot_f32(x, x) / d as f32 + eps).sqrt();
            for i in 0..d {
                g[i] = dy[i] * w[i];
            }
            // dx = inv·g − x·inv³·(g·x)/d
            let c = dot_f32(&g, x) * inv * inv * inv / d as f32;
            for i in 0..d {
                dx[i] += inv * g[i] - c * x[i];
            }
        }
    }

    fn rope(&self, x: &mut Vec<f32>, width: usize, hd: usize, rope: &Rope, inverse: bool) {
        for (t, row) in x.chunks_exact_mut(width).enumerate() {
            for head in row.chunks_exact_mut(hd) {
                rope_head(head, t as f32, rope, inverse);
            }
        }
    }

    fn attention(
        &self,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
        h: Heads,
    ) {
        let (hd, qw, kw) = (h.head_dim, h.n_heads * h.head_dim, h.n_kv_heads * h.head_dim);
        let group = h.n_heads / h.n_kv_heads;
        let scale = h.scale;
        let (qw_, kw_) = (qw as isize, kw as isize);
        for hh in 0..h.n_heads {
            let kvh = hh / group;
            let p = &mut probs[hh * n * n..(hh + 1) * n * n];
            // S = Q_h K_hᵀ · scale (the masked entries are computed and then discarded)
            sgemm(n, hd, n, scale, &q[hh * hd..], (qw_, 1), &k[kvh * hd..], (1, kw_), 0.0, p, (n as isize, 1));
            for (i, row) in p.chunks_exact_mut(n).enumerate() {
                // row i sees rows lo..=i (a sliding window keeps only the last `window`)
                let lo = h.first_visible(i);
                softmax(&mut row[lo..=i]);
                row[..lo].fill(0.0);
                row[i + 1..].fill(0.0);
            }
            // O_h = P V_h
            sgemm(n, n, hd, 1.0, p, (n as isize, 1), &v[kvh * hd..], (kw_, 1), 0.0, &mut out[hh * hd..], (qw_, 1));
        }
    }

    fn attention_back(
        &self,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
        dout: &Vec<f32>,
        probs: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
        h: Heads,
    ) {
        let (hd, qw, kw) = (h.head_dim, h.n_heads * h.head_dim, h.n_kv_heads * h.head_dim);
        let group = h.n_heads / h.n_kv_heads;
        let scale = h.scale;
        let (qw_, kw_, n_) = (qw as isize, kw as isize, n as isize);
        let mut ds = vec![0f32; n * n];
        for hh in 0..h.n_heads {
            let kvh = hh / group;
            let p = &probs[hh * n * n..(hh + 1) * n * n];
            // dP = dO_h V_hᵀ; dS = P ∘ (dP − rowsum(P ∘ dP)) · scale (P is 0 outside the window)
            sgemm(n, hd, n, 1.0, &dout[hh * hd..], (qw_, 1), &v[kvh * hd..], (1, kw_), 0.0, &mut ds, (n_, 1));
            for (i, (row, pr)) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)).enumerate() {
                let s = dot_f32(&row[..=i], &pr[..=i]);
                for j in 0..=i {
                    row[j] = pr[j] * (row[j] - s) * scale;
                }
                row[i + 1..].fill(0.0);
            }
            // dQ_h += dS K_h; dK_h += dSᵀ Q_h; dV_h += Pᵀ dO_h
            sgemm(n, n, hd, 1.0, &ds, (n_, 1), &k[kvh * hd..], (kw_, 1), 1.0, &mut dq[hh * hd..], (qw_, 1));
            sgemm(n, n, hd, 1.0, &ds, (1, n_), &q[hh * hd..], (qw_, 1), 1.0, &mut dk[kvh * hd..], (kw_, 1));
            sgemm(n, n, hd, 1.0, p, (1, n_), &dout[hh * hd..], (qw_, 1), 1.0, &mut dv[kvh * hd..], (kw_, 1));
        }
    }

    fn silu_mul(&self, out: &mut Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        for ((o, g), u) in out.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }

    fn silu_mul_back(&self, dg: &mut Vec<f32>, du: &mut Vec<f32>, dh: &Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        for i in 0..g.len() {
            let s = 1.0 / (1.0 + (-g[i]).exp());
            du[i] = dh[i] * g[i] * s;
            dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }

    fn gelu_mul(&self, out: &mut Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        for ((o, g), u) in out.iter_mut().zip(g).zip(u) {
            *o = vicugna_core::cpu::gelu_tanh(*g) * u;
        }
    }

    fn gelu_mul_back(&self, dg: &mut Vec<f32>, du: &mut Vec<f32>, dh: &Vec<f32>, g: &Vec<f32>, u: &Vec<f32>) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for i in 0..g.len() {
            let x = g[i];
            // gelu = x/2 (1 + tanh(z)), z = C (x + 0.044715 x^3)
            let t = (C * x * (1.0 + 0.044715 * x * x)).tanh();
            let dz = C * (1.0 + 3.0 * 0.044715 * x * x);
            let dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dz;
            du[i] = dh[i] * 0.5 * x * (1.0 + t);
            dg[i] = dh[i] * u[i] * dgelu;
        }
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32) {
        x.iter_mut().for_each(|v| *v *= s);
    }

    fn dropout(&self, out: &mut Vec<f32>, x: &Vec<f32>, p: f32, key: u64) {
        let keep = 1.0 / (1.0 - p);
        for (i, (o, x)) in out.iter_mut().zip(x).enumerate() {
            *o = if uniform(key, i as u64) < p { 0.0 } else { x * keep };
        }
    }

    fn lm_head_loss(&self, dx: &mut Vec<f32>, x: &Vec<f32>, w: &CpuFrozen, targets: &[i32], grad_scale: f32) -> f64 {
        let (vocab, hidden) = w.dims();
        let rows: Vec<usize> = (0..targets.len()).filter(|&t| targets[t] >= 0).collect();
        let mut loss = 0f64;
        for chunk in rows.chunks(LOGIT_ROWS) {
            let m = chunk.len();
            let mut xs = vec![0f32; m * hidden];
            for (i, &t) in chunk.iter().enumerate() {
                xs[i * hidden..(i + 1) * hidden].copy_from_slice(&x[t * hidden..(t + 1) * hidden]);
            }
            let mut logits = vec![0f32; m * vocab];
            self.linear(&mut logits, &xs, w, m);
            for (i, &t) in chunk.iter().enumerate() {
                let l = &mut logits[i * vocab..(i + 1) * vocab];
                let tgt = targets[t] as usize;
                let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0f64;
                for v in l.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v as f64;
                }
                // loss = log Σ exp(l − max) − (l_tgt − max)
                loss += sum.ln() - (l[tgt] as f64).ln();
                let inv = (1.0 / sum) as f32 * grad_scale;
                l.iter_mut().for_each(|v| *v *= inv);
                l[tgt] -= grad_scale;
            }
            let mut dxs = vec![0f32; m * hidden];
            self.linear_back(&mut dxs, &logits, w, m);
            for (i, &t) in chunk.iter().enumerate() {
                for (a, b) in dx[t * hidden..(t + 1) * hidden].iter_mut().zip(&dxs[i * hidden..(i + 1) * hidden]) {
                    *a += b;
                }
            }
        }
        loss
    }

    fn sum_squares(&self, g: &Vec<f32>) -> f64 {
        g.iter().map(|&v| v as f64 * v as f64).sum()
    }

    fn adamw(
        &self,
        p: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        o: &AdamW,
        lr: f32,
        t: u64,
        scale: f32,
    ) {
        let bc1 = 1.0 - o.beta1.powi(t as i32);
        let bc2_sqrt = (1.0 - o.beta2.powi(t as i32)).sqrt();
        let step = lr / bc1;
        for i in 0..p.len() {
            let gi = g[i] * scale;
            p[i] *= 1.0 - lr * o.weight_decay;
            m[i] += (gi - m[i]) * (1.0 - o.beta1);
            v[i] = v[i] * o.beta2 + (1.0 - o.beta2) * gi * gi;
            let denom = v[i].sqrt() / bc2_sqrt + o.eps;
            p[i] -= step * m[i] / denom;
        }
    }
}
