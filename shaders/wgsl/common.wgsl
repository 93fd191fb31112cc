// Shared by every kernel (each family's parameter struct is generated from its Rust twin in
// src/kernels.rs and placed after this file).

const WG: u32 = 64u;

// IEEE half (low 16 bits of h) to f32, exactly, with integer ops only: `unpack2x16float` needs a
// capability some backends lack, and this keeps F16 weights free of shader-f16 too.
fn f16_to_f32(h: u32) -> f32 {
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    let sign = (h & 0x8000u) << 16u;
    if (e == 0u) {
        // zero and subnormals: m * 2^-24
        return select(1.0, -1.0, sign != 0u) * f32(m) * 5.9604645e-8;
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Workgroup reductions over the 64 invocations; every invocation receives the result. Call them
// from uniform control flow only (they contain barriers).
var<workgroup> red_f: array<f32, 64>;
var<workgroup> red_u: array<u32, 64>;

fn wg_sum(li: u32, v: f32) -> f32 {
    red_f[li] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_f[li] += red_f[li + s];
        }
        workgroupBarrier();
    }
    let r = red_f[0];
    workgroupBarrier(); // the scratch is free again when this returns
    return r;
}

fn wg_max(li: u32, v: f32) -> f32 {
    red_f[li] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_f[li] = max(red_f[li], red_f[li + s]);
        }
        workgroupBarrier();
    }
    let r = red_f[0];
    workgroupBarrier();
    return r;
}

struct ValIdx {
    v: f32,
    i: u32,
}

// The largest (v, i) pair, the smallest index on ties (as the CPU reference's argmax).
fn wg_argmax(li: u32, v: f32, i: u32) -> ValIdx {
    red_f[li] = v;
    red_u[li] = i;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (li < s) {
            let ov = red_f[li + s];
            let oi = red_u[li + s];
            if (ov > red_f[li] || (ov == red_f[li] && oi < red_u[li])) {
                red_f[li] = ov;
                red_u[li] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = ValIdx(red_f[0], red_u[0]);
    workgroupBarrier();
    return r;
}
