//! ggml tensor types: block layouts, dequantisation of every type we load, quantisation of the
//! 32-element formats bit-exact with gguf-py's reference quantisers (`gguf.quants`), and the row
//! dot products the CPU backend's matrix-vector products use.
//!
//! Deliberately not here: quantising K-quants (we read them; `vicugna convert` writes the
//! 32-block formats) and Q2_K/Q3_K/IQ* (refused with an error naming the tensor).

use half::{bf16, f16};

pub const QK: usize = 32;
pub const QK_K: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            30 => BF16,
            _ => return None,
        })
    }
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            BF16 => 30,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        use GgmlType::*;
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => F32,
            "f16" => F16,
            "bf16" => BF16,
            "q8_0" => Q8_0,
            "q4_0" => Q4_0,
            "q4_1" => Q4_1,
            "q5_0" => Q5_0,
            "q5_1" => Q5_1,
            _ => return None,
        })
    }
    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => QK,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => QK_K,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
        }
    }
    /// Bytes for `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }
    pub fn can_dequantize(self) -> bool {
        !matches!(self, GgmlType::Q2_K | GgmlType::Q3_K)
    }
    pub fn can_quantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1)
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Dequantise one block of `ty` from `b` into `y` (`y.len() == ty.block_size()`).
/// The arithmetic order follows ggml (and gguf-py), so results are bit-identical.
pub fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => y[0] = f16_at(b, 0),
        BF16 => y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        Q4_0 => {
            let d = f16_at(b, 0);
            for j in 0..16 {
                y[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for j in 0..16 {
                y[j] = d * (b[4 + j] & 0xF) as f32 + m;
                y[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
            }
        }
        Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                y[j] = (((b[6 + j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }
        Q5_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                y[j] = d * ((b[8 + j] & 0xF) as u32 | h0) as f32 + m;
                y[j + 16] = d * ((b[8 + j] >> 4) as u32 | h1) as f32 + m;
            }
        }
        Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        Q4_K | Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, ql) = if ty == Q5_K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for (jj, chunk) in y.chunks_exact_mut(64).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * jj, scales);
                let (sc2, m2) = scale_min_k4(2 * jj + 1, scales);
                let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                let q = &ql[32 * jj..32 * jj + 32];
                for l in 0..32 {
                    let (mut lo, mut hi) = ((q[l] & 0xF) as u32, (q[l] >> 4) as u32);
                    if ty == Q5_K {
                        lo |= (((qh[l] >> (2 * jj)) & 1) as u32) << 4;
                        hi |= (((qh[l] >> (2 * jj + 1)) & 1) as u32) << 4;
                    }
                    chunk[l] = d1 * lo as f32 - m1;
                    chunk[l + 32] = d2 * hi as f32 - m2;
                }
            }
        }
        Q6_K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for n in 0..2 {
                let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                let y = &mut y[128 * n..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        Q2_K | Q3_K => unreachable!("callers check can_dequantize"),
    }
}

/// A quantised row split into small integers and per-group affine parameters:
/// `value[i] = scale[i / group] * q[i] + min[i / group]` (min 0 when `min` is `None`), with the
/// products formed exactly as `dequantize_block` forms them, so a kernel computing
/// `scale * q + min` reproduces the CPU's weights bit for bit. GPU backends keep K-quants this way.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub group: usize,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub min: Option<Vec<f32>>,
}

