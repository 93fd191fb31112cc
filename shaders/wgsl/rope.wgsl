// Rotary embedding in place, one invocation per rotated pair. cos/sin come from a table computed
// on the host in f32 exactly as the CPU reference does, so both backends rotate identically.
// Parameters: `RopeParams`.

@group(0) @binding(0) var<uniform> p: RopeParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;    // (n, heads * head_dim)
@group(0) @binding(2) var<storage, read> cs: array<f32>;         // (positions, head_dim/2, 2): cos, sin

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i >= p.n * p.heads * half) {
        return;
    }
    let t = i / (p.heads * half);
    let h = (i / half) % p.heads;
    let k = i % half;
    let base = t * p.heads * p.head_dim + h * p.head_dim;
    var ia = base + k;
    var ib = base + k + half;
    if (p.interleaved == 1u) {
        ia = base + 2u * k;
        ib = ia + 1u;
    }
    let ti = ((p.pos0 + t) * half + k) * 2u;
    let c = cs[ti];
    let s = cs[ti + 1u];
    let x0 = x[ia];
    let x1 = x[ib];
    x[ia] = x0 * c - x1 * s;
    x[ib] = x1 * c + x0 * s;
}
