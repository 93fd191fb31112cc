//! `vicugna bench`: single-thread CPU decode speed on random-weight models of the TinyStories
//! shapes, beside the machine's read bandwidth measured in the same run (or prefill and decode of
//! a real model file), and `vicugna bench-train`: LoRA training throughput. Prints figures;
//! asserts nothing.

use crate::args::{BackendKind, BaseType};
use std::path::PathBuf;
use std::time::Instant;
use vicugna_core::config::Config;
use vicugna_core::cpu::{Cpu, Kernels};
use vicugna_core::quant::GgmlType;
use vicugna_core::random::Rng;
use vicugna_core::synthetic::{random_blocks, random_matrix, random_weights};
use vicugna_core::weights::{Matrix, ModelWeights};
use vicugna_core::Model;
use vicugna_shaders::Wgpu;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where the model runs
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// A few steps only (smoke test)
    #[arg(long)]
    pub quick: bool,
    /// Measure this model file instead (prefill and decode tok/s)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Decode steps with --model
    #[arg(long, alias = "gen", default_value_t = 32)]
    pub steps: usize,
    /// Prompt tokens with --model
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// With --model: end with one JSON line of the figures
    #[arg(long)]
    pub json: bool,
    /// With --model and --backend wgpu: time every kernel launch of one prefill and one decode
    /// step alone and print where the time goes
    #[arg(long)]
    pub profile: bool,
    /// With --model: also measure the single-thread read bandwidth and say what share of it decode reaches
    #[arg(long)]
    pub bandwidth: bool,
    /// Write a random-weight F32 model of --shape as an HF directory (config.json +
    /// model.safetensors) and exit, for `vicugna convert` and other programs to measure
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub write_hf: Option<PathBuf>,
    /// The shape --write-hf writes: stories15M or stories110M
    #[arg(long, default_value = "stories110M", requires = "write_hf")]
    pub shape: String,
    #[command(flatten)]
    pub kernels: crate::args::KernelArgs,
}

