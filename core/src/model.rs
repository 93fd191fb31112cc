//! The LLaMA-family transformer, written once over `Backend`.

use crate::backend::{Backend, LoraPair, Rope};
use crate::config::Config;
use crate::lora::LoraAdapter;
use crate::weights::{ModelWeights, Proj};
use crate::{Error, Result};

struct Layer<B: Backend> {
    attn_norm: B::Vector,
    ffn_norm: B::Vector,
    proj: Vec<B::Weight>, // indexed by Proj
}

struct Attached<B: Backend> {
    name: String,
    weight: f32,
    /// (layer * 7 + proj) -> uploaded pair and its scale
    pairs: Vec<Option<(B::Lora, f32)>>,
}

pub struct Model<B: Backend> {
    pub cfg: Config,
    pub backend: B,
    embed: B::Weight,
    lm_head: Option<B::Weight>,
    norm: B::Vector,
    layers: Vec<Layer<B>>,
    rope: Rope,
    adapters: Vec<Attached<B>>,
}

impl<B: Backend> Model<B> {
    pub fn new(backend: B, w: &ModelWeights) -> Result<Self> {
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(Layer {
                attn_norm: backend.load_vector(&l.attn_norm)?,
                ffn_norm: backend.load_vector(&l.ffn_norm)?,
                proj: l.proj.iter().map(|m| backend.load_matrix(m)).collect::<Result<_>>()?,
            });
        }
        Ok(Model {
            cfg: w.cfg.clone(),
            embed: backend.load_matrix(&w.embed)?,
            lm_head: w.lm_head.as_ref().map(|m| backend.load_matrix(m)).transpose()?,
            norm: backend.load_vector(&w.norm)?,
            layers,
            rope: Rope { inv_freq: w.cfg.rope_inv_freq(), interleaved: w.cfg.rope_interleaved },
            adapters: Vec::new(),
            backend,
        })
    }

    /// Attach an adapter unmerged with a mixing weight; the base stays untouched, so adapters can
    /// be swapped or mixed without reloading it. Replaces an attached adapter of the same name.
    pub fn attach(&mut self, a: &LoraAdapter, weight: f32) -> Result<()> {
        a.check_fits(&self.cfg)?;
        let mut pairs: Vec<Option<(B::Lora, f32)>> = (0..self.cfg.num_layers * 7).map(|_| None).collect();
        for e in &a.entries {
            let b = a.b_for(e, &self.cfg);
            let up = self.backend.load_lora(&LoraPair { r: e.r, a: &e.a, b: &b })?;
            pairs[e.layer * 7 + e.proj as usize] = Some((up, e.scale));
        }
        self.detach(&a.name);
        self.adapters.push(Attached { name: a.name.clone(), weight, pairs });
        Ok(())
    }

    pub fn detach(&mut self, name: &str) -> bool {
        let n = self.adapters.len();
        self.adapters.retain(|a| a.name != name);
        n != self.adapters.len()
    }

    pub fn set_adapter_weight(&mut self, name: &str, weight: f32) -> Result<()> {
        let a = self
            .adapters
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::Invalid(format!("no adapter named `{name}` is attached")))?;
        a.weight = weight;
        Ok(())
    }

    pub fn adapters(&self) -> Vec<(String, f32)> {
        self.adapters.iter().map(|a| (a.name.clone(), a.weight)).collect()
    }

    pub fn new_cache(&self, max_seq: usize) -> Result<B::Cache> {
        self.backend.new_cache(&self.cfg, max_seq)
    }

    fn loras(&self, layer: usize, p: Proj) -> Vec<(&B::Lora, f32)> {
        self.adapters
            .iter()
            .filter_map(|a| a.pairs[layer * 7 + p as usize].as_ref().map(|(l, s)| (l, s * a.weight)))
            .filter(|(_, s)| *s != 0.0)
            .collect()
    }

    /// Run `tokens` at positions pos0.. through the model, extending `cache`. Returns logits for
    /// every position (n_tokens * vocab) when `all_logits`, else for the last one only.
    pub fn forward(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache, all_logits: bool) -> Result<Vec<f32>> {
        let logits = self.forward_act(tokens, pos0, cache, all_logits)?;
        self.backend.to_host(&logits)
    }

    /// Greedy next token after `tokens`: the argmax runs on the backend, so a GPU decode step
    /// reads back one token id.
    pub fn forward_greedy(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache) -> Result<u32> {
        let logits = self.forward_act(tokens, pos0, cache, false)?;
        self.backend.argmax(&logits)
    }

    /// Sampled next token (temperature, top-k, top-p, then a draw with the uniform `u`), chosen
    /// on the backend.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_sample(
        &self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut B::Cache,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        u: f32,
    ) -> Result<u32> {
        let logits = self.forward_act(tokens, pos0, cache, false)?;
        self.backend.sample(&logits, temperature, top_k, top_p, u)
    }

    fn forward_act(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache, all_logits: bool) -> Result<B::Act> {
        let c = &self.cfg;
        let be = &self.backend;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::Invalid("forward: no tokens".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary of {}", c.vocab_size)));
        }
        let (h, qd, kvd, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut x = be.act(n, h); // (n, hidden) residual stream
        be.embed(&mut x, &self.embed, tokens);
        let mut xn = be.act(n, h);
        let (mut q, mut k, mut v) = (be.act(n, qd), be.act(n, kvd), be.act(n, kvd));
        let mut att = be.act(n, qd);
        let mut o = be.act(n, h);
        let (mut g, mut u) = (be.act(n, ff), be.act(n, ff));
        for (li, l) in self.layers.iter().enumerate() {
            // attention block: x += Wo · attn(rope(Wq xn), rope(Wk xn), Wv xn)
            be.rmsnorm(&mut xn, &x, &l.attn_norm, c.rms_eps);
            be.matmul(&mut q, &xn, &l.proj[Proj::Q as usize], &self.loras(li, Proj::Q));
            be.matmul(&mut k, &xn, &l.proj[Proj::K as usize], &self.loras(li, Proj::K));
            be.matmul(&mut v, &xn, &l.proj[Proj::V as usize], &self.loras(li, Proj::V));
            be.rope(&mut q, c.num_heads, c.head_dim, pos0, &self.rope);
            be.rope(&mut k, c.num_kv_heads, c.head_dim, pos0, &self.rope);
            be.attention(&mut att, &q, &k, &v, cache, li, pos0, c)?;
            be.matmul(&mut o, &att, &l.proj[Proj::O as usize], &self.loras(li, Proj::O));
            be.add(&mut x, &o);
            // feed-forward block: x += Wdown (silu(Wgate xn) * Wup xn)
            be.rmsnorm(&mut xn, &x, &l.ffn_norm, c.rms_eps);
            be.matmul(&mut g, &xn, &l.proj[Proj::Gate as usize], &self.loras(li, Proj::Gate));
            be.matmul(&mut u, &xn, &l.proj[Proj::Up as usize], &self.loras(li, Proj::Up));
            be.silu_mul(&mut g, &u);
            be.matmul(&mut o, &g, &l.proj[Proj::Down as usize], &self.loras(li, Proj::Down));
            be.add(&mut x, &o);
        }
        let x = if all_logits { x } else { be.last_row(&x) };
        let rows = if all_logits { n } else { 1 };
        let mut xn = be.act(rows, h);
        be.rmsnorm(&mut xn, &x, &self.norm, c.rms_eps);
        let mut logits = be.act(rows, c.vocab_size);
        be.matmul(&mut logits, &xn, self.lm_head.as_ref().unwrap_or(&self.embed), &[]);
        Ok(logits)
    }
}
