//! The LLaMA-family transformer, written once over `Backend`.

use crate::backend::{Backend, LoraPair};
use crate::config::{Activation, Config};
use crate::layer::{LayerSpec, LayerTensors, Norm};
use crate::lora::LoraAdapter;
pub use crate::tensors::Slot;
use crate::weights::{Matrix, ModelWeights, Proj};
use crate::{Error, Result};

/// What a forward step returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pick {
    /// Logits of every position (n_tokens × vocab).
    AllLogits,
    /// Logits of the last position (vocab).
    LastLogits,
    /// The last position's argmax, chosen on the backend.
    Greedy,
    /// A draw from the last position, on the backend: temperature, top-k, top-p, then the uniform `u`.
    Sample { temperature: f32, top_k: usize, top_p: f32, u: f32 },
}

/// What `Model::forward` picked.
#[derive(Clone, Debug, PartialEq)]
pub enum Picked {
    Logits(Vec<f32>),
    Token(u32),
}

impl Picked {
    pub fn logits(self) -> Result<Vec<f32>> {
        match self {
            Picked::Logits(l) => Ok(l),
            Picked::Token(_) => Err(Error::Invalid("forward picked a token; ask for logits".into())),
        }
    }
    pub fn token(self) -> Result<u32> {
        match self {
            Picked::Token(t) => Ok(t),
            Picked::Logits(_) => Err(Error::Invalid("forward returned logits; ask for a token".into())),
        }
    }
}

/// One layer on the backend: what it is and what it holds (both from `core::layer`).
struct Layer<B: Backend> {
    spec: LayerSpec,
    t: LayerTensors<B::Vector, B::Weight>,
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
    adapters: Vec<Attached<B>>,
    /// Changes whenever what the model computes changes (a new model, an adapter attached,
    /// detached or reweighted): keys and values kept under another state are stale.
    state: u64,
}

