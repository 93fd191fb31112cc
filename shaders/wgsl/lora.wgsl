// The low-rank half of LoRA. `lora_a`: ax = x A^T, one workgroup per (rank index, token) on (x, z).
// `lora_b_add`: y += s * ax B^T, one invocation per output element (extra adapters beyond the
// one fused into matmul). Parameters: `LoraParams`.

@group(0) @binding(0) var<uniform> p: LoraParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // lora_a: (n, cols)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // lora_a: ax (n, r); lora_b_add: y (n, rows)
@group(0) @binding(3) var<storage, read> m: array<f32>;          // lora_a: A (r, cols); lora_b_add: B (rows, r)
@group(0) @binding(4) var<storage, read> ax: array<f32>;         // lora_b_add: (n, r)

@compute @workgroup_size(64)
fn lora_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let j = wid.x;
    let t = wid.z;
    var acc = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        acc += m[j * p.cols + c] * x[t * p.cols + c];
    }
    let r = wg_sum(li, acc);
    if (li == 0u) {
        out[t * p.rank + j] = r;
    }
}

@compute @workgroup_size(64)
fn lora_b_add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i >= p.n * p.rows) {
        return;
    }
    let t = i / p.rows;
    let o = i % p.rows;
    var l = 0.0;
    for (var j = 0u; j < p.rank; j++) {
        l += m[o * p.rank + j] * ax[t * p.rank + j];
    }
    out[i] += p.scale * l;
}
