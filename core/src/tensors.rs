//! The one table of tensor names: which tensor of a file goes where in the model ([`Slot`]), and
//! each slot's name in GGUF (llama.cpp's `LLM_TENSOR_NAMES`) and in HF safetensors (LLaMA's module
//! paths). The loaders, the streaming loader and the writers all read names from here.

use crate::config::Config;

/// The seven LoRA-able projections of a LLaMA block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];
    /// HF module name, e.g. `q_proj`.
    pub fn hf(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }
    /// HF parent module (`self_attn` or `mlp`).
    pub fn hf_parent(self) -> &'static str {
        match self {
            Proj::Q | Proj::K | Proj::V | Proj::O => "self_attn",
            _ => "mlp",
        }
    }
    pub fn gguf(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }
    pub fn from_hf(s: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.hf() == s)
    }
    pub fn from_gguf(s: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.gguf() == s)
    }
    /// (out, in) for a config.
    pub fn shape(self, c: &Config) -> (usize, usize) {
        match self {
            Proj::Q => (c.q_dim(), c.hidden_size),
            Proj::K | Proj::V => (c.kv_dim(), c.hidden_size),
            Proj::O => (c.hidden_size, c.q_dim()),
            Proj::Gate | Proj::Up => (c.intermediate_size, c.hidden_size),
            Proj::Down => (c.hidden_size, c.intermediate_size),
        }
    }
}

/// Where one tensor goes in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Embed,
    /// The untied classifier (`output.weight` / `lm_head.weight`).
    LmHead,
    Norm,
    AttnNorm(usize),
    FfnNorm(usize),
    PostAttnNorm(usize),
    PostFfnNorm(usize),
    QNorm(usize),
    KNorm(usize),
    Proj(usize, Proj),
    /// llama3 frequency divisors (GGUF `rope_freqs.weight`), folded into the config.
    RopeFreqs,
}

impl Slot {
    /// The slot of a GGUF tensor name; `None` for tensors the model does not use.
    pub fn from_gguf(name: &str) -> Option<Slot> {
        match name {
            "token_embd.weight" => return Some(Slot::Embed),
            "output.weight" => return Some(Slot::LmHead),
            "output_norm.weight" => return Some(Slot::Norm),
            "rope_freqs.weight" => return Some(Slot::RopeFreqs),
            _ => {}
        }
        let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
        let (l, what) = rest.split_once('.')?;
        let l: usize = l.parse().ok()?;
        match what {
            "attn_norm" => Some(Slot::AttnNorm(l)),
            "ffn_norm" => Some(Slot::FfnNorm(l)),
            "post_attention_norm" => Some(Slot::PostAttnNorm(l)),
            "post_ffw_norm" => Some(Slot::PostFfnNorm(l)),
            "attn_q_norm" => Some(Slot::QNorm(l)),
            "attn_k_norm" => Some(Slot::KNorm(l)),
            p => Proj::from_gguf(p).map(|p| Slot::Proj(l, p)),
        }
    }

    pub fn gguf_name(self) -> String {
        match self {
            Slot::Embed => "token_embd.weight".into(),
            Slot::LmHead => "output.weight".into(),
            Slot::Norm => "output_norm.weight".into(),
            Slot::RopeFreqs => "rope_freqs.weight".into(),
            Slot::AttnNorm(l) => format!("blk.{l}.attn_norm.weight"),
            Slot::FfnNorm(l) => format!("blk.{l}.ffn_norm.weight"),
            Slot::PostAttnNorm(l) => format!("blk.{l}.post_attention_norm.weight"),
            Slot::PostFfnNorm(l) => format!("blk.{l}.post_ffw_norm.weight"),
            Slot::QNorm(l) => format!("blk.{l}.attn_q_norm.weight"),
            Slot::KNorm(l) => format!("blk.{l}.attn_k_norm.weight"),
            Slot::Proj(l, p) => format!("blk.{l}.{}.weight", p.gguf()),
        }
    }

