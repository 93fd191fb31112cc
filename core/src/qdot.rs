//! The CPU's fast path: activations rounded to 8 bits per block and integer dot products against
//! the stored weight blocks, as llama.cpp's CPU backend computes a quantised matmul.
//!
//! Which activation blocks a weight type meets (llama.cpp's `vec_dot_type`):
//!
//! | weights                     | activations                                              |
//! |-----------------------------|----------------------------------------------------------|
//! | Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 | [`ActFormat::Q8_0`]: int8 per 32, one scale (gguf-py's Q8_0) |
//! | Q4_K, Q5_K, Q6_K            | [`ActFormat::Q8K`]: int8 per 256, one f32 scale (llama.cpp's Q8_K) |
//!
//! Every format also keeps the sum of each 16 quants (Q8_K's `bsums`), which turns a weight
//! group's offset (Q4_1's min, Q4_K's `dmin * m`, Q6_K's `-32`) into one multiply per group.
//!
//! [`dot_portable`] is the reference: per weight group, `scale * dx * sum(q_w q_x)` in exact integer
//! arithmetic plus `min * dx * sum(q_x)`, through [`unpack_block`]. The x86-64 kernels (AVX2, and
//! AVX-512 VNNI's `vpdpbusd` where present, detected at run time) compute the same integer sums;
//! they differ from it only in the order of the f32 additions. F32/F16/BF16 weights have no fast
//! path: their f32 kernels are exact and no slower.

use crate::quant::{unpack_block, GgmlType, QK, QK_K};

/// How an activation row is rounded to int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// Per 32 values: `d = max|x| / 127` stored as f16, `q = round(x / d)` half away from zero;
    /// byte for byte gguf-py's (and `quant::quantize_block`'s) Q8_0.
    Q8_0,
    /// Per 256 values: llama.cpp's `quantize_row_q8_K_ref`: `iscale = -127 / x[argmax |x|]`,
    /// `q = min(127, nearest_int(iscale * x))` (round half to even), `d = 1 / iscale` in f32.
    Q8K,
}

impl ActFormat {
    /// The activation format `ty`'s integer kernel takes; `None` for float weights.
    pub fn for_weight(ty: GgmlType) -> Option<ActFormat> {
        use GgmlType::*;
        match ty {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => Some(ActFormat::Q8_0),
            Q4_K | Q5_K | Q6_K => Some(ActFormat::Q8K),
            _ => None,
        }
    }

    pub fn block(self) -> usize {
        match self {
            ActFormat::Q8_0 => QK,
            ActFormat::Q8K => QK_K,
        }
    }
}

/// `rows` activation rows of `cols` values, rounded to int8 in `format`.
#[derive(Clone, Debug)]
pub struct QuantActs {
    pub format: ActFormat,
    pub rows: usize,
    pub cols: usize,
    /// (rows, cols)
    pub q: Vec<i8>,
    /// one scale per block, (rows, cols / block)
    pub d: Vec<f32>,
    /// the sum of each 16 consecutive quants, (rows, cols / 16)
    pub sums: Vec<i16>,
}

/// One row of [`QuantActs`].
#[derive(Clone, Copy, Debug)]
pub struct QuantRow<'a> {
    pub format: ActFormat,
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub sums: &'a [i16],
}

impl QuantActs {
    /// Round `x` ((rows, cols), cols a multiple of the format's block) to int8.
    pub fn quantize(format: ActFormat, x: &[f32], rows: usize, cols: usize) -> QuantActs {
        let bs = format.block();
        assert!(
            cols.is_multiple_of(bs) && x.len() >= rows * cols,
            "activation rows of {cols} values in blocks of {bs}"
        );
        let mut a = QuantActs {
            format,
            rows,
            cols,
            q: vec![0; rows * cols],
            d: vec![0.0; rows * cols / bs],
            sums: vec![0; rows * cols / 16],
        };
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512f() {
                // SAFETY: AVX-512F was detected
                unsafe { quantize_zmm(&mut a, x) };
                return a;
            }
            if is_x86_feature_detected!("sse4.1") {
                // SAFETY: SSE4.1 was detected; it turns the rounding's floor into one instruction
                unsafe { quantize_sse41(&mut a, x) };
                return a;
            }
        }
        quantize_into(&mut a, x);
        a
    }

    /// `quantize` through the portable rule only (the tests hold the SIMD form to it).
    #[cfg_attr(not(test), allow(dead_code))]
    fn quantize_portable(format: ActFormat, x: &[f32], rows: usize, cols: usize) -> QuantActs {
        let bs = format.block();
        let mut a = QuantActs {
            format,
            rows,
            cols,
            q: vec![0; rows * cols],
            d: vec![0.0; rows * cols / bs],
            sums: vec![0; rows * cols / 16],
        };
        quantize_into(&mut a, x);
        a
    }

    pub fn row(&self, t: usize) -> QuantRow<'_> {
        let (c, bs) = (self.cols, self.format.block());
        QuantRow {
            format: self.format,
            q: &self.q[t * c..(t + 1) * c],
            d: &self.d[t * c / bs..(t + 1) * c / bs],
            sums: &self.sums[t * c / 16..(t + 1) * c / 16],
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn quantize_sse41(a: &mut QuantActs, x: &[f32]) {
    quantize_into(a, x)
}

#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// `quantize_into` sixteen values at a time, bit for bit: the same products, Q8_0's rounding half
/// away from zero as trunc(y) + sign(y)·(|y − trunc(y)| ≥ ½) (the difference is exact), Q8_K's
/// `nearest_int` as the conversion's round-half-to-even, and its signed extreme the first value of
/// largest magnitude. Each 16-sum is the sum of one vector's integers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_zmm(a: &mut QuantActs, x: &[f32]) {
    use std::arch::x86_64::*;
    let bs = a.format.block();
    let n = a.rows * a.cols;
    let sign = _mm512_set1_epi32(i32::MIN);
    let one = _mm512_set1_epi32(1f32.to_bits() as i32);
    for (b, (xb, d)) in x[..n].chunks_exact(bs).zip(a.d.iter_mut()).enumerate() {
        let mut m = _mm512_setzero_ps();
        for v in xb.chunks_exact(16) {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(v.as_ptr())));
        }
        let amax = _mm512_reduce_max_ps(m);
        let qb = &mut a.q[b * bs..(b + 1) * bs];
        let sums = &mut a.sums[b * bs / 16..(b + 1) * bs / 16];
        match a.format {
            ActFormat::Q8_0 => {
                let dq = amax / 127.0;
                let id = _mm512_set1_ps(if dq == 0.0 { 0.0 } else { 1.0 / dq });
                for (j, v) in xb.chunks_exact(16).enumerate() {
                    let y = _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr()), id);
                    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                    let half =
                        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(y, t)), _mm512_set1_ps(0.5));
                    let step =
                        _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(y), sign), one));
                    let i = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, half, t, step));
                    _mm_storeu_si128(qb.as_mut_ptr().add(16 * j) as *mut __m128i, _mm512_cvtsepi32_epi8(i));
                    sums[j] = _mm512_reduce_add_epi32(i) as i16;
                }
                *d = half::f16::from_f32(dq).to_f32();
            }
            ActFormat::Q8K => {
                if amax == 0.0 {
                    qb.fill(0);
                    sums.fill(0);
                    *d = 0.0;
                    continue;
                }
                let first = xb.iter().position(|v| v.abs() == amax).expect("the extreme is in the block");
                let iscale = -127.0 / xb[first];
                let is = _mm512_set1_ps(iscale);
                for (j, v) in xb.chunks_exact(16).enumerate() {
                    let y = _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr()), is);
                    let i = _mm512_min_epi32(
                        _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y),
                        _mm512_set1_epi32(127),
                    );
                    _mm_storeu_si128(qb.as_mut_ptr().add(16 * j) as *mut __m128i, _mm512_cvtsepi32_epi8(i));
                    sums[j] = _mm512_reduce_add_epi32(i) as i16;
                }
                *d = 1.0 / iscale;
            }
        }
    }
}

#[inline(always)]
fn quantize_into(a: &mut QuantActs, x: &[f32]) {
    let bs = a.format.block();
    let n = a.rows * a.cols;
    for ((xb, qb), d) in x[..n].chunks_exact(bs).zip(a.q.chunks_exact_mut(bs)).zip(a.d.iter_mut()) {
        *d = match a.format {
            ActFormat::Q8_0 => quantize_q8_0(xb, qb),
            ActFormat::Q8K => quantize_q8_k(xb, qb),
        };
    }
    for (s, qb) in a.sums.iter_mut().zip(a.q.chunks_exact(16)) {
        *s = qb.iter().map(|&v| v as i16).sum();
    }
}

/// gguf-py's Q8_0 for one block of 32; returns the f16-rounded scale the block stores.
#[inline(always)]
fn quantize_q8_0(x: &[f32], q: &mut [i8]) -> f32 {
    let d = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (o, v) in q.iter_mut().zip(x) {
        *o = crate::quant::roundf(v * id) as i8;
    }
    half::f16::from_f32(d).to_f32()
}

/// llama.cpp's `quantize_row_q8_K_ref` for one block of 256; returns its f32 scale.
#[inline(always)]
fn quantize_q8_k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = nearest_int(iscale * v).min(127) as i8;
    }
    1.0 / iscale
}

/// ggml's `nearest_int`: round half to even through the f32 mantissa (|x| < 2^22).
fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The reference integer dot product of one stored row of `ty` (a type with an
/// [`ActFormat`]) with one quantised activation row.
pub fn dot_portable(ty: GgmlType, row: &[u8], x: QuantRow) -> f32 {
    let (bs, bb, xb) = (ty.block_size(), ty.block_bytes(), x.format.block());
    let (mut q, mut scale, mut min) = ([0i8; QK_K], [0f32; QK_K / 16], [0f32; QK_K / 16]);
    let mut s = 0f32;
    for (bi, b) in row.chunks_exact(bb).enumerate() {
        let group = unpack_block(ty, b, &mut q, &mut scale, &mut min).expect("a type with an integer form");
        let base = bi * bs;
        for g in 0..bs / group {
            let at = base + g * group;
            let xq = &x.q[at..at + group];
            let isum: i32 = q[g * group..(g + 1) * group].iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum();
            let dx = x.d[at / xb];
            s += scale[g] * dx * isum as f32;
            if min[g] != 0.0 {
                let qsum: i32 = x.sums[at / 16..(at + group) / 16].iter().map(|&v| v as i32).sum();
                s += min[g] * dx * qsum as f32;
            }
        }
    }
    s
}

/// A dot-product kernel: one stored row with one quantised activation row.
pub type Kernel = fn(&[u8], QuantRow) -> f32;

/// The fastest kernel this CPU has for `ty`, chosen once per call site (`None` for types without
/// an integer form).
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    use GgmlType::*;
    ActFormat::for_weight(ty)?;
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd::kernel(ty) {
        return Some(k);
    }
    Some(match ty {
        Q4_0 => |r, x| dot_portable(Q4_0, r, x),
        Q4_1 => |r, x| dot_portable(Q4_1, r, x),
        Q5_0 => |r, x| dot_portable(Q5_0, r, x),
        Q5_1 => |r, x| dot_portable(Q5_1, r, x),
        Q8_0 => |r, x| dot_portable(Q8_0, r, x),
        Q4_K => |r, x| dot_portable(Q4_K, r, x),
        Q5_K => |r, x| dot_portable(Q5_K, r, x),
        Q6_K => |r, x| dot_portable(Q6_K, r, x),
        _ => return None,
    })
}

/// A 4-row kernel: one stored row with four quantised activation rows, each weight block decoded
/// once for the four (prefill's register tile).
pub type Kernel4 = fn(&[u8], &[QuantRow; 4]) -> [f32; 4];

