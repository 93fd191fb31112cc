//! Model hyper-parameters from HF `config.json` or GGUF `llama.*` metadata.

use crate::gguf::GgufFile;
use crate::{Error, Result};
use serde_json::Value as Json;

/// llama3-style frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The feed-forward gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// LLaMA's SwiGLU: silu(gate) * up.
    #[default]
    Silu,
    /// Gemma's GeGLU: gelu_tanh(gate) * up.
    GeluTanh,
}

/// Model hyper-parameters. LLaMA is the default; the Gemma-3 block is the same model with the
/// extra switches below set (post-norms, QK-norm, GeGLU, scaled embeddings, query scaling and
/// interleaved sliding-window layers with their own RoPE base).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    /// Per-frequency divisors from GGUF's `rope_freqs.weight` (how llama.cpp stores llama3 scaling).
    pub rope_freq_factors: Option<Vec<f32>>,
    pub max_position: usize,
    pub tie_embeddings: bool,
    /// Q/K rows in llama.cpp's interleaved RoPE layout (pairs (2i, 2i+1)) rather than HF's
    /// rotate-half layout (pairs (i, i + d/2)). GGUF files converted by llama.cpp use the former.
    pub rope_interleaved: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The model family as read (`general.architecture` / `model_type`).
    #[serde(default)]
    pub arch: Arch,
    #[serde(default)]
    pub act: Activation,
    /// RMSNorm over each head of q and k before RoPE (Gemma-3).
    #[serde(default)]
    pub qk_norm: bool,
    /// RMSNorm of the attention and feed-forward outputs before each residual add (Gemma-3).
    #[serde(default)]
    pub post_norms: bool,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden_size)).
    #[serde(default)]
    pub embed_scale: Option<f32>,
    /// Query scaling; `None` is 1/sqrt(head_dim) (Gemma-3: 1/sqrt(query_pre_attn_scalar)).
    #[serde(default)]
    pub attn_scale: Option<f32>,
    /// Sliding-window layers attend to the last `sliding_window` positions, their own included.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Per layer, true for a sliding-window layer (empty: none).
    #[serde(default)]
    pub swa_layers: Vec<bool>,
    /// RoPE base of the sliding-window layers (the others use `rope_theta`).
    #[serde(default)]
    pub rope_theta_swa: Option<f64>,
    /// Linear RoPE scaling of the full-attention layers (positions divided by this).
    #[serde(default)]
    pub rope_linear_factor: Option<f64>,
}

