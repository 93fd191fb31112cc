//! Generation with transformers' semantics: logits processors (repetition penalty, bad-word
//! sequences, min new tokens), warpers (temperature, top-k, top-p), greedy and sampled decoding,
//! beam search (num_beams, length_penalty, early_stopping true/false/"never"), stop strings, and a
//! streaming callback that only ever receives whole UTF-8 characters.

use crate::backend::Backend;
use crate::model::{Model, Pick, Picked};
use crate::prompt::Template;
use crate::sample::{argmax, log_softmax};
pub use crate::sample::{ban_bad_words, repetition_penalty, sample_host, sample_with, top_k, top_p, warp, Rng};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStopping {
    True,
    False,
    Never,
}

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    /// 0 (or do_sample false) means greedy.
    pub temperature: f32,
    pub do_sample: bool,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 1.0 disables.
    pub repetition_penalty: f32,
    pub eos_token_ids: Vec<u32>,
    /// Token sequences that must never be generated (NoBadWordsLogitsProcessor).
    pub bad_words_ids: Vec<Vec<u32>>,
    pub stop_strings: Vec<String>,
    pub num_beams: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub seed: u64,
}

impl GenerationConfig {
    /// Chinese-Vicuna's chat rules on top of these settings: its banned "\n\nUser:" /
    /// "\n\nAssistant:" sequences and the line-start role markers (`prompt::CHAT_ROLE_MARKERS`)
    /// as banned token sequences and as stop strings. Every chat front end (CLI, browser, eval)
    /// calls this.
    pub fn with_chat_rules(mut self, tk: &Tokenizer) -> Result<Self> {
        self.bad_words_ids = crate::prompt::chat_bad_words(tk)?;
        for m in crate::prompt::CHAT_ROLE_MARKERS {
            if !self.stop_strings.iter().any(|s| s == m) {
                self.stop_strings.push(m.to_string());
            }
        }
        Ok(self)
    }
}

/// What a person sets, in every front end (the CLI's flags, the browser's settings panel, an API
/// request), with transformers' defaults. [`GenerationSettings::config`] is the one rule that
/// turns it into a [`GenerationConfig`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GenerationSettings {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 1 = off; Chinese-Vicuna recommends 1.3–2.0.
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    /// 1 = no beam search.
    pub num_beams: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// Stop when the text ends with one of these.
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        let g = GenerationConfig::default();
        GenerationSettings {
            temperature: 0.0,
            top_k: g.top_k,
            top_p: g.top_p,
            repetition_penalty: g.repetition_penalty,
            max_new_tokens: g.max_new_tokens,
            min_new_tokens: g.min_new_tokens,
            num_beams: g.num_beams,
            length_penalty: g.length_penalty,
            early_stopping: g.early_stopping,
            stop: vec![],
            seed: g.seed,
        }
    }
}

impl GenerationSettings {
    /// Sampling only when the temperature is positive; EOS = the model's and the tokenizer's
    /// ids; at least one new token and one beam; for the chat template, Chinese-Vicuna's chat
    /// rules ([`GenerationConfig::with_chat_rules`]).
    pub fn config(&self, tk: &Tokenizer, model_eos: &[u32], template: Template) -> Result<GenerationConfig> {
        let cfg = GenerationConfig {
            max_new_tokens: self.max_new_tokens.max(1),
            min_new_tokens: self.min_new_tokens,
            temperature: self.temperature,
            do_sample: self.temperature > 0.0,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            eos_token_ids: eos_ids(model_eos, tk),
            bad_words_ids: vec![],
            stop_strings: self.stop.clone(),
            num_beams: self.num_beams.max(1),
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
            seed: self.seed,
        };
        match template {
            Template::Chat => cfg.with_chat_rules(tk),
            _ => Ok(cfg),
        }
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 128,
            min_new_tokens: 0,
            temperature: 1.0,
            do_sample: false,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            eos_token_ids: vec![],
            bad_words_ids: vec![],
            stop_strings: vec![],
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            seed: 0,
        }
    }
}

