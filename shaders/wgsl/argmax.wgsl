// Greedy sampling on the GPU: index of the largest logit (the first one on ties, as the CPU
// reference picks), so a decode step reads back 4 bytes instead of the vocabulary.
// One workgroup. Parameters: `ArgmaxParams` (n = vocabulary size).

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (n)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;  // (1)

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32) {
    var bv = -3.4e38;
    var bi = 0xFFFFFFFFu;
    for (var i = li; i < p.n; i += WG) {
        if (x[i] > bv) {
            bv = x[i];
            bi = i;
        }
    }
    let best = wg_argmax(li, bv, bi);
    if (li == 0u) {
        out[0] = best.i;
    }
}
