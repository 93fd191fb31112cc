//! What one transformer layer *is*, written once: which norms it has, its activation, its RoPE
//! frequencies, attention window and query scale ([`LayerSpec`]), and the tensors it holds
//! ([`LayerTensors`], generic over how a backend stores them). The loaders, the inference model
//! (`model.rs`), the training model (`vicugna-train`) and the writers all read a layer through
//! these two, so an architecture switch is set in `config.rs` and read here, never restated.
//!
//! The block itself, for every architecture we run:
//!
//! ```text
//! xn  = rmsnorm(x, attn_norm)
//! q,k,v = Wq xn, Wk xn, Wv xn                      (+ LoRA on each)
//! q,k = rmsnorm_heads(q, q_norm), (k, k_norm)      [qk_norm]
//! q,k = rope(q), rope(k)                           (this layer's inv_freq)
//! x  += [rmsnorm(., post_attn_norm)] Wo attn(q, k, v)   (causal, this layer's window, query_scale)
//! xn  = rmsnorm(x, ffn_norm)
//! x  += [rmsnorm(., post_ffn_norm)] Wdown (act(Wgate xn) * Wup xn)
//! ```

use crate::config::{Activation, Config};
use crate::tensors::{Proj, Slot};

/// The norm vectors a layer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Before attention (`attn_norm` / `input_layernorm`).
    Attn,
    /// Before the feed-forward block (`ffn_norm` / LLaMA's `post_attention_layernorm`).
    Ffn,
    /// Gemma-3: of the attention output.
    PostAttn,
    /// Gemma-3: of the feed-forward output.
    PostFfn,
    /// Gemma-3: per-head norm of q (head_dim wide).
    Q,
    /// Gemma-3: per-head norm of k (head_dim wide).
    K,
}

impl Norm {
    pub const ALL: [Norm; 6] = [Norm::Attn, Norm::Ffn, Norm::PostAttn, Norm::PostFfn, Norm::Q, Norm::K];

    pub fn slot(self, layer: usize) -> Slot {
        match self {
            Norm::Attn => Slot::AttnNorm(layer),
            Norm::Ffn => Slot::FfnNorm(layer),
            Norm::PostAttn => Slot::PostAttnNorm(layer),
            Norm::PostFfn => Slot::PostFfnNorm(layer),
            Norm::Q => Slot::QNorm(layer),
            Norm::K => Slot::KNorm(layer),
        }
    }

    /// Whether layers of this config have the norm.
    pub fn present(self, c: &Config) -> bool {
        match self {
            Norm::Attn | Norm::Ffn => true,
            Norm::PostAttn | Norm::PostFfn => c.post_norms,
            Norm::Q | Norm::K => c.qk_norm,
        }
    }

    /// Its length: the hidden size, or head_dim for the per-head norms.
    pub fn len(self, c: &Config) -> usize {
        match self {
            Norm::Q | Norm::K => c.head_dim,
            _ => c.hidden_size,
        }
    }
}

/// RoPE frequencies of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// head_dim / 2 inverse frequencies (scaling already applied).
    pub inv_freq: Vec<f32>,
    /// Pairs (2i, 2i+1) instead of (i, i + d/2); see `Config::rope_interleaved`.
    pub interleaved: bool,
}

/// Attention geometry of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Scores are q·k times this (1/sqrt(head_dim) for LLaMA).
    pub scale: f32,
    /// `Some(w)`: position i attends to positions i-w+1..=i only (a sliding-window layer).
    pub window: Option<usize>,
}

impl Heads {
    /// LLaMA's attention: 1/sqrt(head_dim), no window.
    pub fn plain(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        Heads { n_heads, n_kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window: None }
    }
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// The first position query position `pos` sees.
    pub fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

/// The switches of one layer, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub act: Activation,
    pub rope: Rope,
    pub heads: Heads,
    pub qk_norm: bool,
    pub post_norms: bool,
}

impl LayerSpec {
    pub fn of(c: &Config, layer: usize) -> LayerSpec {
        LayerSpec {
            act: c.act,
            rope: Rope { inv_freq: c.rope_inv_freq_for(layer), interleaved: c.rope_interleaved },
            heads: Heads {
                n_heads: c.num_heads,
                n_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                scale: c.query_scale(),
                window: c.window(layer),
            },
            qk_norm: c.qk_norm,
            post_norms: c.post_norms,
        }
    }
}

/// The tensors of one layer: norm vectors `V` and projection weights `W` (host `Vec<f32>` and
/// `Matrix` in [`crate::weights::LayerWeights`]; each backend's resident types in the models).
#[derive(Clone, Debug)]
pub struct LayerTensors<V, W> {
    pub attn_norm: V,
    pub ffn_norm: V,
    /// Gemma-3 (`Config::post_norms`): norms of the attention and feed-forward outputs.
    pub post_attn_norm: Option<V>,
    pub post_ffn_norm: Option<V>,
    /// Gemma-3 (`Config::qk_norm`): per-head norms of q and k, head_dim wide.
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    /// Indexed by `Proj as usize`.
    pub proj: [W; 7],
}

