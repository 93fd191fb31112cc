// out[t] = table[tokens[t]], dequantised; one invocation per output element.
// Formats by define as in matmul.wgsl. Parameters: `EmbedParams` (row0.. row0+rows is this part of
// the table). Tokens outside the part are left alone.

@group(0) @binding(0) var<uniform> p: EmbedParams;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;     // (n)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (n, cols)
#if F32
@group(0) @binding(3) var<storage, read> w: array<f32>;          // (vocab, cols)
#else
@group(0) @binding(3) var<storage, read> w: array<u32>;          // packed, see matmul.wgsl
#endif
#if QUANT
@group(0) @binding(4) var<storage, read> sc: array<f32>;         // (vocab, cols/32) or (vocab, cols/16)
#endif

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.grid_x * WG;
    if (i >= p.n * p.cols) {
        return;
    }
    let t = i / p.cols;
    let c = i % p.cols;
    let tok = tokens[t];
    if (tok < p.row0 || tok >= p.row0 + p.rows) {
        return;
    }
    let row = tok - p.row0;
#if F32
    out[i] = w[row * p.cols + c];
#endif
#if F16
    let v = w[(row * p.cols + c) / 2u];
    out[i] = f16_to_f32(select(v & 0xFFFFu, v >> 16u, (c & 1u) == 1u));
#endif
#if Q8_0
    let bi = row * p.blocks + c / 32u;
    let j = c % 32u;
    let q = w[bi * 8u + j / 4u];
    out[i] = sc[bi] * f32(i32(q << (24u - 8u * (j % 4u))) >> 24u);
#endif
#if Q4_0
    let bi = row * p.blocks + c / 32u;
    let j = c % 32u;
    let byte = (w[bi * 4u + (j % 16u) / 4u] >> (8u * (j % 4u))) & 0xFFu;
    let q = select(byte & 0xFu, byte >> 4u, j >= 16u);
    out[i] = sc[bi] * (f32(q) - 8.0);
#endif
#if Q4_M
    let bi = row * p.blocks + c / 32u;
    let j = c % 32u;
    let byte = (w[bi * 4u + (j % 16u) / 4u] >> (8u * (j % 4u))) & 0xFFu;
    let q = select(byte & 0xFu, byte >> 4u, j >= 16u);
    out[i] = sc[2u * bi] * f32(q) + sc[2u * bi + 1u];
#endif
#if Q8_S16
    let bi = row * p.blocks + c / 32u;
    let j = c % 32u;
    let q = w[bi * 8u + j / 4u];
    out[i] = sc[2u * bi + j / 16u] * f32(i32(q << (24u - 8u * (j % 4u))) >> 24u);
#endif
}
