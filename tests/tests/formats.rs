//! Quantisation bit-exact with gguf-py, K-quant dequantisation, the GGUF writer, and clear errors
//! (never panics) on bad input.

use vicugna_core::gguf::{GgufFile, GgufWriter, Value};
use vicugna_core::quant::{dequantize_row, quantize_row, GgmlType};
use vicugna_core::{Bytes, Config, LoraAdapter, ModelWeights};
use vicugna_tests::*;

#[test]
fn quantisation_is_bit_exact_with_gguf_py() {
    let v = safetensors("quant_vectors.safetensors");
    let x = tensor(&v, "input");
    for (name, ty) in [
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
    ] {
        let want = v.raw(&format!("q_{name}")).unwrap();
        let got = quantize_row(ty, &x);
        assert_eq!(got.len(), want.len(), "{name}: length");
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!("{name}: first differing byte {i} (block {}): {} vs {}", i / ty.block_bytes(), got[i], want[i]);
        }
    }
}

#[test]
fn k_quant_dequantisation_matches_gguf_py() {
    let v = safetensors("quant_vectors.safetensors");
    for (name, ty) in [("Q4_K", GgmlType::Q4_K), ("Q5_K", GgmlType::Q5_K), ("Q6_K", GgmlType::Q6_K)] {
        let raw = v.raw(&format!("k_{name}")).unwrap();
        let want = tensor(&v, &format!("k_{name}_deq"));
        let mut got = vec![0f32; want.len()];
        dequantize_row(ty, raw, &mut got);
        assert_close(&got, &want, 0.0, 0.0);
    }
}

#[test]
fn gguf_writer_round_trips_metadata_and_tensors() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("a.u32", Value::U32(7));
    w.set("a.arr", Value::Array(vec![Value::String("x".into()), Value::String("yz".into())]));
    w.set("a.f", Value::F64(1.5));
    let data: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 3.0).collect();
    w.add_tensor("t.q8", vec![32, 2], GgmlType::Q8_0, quantize_row(GgmlType::Q8_0, &data)).unwrap();
    w.add_tensor("t.f32", vec![64], GgmlType::F32, data.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap();
    let mut buf = Vec::new();
    w.write(&mut buf).unwrap();
    let bytes = Bytes::from_vec(buf);
    let g = GgufFile::from_bytes(&bytes, "mem.gguf").unwrap();
    assert_eq!(g.get_u64("a.u32").unwrap(), Some(7));
    assert_eq!(g.get_f64("a.f").unwrap(), Some(1.5));
    assert_eq!(g.get("a.arr").unwrap().as_array().unwrap().len(), 2);
    let t = g.tensor("t.f32").unwrap();
    let mut out = vec![0f32; 64];
    dequantize_row(t.ty, &g.tensor_data(&bytes, t), &mut out);
    assert_eq!(out, data);
    let t = g.tensor("t.q8").unwrap();
    assert_eq!((t.ty, t.dims.clone()), (GgmlType::Q8_0, vec![32, 2]));
}