/// Split a row of `ty` into `Unpacked` form; `None` for types without an integer form
/// (F32/F16/BF16, and Q2_K/Q3_K which we do not read).
pub fn unpack_row(ty: GgmlType, row: &[u8]) -> Option<Unpacked> {
    use GgmlType::*;
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    let n = row.len() / bb * bs;
    let has_min = matches!(ty, Q4_1 | Q5_1 | Q4_K | Q5_K);
    let (mut q, mut scale, mut min) = ([0i8; QK_K], [0f32; QK_K / 16], [0f32; QK_K / 16]);
    let mut u = Unpacked { group: 0, q: Vec::with_capacity(n), scale: vec![], min: has_min.then(Vec::new) };
    for b in row.chunks_exact(bb) {
        u.group = unpack_block(ty, b, &mut q, &mut scale, &mut min)?;
        let groups = bs / u.group;
        u.q.extend_from_slice(&q[..bs]);
        u.scale.extend_from_slice(&scale[..groups]);
        if let Some(m) = u.min.as_mut() {
            m.extend_from_slice(&min[..groups]);
        }
    }
    if u.group == 0 {
        u.group = if ty == Q6_K { 16 } else { QK };
    }
    Some(u)
}

/// One block of `ty` in `Unpacked` form: its `block_size` small integers into `q`, one scale and
/// one min (0 for the symmetric types) per group into `scale` and `min`. Returns the group size
/// (16 for Q6_K, else 32), or `None` for types without an integer form.
pub fn unpack_block(ty: GgmlType, b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) -> Option<usize> {
    use GgmlType::*;
    match ty {
        Q8_0 => {
            scale[0] = f16_at(b, 0);
            min[0] = 0.0;
            for (o, &v) in q.iter_mut().zip(&b[2..34]) {
                *o = v as i8;
            }
        }
        Q4_0 | Q4_1 => {
            let (off, bias) = if ty == Q4_0 { (2, 8) } else { (4, 0) };
            scale[0] = f16_at(b, 0);
            min[0] = if ty == Q4_1 { f16_at(b, 2) } else { 0.0 };
            for j in 0..16 {
                q[j] = ((b[off + j] & 0xF) as i32 - bias) as i8;
                q[j + 16] = ((b[off + j] >> 4) as i32 - bias) as i8;
            }
        }
        Q5_0 | Q5_1 => {
            let (qh_at, off, bias) = if ty == Q5_0 { (2, 6, 16) } else { (4, 8, 0) };
            let qh = u32::from_le_bytes([b[qh_at], b[qh_at + 1], b[qh_at + 2], b[qh_at + 3]]);
            scale[0] = f16_at(b, 0);
            min[0] = if ty == Q5_1 { f16_at(b, 2) } else { 0.0 };
            for j in 0..16 {
                q[j] = (((b[off + j] & 0xF) as u32 | (((qh >> j) & 1) << 4)) as i32 - bias) as i8;
                q[j + 16] = (((b[off + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - bias) as i8;
            }
        }
        Q4_K | Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, ql) = if ty == Q5_K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
            for jj in 0..4 {
                let ql = &ql[32 * jj..32 * jj + 32];
                for (half, shift) in [(0usize, 0u8), (1, 4)] {
                    let g = 2 * jj + half;
                    let (sc, mn) = scale_min_k4(g, scales);
                    // dequantize_block computes d1 * q - m1; d1 * q + (-m1) is the same number
                    scale[g] = d * sc as f32;
                    min[g] = -(dmin * mn as f32);
                    for l in 0..32 {
                        let mut v = (ql[l] >> shift) & 0xF;
                        if ty == Q5_K {
                            v |= ((qh[l] >> g) & 1) << 4;
                        }
                        q[32 * g + l] = v as i8;
                    }
                }
            }
        }
        Q6_K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for n in 0..2 {
                let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                let y = &mut q[128 * n..];
                for l in 0..32 {
                    y[l] = (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32) as i8;
                    y[l + 32] = (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32) as i8;
                    y[l + 64] = (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32) as i8;
                    y[l + 96] = (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32) as i8;
                }
            }
            // element e of the block uses scale e / 16; dequantize_block forms d * sc first
            for (o, &s) in scale.iter_mut().zip(sc) {
                *o = d * (s as i8) as f32;
            }
            min[..16].fill(0.0);
            return Some(16);
        }
        _ => return None,
    }
    Some(QK)
}