impl BenchArgs {
    pub fn run(&self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        if let Some(dir) = &self.write_hf {
            let s = shape(&self.shape)?;
            random_model(s, GgmlType::F32, 7).save_hf_dir(dir)?;
            writeln!(out, "wrote a random {} (F32) to {}", s.name, dir.display())?;
            return Ok(());
        }
        match (&self.model, self.backend) {
            (Some(m), b) => run_model(out, m, b, self),
            (None, BackendKind::Cpu) => run(out, self.quick),
            (None, BackendKind::Wgpu) => run_wgpu(out, self.quick),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// Model shape: stories15M or stories110M (random weights)
    #[arg(long, default_value = "stories15M")]
    pub shape: String,
    /// Frozen base type
    #[arg(long, value_enum, default_value_t = BaseType::F32)]
    pub base: BaseType,
    /// Tokens per sequence
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Timed optimizer steps (after one warm-up step)
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
}

impl BenchTrainArgs {
    pub fn run(&self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        run_train(out, &self.shape, self.base, self.seq, self.steps)
    }
}

pub struct Shape {
    pub name: &'static str,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab: usize,
    pub tied: bool,
}

impl Shape {
    pub fn config(&self) -> Config {
        Config {
            vocab_size: self.vocab,
            hidden_size: self.dim,
            intermediate_size: self.hidden,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.heads,
            head_dim: self.dim / self.heads,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_freq_factors: None,
            max_position: 1024,
            tie_embeddings: self.tied,
            rope_interleaved: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            ..Config::llama_defaults()
        }
    }
}

/// llama2.c's TinyStories checkpoints (shared classifier = tied embeddings).
pub const SHAPES: [Shape; 2] = [
    Shape { name: "stories15M", dim: 288, hidden: 768, layers: 6, heads: 6, vocab: 32000, tied: true },
    Shape { name: "stories110M", dim: 768, hidden: 2048, layers: 12, heads: 12, vocab: 32000, tied: true },
];

/// A benchmark shape by name.
pub fn shape(name: &str) -> anyhow::Result<&'static Shape> {
    SHAPES.iter().find(|s| s.name == name).ok_or_else(|| anyhow::anyhow!("--shape {name}: stories15M or stories110M"))
}

/// Random weights of a benchmark shape in `ty` (values ±0.05, unit norms).
pub fn random_model(s: &Shape, ty: GgmlType, seed: u64) -> ModelWeights {
    random_weights(&s.config(), &mut Rng::new(seed), 0.0, |rng, _, r, c| random_matrix(rng, ty, r, c, 0.05), s.name)
}

/// Bytes of weights one decode step reads on the GPU, in the layouts the GPU keeps (Q4_K
/// repacked with f32 scales and mins, Q5_0 widened to Q8_0, ...; `gpu_bytes`).
pub fn gpu_weight_bytes(w: &ModelWeights) -> u64 {
    let m = |m: &Matrix| vicugna_shaders::wgpu_backend::gpu_bytes(m.ty, (m.rows * m.cols) as u64);
    w.layers.iter().map(|l| l.proj.iter().map(m).sum::<u64>() + 8 * l.attn_norm.len() as u64).sum::<u64>()
        + m(w.lm_head())
}

/// Bytes of weights one decode step reads (every matrix once; the embedding row is negligible
/// but the tied classifier reads the whole table).
pub fn weight_bytes(w: &ModelWeights) -> usize {
    let m = |m: &Matrix| m.data.len();
    w.layers.iter().map(|l| l.proj.iter().map(m).sum::<usize>() + 8 * l.attn_norm.len()).sum::<usize>() + m(w.lm_head())
}

/// Best-of-3 single-thread read bandwidth over a buffer far larger than the caches, in GB/s.
pub fn read_bandwidth() -> f64 {
    let v: Vec<f32> = (0..(256 << 20)).map(|i| (i & 7) as f32).collect(); // 1 GiB
    let mut best = 0f64;
    let mut sink = 0f32;
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = [0f32; 16];
        for c in v.chunks_exact(16) {
            for k in 0..16 {
                acc[k] += c[k];
            }
        }
        sink += acc.iter().sum::<f32>();
        best = best.max(v.len() as f64 * 4.0 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(sink);
    best
}

pub fn run(out: &mut dyn std::io::Write, quick: bool) -> anyhow::Result<()> {
    let bw = read_bandwidth();
    writeln!(
        out,
        "machine: {} logical CPUs available, benchmark uses 1 thread",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )?;
    writeln!(out, "read bandwidth (1 thread, 1 GiB sum): {bw:.1} GB/s")?;
    writeln!(out, "integer kernels: {}", vicugna_core::qdot::isa())?;
    writeln!(
        out,
        "{:<12} {:<5} {:<6} {:>9} {:>10} {:>10} {:>12}",
        "model", "type", "path", "MB/token", "tok/s", "GB/s", "of bandwidth"
    )?;
    let runs = [
        (GgmlType::F32, Cpu::EXACT),
        (GgmlType::Q4_0, Cpu::EXACT),
        (GgmlType::Q4_0, Cpu::FAST),
        (GgmlType::Q8_0, Cpu::EXACT),
        (GgmlType::Q8_0, Cpu::FAST),
    ];
    for s in &SHAPES {
        for (ty, cpu) in runs.clone() {
            let fast = cpu.kernels == Kernels::Fast;
            let w = random_model(s, ty, 7);
            let m = Model::new(cpu, &w)?;
            let steps = if quick {
                4
            } else if s.dim > 500 {
                48
            } else {
                128
            };
            let mut cache = m.new_cache(steps + 2)?;
            m.forward_blocking(&[1], 0, &mut cache, vicugna_core::Pick::LastLogits)?.logits()?; // warm-up: first touch of every page
            let t = Instant::now();
            let mut tok = 1u32;
            for p in 1..=steps {
                let l = m.forward_blocking(&[tok], p, &mut cache, vicugna_core::Pick::LastLogits)?.logits()?;
                tok = (l.iter().enumerate().fold(0, |b, (i, &x)| if x > l[b] { i } else { b }) % s.vocab) as u32;
            }
            let tps = steps as f64 / t.elapsed().as_secs_f64();
            let bytes = weight_bytes(&w) as f64;
            let gbs = bytes * tps / 1e9;
            writeln!(
                out,
                "{:<12} {:<5} {:<6} {:>9.1} {:>10.1} {:>10.2} {:>11.0}%",
                s.name,
                format!("{ty:?}"),
                if fast { "fast" } else { "exact" },
                bytes / 1e6,
                tps,
                gbs,
                100.0 * gbs / bw
            )?;
        }
    }
    Ok(())
}

/// Prefill and decode speed of a real model file on one backend: a 64-token prompt, then `steps`
/// greedy decode steps (argmax on the backend, so a GPU reads back 4 bytes a token).
pub fn run_model(
    out: &mut dyn std::io::Write,
    path: &std::path::Path,
    backend: BackendKind,
    a: &BenchArgs,
) -> anyhow::Result<()> {
    let steps = a.steps;
    use anyhow::Context;
    let t = Instant::now();
    let w = ModelWeights::load(path).with_context(|| format!("loading {}", path.display()))?;
    let c = &w.cfg;
    writeln!(
        out,
        "model {}: {} layers, hidden {}, vocab {}, {:.1} MB of weights as stored",
        path.display(),
        c.num_layers,
        c.hidden_size,
        c.vocab_size,
        weight_bytes(&w) as f64 / 1e6
    )?;
    let prompt: Vec<u32> = (0..a.prompt_len.max(1)).map(|i| (1000 + i * 37) as u32 % c.vocab_size as u32).collect();
    let measure = |m: &dyn Fn(&[u32], usize) -> anyhow::Result<u32>| -> anyhow::Result<(f64, f64)> {
        // a warm-up pass first, as llama-bench does: the first touch of every mapped weight page
        // (and the first use of each pipeline) is not what a user waits for on later prompts
        let tok = m(&prompt, 0)?;
        m(&[tok], prompt.len())?;
        let t = Instant::now();
        let mut tok = m(&prompt, 0)?;
        let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for p in 0..steps {
            tok = m(&[tok], prompt.len() + p)?;
        }
        Ok((prefill, steps as f64 / t.elapsed().as_secs_f64()))
    };
    let mut per_step: Option<(u64, u64)> = None; // wgpu: (dispatches, weight bytes on the GPU) per decode step
    let (prefill, decode) = match backend {
        BackendKind::Cpu => {
            let cpu = a.kernels.cpu_or(1)?;
            let name = kernels_name(&cpu);
            let m = Model::new(cpu, &w)?;
            writeln!(out, "load: {:.2} s; kernels: {name}", t.elapsed().as_secs_f64())?;
            let cache = std::cell::RefCell::new(m.new_cache(prompt.len() + steps + 1)?);
            measure(&|toks, pos| {
                Ok(m.forward_blocking(toks, pos, &mut cache.borrow_mut(), vicugna_core::Pick::Greedy)?.token()?)
            })?
        }
        BackendKind::Wgpu => {
            let (device, queue, info) = Wgpu::default_device()?;
            writeln!(out, "adapter: {} ({:?})", info.name, info.backend)?;
            let m = Model::new(Wgpu::for_adapter(device, queue, &info), &w)?;
            writeln!(out, "load: {:.2} s", t.elapsed().as_secs_f64())?;
            let cache = std::cell::RefCell::new(m.new_cache(prompt.len() + steps + 1)?);
            let r = measure(&|toks, pos| {
                Ok(m.forward_blocking(toks, pos, &mut cache.borrow_mut(), vicugna_core::Pick::Greedy)?.token()?)
            })?;
            let d0 = m.backend.dispatch_count();
            m.forward_blocking(&[1], prompt.len() + steps, &mut cache.borrow_mut(), vicugna_core::Pick::Greedy)?
                .token()?;
            let dispatches = m.backend.dispatch_count() - d0;
            writeln!(out, "dispatches per decode step: {dispatches}")?;
            per_step = Some((dispatches, gpu_weight_bytes(&w)));
            if a.profile {
                let mut c = m.new_cache(prompt.len() + 2)?;
                for (what, toks, pos) in [("prefill", &prompt[..], 0), ("decode step", &prompt[..1], prompt.len())] {
                    m.backend.profile();
                    m.forward_blocking(toks, pos, &mut c, vicugna_core::Pick::Greedy)?.token()?;
                    let prof = m.backend.take_profile();
                    let total: f64 = prof.iter().map(|k| k.2).sum();
                    writeln!(out, "profile, {what} ({} tokens), each launch alone: {:.1} ms", toks.len(), total * 1e3)?;
                    for (k, n, s) in prof {
                        writeln!(out, "  {:>5.1}%  {:>8.2} ms  {n:>4} launches  {k}", 100.0 * s / total, s * 1e3)?;
                    }
                }
            }
            r
        }
    };
    writeln!(out, "prefill ({} tokens): {prefill:.1} tok/s; decode ({steps} steps): {decode:.2} tok/s", prompt.len())?;
    // every weight matrix once per decode step (the tied classifier in full); the KV cache not counted
    let decode_gbs = weight_bytes(&w) as f64 * decode / 1e9;
    let bw = a.bandwidth.then(read_bandwidth);
    match bw {
        Some(bw) => writeln!(
            out,
            "decode reads {decode_gbs:.2} GB/s of weights: {:.0}% of the read bandwidth (1 thread, 1 GiB sum: {bw:.1} GB/s)",
            100.0 * decode_gbs / bw
        )?,
        None => writeln!(out, "decode reads {decode_gbs:.2} GB/s of weights")?,
    }
    if a.json {
        let (kernels, threads) = match backend {
            BackendKind::Cpu => {
                let cpu = a.kernels.cpu_or(1)?;
                (kernels_name(&cpu), cpu.threads.count())
            }
            BackendKind::Wgpu => ("wgpu".to_string(), 1),
        };
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "prefill_tok_s": prefill, "decode_tok_s": decode, "threads": threads,
                "model": path.display().to_string(), "prompt_len": prompt.len(), "gen": steps,
                "kernels": kernels, "decode_weight_gb_s": decode_gbs, "read_bandwidth_gb_s": bw,
                "dispatches_per_decode_step": per_step.map(|p| p.0),
                "gpu_weight_bytes_per_decode_step": per_step.map(|p| p.1),
            })
        )?;
    }
    Ok(())
}

