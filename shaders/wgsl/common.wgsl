// Shared by every kernel: the parameter block (mirrors `Params` in src/lib.rs, 48 bytes).
// Each kernel documents which fields it reads.
struct Params {
    n: u32,      // tokens (rows of the activation)
    rows: u32,   // output features / rows of W
    cols: u32,   // input features / columns of W
    a: u32,      // kernel-specific
    b: u32,      // kernel-specific
    c: u32,      // kernel-specific
    d: u32,      // kernel-specific
    grid_x: u32, // workgroups along x when a launch is folded into 2-D
    f0: f32,     // kernel-specific
    f1: f32,
    f2: f32,
    f3: f32,
}

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
