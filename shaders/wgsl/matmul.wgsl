// y = x W^T (+ s * ax B^T when LORA): one workgroup per (output row, token).
// Formats by define: F32, F16 (packed pairs, no shader-f16 needed), Q8_0, Q4_0 (repacked at load:
// one f32 scale per 32-block in `sc`, quants in `w`), Q4_M (Q4_0's nibble order, values 0..15,
// (scale, min) per 32-block in `sc`: Q4_K and Q4_1) and Q8_S16 (int8 as Q8_0, one scale per 16
// elements: Q6_K). Q5_0 arrives as Q8_0.
// Parameters: `MatmulParams` (src/kernels.rs documents each field).
// A matrix larger than one storage binding is split by rows into parts, one launch each.

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // (n, cols)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // (n, d)
#if F32
@group(0) @binding(3) var<storage, read> w: array<f32>;        // (rows, cols)
#else
@group(0) @binding(3) var<storage, read> w: array<u32>;        // F16: (rows, cols/2); Q8_0/Q8_S16: (rows, cols/4); Q4_0/Q4_M: (rows, cols/8)
#endif
#if QUANT
@group(0) @binding(4) var<storage, read> sc: array<f32>;       // Q8_0/Q4_0: (rows, cols/32); Q4_M/Q8_S16: (rows, cols/16)
#endif
#if LORA
@group(0) @binding(5) var<storage, read> ax: array<f32>;       // (n, r) = x A^T
@group(0) @binding(6) var<storage, read> lb: array<f32>;       // (d, r)
#endif

