//! Writing models: GGUF (llama.cpp's tensor names and Q/K layout, so llama.cpp can run the file)
//! and HF directories (config.json + model.safetensors), used by `vicugna convert` and `merge`.

use crate::config::Config;
use crate::gguf::{GgufFile, GgufWriter, Value};
use crate::quant::GgmlType;
use crate::tensors::Slot;
use crate::weights::{permute_rope_rows, Matrix, ModelWeights, Proj};
use crate::{Error, Result};
use std::path::Path;

impl Matrix {
    /// Reorder rows (any stored type: rows are independent blocks).
    pub fn permute_rows(&self, perm: &[usize]) -> Matrix {
        let rb = self.row_bytes();
        let mut out = Vec::with_capacity(rb * self.rows);
        for &r in perm {
            out.extend_from_slice(self.row(r));
        }
        Matrix { ty: self.ty, rows: self.rows, cols: self.cols, data: crate::Bytes::from_vec(out) }
    }
}

/// Row order that moves Q/K between the HF and interleaved RoPE layouts.
fn rope_perm(rows: usize, n_heads: usize, head_dim: usize, to_interleaved: bool) -> Vec<usize> {
    let idx: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    permute_rope_rows(&idx, 1, n_heads, head_dim, to_interleaved).into_iter().map(|v| v as usize).collect()
}

impl ModelWeights {
    /// The same weights with Q/K rows in the requested RoPE layout.
    pub fn with_rope_layout(&self, interleaved: bool) -> ModelWeights {
        if self.cfg.rope_interleaved == interleaved {
            return self.clone();
        }
        let c = &self.cfg;
        let mut out = self.clone();
        out.cfg.rope_interleaved = interleaved;
        for l in &mut out.layers {
            let q = &l.proj[Proj::Q as usize];
            l.proj[Proj::Q as usize] = q.permute_rows(&rope_perm(q.rows, c.num_heads, c.head_dim, interleaved));
            let k = &l.proj[Proj::K as usize];
            l.proj[Proj::K as usize] = k.permute_rows(&rope_perm(k.rows, c.num_kv_heads, c.head_dim, interleaved));
        }
        out
    }