    /// (rows, cols) the config implies; vectors are one row.
    pub fn shape(self, c: &Config) -> (usize, usize) {
        match self {
            Slot::Embed | Slot::LmHead => (c.vocab_size, c.hidden_size),
            Slot::Norm | Slot::AttnNorm(_) | Slot::FfnNorm(_) | Slot::PostAttnNorm(_) | Slot::PostFfnNorm(_) => {
                (1, c.hidden_size)
            }
            Slot::QNorm(_) | Slot::KNorm(_) => (1, c.head_dim),
            Slot::RopeFreqs => (1, c.head_dim / 2),
            Slot::Proj(_, p) => p.shape(c),
        }
    }

    pub fn layer(self) -> Option<usize> {
        match self {
            Slot::AttnNorm(l)
            | Slot::FfnNorm(l)
            | Slot::PostAttnNorm(l)
            | Slot::PostFfnNorm(l)
            | Slot::QNorm(l)
            | Slot::KNorm(l)
            | Slot::Proj(l, _) => Some(l),
            _ => None,
        }
    }
}

impl Slot {
    /// The HF (transformers LLaMA) tensor name; `None` for slots HF checkpoints of the LLaMA
    /// layout do not have (Gemma-3's extra norms, GGUF's rope_freqs).
    pub fn hf_name(self) -> Option<String> {
        let l = |i: usize, rest: &str| Some(format!("model.layers.{i}.{rest}.weight"));
        match self {
            Slot::Embed => Some("model.embed_tokens.weight".into()),
            Slot::LmHead => Some("lm_head.weight".into()),
            Slot::Norm => Some("model.norm.weight".into()),
            Slot::AttnNorm(i) => l(i, "input_layernorm"),
            Slot::FfnNorm(i) => l(i, "post_attention_layernorm"),
            Slot::Proj(i, p) => l(i, &format!("{}.{}", p.hf_parent(), p.hf())),
            Slot::PostAttnNorm(_) | Slot::PostFfnNorm(_) | Slot::QNorm(_) | Slot::KNorm(_) | Slot::RopeFreqs => None,
        }
    }

    /// `hf_name` for slots every LLaMA-layout checkpoint has.
    pub fn hf(self) -> String {
        self.hf_name().unwrap_or_else(|| format!("{self:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GGUF names read back to their slot; every layer slot of a Gemma-3 block and the HF names of
    /// a LLaMA block are llama.cpp's and transformers' own spellings.
    #[test]
    fn names_round_trip_and_are_the_references_spellings() {
        let mut all = vec![Slot::Embed, Slot::LmHead, Slot::Norm, Slot::RopeFreqs];
        for i in [0, 17] {
            all.extend([Slot::AttnNorm(i), Slot::FfnNorm(i), Slot::PostAttnNorm(i), Slot::PostFfnNorm(i)]);
            all.extend([Slot::QNorm(i), Slot::KNorm(i)]);
            all.extend(Proj::ALL.map(|p| Slot::Proj(i, p)));
        }
        for s in all {
            assert_eq!(Slot::from_gguf(&s.gguf_name()), Some(s), "{s:?}");
        }
        assert_eq!(Slot::Proj(3, Proj::O).gguf_name(), "blk.3.attn_output.weight");
        assert_eq!(Slot::PostFfnNorm(3).gguf_name(), "blk.3.post_ffw_norm.weight");
        assert_eq!(Slot::Proj(3, Proj::Down).hf(), "model.layers.3.mlp.down_proj.weight");
        assert_eq!(Slot::FfnNorm(3).hf(), "model.layers.3.post_attention_layernorm.weight");
        assert_eq!(Slot::from_gguf("blk.3.attn_q.bias"), None);
        assert_eq!(Proj::from_hf("gate_proj"), Some(Proj::Gate));
    }
}
