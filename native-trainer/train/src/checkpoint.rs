//! PEFT output and training checkpoints. A checkpoint directory is a usable PEFT adapter plus
//! `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (step, settings, data
//! position); it is written beside its final name and renamed into place, so a crash never
//! leaves a half-written checkpoint under a checkpoint's name.

use anyhow::{bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vicugna_core::lora::LoraEntry;
use vicugna_core::weights::SafetensorsFile;

/// PEFT's tensor name of one pair.
pub fn peft_name(e_layer: usize, proj: vicugna_core::Proj, which: &str) -> String {
    format!("base_model.model.model.layers.{e_layer}.{}.{}.lora_{which}.weight", proj.hf_parent(), proj.hf())
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write named f32 tensors as safetensors (sorted names, atomic via a temporary file).
pub fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), bytes_of(v))).collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)?;
    write_atomic(path, &bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

/// Save a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
pub fn save_peft(dir: &Path, entries: &[LoraEntry], config: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut t = Vec::new();
    for e in entries {
        let (o, i) = (e.b.len() / e.r, e.a.len() / e.r);
        t.push((peft_name(e.layer, e.proj, "A"), vec![e.r, i], e.a.clone()));
        t.push((peft_name(e.layer, e.proj, "B"), vec![o, e.r], e.b.clone()));
    }
    write_tensors(&dir.join("adapter_model.safetensors"), &t)?;
    write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(config)?.as_bytes())
}

/// Read named f32 tensors back.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let bytes = vicugna_core::bytes::map_file(path)?;
    let st = SafetensorsFile::from_bytes(bytes, &path.display().to_string())?;
    let mut out = BTreeMap::new();
    for n in st.names().map(String::from).collect::<Vec<_>>() {
        out.insert(n.clone(), st.f32(&n)?.0);
    }
    Ok(out)
}

/// checkpoint-N directories under `out`, by step.
pub fn list(out: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let step = n.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join("trainer_state.json").is_file().then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// A checkpoint directory given either itself or the run's output directory (the latest).
pub fn resolve(p: &Path) -> Result<PathBuf> {
    if p.join("trainer_state.json").is_file() {
        return Ok(p.to_path_buf());
    }
    match list(p).pop() {
        Some((_, d)) => Ok(d),
        None => bail!("--resume {}: no trainer_state.json there and no checkpoint-N directory inside", p.display()),
    }
}

/// Write `dir` as a complete checkpoint: fill a sibling temporary directory, then rename.
pub fn commit_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dir.with_file_name(format!(".{}.partial", dir.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fill(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    if let Some(parent) = dir.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