    /// A GGUF in llama.cpp's conventions. Tokenizer metadata is copied from `tokenizer_from`
    /// (a GGUF source) or, for HF sources, written from the tokenizer.json as the
    /// `tokenizer.ggml.*` keys llama.cpp reads (`tokenizer::gguf_vocab_from_hf_json`); a
    /// vocabulary with no GGUF form is embedded as `tokenizer.huggingface.json` instead, which
    /// only our loader reads.
    pub fn to_gguf(&self, tokenizer_from: Option<&GgufFile>, tokenizer_json: Option<&str>) -> Result<GgufWriter> {
        if self.cfg.arch != crate::config::Arch::Llama {
            return Err(crate::Error::unsupported(
                &self.source,
                format!("writing a `{}` model as GGUF (only LLaMA-block models are exported)", self.cfg.arch),
            ));
        }
        let w = self.with_rope_layout(true);
        let c = &w.cfg;
        let mut g = GgufWriter::new();
        let a = "llama";
        g.set("general.architecture", Value::String(a.into()));
        g.set(
            "general.name",
            Value::String(
                Path::new(&self.source).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            ),
        );
        g.set(&format!("{a}.vocab_size"), Value::U32(c.vocab_size as u32));
        g.set(&format!("{a}.context_length"), Value::U32(c.max_position as u32));
        g.set(&format!("{a}.embedding_length"), Value::U32(c.hidden_size as u32));
        g.set(&format!("{a}.block_count"), Value::U32(c.num_layers as u32));
        g.set(&format!("{a}.feed_forward_length"), Value::U32(c.intermediate_size as u32));
        g.set(&format!("{a}.rope.dimension_count"), Value::U32(c.head_dim as u32));
        g.set(&format!("{a}.attention.key_length"), Value::U32(c.head_dim as u32));
        g.set(&format!("{a}.attention.value_length"), Value::U32(c.head_dim as u32));
        g.set(&format!("{a}.attention.head_count"), Value::U32(c.num_heads as u32));
        g.set(&format!("{a}.attention.head_count_kv"), Value::U32(c.num_kv_heads as u32));
        g.set(&format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(c.rms_eps));
        g.set(&format!("{a}.rope.freq_base"), Value::F32(c.rope_theta as f32));
        if let Some(src) = tokenizer_from {
            for (k, v) in &src.metadata {
                if k.starts_with("tokenizer.") {
                    g.set(k, v.clone());
                }
            }
        } else if let Some(j) = tokenizer_json {
            match crate::tokenizer::gguf_vocab_from_hf_json(j.as_bytes(), &format!("{}/tokenizer.json", self.source)) {
                Ok(vocab) => {
                    for (k, v) in vocab {
                        g.set(&k, v);
                    }
                }
                // a vocabulary llama.cpp has no form for: embed the tokenizer.json itself, which our
                // loader reads (llama.cpp will refuse the file)
                Err(Error::Unsupported { .. }) => {
                    g.set("tokenizer.huggingface.json", Value::String(j.to_string()));
                    if let Some(b) = c.bos_token_id {
                        g.set("tokenizer.ggml.bos_token_id", Value::U32(b));
                    }
                    if let Some(&e) = c.eos_token_ids.first() {
                        g.set("tokenizer.ggml.eos_token_id", Value::U32(e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mat = |g: &mut GgufWriter, name: &str, m: &Matrix| {
            g.add_tensor(name, vec![m.cols as u64, m.rows as u64], m.ty, m.data.to_vec())
        };
        let vecf = |g: &mut GgufWriter, name: &str, v: &[f32]| {
            g.add_tensor(name, vec![v.len() as u64], GgmlType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        mat(&mut g, &Slot::Embed.gguf_name(), &w.embed)?;
        if c.rope_scaling.is_some() || c.rope_freq_factors.is_some() {
            let plain = Config { rope_scaling: None, rope_freq_factors: None, ..c.clone() }.rope_inv_freq();
            let scaled = c.rope_inv_freq();
            let ff: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
            vecf(&mut g, &Slot::RopeFreqs.gguf_name(), &ff)?;
        }
        for (i, l) in w.layers.iter().enumerate() {
            for (n, v) in l.norms() {
                vecf(&mut g, &n.slot(i).gguf_name(), v)?;
            }
            for p in Proj::ALL {
                mat(&mut g, &Slot::Proj(i, p).gguf_name(), l.get(p))?;
            }
        }
        vecf(&mut g, &Slot::Norm.gguf_name(), &w.norm)?;
        if let Some(h) = &w.lm_head {
            mat(&mut g, &Slot::LmHead.gguf_name(), h)?;
        }
        Ok(g)
    }

    /// An HF directory: config.json + model.safetensors (F32/F16/BF16 only; quantised matrices
    /// are written as F32).
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        if self.cfg.arch != crate::config::Arch::Llama {
            return Err(crate::Error::unsupported(
                &self.source,
                format!("writing a `{}` model as an HF directory (only LLaMA-block models)", self.cfg.arch),
            ));
        }
        let w = self.with_rope_layout(false);
        let c = &w.cfg;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let mut cfg = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim,
            "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta, "max_position_embeddings": c.max_position,
            "tie_word_embeddings": w.lm_head.is_none(), "torch_dtype": "float32", "hidden_act": "silu",
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_ids.first(),
        });
        if let Some(s) = &c.rope_scaling {
            cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor, "original_max_position_embeddings": s.original_max_position_embeddings});
        }
        if c.rope_freq_factors.is_some() {
            return Err(Error::unsupported(&self.source, "writing GGUF rope_freqs scaling back to an HF config"));
        }
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
        let mut put = |name: String, m: &Matrix| {
            let (dt, data) = match m.ty {
                GgmlType::F16 => (safetensors::Dtype::F16, m.data.to_vec()),
                GgmlType::BF16 => (safetensors::Dtype::BF16, m.data.to_vec()),
                _ => (safetensors::Dtype::F32, m.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect()),
            };
            let shape = if m.rows == 1 { vec![m.cols] } else { vec![m.rows, m.cols] };
            tensors.push((name, shape, data, dt));
        };
        let v1 = |v: &[f32]| Matrix::from_f32(1, v.len(), v.to_vec());
        put(Slot::Embed.hf(), &w.embed);
        for (i, l) in w.layers.iter().enumerate() {
            for (n, v) in l.norms() {
                put(n.slot(i).hf(), &v1(v));
            }
            for pr in Proj::ALL {
                put(Slot::Proj(i, pr).hf(), l.get(pr));
            }
        }
        put(Slot::Norm.hf(), &v1(&w.norm));
        if let Some(h) = &w.lm_head {
            put(Slot::LmHead.hf(), h);
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, s, d, dt)| {
                (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), d).expect("sizes consistent"))
            })
            .collect();
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| Error::format(dir.join("model.safetensors").display().to_string(), e.to_string()))?;
        let write = |name: &str, b: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, b).map_err(|e| Error::io(p.display().to_string(), e))
        };
        write("model.safetensors", &bytes)?;
        write("config.json", serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}
