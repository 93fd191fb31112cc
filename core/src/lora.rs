//! LoRA adapters: PEFT directories (`adapter_config.json` + `adapter_model.safetensors`) and
//! llama.cpp GGUF LoRA files, validated against a base config, applied unmerged by the model
//! (y = Wx + s·B(Ax)) or merged into host weights.
//!
//! Refused with a clear error: DoRA, bias training, `modules_to_save`, embedding LoRA, anything
//! other than `peft_type: LORA`.

use crate::bytes::{map_file, Bytes};
use crate::config::Config;
use crate::gguf::GgufFile;
use crate::weights::{permute_rope_rows, Matrix, ModelWeights, Proj, SafetensorsFile};
use crate::{Error, Result};
use serde_json::Value as Json;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct LoraEntry {
    pub layer: usize,
    pub proj: Proj,
    pub r: usize,
    /// alpha / r (or alpha / sqrt(r) with rsLoRA), per module after rank/alpha patterns.
    pub scale: f32,
    pub a: Vec<f32>, // (r, in)
    pub b: Vec<f32>, // (out, r)
}

#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub name: String,
    pub source: String,
    /// q/k B rows in llama.cpp's interleaved RoPE layout (true for GGUF LoRA files of LLaMA models).
    pub interleaved: bool,
    pub r: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub target_modules: Vec<String>,
    pub base_model: Option<String>,
    pub entries: Vec<LoraEntry>,
}

/// PEFT's `get_pattern_key`: the first pattern key k with `re.match(rf"(.*\.)?({k})$", module)`.
fn pattern_value<'a>(patterns: &'a serde_json::Map<String, Json>, module: &str) -> Option<&'a Json> {
    patterns.iter().find_map(|(k, v)| {
        let re = fancy_regex::Regex::new(&format!(r"^(.*\.)?({k})$")).ok()?;
        re.is_match(module).ok()?.then_some(v)
    })
}

impl LoraAdapter {
    /// A PEFT directory or a GGUF LoRA file.
    pub fn load(path: &Path) -> Result<Self> {
        let name =
            path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_default();
        if path.is_dir() {
            let cp = path.join("adapter_config.json");
            let cfg = std::fs::read_to_string(&cp).map_err(|e| Error::io(cp.display().to_string(), e))?;
            let wp = path.join("adapter_model.safetensors");
            let bytes = map_file(&wp)?;
            Self::from_peft(&name, &cfg, &cp.display().to_string(), bytes, &wp.display().to_string())
        } else {
            let bytes = map_file(path)?;
            Self::from_gguf_bytes(&name, bytes, &path.display().to_string())
        }
    }

