//! Sampling on the host: transformers' logits processors and warpers (repetition penalty, bad
//! words, temperature, top-k, top-p), the draw from the resulting distribution, and the seedable
//! generator. A leaf module: it depends on nothing else in the crate but `random`, so the backends (whose
//! `sample` must agree with [`sample_host`]) and `generate` both use it without a cycle.

/// The seedable generator of the sampler (SplitMix64; small, identical on every platform).
pub use crate::random::Rng;

/// RepetitionPenaltyLogitsProcessor: every token already in `history` is penalised once.
pub fn repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &t in history {
        let t = t as usize;
        if t < scores.len() && !seen[t] {
            seen[t] = true;
            let s = scores[t];
            scores[t] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// NoBadWordsLogitsProcessor: ban the last token of each sequence whose prefix ends `history`.
pub fn ban_bad_words(scores: &mut [f32], history: &[u32], bad: &[Vec<u32>]) {
    for seq in bad {
        let Some((&last, prefix)) = seq.split_last() else {
            continue;
        };
        if history.ends_with(prefix) && (last as usize) < scores.len() {
            scores[last as usize] = f32::NEG_INFINITY;
        }
    }
}

/// TopKLogitsWarper: keep every score >= the k-th largest.
pub fn top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut v = scores.to_vec();
    v.select_nth_unstable_by(k - 1, |a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let kth = v[k - 1];
    for s in scores.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// TopPLogitsWarper: drop the low tail whose cumulative probability is <= 1 - p (keep >= 1).
pub fn top_p(scores: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // ascending, as transformers sorts
    idx.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(std::cmp::Ordering::Equal));
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = idx.iter().map(|&i| (scores[i] - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut cum = 0f32;
    let n = idx.len();
    let mut remove = Vec::new();
    for (j, &i) in idx.iter().enumerate() {
        cum += exps[j] / sum;
        if cum <= 1.0 - p && j < n - 1 {
            remove.push(i);
        }
    }
    for i in remove {
        scores[i] = f32::NEG_INFINITY;
    }
}

pub(crate) fn log_softmax(v: &mut [f32]) {
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + v.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    v.iter_mut().for_each(|x| *x -= lse);
}

pub(crate) fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold(0usize, |b, (i, &x)| if x > v[b] { i } else { b }) as u32
}

/// Sampling warpers in transformers' order: temperature, top-k, top-p.
pub fn warp(scores: &mut [f32], temperature: f32, k: usize, p: f32) {
    if temperature != 1.0 && temperature > 0.0 {
        scores.iter_mut().for_each(|s| *s /= temperature);
    }
    top_k(scores, k);
    top_p(scores, p);
}

/// Draw from softmax(scores) with the uniform `u` in [0, 1): walk the vocabulary in index order.
pub fn sample_with(scores: &[f32], u: f32) -> u32 {
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    let mut r = u * sum;
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 && *p > 0.0 {
            return i as u32;
        }
    }
    argmax(scores)
}

/// Temperature, top-k and top-p (transformers' order), then a draw with `u`: the host path every
/// backend's `Backend::sample` must agree with.
pub fn sample_host(logits: &mut [f32], temperature: f32, k: usize, p: f32, u: f32) -> u32 {
    warp(logits, temperature, k, p);
    sample_with(logits, u)
}

#[cfg(test)]
mod tests {
    /// The backends sample through this leaf, not through `generate` (which imports the backend
    /// trait): no module cycle. Checked on the source, so a new `use` that brings one back fails.
    #[test]
    fn sampling_is_a_leaf_and_the_backend_does_not_reach_into_generate() {
        let code = |src: &str| -> String {
            src.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
        };
        let backend = code(include_str!("backend.rs"));
        assert!(!backend.contains(concat!("generate", "::")), "backend.rs names something from generate");
        let this = code(include_str!("sample.rs"));
        let this = &this[..this.find(concat!("#[cfg(", "test)]")).unwrap_or(this.len())];
        // only the generator, itself a leaf
        let other = this.matches(concat!("crate", "::")).count() - this.matches(concat!("crate", "::random::")).count();
        assert_eq!(other, 0, "sample.rs depends on another module of the crate");
        let random = code(include_str!("random.rs"));
        assert!(!random.contains(concat!("crate", "::")), "random.rs depends on another module of the crate");
    }

    #[test]
    fn host_sampling_is_the_config_warp_then_the_draw() {
        let logits = [0.5f32, 2.0, -1.0, 1.5, 0.0];
        let mut a = logits.to_vec();
        let t = super::sample_host(&mut a, 0.7, 3, 0.9, 0.42);
        let mut b = logits.to_vec();
        crate::generate::GenerationConfig { temperature: 0.7, top_k: 3, top_p: 0.9, ..Default::default() }.warp(&mut b);
        assert_eq!(a, b);
        assert_eq!(t, super::sample_with(&b, 0.42));
    }
}
