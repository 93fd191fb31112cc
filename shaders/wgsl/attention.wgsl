// Causal attention over the KV cache with grouped-query heads: one workgroup per (query head,
// token) on (x, z); row t attends to positions 0..=pos0+t. Scores go to a scratch buffer so any context
// length works. Params: n, a = heads, b = head_dim, c = pos0, d = kv heads, f0 = 1/sqrt(head_dim),
// rows = scratch stride (max positions).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // (n, heads * head_dim)
@group(0) @binding(2) var<storage, read> kc: array<f32>;         // (max_seq, kv_heads * head_dim)
@group(0) @binding(3) var<storage, read> vc: array<f32>;         // (max_seq, kv_heads * head_dim)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (n, heads * head_dim)
@group(0) @binding(5) var<storage, read_write> sc: array<f32>;   // (n * heads, rows)

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let t = wid.z;
    let hd = p.b;
    let kvd = p.d * hd;
    let kvh = h / (p.a / p.d);
    let len = p.c + t + 1u;
    let qo = t * p.a * hd + h * hd;
    let so = (t * p.a + h) * p.rows;
    // scores and their maximum
    var m = -3.4e38;
    for (var j = li; j < len; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * kc[j * kvd + kvh * hd + d];
        }
        s *= p.f0;
        sc[so + j] = s;
        m = max(m, s);
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    // exponentials and their sum
    var sum = 0.0;
    for (var j = li; j < len; j += WG) {
        let e = exp(sc[so + j] - mx);
        sc[so + j] = e;
        sum += e;
    }
    red[li] = sum;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    // weighted sum of values, one head dimension per invocation
    for (var d = li; d < hd; d += WG) {
        var o = 0.0;
        for (var j = 0u; j < len; j++) {
            o += sc[so + j] * vc[j * kvd + kvh * hd + d];
        }
        out[qo + d] = o * inv;
    }
}
