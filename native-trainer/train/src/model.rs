//! The LLaMA-family forward and backward pass (LLaMA, and Gemma-3's post-norms, QK-norm, GeGLU,
//! scaled embeddings and sliding-window layers) with trainable LoRA pairs on a frozen base, written
//! once over `TrainBackend`. One call handles one sequence; micro-batches and gradient accumulation
//! are loops around it (sequences are never padded, so padding costs nothing and changes nothing).

use super::backend::TrainBackend;
use super::cpu::splitmix;
use vicugna_core::config::{Activation, Config};
use vicugna_core::layer::{LayerSpec, LayerTensors};
use vicugna_core::lora::{LoraAdapter, LoraEntry};
use vicugna_core::weights::{ModelWeights, Proj};
use vicugna_core::{Error, Result};

/// One frozen layer: what it is and what it holds (both from `vicugna_core::layer`, which the
/// inference model reads too).
struct FrozenLayer<B: TrainBackend> {
    spec: LayerSpec,
    t: LayerTensors<B::Buf, B::Frozen>,
}

/// The frozen base on the backend.
pub struct FrozenModel<B: TrainBackend> {
    pub cfg: Config,
    pub be: B,
    embed: B::Frozen,
    lm_head: Option<B::Frozen>,
    norm: B::Buf,
    layers: Vec<FrozenLayer<B>>,
}

/// One trainable pair: A (r, in), B (out, r), their gradients and AdamW moments.
pub struct LoraParam<B: TrainBackend> {
    pub layer: usize,
    pub proj: Proj,
    pub r: usize,
    pub scale: f32,
    pub a: B::Buf,
    pub b: B::Buf,
    pub ga: B::Buf,
    pub gb: B::Buf,
    pub ma: B::Buf,
    pub va: B::Buf,
    pub mb: B::Buf,
    pub vb: B::Buf,
}

/// Every trainable pair, in (layer, projection) order.
pub struct LoraParams<B: TrainBackend> {
    pub params: Vec<LoraParam<B>>,
    index: Vec<Option<usize>>, // layer * 7 + proj
}

impl<B: TrainBackend> LoraParams<B> {
    /// Upload an adapter's pairs (HF RoPE layout) with zero gradients and moments.
    pub fn new(be: &B, cfg: &Config, adapter: &LoraAdapter) -> Result<Self> {
        adapter.check_fits(cfg)?;
        let mut index = vec![None; cfg.num_layers * 7];
        let mut entries: Vec<&LoraEntry> = adapter.entries.iter().collect();
        entries.sort_by_key(|e| (e.layer, e.proj as usize));
        let mut params = Vec::new();
        for e in entries {
            let b = adapter.b_for(e, cfg);
            index[e.layer * 7 + e.proj as usize] = Some(params.len());
            let (na, nb) = (e.a.len(), b.len());
            params.push(LoraParam {
                layer: e.layer,
                proj: e.proj,
                r: e.r,
                scale: e.scale,
                a: be.upload(&e.a),
                b: be.upload(&b),
                ga: be.zeros(na),
                gb: be.zeros(nb),
                ma: be.zeros(na),
                va: be.zeros(na),
                mb: be.zeros(nb),
                vb: be.zeros(nb),
            });
        }
        Ok(LoraParams { params, index })
    }

    fn get(&self, layer: usize, p: Proj) -> Option<&LoraParam<B>> {
        self.index[layer * 7 + p as usize].map(|i| &self.params[i])
    }

    pub fn zero_grad(&mut self, be: &B) {
        for p in &mut self.params {
            be.fill_zero(&mut p.ga);
            be.fill_zero(&mut p.gb);
        }
    }

    pub fn count(&self, be: &B) -> usize {
        self.params.iter().map(|p| be.len(&p.a) + be.len(&p.b)).sum()
    }

    /// The adapter as host tensors (HF RoPE layout, like PEFT).
    pub fn to_entries(&self, be: &B) -> Vec<LoraEntry> {
        self.params
            .iter()
            .map(|p| LoraEntry {
                layer: p.layer,
                proj: p.proj,
                r: p.r,
                scale: p.scale,
                a: be.download(&p.a),
                b: be.download(&p.b),
            })
            .collect()
    }
}

/// Per-sequence options of a training pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// LoRA dropout probability (0 disables it).
    pub dropout: f32,
    /// Key of this sequence's dropout masks (derived from seed, step and position in the batch).
    pub key: u64,
    /// Recompute each layer's activations in the backward pass instead of keeping them.
    pub checkpoint: bool,
}

