//! Finite-difference checks of every backward operation of the CPU training backend, and of the
//! whole model's LoRA gradients (with and without dropout and gradient checkpointing, on F32
//! and Q4_0 bases).

use super::backend::{Heads, Rope, TrainBackend};
use super::cpu::{uniform, CpuTrain};
use super::model::{FrozenModel, LoraParams, Pass};
use vicugna_core::weights::Matrix;

const BE: CpuTrain = CpuTrain;

fn rand(n: usize, key: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (uniform(key, i as u64) * 2.0 - 1.0) * scale).collect()
}

/// L(x) = Σ c_i f(x)_i in f64.
fn proj(out: &[f32], c: &[f32]) -> f64 {
    out.iter().zip(c).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Compare `grad` with central differences of `f` at every coordinate of x (or `max` of them).
fn check(name: &str, x: &[f32], grad: &[f32], h: f32, f: &dyn Fn(&[f32]) -> f64) {
    let step = (x.len() / 40).max(1);
    let mut worst = 0f64;
    // f32 noise in f(x±h) is absolute, so tiny components are judged against the tensor's scale
    let floor = 1e-3f64.max(1e-2 * grad.iter().fold(0f64, |m, g| m.max(g.abs() as f64)));
    for i in (0..x.len()).step_by(step) {
        let mut xp = x.to_vec();
        xp[i] += h;
        let mut xm = x.to_vec();
        xm[i] -= h;
        let fd = (f(&xp) - f(&xm)) / (2.0 * h as f64);
        let g = grad[i] as f64;
        let err = (fd - g).abs() / (floor + g.abs().max(fd.abs()));
        worst = worst.max(err);
        assert!(err < 2e-2, "{name}[{i}]: analytic {g:.6e} vs finite difference {fd:.6e}");
    }
    eprintln!("{name}: worst relative error {worst:.2e}");
}

#[test]
fn linear_back_matches_finite_differences_f32_and_q4_0() {
    let (n, i, o) = (3, 64, 40);
    let w = rand(o * i, 1, 0.5);
    let x = rand(n * i, 2, 1.0);
    let c = rand(n * o, 3, 1.0);
    for ty in [vicugna_core::quant::GgmlType::F32, vicugna_core::quant::GgmlType::Q4_0] {
        let m = Matrix::from_f32(o, i, w.clone()).convert(ty).unwrap();
        let fw = BE.frozen(&m).unwrap();
        let f = |x: &[f32]| {
            let mut out = vec![0f32; n * o];
            BE.linear(&mut out, &x.to_vec(), &fw, n);
            proj(&out, &c)
        };
        let mut dx = vec![0f32; n * i];
        BE.linear_back(&mut dx, &c, &fw, n);
        check(&format!("linear_back {ty:?}"), &x, &dx, 1e-2, &f);
    }
}

#[test]
fn gemm_transposes_agree_with_naive_products() {
    let (m, n, k) = (5, 7, 3);
    let a = rand(m * k, 4, 1.0);
    let b = rand(k * n, 5, 1.0);
    let naive: Vec<f32> = (0..m * n).map(|ij| (0..k).map(|l| a[ij / n * k + l] * b[l * n + ij % n]).sum()).collect();
    let tr = |v: &[f32], r: usize, c: usize| -> Vec<f32> { (0..r * c).map(|ij| v[(ij % r) * c + ij / r]).collect() };
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let aa = if ta { tr(&a, m, k) } else { a.clone() };
        let bb = if tb { tr(&b, k, n) } else { b.clone() };
        let mut c = vec![1f32; m * n];
        BE.gemm(&mut c, &aa, ta, &bb, tb, m, n, k, 2.0, 0.5);
        for j in 0..m * n {
            assert!((c[j] - (0.5 + 2.0 * naive[j])).abs() < 1e-5, "ta={ta} tb={tb} [{j}]");
        }
    }
}

#[test]
fn rmsnorm_back_matches_finite_differences() {
    let (n, d) = (3, 32);
    let x = rand(n * d, 6, 1.0);
    let w = rand(d, 7, 1.0).iter().map(|v| 1.0 + v).collect::<Vec<_>>();
    let c = rand(n * d, 8, 1.0);
    let f = |x: &[f32]| {
        let mut out = vec![0f32; n * d];
        BE.rmsnorm(&mut out, &x.to_vec(), &w, 1e-5);
        proj(&out, &c)
    };
    let mut dx = vec![0f32; n * d];
    BE.rmsnorm_back(&mut dx, &c, &x, &w, 1e-5);
    check("rmsnorm_back", &x, &dx, 1e-2, &f);
}

