// Top-k sampling on the GPU, mirroring the CPU sampler (core/src/generate.rs `sample_host`):
// logits / temperature, keep the k largest (first index on ties), top-p over them in ascending
// order, then the host's uniform u walks the kept tokens in index order. One workgroup; k <= 64.
// Parameters: `SampleParams` (n = vocabulary).

@group(0) @binding(0) var<uniform> p: SampleParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // (n) logits
@group(0) @binding(2) var<storage, read_write> work: array<f32>;  // (n) scaled logits, consumed
@group(0) @binding(3) var<storage, read_write> out: array<u32>;   // (1) token

var<workgroup> cand_v: array<f32, 64>;  // selected values, descending
var<workgroup> cand_i: array<u32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32) {
    let scale = p.temperature != 1.0 && p.temperature > 0.0;
    for (var i = li; i < p.n; i += WG) {
        work[i] = select(x[i], x[i] / p.temperature, scale);
    }
    storageBarrier();
    workgroupBarrier();
    // k rounds of argmax, each removing its winner
    for (var r = 0u; r < p.top_k; r++) {
        var bv = -3.4e38;
        var bi = 0xFFFFFFFFu;
        for (var i = li; i < p.n; i += WG) {
            if (work[i] > bv) {
                bv = work[i];
                bi = i;
            }
        }
        let best = wg_argmax(li, bv, bi);
        if (li == 0u) {
            cand_v[r] = best.v;
            cand_i[r] = best.i;
            work[best.i] = -3.4e38;
        }
        storageBarrier();
        workgroupBarrier();
    }
    if (li != 0u) {
        return;
    }
    let k = p.top_k;
    let mx = cand_v[0];
    // top-p exactly as the host: ascending order, cumulative softmax, drop mass <= 1 - p
    var keep: array<bool, 64>;
    var sum = 0.0;
    for (var j = 0u; j < k; j++) {
        sum += exp(cand_v[k - 1u - j] - mx);
        keep[j] = true;
    }
    if (p.top_p < 1.0) {
        var cum = 0.0;
        for (var j = 0u; j < k; j++) {
            let c = k - 1u - j; // ascending
            cum += exp(cand_v[c] - mx) / sum;
            if (cum <= 1.0 - p.top_p && j < k - 1u) {
                keep[c] = false;
            }
        }
    }
    // the kept tokens in index order (insertion sort; k is small)
    var idx: array<u32, 64>;
    var val: array<f32, 64>;
    var m = 0u;
    for (var c = 0u; c < k; c++) {
        if (keep[c]) {
            var pos = m;
            while (pos > 0u && idx[pos - 1u] > cand_i[c]) {
                idx[pos] = idx[pos - 1u];
                val[pos] = val[pos - 1u];
                pos--;
            }
            idx[pos] = cand_i[c];
            val[pos] = cand_v[c];
            m++;
        }
    }
    var total = 0.0;
    for (var j = 0u; j < m; j++) {
        total += exp(val[j] - mx);
    }
    var r = p.u * total;
    var tok = cand_i[0];
    for (var j = 0u; j < m; j++) {
        r -= exp(val[j] - mx);
        if (r <= 0.0) {
            tok = idx[j];
            break;
        }
    }
    out[0] = tok;
}
