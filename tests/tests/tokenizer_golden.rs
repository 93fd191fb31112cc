//! Tokenizers against llama.cpp's own test vectors (models/ggml-vocab-*.gguf + .inp/.out) and
//! SentencePiece's ids for the fixture tokenizer.json.

use vicugna_core::gguf::{GgufFile, GgufWriter, Value};
use vicugna_core::tokenizer::{gguf_vocab_from_hf_json, StreamDecoder, Tokenizer};
use vicugna_tests::fixture;

fn run_vectors(vocab: &str) -> (usize, usize, Vec<String>) {
    let tk = Tokenizer::load(&fixture(&format!("vocab/ggml-vocab-{vocab}.gguf"))).unwrap();
    run_vectors_with(&tk, vocab)
}

/// llama.cpp's test vectors for `vocab` through any tokenizer of that vocabulary.
fn run_vectors_with(tk: &Tokenizer, vocab: &str) -> (usize, usize, Vec<String>) {
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

/// SentencePiece's own ids for the fixture texts (`spm_vectors.json`).
fn spm_vectors() -> Vec<(String, Vec<u32>)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("spm_vectors.json")).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn hf_tokenizer_json_matches_sentencepiece_and_gguf_spm() {
    let hf = Tokenizer::load(&fixture("tiny-llama")).unwrap();
    let spm = Tokenizer::load(&fixture("vocab/ggml-vocab-llama-spm.gguf")).unwrap();
    for (text, want) in spm_vectors() {
        let text = text.as_str();
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

/// A GGUF written in memory and read back, so the test reads what a file would hold.
fn round_trip(g: &GgufWriter, name: &str) -> GgufFile {
    let mut bytes = Vec::new();
    g.write(&mut bytes).unwrap();
    GgufFile::from_bytes(&bytes, name).unwrap()
}

fn meta<'a>(g: &'a GgufFile, k: &str) -> &'a Value {
    g.get(k).unwrap_or_else(|| panic!("{}: no `{k}`", g.name))
}

#[test]
fn convert_writes_the_sentencepiece_vocabulary_llama_cpp_reads() {
    // `vicugna convert` of an HF directory: the model and its tokenizer.json, as GGUF
    let w = vicugna_core::ModelWeights::load(&fixture("tiny-llama")).unwrap();
    let json = std::fs::read_to_string(fixture("tiny-llama/tokenizer.json")).unwrap();
    let g = round_trip(&w.to_gguf(None, Some(&json)).unwrap(), "converted.gguf");
    assert!(g.get("tokenizer.huggingface.json").is_none(), "the vocabulary has a GGUF form; no JSON copy");
    // the same LLaMA vocabulary as llama.cpp's converter wrote from tokenizer.model
    let theirs =
        GgufFile::from_bytes(&std::fs::read(fixture("vocab/ggml-vocab-llama-spm.gguf")).unwrap(), "spm").unwrap();
    for k in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
    ] {
        assert_eq!(meta(&g, k), meta(&theirs, k), "{k}");
    }
    // scores: SentencePiece's order (higher first) among the tokens a merge makes
    let (ours, spm) = (
        meta(&g, "tokenizer.ggml.scores").as_array().unwrap(),
        meta(&theirs, "tokenizer.ggml.scores").as_array().unwrap(),
    );
    let merged: Vec<usize> = (0..ours.len()).filter(|&i| ours[i].as_f64().unwrap() < 0.0).collect();
    assert!(merged.len() > 29_000, "{} tokens with a merge score", merged.len());
    let sf = |v: &[Value], i: usize| v[i].as_f64().unwrap();
    let inversions =
        merged.windows(2).filter(|p| (sf(ours, p[0]) > sf(ours, p[1])) != (sf(spm, p[0]) > sf(spm, p[1]))).count();
    assert_eq!(inversions, 0, "neighbouring tokens ordered differently from tokenizer.model's scores");
    // the file's vocabulary, read through the GGUF (SentencePiece) path, tokenizes as SentencePiece
    let tk = Tokenizer::from_gguf(&g).unwrap();
    let (n, ok, fails) = run_vectors_with(&tk, "llama-spm");
    assert_eq!(ok, n, "converted vocabulary on llama.cpp's llama-spm vectors: {ok}/{n}\n{}", fails.join("\n"));
    for (text, want) in spm_vectors() {
        let text = text.as_str();
        assert_eq!(tk.encode(text, false).unwrap(), want, "converted GGUF on {text:?}");
        assert_eq!(tk.encode(text, true).unwrap()[0], 1);
    }
}

/// An HF tokenizer.json of Llama 3's byte-level BPE, written from llama.cpp's GGUF of it (the
/// way transformers' tokenizers lay one out), so the exporter meets a real byte-level vocabulary.
fn llama3_tokenizer_json(g: &GgufFile) -> String {
    let tokens = meta(g, "tokenizer.ggml.tokens").as_array().unwrap();
    let types = meta(g, "tokenizer.ggml.token_type").as_array().unwrap();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(types).enumerate() {
        let t = t.as_str().unwrap();
        if ty.as_i64() == Some(3) {
            added.push(serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}));
        }
        vocab.insert(t.to_string(), serde_json::json!(i));
    }
    let merges: Vec<serde_json::Value> = meta(g, "tokenizer.ggml.merges")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
            serde_json::json!([a, b])
        })
        .collect();
    let regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
            "vocab": vocab, "merges": merges}
    })
    .to_string()
}

#[test]
fn convert_writes_the_byte_level_bpe_vocabulary_llama_cpp_reads() {
    let theirs =
        GgufFile::from_bytes(&std::fs::read(fixture("vocab/ggml-vocab-llama-bpe.gguf")).unwrap(), "llama-bpe").unwrap();
    let json = llama3_tokenizer_json(&theirs);
    // the tokenizer.json is right: transformers' tokenizers pass llama.cpp's vectors with it
    let hf = Tokenizer::from_hf_json(json.as_bytes(), "llama3/tokenizer.json").unwrap();
    let (n, ok, fails) = run_vectors_with(&hf, "llama-bpe");
    assert_eq!(ok, n, "the test's tokenizer.json: {ok}/{n}\n{}", fails.join("\n"));
    let mut w = GgufWriter::new();
    for (k, v) in gguf_vocab_from_hf_json(json.as_bytes(), "llama3/tokenizer.json").unwrap() {
        w.set(&k, v);
    }
    let g = round_trip(&w, "converted.gguf");
    // what llama.cpp's converter wrote for the same vocabulary, key for key
    for k in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
    ] {
        assert_eq!(meta(&g, k), meta(&theirs, k), "{k}");
    }
    assert_eq!(meta(&g, "tokenizer.ggml.add_bos_token").as_bool(), Some(true));
    let tk = Tokenizer::from_gguf(&g).unwrap();
    let (n, ok, fails) = run_vectors_with(&tk, "llama-bpe");
    assert_eq!(ok, n, "converted vocabulary: {ok}/{n}\n{}", fails.join("\n"));
}

#[test]
fn a_tokenizer_with_no_gguf_form_is_refused_by_name() {
    let json = r#"{"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,
        "decoder":null,"model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#;
    let e = gguf_vocab_from_hf_json(json.as_bytes(), "dir/tokenizer.json").unwrap_err().to_string();
    assert!(e.contains("dir/tokenizer.json") && e.contains("WordLevel"), "{e}");
}
