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

// One invocation per output row, no barriers: faster where invocations are CPU SIMD lanes
// (lavapipe, SwiftShader); `main` splits each row across a workgroup for real GPUs.
@compute @workgroup_size(64)
fn rowwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = gid.x + wid.y * p.grid_x * WG;
    if (row >= p.rows) {
        return;
    }
    store(row, wid.z, partial_dot(row, wid.z * p.cols, 0u, 1u));
}

// Elements 4j..4j+3 of 32-block `blk` of W[row], dequantised (j in 0..8).
fn wblock(row: u32, blk: u32, j: u32) -> vec4<f32> {
#if F32
    let c = row * p.cols + blk * 32u + 4u * j;
    return vec4<f32>(w[c], w[c + 1u], w[c + 2u], w[c + 3u]);
#endif
#if F16
    let c = (row * p.cols + blk * 32u + 4u * j) / 2u;
    let a = w[c];
    let b = w[c + 1u];
    return vec4<f32>(f16_to_f32(a & 0xFFFFu), f16_to_f32(a >> 16u), f16_to_f32(b & 0xFFFFu), f16_to_f32(b >> 16u));
#endif
#if Q8_0
    let bi = row * p.blocks + blk;
    let q = vec4<f32>((vec4<i32>(bitcast<i32>(w[bi * 8u + j])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
    return sc[bi] * q;
#endif
#if Q4_0
    // word k holds elements 4k.. (low nibbles) and 4k+16.. (high nibbles)
    let bi = row * p.blocks + blk;
    let q = (vec4<u32>(w[bi * 4u + (j & 3u)]) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(4u * (j >> 2u)))) & vec4<u32>(15u);
    return sc[bi] * (vec4<f32>(q) - 8.0);
#endif
#if Q4_M
    let bi = row * p.blocks + blk;
    let q = (vec4<u32>(w[bi * 4u + (j & 3u)]) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(4u * (j >> 2u)))) & vec4<u32>(15u);
    return sc[2u * bi] * vec4<f32>(q) + sc[2u * bi + 1u];
#endif
#if Q8_S16
    let bi = row * p.blocks + blk;
    let q = vec4<f32>((vec4<i32>(bitcast<i32>(w[bi * 8u + j])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
    return sc[2u * bi + (j >> 2u)] * q;
#endif
}

// Prefill on CPU adapters: one invocation per (output row, TT tokens), each weight block read and
// dequantised once for the TT tokens instead of once per token (cols a multiple of 32). The tile's
// last tokens repeat token n - 1 where n is not a multiple of TT, and are not stored.
const TT: u32 = 8u;

@compute @workgroup_size(64)
fn tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    // no early return: out-of-range lanes compute row rows - 1 and store nothing, so the control
    // flow stays uniform and the activation loads (uniform addresses) stay scalar on CPU adapters
    let r = gid.x + wid.y * p.grid_x * WG;
    let row = min(r, p.rows - 1u);
    let t0 = wid.z * TT;
    var xo: array<u32, 8>;
    for (var i = 0u; i < TT; i++) {
        xo[i] = min(t0 + i, p.n - 1u) * p.cols;
    }
    var acc: array<f32, 8>;
    for (var blk = 0u; blk < p.blocks; blk++) {
        for (var j = 0u; j < 8u; j++) {
            let wv = wblock(row, blk, j);
            let c = blk * 32u + 4u * j;
            for (var i = 0u; i < TT; i++) {
                let o = xo[i] + c;
                acc[i] += dot(wv, vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]));
            }
        }
    }
    for (var i = 0u; i < TT; i++) {
        if (r < p.rows && t0 + i < p.n) {
            store(row, t0 + i, acc[i]);
        }
    }
}
