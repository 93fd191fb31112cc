//! Decoding against transformers' `generate` (greedy, repetition penalty, bad words, min new
//! tokens, EOS, beam search variants) and its logits processors, on the fixture model.

use vicugna_core::cpu::Cpu;
use vicugna_core::generate::{generate, repetition_penalty, top_k, top_p, EarlyStopping, GenerationConfig};
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{LoraAdapter, Model, ModelWeights, Pick};
use vicugna_tests::*;

fn config_from(settings: &serde_json::Value) -> GenerationConfig {
    let mut c = GenerationConfig { eos_token_ids: vec![2], ..Default::default() };
    let s = settings.as_object().unwrap();
    for (k, v) in s {
        match k.as_str() {
            "max_new_tokens" => c.max_new_tokens = v.as_u64().unwrap() as usize,
            "min_new_tokens" => c.min_new_tokens = v.as_u64().unwrap() as usize,
            "repetition_penalty" => c.repetition_penalty = v.as_f64().unwrap() as f32,
            "bad_words_ids" => c.bad_words_ids = serde_json::from_value(v.clone()).unwrap(),
            "eos_token_id" => c.eos_token_ids = vec![v.as_u64().unwrap() as u32],
            "num_beams" => c.num_beams = v.as_u64().unwrap() as usize,
            "length_penalty" => c.length_penalty = v.as_f64().unwrap() as f32,
            "early_stopping" => {
                c.early_stopping = match v {
                    serde_json::Value::Bool(true) => EarlyStopping::True,
                    serde_json::Value::Bool(false) => EarlyStopping::False,
                    _ => EarlyStopping::Never,
                }
            }
            other => panic!("fixture setting {other} not mapped"),
        }
    }
    c
}