#[test]
fn rope_inverse_is_the_backward_pass() {
    let (n, hd, heads) = (5, 16, 2);
    let inv_freq: Vec<f32> = (0..hd / 2).map(|i| 10000f32.powf(-2.0 * i as f32 / hd as f32)).collect();
    for inter in [false, true] {
        let rope = Rope { inv_freq: inv_freq.clone(), interleaved: inter };
        let x = rand(n * hd * heads, 9, 1.0);
        let c = rand(n * hd * heads, 10, 1.0);
        let f = |x: &[f32]| {
            let mut y = x.to_vec();
            BE.rope(&mut y, hd * heads, hd, &rope, false);
            proj(&y, &c)
        };
        let mut g = c.clone();
        BE.rope(&mut g, hd * heads, hd, &rope, true);
        check(&format!("rope interleaved={inter}"), &x, &g, 1e-2, &f);
    }
}

#[test]
fn attention_back_matches_finite_differences_with_gqa() {
    for h in [
        Heads::plain(4, 2, 8),
        // Gemma-3's local layers: their own query scale and a sliding window shorter than the rows
        Heads { n_heads: 4, n_kv_heads: 2, head_dim: 8, scale: 0.3, window: Some(3) },
    ] {
        attention_case(h);
    }
}

fn attention_case(h: Heads) {
    let n = 5;
    let (qw, kw) = (32, 16);
    let q = rand(n * qw, 11, 1.0);
    let k = rand(n * kw, 12, 1.0);
    let v = rand(n * kw, 13, 1.0);
    let c = rand(n * qw, 14, 1.0);
    let run = |q: &[f32], k: &[f32], v: &[f32]| {
        let mut out = vec![0f32; n * qw];
        let mut p = vec![0f32; 4 * n * n];
        BE.attention(&mut out, &mut p, &q.to_vec(), &k.to_vec(), &v.to_vec(), n, h);
        (out, p)
    };
    let (_, probs) = run(&q, &k, &v);
    let (mut dq, mut dk, mut dv) = (vec![0f32; n * qw], vec![0f32; n * kw], vec![0f32; n * kw]);
    BE.attention_back(&mut dq, &mut dk, &mut dv, &c, &probs, &q, &k, &v, n, h);
    if h.window.is_some() {
        // row 4 sees rows 2..=4 only
        assert!(probs[4 * n..4 * n + 2].iter().all(|&p| p == 0.0), "outside the window");
        assert!((probs[4 * n + 2..5 * n].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    check("attention dq", &q, &dq, 1e-2, &|x| proj(&run(x, &k, &v).0, &c));
    check("attention dk", &k, &dk, 1e-2, &|x| proj(&run(&q, x, &v).0, &c));
    check("attention dv", &v, &dv, 1e-2, &|x| proj(&run(&q, &k, x).0, &c));
}

type Gated = fn(&CpuTrain, &mut Vec<f32>, &Vec<f32>, &Vec<f32>);
type GatedBack = fn(&CpuTrain, &mut Vec<f32>, &mut Vec<f32>, &Vec<f32>, &Vec<f32>, &Vec<f32>);

/// out = act(g) · u and its backward, against finite differences in g and u.
fn gated_case(name: &str, fwd: Gated, back: GatedBack, key: u64, g_scale: f32) {
    let n = 48;
    let g = rand(n, key, g_scale);
    let u = rand(n, key + 1, 2.0);
    let c = rand(n, key + 2, 1.0);
    let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
    back(&BE, &mut dg, &mut du, &c, &g, &u);
    let run = |g: &[f32], u: &[f32]| {
        let mut o = vec![0f32; n];
        fwd(&BE, &mut o, &g.to_vec(), &u.to_vec());
        proj(&o, &c)
    };
    check(&format!("{name} dg"), &g, &dg, 1e-2, &|x| run(x, &u));
    check(&format!("{name} du"), &u, &du, 1e-2, &|x| run(&g, x));
}

#[test]
fn silu_mul_back_matches_finite_differences() {
    gated_case("silu_mul", CpuTrain::silu_mul, CpuTrain::silu_mul_back, 15, 3.0);
}

#[test]
fn gelu_mul_back_matches_finite_differences() {
    gated_case("gelu_mul", CpuTrain::gelu_mul, CpuTrain::gelu_mul_back, 25, 4.0);
}

#[test]
fn lm_head_loss_gradient_matches_finite_differences() {
    let (n, d, vocab) = (4, 16, 70);
    let w = BE.frozen(&Matrix::from_f32(vocab, d, rand(vocab * d, 18, 1.0))).unwrap();
    let x = rand(n * d, 19, 1.0);
    let targets = [5, -1, 69, 0];
    let f = |x: &[f32]| {
        let mut dx = vec![0f32; n * d];
        BE.lm_head_loss(&mut dx, &x.to_vec(), &w, &targets, 0.0)
    };
    let mut dx = vec![0f32; n * d];
    let loss = BE.lm_head_loss(&mut dx, &x, &w, &targets, 1.0);
    assert!(loss > 0.0 && dx[d..2 * d].iter().all(|&v| v == 0.0), "untargeted row has no gradient");
    check("lm_head_loss", &x, &dx, 1e-2, &f);
}

#[test]
fn dropout_is_keyed_scaled_and_its_own_backward() {
    let x = vec![1f32; 10_000];
    let mut a = vec![0f32; x.len()];
    let mut b = vec![0f32; x.len()];
    BE.dropout(&mut a, &x, 0.25, 7);
    BE.dropout(&mut b, &x, 0.25, 7);
    assert_eq!(a, b, "same key, same mask");
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / x.len() as f64;
    assert!((dropped - 0.25).abs() < 0.02, "drop rate {dropped}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6), "kept values scaled by 1/(1-p)");
    BE.dropout(&mut b, &x, 0.25, 8);
    assert_ne!(a, b, "another key, another mask");
}

fn tiny(ty: vicugna_core::quant::GgmlType) -> FrozenModel<CpuTrain> {
    let dir = vicugna_tests::fixture("tiny-llama");
    let w = vicugna_core::ModelWeights::load(&dir).unwrap().convert(ty).unwrap();
    FrozenModel::new(CpuTrain, &w).unwrap()
}

/// Whole-model LoRA gradients (every projection, both factors) against finite differences of
/// the summed loss.
fn model_gradients(ty: vicugna_core::quant::GgmlType, pass: Pass) {
    let m = tiny(ty);
    let dir = vicugna_tests::fixture("lora-a");
    let ad = vicugna_core::LoraAdapter::load(&dir).unwrap();
    let tokens: Vec<u32> = vec![1, 450, 7483, 310, 278, 15412, 29871, 30928, 30662, 29892, 2];
    let targets: Vec<i32> = vec![-1, -1, 310, 278, 15412, 29871, 30928, 30662, 29892, 2, 1];
    lora_gradients_vs_finite_differences(&m, &ad, &tokens, &targets, &pass, &[0, 3, 6, 8, 12], "", true);
}

/// The LoRA gradients of the pairs `pis` (both factors) of one training pass against central
/// differences of its loss; with `directional`, also the derivative along the gradient itself.
#[allow(clippy::too_many_arguments)]
fn lora_gradients_vs_finite_differences(
    m: &FrozenModel<CpuTrain>,
    ad: &vicugna_core::LoraAdapter,
    tokens: &[u32],
    targets: &[i32],
    pass: &Pass,
    pis: &[usize],
    tag: &str,
    directional: bool,
) {
    let mut lora = LoraParams::new(&CpuTrain, &m.cfg, ad).unwrap();
    lora.zero_grad(&CpuTrain);
    m.forward_backward(&mut lora, tokens, targets, 1.0, pass).unwrap();
    for &pi in pis {
        for which in 0..2 {
            let p = &lora.params[pi];
            let (x, g) = if which == 0 { (&p.a, &p.ga) } else { (&p.b, &p.gb) };
            let name = format!("{tag}layer {} {:?} {}", p.layer, p.proj, ["A", "B"][which]);
            let cell = std::cell::RefCell::new(LoraParams::new(&CpuTrain, &m.cfg, ad).unwrap());
            let f = |v: &[f32]| {
                let mut l = cell.borrow_mut();
                if which == 0 {
                    l.params[pi].a = v.to_vec()
                } else {
                    l.params[pi].b = v.to_vec()
                }
                m.forward_backward(&mut l, tokens, targets, 0.0, pass).unwrap()
            };
            check(&name, x, g, 1e-2, &f);
            if directional {
                // along the gradient itself: (f(x + h·ĝ) − f(x − h·ĝ)) / 2h = |g|
                let gn = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                let h = 1e-2;
                let shift =
                    |s: f64| x.iter().zip(g).map(|(a, b)| a + (s * h * *b as f64 / gn) as f32).collect::<Vec<_>>();
                let fd = (f(&shift(1.0)) - f(&shift(-1.0))) / (2.0 * h);
                assert!((fd - gn).abs() < 1e-2 * gn, "{name}: directional derivative {fd:.6e} vs |g| {gn:.6e}");
            }
        }
    }
}

#[test]
fn model_lora_gradients_match_finite_differences() {
    model_gradients(vicugna_core::quant::GgmlType::F32, Pass { dropout: 0.0, key: 0, checkpoint: false });
}

#[test]
fn model_lora_gradients_with_dropout_checkpointing_and_q4_0_base() {
    model_gradients(vicugna_core::quant::GgmlType::Q4_0, Pass { dropout: 0.1, key: 99, checkpoint: true });
}

#[test]
fn checkpointing_changes_nothing() {
    let m = tiny(vicugna_core::quant::GgmlType::F32);
    let dir = vicugna_tests::fixture("lora-a");
    let ad = vicugna_core::LoraAdapter::load(&dir).unwrap();
    let tokens: Vec<u32> = vec![1, 450, 7483, 310, 278, 15412, 29871];
    let targets: Vec<i32> = vec![-1, 7483, 310, 278, 15412, 29871, 2];
    let mut out = Vec::new();
    for checkpoint in [false, true] {
        let mut l = LoraParams::new(&CpuTrain, &m.cfg, &ad).unwrap();
        let loss =
            m.forward_backward(&mut l, &tokens, &targets, 1.0, &Pass { dropout: 0.05, key: 3, checkpoint }).unwrap();
        out.push((loss, l.params.iter().map(|p| (p.ga.clone(), p.gb.clone())).collect::<Vec<_>>()));
    }
    assert_eq!(out[0].0, out[1].0);
    assert!(out[0].1 == out[1].1, "gradients identical bit for bit");
    let l = LoraParams::new(&CpuTrain, &m.cfg, &ad).unwrap();
    let fwd = m.loss(&l, &tokens, &targets).unwrap();
    let mut l2 = LoraParams::new(&CpuTrain, &m.cfg, &ad).unwrap();
    let fb =
        m.forward_backward(&mut l2, &tokens, &targets, 1.0, &Pass { dropout: 0.0, key: 0, checkpoint: false }).unwrap();
    assert_eq!(fwd, fb, "forward-only loss equals the training pass's");
}

/// A tiny random model with Gemma-3's block (post-norms, QK-norm, GeGLU, scaled embeddings, query
/// scaling, a sliding-window layer shorter than the sequence and a global one with another RoPE
/// base) and a random adapter on all seven projections.
fn tiny_gemma() -> (FrozenModel<CpuTrain>, vicugna_core::LoraAdapter) {
    use vicugna_core::config::{Activation, Config};
    use vicugna_core::lora::{LoraAdapter, LoraEntry};
    use vicugna_core::random::Rng;
    use vicugna_core::synthetic::random_weights;
    use vicugna_core::tensors::Slot;
    use vicugna_core::weights::Proj;
    let mut c = Config {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 16,
        tie_embeddings: true,
        ..Config::llama_defaults()
    };
    c.arch = vicugna_core::config::Arch::Gemma3;
    c.act = Activation::GeluTanh;
    c.qk_norm = true;
    c.post_norms = true;
    c.embed_scale = Some(32f32.sqrt());
    c.attn_scale = Some(0.2);
    c.sliding_window = Some(3);
    c.swa_layers = vec![true, false];
    c.rope_theta = 1e6;
    c.rope_theta_swa = Some(1e4);
    let mut key = 40;
    let mut r = |n: usize, s: f32| {
        key += 1;
        rand(n, key, s)
    };
    let mut rng = Rng::new(41);
    let w = random_weights(
        &c,
        &mut rng,
        0.3,
        |rng, slot, rows, cols| {
            let scale = if slot == Slot::Embed { 0.2 } else { 0.3 };
            Matrix::from_f32(rows, cols, rng.vec(rows * cols, scale))
        },
        "tiny-gemma",
    );
    let entries = (0..2)
        .flat_map(|layer| Proj::ALL.map(|proj| (layer, proj)))
        .map(|(layer, proj)| {
            let (o, i) = proj.shape(&c);
            LoraEntry { layer, proj, r: 4, scale: 2.0, a: r(4 * i, 0.3), b: r(o * 4, 0.3) }
        })
        .collect();
    let ad = LoraAdapter {
        name: "g".into(),
        source: "random".into(),
        interleaved: false,
        r: 4,
        alpha: 8.0,
        use_rslora: false,
        target_modules: Proj::ALL.iter().map(|p| p.hf().to_string()).collect(),
        base_model: None,
        entries,
    };
    (FrozenModel::new(CpuTrain, &w).unwrap(), ad)
}

#[test]
fn gemma_block_lora_gradients_match_finite_differences() {
    let (m, ad) = tiny_gemma();
    let tokens: Vec<u32> = vec![2, 17, 5, 40, 33, 8, 61, 12];
    let targets: Vec<i32> = vec![-1, 5, 40, 33, 8, 61, 12, 1];
    for pass in [Pass { dropout: 0.0, key: 0, checkpoint: false }, Pass { dropout: 0.1, key: 5, checkpoint: true }] {
        // q and k (through QK-norm and the window), o (post-norm), gate/down (GeGLU, post-norm),
        // in the sliding-window layer and the global one
        lora_gradients_vs_finite_differences(
            &m,
            &ad,
            &tokens,
            &targets,
            &pass,
            &[0, 1, 3, 4, 6, 7, 9, 13],
            "gemma ",
            false,
        );
    }
}
