// Element-wise kernels, one invocation per element. Parameters: `ElementwiseParams`.

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;  // (n)
@group(0) @binding(2) var<storage, read> b: array<f32>;        // (n)

// a = silu(a) * b
@compute @workgroup_size(64)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i < p.n) {
        let g = a[i];
        a[i] = g / (1.0 + exp(-g)) * b[i];
    }
}

// a += b
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i < p.n) {
        a[i] += b[i];
    }
}

// a = gelu_tanh(a) * b (Gemma's GeGLU; ggml's formula)
@compute @workgroup_size(64)
fn gelu_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i < p.n) {
        let g = a[i];
        // tanh(z) = 1 - 2 / (exp(2z) + 1), clamped so exp stays finite
        let z = clamp(0.7978846 * g * (1.0 + 0.044715 * g * g), -15.0, 15.0);
        a[i] = 0.5 * g * (1.0 + (1.0 - 2.0 / (exp(2.0 * z) + 1.0))) * b[i];
    }
}

// a *= f0 (binding 2 unused)
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i < p.n) {
        a[i] *= p.factor;
    }
}
