//! The LLaMA-family transformer, written once over `Backend`.

use crate::backend::{Backend, LoraPair, Rope};
use crate::config::{Activation, Config};
use crate::lora::LoraAdapter;
pub use crate::tensors::Slot;
use crate::weights::{Matrix, ModelWeights, Proj};
use crate::{Error, Result};

struct Layer<B: Backend> {
    attn_norm: B::Vector,
    ffn_norm: B::Vector,
    proj: Vec<B::Weight>, // indexed by Proj
    /// Gemma-3: norms of the attention / feed-forward outputs, per-head norms of q and k.
    post_attn_norm: Option<B::Vector>,
    post_ffn_norm: Option<B::Vector>,
    q_norm: Option<B::Vector>,
    k_norm: Option<B::Vector>,
    /// RoPE of this layer (sliding-window layers may have their own base).
    rope: usize,
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
    /// The distinct RoPE tables, indexed by `Layer::rope`.
    ropes: Vec<Rope>,
    adapters: Vec<Attached<B>>,
}

impl<B: Backend> Model<B> {
    pub fn new(backend: B, w: &ModelWeights) -> Result<Self> {
        let mut b = ModelBuilder::new(backend, w.cfg.clone(), &w.source);
        b.set(Slot::Embed, &w.embed)?;
        if let Some(h) = &w.lm_head {
            b.set(Slot::LmHead, h)?;
        }
        b.set(Slot::Norm, &Matrix::from_f32(1, w.norm.len(), w.norm.clone()))?;
        let vector = |v: &Vec<f32>| Matrix::from_f32(1, v.len(), v.clone());
        for (i, l) in w.layers.iter().enumerate() {
            b.set(Slot::AttnNorm(i), &vector(&l.attn_norm))?;
            b.set(Slot::FfnNorm(i), &vector(&l.ffn_norm))?;
            for (slot, v) in [
                (Slot::PostAttnNorm(i), &l.post_attn_norm),
                (Slot::PostFfnNorm(i), &l.post_ffn_norm),
                (Slot::QNorm(i), &l.q_norm),
                (Slot::KNorm(i), &l.k_norm),
            ] {
                if let Some(v) = v {
                    b.set(slot, &vector(v))?;
                }
            }
            for p in Proj::ALL {
                b.set(Slot::Proj(i, p), l.get(p))?;
            }
        }
        b.finish()
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

    /// `forward` for backends whose read-back must be awaited (WebGPU in a browser).
    pub async fn forward_async(
        &self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut B::Cache,
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        let logits = self.forward_act(tokens, pos0, cache, all_logits)?;
        self.backend.to_host_async(&logits).await
    }

    /// Greedy next token after `tokens`: the argmax runs on the backend, so a GPU decode step
    /// reads back one token id.
    pub fn forward_greedy(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache) -> Result<u32> {
        let logits = self.forward_act(tokens, pos0, cache, false)?;
        self.backend.argmax(&logits)
    }

    /// `forward_greedy` without blocking the thread.
    pub async fn forward_greedy_async(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache) -> Result<u32> {
        let logits = self.forward_act(tokens, pos0, cache, false)?;
        self.backend.argmax_async(&logits).await
    }

    /// `forward_sample` without blocking the thread.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_sample_async(
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
        self.backend.sample_async(&logits, temperature, top_k, top_p, u).await
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

    /// x += y, or x += rmsnorm(y) with a post-norm (`tmp` is scratch of x's shape).
    fn residual(&self, x: &mut B::Act, y: &B::Act, tmp: &mut B::Act, post_norm: Option<&B::Vector>) {
        match post_norm {
            Some(w) => {
                self.backend.rmsnorm(tmp, y, w, self.cfg.rms_eps);
                self.backend.add(x, tmp);
            }
            None => self.backend.add(x, y),
        }
    }

    fn forward_act(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache, all_logits: bool) -> Result<B::Act> {
        let c = &self.cfg;
        let be = &self.backend;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::shape("forward", "no tokens"));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::shape(
                "forward",
                format!("token id {bad} is outside the vocabulary of {}", c.vocab_size),
            ));
        }
        let (h, qd, kvd, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut x = be.act(n, h); // (n, hidden) residual stream
        be.embed(&mut x, &self.embed, tokens);
        if let Some(s) = c.embed_scale {
            be.scale(&mut x, s); // Gemma: embeddings times sqrt(hidden)
        }
        let mut xn = be.act(n, h);
        let (mut q, mut k, mut v) = (be.act(n, qd), be.act(n, kvd), be.act(n, kvd));
        let mut att = be.act(n, qd);
        let mut o = be.act(n, h);
        let (mut g, mut u) = (be.act(n, ff), be.act(n, ff));
        for (li, l) in self.layers.iter().enumerate() {
            // attention block: x += [post-norm] Wo · attn(rope([qk-norm] Wq xn), rope([qk-norm] Wk xn), Wv xn)
            be.rmsnorm(&mut xn, &x, &l.attn_norm, c.rms_eps);
            be.matmul(&mut q, &xn, &l.proj[Proj::Q as usize], &self.loras(li, Proj::Q));
            be.matmul(&mut k, &xn, &l.proj[Proj::K as usize], &self.loras(li, Proj::K));
            be.matmul(&mut v, &xn, &l.proj[Proj::V as usize], &self.loras(li, Proj::V));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                be.rmsnorm_heads(&mut q, qn, c.head_dim, c.rms_eps);
                be.rmsnorm_heads(&mut k, kn, c.head_dim, c.rms_eps);
            }
            let rope = &self.ropes[l.rope];
            be.rope(&mut q, c.num_heads, c.head_dim, pos0, rope);
            be.rope(&mut k, c.num_kv_heads, c.head_dim, pos0, rope);
            be.attention(&mut att, &q, &k, &v, cache, li, pos0, c)?;
            be.matmul(&mut o, &att, &l.proj[Proj::O as usize], &self.loras(li, Proj::O));
            self.residual(&mut x, &o, &mut xn, l.post_attn_norm.as_ref());
            // feed-forward block: x += [post-norm] Wdown (act(Wgate xn) * Wup xn)
            be.rmsnorm(&mut xn, &x, &l.ffn_norm, c.rms_eps);
            be.matmul(&mut g, &xn, &l.proj[Proj::Gate as usize], &self.loras(li, Proj::Gate));
            be.matmul(&mut u, &xn, &l.proj[Proj::Up as usize], &self.loras(li, Proj::Up));
            match c.act {
                Activation::Silu => be.silu_mul(&mut g, &u),
                Activation::GeluTanh => be.gelu_mul(&mut g, &u),
            }
            be.matmul(&mut o, &g, &l.proj[Proj::Down as usize], &self.loras(li, Proj::Down));
            self.residual(&mut x, &o, &mut xn, l.post_ffn_norm.as_ref());
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

struct LayerSlots<B: Backend> {
    attn_norm: Option<B::Vector>,
    ffn_norm: Option<B::Vector>,
    /// post-attention, post-feed-forward, q, k norms (Gemma-3)
    extra: [Option<B::Vector>; 4],
    proj: [Option<B::Weight>; 7],
}

/// Builds a `Model` one tensor at a time, uploading each to the backend as it arrives, so a
/// model streamed from the network is never whole in host memory (the browser's loader).
/// `Model::new` goes through it too: one path checks shapes and places tensors.
pub struct ModelBuilder<B: Backend> {
    backend: B,
    cfg: Config,
    source: String,
    embed: Option<B::Weight>,
    lm_head: Option<B::Weight>,
    norm: Option<B::Vector>,
    /// Grown as layers arrive (never preallocated from a count a file could corrupt).
    layers: Vec<LayerSlots<B>>,
}

impl<B: Backend> ModelBuilder<B> {
    /// `source` names the file in errors.
    pub fn new(backend: B, cfg: Config, source: &str) -> Self {
        ModelBuilder {
            backend,
            cfg,
            source: source.to_string(),
            embed: None,
            lm_head: None,
            norm: None,
            layers: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Check `m` against the config and upload it into `slot`.
    pub fn set(&mut self, slot: Slot, m: &Matrix) -> Result<()> {
        let (rows, cols) = slot.shape(&self.cfg);
        let err = |msg: String| Error::tensor(&self.source, slot.gguf_name(), msg);
        if (m.rows, m.cols) != (rows, cols) && !(rows == 1 && m.rows * m.cols == cols) {
            return Err(err(format!("shape {}x{} contradicts the config (expected {rows}x{cols})", m.rows, m.cols)));
        }
        if !m.ty.can_dequantize() {
            return Err(err(format!("tensor type {:?} is not supported", m.ty)));
        }
        if let Some(l) = slot.layer() {
            if l >= self.cfg.num_layers {
                return Err(err(format!("layer {l} is beyond the config's {} layers", self.cfg.num_layers)));
            }
            while self.layers.len() <= l {
                self.layers.push(LayerSlots {
                    attn_norm: None,
                    ffn_norm: None,
                    extra: Default::default(),
                    proj: Default::default(),
                });
            }
        }
        let vector = |m: &Matrix| self.backend.load_vector(&m.to_f32());
        match slot {
            Slot::Embed => self.embed = Some(self.backend.load_matrix(m)?),
            Slot::LmHead => self.lm_head = Some(self.backend.load_matrix(m)?),
            Slot::Norm => self.norm = Some(vector(m)?),
            Slot::RopeFreqs => self.cfg.rope_freq_factors = Some(m.to_f32()),
            Slot::AttnNorm(l) => self.layers[l].attn_norm = Some(vector(m)?),
            Slot::FfnNorm(l) => self.layers[l].ffn_norm = Some(vector(m)?),
            Slot::PostAttnNorm(l) => self.layers[l].extra[0] = Some(vector(m)?),
            Slot::PostFfnNorm(l) => self.layers[l].extra[1] = Some(vector(m)?),
            Slot::QNorm(l) => self.layers[l].extra[2] = Some(vector(m)?),
            Slot::KNorm(l) => self.layers[l].extra[3] = Some(vector(m)?),
            Slot::Proj(l, p) => self.layers[l].proj[p as usize] = Some(self.backend.load_matrix(m)?),
        }
        Ok(())
    }

    /// The model, once every tensor the config needs has arrived.
    pub fn finish(self) -> Result<Model<B>> {
        let missing = |slot: Slot| Error::tensor(&self.source, slot.gguf_name(), "missing");
        let embed = self.embed.ok_or_else(|| missing(Slot::Embed))?;
        if !self.cfg.tie_embeddings && self.lm_head.is_none() {
            return Err(missing(Slot::LmHead));
        }
        let norm = self.norm.ok_or_else(|| missing(Slot::Norm))?;
        let c = &self.cfg;
        // one RoPE table per distinct frequency set (Gemma-3: local and global layers)
        let mut ropes: Vec<Rope> = Vec::new();
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut slots = self.layers.into_iter();
        for i in 0..c.num_layers {
            let l = slots.next().ok_or_else(|| missing(Slot::AttnNorm(i)))?;
            let proj =
                l.proj.into_iter().enumerate().map(|(pi, w)| w.ok_or_else(|| missing(Slot::Proj(i, Proj::ALL[pi]))));
            let [pa, pf, qn, kn] = l.extra;
            let need = |on: bool, v: Option<B::Vector>, slot: Slot| -> Result<Option<B::Vector>> {
                if on {
                    v.map(Some).ok_or_else(|| missing(slot))
                } else {
                    Ok(None)
                }
            };
            let inv_freq = c.rope_inv_freq_for(i);
            let rope = match ropes.iter().position(|r| r.inv_freq == inv_freq) {
                Some(r) => r,
                None => {
                    ropes.push(Rope { inv_freq, interleaved: c.rope_interleaved });
                    ropes.len() - 1
                }
            };
            layers.push(Layer {
                attn_norm: l.attn_norm.ok_or_else(|| missing(Slot::AttnNorm(i)))?,
                ffn_norm: l.ffn_norm.ok_or_else(|| missing(Slot::FfnNorm(i)))?,
                proj: proj.collect::<Result<_>>()?,
                post_attn_norm: need(c.post_norms, pa, Slot::PostAttnNorm(i))?,
                post_ffn_norm: need(c.post_norms, pf, Slot::PostFfnNorm(i))?,
                q_norm: need(c.qk_norm, qn, Slot::QNorm(i))?,
                k_norm: need(c.qk_norm, kn, Slot::KNorm(i))?,
                rope,
            });
        }
        Ok(Model {
            ropes,
            cfg: self.cfg,
            embed,
            lm_head: self.lm_head,
            norm,
            layers,
            adapters: Vec::new(),
            backend: self.backend,
        })
    }
}
