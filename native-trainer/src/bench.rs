//! `vicugna bench`: single-thread CPU decode speed on random-weight models of the TinyStories
//! shapes, beside the machine's read bandwidth measured in the same run. Prints figures; asserts
//! nothing.

use std::time::Instant;
use vicugna_core::config::Config;
use vicugna_core::cpu::Cpu;
use vicugna_core::quant::GgmlType;
use vicugna_core::weights::{LayerWeights, Matrix, ModelWeights};
use vicugna_core::Model;

pub struct Shape {
    pub name: &'static str,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab: usize,
}

/// llama2.c's TinyStories checkpoints (shared classifier = tied embeddings).
pub const SHAPES: [Shape; 2] = [
    Shape { name: "stories15M", dim: 288, hidden: 768, layers: 6, heads: 6, vocab: 32000 },
    Shape { name: "stories110M", dim: 768, hidden: 2048, layers: 12, heads: 12, vocab: 32000 },
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    }
}

pub fn random_model(s: &Shape, ty: GgmlType, seed: u64) -> ModelWeights {
    let cfg = Config {
        vocab_size: s.vocab,
        hidden_size: s.dim,
        intermediate_size: s.hidden,
        num_layers: s.layers,
        num_heads: s.heads,
        num_kv_heads: s.heads,
        head_dim: s.dim / s.heads,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        rope_freq_factors: None,
        max_position: 1024,
        tie_embeddings: true,
        rope_interleaved: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    };
    let mut rng = Lcg(seed);
    let mut mat = |r: usize, c: usize| {
        let m = Matrix::from_f32(r, c, (0..r * c).map(|_| rng.next()).collect());
        m.convert(ty).expect("shapes divisible by 32")
    };
    let embed = mat(s.vocab, s.dim);
    let layers = (0..s.layers)
        .map(|_| LayerWeights {
            attn_norm: vec![1.0; s.dim],
            ffn_norm: vec![1.0; s.dim],
            proj: [
                mat(s.dim, s.dim),
                mat(s.dim, s.dim),
                mat(s.dim, s.dim),
                mat(s.dim, s.dim),
                mat(s.hidden, s.dim),
                mat(s.hidden, s.dim),
                mat(s.dim, s.hidden),
            ],
        })
        .collect();
    ModelWeights { cfg, embed, layers, norm: vec![1.0; s.dim], lm_head: None, source: s.name.into() }
}

/// Bytes of weights one decode step reads (every matrix once; the embedding row is negligible
/// but the tied classifier reads the whole table).
pub fn weight_bytes(w: &ModelWeights) -> usize {
    let m = |m: &Matrix| m.data.len();
    w.layers.iter().map(|l| l.proj.iter().map(m).sum::<usize>() + 8 * l.attn_norm.len()).sum::<usize>() + m(w.lm_head())
}

/// Best-of-3 single-thread read bandwidth over a buffer far larger than the caches, in GB/s.
pub fn read_bandwidth() -> f64 {
    let v: Vec<f32> = (0..(256 << 20)).map(|i| (i & 7) as f32).collect(); // 1 GiB
    let mut best = 0f64;
    let mut sink = 0f32;
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = [0f32; 16];
        for c in v.chunks_exact(16) {
            for k in 0..16 {
                acc[k] += c[k];
            }
        }
        sink += acc.iter().sum::<f32>();
        best = best.max(v.len() as f64 * 4.0 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(sink);
    best
}

pub fn run(out: &mut dyn std::io::Write, quick: bool) -> anyhow::Result<()> {
    let bw = read_bandwidth();
    writeln!(
        out,
        "machine: {} logical CPUs available, benchmark uses 1 thread",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )?;
    writeln!(out, "read bandwidth (1 thread, 1 GiB sum): {bw:.1} GB/s")?;
    writeln!(
        out,
        "{:<12} {:<5} {:>9} {:>10} {:>10} {:>12}",
        "model", "type", "MB/token", "tok/s", "GB/s", "of bandwidth"
    )?;
    for s in &SHAPES {
        for ty in [GgmlType::F32, GgmlType::Q4_0] {
            let w = random_model(s, ty, 7);
            let m = Model::new(Cpu, &w)?;
            let steps = if quick {
                4
            } else if s.dim > 500 {
                48
            } else {
                128
            };
            let mut cache = m.new_cache(steps + 2)?;
            m.forward(&[1], 0, &mut cache, false)?; // warm-up: first touch of every page
            let t = Instant::now();
            let mut tok = 1u32;
            for p in 1..=steps {
                let l = m.forward(&[tok], p, &mut cache, false)?;
                tok = (l.iter().enumerate().fold(0, |b, (i, &x)| if x > l[b] { i } else { b }) % s.vocab) as u32;
            }
            let tps = steps as f64 / t.elapsed().as_secs_f64();
            let bytes = weight_bytes(&w) as f64;
            let gbs = bytes * tps / 1e9;
            writeln!(
                out,
                "{:<12} {:<5} {:>9.1} {:>10.1} {:>10.2} {:>11.0}%",
                s.name,
                format!("{ty:?}"),
                bytes / 1e6,
                tps,
                gbs,
                100.0 * gbs / bw
            )?;
        }
    }
    Ok(())
}