impl<V, W> LayerTensors<V, W> {
    pub fn get(&self, p: Proj) -> &W {
        &self.proj[p as usize]
    }

    pub fn norm(&self, n: Norm) -> Option<&V> {
        match n {
            Norm::Attn => Some(&self.attn_norm),
            Norm::Ffn => Some(&self.ffn_norm),
            Norm::PostAttn => self.post_attn_norm.as_ref(),
            Norm::PostFfn => self.post_ffn_norm.as_ref(),
            Norm::Q => self.q_norm.as_ref(),
            Norm::K => self.k_norm.as_ref(),
        }
    }

    /// The norms the layer holds, in `Norm::ALL` order.
    pub fn norms(&self) -> impl Iterator<Item = (Norm, &V)> {
        Norm::ALL.into_iter().filter_map(|n| self.norm(n).map(|v| (n, v)))
    }

    /// Build a layer from parts, asking only for the norms the config has: `norm(n)` and
    /// `proj(p)` return the tensor, `Ok(None)` when it is absent (then `missing(slot)` is the
    /// error), or their own error.
    pub fn assemble<E>(
        c: &Config,
        layer: usize,
        mut norm: impl FnMut(Norm) -> Result<Option<V>, E>,
        mut proj: impl FnMut(Proj) -> Result<Option<W>, E>,
        missing: impl Fn(Slot) -> E,
    ) -> Result<Self, E> {
        let mut norms: [Option<V>; 6] = Default::default();
        for (i, n) in Norm::ALL.into_iter().enumerate() {
            if n.present(c) {
                norms[i] = Some(norm(n)?.ok_or_else(|| missing(n.slot(layer)))?);
            }
        }
        let mut projs = Vec::with_capacity(7);
        for p in Proj::ALL {
            projs.push(proj(p)?.ok_or_else(|| missing(Slot::Proj(layer, p)))?);
        }
        let Ok(proj) = <[W; 7]>::try_from(projs) else { unreachable!("seven projections") };
        let [attn, ffn, post_attn_norm, post_ffn_norm, q_norm, k_norm] = norms;
        Ok(LayerTensors {
            attn_norm: attn.expect("always present"),
            ffn_norm: ffn.expect("always present"),
            post_attn_norm,
            post_ffn_norm,
            q_norm,
            k_norm,
            proj,
        })
    }

    /// The same layer with every tensor converted (uploaded to a backend, say), checked against
    /// the config: a norm the config has but the layer lacks is `missing(slot)`.
    pub fn convert<V2, W2, E>(
        &self,
        c: &Config,
        layer: usize,
        mut norm: impl FnMut(&V) -> Result<V2, E>,
        mut proj: impl FnMut(&W) -> Result<W2, E>,
        missing: impl Fn(Slot) -> E,
    ) -> Result<LayerTensors<V2, W2>, E> {
        LayerTensors::assemble(
            c,
            layer,
            |n| self.norm(n).map(&mut norm).transpose(),
            |p| proj(self.get(p)).map(Some),
            missing,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_asks_for_the_norms_its_config_has() {
        let mut c = Config::llama_defaults();
        let asked = |c: &Config| {
            let mut seen = Vec::new();
            let l = LayerTensors::<usize, usize>::assemble(
                c,
                3,
                |n| {
                    seen.push(n);
                    Ok::<_, Slot>(Some(n as usize))
                },
                |p| Ok(Some(p as usize)),
                |s| s,
            )
            .unwrap();
            assert_eq!(l.proj, [0, 1, 2, 3, 4, 5, 6]);
            assert_eq!(l.norms().count(), seen.len());
            seen
        };
        assert_eq!(asked(&c), [Norm::Attn, Norm::Ffn]);
        c.post_norms = true;
        c.qk_norm = true;
        assert_eq!(asked(&c), Norm::ALL);
        // a norm the config has but the parts lack is named
        let err = LayerTensors::<u8, u8>::assemble(
            &c,
            3,
            |n| Ok(if n == Norm::K { None } else { Some(0) }),
            |_| Ok(Some(0)),
            |s| s,
        )
        .unwrap_err();
        assert_eq!(err, Slot::KNorm(3));
        let err = LayerTensors::<u8, u8>::assemble(&c, 1, |_| Ok(Some(0)), |p| Ok((p != Proj::Up).then_some(0)), |s| s)
            .unwrap_err();
        assert_eq!(err, Slot::Proj(1, Proj::Up));
    }
}
