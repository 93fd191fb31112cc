//! `vicugna merge`: a base with adapters merged into its weights, as GGUF or an HF directory.

use super::convert::write_gguf;
use crate::model::parse_lora;
use anyhow::{Context, Result};
use std::path::PathBuf;
use vicugna_core::{LoraAdapter, ModelWeights};

#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Base model: a GGUF file or an HF directory
    #[arg(long)]
    pub model: PathBuf,
    /// Adapter to merge (PEFT directory or GGUF LoRA), optionally PATH:WEIGHT; repeatable
    #[arg(long, required = true)]
    pub lora: Vec<String>,
    /// OUT.gguf writes a GGUF; any other path an HF directory (config.json + model.safetensors)
    #[arg(long)]
    pub out: PathBuf,
}

impl MergeArgs {
    pub fn run(&self) -> Result<()> {
        let (model, out) = (&self.model, &self.out);
        let mut w = ModelWeights::load(model).with_context(|| format!("loading {}", model.display()))?;
        for l in &self.lora {
            let (p, wt) = parse_lora(l)?;
            LoraAdapter::load(&p)
                .and_then(|a| a.merge_into(&mut w, wt))
                .with_context(|| format!("merging {}", p.display()))?;
        }
        if out.extension().is_some_and(|e| e == "gguf") {
            write_gguf(&w, model, out)
        } else {
            w.save_hf_dir(out)?;
            if model.is_dir() && model.join("tokenizer.json").exists() {
                std::fs::copy(model.join("tokenizer.json"), out.join("tokenizer.json"))?;
            }
            Ok(())
        }
    }
}
