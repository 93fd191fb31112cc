//! `vicugna inspect`: what a file is — GGUF metadata and tensor table, an HF model's config, or
//! an adapter's rank, modules and size.

use super::convert::source_gguf;
use anyhow::Result;
use std::io::Write;
use std::path::{Path, PathBuf};
use vicugna_core::{LoraAdapter, ModelWeights};

#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// A GGUF file (model or LoRA), an HF model directory or a PEFT adapter directory
    pub path: PathBuf,
}

impl InspectArgs {
    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        let path = &self.path;
        if path.is_dir() && path.join("adapter_config.json").exists() || path.is_file() && is_gguf_adapter(path) {
            let a = LoraAdapter::load(path)?;
            writeln!(
                out,
                "adapter {}: r={} alpha={} rslora={} base={:?}",
                path.display(),
                a.r,
                a.alpha,
                a.use_rslora,
                a.base_model
            )?;
            writeln!(out, "modules: {}", a.modules().join(", "))?;
            let params: usize = a.entries.iter().map(|e| e.a.len() + e.b.len()).sum();
            writeln!(out, "{} tensor pairs, {} parameters", a.entries.len(), params)?;
            return Ok(());
        }
        if let Some((g, _)) = source_gguf(path)? {
            writeln!(
                out,
                "GGUF v{} {}: {} metadata keys, {} tensors",
                g.version,
                path.display(),
                g.metadata.len(),
                g.tensors.len()
            )?;
            for (k, v) in &g.metadata {
                writeln!(out, "  {k} = {}", v.summary())?;
            }
            for t in &g.tensors {
                writeln!(out, "  {:<32} {:>6?} {:?}", t.name, t.ty, t.dims)?;
            }
            return Ok(());
        }
        let w = ModelWeights::load(path)?;
        writeln!(out, "{}: {:?}", path.display(), w.cfg)?;
        Ok(())
    }
}

fn is_gguf_adapter(p: &Path) -> bool {
    source_gguf(p).ok().flatten().is_some_and(|(g, _)| g.get_str("general.type") == Some("adapter"))
}