/// What the backward pass of one projection needs.
struct ProjSaved<B: TrainBackend> {
    /// The dropped-out input of the LoRA branch (None: the projection's input itself).
    xd: Option<B::Buf>,
    /// x·Aᵀ (n, r).
    ax: Option<B::Buf>,
}

struct Saved<B: TrainBackend> {
    xn: B::Buf,
    /// q and k before the QK-norm (Gemma-3).
    q_pre: Option<B::Buf>,
    k_pre: Option<B::Buf>,
    /// The attention and feed-forward outputs before their post-norms (Gemma-3).
    o_att: Option<B::Buf>,
    o_ffn: Option<B::Buf>,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    probs: B::Buf,
    att: B::Buf,
    x1: B::Buf,
    xn2: B::Buf,
    g: B::Buf,
    u: B::Buf,
    h: B::Buf,
    proj: Vec<ProjSaved<B>>, // indexed by Proj
}

impl<B: TrainBackend> FrozenModel<B> {
    pub fn new(be: B, w: &ModelWeights) -> Result<Self> {
        // training runs in the HF RoPE layout, which is PEFT's
        let w = w.with_rope_layout(false);
        let c = &w.cfg;
        let mut layers = Vec::with_capacity(w.layers.len());
        for (li, l) in w.layers.iter().enumerate() {
            let t = l.convert(
                c,
                li,
                |v| Ok(be.upload(v)),
                |m| be.frozen(m),
                |slot| Error::tensor(&w.source, slot.gguf_name(), "missing"),
            )?;
            layers.push(FrozenLayer { spec: LayerSpec::of(c, li), t });
        }
        Ok(FrozenModel {
            cfg: w.cfg.clone(),
            embed: be.frozen(&w.embed)?,
            lm_head: w.lm_head.as_ref().map(|m| be.frozen(m)).transpose()?,
            norm: be.upload(&w.norm),
            layers,
            be,
        })
    }

    /// Bytes of the frozen base on the backend.
    pub fn base_bytes(&self) -> usize {
        let be = &self.be;
        let mut n = be.frozen_bytes(&self.embed) + self.lm_head.as_ref().map_or(0, |w| be.frozen_bytes(w));
        for l in &self.layers {
            n += l.t.proj.iter().map(|w| be.frozen_bytes(w)).sum::<usize>();
        }
        n
    }

    /// y = rmsnorm(x) with a fresh output buffer.
    fn normed(&self, x: &B::Buf, w: &B::Buf, len: usize) -> B::Buf {
        let mut y = self.be.zeros(len);
        self.be.rmsnorm(&mut y, x, w, self.cfg.rms_eps);
        y
    }

    /// The gradient through y = rmsnorm(x): a fresh buffer.
    fn normed_back(&self, dy: &B::Buf, x: &B::Buf, w: &B::Buf, len: usize) -> B::Buf {
        let mut dx = self.be.zeros(len);
        self.be.rmsnorm_back(&mut dx, dy, x, w, self.cfg.rms_eps);
        dx
    }

    /// out = x Wᵀ + s·(drop(x) Aᵀ) Bᵀ.
    #[allow(clippy::too_many_arguments)]
    fn proj_fwd(
        &self,
        out: &mut B::Buf,
        x: &B::Buf,
        li: usize,
        p: Proj,
        lora: &LoraParams<B>,
        n: usize,
        pass: &Pass,
    ) -> ProjSaved<B> {
        let be = &self.be;
        let w = self.layers[li].t.get(p);
        be.linear(out, x, w, n);
        let Some(lp) = lora.get(li, p) else {
            return ProjSaved { xd: None, ax: None };
        };
        let (o, i) = p.shape(&self.cfg);
        let xd = (pass.dropout > 0.0).then(|| {
            let mut d = be.zeros(n * i);
            be.dropout(&mut d, x, pass.dropout, dropout_key(pass.key, li, p));
            d
        });
        let mut ax = be.zeros(n * lp.r);
        be.gemm(&mut ax, xd.as_ref().unwrap_or(x), false, &lp.a, true, n, lp.r, i, 1.0, 0.0);
        be.gemm(out, &ax, false, &lp.b, true, n, o, lp.r, lp.scale, 1.0);
        ProjSaved { xd, ax: Some(ax) }
    }