/// End-of-sequence ids: the model's (config/generation config) and the tokenizer's, sorted.
pub fn eos_ids(model_eos: &[u32], tk: &Tokenizer) -> Vec<u32> {
    let mut ids = model_eos.to_vec();
    ids.extend(tk.eos);
    ids.sort();
    ids.dedup();
    ids
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    StopString,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generated {
    /// New token ids (an EOS that ended generation included, as transformers returns it).
    pub ids: Vec<u32>,
    /// Decoded new text (stop string and everything after it removed).
    pub text: String,
    pub stop: StopReason,
    /// Prompt tokens whose keys and values came from a [`PromptCache`] instead of being run.
    pub reused: usize,
}

impl GenerationConfig {
    /// Processors in transformers' order: repetition penalty, bad words, min new tokens.
    pub fn process(&self, scores: &mut [f32], history: &[u32], n_new: usize) {
        repetition_penalty(scores, history, self.repetition_penalty);
        ban_bad_words(scores, history, &self.bad_words_ids);
        if n_new < self.min_new_tokens {
            for &e in &self.eos_token_ids {
                if (e as usize) < scores.len() {
                    scores[e as usize] = f32::NEG_INFINITY;
                }
            }
        }
    }
    /// Sampling warpers in transformers' order: temperature, top-k, top-p.
    pub fn warp(&self, scores: &mut [f32]) {
        warp(scores, self.temperature, self.top_k, self.top_p);
    }
    fn sampling(&self) -> bool {
        self.do_sample && self.temperature > 0.0
    }
}

/// Streams text to `on_text` and watches for stop strings.
struct TextSink<'a, F: FnMut(&str) -> bool> {
    tk: &'a Tokenizer,
    dec: StreamDecoder,
    text: String,
    emitted: usize,
    stops: &'a [String],
    on_text: F,
}

impl<F: FnMut(&str) -> bool> TextSink<'_, F> {
    /// Returns Some(reason) when generation must end.
    fn push(&mut self, id: u32) -> Option<StopReason> {
        let piece = self.dec.push(self.tk.token_bytes(id));
        self.text.push_str(&piece);
        self.flush(false)
    }
    fn flush(&mut self, end: bool) -> Option<StopReason> {
        if let Some(pos) = self.stops.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min()
        {
            self.text.truncate(pos);
            let rest = self.text[self.emitted.min(pos)..].to_string();
            self.emitted = self.text.len();
            (self.on_text)(&rest);
            return Some(StopReason::StopString);
        }
        // hold back a tail that could still grow into a stop string
        let hold = if end { 0 } else { self.stops.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0) };
        let mut upto = self.text.len().saturating_sub(hold).max(self.emitted);
        while !self.text.is_char_boundary(upto) {
            upto -= 1;
        }
        if upto > self.emitted {
            let chunk = self.text[self.emitted..upto].to_string();
            self.emitted = upto;
            if !(self.on_text)(&chunk) {
                return Some(StopReason::Cancelled);
            }
        }
        None
    }
}

/// Generate a continuation of `prompt`. `on_text` receives complete characters as they are
/// produced and returns false to cancel. Beam search streams its best sequence at the end.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tk: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    crate::backend::block_on(generate_async(model, tk, prompt, cfg, on_text))
}

/// `generate` for backends whose read-backs must be awaited (WebGPU in a browser). The same
/// code path: `generate` drives this future on the calling thread.
pub async fn generate_async<B: Backend>(
    model: &Model<B>,
    tk: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    generate_observed_async(model, tk, prompt, cfg, |_| true, on_text).await
}

/// `generate_async` that also reports every new token id to `on_token` as it is chosen (before
/// its text, which may wait for the rest of a character); returning false cancels, as `on_text`
/// returning false does. A chat front end counts tokens/s and stops promptly with it.
pub async fn generate_observed_async<B: Backend>(
    model: &Model<B>,
    tk: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    on_token: impl FnMut(u32) -> bool,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    generate_cached_async(model, tk, prompt, cfg, &mut PromptCache::new(0), on_token, on_text).await
}

/// Keys and values kept from one request to the next on one model, as llama.cpp's server keeps
/// them with `cache_prompt`: a prompt that begins with tokens the cache already holds (the
/// template's preamble, the earlier turns of a chat, the last reply) prefills only the rest.
/// The tokens are compared, not the text, so a history that tokenises differently the second
/// time reuses what still matches. The cache remembers the model's [`Model::state`]: after an
/// adapter is attached, detached or reweighted nothing is reused.
///
/// Reuse changes no result: a position's keys and values depend only on the tokens before it,
/// and every backend computes a row the same way whatever the other rows of its batch are
/// (`tests::a_prompt_cache_changes_no_token` holds the CPU to it, the shaders suite the GPU).
pub struct PromptCache<B: Backend> {
    kv: Option<B::Cache>,
    /// Positions the backend cache was made for.
    made_for: usize,
    /// Positions to make a new cache for, at least (a chat's context; 0: each request's need).
    capacity: usize,
    /// The tokens whose keys and values `kv` holds, at positions 0..ids.len().
    ids: Vec<u32>,
    state: u64,
}

