//! `vicugna convert`: an HF directory or GGUF rewritten as a GGUF of another tensor type.

use crate::args::ConvertType;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use vicugna_core::gguf::GgufFile;
use vicugna_core::ModelWeights;

#[derive(clap::Args, Debug, Clone)]
pub struct ConvertArgs {
    /// The model to convert: a GGUF file or an HF directory
    #[arg(long)]
    pub model: PathBuf,
    /// The GGUF file to write (written beside it and renamed into place when complete)
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of the projection and embedding weights (norms stay f32)
    #[arg(long = "type", value_enum, default_value_t = ConvertType::F16)]
    pub ty: ConvertType,
}

impl ConvertArgs {
    pub fn run(&self) -> Result<()> {
        let w = ModelWeights::load(&self.model).with_context(|| format!("loading {}", self.model.display()))?;
        write_gguf(&w.convert(self.ty.into())?, &self.model, &self.out)
    }
}

/// The GGUF a model path is, if it is one (its metadata is carried over on export).
pub(crate) fn source_gguf(model: &Path) -> Result<Option<(GgufFile, vicugna_core::Bytes)>> {
    if model.is_dir() {
        return Ok(None);
    }
    let b = vicugna_core::bytes::map_file(model)?;
    let g = GgufFile::from_bytes(&b, &model.display().to_string())?;
    Ok(Some((g, b)))
}

/// Write `w` as GGUF to `out`, with the source's metadata (GGUF) or tokenizer.json (HF directory).
pub(crate) fn write_gguf(w: &ModelWeights, model: &Path, out: &Path) -> Result<()> {
    let src = source_gguf(model)?;
    let tj = if model.is_dir() { std::fs::read_to_string(model.join("tokenizer.json")).ok() } else { None };
    let mut g = w.to_gguf(src.as_ref().map(|s| &s.0), tj.as_deref())?;
    if model.is_dir() {
        if g.metadata.iter().any(|(k, _)| k == "tokenizer.huggingface.json") {
            eprintln!(
                "warning: {}/tokenizer.json has no llama.cpp (tokenizer.ggml.*) form; it is embedded as is, \
                 which vicugna reads and llama.cpp does not",
                model.display()
            );
        }
        // the chat template, as llama.cpp's converter carries it
        let tc = model.join("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&tc) {
            let j: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", tc.display()))?;
            if let Some(t) = j.get("chat_template").and_then(|t| t.as_str()) {
                g.set("tokenizer.chat_template", vicugna_core::gguf::Value::String(t.to_string()));
            }
        }
    }
    // write next to the target and rename, so a failed run never leaves a half-written model
    let tmp = out.with_extension("gguf.partial");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    g.write(&mut f).with_context(|| format!("writing {}", tmp.display()))?;
    f.into_inner().map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}
