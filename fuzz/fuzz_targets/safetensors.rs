#![no_main]
//! Any bytes as adapter weights and as a model's safetensors: Ok or Err, never a panic.
use libfuzzer_sys::fuzz_target;
use vicugna_core::{Bytes, Config, LoraAdapter, ModelWeights};

const CFG: &str = r#"{"vocab_size":32,"hidden_size":8,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1}"#;
const ADAPTER: &str = r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}"#;

fuzz_target!(|data: &[u8]| {
    let b = Bytes::from_vec(data.to_vec());
    if let Ok(a) = LoraAdapter::from_peft("fuzz", ADAPTER, "adapter_config.json", b.clone(), "fuzz.safetensors") {
        let _ = a.check_fits(&Config::from_hf_json(CFG, "config.json").unwrap());
    }
    let cfg = Config::from_hf_json(CFG, "config.json").unwrap();
    let _ = ModelWeights::from_hf_parts(cfg, &[(b, "fuzz.safetensors".into())], "fuzz");
});