    /// dx += dy W + the LoRA branch's input gradient; accumulates dA and dB.
    #[allow(clippy::too_many_arguments)]
    fn proj_back(
        &self,
        dx: &mut B::Buf,
        dy: &B::Buf,
        x: &B::Buf,
        saved: &ProjSaved<B>,
        li: usize,
        p: Proj,
        lora: &mut LoraParams<B>,
        n: usize,
        pass: &Pass,
        need_dx: bool,
    ) {
        let be = &self.be;
        if need_dx {
            be.linear_back(dx, dy, self.layers[li].t.get(p), n);
        }
        let Some(idx) = lora.index[li * 7 + p as usize] else {
            return;
        };
        let lp = &mut lora.params[idx];
        let (o, i) = p.shape(&self.cfg);
        let ax = saved.ax.as_ref().expect("LoRA activations saved");
        let xd = saved.xd.as_ref().unwrap_or(x);
        // dB += s·dyᵀ·ax ; d(ax) = s·dy·B ; dA += d(ax)ᵀ·xd ; dx += d(ax)·A (through the mask)
        be.gemm(&mut lp.gb, dy, true, ax, false, o, lp.r, n, lp.scale, 1.0);
        let mut dax = be.zeros(n * lp.r);
        be.gemm(&mut dax, dy, false, &lp.b, false, n, lp.r, o, lp.scale, 0.0);
        be.gemm(&mut lp.ga, &dax, true, xd, false, lp.r, i, n, 1.0, 1.0);
        if !need_dx {
            return;
        }
        if pass.dropout > 0.0 {
            let mut dxd = be.zeros(n * i);
            be.gemm(&mut dxd, &dax, false, &lp.a, false, n, i, lp.r, 1.0, 0.0);
            let mut masked = be.zeros(n * i);
            be.dropout(&mut masked, &dxd, pass.dropout, dropout_key(pass.key, li, p));
            be.add(dx, &masked);
        } else {
            be.gemm(dx, &dax, false, &lp.a, false, n, i, lp.r, 1.0, 1.0);
        }
    }

    fn layer_fwd(&self, x: &mut B::Buf, li: usize, lora: &LoraParams<B>, n: usize, pass: &Pass) -> Saved<B> {
        let (be, c) = (&self.be, &self.cfg);
        let FrozenLayer { spec, t: l } = &self.layers[li];
        let (hd, qd, kvd, ff) = (c.head_dim, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let hs = c.hidden_size;
        let mut xn = be.zeros(n * hs);
        be.rmsnorm(&mut xn, x, &l.attn_norm, c.rms_eps);
        let (mut q, mut k, mut v) = (be.zeros(n * qd), be.zeros(n * kvd), be.zeros(n * kvd));
        let sq = self.proj_fwd(&mut q, &xn, li, Proj::Q, lora, n, pass);
        let sk = self.proj_fwd(&mut k, &xn, li, Proj::K, lora, n, pass);
        let sv = self.proj_fwd(&mut v, &xn, li, Proj::V, lora, n, pass);
        // Gemma-3: per-head RMSNorm of q and k (the norm weight is head_dim long)
        let (mut q_pre, mut k_pre) = (None, None);
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            let (nq, nk) = (self.normed(&q, qn, n * qd), self.normed(&k, kn, n * kvd));
            q_pre = Some(std::mem::replace(&mut q, nq));
            k_pre = Some(std::mem::replace(&mut k, nk));
        }
        be.rope(&mut q, qd, hd, &spec.rope, false);
        be.rope(&mut k, kvd, hd, &spec.rope, false);
        let mut att = be.zeros(n * qd);
        let mut probs = be.zeros(c.num_heads * n * n);
        be.attention(&mut att, &mut probs, &q, &k, &v, n, spec.heads);
        let mut o = be.zeros(n * hs);
        let so = self.proj_fwd(&mut o, &att, li, Proj::O, lora, n, pass);
        let o_att = l.post_attn_norm.as_ref().map(|w| {
            let normed = self.normed(&o, w, n * hs);
            std::mem::replace(&mut o, normed)
        });
        be.add(x, &o);
        let mut x1 = be.zeros(n * hs);
        be.copy(&mut x1, x);
        let mut xn2 = be.zeros(n * hs);
        be.rmsnorm(&mut xn2, x, &l.ffn_norm, c.rms_eps);
        let (mut g, mut u) = (be.zeros(n * ff), be.zeros(n * ff));
        let sg = self.proj_fwd(&mut g, &xn2, li, Proj::Gate, lora, n, pass);
        let su = self.proj_fwd(&mut u, &xn2, li, Proj::Up, lora, n, pass);
        let mut h = be.zeros(n * ff);
        match spec.act {
            Activation::Silu => be.silu_mul(&mut h, &g, &u),
            Activation::GeluTanh => be.gelu_mul(&mut h, &g, &u),
        }
        let sd = self.proj_fwd(&mut o, &h, li, Proj::Down, lora, n, pass);
        let o_ffn = l.post_ffn_norm.as_ref().map(|w| {
            let normed = self.normed(&o, w, n * hs);
            std::mem::replace(&mut o, normed)
        });
        be.add(x, &o);
        Saved {
            xn,
            q_pre,
            k_pre,
            o_att,
            o_ffn,
            q,
            k,
            v,
            probs,
            att,
            x1,
            xn2,
            g,
            u,
            h,
            proj: vec![sq, sk, sv, so, sg, su, sd],
        }
    }

