//! `vicugna tokenize`: a text's token ids, as JSON.

use crate::model::load_tokenizer;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct TokenizeArgs {
    /// tokenizer.json, or a GGUF with a vocabulary
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Do not prepend the beginning-of-sequence token
    #[arg(long)]
    pub no_bos: bool,
    /// The text to tokenize
    pub text: String,
}

impl TokenizeArgs {
    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        let t = load_tokenizer(&self.tokenizer, None)?;
        writeln!(out, "{}", serde_json::json!({"ids": t.encode(&self.text, !self.no_bos)?}))?;
        Ok(())
    }
}
