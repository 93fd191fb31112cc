//! Tokenizers against llama.cpp's own test vectors (models/ggml-vocab-*.gguf + .inp/.out) and
//! SentencePiece's ids for the fixture tokenizer.json.

use vicugna_core::tokenizer::{StreamDecoder, Tokenizer};
use vicugna_tests::fixture;

fn run_vectors(vocab: &str) -> (usize, usize, Vec<String>) {
    let tk = Tokenizer::load(&fixture(&format!("vocab/ggml-vocab-{vocab}.gguf"))).unwrap();
    let inp = std::fs::read_to_string(fixture(&format!("vocab/ggml-vocab-{vocab}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(fixture(&format!("vocab/ggml-vocab-{vocab}.gguf.out"))).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    texts.pop(); // the file ends with a separator
    let expected: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), expected.len(), "{vocab}: .inp and .out disagree on the number of cases");
    let mut fails = Vec::new();
    for (t, e) in texts.iter().zip(&expected) {
        let got = tk.encode(t, false).unwrap();
        if &got != e {
            fails.push(format!("{t:?}: got {got:?}, want {e:?}"));
        }
    }
    (texts.len(), texts.len() - fails.len(), fails)
}

#[test]
fn llama_spm_vectors_all_pass() {
    let (n, ok, fails) = run_vectors("llama-spm");
    assert_eq!(ok, n, "llama-spm: {ok}/{n}; failures:\n{}", fails.join("\n"));
}

#[test]
fn qwen2_vectors_all_pass() {
    let (n, ok, fails) = run_vectors("qwen2");
    assert_eq!(ok, n, "qwen2: {ok}/{n}; failures:\n{}", fails.join("\n"));
}

#[test]
fn llama_bpe_vectors_all_pass() {
    let (n, ok, fails) = run_vectors("llama-bpe");
    assert_eq!(ok, n, "llama-bpe: {ok}/{n}; failures:\n{}", fails.join("\n"));
}

#[test]
fn hf_tokenizer_json_matches_sentencepiece_and_gguf_spm() {
    let hf = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let spm = Tokenizer::load(&fixture("vocab/ggml-vocab-llama-spm.gguf")).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("spm_vectors.json")).unwrap()).unwrap();
    for case in v.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(hf.encode(text, false).unwrap(), want, "tokenizer.json on {text:?}");
        assert_eq!(spm.encode(text, false).unwrap(), want, "GGUF SentencePiece on {text:?}");
        // BOS is added when asked
        assert_eq!(hf.encode(text, true).unwrap()[0], 1);
    }
}

#[test]
fn streaming_never_splits_a_chinese_character() {
    let tk = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let text = "中国的首都是北京🦙，上海在东边。";
    let ids = tk.encode(text, false).unwrap();
    // several characters are spelled as byte tokens in the LLaMA vocabulary
    assert!(ids.iter().any(|&i| tk.token_bytes(i).len() == 1 && tk.token_bytes(i)[0] >= 0x80));
    let mut d = StreamDecoder::new();
    let mut all = String::new();
    for &i in &ids {
        let piece = d.push(tk.token_bytes(i));
        assert!(!piece.contains('\u{FFFD}'), "emitted a broken character after token {i}");
        all.push_str(&piece);
    }
    all.push_str(&d.finish());
    assert_eq!(all.trim_start(), text);
}