    /// Given dx (gradient w.r.t. the layer's output), replace it by the gradient w.r.t. its
    /// input `x0` and accumulate the LoRA gradients. Without `need_dx` (the first layer: nothing
    /// below it trains) the gradient through q/k/v into x0 is skipped and dx is left partial.
    #[allow(clippy::too_many_arguments)]
    fn layer_back(
        &self,
        dx: &mut B::Buf,
        x0: &B::Buf,
        s: &Saved<B>,
        li: usize,
        lora: &mut LoraParams<B>,
        n: usize,
        pass: &Pass,
        need_dx: bool,
    ) {
        let (be, c) = (&self.be, &self.cfg);
        let FrozenLayer { spec, t: l } = &self.layers[li];
        let (hd, qd, kvd, ff, hs) = (c.head_dim, c.q_dim(), c.kv_dim(), c.intermediate_size, c.hidden_size);
        let sp = |p: Proj| &s.proj[p as usize];
        // feed-forward block (x2 = x1 + [post-norm] down(act(gate) · up)); dx holds dx2 = the
        // residual part of dx1
        let d_ffn = match (&l.post_ffn_norm, &s.o_ffn) {
            (Some(w), Some(o)) => Some(self.normed_back(dx, o, w, n * hs)),
            _ => None,
        };
        let mut dh = be.zeros(n * ff);
        self.proj_back(
            &mut dh,
            d_ffn.as_ref().unwrap_or(dx),
            &s.h,
            sp(Proj::Down),
            li,
            Proj::Down,
            lora,
            n,
            pass,
            true,
        );
        let (mut dg, mut du) = (be.zeros(n * ff), be.zeros(n * ff));
        match spec.act {
            Activation::Silu => be.silu_mul_back(&mut dg, &mut du, &dh, &s.g, &s.u),
            Activation::GeluTanh => be.gelu_mul_back(&mut dg, &mut du, &dh, &s.g, &s.u),
        }
        let mut dxn2 = be.zeros(n * hs);
        self.proj_back(&mut dxn2, &dg, &s.xn2, sp(Proj::Gate), li, Proj::Gate, lora, n, pass, true);
        self.proj_back(&mut dxn2, &du, &s.xn2, sp(Proj::Up), li, Proj::Up, lora, n, pass, true);
        be.rmsnorm_back(dx, &dxn2, &s.x1, &l.ffn_norm, c.rms_eps);
        // attention block (x1 = x0 + [post-norm] o(attn(rope([qk-norm] q), rope([qk-norm] k), v)))
        let d_att = match (&l.post_attn_norm, &s.o_att) {
            (Some(w), Some(o)) => Some(self.normed_back(dx, o, w, n * hs)),
            _ => None,
        };
        let mut datt = be.zeros(n * qd);
        self.proj_back(&mut datt, d_att.as_ref().unwrap_or(dx), &s.att, sp(Proj::O), li, Proj::O, lora, n, pass, true);
        let (mut dq, mut dk, mut dv) = (be.zeros(n * qd), be.zeros(n * kvd), be.zeros(n * kvd));
        be.attention_back(&mut dq, &mut dk, &mut dv, &datt, &s.probs, &s.q, &s.k, &s.v, n, spec.heads);
        be.rope(&mut dq, qd, hd, &spec.rope, true);
        be.rope(&mut dk, kvd, hd, &spec.rope, true);
        if let (Some(qn), Some(kn), Some(qp), Some(kp)) = (&l.q_norm, &l.k_norm, &s.q_pre, &s.k_pre) {
            dq = self.normed_back(&dq, qp, qn, n * qd);
            dk = self.normed_back(&dk, kp, kn, n * kvd);
        }
        let mut dxn = be.zeros(n * hs);
        self.proj_back(&mut dxn, &dq, &s.xn, sp(Proj::Q), li, Proj::Q, lora, n, pass, need_dx);
        self.proj_back(&mut dxn, &dk, &s.xn, sp(Proj::K), li, Proj::K, lora, n, pass, need_dx);
        self.proj_back(&mut dxn, &dv, &s.xn, sp(Proj::V), li, Proj::V, lora, n, pass, need_dx);
        if need_dx {
            be.rmsnorm_back(dx, &dxn, x0, &l.attn_norm, c.rms_eps);
        }
    }

