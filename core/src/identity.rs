//! A base model's identity, shared by the registry (which records it) and the trainer (which
//! writes it into the adapters it makes): the architecture facts adapters depend on, the
//! tokenizer's identity and a fingerprint over both and the weights' SHA-256.

use crate::config::Config;
use crate::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// `llama layers=… hidden=…`: the shape facts adapters depend on (for Gemma-3, `gemma3 …` plus
/// its sliding window and local RoPE base).
pub fn architecture(c: &Config) -> String {
    let mut s = format!(
        "{} layers={} hidden={} intermediate={} heads={} kv_heads={} head_dim={} vocab={} rope_theta={} tied={}",
        c.arch.name(),
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.rope_theta,
        c.tie_embeddings
    );
    if let Some(w) = c.sliding_window {
        s.push_str(&format!(" window={w} rope_theta_local={}", c.rope_theta_swa.unwrap_or(c.rope_theta)));
    }
    s
}

/// SHA-256 over every token's text and whether it is a control token, so the same vocabulary has
/// the same identity whether it came from a GGUF or a tokenizer.json.
pub fn tokenizer_identity(t: &Tokenizer) -> String {
    let mut h = Sha256::new();
    for id in 0..t.vocab_size() as u32 {
        let text = t.token_text(id).unwrap_or("");
        h.update((text.len() as u32).to_le_bytes());
        h.update(text.as_bytes());
        h.update([t.is_control(id) as u8]);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// SHA-256 of the weights' hash, the architecture and the tokenizer identity.
pub fn fingerprint(weights_sha256: &str, architecture: &str, tokenizer: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "vicugna-base-v1\nweights {weights_sha256}\narchitecture {architecture}\ntokenizer {tokenizer}\n"
    ));
    hex(&h.finalize())
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> crate::Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path.display().to_string(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| crate::Error::io(path.display().to_string(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
