//! The wgpu backend against the CPU reference, op by op and on whole fixture models. Runs on any
//! adapter; CI installs Mesa's lavapipe. Without an adapter a test says `skipped:` (and fails
//! under CI=true, where an adapter must exist).

use vicugna_core::backend::{block_on, Backend, LoraPair, Rope};
use vicugna_core::cpu::Cpu;
use vicugna_core::generate::{generate, GenerationConfig};
use vicugna_core::quant::GgmlType;
use vicugna_core::random::Rng;
use vicugna_core::synthetic::{random_matrix, random_weights};
use vicugna_core::tensors::Slot;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{Config, LoraAdapter, Matrix, Model, ModelWeights};
use vicugna_shaders::Wgpu;
use vicugna_tests::*;

fn gpu() -> Option<Wgpu> {
    match Wgpu::default_device() {
        Ok((d, q, info)) => {
            eprintln!("adapter: {} ({:?})", info.name, info.backend);
            Some(Wgpu::new(d, q))
        }
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must provide a GPU adapter (lavapipe): {e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Every stored type the GPU keeps quantised (Q5_0 as Q8_0, Q4_1 and Q4_K as Q4M, Q6_K as
/// Q8S16) and two it dequantises to F32 (Q5_1, Q5_K).
const TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::BF16,
];

fn cfg(heads: usize, kv: usize, hd: usize) -> Config {
    Config::from_hf_json(
        &format!(r#"{{"vocab_size":64,"hidden_size":{},"intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":{heads},"num_key_value_heads":{kv},"head_dim":{hd}}}"#, heads * hd),
        "test",
    )
    .unwrap()
}

#[test]
fn matmul_with_and_without_lora_matches_cpu_for_every_format() {
    for rowwise in [false, true] {
        let Some(mut g) = gpu() else { return };
        g.rowwise = rowwise;
        matmul_cases(&g);
    }
}

fn matmul_cases(g: &Wgpu) {
    let mut rng = Rng::new(1);
    // cols 40: F32 and F16 only (not a whole block), which the CPU-adapter kernels leave to `main`
    for &(rows, cols) in &[(1usize, 32usize), (5, 64), (7, 40), (67, 96), (130, 256)] {
        for &n in &[1usize, 3, 11, 19] {
            let x = rng.vec(n * cols, 1.0);
            let base = Matrix::from_f32(rows, cols, rng.vec(rows * cols, 0.5));
            let (r1, r2) = (4, 2);
            let (a1, b1, a2, b2) =
                (rng.vec(r1 * cols, 0.3), rng.vec(rows * r1, 0.3), rng.vec(r2 * cols, 0.3), rng.vec(rows * r2, 0.3));
            for ty in TYPES {
                if !cols.is_multiple_of(ty.block_size()) {
                    continue;
                }
                let m = if ty.can_quantize() {
                    base.convert(ty).unwrap()
                } else {
                    random_matrix(&mut rng, ty, rows, cols, 0.5)
                };
                let run = |be: &dyn Fn() -> Vec<f32>| be();
                let cpu = run(&|| {
                    let (w, l1, l2) = (
                        Cpu::EXACT.load_matrix(&m).unwrap(),
                        Cpu::EXACT.load_lora(&LoraPair { r: r1, a: &a1, b: &b1 }).unwrap(),
                        Cpu::EXACT.load_lora(&LoraPair { r: r2, a: &a2, b: &b2 }).unwrap(),
                    );
                    let xa = Cpu::EXACT.act_from_host(n, cols, &x);
                    let mut o = Cpu::EXACT.act(n, rows);
                    Cpu::EXACT.matmul(&mut o, &xa, &w, &[(&l1, 0.7), (&l2, -1.3)]);
                    let mut o2 = Cpu::EXACT.act(n, rows);
                    Cpu::EXACT.matmul(&mut o2, &xa, &w, &[]);
                    [Cpu::EXACT.to_host(&o).unwrap(), Cpu::EXACT.to_host(&o2).unwrap()].concat()
                });
                let gpu_out = run(&|| {
                    let (w, l1, l2) = (
                        g.load_matrix(&m).unwrap(),
                        g.load_lora(&LoraPair { r: r1, a: &a1, b: &b1 }).unwrap(),
                        g.load_lora(&LoraPair { r: r2, a: &a2, b: &b2 }).unwrap(),
                    );
                    let xa = g.act_from_host(n, cols, &x);
                    let mut o = g.act(n, rows);
                    g.matmul(&mut o, &xa, &w, &[(&l1, 0.7), (&l2, -1.3)]);
                    let mut o2 = g.act(n, rows);
                    g.matmul(&mut o2, &xa, &w, &[]);
                    [g.to_host(&o).unwrap(), g.to_host(&o2).unwrap()].concat()
                });
                eprintln!("matmul {ty:?} {rows}x{cols} n={n}: max |diff| {:.2e}", max_abs_diff(&gpu_out, &cpu));
                assert_close(&gpu_out, &cpu, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn embed_norm_rope_attention_elementwise_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(2);
    let c = cfg(4, 2, 16);
    let (n, h) = (5usize, c.hidden_size);
    // embedding rows from every format
    let table = Matrix::from_f32(64, h, rng.vec(64 * h, 1.0));
    let toks = [3u32, 0, 63, 7, 7];
    for ty in TYPES {
        // the K-quants need 256-wide rows
        let t =
            if ty.block_size() <= h { table.convert(ty).unwrap() } else { random_matrix(&mut rng, ty, 64, 256, 0.5) };
        let mut oc = Cpu::EXACT.act(n, t.cols);
        Cpu::EXACT.embed(&mut oc, &Cpu::EXACT.load_matrix(&t).unwrap(), &toks);
        let mut og = g.act(n, t.cols);
        g.embed(&mut og, &g.load_matrix(&t).unwrap(), &toks);
        // the same weights bit for bit (quant::unpack_row), so exactly the CPU's rows
        assert_close(&g.to_host(&og).unwrap(), &oc.data, 0.0, 0.0);
    }
    // rmsnorm
    let x = rng.vec(n * h, 2.0);
    let w = rng.vec(h, 1.0);
    let mut oc = Cpu::EXACT.act(n, h);
    Cpu::EXACT.rmsnorm(&mut oc, &Cpu::EXACT.act_from_host(n, h, &x), &w, 1e-5);
    let mut og = g.act(n, h);
    g.rmsnorm(&mut og, &g.act_from_host(n, h, &x), &g.load_vector(&w).unwrap(), 1e-5);
    assert_close(&g.to_host(&og).unwrap(), &oc.data, 1e-5, 1e-5);
    // rope, both layouts, at an offset
    for interleaved in [false, true] {
        let rope = Rope { inv_freq: c.rope_inv_freq(), interleaved };
        let mut xc = Cpu::EXACT.act_from_host(n, h, &x);
        Cpu::EXACT.rope(&mut xc, 4, 16, 9, &rope);
        let mut xg = g.act_from_host(n, h, &x);
        g.rope(&mut xg, 4, 16, 9, &rope);
        assert_close(&g.to_host(&xg).unwrap(), &xc.data, 1e-6, 1e-6);
    }
    // attention: prefill 5 then decode 1 over the cache, grouped-query heads
    let kvd = c.kv_dim();
    let (q, k, v) = (rng.vec(n * h, 1.0), rng.vec(n * kvd, 1.0), rng.vec(n * kvd, 1.0));
    let mut cc = Cpu::EXACT.new_cache(&c, 8).unwrap();
    let mut gc = g.new_cache(&c, 8).unwrap();
    for (pos0, rows) in [(0usize, 4usize), (4, 1)] {
        let want = attend(&Cpu::EXACT, &mut cc, &c, (&q, &k, &v), pos0, rows);
        assert_close(&attend(&g, &mut gc, &c, (&q, &k, &v), pos0, rows), &want, 1e-5, 1e-5);
    }
    // sliding-window attention (Gemma-3's local layers) with its query scale, decode past the window
    let mut sw = c.clone();
    sw.sliding_window = Some(3);
    sw.swa_layers = vec![true];
    sw.attn_scale = Some(0.3);
    let mut cc = Cpu::EXACT.new_cache(&sw, 8).unwrap();
    let mut gc = g.new_cache(&sw, 8).unwrap();
    for (pos0, rows) in [(0usize, 4usize), (4, 1)] {
        let want = attend(&Cpu::EXACT, &mut cc, &sw, (&q, &k, &v), pos0, rows);
        assert_close(&attend(&g, &mut gc, &sw, (&q, &k, &v), pos0, rows), &want, 1e-5, 1e-5);
    }
    // silu_mul, gelu_mul, add, scale
    let (a, b) = (rng.vec(n * h, 3.0), rng.vec(n * h, 3.0));
    let mut ac = Cpu::EXACT.act_from_host(n, h, &a);
    Cpu::EXACT.silu_mul(&mut ac, &Cpu::EXACT.act_from_host(n, h, &b));
    Cpu::EXACT.add(&mut ac, &Cpu::EXACT.act_from_host(n, h, &b));
    Cpu::EXACT.gelu_mul(&mut ac, &Cpu::EXACT.act_from_host(n, h, &b));
    Cpu::EXACT.scale(&mut ac, 0.37);
    let mut ag = g.act_from_host(n, h, &a);
    g.silu_mul(&mut ag, &g.act_from_host(n, h, &b));
    g.add(&mut ag, &g.act_from_host(n, h, &b));
    g.gelu_mul(&mut ag, &g.act_from_host(n, h, &b));
    g.scale(&mut ag, 0.37);
    assert_close(&g.to_host(&ag).unwrap(), &ac.data, 1e-5, 1e-5);
    // per-head rmsnorm in place (QK-norm)
    let hw = rng.vec(16, 1.0);
    let mut xc = Cpu::EXACT.act_from_host(n, h, &x);
    Cpu::EXACT.rmsnorm_heads(&mut xc, &hw, 16, 1e-6);
    let mut xg = g.act_from_host(n, h, &x);
    g.rmsnorm_heads(&mut xg, &g.load_vector(&hw).unwrap(), 16, 1e-6);
    assert_close(&g.to_host(&xg).unwrap(), &xc.data, 1e-5, 1e-5);
}

/// A random model with Gemma-3's block (post-norms, QK-norm, GeGLU, scaled embeddings, query
/// scaling, alternating sliding-window and global layers with two RoPE bases), its projections in
/// the quantised types of the real Q4_K_M file.
fn gemma_like(rng: &mut Rng) -> ModelWeights {
    let mut c = Config {
        vocab_size: 320,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 64,
        tie_embeddings: true,
        ..Config::llama_defaults()
    };
    c.arch = vicugna_core::config::Arch::Gemma3;
    c.act = vicugna_core::config::Activation::GeluTanh;
    c.qk_norm = true;
    c.post_norms = true;
    c.embed_scale = Some(16.0);
    c.attn_scale = Some(0.0625);
    c.sliding_window = Some(5);
    c.swa_layers = vec![true, true, false];
    c.rope_theta = 1e6;
    c.rope_theta_swa = Some(1e4);
    let types = [
        GgmlType::Q5_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_0,
        GgmlType::Q5_0,
        GgmlType::Q6_K,
    ];
    random_weights(
        &c,
        rng,
        0.5,
        |rng, slot, rows, cols| {
            let ty = match slot {
                Slot::Proj(_, p) => types[p as usize],
                _ => GgmlType::Q8_0,
            };
            random_matrix(rng, ty, rows, cols, 0.5)
        },
        "gemma-like",
    )
}

#[test]
fn gemma_shaped_model_matches_cpu_across_the_sliding_window() {
    let mut rng = Rng::new(9);
    let w = gemma_like(&mut rng);
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 % 320) as u32).collect();
    let cpu = logits(Cpu::EXACT, &w, &[], &tokens);
    for (rowwise, chunk) in [(false, 256), (true, 4)] {
        let Some(mut g) = gpu() else { return };
        g.rowwise = rowwise;
        g.attn_chunk = chunk; // 4: the chunked path, chunks before the window skipped
        let got = logits(&g, &w, &[], &tokens);
        eprintln!("gemma-like rowwise={rowwise} chunk={chunk}: max |wgpu - cpu| = {:.2e}", max_abs_diff(&got, &cpu));
        assert_close(&got, &cpu, 1e-3, 0.0);
        // decode past the window: 12 greedy tokens identical
        let mc = Model::new(Cpu::EXACT, &w).unwrap();
        let mg = Model::new(&g, &w).unwrap();
        let (mut cc, mut gc) = (mc.new_cache(32).unwrap(), mg.new_cache(32).unwrap());
        let (mut tc, mut tg) = (
            mc.forward_blocking(&tokens, 0, &mut cc, vicugna_core::Pick::Greedy).unwrap().token().unwrap(),
            mg.forward_blocking(&tokens, 0, &mut gc, vicugna_core::Pick::Greedy).unwrap().token().unwrap(),
        );
        for pos in tokens.len()..tokens.len() + 12 {
            assert_eq!(tg, tc, "greedy token at position {pos}");
            tc = mc.forward_blocking(&[tc], pos, &mut cc, vicugna_core::Pick::Greedy).unwrap().token().unwrap();
            tg = mg.forward_blocking(&[tg], pos, &mut gc, vicugna_core::Pick::Greedy).unwrap().token().unwrap();
        }
    }
}

/// Attention of rows pos0..pos0+rows of (q, k, v) on one backend, appending them to its cache.
fn attend<B: Backend>(
    be: &B,
    cache: &mut B::Cache,
    c: &Config,
    qkv: (&[f32], &[f32], &[f32]),
    pos0: usize,
    rows: usize,
) -> Vec<f32> {
    let (h, kvd) = (c.q_dim(), c.kv_dim());
    let sl = |x: &[f32], w: usize| x[pos0 * w..(pos0 + rows) * w].to_vec();
    let (q, k, v) = (
        be.act_from_host(rows, h, &sl(qkv.0, h)),
        be.act_from_host(rows, kvd, &sl(qkv.1, kvd)),
        be.act_from_host(rows, kvd, &sl(qkv.2, kvd)),
    );
    let mut o = be.act(rows, h);
    be.attention(&mut o, &q, &k, &v, cache, 0, pos0, &vicugna_core::layer::LayerSpec::of(c, 0).heads).unwrap();
    be.to_host(&o).unwrap()
}

fn logits<B: Backend>(be: B, w: &ModelWeights, adapters: &[(&str, f32)], tokens: &[u32]) -> Vec<f32> {
    let mut m = Model::new(be, w).unwrap();
    for (a, wt) in adapters {
        m.attach(&LoraAdapter::load(&fixture(a)).unwrap(), *wt).unwrap();
    }
    let mut cache = m.new_cache(tokens.len()).unwrap();
    m.forward_blocking(tokens, 0, &mut cache, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap()
}

#[test]
fn whole_model_logits_match_cpu_f32_and_quantised() {
    for rowwise in [false, true] {
        let Some(mut g) = gpu() else { return };
        g.rowwise = rowwise;
        whole_model_cases(&g);
    }
}

fn whole_model_cases(g: &Wgpu) {
    let r = safetensors("reference.safetensors");
    let t = ids(&r, "tokens");
    for (model, adapters, tol) in [
        ("tiny-llama", vec![], 1e-4),
        ("tiny-llama", vec![("lora-a", 0.7), ("lora-b", 0.5)], 1e-4),
        ("tiny-llama-f32.gguf", vec![("lora-a.gguf", 1.0)], 1e-4),
        ("tiny-llama-q8_0.gguf", vec![], 1e-3),
        ("tiny-llama-q4_0.gguf", vec![("lora-a", 1.0)], 1e-3),
    ] {
        let w = ModelWeights::load(&fixture(model)).unwrap();
        let cpu = logits(Cpu::EXACT, &w, &adapters, &t);
        let gpu_l = logits(g, &w, &adapters, &t);
        eprintln!("{model} {adapters:?}: max |wgpu - cpu| = {:.2e}", max_abs_diff(&gpu_l, &cpu));
        assert_close(&gpu_l, &cpu, tol, 0.0);
    }
    let hf = tensor(&r, "hf_base");
    let w = ModelWeights::load(&fixture("tiny-llama")).unwrap();
    assert_close(&logits(g, &w, &[], &t), &hf, 1e-4, 0.0);
}

#[test]
fn greedy_32_tokens_identical_to_cpu_with_hot_swapped_adapters() {
    let Some(g) = gpu() else { return };
    let w = ModelWeights::load(&fixture("tiny-llama-q4_0.gguf")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama-q4_0.gguf")).unwrap();
    let prompt = tk.encode("User:你好\n\nAssistant:", true).unwrap();
    let cfg = GenerationConfig { max_new_tokens: 32, ..Default::default() };
    let (a, b) = (LoraAdapter::load(&fixture("lora-a")).unwrap(), LoraAdapter::load(&fixture("lora-b")).unwrap());
    let mut mc = Model::new(Cpu::EXACT, &w).unwrap();
    let mut mg = Model::new(&g, &w).unwrap();
    let mut outs = Vec::new();
    // base, then adapter a, then swapped to b, then both: the base stays resident throughout
    for step in 0..4 {
        match step {
            1 => {
                mc.attach(&a, 1.0).unwrap();
                mg.attach(&a, 1.0).unwrap();
            }
            2 => {
                mc.detach(&a.name);
                mg.detach(&a.name);
                mc.attach(&b, 1.0).unwrap();
                mg.attach(&b, 1.0).unwrap();
            }
            3 => {
                mc.attach(&a, 0.5).unwrap();
                mg.attach(&a, 0.5).unwrap();
            }
            _ => {}
        }
        let c = generate(&mc, &tk, &prompt, &cfg, |_| true).unwrap();
        let gg = generate(&mg, &tk, &prompt, &cfg, |_| true).unwrap();
        assert_eq!(gg.ids, c.ids, "step {step}");
        assert_eq!(c.ids.len(), 32);
        outs.push(c.ids);
    }
    assert!(outs[0] != outs[1] && outs[1] != outs[2] && outs[2] != outs[3], "adapters change the continuation");
}

#[test]
fn weights_larger_than_a_binding_are_split_by_rows() {
    // 256 KiB bindings: the 32000-row embedding and head split into 4 (Q4_0), 8 (Q8_0) and 32 (F32) parts
    let g = match Wgpu::device_with_limits(|l| l.max_storage_buffer_binding_size = 256 << 10) {
        Ok((d, q, _)) => Wgpu::new(d, q),
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    for (model, parts) in [("tiny-llama-f32.gguf", 32), ("tiny-llama-q4_0.gguf", 4), ("tiny-llama-q8_0.gguf", 8)] {
        let w = ModelWeights::load(&fixture(model)).unwrap();
        assert_eq!(g.load_matrix(&w.embed).unwrap().n_parts(), parts, "{model}");
        let tk = Tokenizer::load(&fixture(model)).unwrap();
        let prompt = tk.encode("中国的首都是", true).unwrap();
        // one token at a time keeps every activation under the 256 KiB binding too
        let (mc, mg) = (Model::new(Cpu::EXACT, &w).unwrap(), Model::new(&g, &w).unwrap());
        let (mut cc, mut cg) = (mc.new_cache(32).unwrap(), mg.new_cache(32).unwrap());
        for (i, &t) in prompt.iter().enumerate() {
            let lc = mc.forward_blocking(&[t], i, &mut cc, vicugna_core::Pick::LastLogits).unwrap().logits().unwrap();
            let lg = mg.forward_blocking(&[t], i, &mut cg, vicugna_core::Pick::LastLogits).unwrap().logits().unwrap();
            assert_close(&lg, &lc, 1e-3, 0.0);
        }
    }
}

#[test]
fn gpu_argmax_matches_cpu_including_ties() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(3);
    for n in [1usize, 63, 64, 65, 32000] {
        let mut v = rng.vec(n, 5.0);
        if n > 10 {
            let m = v.iter().cloned().fold(f32::MIN, f32::max);
            v[n / 3] = m; // a tie later than the first maximum... or earlier: the first index wins
            v[n - 1] = m;
        }
        let want = block_on(Cpu::EXACT.argmax(&Cpu::EXACT.act_from_host(1, n, &v))).unwrap();
        assert_eq!(block_on(g.argmax(&g.act_from_host(1, n, &v))).unwrap(), want, "n={n}");
    }
}

#[test]
fn chunked_attention_for_long_contexts_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let c = cfg(4, 2, 16);
    let (h, kvd) = (c.hidden_size, c.kv_dim());
    let mut rng = Rng::new(9);
    // chunks of 7 positions: partial chunks, chunks past a row's causal end, many chunks
    for chunk in [7usize, 256] {
        g.attn_chunk = chunk;
        let total = 300;
        let (q, k, v) = (rng.vec(total * h, 1.0), rng.vec(total * kvd, 1.0), rng.vec(total * kvd, 1.0));
        let mut cc = Cpu::EXACT.new_cache(&c, total).unwrap();
        let mut gc = g.new_cache(&c, total).unwrap();
        // a 290-token prefill, then decode steps past the chunk boundary
        for (pos0, rows) in [(0usize, 290usize), (290, 1), (291, 9)] {
            let want = attend(&Cpu::EXACT, &mut cc, &c, (&q, &k, &v), pos0, rows);
            assert_close(&attend(&g, &mut gc, &c, (&q, &k, &v), pos0, rows), &want, 1e-5, 1e-4);
        }
    }
}

#[test]
fn gpu_top_k_top_p_sampling_draws_the_same_tokens_as_the_cpu() {
    let Some(g) = gpu() else { return };
    let r = safetensors("reference.safetensors");
    let logits = tensor(&r, "hf_base"); // real logit rows of the fixture model
    let v = 32000;
    let mut rng = vicugna_core::generate::Rng::new(5);
    let mut checked = 0;
    for row in logits.chunks(v).take(6) {
        for (t, k, p) in [(1.0f32, 40usize, 1.0f32), (0.7, 50, 0.9), (1.3, 5, 0.5), (0.9, 64, 0.95), (1.0, 1, 1.0)] {
            for _ in 0..4 {
                let u = rng.next_f32();
                let want = vicugna_core::generate::sample_host(&mut row.to_vec(), t, k, p, u);
                let got = block_on(g.sample(&g.act_from_host(1, v, row), t, k, p, u)).unwrap();
                assert_eq!(got, want, "temperature {t}, top-k {k}, top-p {p}, u {u}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 120);
}

#[test]
fn seeded_sampled_generation_is_identical_on_gpu_and_cpu() {
    let Some(g) = gpu() else { return };
    let w = ModelWeights::load(&fixture("tiny-llama-q8_0.gguf")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama-q8_0.gguf")).unwrap();
    let prompt = tk.encode("User:讲个故事\n\nAssistant:", true).unwrap();
    let (mc, mg) = (Model::new(Cpu::EXACT, &w).unwrap(), Model::new(&g, &w).unwrap());
    for seed in [1u64, 2, 3] {
        let cfg = GenerationConfig {
            max_new_tokens: 24,
            do_sample: true,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_new_tokens: 3,
            seed,
            ..Default::default()
        };
        let c = generate(&mc, &tk, &prompt, &cfg, |_| true).unwrap();
        assert_eq!(generate(&mg, &tk, &prompt, &cfg, |_| true).unwrap().ids, c.ids, "seed {seed}");
    }
}

/// A prompt run in pieces (a prompt cache's reuse, a warmed preamble) gives the logits of one
/// pass: each row is computed the same whatever else is in its batch, tiled, row-wise and
/// chunked-attention alike, with an adapter on.
#[test]
fn prefill_in_pieces_equals_one_pass() {
    let mut rng = Rng::new(9);
    let w = gemma_like(&mut rng);
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 % 320) as u32).collect();
    for (rowwise, chunk) in [(false, 256), (true, 256), (false, 8)] {
        let Some(mut g) = gpu() else { return };
        g.rowwise = rowwise;
        g.attn_chunk = chunk;
        let m = Model::new(&g, &w).unwrap();
        let mut whole = m.new_cache(64).unwrap();
        let one = m.forward_blocking(&tokens, 0, &mut whole, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap();
        let mut parts = m.new_cache(64).unwrap();
        let (mut got, mut pos) = (Vec::new(), 0);
        // pieces across the 16-token tile, a single row (the decode kernel) among them
        for n in [17, 1, 5, 16, 1] {
            let p = &tokens[pos..pos + n];
            got.extend(
                m.forward_blocking(p, pos, &mut parts, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap(),
            );
            pos += n;
        }
        assert_eq!(pos, tokens.len());
        let diff = max_abs_diff(&got, &one);
        eprintln!("rowwise={rowwise} attn_chunk={chunk}: max |pieces - one pass| = {diff:.2e}");
        assert!(got == one, "rowwise={rowwise} attn_chunk={chunk}: pieces differ from one pass by {diff:.2e}");
    }
}
