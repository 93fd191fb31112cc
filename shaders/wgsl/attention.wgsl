// Causal attention over the KV cache with grouped-query heads: one workgroup per (query head,
// token) on (x, z); row t attends to positions 0..=pos0+t. Scores go to a scratch buffer so any context
// length works. Parameters: `AttentionParams` (stride = the scratch row stride, window = 0 for
// none, else row t sees only its last `window` positions).

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // (n, heads * head_dim)
@group(0) @binding(2) var<storage, read> kc: array<f32>;         // (max_seq, kv_heads * head_dim)
@group(0) @binding(3) var<storage, read> vc: array<f32>;         // (max_seq, kv_heads * head_dim)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (n, heads * head_dim)
@group(0) @binding(5) var<storage, read_write> sc: array<f32>;   // (n * heads, rows)

// The first position a row with `len` visible positions attends to (sliding-window layers).
fn window_start(len: u32) -> u32 {
    return select(0u, len - min(len, p.window), p.window > 0u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let t = wid.z;
    let hd = p.head_dim;
    let kvd = p.kv_heads * hd;
    let kvh = h / (p.heads / p.kv_heads);
    let len = p.pos0 + t + 1u;
    let first = window_start(len);
    let qo = t * p.heads * hd + h * hd;
    let so = (t * p.heads + h) * p.stride;
    // scores and their maximum
    var m = -3.4e38;
    for (var j = first + li; j < len; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * kc[j * kvd + kvh * hd + d];
        }
        s *= p.scale;
        sc[so + j] = s;
        m = max(m, s);
    }
    let mx = wg_max(li, m);
    // exponentials and their sum
    var sum = 0.0;
    for (var j = first + li; j < len; j += WG) {
        let e = exp(sc[so + j] - mx);
        sc[so + j] = e;
        sum += e;
    }
    let inv = 1.0 / wg_sum(li, sum);
    // weighted sum of values, one head dimension per invocation
    for (var d = li; d < hd; d += WG) {
        var o = 0.0;
        for (var j = first; j < len; j++) {
            o += sc[so + j] * vc[j * kvd + kvh * hd + d];
        }
        out[qo + d] = o * inv;
    }
}

// Long contexts: the positions are split into chunks of p.chunk_len positions, one workgroup per
// (head, chunk, token) writing its unnormalised partial result; `combine` merges the chunks with
// the usual max/sum rescaling. Scratch layout per (token, head, chunk): [max, sum, out[head_dim]].
// Parameters as `main`, plus chunks and chunk_len.

@group(0) @binding(6) var<storage, read_write> part_out: array<f32>;  // (n, heads, chunks, 2 + head_dim)

@compute @workgroup_size(64)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let chunk = wid.y;
    let t = wid.z;
    let hd = p.head_dim;
    let kvd = p.kv_heads * hd;
    let kvh = h / (p.heads / p.kv_heads);
    let len = p.pos0 + t + 1u;
    let clen = p.chunk_len;
    let j0 = max(chunk * clen, window_start(len));
    let j1 = min(len, chunk * clen + clen);
    let qo = t * p.heads * hd + h * hd;
    let so = ((t * p.heads + h) * p.chunks + chunk) * clen;
    let po = ((t * p.heads + h) * p.chunks + chunk) * (2u + hd);
    var m = -3.4e38;
    for (var j = j0 + li; j < j1; j += WG) {
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * kc[j * kvd + kvh * hd + d];
        }
        s *= p.scale;
        sc[so + j - j0] = s;
        m = max(m, s);
    }
    let mx = wg_max(li, m);
    var sum = 0.0;
    for (var j = j0 + li; j < j1; j += WG) {
        let e = exp(sc[so + j - j0] - mx);
        sc[so + j - j0] = e;
        sum += e;
    }
    let total = wg_sum(li, sum);
    if (li == 0u) {
        // a chunk past this row's causal end contributes nothing
        part_out[po] = select(-3.4e38, mx, j0 < j1);
        part_out[po + 1u] = total;
    }
    for (var d = li; d < hd; d += WG) {
        var o = 0.0;
        for (var j = j0; j < j1; j++) {
            o += sc[so + j - j0] * vc[j * kvd + kvh * hd + d];
        }
        part_out[po + 2u + d] = o;
    }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wid.x;
    let t = wid.z;
    let hd = p.head_dim;
    let base = (t * p.heads + h) * p.chunks * (2u + hd);
    var mx = -3.4e38;
    for (var c = 0u; c < p.chunks; c++) {
        mx = max(mx, part_out[base + c * (2u + hd)]);
    }
    var total = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        let pc = base + c * (2u + hd);
        total += exp(part_out[pc] - mx) * part_out[pc + 1u];
    }
    for (var d = li; d < hd; d += WG) {
        var o = 0.0;
        for (var c = 0u; c < p.chunks; c++) {
            let pc = base + c * (2u + hd);
            o += exp(part_out[pc] - mx) * part_out[pc + 2u + d];
        }
        out[t * p.heads * hd + h * hd + d] = o / total;
    }
}