/// Dequantise a whole row (`y.len()` elements, a multiple of the block size).
pub fn dequantize_row(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    match ty {
        GgmlType::F32 => {
            y.iter_mut().zip(b.chunks_exact(4)).for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }
        _ => y.chunks_exact_mut(bs).zip(b.chunks_exact(bb)).for_each(|(o, c)| dequantize_block(ty, c, o)),
    }
}

/// numpy's `np_roundf` from gguf-py: round half away from zero, computed the same way.
#[inline]
pub(crate) fn roundf(n: f32) -> f32 {
    let a = n.abs();
    let fl = a.floor();
    let b = fl + (2.0 * (a - fl)).floor();
    if n > 0.0 {
        b
    } else if n < 0.0 {
        -b
    } else {
        0.0 * b
    }
}

#[inline]
fn inv(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Index and value of the first element with the largest magnitude (numpy `argmax(abs)`).
fn absmax(x: &[f32]) -> f32 {
    let mut best = 0usize;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    x[best]
}

fn push_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Quantise one block exactly as gguf-py's `quantize_blocks`.
pub fn quantize_block(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    use GgmlType::*;
    match ty {
        F32 => out.extend_from_slice(&x[0].to_le_bytes()),
        F16 => push_f16(out, x[0]),
        BF16 => {
            // gguf-py: NaN quieted, then round to nearest even on the top 16 bits
            let mut n = x[0].to_bits();
            if n & 0x7fff_ffff > 0x7f80_0000 {
                n = (n & 0xffff_0000) | (64 << 16);
            }
            let r = ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16;
            out.extend_from_slice(&r.to_le_bytes());
        }
        Q8_0 => {
            let d = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let id = inv(d);
            push_f16(out, d);
            out.extend(x.iter().map(|v| roundf(v * id) as i8 as u8));
        }
        Q4_0 | Q5_0 => {
            let (div, off, maxq) = if ty == Q4_0 { (-8.0f32, 8.5f32, 15u8) } else { (-16.0, 16.5, 31) };
            let d = absmax(x) / div;
            let id = inv(d);
            let q: Vec<u8> =
                x.iter().map(|v| ((v * id + off).trunc().max(0.0) as u32).min(maxq as u32) as u8).collect();
            push_f16(out, d);
            pack_nibbles(ty == Q5_0, &q, out);
        }
        Q4_1 | Q5_1 => {
            let maxq = if ty == Q4_1 { 15u8 } else { 31 };
            let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let min = x.iter().cloned().fold(f32::INFINITY, f32::min);
            let d = (max - min) / maxq as f32;
            let id = inv(d);
            let q: Vec<u8> =
                x.iter().map(|v| (((v - min) * id + 0.5).trunc().max(0.0) as u32).min(maxq as u32) as u8).collect();
            push_f16(out, d);
            push_f16(out, min);
            pack_nibbles(ty == Q5_1, &q, out);
        }
        _ => unreachable!("callers check can_quantize"),
    }
}

fn pack_nibbles(five_bit: bool, q: &[u8], out: &mut Vec<u8>) {
    if five_bit {
        let qh = q.iter().enumerate().fold(0u32, |h, (j, &v)| h | (((v >> 4) as u32 & 1) << j));
        out.extend_from_slice(&qh.to_le_bytes());
    }
    out.extend((0..16).map(|j| (q[j] & 0xF) | (q[j + 16] << 4)));
}

/// Quantise a row whose length is a multiple of the block size.
pub fn quantize_row(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let bs = ty.block_size();
    let mut out = Vec::with_capacity(ty.row_bytes(x.len()));
    for blk in x.chunks_exact(bs) {
        quantize_block(ty, blk, &mut out);
    }
    out
}

/// Dot product of an f32 vector with one stored row of `ty`. Hot loops for the formats models
/// use most; others go block by block through `dequantize_block`.
pub fn dot_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    use GgmlType::*;
    #[cfg(target_arch = "x86_64")]
    if matches!(ty, Q4_0 | Q8_0) && simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time; lengths are checked inside.
        return unsafe {
            if ty == Q4_0 {
                simd::dot_q4_0(row, x)
            } else {
                simd::dot_q8_0(row, x)
            }
        };
    }
    match ty {
        F32 => {
            // rows inside GGUF and our owned buffers are 4-byte aligned; fall back if not
            match bytemuck::try_cast_slice::<u8, f32>(row) {
                Ok(w) => dot_f32(w, x),
                Err(_) => {
                    row.chunks_exact(4).zip(x).map(|(c, v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v).sum()
                }
            }
        }
        F16 => {
            let mut acc = [0f32; 8];
            let mut chunks = row.chunks_exact(16).zip(x.chunks_exact(8));
            for (c, xv) in &mut chunks {
                for k in 0..8 {
                    acc[k] += f16::from_bits(u16::from_le_bytes([c[2 * k], c[2 * k + 1]])).to_f32() * xv[k];
                }
            }
            let mut s: f32 = acc.iter().sum();
            let done = row.len() / 16 * 8;
            for (i, xv) in x.iter().enumerate().skip(done) {
                s += f16_at(row, 2 * i) * xv;
            }
            s
        }
        Q8_0 => {
            let mut s = 0f32;
            for (b, xv) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
                let d = f16_at(b, 0);
                let mut acc = [0f32; 8];
                for k in 0..4 {
                    for l in 0..8 {
                        acc[l] += (b[2 + 8 * k + l] as i8) as f32 * xv[8 * k + l];
                    }
                }
                s += d * acc.iter().sum::<f32>();
            }
            s
        }
        Q4_0 => {
            let mut s = 0f32;
            for (b, xv) in row.chunks_exact(18).zip(x.chunks_exact(32)) {
                let d = f16_at(b, 0);
                let mut acc = [0f32; 8];
                for k in 0..2 {
                    for l in 0..8 {
                        let q = b[2 + 8 * k + l];
                        acc[l] += ((q & 0xF) as i32 - 8) as f32 * xv[8 * k + l]
                            + ((q >> 4) as i32 - 8) as f32 * xv[16 + 8 * k + l];
                    }
                }
                s += d * acc.iter().sum::<f32>();
            }
            s
        }
        _ => {
            let (bs, bb) = (ty.block_size(), ty.block_bytes());
            let mut tmp = [0f32; QK_K];
            let mut s = 0f32;
            for (b, xv) in row.chunks_exact(bb).zip(x.chunks_exact(bs)) {
                dequantize_block(ty, b, &mut tmp[..bs]);
                s += dot_f32(&tmp[..bs], xv);
            }
            s
        }
    }
}

