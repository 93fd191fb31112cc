//! Random matrices and models for tests and benchmarks, built once from [`crate::random::Rng`]:
//! any stored type, any architecture the config describes (the layer's tensors come from
//! `core::layer`, so a Gemma-3 config gets its extra norms without the caller listing them).

use crate::config::Config;
use crate::layer::LayerTensors;
use crate::quant::GgmlType;
use crate::random::Rng;
use crate::tensors::Slot;
use crate::weights::{Matrix, ModelWeights};

/// A (rows, cols) matrix of `ty` with values uniform in (-scale, scale), quantised a block of rows
/// at a time (never the whole matrix as f32). Types we cannot quantise get [`random_blocks`].
pub fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize, scale: f32) -> Matrix {
    if ty == GgmlType::F32 {
        return Matrix::from_f32(rows, cols, rng.vec(rows * cols, scale));
    }
    if !ty.can_quantize() {
        return random_blocks(rng, ty, rows, cols);
    }
    let mut data = Vec::with_capacity(ty.row_bytes(cols) * rows);
    for r0 in (0..rows).step_by(256) {
        let n = 256.min(rows - r0);
        let m = Matrix::from_f32(n, cols, rng.vec(n * cols, scale)).convert(ty).expect("cols fit the block size");
        data.extend_from_slice(&m.data);
    }
    Matrix { ty, rows, cols, data: crate::Bytes::from_vec(data) }
}

/// A (rows, cols) matrix of a block-quantised `ty` made of random bytes with its f16 scales kept
/// small (|d| < 2^-5), so every block is valid and values stay O(1): fast enough for 7B shapes,
/// and the only way to get K-quant blocks without a K-quantiser.
pub fn random_blocks(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Matrix {
    let scales: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => panic!("random {ty:?} blocks: no scale layout known (use a type random_matrix quantises)"),
    };
    let mut data = vec![0u8; ty.row_bytes(cols) * rows];
    for c in data.chunks_mut(8) {
        let z = rng.next_u64().to_le_bytes();
        c.copy_from_slice(&z[..c.len()]);
    }
    for blk in data.chunks_exact_mut(ty.block_bytes()) {
        for &i in scales {
            blk[i + 1] &= 0x23; // the f16's high byte: |d| < 2^-5
        }
    }
    Matrix { ty, rows, cols, data: crate::Bytes::from_vec(data) }
}

/// A model of `cfg`'s shape: every matrix from `matrix(rng, slot, rows, cols)`, every norm the
/// config has uniform in (1 - norm_jitter, 1 + norm_jitter), an untied head unless the config
/// ties it.
pub fn random_weights(
    cfg: &Config,
    rng: &mut Rng,
    norm_jitter: f32,
    mut matrix: impl FnMut(&mut Rng, Slot, usize, usize) -> Matrix,
    source: &str,
) -> ModelWeights {
    let mut mat = |rng: &mut Rng, slot: Slot| {
        let (r, c) = slot.shape(cfg);
        matrix(rng, slot, r, c)
    };
    let embed = mat(rng, Slot::Embed);
    let layers = (0..cfg.num_layers)
        .map(|i| {
            // one generator for both closures: norms first, then projections
            let rng = std::cell::RefCell::new(&mut *rng);
            LayerTensors::assemble(
                cfg,
                i,
                |n| Ok::<_, ()>(Some(rng.borrow_mut().norm(n.len(cfg), norm_jitter))),
                |p| Ok(Some(mat(&mut rng.borrow_mut(), Slot::Proj(i, p)))),
                |_| (),
            )
            .expect("every tensor generated")
        })
        .collect();
    let norm = rng.norm(cfg.hidden_size, norm_jitter);
    let lm_head = (!cfg.tie_embeddings).then(|| mat(rng, Slot::LmHead));
    ModelWeights { cfg: cfg.clone(), embed, layers, norm, lm_head, source: source.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_models_have_the_configs_tensors() {
        let mut c = Config {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 16,
            tie_embeddings: false,
            ..Config::llama_defaults()
        };
        c.qk_norm = true;
        let mut rng = Rng::new(1);
        let w = random_weights(&c, &mut rng, 0.1, |rng, _, r, k| random_matrix(rng, GgmlType::Q8_0, r, k, 0.5), "t");
        assert_eq!(w.layers.len(), 2);
        assert!(w.layers[1].q_norm.as_ref().is_some_and(|v| v.len() == 16));
        assert!(w.layers[1].post_attn_norm.is_none());
        assert!(w.lm_head.is_some());
        assert!(w.layers[0].attn_norm.iter().all(|v| (0.9..1.1).contains(v)));
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K] {
            let m = random_blocks(&mut rng, ty, 4, 256);
            assert!(m.to_f32().iter().all(|v| v.is_finite() && v.abs() < 64.0), "{ty:?}");
        }
    }
}