impl<B: Backend> PromptCache<B> {
    /// An empty cache that will hold `capacity` positions (more if a request needs more).
    pub fn new(capacity: usize) -> Self {
        PromptCache { kv: None, made_for: 0, capacity, ids: Vec::new(), state: 0 }
    }

    /// The tokens whose keys and values are held.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    /// Forget what is held (the backend memory is kept for the next request).
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    /// The leading tokens of `ids` whose keys and values are held (none if the model's state
    /// has changed since).
    fn common(&self, model: &Model<B>, ids: &[u32]) -> usize {
        if self.state != model.state() {
            return 0;
        }
        self.ids.iter().zip(ids).take_while(|(a, b)| a == b).count()
    }

    /// How many leading tokens of `prompt` need not be run again: the common prefix with what
    /// is held, at most all but the last token (its logits are needed).
    pub fn reusable(&self, model: &Model<B>, prompt: &[u32]) -> usize {
        self.common(model, prompt).min(prompt.len().saturating_sub(1))
    }

    /// Make room for `need` positions and keep the first `reuse` tokens held (none if a new
    /// backend cache had to be made); the rest are dropped, as their positions are about to be
    /// overwritten. Returns the tokens kept.
    fn prepare(&mut self, model: &Model<B>, reuse: usize, need: usize) -> Result<usize> {
        let mut reuse = reuse;
        if self.kv.is_none() || self.made_for < need {
            let n = need.max(self.capacity);
            self.kv = None; // free the old cache before making the new one
            self.kv = Some(model.new_cache(n)?);
            self.made_for = n;
            reuse = 0;
        }
        self.ids.truncate(reuse);
        self.state = model.state();
        Ok(reuse)
    }

    /// Run the part of `ids` not yet held through the model now, `chunk` tokens per forward
    /// pass, while `go()` says to carry on (asked before each pass), so that a later prompt
    /// beginning with `ids` starts from them: a chat front end prefills its template's preamble
    /// while the user types, and stops as soon as a request arrives. Returns the tokens run.
    pub async fn warm(
        &mut self,
        model: &Model<B>,
        ids: &[u32],
        chunk: usize,
        mut go: impl FnMut() -> bool,
    ) -> Result<usize> {
        let held = self.common(model, ids);
        if held == ids.len() {
            return Ok(0);
        }
        let start = self.prepare(model, held, ids.len())?;
        let mut pos = start;
        while pos < ids.len() && go() {
            let end = (pos + chunk.max(1)).min(ids.len());
            let kv = self.kv.as_mut().expect("prepared");
            model.forward(&ids[pos..end], pos, kv, Pick::Greedy).await?;
            self.ids.extend_from_slice(&ids[pos..end]);
            pos = end;
        }
        Ok(pos - start)
    }
}

