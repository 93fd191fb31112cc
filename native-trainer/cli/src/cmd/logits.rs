//! `vicugna logits`: the model's logits at every input position, as JSON (what the golden tests
//! compare against transformers and llama.cpp).

use crate::args::{BackendKind, KernelArgs};
use crate::model::{load_model, parse_ids};
use crate::with_model;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct LogitsArgs {
    /// Base model: a GGUF file or an HF directory
    #[arg(long)]
    pub model: PathBuf,
    /// LoRA adapter (PEFT directory or GGUF LoRA), optionally PATH:WEIGHT; repeatable
    #[arg(long)]
    pub lora: Vec<String>,
    /// Input token ids, comma-separated (1,2,3)
    #[arg(long)]
    pub tokens: String,
    /// Where the model runs
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub kernels: KernelArgs,
}

impl LogitsArgs {
    /// `{"tokens":[...],"logits":[[...],...]}`, one row per input position.
    pub fn json(&self) -> Result<String> {
        let ids = parse_ids(&self.tokens)?;
        if ids.is_empty() {
            bail!("--tokens: no token ids given");
        }
        let any = load_model(&self.model, &self.lora, self.backend, self.kernels)?;
        let (l, vocab) = with_model!(&any, |m| {
            let mut cache = m.new_cache(ids.len())?;
            (m.forward_blocking(&ids, 0, &mut cache, vicugna_core::Pick::AllLogits)?.logits()?, m.cfg.vocab_size)
        });
        let rows: Vec<&[f32]> = l.chunks(vocab).collect();
        Ok(serde_json::json!({"tokens": ids, "logits": rows}).to_string())
    }

    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        writeln!(out, "{}", self.json()?)?;
        Ok(())
    }
}
