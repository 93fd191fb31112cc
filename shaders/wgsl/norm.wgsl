// rmsnorm: out = x / sqrt(mean(x^2) + eps) * w, one workgroup per row. Parameters: `NormParams`.
// `rmsnorm_inplace` normalises `out` itself (Gemma's per-head QK-norm: rows = tokens * heads,
// cols = head_dim).

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (n, cols)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (n, cols)
@group(0) @binding(3) var<storage, read> w: array<f32>;          // (cols)

@compute @workgroup_size(64)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * p.grid_x;
    // row is uniform across the workgroup, so returning keeps the barriers below uniform
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var acc = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        acc += x[base + c] * x[base + c];
    }
    let inv = 1.0 / sqrt(wg_sum(li, acc) / f32(p.cols) + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        out[base + c] = x[base + c] * inv * w[c];
    }
}

@compute @workgroup_size(64)
fn rmsnorm_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * p.grid_x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var acc = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        acc += out[base + c] * out[base + c];
    }
    let inv = 1.0 / sqrt(wg_sum(li, acc) / f32(p.cols) + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        out[base + c] = out[base + c] * inv * w[c];
    }
}