/// `generate_observed_async` that starts from the keys and values `cache` holds for the
/// prompt's leading tokens and leaves there what this request computed (prompt and reply),
/// for the next request to start from. `Generated::reused` says how many prompt tokens were
/// not run again. Beam search runs its own caches and leaves `cache` as it was.
#[allow(clippy::too_many_arguments)]
pub async fn generate_cached_async<B: Backend>(
    model: &Model<B>,
    tk: &Tokenizer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    cache: &mut PromptCache<B>,
    mut on_token: impl FnMut(u32) -> bool,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    if prompt.is_empty() {
        return Err(Error::shape("generate", "empty prompt"));
    }
    let mut sink =
        TextSink { tk, dec: StreamDecoder::new(), text: String::new(), emitted: 0, stops: &cfg.stop_strings, on_text };
    let finish = |sink: &mut TextSink<_>, ids: Vec<u32>, mut stop: StopReason, reused: usize| {
        let tail = sink.dec.finish();
        sink.text.push_str(&tail);
        if stop != StopReason::StopString {
            if let Some(r) = sink.flush(true) {
                stop = r;
            }
        }
        Generated { ids, text: sink.text.clone(), stop, reused }
    };
    if cfg.num_beams > 1 {
        let ids = beam_search_async(model, prompt, cfg).await?;
        let mut stop = if ids.last().is_some_and(|t| cfg.eos_token_ids.contains(t)) {
            StopReason::Eos
        } else {
            StopReason::MaxTokens
        };
        for &id in &ids {
            if !on_token(id) {
                stop = StopReason::Cancelled;
                break;
            }
            if cfg.eos_token_ids.contains(&id) {
                break;
            }
            if let Some(r) = sink.push(id) {
                stop = r;
                break;
            }
        }
        return Ok(finish(&mut sink, ids, stop, 0));
    }
    let reused = cache.prepare(model, cache.reusable(model, prompt), prompt.len() + cfg.max_new_tokens)?;
    let PromptCache { kv, ids: held, .. } = cache;
    let kv = kv.as_mut().expect("prepared");
    let mut history = prompt.to_vec();
    // without history-dependent processors the backend picks the token itself (greedy or sampled),
    // so a GPU reads back 4 bytes instead of the logits
    let plain = cfg.repetition_penalty == 1.0 && cfg.bad_words_ids.is_empty();
    // one random stream, drawn once per sampled token whichever path draws it
    let mut rng = Rng::new(cfg.seed);
    let mut next_step = step(model, cfg, plain, &prompt[reused..], reused, 0, kv, &mut rng).await?;
    held.extend_from_slice(&prompt[reused..]);
    let mut out = Vec::new();
    let mut stop = StopReason::MaxTokens;
    while out.len() < cfg.max_new_tokens {
        let next = match next_step {
            Picked::Token(t) => t,
            Picked::Logits(mut logits) => {
                cfg.process(&mut logits, &history, out.len());
                if cfg.sampling() {
                    cfg.warp(&mut logits);
                    sample_with(&logits, rng.next_f32())
                } else {
                    argmax(&logits)
                }
            }
        };
        out.push(next);
        history.push(next);
        if !on_token(next) {
            stop = StopReason::Cancelled;
            break;
        }
        if cfg.eos_token_ids.contains(&next) {
            stop = StopReason::Eos;
            break;
        }
        if let Some(r) = sink.push(next) {
            stop = r;
            break;
        }
        if out.len() == cfg.max_new_tokens {
            break;
        }
        next_step = step(model, cfg, plain, &[next], history.len() - 1, out.len(), kv, &mut rng).await?;
        held.push(next);
    }
    Ok(finish(&mut sink, out, stop, reused))
}

/// One forward step: the backend picks the token itself when no history-dependent processor
/// needs the logits (`plain`), else the logits come back to the host.
#[allow(clippy::too_many_arguments)]
async fn step<B: Backend>(
    model: &Model<B>,
    cfg: &GenerationConfig,
    plain: bool,
    toks: &[u32],
    pos: usize,
    n_new: usize,
    cache: &mut B::Cache,
    rng: &mut Rng,
) -> Result<Picked> {
    let pick = if plain && n_new >= cfg.min_new_tokens {
        if cfg.sampling() {
            Pick::Sample { temperature: cfg.temperature, top_k: cfg.top_k, top_p: cfg.top_p, u: rng.next_f32() }
        } else {
            Pick::Greedy
        }
    } else {
        Pick::LastLogits
    };
    model.forward(toks, pos, cache, pick).await
}

/// transformers' vectorised beam search (`GenerationMixin._beam_search`), one sequence.
pub fn beam_search<B: Backend>(model: &Model<B>, prompt: &[u32], cfg: &GenerationConfig) -> Result<Vec<u32>> {
    crate::backend::block_on(beam_search_async(model, prompt, cfg))
}