    pub fn from_peft(
        name: &str,
        config_text: &str,
        config_file: &str,
        weights: Bytes,
        weights_file: &str,
    ) -> Result<Self> {
        let j: Json =
            serde_json::from_str(config_text).map_err(|e| Error::format(config_file, format!("invalid JSON: {e}")))?;
        let o = j.as_object().ok_or_else(|| Error::format(config_file, "expected a JSON object"))?;
        let f = |k: &str, m: &str| Error::field(config_file, k, m.to_string());
        if let Some(t) = o.get("peft_type").and_then(|v| v.as_str()) {
            if t != "LORA" {
                return Err(Error::unsupported(config_file, format!("peft_type \"{t}\" (only LORA)")));
            }
        }
        if o.get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::unsupported(config_file, "use_dora: DoRA adapters are not supported"));
        }
        if let Some(b) = o.get("bias").and_then(|v| v.as_str()) {
            if b != "none" {
                return Err(Error::unsupported(config_file, format!("bias \"{b}\" (only \"none\")")));
            }
        }
        if o.get("lora_bias").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::unsupported(config_file, "lora_bias: true"));
        }
        if o.get("modules_to_save").is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(Error::unsupported(config_file, "modules_to_save (fully trained extra modules)"));
        }
        if o.get("fan_in_fan_out").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::unsupported(config_file, "fan_in_fan_out: true (Conv1D layouts)"));
        }
        let r = o
            .get("r")
            .ok_or_else(|| f("r", "missing"))?
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or_else(|| f("r", "expected a positive integer"))? as usize;
        let alpha = o
            .get("lora_alpha")
            .ok_or_else(|| f("lora_alpha", "missing"))?
            .as_f64()
            .ok_or_else(|| f("lora_alpha", "expected a number"))?;
        let use_rslora = o.get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false);
        let target_modules = match o.get("target_modules") {
            Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => vec![],
        };
        let empty = serde_json::Map::new();
        let rank_pattern = o.get("rank_pattern").and_then(|v| v.as_object()).unwrap_or(&empty);
        let alpha_pattern = o.get("alpha_pattern").and_then(|v| v.as_object()).unwrap_or(&empty);

        let st = SafetensorsFile::from_bytes(weights, weights_file)?;
        let mut names: Vec<&str> = st.names().collect();
        names.sort();
        let mut entries = Vec::new();
        for n in &names {
            if n.contains("lora_magnitude_vector") {
                return Err(Error::unsupported(weights_file, format!("`{n}`: DoRA magnitude vectors")));
            }
            if n.contains("lora_embedding_") {
                return Err(Error::unsupported(weights_file, format!("`{n}`: LoRA on embeddings")));
            }
            let Some(module) = n.strip_suffix(".lora_A.weight") else {
                if n.ends_with(".lora_B.weight") {
                    continue;
                }
                return Err(Error::tensor(
                    weights_file,
                    *n,
                    "not a LoRA tensor (expected ….lora_A.weight / ….lora_B.weight)",
                ));
            };
            // base_model.model.model.layers.{i}.self_attn.q_proj
            let inner = module.strip_prefix("base_model.model.").unwrap_or(module);
            let parts: Vec<&str> = inner.split('.').collect();
            let li = parts.iter().position(|p| *p == "layers");
            let (layer, proj) = match li {
                Some(i) if i + 3 < parts.len() + 1 && parts.len() >= i + 4 => {
                    let layer: usize =
                        parts[i + 1].parse().map_err(|_| Error::tensor(weights_file, *n, "bad layer index"))?;
                    let proj = Proj::from_hf(parts[i + 3]).ok_or_else(|| {
                        Error::unsupported(
                            weights_file,
                            format!("`{n}`: module `{}` is not one of the seven LLaMA projections", parts[i + 3]),
                        )
                    })?;
                    (layer, proj)
                }
                _ => return Err(Error::tensor(weights_file, *n, "cannot find `layers.N.<module>` in the name")),
            };
            let bn = format!("{module}.lora_B.weight");
            let (a, ash) = st.f32(n)?;
            let (b, bsh) = st.f32(&bn).map_err(|_| Error::tensor(weights_file, &bn, "missing (lora_A present)"))?;
            let er = rank_pattern_get(rank_pattern, inner, config_file)?.unwrap_or(r);
            let ealpha = match pattern_value(alpha_pattern, inner) {
                Some(v) => v.as_f64().ok_or_else(|| f("alpha_pattern", "values must be numbers"))?,
                None => alpha,
            };
            if ash.len() != 2 || bsh.len() != 2 || ash[0] != er || bsh[1] != er {
                return Err(Error::tensor(
                    weights_file,
                    *n,
                    format!("lora_A {ash:?} / lora_B {bsh:?} do not have rank {er} from adapter_config.json"),
                ));
            }
            let scale = if use_rslora { ealpha / (er as f64).sqrt() } else { ealpha / er as f64 } as f32;
            entries.push(LoraEntry { layer, proj, r: er, scale, a, b });
        }
        if entries.is_empty() {
            return Err(Error::format(weights_file, "no LoRA tensors found"));
        }
        Ok(LoraAdapter {
            name: name.to_string(),
            source: weights_file.to_string(),
            interleaved: false,
            r,
            alpha,
            use_rslora,
            target_modules,
            base_model: o.get("base_model_name_or_path").and_then(|v| v.as_str()).map(String::from),
            entries,
        })
    }

    /// llama.cpp's GGUF LoRA (`general.type = adapter`, `adapter.type = lora`).
    pub fn from_gguf_bytes(name: &str, bytes: Bytes, file: &str) -> Result<Self> {
        let g = GgufFile::from_bytes(&bytes, file)?;
        if g.get_str("general.type") != Some("adapter") || g.get_str("adapter.type") != Some("lora") {
            return Err(Error::field(
                file,
                "general.type",
                "not a LoRA adapter (expected general.type = adapter, adapter.type = lora)",
            ));
        }
        let alpha = g.get_f64("adapter.lora.alpha")?.unwrap_or(0.0);
        let mut entries = Vec::new();
        let mut r0 = 0;
        for t in &g.tensors {
            let Some(base) = t.name.strip_suffix(".weight.lora_a") else {
                continue;
            };
            let bname = format!("{base}.weight.lora_b");
            let tb = g.tensor(&bname).ok_or_else(|| Error::tensor(file, &bname, "missing (lora_a present)"))?;
            let mut it = base.split('.');
            let (Some("blk"), Some(li), Some(pn), None) = (it.next(), it.next(), it.next(), it.next()) else {
                return Err(Error::tensor(file, &t.name, "expected blk.N.<proj>.weight.lora_a"));
            };
            let layer: usize = li.parse().map_err(|_| Error::tensor(file, &t.name, "bad layer index"))?;
            let proj = Proj::from_gguf(pn)
                .ok_or_else(|| Error::unsupported(file, format!("`{}`: projection `{pn}`", t.name)))?;
            if t.dims.len() != 2 || tb.dims.len() != 2 || t.dims[1] != tb.dims[0] {
                return Err(Error::tensor(
                    file,
                    &t.name,
                    format!("lora_a {:?} and lora_b {:?} disagree on the rank", t.dims, tb.dims),
                ));
            }
            let r = t.dims[1] as usize;
            r0 = r;
            let load = |ti: &crate::gguf::TensorInfo| -> Result<Vec<f32>> {
                if !ti.ty.can_dequantize() {
                    return Err(Error::tensor(file, &ti.name, format!("type {:?} unsupported", ti.ty)));
                }
                Ok(Matrix {
                    ty: ti.ty,
                    rows: ti.dims[1] as usize,
                    cols: ti.dims[0] as usize,
                    data: g.tensor_data(&bytes, ti),
                }
                .to_f32())
            };
            // llama.cpp: scale = alpha / rank, or 1 when alpha is unset
            let scale = if alpha == 0.0 { 1.0 } else { (alpha / r as f64) as f32 };
            entries.push(LoraEntry { layer, proj, r, scale, a: load(t)?, b: load(tb)? });
        }
        if entries.is_empty() {
            return Err(Error::format(file, "no LoRA tensors found"));
        }
        entries.sort_by_key(|e| (e.layer, e.proj));
        Ok(LoraAdapter {
            name: name.to_string(),
            source: file.to_string(),
            // llama.cpp permutes q/k rows of LLaMA models only (Gemma-3 keeps HF's rotate-half)
            interleaved: g
                .get_str("general.architecture")
                .is_none_or(|a| crate::config::Arch::from_name(a).is_some_and(|a| a.gguf_interleaves_rope())),
            r: r0,
            alpha,
            use_rslora: false,
            target_modules: vec![],
            base_model: g.get_str("general.base_model.0.name").map(String::from),
            entries,
        })
    }

    /// Check every tensor against the base's shapes; error names the tensor and both shapes.
    pub fn check_fits(&self, cfg: &Config) -> Result<()> {
        for e in &self.entries {
            let t = format!("layers.{}.{}", e.layer, e.proj.hf());
            if e.layer >= cfg.num_layers {
                return Err(Error::tensor(
                    &self.source,
                    t,
                    format!(
                        "layer {} but the base model has {} layers: adapter made for a different base",
                        e.layer, cfg.num_layers
                    ),
                ));
            }
            let (o, i) = e.proj.shape(cfg);
            if e.a.len() != e.r * i || e.b.len() != o * e.r {
                return Err(Error::tensor(
                    &self.source,
                    t,
                    format!(
                        "A is ({}, {}) and B is ({}, {}) but the base projection is ({o}, {i}): adapter made for a different base",
                        e.r,
                        e.a.len() / e.r.max(1),
                        e.b.len() / e.r.max(1),
                        e.r
                    ),
                ));
            }
        }
        Ok(())
    }

    /// B as it must be applied to a base with `cfg.rope_interleaved` (q/k rows re-permuted when
    /// the adapter's layout differs from the base's).
    pub fn b_for(&self, e: &LoraEntry, cfg: &Config) -> Vec<f32> {
        if self.interleaved == cfg.rope_interleaved || !matches!(e.proj, Proj::Q | Proj::K) {
            return e.b.clone();
        }
        let heads = if e.proj == Proj::Q { cfg.num_heads } else { cfg.num_kv_heads };
        permute_rope_rows(&e.b, e.r, heads, cfg.head_dim, cfg.rope_interleaved)
    }

    /// W += weight · scale · B A for every entry, in f32 (merged matrices become F32).
    pub fn merge_into(&self, w: &mut ModelWeights, weight: f32) -> Result<()> {
        self.check_fits(&w.cfg)?;
        let cfg = w.cfg.clone();
        for e in &self.entries {
            let b = self.b_for(e, &cfg);
            let m = &mut w.layers[e.layer].proj[e.proj as usize];
            let (o, i) = (m.rows, m.cols);
            let mut d = m.to_f32();
            let s = weight * e.scale;
            for r in 0..o {
                for k in 0..e.r {
                    let bk = s * b[r * e.r + k];
                    let a = &e.a[k * i..(k + 1) * i];
                    for (dv, av) in d[r * i..(r + 1) * i].iter_mut().zip(a) {
                        *dv += bk * av;
                    }
                }
            }
            *m = Matrix::from_f32(o, i, d);
        }
        Ok(())
    }

    pub fn modules(&self) -> Vec<&'static str> {
        let mut m: Vec<_> = self.entries.iter().map(|e| e.proj.hf()).collect();
        m.sort();
        m.dedup();
        m
    }
}

fn rank_pattern_get(p: &serde_json::Map<String, Json>, module: &str, file: &str) -> Result<Option<usize>> {
    match pattern_value(p, module) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&r| r > 0)
            .map(|r| Some(r as usize))
            .ok_or_else(|| Error::field(file, "rank_pattern", "values must be positive integers")),
    }
}