#[test]
fn continuations_equal_transformers_generate() {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("generations.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(g["tokens"].clone()).unwrap();
    let w = ModelWeights::load(&fixture("tiny-llama")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let base = Model::new(Cpu::EXACT, &w).unwrap();
    let mut lora = Model::new(Cpu::EXACT, &w).unwrap();
    lora.attach(&LoraAdapter::load(&fixture("lora-a")).unwrap(), 1.0).unwrap();
    let mut checked = 0;
    for case in g["generations"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let cfg = config_from(&case["settings"]);
        let m = if name.contains("lora_a") { &lora } else { &base };
        let mut streamed = String::new();
        let got = generate(m, &tk, &prompt, &cfg, |t| {
            streamed.push_str(t);
            true
        })
        .unwrap();
        assert_eq!(got.ids, want, "{name}");
        if cfg.num_beams == 1 {
            assert_eq!(streamed, got.text, "{name}: streamed text equals the final text");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases");
}

#[test]
fn logits_processors_match_transformers() {
    let r = safetensors("reference.safetensors");
    let row = tensor(&r, "proc_input");
    let hist = ids(&r, "proc_history");
    let check = |name: &str, f: &dyn Fn(&mut Vec<f32>)| {
        let mut v = row.clone();
        f(&mut v);
        assert_close(&v, &tensor(&r, &format!("proc_{name}")), 1e-6, 1e-6);
    };
    check("rep1.5", &|v| repetition_penalty(v, &hist, 1.5));
    check("temp0.7", &|v| GenerationConfig { temperature: 0.7, ..Default::default() }.warp(v));
    check("topk40", &|v| top_k(v, 40));
    check("topp0.9", &|v| top_p(v, 0.9));
    check("rep1.3_temp0.8_topk50_topp0.95", &|v| {
        let c = GenerationConfig {
            repetition_penalty: 1.3,
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            ..Default::default()
        };
        c.process(v, &hist, 0);
        c.warp(v);
    });
}

#[test]
fn stop_strings_cut_the_text_and_sampling_is_seeded() {
    let w = ModelWeights::load(&fixture("tiny-llama")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let m = Model::new(Cpu::EXACT, &w).unwrap();
    let prompt = tk.encode("User:你好\n\nAssistant:", true).unwrap();
    let greedy =
        generate(&m, &tk, &prompt, &GenerationConfig { max_new_tokens: 12, ..Default::default() }, |_| true).unwrap();
    // pick a stop string from the middle of the greedy text
    let chars: Vec<char> = greedy.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cfg = GenerationConfig { max_new_tokens: 12, stop_strings: vec![stop.clone()], ..Default::default() };
    let mut streamed = String::new();
    let cut = generate(&m, &tk, &prompt, &cfg, |t| {
        streamed.push_str(t);
        true
    })
    .unwrap();
    assert_eq!(cut.stop, vicugna_core::generate::StopReason::StopString);
    assert!(!cut.text.contains(&stop) && greedy.text.starts_with(&cut.text), "{:?} / {:?}", cut.text, greedy.text);
    assert_eq!(streamed, cut.text);
    let s = GenerationConfig {
        max_new_tokens: 8,
        do_sample: true,
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        seed: 42,
        ..Default::default()
    };
    let a = generate(&m, &tk, &prompt, &s, |_| true).unwrap();
    let b = generate(&m, &tk, &prompt, &s, |_| true).unwrap();
    let c = generate(&m, &tk, &prompt, &GenerationConfig { seed: 43, ..s.clone() }, |_| true).unwrap();
    assert_eq!(a.ids, b.ids, "same seed, same tokens");
    assert_ne!(a.ids, c.ids, "another seed, other tokens");
}

#[test]
fn gguf_f32_greedy_equals_transformers_greedy() {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("generations.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(g["tokens"].clone()).unwrap();
    let want: Vec<u32> = serde_json::from_value(g["generations"][0]["ids"].clone()).unwrap();
    let w = ModelWeights::load(&fixture("tiny-llama-f32.gguf")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama-f32.gguf")).unwrap();
    let m = Model::new(Cpu::EXACT, &w).unwrap();
    let cfg = GenerationConfig { max_new_tokens: want.len(), eos_token_ids: vec![2], ..Default::default() };
    assert_eq!(generate(&m, &tk, &prompt, &cfg, |_| true).unwrap().ids, want);
}

/// Greedy decoding through the fast path (8-bit activations) takes the exact path's tokens on the
/// quantised fixtures, or parts from it only where the exact path's top-2 margin is a near-tie.
#[test]
fn fast_path_greedy_equals_exact_greedy_up_to_a_near_tie() {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("generations.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(g["tokens"].clone()).unwrap();
    for q in ["q8_0", "q4_0"] {
        let w = ModelWeights::load(&fixture(&format!("tiny-llama-{q}.gguf"))).unwrap();
        let (exact, fast) = (Model::new(Cpu::EXACT, &w).unwrap(), Model::new(Cpu::FAST, &w).unwrap());
        let n = 24;
        let (mut ce, mut cf) = (exact.new_cache(prompt.len() + n).unwrap(), fast.new_cache(prompt.len() + n).unwrap());
        let (mut input, mut pos) = (prompt.clone(), 0);
        let mut same = 0;
        for step in 0..n {
            let le = exact.forward_blocking(&input, pos, &mut ce, Pick::LastLogits).unwrap().logits().unwrap();
            let lf = fast.forward_blocking(&input, pos, &mut cf, Pick::LastLogits).unwrap().logits().unwrap();
            let (te, tf) = (argmax(&le), argmax(&lf));
            if te != tf {
                let mut sorted = le.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let margin = sorted[0] - sorted[1];
                eprintln!("{q}: fast and exact part at new token {step}: exact's top-2 margin {margin:.5}");
                assert!(margin < 0.05, "{q}: new token {step}: fast {tf} vs exact {te} with margin {margin}");
                break;
            }
            same += 1;
            pos += input.len();
            input = vec![te as u32];
        }
        eprintln!("{q}: {same} of {n} greedy tokens equal");
        assert!(same >= 8, "{q}: only {same} greedy tokens equal");
    }
}

/// Chinese-Vicuna's chat bans plus the role markers a base model invents at line start: banned as
/// token sequences (each one's last token never follows its prefix) and kept as stop strings.
#[test]
fn chat_rules_ban_and_stop_role_markers() {
    use vicugna_core::prompt::{CHAT_BANNED, CHAT_ROLE_MARKERS};
    let tk = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let cfg = GenerationConfig { stop_strings: vec!["。".into()], ..Default::default() }.with_chat_rules(&tk).unwrap();
    assert_eq!(cfg.bad_words_ids.len(), CHAT_BANNED.len() + CHAT_ROLE_MARKERS.len());
    for (ids, s) in cfg.bad_words_ids.iter().zip(CHAT_BANNED.iter().chain(&CHAT_ROLE_MARKERS)) {
        assert_eq!(tk.decode(ids), *s, "banned ids spell {s:?} (no space-prefix piece)");
    }
    assert_eq!(cfg.stop_strings[0], "。", "the user's stop strings stay first");
    for m in CHAT_ROLE_MARKERS {
        assert!(cfg.stop_strings.iter().any(|s| s == m), "{m:?} is a stop string");
    }
    assert!(CHAT_ROLE_MARKERS.contains(&"\n用户：") && CHAT_ROLE_MARKERS.contains(&"\nUser:"));
    let again = cfg.clone().with_chat_rules(&tk).unwrap();
    assert_eq!(again.stop_strings, cfg.stop_strings, "applying the rules twice adds nothing");
}

/// A prompt cache reuses what it holds and changes no result: chunked prefill gives the same
/// logits as one pass, and every request (greedy with the chat rules, sampled, a follow-up
/// turn, after an adapter is attached, after a warm-up) equals the same request run cold.
#[test]
fn a_prompt_cache_changes_no_token() {
    use vicugna_core::generate::{generate_cached_async, PromptCache};
    use vicugna_core::prompt::{fixed_prefix, prompt_ids, Template, Turn};
    let w = ModelWeights::load(&fixture("tiny-llama")).unwrap();
    let tk = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let ids = |h: &[Turn], q: &str| prompt_ids(&tk, Template::Chat, h, q, None, 256, 16).unwrap();
    for be in [Cpu::EXACT, Cpu::FAST] {
        let kernels = be.kernels;
        let mut m = Model::new(be, &w).unwrap();
        // keys and values of a row do not depend on the rest of its batch
        let p = ids(&[], "你好，介绍一下你自己");
        let mut whole = m.new_cache(64).unwrap();
        let one = m.forward_blocking(&p, 0, &mut whole, Pick::AllLogits).unwrap().logits().unwrap();
        let mut parts = m.new_cache(64).unwrap();
        let mut chunked = Vec::new();
        for (i, c) in p.chunks(5).enumerate() {
            chunked.extend(m.forward_blocking(c, i * 5, &mut parts, Pick::AllLogits).unwrap().logits().unwrap());
        }
        assert_eq!(one, chunked, "{kernels:?}: chunked prefill is bit-identical");

        let greedy = GenerationConfig {
            max_new_tokens: 16,
            repetition_penalty: 1.3,
            eos_token_ids: vec![2],
            ..Default::default()
        }
        .with_chat_rules(&tk)
        .unwrap();
        let sampled = GenerationConfig { temperature: 0.8, top_p: 0.9, do_sample: true, seed: 7, ..greedy.clone() };
        let run = |m: &Model<Cpu>, pc: &mut PromptCache<Cpu>, p: &[u32], cfg: &GenerationConfig| {
            vicugna_core::backend::block_on(generate_cached_async(m, &tk, p, cfg, pc, |_| true, |_| true)).unwrap()
        };
        let cold = |m: &Model<Cpu>, p: &[u32], cfg: &GenerationConfig| run(m, &mut PromptCache::new(0), p, cfg);
        let mut pc = PromptCache::new(256);
        let first = run(&m, &mut pc, &p, &greedy);
        assert_eq!(first.reused, 0);
        assert_eq!(first.ids, cold(&m, &p, &greedy).ids);
        // the cache holds the prompt and every reply token that was run (all but the last)
        assert_eq!(pc.tokens().len(), p.len() + first.ids.len() - 1);
        assert_eq!(&pc.tokens()[..p.len()], &p[..]);
        // another question shares the preamble
        let q = ids(&[], "一公斤的棉花和一公斤的铁，哪一个更重？");
        let lcp = p.iter().zip(&q).take_while(|(a, b)| a == b).count();
        assert!(lcp >= 10, "the chat preamble is shared ({lcp} tokens)");
        let got = run(&m, &mut pc, &q, &greedy);
        assert_eq!(got.reused, lcp);
        assert_eq!(got.ids, cold(&m, &q, &greedy).ids);
        // the same question sampled: all of it but the last token is held now
        let got = run(&m, &mut pc, &q, &sampled);
        assert_eq!(got.reused, q.len() - 1);
        assert_eq!(got.ids, cold(&m, &q, &sampled).ids);
        // a follow-up turn reuses the whole earlier exchange where it tokenises the same
        let r = run(&m, &mut pc, &q, &greedy);
        let follow = ids(
            &[Turn {
                input: "一公斤的棉花和一公斤的铁，哪一个更重？".into(), output: r.text.clone()
            }],
            "为什么？",
        );
        let held = pc.tokens().iter().zip(&follow).take_while(|(a, b)| a == b).count();
        let got = run(&m, &mut pc, &follow, &greedy);
        assert_eq!(got.reused, held);
        assert!(held > q.len() - 2, "the earlier turn is reused ({held} of {} tokens)", q.len());
        assert_eq!(got.ids, cold(&m, &follow, &greedy).ids);
        // the same prompt again: all but its last token
        assert_eq!(run(&m, &mut pc, &follow, &greedy).reused, follow.len() - 1);
        // an adapter changes every key and value: nothing is reused
        m.attach(&LoraAdapter::load(&fixture("lora-a")).unwrap(), 1.0).unwrap();
        let got = run(&m, &mut pc, &follow, &greedy);
        assert_eq!(got.reused, 0);
        assert_eq!(got.ids, cold(&m, &follow, &greedy).ids);
        m.set_adapter_weight("lora-a", 0.5).unwrap();
        assert_eq!(pc.reusable(&m, &follow), 0, "reweighting invalidates too");
        // warming the template's fixed prefix in small chunks, then a question starts after it
        let pre = fixed_prefix(&tk, Template::Chat, 256, 16).unwrap();
        assert!(pre.len() >= 10 && p.starts_with(&pre) && q.starts_with(&pre));
        let mut warm = PromptCache::new(256);
        let mut passes = 0;
        let n = vicugna_core::backend::block_on(warm.warm(&m, &pre, 4, || {
            passes += 1;
            passes <= 2
        }))
        .unwrap();
        assert_eq!(n, 8, "stopped when told to, after two passes");
        let n = vicugna_core::backend::block_on(warm.warm(&m, &pre, 4, || true)).unwrap();
        assert_eq!(n, pre.len() - 8, "carried on from where it stopped");
        assert_eq!(vicugna_core::backend::block_on(warm.warm(&m, &pre, 4, || true)).unwrap(), 0, "nothing left");
        let got = run(&m, &mut warm, &q, &greedy);
        assert_eq!(got.reused, pre.len());
        assert_eq!(got.ids, cold(&m, &q, &greedy).ids);
    }
}