/// The model families this crate runs: one block structure, configured by the switches on
/// [`Config`]. The name is GGUF's `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// LLaMA and LLaMA-compatible (Mistral without sliding window, TinyLlama, ...).
    #[default]
    Llama,
    /// Gemma-3: post-norms, QK-norm, GeGLU, scaled embeddings, sliding-window layers.
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Llama, Arch::Gemma3];

    /// GGUF's `general.architecture` (and the metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Whether llama.cpp's converter stores this family's q/k rows in the interleaved RoPE layout.
    pub fn gguf_interleaves_rope(self) -> bool {
        self == Arch::Llama
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// The factor scores q·k are multiplied by.
    pub fn query_scale(&self) -> f32 {
        self.attn_scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }
    pub fn is_swa(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && self.swa_layers.get(layer).copied().unwrap_or(false)
    }
    /// The attention window of a layer: `Some(w)` when it only sees the last `w` positions.
    pub fn window(&self, layer: usize) -> Option<usize> {
        if self.is_swa(layer) {
            self.sliding_window
        } else {
            None
        }
    }

    fn validate(self, file: &str) -> Result<Self> {
        let check = |ok: bool, field: &str, msg: String| {
            if ok {
                Ok(())
            } else {
                Err(Error::field(file, field, msg))
            }
        };
        check(self.vocab_size > 0, "vocab_size", "must be positive".into())?;
        check(self.hidden_size > 0, "hidden_size", "must be positive".into())?;
        check(self.num_layers > 0, "num_hidden_layers", "must be positive".into())?;
        check(self.num_heads > 0, "num_attention_heads", "must be positive".into())?;
        check(
            self.num_kv_heads > 0 && self.num_heads.is_multiple_of(self.num_kv_heads),
            "num_key_value_heads",
            format!("{} does not divide num_attention_heads {}", self.num_kv_heads, self.num_heads),
        )?;
        check(
            self.head_dim > 0 && self.head_dim.is_multiple_of(2),
            "head_dim",
            format!("{} must be even and positive", self.head_dim),
        )?;
        check(self.rms_eps > 0.0, "rms_norm_eps", format!("{} must be positive", self.rms_eps))?;
        check(self.rope_theta > 0.0, "rope_theta", format!("{} must be positive", self.rope_theta))?;
        Ok(self)
    }

    /// Parse HF `config.json` text. `file` names the file in errors.
    pub fn from_hf_json(text: &str, file: &str) -> Result<Self> {
        let j: Json = serde_json::from_str(text).map_err(|e| Error::format(file, format!("invalid JSON: {e}")))?;
        let obj = j.as_object().ok_or_else(|| Error::format(file, "expected a JSON object"))?;
        if let Some(mt) = obj.get("model_type").and_then(|v| v.as_str()) {
            if !matches!(mt, "llama" | "mistral") {
                return Err(Error::unsupported(file, format!("model_type \"{mt}\" (supported: llama, mistral)")));
            }
        }
        let req = |k: &str| -> Result<u64> {
            match obj.get(k) {
                None | Some(Json::Null) => Err(Error::field(file, k, "missing")),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| Error::field(file, k, format!("expected a non-negative integer, found {v}"))),
            }
        };
        let opt_u = |k: &str| -> Result<Option<u64>> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| Error::field(file, k, format!("expected a non-negative integer, found {v}"))),
            }
        };
        let num = |o: &serde_json::Map<String, Json>, k: &str, field: &str| -> Result<Option<f64>> {
            match o.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| Error::field(file, field, format!("expected a number, found {v}"))),
            }
        };
        let hidden = req("hidden_size")? as usize;
        let heads = req("num_attention_heads")? as usize;
        let kv = opt_u("num_key_value_heads")?.map(|v| v as usize).unwrap_or(heads);
        let head_dim = opt_u("head_dim")?.map(|v| v as usize).unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        // transformers 5 moved rope settings into `rope_parameters`; older files use rope_theta + rope_scaling
        let rp = obj.get("rope_parameters").and_then(|v| v.as_object());
        let rs = obj.get("rope_scaling").and_then(|v| v.as_object());
        let theta = num(obj, "rope_theta", "rope_theta")?
            .or(rp.map(|p| num(p, "rope_theta", "rope_parameters.rope_theta")).transpose()?.flatten())
            .unwrap_or(10000.0);
        let scaling_obj = rp.or(rs);
        let mut rope_scaling = None;
        if let Some(s) = scaling_obj {
            let field = if rp.is_some() { "rope_parameters" } else { "rope_scaling" };
            let ty = s.get("rope_type").or(s.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
            match ty {
                "default" => {}
                "llama3" => {
                    let g = |k: &str| -> Result<f64> {
                        num(s, k, &format!("{field}.{k}"))?
                            .ok_or_else(|| Error::field(file, format!("{field}.{k}"), "missing"))
                    };
                    rope_scaling = Some(Llama3Scaling {
                        factor: g("factor")?,
                        low_freq_factor: g("low_freq_factor")?,
                        high_freq_factor: g("high_freq_factor")?,
                        original_max_position_embeddings: g("original_max_position_embeddings")?,
                    });
                }
                other => {
                    return Err(Error::unsupported(
                        file,
                        format!("{field}.rope_type \"{other}\" (supported: default, llama3)"),
                    ))
                }
            }
        }
        if let Some(dt) = obj.get("torch_dtype").or(obj.get("dtype")).and_then(|v| v.as_str()) {
            if !matches!(dt, "float32" | "float16" | "bfloat16") {
                return Err(Error::unsupported(file, format!("dtype \"{dt}\"")));
            }
        }
        if obj.get("attention_bias").and_then(|v| v.as_bool()) == Some(true)
            || obj.get("mlp_bias").and_then(|v| v.as_bool()) == Some(true)
        {
            return Err(Error::unsupported(file, "attention_bias / mlp_bias (LLaMA family without biases only)"));
        }
        let eos = match obj.get("eos_token_id") {
            Some(Json::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
            _ => vec![],
        };
        Config {
            vocab_size: req("vocab_size")? as usize,
            hidden_size: hidden,
            intermediate_size: req("intermediate_size")? as usize,
            num_layers: req("num_hidden_layers")? as usize,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            rms_eps: num(obj, "rms_norm_eps", "rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta: theta,
            rope_scaling,
            rope_freq_factors: None,
            max_position: opt_u("max_position_embeddings")?.unwrap_or(2048) as usize,
            tie_embeddings: obj.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
            rope_interleaved: false,
            bos_token_id: opt_u("bos_token_id")?.map(|v| v as u32),
            eos_token_ids: eos,
            ..Config::llama_defaults()
        }
        .validate(file)
    }

    /// The switches that make a plain LLaMA block (every family-specific field off).
    pub fn llama_defaults() -> Config {
        Config {
            vocab_size: 0,
            hidden_size: 0,
            intermediate_size: 0,
            num_layers: 0,
            num_heads: 0,
            num_kv_heads: 0,
            head_dim: 0,
            rms_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_freq_factors: None,
            max_position: 2048,
            tie_embeddings: false,
            rope_interleaved: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            arch: Arch::Llama,
            act: Activation::Silu,
            qk_norm: false,
            post_norms: false,
            embed_scale: None,
            attn_scale: None,
            sliding_window: None,
            swa_layers: vec![],
            rope_theta_swa: None,
            rope_linear_factor: None,
        }
    }

    /// From GGUF metadata (`general.architecture` = llama or gemma3). Tying is decided by the
    /// loader from the presence of `output.weight`; llama3 scaling arrives as the
    /// `rope_freqs.weight` tensor. Gemma-3 follows llama.cpp's reading of the same keys.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name = g
            .get_str("general.architecture")
            .ok_or_else(|| Error::field(&g.name, "general.architecture", "missing"))?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
            Error::unsupported(
                &g.name,
                format!("general.architecture \"{arch_name}\" (supported: {})", names.join(", ")),
            )
        })?;
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = g.require_u64(&k("embedding_length"))? as usize;
        let heads = g.require_u64(&k("attention.head_count"))? as usize;
        let vocab = match g.get_u64(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => match g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
                Some(a) => a.len(),
                None => g
                    .tensor("token_embd.weight")
                    .and_then(|t| t.dims.get(1).map(|&d| d as usize))
                    .ok_or_else(|| Error::field(&g.name, k("vocab_size"), "missing and no token_embd.weight"))?,
            },
        };
        let head_dim = match g.get_u64(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None => g
                .get_u64(&k("rope.dimension_count"))?
                .map(|v| v as usize)
                .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        };
        let eos = g.get_u64("tokenizer.ggml.eos_token_id")?.map(|v| vec![v as u32]).unwrap_or_default();
        let num_layers = g.require_u64(&k("block_count"))? as usize;
        let mut c = Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: g.require_u64(&k("feed_forward_length"))? as usize,
            num_layers,
            num_heads: heads,
            num_kv_heads: g.get_u64(&k("attention.head_count_kv"))?.map(|v| v as usize).unwrap_or(heads),
            head_dim,
            rms_eps: g.get_f64(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
            rope_theta: g.get_f64(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling: None,
            rope_freq_factors: None,
            max_position: g.get_u64(&k("context_length"))?.unwrap_or(2048) as usize,
            tie_embeddings: g.tensor("output.weight").is_none(),
            rope_interleaved: true,
            bos_token_id: g.get_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
            eos_token_ids: eos,
            arch,
            ..Config::llama_defaults()
        };
        if arch == Arch::Gemma3 {
            if g.get_f64(&k("final_logit_softcapping"))?.is_some_and(|v| v != 0.0) {
                return Err(Error::unsupported(&g.name, "gemma3.final_logit_softcapping (logit soft-capping)"));
            }
            // llama.cpp's Gemma-3: NEOX (rotate-half) RoPE, GeGLU with tanh-GELU, norms after
            // attention and feed-forward, QK-norm, embeddings scaled by sqrt(hidden), queries by
            // 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B model), and every 6th layer
            // global with the rest in a sliding window with RoPE base 10000
            c.rope_interleaved = false;
            c.act = Activation::GeluTanh;
            c.post_norms = true;
            c.qk_norm = true;
            c.embed_scale = Some((hidden as f32).sqrt());
            c.attn_scale = Some(if num_layers == 62 {
                1.0 / ((hidden / heads.max(1)) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            });
            if let Some(w) = g.get_u64(&k("attention.sliding_window"))?.filter(|&w| w > 0) {
                c.sliding_window = Some(w as usize);
                let key = k("attention.sliding_window_pattern");
                c.swa_layers = match g.get(&key) {
                    Some(crate::gguf::Value::Array(a)) => {
                        let v: Vec<bool> = a.iter().map(|x| x.as_bool().unwrap_or(false)).collect();
                        if v.len() != num_layers {
                            return Err(Error::field(
                                &g.name,
                                key,
                                format!("{} entries for {num_layers} layers", v.len()),
                            ));
                        }
                        v
                    }
                    _ => {
                        let p = g.get_u64(&key)?.unwrap_or(6) as usize;
                        (0..num_layers).map(|il| p == 0 || il % p < p - 1).collect()
                    }
                };
                c.rope_theta_swa = Some(g.get_f64(&k("rope.freq_base_swa"))?.unwrap_or(10000.0));
            }
            match g.get_str(&k("rope.scaling.type")) {
                None | Some("none") => {}
                Some("linear") => c.rope_linear_factor = g.get_f64(&k("rope.scaling.factor"))?.filter(|&f| f > 0.0),
                Some(o) => return Err(Error::unsupported(&g.name, format!("{} \"{o}\"", k("rope.scaling.type")))),
            }
        }
        c.validate(&g.name)
    }

    /// RoPE inverse frequencies of one layer: sliding-window layers use their own base and no
    /// scaling; the others `rope_inv_freq`.
    pub fn rope_inv_freq_for(&self, layer: usize) -> Vec<f32> {
        match self.rope_theta_swa {
            Some(theta) if self.is_swa(layer) => {
                let d = self.head_dim;
                (0..d / 2).map(|i| (1.0 / theta.powf((2 * i) as f64 / d as f64)) as f32).collect()
            }
            _ => self.rope_inv_freq(),
        }
    }

    /// RoPE inverse frequencies (head_dim / 2 of them), HF's formula including llama3 scaling.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        if let Some(f) = self.rope_linear_factor {
            let plain = Config { rope_linear_factor: None, ..self.clone() };
            return plain.rope_inv_freq().iter().map(|&v| (v as f64 / f) as f32).collect();
        }
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
        if let Some(ff) = &self.rope_freq_factors {
            return base.iter().zip(ff).map(|(&v, &f)| (v / f as f64) as f32).collect();
        }
        let Some(s) = &self.rope_scaling else {
            return base.iter().map(|&v| v as f32).collect();
        };
        let low_wl = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wl = s.original_max_position_embeddings / s.high_freq_factor;
        base.iter()
            .map(|&f| {
                let wl = 2.0 * std::f64::consts::PI / f;
                let v = if wl < high_wl {
                    f
                } else if wl > low_wl {
                    f / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wl - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                };
                v as f32
            })
            .collect()
    }
}