/// The 4-row kernel for `ty` where this CPU has one (`None`: call [`kernel`] per row).
pub fn kernel4(ty: GgmlType) -> Option<Kernel4> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::kernel4(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// A row kernel for prefill: one stored row against every activation row of `xs`
/// (`out[t] = row · x_t`), the row's blocks decoded once for all of them; per (row, token) the
/// arithmetic of [`kernel4`]'s kernel (four tokens at a time) and [`kernel`]'s (the rest).
pub type KernelRows = fn(&[u8], &QuantActs, &mut [f32]);

/// The row kernel for `ty` where this CPU has one (the K-quants with AVX-512BW).
pub fn kernel_rows(ty: GgmlType) -> Option<KernelRows> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::kernel_rows(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// A 4-weight-row kernel: four stored rows (consecutive in the matrix) with one quantised
/// activation row (decode's register tile).
pub type KernelW4 = fn([&[u8]; 4], QuantRow) -> [f32; 4];

/// The 4-weight-row kernel for `ty` where this CPU has one.
pub fn kernel_w4(ty: GgmlType) -> Option<KernelW4> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::kernel_w4(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// A GEMM kernel for prefill: eight stored rows (consecutive in the matrix) against every row of
/// `xs`, writing `out[t] = [row_0 · x_t, …, row_7 · x_t]`. It repacks the eight rows once per call
/// (lanes = rows, as llama.cpp's CPU "repack" buffers lay out Q4_0x8), so the per-token work needs
/// no horizontal sums and one scale multiply per block for all eight rows. The arithmetic per row
/// is llama.cpp's `vec_dot` / tinyBLAS one for these types: each 4-element integer sum rounded to
/// f32, times d_w·d_x, into its own accumulator (eight of them, blocks in order), the eight added
/// as `hsum_float_8` adds them. `corr` comes from [`gemm8_corrections`] for the same `xs`.
pub type Gemm8 = fn([&[u8]; 8], &QuantActs, &[i32], &mut [[f32; 8]]);

/// The per-4-quant corrections a [`Gemm8`] kernel of `ty` takes: −offset · (x_4k + … + x_4k+3),
/// where the kernel's unsigned weights are q + offset (Q5_0: 16, Q8_0: 128).
pub fn gemm8_corrections(ty: GgmlType, xs: &QuantActs) -> Vec<i32> {
    let offset = match ty {
        GgmlType::Q8_0 => 128,
        _ => 16,
    };
    xs.q.chunks_exact(4).map(|c| -offset * c.iter().map(|&v| v as i32).sum::<i32>()).collect()
}

/// The 8-row GEMM kernel for `ty` where this CPU has one (Q5_0; Q8_0 with VNNI; Q4_0 is packed at
/// load instead, [`PackedQ4_0`]).
pub fn gemm8(ty: GgmlType) -> Option<Gemm8> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::gemm8(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// [`Gemm8`] for sixteen rows on 512-bit vectors (lane r = row r, each lane's arithmetic the 8-row
/// kernel's, so the same bits): one `vpdpbusd` and one FMA serve twice the rows.
pub type Gemm16 = fn([&[u8]; 16], &QuantActs, &[i32], &mut [[f32; 16]]);

/// The 16-row GEMM kernel for `ty` where this CPU has one (Q5_0 and Q8_0 with AVX-512 VNNI).
pub fn gemm16(ty: GgmlType) -> Option<Gemm16> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::gemm16(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// Q4_0 rows repacked eight at a time with lanes = rows, made once when a model is loaded for the
/// fast path (llama.cpp's CPU backend does the same with its `block_q4_0x8` "repack" buffers). Per
/// group of eight rows and per block: the eight f16 scales (16 bytes), then for each four-byte
/// column c of the 16 nibble bytes, the eight rows' bytes 4c..4c+4 (4 × 32 bytes): one load gives
/// a register whose lane r holds row r's elements 4c..4c+4 (low nibbles) and 16+4c.. (high).
/// 144 bytes per eight row-blocks, the size of the stored blocks. Rows past the last full group
/// stay in the stored matrix.
#[derive(Clone, Debug)]
pub struct PackedQ4_0 {
    pub groups: usize,
    pub blocks: usize,
    data: Vec<u8>,
}

/// Bytes of one packed block of eight rows.
const PACKED_BLOCK: usize = 144;

impl PackedQ4_0 {
    /// Repack the full groups of eight rows of a Q4_0 matrix (`data`, rows of `cols` values).
    pub fn pack(data: &[u8], rows: usize, cols: usize) -> PackedQ4_0 {
        let (blocks, groups) = (cols / QK, rows / 8);
        let rb = blocks * 18;
        let mut out = vec![0u8; groups * blocks * PACKED_BLOCK];
        for g in 0..groups {
            for i in 0..blocks {
                let o = &mut out[(g * blocks + i) * PACKED_BLOCK..][..PACKED_BLOCK];
                for r in 0..8 {
                    let b = &data[(8 * g + r) * rb + i * 18..][..18];
                    o[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
                    for c in 0..4 {
                        o[16 + 32 * c + 4 * r..][..4].copy_from_slice(&b[2 + 4 * c..2 + 4 * c + 4]);
                    }
                }
            }
        }
        PackedQ4_0 { groups, blocks, data: out }
    }

    /// The packed blocks of group `g` (rows 8g..8g+8).
    pub fn group(&self, g: usize) -> &[u8] {
        &self.data[g * self.blocks * PACKED_BLOCK..(g + 1) * self.blocks * PACKED_BLOCK]
    }
}

/// A kernel over one packed group: `out[t] = [row_0 · x_t, …, row_7 · x_t]` for every row of `xs`.
pub type PackedKernel = fn(&[u8], usize, &QuantActs, &mut [[f32; 8]]);

/// The packed-Q4_0 kernel where this CPU has one (`None`: the fast path does not repack).
pub fn packed_q4_0_kernel() -> Option<PackedKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::packed_q4_0()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// A float-weight kernel of the fast path: one or two stored F16/BF16 rows (`rows.len()`) against
/// one to four f32 activation rows (`xs.len()`), writing `out[w][k] = rows[w] · xs[k]`; the weights
/// are widened with F16C (a shift for BF16) once for the activation rows, and each activation load
/// serves both weight rows. Exact products of the widened weights; only the f32 summation order
/// differs from the exact path's.
pub type FloatKernel = fn(&[&[u8]], &[&[f32]], &mut [[f32; 4]; 2]);

/// The F16/BF16 kernel where this CPU has one.
pub fn float_kernel(ty: GgmlType) -> Option<FloatKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        simd::float_kernel(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// Which kernels [`kernel`] picks on this CPU, for benchmark reports.
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        simd::isa()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "portable"
    }
}

/// x86-64 kernels. Each is `unsafe` (it needs the features it is compiled for) and reached only
/// through `kernel`, which checks them at run time once.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{
        FloatKernel, Gemm16, Gemm8, Kernel, Kernel4, KernelRows, KernelW4, PackedKernel, QuantActs, QuantRow,
        PACKED_BLOCK,
    };
    use crate::quant::{GgmlType, QK_K};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Isa {
        Portable,
        Avx2,
        /// AVX-512 VNNI on 256-bit vectors (`vpdpbusd ymm`)
        Vnni,
    }

    /// The instruction sets this CPU has, best last.
    fn available() -> &'static [Isa] {
        static ISAS: OnceLock<Vec<Isa>> = OnceLock::new();
        ISAS.get_or_init(|| {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            let vnni = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
            let mut v = vec![Isa::Portable];
            if avx2 {
                v.push(Isa::Avx2);
                if vnni {
                    v.push(Isa::Vnni);
                }
            }
            v
        })
    }

    fn detect() -> Isa {
        *available().last().expect("portable is always there")
    }

    /// Every SIMD kernel this CPU can run for `ty`, with its instruction set (the tests compare each).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_kernel(ty: GgmlType) -> Vec<(&'static str, Kernel)> {
        let v = available().iter().filter_map(|&i| Some((name(i), kernel_with(ty, i)?)));
        v.chain(kernel_zmm(ty).map(|k| ("avx512bw", k))).collect()
    }

    /// Every 4-weight-row SIMD kernel this CPU can run for `ty`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_kernel_w4(ty: GgmlType) -> Vec<(&'static str, KernelW4)> {
        available().iter().filter_map(|&i| Some((name(i), kernel_w4_with(ty, i)?))).collect()
    }

    /// Every 4-row SIMD kernel this CPU can run for `ty`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_kernel4(ty: GgmlType) -> Vec<(&'static str, Kernel4)> {
        let v = available().iter().filter_map(|&i| Some((name(i), kernel4_with(ty, i)?)));
        v.chain(kernel4_zmm(ty).map(|k| ("avx512bw", k))).collect()
    }

    pub fn float_kernel(ty: GgmlType) -> Option<FloatKernel> {
        static AVX512F: OnceLock<bool> = OnceLock::new();
        let zmm = *AVX512F.get_or_init(|| is_x86_feature_detected!("avx512f")) && detect() != Isa::Portable;
        // SAFETY (every arm): AVX2, FMA and F16C were detected (every isa past Portable has them),
        // and AVX-512F for the 512-bit ones.
        match ty {
            GgmlType::F16 if zmm => Some(|r, x, o| unsafe { float_f16_zmm(r, x, o) }),
            GgmlType::BF16 if zmm => Some(|r, x, o| unsafe { float_bf16_zmm(r, x, o) }),
            GgmlType::F16 if detect() != Isa::Portable => Some(|r, x, o| unsafe { float_f16(r, x, o) }),
            GgmlType::BF16 if detect() != Isa::Portable => Some(|r, x, o| unsafe { float_bf16(r, x, o) }),
            _ => None,
        }
    }

    /// Every F16/BF16 kernel this CPU can run (256- and 512-bit).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_float_kernel(ty: GgmlType) -> Vec<(&'static str, FloatKernel)> {
        let mut v: Vec<(&'static str, FloatKernel)> = Vec::new();
        if detect() == Isa::Portable {
            return v;
        }
        // SAFETY: as in `float_kernel`
        match ty {
            GgmlType::F16 => v.push(("avx2", |r, x, o| unsafe { float_f16(r, x, o) })),
            GgmlType::BF16 => v.push(("avx2", |r, x, o| unsafe { float_bf16(r, x, o) })),
            _ => return v,
        }
        if is_x86_feature_detected!("avx512f") {
            match ty {
                GgmlType::F16 => v.push(("avx512f", |r, x, o| unsafe { float_f16_zmm(r, x, o) })),
                _ => v.push(("avx512f", |r, x, o| unsafe { float_bf16_zmm(r, x, o) })),
            }
        }
        v
    }

    #[inline(always)]
    unsafe fn widen_f16(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn widen_bf16(p: *const u8) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)), 16))
    }

    macro_rules! float_kernel {
        ($name:ident, $widen:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name(rows: &[&[u8]], xs: &[&[f32]], out: &mut [[f32; 4]; 2]) {
                for (row, o) in rows.iter().zip(out.iter_mut()) {
                    match xs.len() {
                        1 => o[0] = float_rows::<1>(row, [xs[0]], |p| $widen(p))[0],
                        2 => o[..2].copy_from_slice(&float_rows::<2>(row, [xs[0], xs[1]], |p| $widen(p))),
                        3 => o[..3].copy_from_slice(&float_rows::<3>(row, [xs[0], xs[1], xs[2]], |p| $widen(p))),
                        _ => *o = float_rows::<4>(row, [xs[0], xs[1], xs[2], xs[3]], |p| $widen(p)),
                    }
                }
            }
        };
    }
    float_kernel!(float_f16, widen_f16);
    float_kernel!(float_bf16, widen_bf16);

    #[inline(always)]
    unsafe fn widen_f16_zmm(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn widen_bf16_zmm(p: *const u8) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)), 16))
    }

    macro_rules! float_kernel_zmm {
        ($name:ident, $widen:ident) => {
            #[target_feature(enable = "avx2,fma,f16c,avx512f")]
            unsafe fn $name(rows: &[&[u8]], xs: &[&[f32]], out: &mut [[f32; 4]; 2]) {
                let w = |p: *const u8| $widen(p);
                macro_rules! tile {
                    ($W:literal, $R:literal) => {{
                        let y = float_tile_zmm::<$W, $R>(
                            std::array::from_fn(|i| rows[i]),
                            std::array::from_fn(|k| xs[k]),
                            w,
                        );
                        for (o, y) in out.iter_mut().zip(y) {
                            o[..$R].copy_from_slice(&y);
                        }
                    }};
                }
                match (rows.len(), xs.len()) {
                    (1, 1) => tile!(1, 1),
                    (1, 2) => tile!(1, 2),
                    (1, 3) => tile!(1, 3),
                    (1, _) => tile!(1, 4),
                    (_, 1) => tile!(2, 1),
                    (_, 2) => tile!(2, 2),
                    (_, 3) => tile!(2, 3),
                    _ => tile!(2, 4),
                }
            }
        };
    }
    float_kernel_zmm!(float_f16_zmm, widen_f16_zmm);
    float_kernel_zmm!(float_bf16_zmm, widen_bf16_zmm);

    /// `W` weight rows × `R` activation rows on 512-bit vectors: sixteen weights per conversion,
    /// one accumulator per (weight row, activation row); the tail (fewer than 16) in scalar f32.
    #[inline(always)]
    unsafe fn float_tile_zmm<const W: usize, const R: usize>(
        rows: [&[u8]; W],
        x: [&[f32]; R],
        widen: impl Fn(*const u8) -> __m512,
    ) -> [[f32; R]; W] {
        let n = x.iter().fold(rows.iter().fold(usize::MAX, |n, r| n.min(r.len() / 2)), |n, v| n.min(v.len()));
        // two accumulator sets (even and odd 16s), so even one row by one token has two FMA chains
        let (mut acc, mut odd) = ([[_mm512_setzero_ps(); R]; W], [[_mm512_setzero_ps(); R]; W]);
        let mut i = 0;
        while i + 32 <= n {
            let w: [__m512; W] = std::array::from_fn(|j| widen(rows[j].as_ptr().add(2 * i)));
            let v: [__m512; W] = std::array::from_fn(|j| widen(rows[j].as_ptr().add(2 * i + 32)));
            for k in 0..R {
                let (xa, xb) = (_mm512_loadu_ps(x[k].as_ptr().add(i)), _mm512_loadu_ps(x[k].as_ptr().add(i + 16)));
                for j in 0..W {
                    acc[j][k] = _mm512_fmadd_ps(w[j], xa, acc[j][k]);
                    odd[j][k] = _mm512_fmadd_ps(v[j], xb, odd[j][k]);
                }
            }
            i += 32;
        }
        if i + 16 <= n {
            let w: [__m512; W] = std::array::from_fn(|j| widen(rows[j].as_ptr().add(2 * i)));
            for k in 0..R {
                let xa = _mm512_loadu_ps(x[k].as_ptr().add(i));
                for j in 0..W {
                    acc[j][k] = _mm512_fmadd_ps(w[j], xa, acc[j][k]);
                }
            }
            i += 16;
        }
        let mut out = [[0f32; R]; W];
        for j in 0..W {
            for k in 0..R {
                out[j][k] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][k], odd[j][k]));
                if i < n {
                    let mut pad = [0u8; 32];
                    pad[..2 * (n - i)].copy_from_slice(&rows[j][2 * i..2 * n]);
                    let mut tail = [0f32; 16];
                    _mm512_storeu_ps(tail.as_mut_ptr(), widen(pad.as_ptr()));
                    out[j][k] += (0..n - i).map(|e| tail[e] * x[k][i + e]).sum::<f32>();
                }
            }
        }
        out
    }

    /// Eight 2-byte weights at a time widened to f32 by `widen`, against `R` activation rows,
    /// two accumulators per row; the tail (cols not a multiple of 16) in scalar f32.
    #[inline(always)]
    unsafe fn float_rows<const R: usize>(row: &[u8], x: [&[f32]; R], widen: impl Fn(*const u8) -> __m256) -> [f32; R] {
        let n = x.iter().fold(row.len() / 2, |n, v| n.min(v.len()));
        let (mut a, mut b) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let mut i = 0;
        while i + 16 <= n {
            let (w0, w1) = (widen(row.as_ptr().add(2 * i)), widen(row.as_ptr().add(2 * i + 16)));
            for k in 0..R {
                a[k] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[k].as_ptr().add(i)), a[k]);
                b[k] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[k].as_ptr().add(i + 8)), b[k]);
            }
            i += 16;
        }
        let mut out = [0f32; R];
        let mut tail = [0f32; 16];
        let rest = n - i;
        for (k, o) in out.iter_mut().enumerate() {
            *o = hsum_ps(_mm256_add_ps(a[k], b[k]));
        }
        if rest > 0 {
            // widen the last weights through a zero-padded copy (never reads past the row)
            let mut pad = [0u8; 32];
            pad[..2 * rest].copy_from_slice(&row[2 * i..2 * n]);
            _mm256_storeu_ps(tail.as_mut_ptr(), widen(pad.as_ptr()));
            _mm256_storeu_ps(tail.as_mut_ptr().add(8), widen(pad.as_ptr().add(16)));
            for (k, o) in out.iter_mut().enumerate() {
                *o += (0..rest).map(|e| tail[e] * x[k][i + e]).sum::<f32>();
            }
        }
        out
    }

    pub fn packed_q4_0() -> Option<PackedKernel> {
        packed_q4_0_with(detect())
    }

    fn packed_q4_0_with(isa: Isa) -> Option<PackedKernel> {
        // SAFETY (both arms): the features each kernel is compiled for were detected.
        match isa {
            Isa::Vnni => Some(|g, nb, x, o| unsafe { packed_q4_0_vnni(g, nb, x, o) }),
            Isa::Avx2 => Some(|g, nb, x, o| unsafe { packed_q4_0_avx2(g, nb, x, o) }),
            Isa::Portable => None,
        }
    }

    /// Every packed-Q4_0 kernel this CPU can run.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_packed_q4_0() -> Vec<(&'static str, PackedKernel)> {
        available().iter().filter_map(|&i| Some((name(i), packed_q4_0_with(i)?))).collect()
    }

    /// Every 8-row GEMM kernel this CPU can run for `ty`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn every_gemm8(ty: GgmlType) -> Vec<(&'static str, Gemm8)> {
        available().iter().filter_map(|&i| Some((name(i), gemm8_with(ty, i)?))).collect()
    }

    pub fn isa() -> &'static str {
        name(detect())
    }

    fn name(isa: Isa) -> &'static str {
        match isa {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Vnni => "avx512-vnni",
        }
    }

    /// `$pick(ty)`: the kernel of type `$ty` for this CPU's best instruction set; `$with(ty, isa)`:
    /// for a given one (the tests run each).
    macro_rules! dispatch {
        ($pick:ident, $with:ident, $kt:ty $(, $wide:ident)?; $($ty:ident => $avx2:ident, $vnni:ident;)*) => {
            pub fn $pick(ty: GgmlType) -> Option<$kt> {
                $(if let Some(k) = $wide(ty) {
                    return Some(k);
                })?
                $with(ty, detect())
            }

            fn $with(ty: GgmlType, isa: Isa) -> Option<$kt> {
                match ty {
                    // SAFETY (every arm): the features each kernel is compiled for were detected.
                    $(GgmlType::$ty if isa == Isa::Vnni => Some(|r, x| unsafe { $vnni(r, x) }),
                      GgmlType::$ty if isa == Isa::Avx2 => Some(|r, x| unsafe { $avx2(r, x) }),)*
                    _ => None,
                }
            }
        };
    }

    /// AVX-512BW on 512-bit vectors (with VNNI's CPUs' other features): the K-quant kernels below
    /// take two sub-blocks per instruction where the others take one.
    fn zmm() -> bool {
        static ZMM: OnceLock<bool> = OnceLock::new();
        *ZMM.get_or_init(|| {
            detect() == Isa::Vnni && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
        })
    }

    /// The 512-bit 1-row K-quant kernel for `ty`, where this CPU runs it.
    pub fn kernel_zmm(ty: GgmlType) -> Option<Kernel> {
        // SAFETY (every arm): `zmm` detected the features these are compiled for
        match ty {
            GgmlType::Q4_K if zmm() => Some(|r, x| unsafe { q4_k_zmm(r, x) }),
            GgmlType::Q5_K if zmm() => Some(|r, x| unsafe { q5_k_zmm(r, x) }),
            GgmlType::Q6_K if zmm() => Some(|r, x| unsafe { q6_k_zmm(r, x) }),
            _ => None,
        }
    }

    /// The 512-bit 4-row K-quant kernel for `ty`, where this CPU runs it.
    pub fn kernel4_zmm(ty: GgmlType) -> Option<Kernel4> {
        // SAFETY: as in `kernel_zmm`
        match ty {
            GgmlType::Q4_K if zmm() => Some(|r, x| unsafe { q4_k_zmm_4(r, x) }),
            GgmlType::Q5_K if zmm() => Some(|r, x| unsafe { q5_k_zmm_4(r, x) }),
            GgmlType::Q6_K if zmm() => Some(|r, x| unsafe { q6_k_zmm_4(r, x) }),
            _ => None,
        }
    }

    dispatch! { kernel_w4, kernel_w4_with, KernelW4;
        Q8_0 => q8_0_avx2_w4, q8_0_vnni_w4;
        Q4_0 => q4_0_avx2_w4, q4_0_vnni_w4;
        Q5_0 => q5_0_avx2_w4, q5_0_vnni_w4;
    }

    /// The GEMM kernels: Q8_0 with VNNI only (vpmaddubsw's pair sums would saturate on its offset
    /// bytes).
    pub fn gemm8(ty: GgmlType) -> Option<Gemm8> {
        gemm8_with(ty, detect())
    }

    fn gemm8_with(ty: GgmlType, isa: Isa) -> Option<Gemm8> {
        // SAFETY (every arm): the features each kernel is compiled for were detected.
        match (ty, isa) {
            (GgmlType::Q5_0, Isa::Vnni) => Some(|r, x, c, o| unsafe { gemm8_q5_0_vnni(r, x, c, o) }),
            (GgmlType::Q5_0, Isa::Avx2) => Some(|r, x, c, o| unsafe { gemm8_q5_0_avx2(r, x, c, o) }),
            (GgmlType::Q8_0, Isa::Vnni) => Some(|r, x, c, o| unsafe { gemm8_q8_0_vnni(r, x, c, o) }),
            _ => None,
        }
    }

    /// The 16-row GEMM kernels (AVX-512F with VNNI's 512-bit `vpdpbusd`).
    pub fn gemm16(ty: GgmlType) -> Option<Gemm16> {
        static ZMM: OnceLock<bool> = OnceLock::new();
        let zmm = *ZMM.get_or_init(|| detect() == Isa::Vnni && is_x86_feature_detected!("avx512f"));
        // SAFETY (every arm): the features each kernel is compiled for were detected.
        match ty {
            GgmlType::Q5_0 if zmm => Some(|r, x, c, o| unsafe { gemm16_q5_0(r, x, c, o) }),
            GgmlType::Q8_0 if zmm => Some(|r, x, c, o| unsafe { gemm16_q8_0(r, x, c, o) }),
            _ => None,
        }
    }

    dispatch! { kernel4, kernel4_with, Kernel4, kernel4_zmm;
        Q8_0 => q8_0_avx2_4, q8_0_vnni_4;
        Q4_0 => q4_0_avx2_4, q4_0_vnni_4;
        Q5_0 => q5_0_avx2_4, q5_0_vnni_4;
        Q4_K => q4_k_avx2_4, q4_k_vnni_4;
        Q5_K => q5_k_avx2_4, q5_k_vnni_4;
        Q6_K => q6_k_avx2_4, q6_k_vnni_4;
    }

    dispatch! { kernel, kernel_with, Kernel;
        Q8_0 => q8_0_avx2, q8_0_vnni;
        Q4_0 => q4_0_avx2, q4_0_vnni;
        Q5_0 => q5_0_avx2, q5_0_vnni;
        Q4_K => q4_k_avx2, q4_k_vnni;
        Q6_K => q6_k_avx2, q6_k_vnni;
        Q4_1 => q4_1_avx2, q4_1_avx2;
        Q5_1 => q5_1_avx2, q5_1_avx2;
        Q5_K => q5_k_avx2, q5_k_vnni;
    }

    // ---- helpers ----

    #[inline(always)]
    unsafe fn f16(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[inline(always)]
    unsafe fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// sum over each 4 bytes of (unsigned `u`) * (signed `s`), as 8 i32: `vpdpbusd` or
    /// `vpmaddubsw` + `vpmaddwd`. `u` must be ≤ 128 per byte, so the 16-bit pair sums cannot saturate.
    #[inline(always)]
    unsafe fn dot_us<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }

    /// 16 bytes of nibbles: low nibbles in the low lane (elements 0..16), high in the high lane.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m))
    }

    /// 32 bits to 32 bytes: 0xFF where the bit is set (ggml's `bytes_from_bits_32`).
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    // ---- the 32-blocks against Q8_0 activations ----

    macro_rules! block32 {
        ($avx2:ident, $vnni:ident, $avx2_4:ident, $vnni_4:ident, $avx2_w4:ident, $vnni_w4:ident, $bb:expr,
         |$b:ident| $weights:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $avx2_w4(rows: [&[u8]; 4], x: QuantRow) -> [f32; 4] {
                block32_weight_rows::<false>(rows, x, $bb, |$b| $weights)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn $vnni_w4(rows: [&[u8]; 4], x: QuantRow) -> [f32; 4] {
                block32_weight_rows::<true>(rows, x, $bb, |$b| $weights)
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $avx2(row: &[u8], x: QuantRow) -> f32 {
                block32_rows::<false, 1>(row, &[x], $bb, |$b| $weights)[0]
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn $vnni(row: &[u8], x: QuantRow) -> f32 {
                block32_rows::<true, 1>(row, &[x], $bb, |$b| $weights)[0]
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $avx2_4(row: &[u8], x: &[QuantRow; 4]) -> [f32; 4] {
                block32_rows::<false, 4>(row, x, $bb, |$b| $weights)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn $vnni_4(row: &[u8], x: &[QuantRow; 4]) -> [f32; 4] {
                block32_rows::<true, 4>(row, x, $bb, |$b| $weights)
            }
        };
    }

    /// Four weight rows against one activation row (decode's matrix-vector product): each
    /// activation block is loaded once for the four, and the four accumulators are independent.
    #[inline(always)]
    unsafe fn block32_weight_rows<const VNNI: bool>(
        rows: [&[u8]; 4],
        x: QuantRow,
        bb: usize,
        weights: impl Fn(&[u8]) -> __m256i,
    ) -> [f32; 4] {
        let nb = rows.iter().fold(x.d.len(), |n, r| n.min(r.len() / bb));
        // the four rows are consecutive in memory: fetch the next four while these are read
        let ahead = 4 * rows[0].len();
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..nb {
            let y = load(x.q.as_ptr().add(32 * i));
            let dx = x.d[i];
            for (a, row) in acc.iter_mut().zip(rows) {
                let b = &row[i * bb..(i + 1) * bb];
                _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(ahead) as *const i8);
                let w = weights(b);
                let p = dot_us::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
                *a = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0) * dx), _mm256_cvtepi32_ps(p), *a);
            }
        }
        acc.map(|a| hsum_ps(a))
    }

    /// For each of `R` activation rows: the sum over blocks of d_w · d_x · Σ q_w q_x, the weights
    /// of a block as 32 signed bytes. Each weight block is decoded once for the `R` rows (a
    /// register tile of a prefill GEMM); even and odd blocks go to separate accumulators so the
    /// FMA latency chain is halved.
    #[inline(always)]
    unsafe fn block32_rows<const VNNI: bool, const R: usize>(
        row: &[u8],
        xs: &[QuantRow; R],
        bb: usize,
        weights: impl Fn(&[u8]) -> __m256i,
    ) -> [f32; R] {
        let nb = xs.iter().fold(row.len() / bb, |n, x| n.min(x.d.len()));
        let (mut even, mut odd) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let mut i = 0;
        while i + 2 <= nb {
            block32_step::<VNNI, R>(row, xs, bb, &weights, i, &mut even);
            block32_step::<VNNI, R>(row, xs, bb, &weights, i + 1, &mut odd);
            i += 2;
        }
        if i < nb {
            block32_step::<VNNI, R>(row, xs, bb, &weights, i, &mut even);
        }
        let mut out = [0f32; R];
        for ((o, e), d) in out.iter_mut().zip(even).zip(odd) {
            *o = hsum_ps(_mm256_add_ps(e, d));
        }
        out
    }

    /// One weight block `i` against `R` activation rows, into `acc`.
    #[inline(always)]
    unsafe fn block32_step<const VNNI: bool, const R: usize>(
        row: &[u8],
        xs: &[QuantRow; R],
        bb: usize,
        weights: &impl Fn(&[u8]) -> __m256i,
        i: usize,
        acc: &mut [__m256; R],
    ) {
        let b = &row[i * bb..(i + 1) * bb];
        // the next rows follow this one in memory: ask for the bytes 1 KiB ahead now
        _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(1024) as *const i8);
        let w = weights(b);
        let aw = _mm256_sign_epi8(w, w);
        let dw = f16(b, 0);
        for (a, x) in acc.iter_mut().zip(xs) {
            // |w| · (y · sign w): the unsigned × signed product of the signed pair
            let y = _mm256_sign_epi8(load(x.q.as_ptr().add(32 * i)), w);
            let p = dot_us::<VNNI>(aw, y);
            *a = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[i]), _mm256_cvtepi32_ps(p), *a);
        }
    }

    block32!(q8_0_avx2, q8_0_vnni, q8_0_avx2_4, q8_0_vnni_4, q8_0_avx2_w4, q8_0_vnni_w4, 34, |b| load(
        b.as_ptr().add(2) as *const i8
    ));
    block32!(q4_0_avx2, q4_0_vnni, q4_0_avx2_4, q4_0_vnni_4, q4_0_avx2_w4, q4_0_vnni_w4, 18, |b| _mm256_sub_epi8(
        nibbles(b.as_ptr().add(2)),
        _mm256_set1_epi8(8)
    ));
    block32!(q5_0_avx2, q5_0_vnni, q5_0_avx2_4, q5_0_vnni_4, q5_0_avx2_w4, q5_0_vnni_w4, 22, |b| {
        // (nibble | bit << 4) - 16: a clear bit makes the byte nibble | 0xF0
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let hi = _mm256_andnot_si256(bits_to_bytes(qh), _mm256_set1_epi8(0xF0u8 as i8));
        _mm256_or_si256(nibbles(b.as_ptr().add(6)), hi)
    });

    // ---- prefill GEMM: eight rows repacked with lanes = rows ----

    /// The 8×8 transpose of 32-bit elements: `w[r]` holds row r's bytes 4j..4j+4 in element j;
    /// afterwards `w[j]` holds them for every row r in element r.
    #[inline(always)]
    unsafe fn transpose8(w: &mut [__m256i; 8]) {
        let t0 = _mm256_unpacklo_epi32(w[0], w[1]);
        let t1 = _mm256_unpackhi_epi32(w[0], w[1]);
        let t2 = _mm256_unpacklo_epi32(w[2], w[3]);
        let t3 = _mm256_unpackhi_epi32(w[2], w[3]);
        let t4 = _mm256_unpacklo_epi32(w[4], w[5]);
        let t5 = _mm256_unpackhi_epi32(w[4], w[5]);
        let t6 = _mm256_unpacklo_epi32(w[6], w[7]);
        let t7 = _mm256_unpackhi_epi32(w[6], w[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        w[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
        w[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
        w[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
        w[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
        w[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
        w[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
        w[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
        w[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
    }

    /// Eight rows of 32-blocks (`bb` bytes each, the f16 scale first) against every activation
    /// row. Each block's weights are `unsigned(b)` = q + offset ≥ 0 (so `vpdpbusd` applies), and
    /// each 4-element sum starts at `corr` = −offset · Σ of those 4 x: the same integer lane sums as
    /// llama.cpp's signed ones.
    #[inline(always)]
    unsafe fn gemm8_block32<const VNNI: bool>(
        rows: [&[u8]; 8],
        xs: &QuantActs,
        corr: &[i32],
        out: &mut [[f32; 8]],
        bb: usize,
        unsigned: impl Fn(&[u8]) -> __m256i,
    ) {
        let nb = rows.iter().fold(xs.cols / 32, |n, r| n.min(r.len() / bb));
        assert!(corr.len() >= xs.rows * xs.cols / 4, "corrections for every 4 activations");
        // the repack: per block, eight registers of (row r: 4 bytes) and the eight rows' scales
        let mut packed: Vec<[__m256i; 8]> = Vec::with_capacity(nb);
        let mut scales: Vec<__m256> = Vec::with_capacity(nb);
        for i in 0..nb {
            let mut w = [_mm256_setzero_si256(); 8];
            let mut d = [0u16; 8];
            for (r, row) in rows.iter().enumerate() {
                let b = &row[i * bb..(i + 1) * bb];
                w[r] = unsigned(b);
                d[r] = u16::from_le_bytes([b[0], b[1]]);
            }
            transpose8(&mut w);
            packed.push(w);
            scales.push(_mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr() as *const __m128i)));
        }
        for (t, o) in out.iter_mut().enumerate().take(xs.rows) {
            let x = xs.row(t);
            let c = &corr[t * xs.cols / 4..(t + 1) * xs.cols / 4];
            // acc[j]: the eight rows' lane j (elements 4j..4j+4 of each block), as llama.cpp's
            // 8-lane accumulator holds it
            let mut acc = [_mm256_setzero_ps(); 8];
            for (i, (w, dw)) in packed.iter().zip(&scales).enumerate() {
                let q = x.q.as_ptr().add(32 * i) as *const i32;
                let d = _mm256_mul_ps(*dw, _mm256_set1_ps(x.d[i]));
                for (j, (wj, a)) in w.iter().zip(acc.iter_mut()).enumerate() {
                    let init = _mm256_set1_epi32(c[8 * i + j]);
                    let xj = _mm256_set1_epi32(q.add(j).read_unaligned());
                    let p = if VNNI {
                        _mm256_dpbusd_epi32(init, *wj, xj)
                    } else {
                        _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(*wj, xj), _mm256_set1_epi16(1)))
                    };
                    *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *a);
                }
            }
            // hsum_float_8's order: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
            let c: [__m256; 4] = std::array::from_fn(|k| _mm256_add_ps(acc[k], acc[k + 4]));
            let sum = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
            _mm256_storeu_ps(o.as_mut_ptr(), sum);
        }
    }

    /// [`gemm8_block32`] for sixteen rows: rows 0..8 in the low 256 bits of every register, 8..16
    /// in the high ones, each lane's operations those of the 8-row kernel.
    #[inline(always)]
    unsafe fn gemm16_block32(
        rows: [&[u8]; 16],
        xs: &QuantActs,
        corr: &[i32],
        out: &mut [[f32; 16]],
        bb: usize,
        unsigned: impl Fn(&[u8]) -> __m256i,
    ) {
        let nb = rows.iter().fold(xs.cols / 32, |n, r| n.min(r.len() / bb));
        assert!(corr.len() >= xs.rows * xs.cols / 4, "corrections for every 4 activations");
        let mut packed: Vec<[__m512i; 8]> = Vec::with_capacity(nb);
        let mut scales: Vec<__m512> = Vec::with_capacity(nb);
        for i in 0..nb {
            let mut w = [[_mm256_setzero_si256(); 8]; 2];
            let mut d = [0u16; 16];
            for (r, row) in rows.iter().enumerate() {
                let b = &row[i * bb..(i + 1) * bb];
                w[r / 8][r % 8] = unsigned(b);
                d[r] = u16::from_le_bytes([b[0], b[1]]);
            }
            transpose8(&mut w[0]);
            transpose8(&mut w[1]);
            let mut v = [_mm512_setzero_si512(); 8];
            for j in 0..8 {
                v[j] = join(w[0][j], w[1][j]);
            }
            packed.push(v);
            scales.push(_mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr() as *const __m256i)));
        }
        for (t, o) in out.iter_mut().enumerate().take(xs.rows) {
            let x = xs.row(t);
            let c = &corr[t * xs.cols / 4..(t + 1) * xs.cols / 4];
            let mut acc = [_mm512_setzero_ps(); 8];
            for (i, (w, dw)) in packed.iter().zip(&scales).enumerate() {
                let q = x.q.as_ptr().add(32 * i) as *const i32;
                let d = _mm512_mul_ps(*dw, _mm512_set1_ps(x.d[i]));
                for (j, (wj, a)) in w.iter().zip(acc.iter_mut()).enumerate() {
                    let p = _mm512_dpbusd_epi32(
                        _mm512_set1_epi32(c[8 * i + j]),
                        *wj,
                        _mm512_set1_epi32(q.add(j).read_unaligned()),
                    );
                    *a = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), *a);
                }
            }
            let c: [__m512; 4] = std::array::from_fn(|k| _mm512_add_ps(acc[k], acc[k + 4]));
            let sum = _mm512_add_ps(_mm512_add_ps(c[0], c[2]), _mm512_add_ps(c[1], c[3]));
            _mm512_storeu_ps(o.as_mut_ptr(), sum);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl")]
    unsafe fn gemm16_q5_0(rows: [&[u8]; 16], xs: &QuantActs, corr: &[i32], out: &mut [[f32; 16]]) {
        gemm16_block32(rows, xs, corr, out, 22, |b| q5_0_unsigned(b))
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl")]
    unsafe fn gemm16_q8_0(rows: [&[u8]; 16], xs: &QuantActs, corr: &[i32], out: &mut [[f32; 16]]) {
        gemm16_block32(rows, xs, corr, out, 34, |b| {
            _mm256_xor_si256(load(b.as_ptr().add(2) as *const i8), _mm256_set1_epi8(-128))
        })
    }

    /// Q5_0 unsigned: nibble | bit << 4, 0..32.
    #[inline(always)]
    unsafe fn q5_0_unsigned(b: &[u8]) -> __m256i {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles(b.as_ptr().add(6)), hi)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gemm8_q5_0_avx2(rows: [&[u8]; 8], xs: &QuantActs, corr: &[i32], out: &mut [[f32; 8]]) {
        gemm8_block32::<false>(rows, xs, corr, out, 22, |b| q5_0_unsigned(b))
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn gemm8_q5_0_vnni(rows: [&[u8]; 8], xs: &QuantActs, corr: &[i32], out: &mut [[f32; 8]]) {
        gemm8_block32::<true>(rows, xs, corr, out, 22, |b| q5_0_unsigned(b))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn packed_q4_0_avx2(g: &[u8], nb: usize, xs: &QuantActs, out: &mut [[f32; 8]]) {
        packed_q4_0_tiles::<false>(g, nb, xs, out)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn packed_q4_0_vnni(g: &[u8], nb: usize, xs: &QuantActs, out: &mut [[f32; 8]]) {
        packed_q4_0_tiles::<true>(g, nb, xs, out)
    }

    /// The tokens four at a time (each packed block unpacked once for the four), then the rest.
    #[inline(always)]
    unsafe fn packed_q4_0_tiles<const VNNI: bool>(g: &[u8], nb: usize, xs: &QuantActs, out: &mut [[f32; 8]]) {
        let nb = nb.min(xs.cols / 32).min(g.len() / PACKED_BLOCK);
        let mut t = 0;
        while t + 4 <= xs.rows {
            packed_q4_0_tile::<VNNI, 4>(g, nb, xs, t, out);
            t += 4;
        }
        while t < xs.rows {
            packed_q4_0_tile::<VNNI, 1>(g, nb, xs, t, out);
            t += 1;
        }
    }

    /// `R` tokens against one packed group. Per block and token: one integer sum per row (lanes =
    /// rows; weights q + 8 ≥ 0 and the 8 · Σx taken back), then one FMA for the eight rows, the
    /// blocks in order into one accumulator — llama.cpp's `q4_0_8x8_q8_0` GEMV/GEMM arithmetic.
    #[inline(always)]
    unsafe fn packed_q4_0_tile<const VNNI: bool, const R: usize>(
        g: &[u8],
        nb: usize,
        xs: &QuantActs,
        t0: usize,
        out: &mut [[f32; 8]],
    ) {
        let x: [QuantRow; R] = std::array::from_fn(|k| xs.row(t0 + k));
        let m4 = _mm256_set1_epi8(0x0F);
        let mut sum = [_mm256_setzero_ps(); R];
        for i in 0..nb {
            let b = g.as_ptr().add(i * PACKED_BLOCK);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * PACKED_BLOCK) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * PACKED_BLOCK + 64) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * PACKED_BLOCK + 128) as *const i8);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
            let mut w = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let q = _mm256_loadu_si256(b.add(16 + 32 * c) as *const __m256i);
                w[c] = _mm256_and_si256(q, m4);
                w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            }
            for k in 0..R {
                let q = x[k].q.as_ptr().add(32 * i) as *const i32;
                let s = x[k].sums[2 * i] as i32 + x[k].sums[2 * i + 1] as i32;
                let mut acc = _mm256_set1_epi32(-8 * s);
                for (j, wj) in w.iter().enumerate() {
                    let xj = _mm256_set1_epi32(q.add(j).read_unaligned());
                    acc = if VNNI {
                        _mm256_dpbusd_epi32(acc, *wj, xj)
                    } else {
                        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(*wj, xj), _mm256_set1_epi16(1)))
                    };
                }
                sum[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(dw, _mm256_set1_ps(x[k].d[i])), sum[k]);
            }
        }
        for k in 0..R {
            _mm256_storeu_ps(out[t0 + k].as_mut_ptr(), sum[k]);
        }
    }

    /// Q8_0 unsigned: q + 128 (the sign bit flipped).
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn gemm8_q8_0_vnni(rows: [&[u8]; 8], xs: &QuantActs, corr: &[i32], out: &mut [[f32; 8]]) {
        gemm8_block32::<true>(rows, xs, corr, out, 34, |b| {
            _mm256_xor_si256(load(b.as_ptr().add(2) as *const i8), _mm256_set1_epi8(-128))
        })
    }

    /// Q4_1/Q5_1: d · d_x · Σ q_w q_x + m · d_x · Σ q_x (unsigned weights, no sign trick).
    #[inline(always)]
    unsafe fn block32_min(row: &[u8], x: QuantRow, bb: usize, weights: impl Fn(&[u8]) -> __m256i) -> f32 {
        let nb = (row.len() / bb).min(x.d.len());
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for i in 0..nb {
            let b = &row[i * bb..(i + 1) * bb];
            let p = dot_us::<false>(weights(b), load(x.q.as_ptr().add(32 * i)));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0) * x.d[i]), _mm256_cvtepi32_ps(p), acc);
            let qsum = x.sums[2 * i] as i32 + x.sums[2 * i + 1] as i32;
            mins += f16(b, 2) * x.d[i] * qsum as f32;
        }
        hsum_ps(acc) + mins
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_avx2(row: &[u8], x: QuantRow) -> f32 {
        block32_min(row, x, 20, |b| nibbles(b.as_ptr().add(4)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_1_avx2(row: &[u8], x: QuantRow) -> f32 {
        block32_min(row, x, 24, |b| {
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles(b.as_ptr().add(8)), hi)
        })
    }

    // ---- the K-quants against Q8_K activations ----

    /// A Q4_K/Q5_K super-block's 8 sub-blocks of 32 as unsigned bytes (4 or 5 bits).
    #[inline(always)]
    unsafe fn q45_k_subblocks<const FIVE: bool>(b: &[u8]) -> [__m256i; 8] {
        let m4 = _mm256_set1_epi8(0x0F);
        let ql = b.as_ptr().add(if FIVE { 48 } else { 16 });
        let qh = if FIVE { _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i) } else { _mm256_setzero_si256() };
        let mut w = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let q = _mm256_loadu_si256(ql.add(32 * c) as *const __m256i);
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if FIVE {
                // bit 2c of qh[l] is element l's fifth bit in sub-block 2c, bit 2c+1 in 2c+1
                let one = _mm256_set1_epi8(1);
                let b0 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32)), one);
                let b1 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32 + 1)), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            (w[2 * c], w[2 * c + 1]) = (lo, hi);
        }
        w
    }

    /// A Q6_K super-block's 8 groups of 32 unsigned 6-bit values; element 32m + l has scale
    /// (32m + l) / 16.
    #[inline(always)]
    unsafe fn q6_k_groups(b: &[u8]) -> [__m256i; 8] {
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        let mut w = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            let ql0 = _mm256_loadu_si256(b.as_ptr().add(64 * n) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.as_ptr().add(64 * n + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * n) as *const __m256i);
            w[4 * n] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            w[4 * n + 1] = _mm256_or_si256(
                _mm256_and_si256(ql1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
            );
            w[4 * n + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
            );
            w[4 * n + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
            );
        }
        w
    }

    /// Q4_K/Q5_K for `R` activation rows: per super-block
    /// d · d_x · Σ_j sc_j Σ q_w q_x − dmin · d_x · Σ_j m_j Σ q_x, the weights decoded once for the rows.
    #[inline(always)]
    unsafe fn q45_k<const VNNI: bool, const FIVE: bool, const R: usize>(row: &[u8], xs: &[QuantRow; R]) -> [f32; R] {
        let bb = if FIVE { 176 } else { 144 };
        let nb = xs.iter().fold(row.len() / bb, |n, x| n.min(x.d.len()));
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for i in 0..nb {
            let b = &row[i * bb..(i + 1) * bb];
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(2 * bb) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(2 * bb + 64) as *const i8);
            let (dw, dminw) = (f16(b, 0), f16(b, 2));
            let (mut sc, mut mn) = ([0i32; 8], [0i32; 8]);
            for j in 0..8 {
                let (a, m) = crate::quant::scale_min_k4(j, &b[4..16]);
                (sc[j], mn[j]) = (a as i32, m as i32);
            }
            let w = q45_k_subblocks::<FIVE>(b);
            for k in 0..R {
                let x = &xs[k];
                let sums = &x.sums[16 * i..16 * i + 16];
                let mut msum = 0i32;
                for j in 0..8 {
                    msum += mn[j] * (sums[2 * j] as i32 + sums[2 * j + 1] as i32);
                }
                mins[k] += dminw * x.d[i] * msum as f32;
                let xq = x.q.as_ptr().add(QK_K * i);
                let mut isum = _mm256_setzero_si256();
                for j in 0..8 {
                    // the scale applied to the 16-bit pair sums (≤ 2·31·127) in the same
                    // instruction that adds the pairs: the lane sums dot_us · sc gives, without
                    // vpmulld's two µops
                    let p = _mm256_maddubs_epi16(w[j], load(xq.add(32 * j)));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_set1_epi16(sc[j] as i16)));
                }
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[i]), _mm256_cvtepi32_ps(isum), acc[k]);
            }
        }
        let mut out = [0f32; R];
        for k in 0..R {
            out[k] = hsum_ps(acc[k]) - mins[k];
        }
        out
    }

    /// Q6_K for `R` activation rows: d · d_x · Σ_g sc_g (Σ q_w q_x − 32 Σ q_x), q_w the unsigned
    /// 6-bit value, g per 16; the weights decoded once for the rows.
    #[inline(always)]
    unsafe fn q6_k<const VNNI: bool, const R: usize>(row: &[u8], xs: &[QuantRow; R]) -> [f32; R] {
        let nb = xs.iter().fold(row.len() / 210, |n, x| n.min(x.d.len()));
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offsets = [0f32; R];
        for i in 0..nb {
            let b = &row[i * 210..(i + 1) * 210];
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(420) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(484) as *const i8);
            let dw = f16(b, 208);
            let sc = &b[192..208];
            // 8 groups of 32 unsigned 6-bit values; element 32m + l has scale (32m + l) / 16
            let w = q6_k_groups(b);
            let mut s = [_mm256_setzero_si256(); 8];
            for (m, sm) in s.iter_mut().enumerate() {
                // the low 128-bit lane holds elements l < 16 (scale 2m), the high one 2m + 1
                *sm = _mm256_set_m128i(
                    _mm_set1_epi16((sc[2 * m + 1] as i8) as i16),
                    _mm_set1_epi16((sc[2 * m] as i8) as i16),
                );
            }
            for k in 0..R {
                let x = &xs[k];
                let mut offset = 0i32;
                for (&sg, &q) in sc.iter().zip(&x.sums[16 * i..16 * i + 16]) {
                    offset += (sg as i8) as i32 * q as i32;
                }
                let xq = x.q.as_ptr().add(QK_K * i);
                let mut isum = _mm256_setzero_si256();
                for m in 0..8 {
                    // pair sums ≤ 2·63·127 fit 16 bits; vpmaddwd applies the scale as it adds them
                    let p = _mm256_maddubs_epi16(w[m], load(xq.add(32 * m)));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, s[m]));
                }
                let d = dw * x.d[i];
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc[k]);
                offsets[k] += d * (32 * offset) as f32;
            }
        }
        let mut out = [0f32; R];
        for k in 0..R {
            out[k] = hsum_ps(acc[k]) - offsets[k];
        }
        out
    }

    /// Sixteen i16 pair sums of a super-block's activation sums against `m16` (each weight
    /// scale or min twice, or once per 16), as one i32: the integer the scalar loops add up.
    #[inline(always)]
    unsafe fn dot_sums16(sums: &[i16], m16: __m256i) -> i32 {
        let p = _mm256_madd_epi16(_mm256_loadu_si256(sums.as_ptr() as *const __m256i), m16);
        let q = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        let q = _mm_add_epi32(q, _mm_shuffle_epi32::<0b01_00_11_10>(q));
        let q = _mm_add_epi32(q, _mm_shuffle_epi32::<0b10_11_00_01>(q));
        _mm_cvtsi128_si32(q)
    }

    /// Q6_K group m's scales as i16: its low 128-bit lane has scale 2m, the high one 2m + 1.
    #[inline(always)]
    unsafe fn group_scales(sc: &[u8], m: usize) -> __m256i {
        _mm256_set_m128i(_mm_set1_epi16((sc[2 * m + 1] as i8) as i16), _mm_set1_epi16((sc[2 * m] as i8) as i16))
    }

    /// [`dot_sums16`] for four activation rows at once: the four integers in one register.
    #[inline(always)]
    unsafe fn dot_sums16_x4(xs: &[QuantRow], i: usize, m16: __m256i) -> __m128i {
        let mut p = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            p[k] =
                _mm256_madd_epi16(_mm256_loadu_si256(xs[k].sums[16 * i..16 * i + 16].as_ptr() as *const __m256i), m16);
        }
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
    }

    /// Two 256-bit halves as one 512-bit vector (`lo` in the low half).
    #[inline(always)]
    unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// The eight low 256-bit lanes of a 512-bit i32 sum plus the eight high ones: `q45_k`'s and
    /// `q6_k`'s per-lane integers, which add sub-block j in lane l whichever half held it.
    #[inline(always)]
    unsafe fn fold(v: __m512i) -> __m256i {
        _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
    }

    /// One K-quant super-block decoded for the 512-bit kernels: the weights as unsigned bytes, two
    /// sub-blocks (Q4_K/Q5_K) or groups of 32 (Q6_K) per register with their scales as i16 in the
    /// matching halves; `m16`, the mins (each twice) or the Q6_K group scales against the 16
    /// activation sums; `low` = dmin (Q4_K/Q5_K) or d (Q6_K), `shift` 0 or 5 (Q6_K's 32·Σ).
    #[derive(Clone, Copy)]
    pub struct KBlock {
        w: [__m512i; 4],
        s: [__m512i; 4],
        m16: __m256i,
        d: f32,
        low: f32,
    }

    #[inline(always)]
    unsafe fn decode_q45_k<const FIVE: bool>(b: &[u8]) -> KBlock {
        let (d, low) = (f16(b, 0), f16(b, 2));
        // the 6-bit scales and mins of the 8 sub-blocks (ggml's kmask unpacking of `scale_min_k4`)
        let u: [u32; 3] = std::array::from_fn(|k| u32::from_le_bytes(b[4 + 4 * k..8 + 4 * k].try_into().unwrap()));
        let [u0, u1, u2] = u;
        let sc = [(u0 & 0x3f3f_3f3f), (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4)];
        let mn = [(u1 & 0x3f3f_3f3f), ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4)];
        let sc: [u8; 8] = std::array::from_fn(|j| (sc[j / 4] >> (8 * (j % 4))) as u8);
        let mb = _mm_set_epi32(0, 0, mn[1] as i32, mn[0] as i32);
        let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mb, mb));
        let g = q45_k_subblocks::<FIVE>(b);
        let mut w = [_mm512_setzero_si512(); 4];
        let mut s = [_mm512_setzero_si512(); 4];
        for c in 0..4 {
            // sub-blocks 2c and 2c + 1
            w[c] = join(g[2 * c], g[2 * c + 1]);
            s[c] = join(_mm256_set1_epi16(sc[2 * c] as i16), _mm256_set1_epi16(sc[2 * c + 1] as i16));
        }
        KBlock { w, s, m16, d, low }
    }

    #[inline(always)]
    unsafe fn decode_q6_k(b: &[u8]) -> KBlock {
        let d = f16(b, 208);
        let sc = &b[192..208];
        let m16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr() as *const __m128i));
        let g = q6_k_groups(b);
        let mut w = [_mm512_setzero_si512(); 4];
        let mut s = [_mm512_setzero_si512(); 4];
        for c in 0..4 {
            w[c] = join(g[2 * c], g[2 * c + 1]);
            s[c] = join(group_scales(sc, 2 * c), group_scales(sc, 2 * c + 1));
        }
        KBlock { w, s, m16, d, low: d }
    }

    /// The running sums of `R` activation rows against K-quant super-blocks: `acc` (8 lanes per
    /// row, as [`q45_k`] and [`q6_k`] hold them) and `low`, the mins (Q4_K/Q5_K) or 32·offset
    /// (Q6_K) term, per row (`low4` for four rows at once: the same steps per lane).
    struct KSums<const R: usize> {
        acc: [__m256; R],
        low: [f32; R],
        low4: __m128,
    }

    impl<const R: usize> KSums<R> {
        #[inline(always)]
        unsafe fn new() -> Self {
            KSums { acc: [_mm256_setzero_ps(); R], low: [0.0; R], low4: _mm_setzero_ps() }
        }

        /// Super-block `i` (decoded as `k`) against the rows: `SHIFT` 0 (mins) or 5 (Q6_K's 32·Σ).
        #[inline(always)]
        unsafe fn add<const SHIFT: i32>(&mut self, k: &KBlock, i: usize, xs: &[QuantRow; R]) {
            if R == 4 {
                // (low · d_x) · (Σ << SHIFT) as f32 per lane, as the scalar steps below
                let xd = _mm_set_ps(xs[3].d[i], xs[2].d[i], xs[1].d[i], xs[0].d[i]);
                let m = _mm_cvtepi32_ps(_mm_slli_epi32::<SHIFT>(dot_sums16_x4(xs, i, k.m16)));
                self.low4 = _mm_add_ps(self.low4, _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(k.low), xd), m));
            }
            for (t, x) in xs.iter().enumerate() {
                if R != 4 {
                    let m = dot_sums16(&x.sums[16 * i..16 * i + 16], k.m16) << SHIFT;
                    self.low[t] += k.low * x.d[i] * m as f32;
                }
                let xq = x.q.as_ptr().add(QK_K * i);
                let mut isum = _mm512_setzero_si512();
                for c in 0..4 {
                    let p = _mm512_maddubs_epi16(k.w[c], _mm512_loadu_si512(xq.add(64 * c) as *const _));
                    isum = _mm512_add_epi32(isum, _mm512_madd_epi16(p, k.s[c]));
                }
                self.acc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(k.d * x.d[i]), _mm256_cvtepi32_ps(fold(isum)), self.acc[t]);
            }
        }

        #[inline(always)]
        unsafe fn finish(mut self) -> [f32; R] {
            if R == 4 {
                _mm_storeu_ps(self.low.as_mut_ptr(), self.low4);
            }
            let mut out = [0f32; R];
            for (t, o) in out.iter_mut().enumerate() {
                *o = hsum_ps(self.acc[t]) - self.low[t];
            }
            out
        }
    }

    /// [`q45_k`] on 512-bit vectors: sub-blocks j and j + 1 in one register (the 64 activation
    /// bytes they meet are consecutive), their scales in its two halves, and the mins' sum as one
    /// `vpmaddwd` on the activation sums. The same integers per lane, then the same float steps,
    /// so the same bits.
    #[inline(always)]
    unsafe fn q45_k_zmm<const FIVE: bool, const R: usize>(row: &[u8], xs: &[QuantRow; R]) -> [f32; R] {
        let bb = if FIVE { 176 } else { 144 };
        let nb = xs.iter().fold(row.len() / bb, |n, x| n.min(x.d.len()));
        let mut sums = KSums::<R>::new();
        for i in 0..nb {
            let b = &row[i * bb..(i + 1) * bb];
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(2 * bb) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(2 * bb + 64) as *const i8);
            sums.add::<0>(&decode_q45_k::<FIVE>(b), i, xs);
        }
        sums.finish()
    }

    /// [`q6_k`] on 512-bit vectors: groups m and m + 1 in one register, the offset's sum as one
    /// `vpmaddwd`; the same integers per lane and float steps, so the same bits.
    #[inline(always)]
    unsafe fn q6_k_zmm_rows<const R: usize>(row: &[u8], xs: &[QuantRow; R]) -> [f32; R] {
        let nb = xs.iter().fold(row.len() / 210, |n, x| n.min(x.d.len()));
        let mut sums = KSums::<R>::new();
        for i in 0..nb {
            let b = &row[i * 210..(i + 1) * 210];
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(420) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(484) as *const i8);
            sums.add::<5>(&decode_q6_k(b), i, xs);
        }
        sums.finish()
    }

    /// One stored K-quant row against every activation row: the row decoded once (into this
    /// thread's scratch), then four activation rows at a time and the rest one by one, each as
    /// `q45_k_zmm` / `q6_k_zmm_rows` computes it.
    #[inline(always)]
    unsafe fn k_row_all<const SIX: bool, const FIVE: bool>(row: &[u8], xs: &QuantActs, out: &mut [f32]) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<KBlock>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let bb = if SIX {
            210
        } else if FIVE {
            176
        } else {
            144
        };
        let nb = (row.len() / bb).min(xs.cols / QK_K);
        // taken out and put back: the work stays in this function, which has the target features
        // (a closure would not)
        let mut blocks = SCRATCH.take();
        blocks.clear();
        for i in 0..nb {
            let b = &row[i * bb..(i + 1) * bb];
            blocks.push(if SIX { decode_q6_k(b) } else { decode_q45_k::<FIVE>(b) });
        }
        k_blocks_all::<SIX>(&blocks, xs, out);
        SCRATCH.set(blocks);
    }

    #[inline(always)]
    unsafe fn k_blocks_all<const SIX: bool>(blocks: &[KBlock], xs: &QuantActs, out: &mut [f32]) {
        let n = xs.rows;
        let mut t = 0;
        while t + 4 <= n {
            let rows = [xs.row(t), xs.row(t + 1), xs.row(t + 2), xs.row(t + 3)];
            let mut sums = KSums::<4>::new();
            for (i, k) in blocks.iter().enumerate() {
                if SIX {
                    sums.add::<5>(k, i, &rows);
                } else {
                    sums.add::<0>(k, i, &rows);
                }
            }
            out[t..t + 4].copy_from_slice(&sums.finish());
            t += 4;
        }
        for (t, o) in out.iter_mut().enumerate().take(n).skip(t) {
            let rows = [xs.row(t)];
            let mut sums = KSums::<1>::new();
            for (i, k) in blocks.iter().enumerate() {
                if SIX {
                    sums.add::<5>(k, i, &rows);
                } else {
                    sums.add::<0>(k, i, &rows);
                }
            }
            *o = sums.finish()[0];
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn q4_k_zmm_all(row: &[u8], xs: &QuantActs, out: &mut [f32]) {
        k_row_all::<false, false>(row, xs, out)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn q5_k_zmm_all(row: &[u8], xs: &QuantActs, out: &mut [f32]) {
        k_row_all::<false, true>(row, xs, out)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn q6_k_zmm_all(row: &[u8], xs: &QuantActs, out: &mut [f32]) {
        k_row_all::<true, false>(row, xs, out)
    }

    /// The row-at-a-time K-quant kernel for `ty`, where this CPU runs the 512-bit ones.
    pub fn kernel_rows(ty: GgmlType) -> Option<KernelRows> {
        // SAFETY (every arm): `zmm` detected the features these are compiled for
        match ty {
            GgmlType::Q4_K if zmm() => Some(|r, x, o| unsafe { q4_k_zmm_all(r, x, o) }),
            GgmlType::Q5_K if zmm() => Some(|r, x, o| unsafe { q5_k_zmm_all(r, x, o) }),
            GgmlType::Q6_K if zmm() => Some(|r, x, o| unsafe { q6_k_zmm_all(r, x, o) }),
            _ => None,
        }
    }

    macro_rules! kquant {
        ($f:ident::<$($p:tt),*>, $one:ident, $four:ident, $features:literal) => {
            #[target_feature(enable = $features)]
            unsafe fn $one(row: &[u8], x: QuantRow) -> f32 {
                $f::<$($p),*, 1>(row, &[x])[0]
            }
            #[target_feature(enable = $features)]
            unsafe fn $four(row: &[u8], x: &[QuantRow; 4]) -> [f32; 4] {
                $f::<$($p),*, 4>(row, x)
            }
        };
    }
    kquant!(q45_k::<false, false>, q4_k_avx2, q4_k_avx2_4, "avx2,fma,f16c");
    kquant!(q45_k::<true, false>, q4_k_vnni, q4_k_vnni_4, "avx2,fma,f16c,avx512vnni,avx512vl");
    kquant!(q45_k::<false, true>, q5_k_avx2, q5_k_avx2_4, "avx2,fma,f16c");
    kquant!(q45_k::<true, true>, q5_k_vnni, q5_k_vnni_4, "avx2,fma,f16c,avx512vnni,avx512vl");
    kquant!(q6_k::<false>, q6_k_avx2, q6_k_avx2_4, "avx2,fma,f16c");
    kquant!(q6_k::<true>, q6_k_vnni, q6_k_vnni_4, "avx2,fma,f16c,avx512vnni,avx512vl");
    kquant!(q45_k_zmm::<false>, q4_k_zmm, q4_k_zmm_4, "avx2,fma,f16c,avx512f,avx512bw,avx512vl");
    kquant!(q45_k_zmm::<true>, q5_k_zmm, q5_k_zmm_4, "avx2,fma,f16c,avx512f,avx512bw,avx512vl");
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn q6_k_zmm(row: &[u8], x: QuantRow) -> f32 {
        q6_k_zmm_rows::<1>(row, &[x])[0]
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn q6_k_zmm_4(row: &[u8], x: &[QuantRow; 4]) -> [f32; 4] {
        q6_k_zmm_rows::<4>(row, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, quantize_row};
    use crate::random::Rng;
    use GgmlType::*;

    const TYPES: [GgmlType; 8] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K];

    /// Random bytes are valid blocks of every type once the f16 scales are kept finite.
    fn random_row(ty: GgmlType, blocks: usize, rng: &mut Rng) -> Vec<u8> {
        let mut row: Vec<u8> = (0..ty.block_bytes() * blocks).map(|_| (rng.next_u64() >> 24) as u8).collect();
        for blk in row.chunks_exact_mut(ty.block_bytes()) {
            let at: &[usize] = match ty {
                Q6_K => &[208],
                Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
                _ => &[0],
            };
            for &i in at {
                blk[i + 1] &= 0x3b; // exponent well below inf/nan
            }
        }
        row
    }

    fn random_x(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * if rng.next_f32() < 0.05 { 8.0 } else { 1.0 }).collect()
    }

    #[test]
    fn q8_0_activations_are_gguf_py_q8_0_byte_for_byte() {
        let mut rng = Rng::new(1);
        let mut x = random_x(32 * 9, &mut rng);
        x[32..64].fill(0.0); // an all-zero block
        x[64..96].iter_mut().enumerate().for_each(|(i, v)| *v = (i as f32 - 15.5) * 0.5); // ties
        let a = QuantActs::quantize(ActFormat::Q8_0, &x, 1, x.len());
        let want = quantize_row(Q8_0, &x);
        for (b, blk) in want.chunks_exact(34).enumerate() {
            assert_eq!(half::f16::from_f32(a.d[b]).to_bits(), u16::from_le_bytes([blk[0], blk[1]]), "block {b} scale");
            let q: Vec<u8> = a.q[32 * b..32 * b + 32].iter().map(|&v| v as u8).collect();
            assert_eq!(q, &blk[2..], "block {b} quants");
        }
    }

    #[test]
    fn q8_k_activations_follow_llama_cpp_rounding() {
        // nearest_int is round-half-to-even
        for v in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.2, -3.7] {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
        let mut rng = Rng::new(2);
        let mut x = random_x(512, &mut rng);
        x[300] = -9.0; // the signed extreme of block 1 is negative
        x[256..300].fill(0.0);
        let a = QuantActs::quantize(ActFormat::Q8K, &x, 2, 256);
        for b in 0..2 {
            let xb = &x[256 * b..256 * (b + 1)];
            let (i, &m) = xb.iter().enumerate().max_by(|p, q| p.1.abs().total_cmp(&q.1.abs())).unwrap();
            let iscale = -127.0 / m;
            assert_eq!(a.d[b], 1.0 / iscale);
            assert_eq!(a.q[256 * b + i], -127, "the extreme maps to -127 whatever its sign");
            for (j, &v) in xb.iter().enumerate() {
                assert_eq!(a.q[256 * b + j] as i32, ((iscale * v).round_ties_even() as i32).min(127));
            }
            for g in 0..16 {
                let s: i16 = a.q[256 * b + 16 * g..256 * b + 16 * g + 16].iter().map(|&v| v as i16).sum();
                assert_eq!(a.sums[16 * b + g], s);
            }
        }
        let zero = QuantActs::quantize(ActFormat::Q8K, &[0.0; 256], 1, 256);
        assert_eq!((zero.d[0], zero.q.iter().all(|&v| v == 0)), (0.0, true));
    }

    /// The 16-lane quantiser against the portable rule, bit for bit: random rows, rounding ties,
    /// zero blocks and an extreme that appears with both signs (the first one counts).
    #[test]
    fn simd_activation_rounding_equals_the_portable_rule() {
        let mut rng = Rng::new(9);
        for format in [ActFormat::Q8_0, ActFormat::Q8K] {
            let bs = format.block();
            let mut x = random_x(bs * 24, &mut rng);
            x[..bs].fill(0.0);
            // a scale of exactly 1 (the extreme is ±127) and values on .5: ties in both rules
            for (i, v) in x[bs..2 * bs].iter_mut().enumerate() {
                *v = (i % 64) as f32 - 31.5;
            }
            x[bs] = -127.0;
            x[2 * bs] = 5.0;
            x[2 * bs + 3] = -5.0;
            x[3 * bs + 1] = -5.0;
            x[3 * bs + 9] = 5.0;
            let got = QuantActs::quantize(format, &x, 4, 6 * bs);
            let want = QuantActs::quantize_portable(format, &x, 4, 6 * bs);
            assert_eq!(got.q, want.q, "{format:?} quants");
            assert_eq!(got.sums, want.sums, "{format:?} sums");
            let bits = |v: &[f32]| v.iter().map(|d| d.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.d), bits(&want.d), "{format:?} scales");
        }
    }

    /// The integer formula against f32 arithmetic on the dequantised weights and activations.
    #[test]
    fn portable_dot_equals_the_dequantised_product() {
        let mut rng = Rng::new(3);
        for ty in TYPES {
            for blocks in [1, 3] {
                let n = blocks * ty.block_size();
                let row = random_row(ty, blocks, &mut rng);
                let x = random_x(n, &mut rng);
                let f = ActFormat::for_weight(ty).unwrap();
                let a = QuantActs::quantize(f, &x, 1, n);
                let mut w = vec![0f32; n];
                dequantize_row(ty, &row, &mut w);
                let want: f64 = (0..n).map(|i| w[i] as f64 * (a.d[i / f.block()] * a.q[i] as f32) as f64).sum();
                let scale: f64 = (0..n).map(|i| (w[i] as f64 * x[i] as f64).abs()).sum::<f64>().max(1e-6);
                let got = dot_portable(ty, &row, a.row(0)) as f64;
                assert!((got - want).abs() <= 1e-5 * scale, "{ty:?} x{blocks}: {got} vs {want}");
                // and the activation rounding costs little against the f32 activations
                let exact: f64 = (0..n).map(|i| w[i] as f64 * x[i] as f64).sum();
                assert!((got - exact).abs() <= 2e-2 * scale, "{ty:?} x{blocks}: {got} vs exact {exact}");
            }
        }
    }

    /// Whatever `kernel` picks on this CPU (AVX2, VNNI) against the portable reference.
    #[test]
    fn selected_kernels_equal_the_portable_reference() {
        let mut rng = Rng::new(4);
        eprintln!("kernels: {}", isa());
        for ty in TYPES {
            #[allow(unused_mut)]
            let mut kernels = vec![("selected", kernel(ty).unwrap())];
            #[cfg(target_arch = "x86_64")]
            kernels.extend(simd::every_kernel(ty));
            for (isa, k) in kernels {
                for blocks in [1, 2, 5, 20] {
                    let n = blocks * ty.block_size();
                    let row = random_row(ty, blocks, &mut rng);
                    let x = random_x(2 * n, &mut rng);
                    let a = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x, 2, n);
                    let mut w = vec![0f32; n];
                    dequantize_row(ty, &row, &mut w);
                    for t in 0..2 {
                        let want = dot_portable(ty, &row, a.row(t));
                        let got = k(&row, a.row(t));
                        // the same integer sums; only the order of the f32 additions differs
                        let xt = &x[t * n..(t + 1) * n];
                        let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                        assert!((got - want).abs() <= 1e-5 * scale, "{ty:?} {isa} x{blocks} row {t}: {got} vs {want}");
                    }
                }
            }
        }
        assert!(kernel(F32).is_none() && kernel(F16).is_none() && kernel(BF16).is_none());
    }

    /// The 4-weight-row kernels give each weight row what the 1-row reference gives it.
    #[test]
    fn four_weight_row_kernels_equal_the_portable_reference_per_row() {
        let mut rng = Rng::new(6);
        for ty in TYPES {
            #[allow(unused_mut)]
            let mut kernels: Vec<(&str, KernelW4)> = kernel_w4(ty).into_iter().map(|k| ("selected", k)).collect();
            #[cfg(target_arch = "x86_64")]
            kernels.extend(simd::every_kernel_w4(ty));
            for (isa, k) in kernels {
                for blocks in [1, 3, 20] {
                    let n = blocks * ty.block_size();
                    let rows: Vec<Vec<u8>> = (0..4).map(|_| random_row(ty, blocks, &mut rng)).collect();
                    let x = random_x(n, &mut rng);
                    let a = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x, 1, n);
                    let got = k([&rows[0], &rows[1], &rows[2], &rows[3]], a.row(0));
                    for (r, g) in got.iter().enumerate() {
                        let want = dot_portable(ty, &rows[r], a.row(0));
                        let mut w = vec![0f32; n];
                        dequantize_row(ty, &rows[r], &mut w);
                        let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                        assert!((g - want).abs() <= 1e-5 * scale, "{ty:?} {isa} x{blocks} row {r}: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// The F16/BF16 kernels equal the f32 product of the widened weights (sizes with tails).
    #[test]
    fn float_kernels_equal_the_f32_product() {
        let mut rng = Rng::new(10);
        for ty in [F16, BF16] {
            #[allow(unused_mut)]
            let mut kernels: Vec<(&str, FloatKernel)> = float_kernel(ty).into_iter().map(|k| ("selected", k)).collect();
            #[cfg(target_arch = "x86_64")]
            kernels.extend(simd::every_float_kernel(ty));
            for ((isa, k), n) in kernels.into_iter().flat_map(|k| [1, 15, 16, 40, 33, 640].map(|n| (k, n))) {
                let w = random_x(n, &mut rng);
                let row = quantize_row(ty, &w);
                let mut wide = vec![0f32; n];
                dequantize_row(ty, &row, &mut wide);
                let xs: Vec<Vec<f32>> = (0..4).map(|_| random_x(n, &mut rng)).collect();
                let mut out = [[0f32; 4]; 2];
                let row2 = quantize_row(ty, &random_x(n, &mut rng));
                k(&[&row, &row2], &[&xs[0], &xs[1], &xs[2], &xs[3]], &mut out);
                let got = out[0];
                let mut one = [[0f32; 4]; 2];
                k(&[&row], &[&xs[2]], &mut one);
                assert_eq!(one[0][0], got[2], "{ty:?} {isa} n={n}: one row as in four");
                let mut wide2 = vec![0f32; n];
                dequantize_row(ty, &row2, &mut wide2);
                for (t, g) in out[1].iter().enumerate() {
                    let want: f32 = wide2.iter().zip(&xs[t]).map(|(a, b)| a * b).sum();
                    let scale: f32 = wide2.iter().zip(&xs[t]).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                    assert!((g - want).abs() <= 1e-5 * scale, "{ty:?} {isa} n={n} second row {t}: {g} vs {want}");
                }
                for (t, g) in got.iter().enumerate() {
                    let want: f32 = wide.iter().zip(&xs[t]).map(|(a, b)| a * b).sum();
                    let scale: f32 = wide.iter().zip(&xs[t]).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                    assert!((g - want).abs() <= 1e-5 * scale, "{ty:?} {isa} n={n} row {t}: {g} vs {want}");
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx2") {
            assert!(float_kernel(F16).is_some() && float_kernel(BF16).is_some());
        }
    }

    /// The packed Q4_0 kernels give each (token, row) what the 1-row reference gives the stored
    /// rows, on every token count (the 4-token tiles and the rest) and with rows past the groups.
    #[test]
    fn packed_q4_0_kernels_equal_the_portable_reference() {
        let mut rng = Rng::new(9);
        #[allow(unused_mut)]
        let mut kernels: Vec<(&str, PackedKernel)> =
            packed_q4_0_kernel().into_iter().map(|k| ("selected", k)).collect();
        #[cfg(target_arch = "x86_64")]
        kernels.extend(simd::every_packed_q4_0());
        for (isa, k) in kernels {
            for (blocks, rows, tokens) in [(1, 8, 1), (3, 17, 6), (20, 16, 9)] {
                let n = blocks * QK;
                let stored: Vec<Vec<u8>> = (0..rows).map(|_| random_row(Q4_0, blocks, &mut rng)).collect();
                let p = PackedQ4_0::pack(&stored.concat(), rows, n);
                assert_eq!((p.groups, p.blocks), (rows / 8, blocks));
                let x = random_x(tokens * n, &mut rng);
                let a = QuantActs::quantize(ActFormat::Q8_0, &x, tokens, n);
                for g in 0..p.groups {
                    let mut got = vec![[f32::NAN; 8]; tokens];
                    k(p.group(g), p.blocks, &a, &mut got);
                    for (t, y) in got.iter().enumerate() {
                        let xt = &x[t * n..(t + 1) * n];
                        for (r, y) in y.iter().enumerate() {
                            let row = &stored[8 * g + r];
                            let want = dot_portable(Q4_0, row, a.row(t));
                            let mut w = vec![0f32; n];
                            dequantize_row(Q4_0, row, &mut w);
                            let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                            assert!(
                                (y - want).abs() <= 1e-5 * scale,
                                "{isa} x{blocks} token {t} row {}: {y} vs {want}",
                                8 * g + r
                            );
                        }
                    }
                }
            }
        }
    }

    /// llama.cpp's AVX2 `ggml_vec_dot_q5_0_q8_0` / `_q8_0_q8_0` (and tinyBLAS's) arithmetic in
    /// scalar form: per block, eight 4-element integer sums rounded to f32, `fma(d_w · d_x, sum,
    /// acc[lane])`, then `hsum_float_8`'s order.
    fn llama_cpp_vec_dot(ty: GgmlType, row: &[u8], x: QuantRow) -> f32 {
        let (mut q, mut scale, mut min) = ([0i8; QK_K], [0f32; QK_K / 16], [0f32; QK_K / 16]);
        let mut acc = [0f32; 8];
        for (i, b) in row.chunks_exact(ty.block_bytes()).enumerate() {
            unpack_block(ty, b, &mut q, &mut scale, &mut min).unwrap();
            let d = crate::quant::f16_at(b, 0) * x.d[i];
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (4 * l..4 * l + 4).map(|e| q[e] as i32 * x.q[32 * i + e] as i32).sum();
                *a = d.mul_add(s as f32, *a);
            }
        }
        let c: [f32; 4] = std::array::from_fn(|k| acc[k] + acc[k + 4]);
        (c[0] + c[2]) + (c[1] + c[3])
    }

    /// The Q5_0/Q8_0 GEMM (prefill) and 4-weight-row (decode) kernels compute llama.cpp's
    /// `vec_dot` bit for bit.
    #[test]
    fn gemm_and_decode_kernels_are_llama_cpps_vec_dot_bit_for_bit() {
        let mut rng = Rng::new(11);
        for ty in [Q5_0, Q8_0] {
            let blocks = 20;
            let n = blocks * QK;
            let rows: Vec<Vec<u8>> = (0..8).map(|_| random_row(ty, blocks, &mut rng)).collect();
            let x = random_x(5 * n, &mut rng);
            let a = QuantActs::quantize(ActFormat::Q8_0, &x, 5, n);
            let want: Vec<[u32; 8]> =
                (0..5).map(|t| std::array::from_fn(|r| llama_cpp_vec_dot(ty, &rows[r], a.row(t)).to_bits())).collect();
            #[allow(unused_mut)]
            let mut gemms: Vec<(&str, Gemm8)> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            gemms.extend(simd::every_gemm8(ty));
            for (isa, k) in gemms {
                let mut got = vec![[0f32; 8]; 5];
                k(std::array::from_fn(|r| rows[r].as_slice()), &a, &gemm8_corrections(ty, &a), &mut got);
                let got: Vec<[u32; 8]> = got.iter().map(|g| g.map(f32::to_bits)).collect();
                assert_eq!(got, want, "{ty:?} {isa} GEMM");
            }
            if let Some(g16) = gemm16(ty) {
                let rows16: Vec<Vec<u8>> = (0..16).map(|_| random_row(ty, blocks, &mut rng)).collect();
                let want16: Vec<[u32; 16]> = (0..5)
                    .map(|t| std::array::from_fn(|r| llama_cpp_vec_dot(ty, &rows16[r], a.row(t)).to_bits()))
                    .collect();
                let mut got = vec![[0f32; 16]; 5];
                g16(std::array::from_fn(|r| rows16[r].as_slice()), &a, &gemm8_corrections(ty, &a), &mut got);
                let got: Vec<[u32; 16]> = got.iter().map(|g| g.map(f32::to_bits)).collect();
                assert_eq!(got, want16, "{ty:?} 16-row GEMM");
            }
            #[allow(unused_mut)]
            let mut w4: Vec<(&str, KernelW4)> = Vec::new();
            #[cfg(target_arch = "x86_64")]
            w4.extend(simd::every_kernel_w4(ty));
            for (isa, k) in w4 {
                let got = k([&rows[0], &rows[1], &rows[2], &rows[3]], a.row(3)).map(f32::to_bits);
                assert_eq!(got[..], want[3][..4], "{ty:?} {isa} decode");
            }
        }
    }

    /// The 8-row GEMM kernels give each (token, row) what the 1-row reference gives it.
    #[test]
    fn gemm_kernels_equal_the_portable_reference_per_row_and_token() {
        let mut rng = Rng::new(8);
        for ty in TYPES {
            #[allow(unused_mut)]
            let mut kernels: Vec<(&str, Gemm8)> = gemm8(ty).into_iter().map(|k| ("selected", k)).collect();
            #[cfg(target_arch = "x86_64")]
            kernels.extend(simd::every_gemm8(ty));
            for (isa, k) in kernels {
                for (blocks, tokens) in [(1, 1), (3, 5), (20, 9)] {
                    let n = blocks * ty.block_size();
                    let rows: Vec<Vec<u8>> = (0..8).map(|_| random_row(ty, blocks, &mut rng)).collect();
                    let x = random_x(tokens * n, &mut rng);
                    let a = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x, tokens, n);
                    let mut got = vec![[f32::NAN; 8]; tokens];
                    k(std::array::from_fn(|r| rows[r].as_slice()), &a, &gemm8_corrections(ty, &a), &mut got);
                    for (t, g) in got.iter().enumerate() {
                        let xt = &x[t * n..(t + 1) * n];
                        for (r, g) in g.iter().enumerate() {
                            let want = dot_portable(ty, &rows[r], a.row(t));
                            let mut w = vec![0f32; n];
                            dequantize_row(ty, &rows[r], &mut w);
                            let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                            assert!(
                                (g - want).abs() <= 1e-5 * scale,
                                "{ty:?} {isa} x{blocks} token {t} row {r}: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            assert!(gemm8(GgmlType::Q5_0).is_some(), "the Q5_0 GEMM is there on AVX2");
        }
    }

    /// The 4-row kernels give each row what the 1-row reference gives it.
    #[test]
    fn four_row_kernels_equal_the_portable_reference_per_row() {
        let mut rng = Rng::new(5);
        for ty in TYPES {
            #[allow(unused_mut)]
            let mut kernels: Vec<(&str, Kernel4)> = kernel4(ty).into_iter().map(|k| ("selected", k)).collect();
            #[cfg(target_arch = "x86_64")]
            kernels.extend(simd::every_kernel4(ty));
            for (isa, k) in kernels {
                for blocks in [1, 3, 20] {
                    let n = blocks * ty.block_size();
                    let row = random_row(ty, blocks, &mut rng);
                    let x = random_x(4 * n, &mut rng);
                    let a = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x, 4, n);
                    let got = k(&row, &[a.row(0), a.row(1), a.row(2), a.row(3)]);
                    let mut w = vec![0f32; n];
                    dequantize_row(ty, &row, &mut w);
                    for (t, g) in got.iter().enumerate() {
                        let want = dot_portable(ty, &row, a.row(t));
                        let xt = &x[t * n..(t + 1) * n];
                        let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                        assert!((g - want).abs() <= 1e-5 * scale, "{ty:?} {isa} x{blocks} row {t}: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// The 512-bit K-quant kernels compute the 256-bit VNNI kernels' integers and float steps:
    /// the same bits, one row or four, on random blocks (every scale and min pattern in time).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn zmm_k_quant_kernels_are_the_vnni_kernels_bit_for_bit() {
        let mut rng = Rng::new(12);
        for ty in [Q4_K, Q5_K, Q6_K] {
            let (Some(z1), Some(z4)) = (simd::kernel_zmm(ty), simd::kernel4_zmm(ty)) else { return };
            let v1 = simd::every_kernel(ty).into_iter().find(|(n, _)| *n == "avx512-vnni").unwrap().1;
            let v4 = simd::every_kernel4(ty).into_iter().find(|(n, _)| *n == "avx512-vnni").unwrap().1;
            for blocks in [1, 2, 3, 8, 20] {
                for _ in 0..20 {
                    let n = blocks * ty.block_size();
                    let row = random_row(ty, blocks, &mut rng);
                    let x = random_x(4 * n, &mut rng);
                    let a = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x, 4, n);
                    let rows = [a.row(0), a.row(1), a.row(2), a.row(3)];
                    let (g4, w4) = (z4(&row, &rows), v4(&row, &rows));
                    assert_eq!(g4.map(f32::to_bits), w4.map(f32::to_bits), "{ty:?} x{blocks}: four rows");
                    assert_eq!(z1(&row, rows[1]).to_bits(), v1(&row, rows[1]).to_bits(), "{ty:?} x{blocks}: one row");
                    // the row kernel on 7 activation rows: four as the 4-row kernel, three as the 1-row one
                    let x7 = random_x(7 * n, &mut rng);
                    let a7 = QuantActs::quantize(ActFormat::for_weight(ty).unwrap(), &x7, 7, n);
                    let mut all = vec![0f32; 7];
                    simd::kernel_rows(ty).unwrap()(&row, &a7, &mut all);
                    let four = v4(&row, &[a7.row(0), a7.row(1), a7.row(2), a7.row(3)]);
                    let want: Vec<u32> =
                        four.iter().copied().chain((4..7).map(|t| v1(&row, a7.row(t)))).map(f32::to_bits).collect();
                    assert_eq!(
                        all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want,
                        "{ty:?} x{blocks}: row kernel"
                    );
                }
            }
        }
    }
}
