//! Loading what the commands run: the base model on a backend with its adapters, and its tokenizer.

use crate::args::{BackendKind, KernelArgs, ModelArgs};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vicugna_core::cpu::Cpu;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{LoraAdapter, Model, ModelWeights};
use vicugna_shaders::Wgpu;

/// `PATH[:WEIGHT]` for --lora.
pub fn parse_lora(s: &str) -> Result<(PathBuf, f32)> {
    if let Some((p, w)) = s.rsplit_once(':') {
        if let Ok(w) = w.parse::<f32>() {
            return Ok((PathBuf::from(p), w));
        }
    }
    Ok((PathBuf::from(s), 1.0))
}

/// A comma-separated token-id list (`1,2,3`).
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .enumerate()
        .map(|(i, t)| {
            t.trim().parse::<u32>().with_context(|| format!("token list: item {} `{t}` is not a token id", i + 1))
        })
        .collect()
}

/// A model on one of the backends this binary has (one per process, so variant sizes don't matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    Cpu(Model<Cpu>),
    Wgpu(Model<Wgpu>),
}

/// Run `$body` with `$m` bound to the concrete model, whatever its backend.
#[macro_export]
macro_rules! with_model {
    ($any:expr, |$m:ident| $body:expr) => {
        match $any {
            $crate::model::AnyModel::Cpu($m) => $body,
            $crate::model::AnyModel::Wgpu($m) => $body,
        }
    };
}

fn attach_all<B: vicugna_core::backend::Backend>(m: &mut Model<B>, loras: &[String]) -> Result<()> {
    for l in loras {
        let (p, wt) = parse_lora(l)?;
        let a = LoraAdapter::load(&p).with_context(|| format!("loading adapter {}", p.display()))?;
        m.attach(&a, wt).with_context(|| format!("attaching adapter {}", p.display()))?;
    }
    Ok(())
}

/// The base model on `backend` with every --lora attached.
pub fn load_model(model: &Path, loras: &[String], backend: BackendKind, kernels: KernelArgs) -> Result<AnyModel> {
    let w = ModelWeights::load(model).with_context(|| format!("loading model {}", model.display()))?;
    Ok(match backend {
        BackendKind::Cpu => {
            let mut m = Model::new(kernels.cpu()?, &w)?;
            attach_all(&mut m, loras)?;
            AnyModel::Cpu(m)
        }
        BackendKind::Wgpu => {
            let (device, queue, info) = Wgpu::default_device().context("--backend wgpu")?;
            eprintln!("wgpu: {} ({:?})", info.name, info.backend);
            let mut m = Model::new(Wgpu::for_adapter(device, queue, &info), &w)?;
            attach_all(&mut m, loras)?;
            AnyModel::Wgpu(m)
        }
    })
}

/// The tokenizer that belongs to a model path: tokenizer.json in an HF directory, or the
/// vocabulary embedded in a GGUF.
pub fn load_tokenizer(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    let p = explicit.unwrap_or(model);
    Tokenizer::load(p).with_context(|| format!("loading tokenizer from {}", p.display()))
}

impl ModelArgs {
    pub fn load(&self, backend: BackendKind) -> Result<(AnyModel, Tokenizer)> {
        let m = load_model(&self.model, &self.lora, backend, self.kernels)?;
        Ok((m, load_tokenizer(&self.model, self.tokenizer.as_deref())?))
    }
}