/// f32 dot with 16 independent accumulators so the compiler vectorises it (with AVX2+FMA when
/// the CPU has them, detected at run time).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if a.len() >= 64 && simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::dot_f32_avx2(a, b) };
    }
    dot_f32_portable(a, b)
}

#[inline(always)]
fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    // pairwise reduction keeps the rounding error low
    for w in [8, 4, 2, 1] {
        for k in 0..w {
            acc[k] += acc[k + w];
        }
    }
    acc[0] + s
}

/// x86-64 kernels behind run-time feature detection; the portable code above is the reference.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{dot_f32_portable, f16_at};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        // the same loop, compiled with AVX2+FMA enabled
        dot_f32_portable(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// sum over blocks of d * sum_j (q_j - 8) x_j, f32 activations (no activation rounding).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
        let nb = (row.len() / 18).min(x.len() / 32);
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_ps(8.0);
        for i in 0..nb {
            let b = &row[i * 18..i * 18 + 18];
            let xp = x.as_ptr().add(i * 32);
            let d = _mm256_set1_ps(f16_at(b, 0));
            // SAFETY: b has 16 bytes of nibbles at offset 2; xp points at 32 floats (nb bound)
            let qs = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
            let lo = _mm_and_si128(qs, _mm_set1_epi8(0x0F));
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0F));
            let q0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), eight);
            let q1 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), eight);
            let q2 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), eight);
            let q3 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), eight);
            let mut s = _mm256_mul_ps(q0, _mm256_loadu_ps(xp));
            s = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xp.add(8)), s);
            s = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xp.add(16)), s);
            s = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xp.add(24)), s);
            acc = _mm256_fmadd_ps(d, s, acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        let nb = (row.len() / 34).min(x.len() / 32);
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let b = &row[i * 34..i * 34 + 34];
            let xp = x.as_ptr().add(i * 32);
            let d = _mm256_set1_ps(f16_at(b, 0));
            // SAFETY: 32 int8 quants at offset 2 of a 34-byte block; 32 floats at xp
            let q = b.as_ptr().add(2);
            let mut s = _mm256_setzero_ps();
            for k in 0..4 {
                let v = _mm_loadl_epi64(q.add(8 * k) as *const __m128i);
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                s = _mm256_fmadd_ps(f, _mm256_loadu_ps(xp.add(8 * k)), s);
            }
            acc = _mm256_fmadd_ps(d, s, acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_kernels_agree_with_portable_reference() {
        let x: Vec<f32> = (0..1024).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0).collect();
        let w: Vec<f32> = (0..1024).map(|i| (i * 104729 % 997) as f32 / 498.0 - 1.0).collect();
        for n in [32, 64, 96, 1024] {
            for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
                let q = quantize_row(ty, &w[..n]);
                let mut deq = vec![0f32; n];
                dequantize_row(ty, &q, &mut deq);
                let want: f64 = deq.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let got = dot_row(ty, &q, &x[..n]) as f64;
                assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{ty:?} n={n}: {got} vs {want}");
            }
            let want: f64 = w[..n].iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((dot_f32(&w[..n], &x[..n]) as f64 - want).abs() < 1e-4 * want.abs().max(1.0));
        }
    }

    #[test]
    fn roundtrip_block_formats() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0).collect();
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::F16,
            GgmlType::BF16,
        ] {
            let q = quantize_row(ty, &x);
            assert_eq!(q.len(), ty.row_bytes(64));
            let mut y = vec![0f32; 64];
            dequantize_row(ty, &q, &mut y);
            let max_err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let bound = match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 => 0.6,
                GgmlType::Q5_0 | GgmlType::Q5_1 => 0.3,
                _ => 0.05,
            };
            assert!(max_err < bound, "{ty:?}: max error {max_err}");
            let dot = dot_row(ty, &q, &x);
            let want: f32 = y.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((dot - want).abs() < 1e-3 * want.abs().max(1.0), "{ty:?}: dot {dot} vs {want}");
        }
    }

    #[test]
    fn unpacked_rows_reproduce_dequantisation_bit_for_bit() {
        use GgmlType::*;
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        };
        for ty in [Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K] {
            // random bytes are valid blocks of every type; keep the f16 scales finite
            let mut row: Vec<u8> = (0..ty.block_bytes() * 3).map(|_| byte()).collect();
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
            let n = 3 * ty.block_size();
            let mut want = vec![0f32; n];
            dequantize_row(ty, &row, &mut want);
            let u = unpack_row(ty, &row).expect("integer form");
            assert_eq!((u.q.len(), u.scale.len()), (n, n / u.group), "{ty:?}");
            for (i, w) in want.iter().enumerate() {
                let g = i / u.group;
                let v = match &u.min {
                    Some(m) => u.scale[g] * u.q[i] as f32 + m[g],
                    None => u.scale[g] * u.q[i] as f32,
                };
                assert_eq!(v.to_bits(), w.to_bits(), "{ty:?} element {i}: {v} vs {w}");
            }
        }
    }

    #[test]
    fn roundf_matches_numpy_half_away_from_zero() {
        assert_eq!(roundf(2.5), 3.0);
        assert_eq!(roundf(-2.5), -3.0);
        assert_eq!(roundf(1.49), 1.0);
        assert_eq!(roundf(-0.5), -1.0);
    }
}