/// "fast (avx512-vnni, 2 threads)" or "exact".
fn kernels_name(cpu: &Cpu) -> String {
    match cpu.kernels {
        Kernels::Fast => format!("fast ({}, {} threads)", vicugna_core::qdot::isa(), cpu.threads.count()),
        Kernels::Exact => "exact".into(),
    }
}

/// Random Q4_0 blocks (a 7B model never exists as f32 here).
pub fn random_q4_model(s: &Shape) -> ModelWeights {
    random_weights(&s.config(), &mut Rng::new(11), 0.0, |rng, _, r, c| random_blocks(rng, GgmlType::Q4_0, r, c), s.name)
}

pub fn run_wgpu(out: &mut dyn std::io::Write, quick: bool) -> anyhow::Result<()> {
    use vicugna_core::backend::Backend;
    let (device, queue, info) = Wgpu::default_device()?;
    writeln!(out, "adapter: {} ({:?}, driver {} {})", info.name, info.backend, info.driver, info.driver_info)?;
    let g = Wgpu::for_adapter(device, queue, &info);
    writeln!(out, "matmul variant: {}", if g.rowwise { "rowwise (CPU adapter)" } else { "split rows (GPU)" })?;
    let copy_bytes = 64 << 20;
    let copy_s = g.bench_copy(copy_bytes, if quick { 2 } else { 20 })?;
    // a copy reads and writes every byte
    let copy_gbs = 2.0 * copy_bytes as f64 / copy_s / 1e9;
    writeln!(out, "copy kernel: {copy_gbs:.1} GB/s (read + write, 64 MiB)")?;
    writeln!(out, "{:<26} {:>10} {:>10} {:>12}", "Q4_0 matvec (rows x cols)", "ms", "GB/s", "of copy")?;
    for (rows, cols) in [(4096, 4096), (11008, 4096), (4096, 11008)] {
        let m = random_blocks(&mut Rng::new(rows as u64 ^ cols as u64), GgmlType::Q4_0, rows, cols);
        let w = g.load_matrix(&m)?;
        let x = g.act_from_host(1, cols, &vec![0.5; cols]);
        let mut y = g.act(1, rows);
        g.matmul(&mut y, &x, &w, &[]);
        g.finish()?;
        let iters = if quick { 2 } else { 20 };
        let t = Instant::now();
        for _ in 0..iters {
            g.matmul(&mut y, &x, &w, &[]);
        }
        g.finish()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gbs = m.data.len() as f64 / s / 1e9;
        writeln!(
            out,
            "{:<26} {:>10.3} {:>10.2} {:>11.0}%",
            format!("{rows} x {cols}"),
            s * 1e3,
            gbs,
            100.0 * gbs / copy_gbs
        )?;
    }
    let shapes = [
        Shape { name: "llama-7B-shaped", dim: 4096, hidden: 11008, layers: 32, heads: 32, vocab: 32000, tied: false },
        Shape { name: "stories110M-shaped", dim: 768, hidden: 2048, layers: 12, heads: 12, vocab: 32000, tied: true },
        Shape { name: "2-layer 64-wide", dim: 64, hidden: 192, layers: 2, heads: 4, vocab: 256, tied: true },
    ];
    writeln!(
        out,
        "{:<20} {:>11} {:>13} {:>12} {:>15}",
        "decode (Q4_0)", "tok/s", "ms/token", "dispatches", "prefill tok/s"
    )?;
    for s in &shapes {
        if quick && s.layers > 12 {
            continue;
        }
        let w = random_q4_model(s);
        let m = vicugna_core::Model::new(&g, &w)?;
        // the 7B shape is slow on software adapters: a 4-token prompt and 2 timed steps
        let big = s.layers > 12;
        let steps = if quick || big { 2 } else { 16 };
        let prompt: Vec<u32> = (0..if big { 4 } else { 64 }).map(|i| (i * 7 + 3) % s.vocab as u32).collect();
        let mut cache = m.new_cache(prompt.len() + steps + 2)?;
        let t = Instant::now();
        let mut tok = m.forward_blocking(&prompt, 0, &mut cache, vicugna_core::Pick::Greedy)?.token()?;
        let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
        let d0 = g.dispatch_count();
        let t = Instant::now();
        for i in 0..steps {
            tok = m.forward_blocking(&[tok], prompt.len() + i, &mut cache, vicugna_core::Pick::Greedy)?.token()?;
        }
        let per = t.elapsed().as_secs_f64() / steps as f64;
        let disp = (g.dispatch_count() - d0) as f64 / steps as f64;
        writeln!(out, "{:<20} {:>11.2} {:>13.2} {:>12.0} {:>15.1}", s.name, 1.0 / per, per * 1e3, disp, prefill)?;
    }
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `vicugna bench-train`: single-thread LoRA training throughput (forward + backward + AdamW on
/// one sequence of `seq` tokens, loss on every position, LoRA r=8 on q_proj/v_proj) on a random
/// model of a TinyStories shape; prints one JSON object. Run one configuration per process so the
/// peak memory is its own (scripts/bench-train.sh does, beside PyTorch + PEFT).
pub fn run_train(
    out: &mut dyn std::io::Write,
    shape: &str,
    base: BaseType,
    seq: usize,
    steps: usize,
) -> anyhow::Result<()> {
    use vicugna_train::backend::{AdamW, TrainBackend};
    use vicugna_train::cpu::CpuTrain;
    use vicugna_train::model::{FrozenModel, LoraParams, Pass};
    let s = self::shape(shape)?;
    let ty = GgmlType::from(base);
    vicugna_train::cpu::keep_freed_memory();
    let w = random_model(s, ty, 7);
    let cfg = w.cfg.clone();
    let model = FrozenModel::new(CpuTrain, &w)?;
    drop(w);
    let mut entries = Vec::new();
    for layer in 0..cfg.num_layers {
        for proj in [vicugna_core::Proj::Q, vicugna_core::Proj::V] {
            let (o, i) = proj.shape(&cfg);
            let a = (0..8 * i).map(|j| ((j * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.05).collect();
            let b = (0..o * 8).map(|j| ((j * 104_729 % 1000) as f32 / 1000.0 - 0.5) * 0.01).collect();
            entries.push(vicugna_core::lora::LoraEntry { layer, proj, r: 8, scale: 2.0, a, b });
        }
    }
    let ad = vicugna_core::LoraAdapter {
        name: "bench".into(),
        source: "bench".into(),
        interleaved: false,
        r: 8,
        alpha: 16.0,
        use_rslora: false,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        base_model: None,
        entries,
    };
    let mut lora = LoraParams::new(&CpuTrain, &cfg, &ad)?;
    let tokens: Vec<u32> = (0..seq).map(|i| (i * 7919 % (cfg.vocab_size - 3) + 3) as u32).collect();
    let targets: Vec<i32> = (0..seq).map(|i| ((i + 1) * 7919 % (cfg.vocab_size - 3) + 3) as i32).collect();
    let opt = AdamW::default();
    let mut step = |t: u64| -> anyhow::Result<f64> {
        lora.zero_grad(&CpuTrain);
        let pass = Pass { dropout: 0.05, key: t, checkpoint: false };
        let loss = model.forward_backward(&mut lora, &tokens, &targets, 1.0 / seq as f32, &pass)?;
        for p in &mut lora.params {
            CpuTrain.adamw(&mut p.a, &p.ga, &mut p.ma, &mut p.va, &opt, 3e-4, t, 1.0);
            CpuTrain.adamw(&mut p.b, &p.gb, &mut p.mb, &mut p.vb, &opt, 3e-4, t, 1.0);
        }
        Ok(loss / seq as f64)
    };
    step(1)?; // warm-up
    let t0 = Instant::now();
    let mut loss = 0.0;
    for t in 0..steps {
        loss = step(t as u64 + 2)?;
    }
    let secs = t0.elapsed().as_secs_f64() / steps as f64;
    let j = serde_json::json!({
        "impl": "vicugna", "shape": shape, "base": format!("{ty:?}").to_lowercase(), "seq": seq, "threads": 1,
        "step_s": secs, "tokens_per_s": seq as f64 / secs, "peak_rss_mib": peak_rss_mib(),
        "base_mib": model.base_bytes() as f64 / 1048576.0, "loss": loss,
    });
    writeln!(out, "{j}")?;
    Ok(())
}
