#![no_main]
//! Any bytes: the GGUF reader, model loader, LoRA loader and tokenizer loader return Ok or Err,
//! never panic or allocate wildly.
use libfuzzer_sys::fuzz_target;
use vicugna_core::gguf::GgufFile;
use vicugna_core::{Bytes, LoraAdapter, ModelWeights};

fuzz_target!(|data: &[u8]| {
    let b = Bytes::from_vec(data.to_vec());
    if let Ok(g) = GgufFile::from_bytes(&b, "fuzz.gguf") {
        let _ = vicugna_core::tokenizer::Tokenizer::from_gguf(&g);
        let _ = ModelWeights::from_gguf(&g, &b);
    }
    let _ = LoraAdapter::from_gguf_bytes("fuzz", b, "fuzz.gguf");
});