// partial dot product of W[row] with x[t] over the elements/blocks start, start + step, ...
fn partial_dot(row: u32, xo: u32, start: u32, step: u32) -> f32 {
    var acc = 0.0;
#if F32
    for (var c = start; c < p.cols; c += step) {
        acc += w[row * p.cols + c] * x[xo + c];
    }
#endif
#if F16
    let pairs = p.cols / 2u;
    for (var c = start; c < pairs; c += step) {
        let v = w[row * pairs + c];
        acc += f16_to_f32(v & 0xFFFFu) * x[xo + 2u * c] + f16_to_f32(v >> 16u) * x[xo + 2u * c + 1u];
    }
#endif
#if Q8_0
    for (var blk = start; blk < p.blocks; blk += step) {
        let bi = row * p.blocks + blk;
        var s = 0.0;
        for (var k = 0u; k < 8u; k++) {
            // four signed bytes of one word, sign-extended in parallel
            let q = vec4<f32>((vec4<i32>(bitcast<i32>(w[bi * 8u + k])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
            let xb = xo + blk * 32u + 4u * k;
            s += dot(q, vec4<f32>(x[xb], x[xb + 1u], x[xb + 2u], x[xb + 3u]));
        }
        acc += sc[bi] * s;
    }
#endif
#if Q4_0
    for (var blk = start; blk < p.blocks; blk += step) {
        let bi = row * p.blocks + blk;
        var s = 0.0;
        for (var k = 0u; k < 4u; k++) {
            // bytes 4k..4k+3 hold elements 4k.. (low nibbles) and 4k+16.. (high nibbles)
            let q = vec4<u32>(w[bi * 4u + k]) >> vec4<u32>(0u, 8u, 16u, 24u);
            let lo = vec4<f32>(q & vec4<u32>(15u)) - 8.0;
            let hi = vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(15u)) - 8.0;
            let xb = xo + blk * 32u + 4u * k;
            s += dot(lo, vec4<f32>(x[xb], x[xb + 1u], x[xb + 2u], x[xb + 3u]))
               + dot(hi, vec4<f32>(x[xb + 16u], x[xb + 17u], x[xb + 18u], x[xb + 19u]));
        }
        acc += sc[bi] * s;
    }
#endif
#if Q4_M
    for (var blk = start; blk < p.blocks; blk += step) {
        let bi = row * p.blocks + blk;
        var s = 0.0;
        var xs = 0.0;
        for (var k = 0u; k < 4u; k++) {
            let q = vec4<u32>(w[bi * 4u + k]) >> vec4<u32>(0u, 8u, 16u, 24u);
            let xb = xo + blk * 32u + 4u * k;
            let xl = vec4<f32>(x[xb], x[xb + 1u], x[xb + 2u], x[xb + 3u]);
            let xh = vec4<f32>(x[xb + 16u], x[xb + 17u], x[xb + 18u], x[xb + 19u]);
            s += dot(vec4<f32>(q & vec4<u32>(15u)), xl) + dot(vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(15u)), xh);
            xs += dot(xl + xh, vec4<f32>(1.0));
        }
        // sum_i (scale q_i + min) x_i = scale (q . x) + min sum(x)
        acc += sc[2u * bi] * s + sc[2u * bi + 1u] * xs;
    }
#endif
#if Q8_S16
    for (var blk = start; blk < p.blocks; blk += step) {
        let bi = row * p.blocks + blk;
        var s = vec2<f32>(0.0);
        for (var k = 0u; k < 8u; k++) {
            let q = vec4<f32>((vec4<i32>(bitcast<i32>(w[bi * 8u + k])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
            let xb = xo + blk * 32u + 4u * k;
            let d = dot(q, vec4<f32>(x[xb], x[xb + 1u], x[xb + 2u], x[xb + 3u]));
            // words 0..3 are the first 16 elements, 4..7 the second
            s += select(vec2<f32>(0.0, d), vec2<f32>(d, 0.0), k < 4u);
        }
        acc += sc[2u * bi] * s.x + sc[2u * bi + 1u] * s.y;
    }
#endif
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * p.grid_x;
    let t = wid.z;
    // row is the same for the whole workgroup, so this return keeps barriers uniform
    if (row >= p.rows) {
        return;
    }
    let r = wg_sum(li, partial_dot(row, t * p.cols, li, WG));
    if (li == 0u) {
        store(row, t, r);
    }
}

// y = r (+ the fused LoRA term) for one output element
fn store(row: u32, t: u32, r: f32) {
    var v = r;
#if LORA
    var l = 0.0;
    for (var j = 0u; j < p.rank; j++) {
        l += lb[(p.row0 + row) * p.rank + j] * ax[t * p.rank + j];
    }
    v += p.lora_scale * l;
#endif
    y[t * p.total_rows + p.row0 + row] = v;
}

// CPU adapters (lavapipe, SwiftShader) run invocations as SIMD lanes and load storage with one
// scalar load per lane and 32-bit word, even where every lane reads the same address; arithmetic
// is cheap next to that. So an invocation there computes a register tile of RB rows × TT tokens
// and each word it loads feeds several multiply-adds: per 8 elements, RB weight words or fewer
// (+ the block's scales once) and 8·TT activations for 8·RB·TT multiply-adds. The tile sizes are
// measured (BENCHMARKS.md: 8 × 16 beat 4 × 4 … 16 × 4 on SwiftShader and lavapipe) and spelled out
// below (arrays of 8, four-row groups g0 g1, tokens a0..a15); src/kernels.rs has them as
// MATMUL_ROWS and MATMUL_TILE and a test checks that both agree. `main` splits each row across a
// workgroup for real GPUs.
const RB: u32 = 8u;

// The scales of 32-block blk of W[row] that `wstep` needs, loaded once per block: Q8_0, Q4_0: (d, -);
// Q4_M: (d, min); Q8_S16: (d of elements 0..15, d of 16..31); F32, F16: none.
fn wscale(row: u32, blk: u32) -> vec2<f32> {
#if QUANT
    let bi = row * p.blocks + blk;
#endif
#if Q8_0
    return vec2<f32>(sc[bi], 0.0);
#endif
#if Q4_0
    return vec2<f32>(sc[bi], 0.0);
#endif
#if Q4_M
    return vec2<f32>(sc[2u * bi], sc[2u * bi + 1u]);
#endif
#if Q8_S16
    return vec2<f32>(sc[2u * bi], sc[2u * bi + 1u]);
#endif
#if F32
    return vec2<f32>(0.0);
#endif
#if F16
    return vec2<f32>(0.0);
#endif
}

// Step s (0..4) of 32-block blk of W[row] (scales d from `wscale`), dequantised: column 0 holds
// the elements at xlo(s)..+3, column 1 those at xhi(s)..+3.
fn wstep(row: u32, blk: u32, s: u32, d: vec2<f32>) -> mat2x4<f32> {
#if F32
    let c = row * p.cols + blk * 32u + 8u * s;
    return mat2x4<f32>(vec4<f32>(w[c], w[c + 1u], w[c + 2u], w[c + 3u]), vec4<f32>(w[c + 4u], w[c + 5u], w[c + 6u], w[c + 7u]));
#endif
#if F16
    let c = (row * p.cols + blk * 32u + 8u * s) / 2u;
    let a = w[c];
    let b = w[c + 1u];
    let e = w[c + 2u];
    let f = w[c + 3u];
    return mat2x4<f32>(
        vec4<f32>(f16_to_f32(a & 0xFFFFu), f16_to_f32(a >> 16u), f16_to_f32(b & 0xFFFFu), f16_to_f32(b >> 16u)),
        vec4<f32>(f16_to_f32(e & 0xFFFFu), f16_to_f32(e >> 16u), f16_to_f32(f & 0xFFFFu), f16_to_f32(f >> 16u)));
#endif
#if Q8_0
    let wi = (row * p.blocks + blk) * 8u + 2u * s;
    return mat2x4<f32>(d.x * sbytes(w[wi]), d.x * sbytes(w[wi + 1u]));
#endif
#if Q8_S16
    // steps 0, 1 are the first 16 elements, 2, 3 the second
    let wi = (row * p.blocks + blk) * 8u + 2u * s;
    let ds = select(d.y, d.x, s < 2u);
    return mat2x4<f32>(ds * sbytes(w[wi]), ds * sbytes(w[wi + 1u]));
#endif
#if Q4_0
    // word s holds elements 4s.. (low nibbles) and 4s+16.. (high nibbles)
    let q = vec4<u32>(w[(row * p.blocks + blk) * 4u + s]) >> vec4<u32>(0u, 8u, 16u, 24u);
    return mat2x4<f32>(d.x * (vec4<f32>(q & vec4<u32>(15u)) - 8.0), d.x * (vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(15u)) - 8.0));
#endif
#if Q4_M
    let q = vec4<u32>(w[(row * p.blocks + blk) * 4u + s]) >> vec4<u32>(0u, 8u, 16u, 24u);
    return mat2x4<f32>(d.x * vec4<f32>(q & vec4<u32>(15u)) + d.y, d.x * vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(15u)) + d.y);
#endif
}

#if QUANT
// the four signed bytes of a word
fn sbytes(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(v)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
#endif

// Offsets in a 32-block of the elements in columns 0 and 1 of wstep(.., s).
fn xlo(s: u32) -> u32 {
#if NIBBLES
    return 4u * s;
#else
    return 8u * s;
#endif
}

fn xhi(s: u32) -> u32 {
#if NIBBLES
    return 4u * s + 16u;
#else
    return 8u * s + 4u;
#endif
}

// Rows r0.. of this part for one invocation of the RB-row kernels; rows past the end repeat the
// last row (computed, never stored). Every array below is indexed by constants only: CPU
// adapters keep those in registers, a variable index would go through memory.
fn tile_rows(r0: u32) -> array<u32, 8> {
    let last = p.rows - 1u;
    return array<u32, 8>(min(r0, last), min(r0 + 1u, last), min(r0 + 2u, last), min(r0 + 3u, last),
                         min(r0 + 4u, last), min(r0 + 5u, last), min(r0 + 6u, last), min(r0 + 7u, last));
}

// The RB rows' scales of one block (see `wscale`).
fn scales(r: array<u32, 8>, blk: u32) -> array<vec2<f32>, 8> {
    return array<vec2<f32>, 8>(wscale(r[0], blk), wscale(r[1], blk), wscale(r[2], blk), wscale(r[3], blk),
                               wscale(r[4], blk), wscale(r[5], blk), wscale(r[6], blk), wscale(r[7], blk));
}

// Rows ra..rd (scales da..dd) of step s as (lo, hi) matrices: v * lo[j] is row j's partial dot
// over the elements at xlo(s)..+3.
fn group(ra: u32, rb: u32, rc: u32, rd: u32, da: vec2<f32>, db: vec2<f32>, dc: vec2<f32>, dd: vec2<f32>,
         blk: u32, s: u32) -> array<mat4x4<f32>, 2> {
    let w0 = wstep(ra, blk, s, da);
    let w1 = wstep(rb, blk, s, db);
    let w2 = wstep(rc, blk, s, dc);
    let w3 = wstep(rd, blk, s, dd);
    return array<mat4x4<f32>, 2>(mat4x4<f32>(w0[0], w1[0], w2[0], w3[0]), mat4x4<f32>(w0[1], w1[1], w2[1], w3[1]));
}

// Step s of one block for the RB rows, by 4-row group.
struct Step {
    lo0: mat4x4<f32>,
    hi0: mat4x4<f32>,
    lo1: mat4x4<f32>,
    hi1: mat4x4<f32>,
}

// One token's RB partial sums, by 4-row group.
struct Acc {
    g0: vec4<f32>,
    g1: vec4<f32>,
}

fn step(r: array<u32, 8>, d: array<vec2<f32>, 8>, blk: u32, s: u32) -> Step {
    let m0 = group(r[0], r[1], r[2], r[3], d[0], d[1], d[2], d[3], blk, s);
    let m1 = group(r[4], r[5], r[6], r[7], d[4], d[5], d[6], d[7], blk, s);
    return Step(m0[0], m0[1], m1[0], m1[1]);
}

// acc + this step's products with one token's activations at offset o of a block
fn mac(acc: Acc, m: Step, o: u32, s: u32) -> Acc {
    let l = o + xlo(s);
    let h = o + xhi(s);
    let xl = vec4<f32>(x[l], x[l + 1u], x[l + 2u], x[l + 3u]);
    let xh = vec4<f32>(x[h], x[h + 1u], x[h + 2u], x[h + 3u]);
    return Acc(acc.g0 + xl * m.lo0 + xh * m.hi0, acc.g1 + xl * m.lo1 + xh * m.hi1);
}

// Stores rows r0.. of token t (those that exist).
fn store_tile(r0: u32, t: u32, a: Acc) {
    if (t >= p.n) {
        return;
    }
    let v = array<vec4<f32>, 2>(a.g0, a.g1);
    for (var j = 0u; j < RB; j++) {
        if (r0 + j < p.rows) {
            store(r0 + j, t, v[j / 4u][j % 4u]);
        }
    }
}

const ACC0 = Acc(vec4<f32>(0.0), vec4<f32>(0.0));

// Decode (one token per launch row z): RB rows per invocation.
@compute @workgroup_size(64)
fn rowwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r0 = (gid.x + wid.y * p.grid_x * WG) * RB;
    let r = tile_rows(r0);
    let xo = wid.z * p.cols;
    var acc = ACC0;
    for (var blk = 0u; blk < p.blocks; blk++) {
        let d = scales(r, blk);
        for (var s = 0u; s < 4u; s++) {
            acc = mac(acc, step(r, d, blk, s), xo + blk * 32u, s);
        }
    }
    store_tile(r0, wid.z, acc);
}

// Prefill: RB rows × TT tokens per invocation (the tile's tokens past n repeat token n - 1 and
// are not stored).
const TT: u32 = 16u;

@compute @workgroup_size(64)
fn tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r0 = (gid.x + wid.y * p.grid_x * WG) * RB;
    let r = tile_rows(r0);
    let t0 = wid.z * TT;
    let last = p.n - 1u;
    let x0 = min(t0, last) * p.cols;
    let x1 = min(t0 + 1u, last) * p.cols;
    let x2 = min(t0 + 2u, last) * p.cols;
    let x3 = min(t0 + 3u, last) * p.cols;
    let x4 = min(t0 + 4u, last) * p.cols;
    let x5 = min(t0 + 5u, last) * p.cols;
    let x6 = min(t0 + 6u, last) * p.cols;
    let x7 = min(t0 + 7u, last) * p.cols;
    let x8 = min(t0 + 8u, last) * p.cols;
    let x9 = min(t0 + 9u, last) * p.cols;
    let x10 = min(t0 + 10u, last) * p.cols;
    let x11 = min(t0 + 11u, last) * p.cols;
    let x12 = min(t0 + 12u, last) * p.cols;
    let x13 = min(t0 + 13u, last) * p.cols;
    let x14 = min(t0 + 14u, last) * p.cols;
    let x15 = min(t0 + 15u, last) * p.cols;
    var a0 = ACC0;
    var a1 = ACC0;
    var a2 = ACC0;
    var a3 = ACC0;
    var a4 = ACC0;
    var a5 = ACC0;
    var a6 = ACC0;
    var a7 = ACC0;
    var a8 = ACC0;
    var a9 = ACC0;
    var a10 = ACC0;
    var a11 = ACC0;
    var a12 = ACC0;
    var a13 = ACC0;
    var a14 = ACC0;
    var a15 = ACC0;
    for (var blk = 0u; blk < p.blocks; blk++) {
        let d = scales(r, blk);
        let c = blk * 32u;
        for (var s = 0u; s < 4u; s++) {
            let m = step(r, d, blk, s);
            a0 = mac(a0, m, x0 + c, s);
            a1 = mac(a1, m, x1 + c, s);
            a2 = mac(a2, m, x2 + c, s);
            a3 = mac(a3, m, x3 + c, s);
            a4 = mac(a4, m, x4 + c, s);
            a5 = mac(a5, m, x5 + c, s);
            a6 = mac(a6, m, x6 + c, s);
            a7 = mac(a7, m, x7 + c, s);
            a8 = mac(a8, m, x8 + c, s);
            a9 = mac(a9, m, x9 + c, s);
            a10 = mac(a10, m, x10 + c, s);
            a11 = mac(a11, m, x11 + c, s);
            a12 = mac(a12, m, x12 + c, s);
            a13 = mac(a13, m, x13 + c, s);
            a14 = mac(a14, m, x14 + c, s);
            a15 = mac(a15, m, x15 + c, s);
        }
    }
    store_tile(r0, t0 + 0u, a0);
    store_tile(r0, t0 + 1u, a1);
    store_tile(r0, t0 + 2u, a2);
    store_tile(r0, t0 + 3u, a3);
    store_tile(r0, t0 + 4u, a4);
    store_tile(r0, t0 + 5u, a5);
    store_tile(r0, t0 + 6u, a6);
    store_tile(r0, t0 + 7u, a7);
    store_tile(r0, t0 + 8u, a8);
    store_tile(r0, t0 + 9u, a9);
    store_tile(r0, t0 + 10u, a10);
    store_tile(r0, t0 + 11u, a11);
    store_tile(r0, t0 + 12u, a12);
    store_tile(r0, t0 + 13u, a13);
    store_tile(r0, t0 + 14u, a14);
    store_tile(r0, t0 + 15u, a15);
}