    /// Forward and backward of one sequence: returns the summed cross-entropy of the positions
    /// with a target (`targets[t]` is the token expected after position t, or -1) and adds
    /// `grad_scale` · its gradient to the LoRA gradients.
    pub fn forward_backward(
        &self,
        lora: &mut LoraParams<B>,
        tokens: &[u32],
        targets: &[i32],
        grad_scale: f32,
        pass: &Pass,
    ) -> Result<f64> {
        let (be, c) = (&self.be, &self.cfg);
        let n = tokens.len();
        if n == 0 || targets.len() != n {
            return Err(Error::shape("training pass", format!("{n} tokens but {} targets", targets.len())));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::shape(
                "training pass",
                format!("token id {bad} is outside the vocabulary of {}", c.vocab_size),
            ));
        }
        let hs = c.hidden_size;
        let mut x = be.zeros(n * hs);
        be.embed(&mut x, &self.embed, tokens);
        if let Some(s) = c.embed_scale {
            be.scale(&mut x, s);
        }
        // forward: keep each layer's input, and its activations unless checkpointing
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut saved = Vec::with_capacity(self.layers.len());
        for li in 0..self.layers.len() {
            let mut x0 = be.zeros(n * hs);
            be.copy(&mut x0, &x);
            inputs.push(x0);
            let s = self.layer_fwd(&mut x, li, lora, n, pass);
            saved.push((!pass.checkpoint).then_some(s));
        }
        let mut xf = be.zeros(n * hs);
        be.rmsnorm(&mut xf, &x, &self.norm, c.rms_eps);
        let mut dxf = be.zeros(n * hs);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let loss = be.lm_head_loss(&mut dxf, &xf, head, targets, grad_scale);
        let mut dx = be.zeros(n * hs);
        be.rmsnorm_back(&mut dx, &dxf, &x, &self.norm, c.rms_eps);
        for li in (0..self.layers.len()).rev() {
            let s = match saved[li].take() {
                Some(s) => s,
                None => {
                    let mut t = be.zeros(n * hs);
                    be.copy(&mut t, &inputs[li]);
                    self.layer_fwd(&mut t, li, lora, n, pass)
                }
            };
            self.layer_back(&mut dx, &inputs[li], &s, li, lora, n, pass, li > 0);
        }
        Ok(loss)
    }
}

impl<B: TrainBackend> FrozenModel<B> {
    /// Summed cross-entropy of one sequence, forward only (no dropout, no gradients kept).
    pub fn loss(&self, lora: &LoraParams<B>, tokens: &[u32], targets: &[i32]) -> Result<f64> {
        let (be, c) = (&self.be, &self.cfg);
        let n = tokens.len();
        if n == 0 || targets.len() != n {
            return Err(Error::shape("loss", format!("{n} tokens but {} targets", targets.len())));
        }
        let pass = Pass { dropout: 0.0, key: 0, checkpoint: true };
        let mut x = be.zeros(n * c.hidden_size);
        be.embed(&mut x, &self.embed, tokens);
        if let Some(s) = c.embed_scale {
            be.scale(&mut x, s);
        }
        for li in 0..self.layers.len() {
            self.layer_fwd(&mut x, li, lora, n, &pass);
        }
        let mut xf = be.zeros(n * c.hidden_size);
        be.rmsnorm(&mut xf, &x, &self.norm, c.rms_eps);
        let mut dxf = be.zeros(n * c.hidden_size);
        Ok(be.lm_head_loss(&mut dxf, &xf, self.lm_head.as_ref().unwrap_or(&self.embed), targets, 0.0))
    }
}

fn dropout_key(key: u64, li: usize, p: Proj) -> u64 {
    splitmix(key ^ splitmix((li * 7 + p as usize + 1) as u64))
}
