// Device copy bandwidth probe for `vicugna bench`: dst = src, 16 bytes per invocation.
// Parameters: `CopyParams` (n = vec4 count).

@group(0) @binding(0) var<uniform> p: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;        // (n)
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;  // (n)

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i < p.n) {
        dst[i] = src[i];
    }
}