/// A fresh value for `Model::state`, unique in this process.
fn next_state() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<B: Backend> Model<B> {
    pub fn new(backend: B, w: &ModelWeights) -> Result<Self> {
        let mut b = ModelBuilder::new(backend, w.cfg.clone(), &w.source);
        b.set(Slot::Embed, &w.embed)?;
        if let Some(h) = &w.lm_head {
            b.set(Slot::LmHead, h)?;
        }
        b.set(Slot::Norm, &Matrix::from_f32(1, w.norm.len(), w.norm.clone()))?;
        for (i, l) in w.layers.iter().enumerate() {
            for (n, v) in l.norms() {
                b.set(n.slot(i), &Matrix::from_f32(1, v.len(), v.clone()))?;
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
        self.state = next_state();
        Ok(())
    }

    pub fn detach(&mut self, name: &str) -> bool {
        let n = self.adapters.len();
        self.adapters.retain(|a| a.name != name);
        let removed = n != self.adapters.len();
        if removed {
            self.state = next_state();
        }
        removed
    }

    pub fn set_adapter_weight(&mut self, name: &str, weight: f32) -> Result<()> {
        let a = self
            .adapters
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::Invalid(format!("no adapter named `{name}` is attached")))?;
        if a.weight != weight {
            a.weight = weight;
            self.state = next_state();
        }
        Ok(())
    }

    /// An id of what the model computes: equal ids mean the same weights, adapters and
    /// adapter weights, so keys and values computed under one are valid under the other
    /// (`generate::PromptCache` checks it).
    pub fn state(&self) -> u64 {
        self.state
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

    /// Run `tokens` at positions pos0.. through the model, extending `cache`, and return what
    /// `pick` asks for: logits (every position's or the last's) or a token chosen on the backend
    /// (a GPU decode step then reads back 4 bytes). Async because a browser's GPU read-back is;
    /// [`Model::forward_blocking`] is the native wrapper.
    pub async fn forward(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache, pick: Pick) -> Result<Picked> {
        let logits = self.forward_act(tokens, pos0, cache, matches!(pick, Pick::AllLogits))?;
        let be = &self.backend;
        Ok(match pick {
            Pick::AllLogits | Pick::LastLogits => Picked::Logits(be.read(&logits).await?),
            Pick::Greedy => Picked::Token(be.argmax(&logits).await?),
            Pick::Sample { temperature, top_k, top_p, u } => {
                Picked::Token(be.sample(&logits, temperature, top_k, top_p, u).await?)
            }
        })
    }

    /// `forward` on this thread (native backends; in a browser it is an error).
    pub fn forward_blocking(&self, tokens: &[u32], pos0: usize, cache: &mut B::Cache, pick: Pick) -> Result<Picked> {
        crate::backend::blocking(self.forward(tokens, pos0, cache, pick))
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
        for (li, Layer { spec, t: l }) in self.layers.iter().enumerate() {
            // attention block: x += [post-norm] Wo · attn(rope([qk-norm] Wq xn), rope([qk-norm] Wk xn), Wv xn)
            be.rmsnorm(&mut xn, &x, &l.attn_norm, c.rms_eps);
            be.matmul(&mut q, &xn, l.get(Proj::Q), &self.loras(li, Proj::Q));
            be.matmul(&mut k, &xn, l.get(Proj::K), &self.loras(li, Proj::K));
            be.matmul(&mut v, &xn, l.get(Proj::V), &self.loras(li, Proj::V));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                be.rmsnorm_heads(&mut q, qn, c.head_dim, c.rms_eps);
                be.rmsnorm_heads(&mut k, kn, c.head_dim, c.rms_eps);
            }
            be.rope(&mut q, c.num_heads, c.head_dim, pos0, &spec.rope);
            be.rope(&mut k, c.num_kv_heads, c.head_dim, pos0, &spec.rope);
            be.attention(&mut att, &q, &k, &v, cache, li, pos0, &spec.heads)?;
            be.matmul(&mut o, &att, l.get(Proj::O), &self.loras(li, Proj::O));
            self.residual(&mut x, &o, &mut xn, l.post_attn_norm.as_ref());
            // feed-forward block: x += [post-norm] Wdown (act(Wgate xn) * Wup xn)
            be.rmsnorm(&mut xn, &x, &l.ffn_norm, c.rms_eps);
            be.matmul(&mut g, &xn, l.get(Proj::Gate), &self.loras(li, Proj::Gate));
            be.matmul(&mut u, &xn, l.get(Proj::Up), &self.loras(li, Proj::Up));
            match spec.act {
                Activation::Silu => be.silu_mul(&mut g, &u),
                Activation::GeluTanh => be.gelu_mul(&mut g, &u),
            }
            be.matmul(&mut o, &g, l.get(Proj::Down), &self.loras(li, Proj::Down));
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

/// A layer's tensors as they arrive, indexed by `Norm` and `Proj`.
struct LayerSlots<B: Backend> {
    norms: [Option<B::Vector>; 6],
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
                self.layers.push(LayerSlots { norms: Default::default(), proj: Default::default() });
            }
        }
        let vector = |m: &Matrix| self.backend.load_vector(&m.to_f32());
        match slot {
            Slot::Embed => self.embed = Some(self.backend.load_matrix(m)?),
            Slot::LmHead => self.lm_head = Some(self.backend.load_matrix(m)?),
            Slot::Norm => self.norm = Some(vector(m)?),
            Slot::RopeFreqs => self.cfg.rope_freq_factors = Some(m.to_f32()),
            Slot::AttnNorm(l) => self.layers[l].norms[Norm::Attn as usize] = Some(vector(m)?),
            Slot::FfnNorm(l) => self.layers[l].norms[Norm::Ffn as usize] = Some(vector(m)?),
            Slot::PostAttnNorm(l) => self.layers[l].norms[Norm::PostAttn as usize] = Some(vector(m)?),
            Slot::PostFfnNorm(l) => self.layers[l].norms[Norm::PostFfn as usize] = Some(vector(m)?),
            Slot::QNorm(l) => self.layers[l].norms[Norm::Q as usize] = Some(vector(m)?),
            Slot::KNorm(l) => self.layers[l].norms[Norm::K as usize] = Some(vector(m)?),
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
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut slots = self.layers.into_iter();
        for i in 0..c.num_layers {
            let mut l = slots.next().ok_or_else(|| missing(Slot::AttnNorm(i)))?;
            let t = LayerTensors::assemble(
                c,
                i,
                |n| Ok(l.norms[n as usize].take()),
                |p| Ok(l.proj[p as usize].take()),
                missing,
            )?;
            layers.push(Layer { spec: LayerSpec::of(c, i), t });
        }
        Ok(Model {
            cfg: self.cfg,
            embed,
            lm_head: self.lm_head,
            norm,
            layers,
            adapters: Vec::new(),
            state: next_state(),
            backend: self.backend,
        })
    }
}