fn gguf_err(bytes: Vec<u8>) -> String {
    let b = Bytes::from_vec(bytes);
    match ModelWeights::from_gguf_bytes(b, "bad.gguf") {
        Ok(_) => panic!("accepted bad input"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_gguf_files_get_clear_errors() {
    let good = std::fs::read(fixture("tiny-llama-q4_0.gguf")).unwrap();
    let e = gguf_err(b"GGUX\x03\0\0\0".to_vec());
    assert!(e.contains("bad.gguf") && e.contains("magic"), "{e}");
    let e = gguf_err(good[..good.len() / 2].to_vec());
    assert!(e.contains("bad.gguf") && (e.contains("truncated") || e.contains("past the end")), "{e}");
    let e = gguf_err(good[..100].to_vec());
    assert!(e.contains("truncated"), "{e}");
    let mut v = good.clone();
    v[4] = 9; // version
    assert!(gguf_err(v).contains("version"));
    // every truncation point and many single-byte corruptions give an error or a model, never a panic
    for cut in (0..4096).step_by(7).chain([good.len() - 1]) {
        let _ = ModelWeights::from_gguf_bytes(Bytes::from_vec(good[..cut.min(good.len())].to_vec()), "cut.gguf");
    }
    for i in (8..4096).step_by(13) {
        let mut v = good.clone();
        v[i] ^= 0xA5;
        let _ = ModelWeights::from_gguf_bytes(Bytes::from_vec(v), "flip.gguf");
    }
}

#[test]
fn shape_contradicting_config_names_the_tensor() {
    let mut w = GgufWriter::new();
    let src = std::fs::read(fixture("tiny-llama-f32.gguf")).unwrap();
    let b = Bytes::from_vec(src);
    let g = GgufFile::from_bytes(&b, "x").unwrap();
    for (k, v) in &g.metadata {
        let v = if k == "llama.feed_forward_length" { Value::U32(96) } else { v.clone() };
        w.set(k, v);
    }
    for t in &g.tensors {
        w.add_tensor(&t.name, t.dims.clone(), t.ty, g.tensor_data(&b, t).to_vec()).unwrap();
    }
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    let e = gguf_err(out);
    assert!(e.contains("blk.0.ffn_gate.weight") && e.contains("contradicts"), "{e}");
}

#[test]
fn bad_safetensors_and_config_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("vicugna-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = std::fs::read_to_string(fixture("tiny-llama/config.json")).unwrap();
    let weights = std::fs::read(fixture("tiny-llama/model.safetensors")).unwrap();
    // truncated weights
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    let e = ModelWeights::load(&dir).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // a missing config field
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j.as_object_mut().unwrap().remove("hidden_size");
    let e = Config::from_hf_json(&j.to_string(), "config.json").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("hidden_size") && e.contains("missing"), "{e}");
    // a config that contradicts the weights
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j["intermediate_size"] = 128.into();
    std::fs::write(dir.join("config.json"), j.to_string()).unwrap();
    let e = ModelWeights::load(&dir).unwrap_err().to_string();
    assert!(e.contains("gate_proj") && e.contains("contradicts"), "{e}");
    // not JSON at all
    let e = Config::from_hf_json("{oops", "config.json").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn adapter_for_a_different_base_or_unsupported_kind_is_refused() {
    let w = ModelWeights::load(&fixture("tiny-llama3-tied")).unwrap();
    let a = LoraAdapter::load(&fixture("lora-a")).unwrap();
    let e = a.check_fits(&w.cfg).unwrap_err().to_string();
    assert!(e.contains("different base"), "{e}");
    let cfg = std::fs::read_to_string(fixture("lora-a/adapter_config.json")).unwrap();
    let weights = Bytes::from_vec(std::fs::read(fixture("lora-a/adapter_model.safetensors")).unwrap());
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j["use_dora"] = true.into();
    let e = LoraAdapter::from_peft("x", &j.to_string(), "adapter_config.json", weights.clone(), "w")
        .unwrap_err()
        .to_string();
    assert!(e.contains("DoRA"), "{e}");
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j.as_object_mut().unwrap().remove("r");
    let e = LoraAdapter::from_peft("x", &j.to_string(), "adapter_config.json", weights.clone(), "w")
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_config.json") && e.contains("`r`"), "{e}");
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j["r"] = 4.into();
    let e = LoraAdapter::from_peft("x", &j.to_string(), "adapter_config.json", weights, "w").unwrap_err().to_string();
    assert!(e.contains("rank 4"), "{e}");
}

/// Found by `make fuzz` (gguf target): a corrupted file whose token_embd.weight has one dimension
/// and no vocab_size key made the config reader index dims[1].
#[test]
fn fuzz_regression_one_dimensional_token_embd_is_an_error_not_a_panic() {
    let b = std::fs::read(fixture("regressions/fuzz-gguf-1d-token-embd.gguf")).unwrap();
    let bytes = Bytes::from_vec(b);
    let g = GgufFile::from_bytes(&bytes, "crash.gguf");
    if let Ok(g) = g {
        let e = ModelWeights::from_gguf(&g, &bytes).unwrap_err().to_string();
        assert!(e.contains("crash.gguf"), "{e}");
        let _ = vicugna_core::tokenizer::Tokenizer::from_gguf(&g);
    }
}

/// Found by `make fuzz` (gguf target): `llama.block_count` corrupted to billions made the loader
/// reserve ~870 GB for layers before noticing the first missing tensor.
#[test]
fn fuzz_regression_absurd_block_count_is_an_error_not_an_allocation() {
    let b = std::fs::read(fixture("regressions/fuzz-gguf-huge-block-count.gguf")).unwrap();
    let bytes = Bytes::from_vec(b);
    let g = GgufFile::from_bytes(&bytes, "crash.gguf").unwrap();
    assert!(g.get_u64("llama.block_count").unwrap().unwrap() > 1 << 30);
    let e = ModelWeights::from_gguf(&g, &bytes).unwrap_err().to_string();
    assert!(e.contains("crash.gguf") && e.contains("missing"), "{e}");
}
