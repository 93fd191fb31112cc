//! What the registry checks in uploaded files, using vicugna-core's parsers: a base model's
//! architecture, tokenizer and fingerprint; an adapter's config, tensors and fit to its base.

use std::path::Path;

use vicugna_core::bytes::map_file;
pub use vicugna_core::identity::{architecture, fingerprint, tokenizer_identity};
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::weights::SafetensorsFile;
use vicugna_core::{Config, LoraAdapter};

use crate::registry::{Error, Result};

/// A base model's identity.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub format: &'static str,
    pub config: Config,
    pub architecture: String,
    pub tokenizer: String,
    pub fingerprint: String,
}

fn unprocessable(e: impl std::fmt::Display) -> Error {
    Error::Rejected(e.to_string())
}

/// A GGUF base model: header, `llama.*` config and embedded vocabulary.
pub fn gguf_model(path: &Path, sha256: &str) -> Result<ModelInfo> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let g = vicugna_core::gguf::GgufFile::read(&mut f, "model.gguf").map_err(unprocessable)?;
    let config = Config::from_gguf(&g).map_err(unprocessable)?;
    let tokenizer = match Tokenizer::from_gguf(&g) {
        Ok(t) => tokenizer_identity(&t),
        Err(e) => return Err(Error::Rejected(format!("model.gguf: no usable tokenizer: {e}"))),
    };
    let architecture = architecture(&config);
    let fingerprint = fingerprint(sha256, &architecture, &tokenizer);
    Ok(ModelInfo { format: "gguf", config, architecture, tokenizer, fingerprint })
}

/// An HF base model: `config.json` + `model.safetensors` (+ `tokenizer.json`).
pub fn hf_model(
    config_path: &Path,
    weights: &Path,
    weights_sha256: &str,
    tokenizer: Option<&Path>,
) -> Result<ModelInfo> {
    let text =
        std::fs::read_to_string(config_path).map_err(|_| Error::Rejected("config.json: not UTF-8 text".into()))?;
    let config = Config::from_hf_json(&text, "config.json").map_err(unprocessable)?;
    let st = SafetensorsFile::from_bytes(map_file(weights).map_err(Error::storage)?, "model.safetensors")
        .map_err(unprocessable)?;
    let embed = "model.embed_tokens.weight";
    match st.shape(embed) {
        Some(s) if s == [config.vocab_size, config.hidden_size] => {}
        Some(s) => {
            return Err(Error::Rejected(format!(
                "model.safetensors: tensor `{embed}` is {s:?} but config.json says [{}, {}]",
                config.vocab_size, config.hidden_size
            )))
        }
        None => return Err(Error::Rejected(format!("model.safetensors: tensor `{embed}` is missing"))),
    }
    let tokenizer = match tokenizer {
        Some(p) => {
            let bytes = std::fs::read(p)?;
            tokenizer_identity(&Tokenizer::from_hf_json(&bytes, "tokenizer.json").map_err(unprocessable)?)
        }
        None => "none".to_string(),
    };
    let architecture = architecture(&config);
    let fingerprint = fingerprint(weights_sha256, &architecture, &tokenizer);
    Ok(ModelInfo { format: "safetensors", config, architecture, tokenizer, fingerprint })
}

/// What the registry records of a PEFT adapter.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub r: i64,
    pub alpha: f64,
    pub target_modules: serde_json::Value,
    /// `base_model_name_or_path` from the config, if any.
    pub base_model: Option<String>,
}

/// Parse and check a PEFT adapter (config + tensors) without a base.
pub fn peft_adapter(config: &Path, weights: &Path) -> Result<(AdapterInfo, LoraAdapter)> {
    let text =
        std::fs::read_to_string(config).map_err(|_| Error::Rejected("adapter_config.json: not UTF-8 text".into()))?;
    let bytes = map_file(weights).map_err(Error::storage)?;
    let lora = LoraAdapter::from_peft("adapter", &text, "adapter_config.json", bytes, "adapter_model.safetensors")
        .map_err(unprocessable)?;
    // from_peft has validated the JSON and the fields it needs.
    let j: serde_json::Value = serde_json::from_str(&text).map_err(unprocessable)?;
    let info = AdapterInfo {
        r: j.get("r").and_then(|v| v.as_i64()).unwrap_or(0),
        alpha: j.get("lora_alpha").and_then(|v| v.as_f64()).unwrap_or(0.0),
        target_modules: j.get("target_modules").cloned().unwrap_or(serde_json::Value::Null),
        base_model: j
            .get("base_model_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from),
    };
    Ok((info, lora))
}