/// `beam_search` without blocking the thread on read-backs.
pub async fn beam_search_async<B: Backend>(
    model: &Model<B>,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<u32>> {
    let nb = cfg.num_beams;
    let plen = prompt.len();
    let max_len = plen + cfg.max_new_tokens;
    let keep = 2usize.max(1 + cfg.eos_token_ids.len()) * nb;
    let lp = cfg.length_penalty;
    let es = cfg.early_stopping;
    let mut cache0 = model.new_cache(max_len)?;
    let first = model.forward(prompt, 0, &mut cache0, Pick::LastLogits).await?.logits()?;
    let v = first.len();
    // running beams: sequence, score, cache, last logits
    let mut run_seq: Vec<Vec<u32>> = vec![prompt.to_vec(); nb];
    let mut run_score: Vec<f32> = (0..nb).map(|i| if i == 0 { 0.0 } else { -1e9 }).collect();
    let mut run_cache: Vec<B::Cache> = Vec::with_capacity(nb);
    for _ in 1..nb {
        run_cache.push(model.backend.copy_cache(&cache0)?);
    }
    run_cache.push(cache0);
    let mut run_logits: Vec<Vec<f32>> = vec![first; nb];
    let mut fin_seq: Vec<Vec<u32>> = vec![prompt.to_vec(); nb];
    let mut fin_score: Vec<f32> = vec![-1e9; nb];
    let mut fin_done: Vec<bool> = vec![false; nb];
    let mut unsatisfied = true;
    let mut cur = plen;
    while cur < max_len {
        // accumulated log-probs of every (beam, token) continuation
        let mut acc = Vec::with_capacity(nb * v);
        for b in 0..nb {
            let mut lpb = run_logits[b].clone();
            log_softmax(&mut lpb);
            cfg.process(&mut lpb, &run_seq[b], cur - plen);
            acc.extend(lpb.iter().map(|x| x + run_score[b]));
        }
        // top `keep` candidates, descending (ties: lower index first, as torch.topk on CPU)
        let mut idx: Vec<usize> = (0..acc.len()).collect();
        let kk = keep.min(idx.len());
        idx.select_nth_unstable_by(kk - 1, |&a, &b| {
            acc[b].partial_cmp(&acc[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        idx.truncate(kk);
        idx.sort_by(|&a, &b| acc[b].partial_cmp(&acc[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        let cand: Vec<(usize, u32, f32, bool)> = idx
            .iter()
            .map(|&i| {
                let tok = (i % v) as u32;
                let hits = cfg.eos_token_ids.contains(&tok) || cur + 1 >= max_len;
                (i / v, tok, acc[i], hits)
            })
            .collect();
        // next running beams: best non-finishing candidates
        let mut order: Vec<usize> = (0..cand.len()).collect();
        let pen = |c: &(usize, u32, f32, bool)| c.2 + if c.3 { -1e9 } else { 0.0 };
        order.sort_by(|&a, &b| {
            pen(&cand[b]).partial_cmp(&pen(&cand[a])).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        // finished-beam update
        let all_done = fin_done.iter().all(|&d| d);
        let denom = ((cur + 1 - plen) as f32).powf(lp);
        let mut merged: Vec<(Vec<u32>, f32, bool)> =
            (0..nb).map(|i| (fin_seq[i].clone(), fin_score[i], fin_done[i])).collect();
        for (i, c) in cand.iter().enumerate() {
            let just = c.3 && i < nb;
            let mut s = c.2 / denom;
            if all_done && es == EarlyStopping::True {
                s += -1e9;
            }
            if !unsatisfied {
                s += -1e9;
            }
            if !just {
                s += -1e9;
            }
            let mut seq = run_seq[c.0].clone();
            seq.push(c.1);
            merged.push((seq, s, just));
        }
        let mut mo: Vec<usize> = (0..merged.len()).collect();
        mo.sort_by(|&a, &b| merged[b].1.partial_cmp(&merged[a].1).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        let newfin: Vec<_> = mo[..nb].iter().map(|&i| merged[i].clone()).collect();
        for (i, (s, sc, d)) in newfin.into_iter().enumerate() {
            fin_seq[i] = s;
            fin_score[i] = sc;
            fin_done[i] = d;
        }
        let valid = !cand.iter().all(|c| c.3);
        // advance running beams (reorder caches), then the early-stop heuristic
        let chosen: Vec<(usize, u32, f32)> =
            order[..nb].iter().map(|&i| (cand[i].0, cand[i].1, pen(&cand[i]))).collect();
        cur += 1;
        let best_len = if es == EarlyStopping::Never && lp > 0.0 { max_len - plen } else { cur - plen };
        let best_running = chosen[0].2 / (best_len as f32).powf(lp);
        let worst_fin = fin_score.iter().cloned().fold(f32::INFINITY, f32::min);
        unsatisfied = unsatisfied && fin_done.iter().any(|&d| best_running > if d { worst_fin } else { -1e9 });
        let exists_open = !(fin_done.iter().all(|&d| d) && es == EarlyStopping::True);
        if !(unsatisfied && exists_open && valid) || cur >= max_len {
            break;
        }
        let (mut ns, mut nsc, mut nc, mut nl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &(b, tok, sc) in &chosen {
            let mut seq = run_seq[b].clone();
            seq.push(tok);
            let mut cache = model.backend.copy_cache(&run_cache[b])?;
            let l = model.forward(&[tok], cur - 1, &mut cache, Pick::LastLogits).await?.logits()?;
            ns.push(seq);
            nsc.push(sc);
            nc.push(cache);
            nl.push(l);
        }
        run_seq = ns;
        run_score = nsc;
        run_cache = nc;
        run_logits = nl;
    }
    Ok(fin_seq[0][plen..].to_vec())
}
