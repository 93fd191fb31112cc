//! The training loop: data → examples → micro-batches with gradient accumulation → AdamW with
//! transformers' linear warm-up/decay schedule, checkpoints that resume exactly, PEFT output.
//!
//! Semantics (those of transformers' Trainer with gradient accumulation):
//! - An optimizer step covers `batch / micro_batch` micro-batches; the last step of an epoch may
//!   cover fewer. Its loss is the token-mean cross-entropy over every response token in those
//!   micro-batches (Trainer's `num_items_in_batch` normalisation), and so is its gradient.
//! - steps per epoch = ceil(ceil(n / micro_batch) / accumulation); `--max-steps` overrides epochs.
//! - lr(step) = lr · step / warmup during warm-up, then decays linearly to 0 at the last step.
//! - Gradients are clipped to `--max-grad-norm` (torch's clip_grad_norm_, coefficient capped at 1).
//! - Each epoch's order is a seeded shuffle (unless `--no-shuffle`); dropout masks come from a
//!   counter-based generator keyed by (seed, step, sequence), so a resumed run draws the same ones.

use super::backend::{AdamW, TrainBackend};
use super::checkpoint::{self, peft_name};
use super::cpu::{splitmix, CpuTrain};
use super::data::{self, Example, Templating, TrainTemplate};
use super::model::{FrozenModel, LoraParams, Pass};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vicugna_core::lora::{LoraAdapter, LoraEntry};
use vicugna_core::quant::GgmlType;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{ModelWeights, Proj};

/// One training run: what `vicugna train` parses its flags into (the CLI reads its defaults from
/// [`TrainConfig::default`], so they live here once). Chinese-Vicuna's recipe is the default:
/// LoRA r=8, alpha=16, dropout 0.05 on q_proj/v_proj, lr 3e-4, batch 128, cutoff 256, 3 epochs,
/// loss on the response only.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Base model: HF directory (config.json + model.safetensors) or GGUF.
    pub model: PathBuf,
    /// tokenizer.json or GGUF with a vocabulary (default: the model's own).
    pub tokenizer: Option<PathBuf>,
    /// Training data files (JSON array or JSONL), merged in order.
    pub data: Vec<PathBuf>,
    /// Output directory for the PEFT adapter and checkpoints.
    pub out: PathBuf,
    pub template: TrainTemplate,
    /// The `fixed` template's instruction.
    pub instruction: String,
    /// Tokens per example (prompt + response), as Chinese-Vicuna's CUTOFF_LEN.
    pub cutoff_len: usize,
    /// Also train on the prompt tokens.
    pub train_on_inputs: bool,
    /// Skip malformed records (and say how many) instead of stopping at the first.
    pub skip_bad_records: bool,
    /// Hold out this many records (a seeded draw) for the eval loss.
    pub val_size: usize,
    /// Held-out records in files of their own (same formats as `data`).
    pub val_data: Vec<PathBuf>,
    /// Store the frozen base as this type (f32, f16, q8_0, q4_0: QLoRA); `None` keeps it as loaded.
    pub base_type: Option<GgmlType>,
    /// HF projection names (q_proj, ..., down_proj).
    pub target_modules: Vec<String>,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f32,
    /// scale = alpha / sqrt(r) instead of alpha / r.
    pub rslora: bool,
    /// Start from this PEFT adapter (continue-finetuning, e.g. a domain model from a general one).
    pub init_adapter: Option<PathBuf>,
    /// Continue an interrupted run exactly from a checkpoint (or the latest under a directory).
    pub resume: Option<PathBuf>,
    pub micro_batch: usize,
    /// Sequences per optimizer step (gradient accumulation = batch / micro_batch).
    pub batch: usize,
    pub epochs: usize,
    /// Optimizer steps in all (overrides `epochs`).
    pub max_steps: Option<u64>,
    pub lr: f32,
    pub warmup_steps: u64,
    pub max_grad_norm: f32,
    pub weight_decay: f32,
    pub seed: u64,
    pub shuffle: bool,
    /// Recompute activations in the backward pass (less memory, ~1/3 more compute).
    pub gradient_checkpointing: bool,
    /// Save a checkpoint every N steps (0: only at the end).
    pub save_steps: u64,
    /// Keep the last K checkpoints.
    pub save_total_limit: usize,
    /// Eval loss every N steps (needs `val_size` or `val_data`).
    pub eval_steps: u64,
    /// One JSON object per optimizer step and per eval, appended to this file.
    pub log_json: Option<PathBuf>,
    /// Also write the adapter as a llama.cpp GGUF LoRA.
    pub gguf: Option<PathBuf>,
    /// Stop after this many steps of this invocation (the run stays resumable; for tests).
    pub stop_after: Option<u64>,
    /// The base model's registry id, recorded as base_model_name_or_path (default: the model's
    /// file or directory name).
    pub base_name: Option<String>,
    pub quiet: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: PathBuf::new(),
            tokenizer: None,
            data: Vec::new(),
            out: PathBuf::new(),
            template: TrainTemplate::Instruct,
            instruction: data::MEDICAL_INSTRUCTION.into(),
            cutoff_len: 256,
            train_on_inputs: false,
            skip_bad_records: false,
            val_size: 0,
            val_data: Vec::new(),
            base_type: None,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            rslora: false,
            init_adapter: None,
            resume: None,
            micro_batch: 4,
            batch: 128,
            epochs: 3,
            max_steps: None,
            lr: 3e-4,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            seed: 42,
            shuffle: true,
            gradient_checkpointing: false,
            save_steps: 0,
            save_total_limit: 2,
            eval_steps: 0,
            log_json: None,
            gguf: None,
            stop_after: None,
            base_name: None,
            quiet: false,
        }
    }
}

/// What a finished (or deliberately stopped) run leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedAdapter {
    /// The PEFT directory (adapter_config.json + adapter_model.safetensors) or, for a run stopped
    /// by `stop_after`, the directory holding its checkpoints.
    pub dir: PathBuf,
    /// False when `stop_after` ended the run early (resume it from `dir`).
    pub finished: bool,
    /// Optimizer steps done, of `total_steps`.
    pub steps: u64,
    pub total_steps: u64,
    /// The base's name as recorded in adapter_config.json.
    pub base_name: String,
    pub template: TrainTemplate,
}

/// The frozen-base types training accepts for `TrainConfig::base_type`.
pub const BASE_TYPES: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0];

/// Everything that determines the numbers a run produces; a resume must match it exactly.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Settings {
    pub base_sha256: String,
    pub base_type: String,
    pub data_sha256: String,
    pub templating: Templating,
    pub val_size: usize,
    pub target_modules: Vec<String>,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f32,
    pub rslora: bool,
    pub init_adapter_sha256: Option<String>,
    pub micro_batch: usize,
    pub batch: usize,
    pub epochs: usize,
    pub max_steps: Option<u64>,
    pub lr: f32,
    pub warmup_steps: u64,
    pub max_grad_norm: f32,
    pub adamw: AdamW,
    pub seed: u64,
    pub shuffle: bool,
}

#[derive(Serialize, Deserialize, Debug)]
struct TrainerState {
    format: u32,
    /// Optimizer steps done.
    step: u64,
    total_steps: u64,
    epoch: f64,
    settings: Settings,
}

/// transformers' get_linear_schedule_with_warmup.
pub fn lr_at(lr: f32, step: u64, warmup: u64, total: u64) -> f32 {
    let f = if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
    };
    (lr as f64 * f) as f32
}

/// The order of epoch `e`'s examples.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut s = splitmix(seed ^ splitmix(0x5348_5546u64.wrapping_add(epoch)));
        for i in (1..n).rev() {
            s = splitmix(s);
            let j = (s % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    v
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn weights_file(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join("model.safetensors")
    } else {
        model.to_path_buf()
    }
}

fn adapter_config(
    a: &TrainConfig,
    s: &Settings,
    base_name: &str,
    fingerprint: &str,
    modules: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": s.lora_r,
        "lora_alpha": s.lora_alpha,
        "lora_dropout": s.lora_dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": s.rslora,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "vicugna": {
            "base_fingerprint": fingerprint,
            "base_sha256": s.base_sha256,
            "template": s.templating.template,
            "instruction": (s.templating.template == TrainTemplate::Fixed).then_some(&a.instruction),
            "cutoff_len": s.templating.cutoff_len,
        }
    })
}

/// A fresh adapter: A ~ PEFT's kaiming-uniform(a=√5) bound 1/√in, B = 0 (the product starts at 0).
fn fresh_adapter(cfg: &vicugna_core::Config, a: &TrainConfig, seed: u64) -> Result<LoraAdapter> {
    let mut entries = Vec::new();
    let scale = if a.rslora { a.lora_alpha / (a.lora_r as f64).sqrt() } else { a.lora_alpha / a.lora_r as f64 } as f32;
    for layer in 0..cfg.num_layers {
        for m in &a.target_modules {
            let proj = Proj::from_hf(m).with_context(|| {
                format!("--target-modules: `{m}` is not one of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
            })?;
            let (o, i) = proj.shape(cfg);
            let bound = 1.0 / (i as f32).sqrt();
            let key = splitmix(seed ^ splitmix(0xA11C_0000 + (layer * 7 + proj as usize) as u64));
            let av = (0..a.lora_r * i).map(|j| (super::cpu::uniform(key, j as u64) * 2.0 - 1.0) * bound).collect();
            entries.push(LoraEntry { layer, proj, r: a.lora_r, scale, a: av, b: vec![0.0; o * a.lora_r] });
        }
    }
    Ok(LoraAdapter {
        name: "new".into(),
        source: "new adapter".into(),
        interleaved: false,
        r: a.lora_r,
        alpha: a.lora_alpha,
        use_rslora: a.rslora,
        target_modules: a.target_modules.clone(),
        base_model: None,
        entries,
    })
}

fn tensors_of<B: TrainBackend>(be: &B, l: &LoraParams<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut t = Vec::new();
    for p in &l.params {
        let (na, nb) = (be.len(&p.a), be.len(&p.b));
        for (which, buf, n) in [("A", &p.ma, na), ("B", &p.mb, nb)] {
            t.push((format!("{}.exp_avg", peft_name(p.layer, p.proj, which)), vec![n], be.download(buf)));
        }
        for (which, buf, n) in [("A", &p.va, na), ("B", &p.vb, nb)] {
            t.push((format!("{}.exp_avg_sq", peft_name(p.layer, p.proj, which)), vec![n], be.download(buf)));
        }
    }
    t
}

/// Compare settings field by field: the first difference, worded for a person.
fn settings_diff(old: &Settings, new: &Settings) -> Option<String> {
    let (o, n) = (serde_json::to_value(old).ok()?, serde_json::to_value(new).ok()?);
    let (o, n) = (o.as_object()?, n.as_object()?);
    o.iter()
        .find(|(k, v)| n.get(*k) != Some(v))
        .map(|(k, v)| format!("`{k}` was {v} in the checkpoint but is {} now", n[k]))
}

/// One optimiser step, as the loop reports it.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    pub lr: f32,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Estimated seconds to the last step, from this run's pace.
    pub secs_left: f64,
}

/// How the loop shows its progress: the CLI draws a bar (indicatif), [`Lines`] writes one line a
/// step, and a caller that does not care passes [`Silent`]. Messages (the banner, checkpoints) go
/// to `run`'s `log` instead.
pub trait Progress {
    /// Before the first step of this run (`step` > 0 when resuming).
    fn start(&mut self, _step: u64, _total: u64) {}
    fn step(&mut self, _r: &StepReport) {}
    fn eval(&mut self, _step: u64, _loss: f64) {}
    /// After the last step of this run.
    fn finish(&mut self) {}
}

/// No progress shown.
pub struct Silent;
impl Progress for Silent {}

/// One line per step and per evaluation, for logs and pipes.
pub struct Lines<W: Write>(pub W);

impl StepReport {
    pub fn line(&self) -> String {
        format!(
            "step {}/{} loss {:.4} lr {:.3e} {:.0} tok/s, {} left",
            self.step,
            self.total,
            self.loss,
            self.lr,
            self.tokens_per_s,
            fmt_secs(self.secs_left)
        )
    }
}

impl<W: Write> Progress for Lines<W> {
    fn step(&mut self, r: &StepReport) {
        let _ = writeln!(self.0, "{}", r.line());
    }
    fn eval(&mut self, step: u64, loss: f64) {
        let _ = writeln!(self.0, "eval loss {loss:.4} at step {step}");
    }
}

/// Train as `a` says: messages on `log`, progress through `progress`.
pub fn run(a: &TrainConfig, log: &mut dyn Write, progress: &mut dyn Progress) -> Result<TrainedAdapter> {
    let t_load = Instant::now();
    if a.micro_batch == 0 || a.batch == 0 || !a.batch.is_multiple_of(a.micro_batch) {
        bail!("--batch {} must be a positive multiple of --micro-batch {}", a.batch, a.micro_batch);
    }
    if a.val_size > 0 && !a.val_data.is_empty() {
        bail!("--val-size and --val-data both given: hold out records from the data or give a file of them, not both");
    }
    if !(0.0..1.0).contains(&a.lora_dropout) {
        bail!("--lora-dropout {} must be in [0, 1)", a.lora_dropout);
    }
    // base model
    let mut w = ModelWeights::load(&a.model).with_context(|| format!("loading model {}", a.model.display()))?;
    if let Some(ty) = a.base_type {
        if !BASE_TYPES.contains(&ty) {
            bail!("base type {ty:?}: training keeps the frozen base as f32, f16, q8_0 or q4_0");
        }
        w = w.convert(ty).context("--base-type")?;
    }
    let base_type = format!("{:?}", w.layers.first().map(|l| l.proj[0].ty).unwrap_or(GgmlType::F32));
    let tk_path = a.tokenizer.as_deref().unwrap_or(&a.model);
    let tk = Tokenizer::load(tk_path).with_context(|| format!("loading tokenizer from {}", tk_path.display()))?;
    let cfg = w.cfg.clone();
    let (bos, eos) = data::bos_eos(&cfg, &tk)?;
    let base_sha256 = vicugna_core::identity::sha256_file(&weights_file(&a.model))?;
    let fingerprint = vicugna_core::identity::fingerprint(
        &base_sha256,
        &vicugna_core::identity::architecture(&cfg),
        &vicugna_core::identity::tokenizer_identity(&tk),
    );

    // data
    let templating = Templating {
        template: a.template,
        instruction: a.instruction.clone(),
        cutoff_len: a.cutoff_len,
        train_on_inputs: a.train_on_inputs,
    };
    let (train, val, data_sha256) = load_examples(a, &templating, &tk, bos, eos, log)?;

    // adapter to start from
    let (adapter, init_sha) = match &a.init_adapter {
        Some(p) => {
            let ad = LoraAdapter::load(p).with_context(|| format!("--init-adapter {}", p.display()))?;
            ad.check_fits(&cfg).with_context(|| format!("--init-adapter {} does not fit the base", p.display()))?;
            let sha = vicugna_core::identity::sha256_file(&p.join("adapter_model.safetensors"))?;
            (ad, Some(sha))
        }
        None => (fresh_adapter(&cfg, a, a.seed)?, None),
    };
    let mut modules: Vec<&str> = adapter.modules();
    modules.sort();
    let settings = Settings {
        base_sha256,
        base_type,
        data_sha256,
        templating,
        val_size: a.val_size,
        target_modules: modules.iter().map(|s| s.to_string()).collect(),
        lora_r: adapter.r,
        lora_alpha: adapter.alpha,
        lora_dropout: a.lora_dropout,
        rslora: adapter.use_rslora,
        init_adapter_sha256: init_sha,
        micro_batch: a.micro_batch,
        batch: a.batch,
        epochs: a.epochs,
        max_steps: a.max_steps,
        lr: a.lr,
        warmup_steps: a.warmup_steps,
        max_grad_norm: a.max_grad_norm,
        adamw: AdamW { weight_decay: a.weight_decay, ..AdamW::default() },
        seed: a.seed,
        shuffle: a.shuffle,
    };

    let be = CpuTrain;
    super::cpu::keep_freed_memory();
    let model = FrozenModel::new(be, &w)?;
    drop(w);
    let mut lora = LoraParams::new(&be, &model.cfg, &adapter)?;

    // geometry
    let accum = a.batch / a.micro_batch;
    let mb_per_epoch = train.len().div_ceil(a.micro_batch);
    let steps_per_epoch = mb_per_epoch.div_ceil(accum) as u64;
    let total = a.max_steps.unwrap_or(steps_per_epoch * a.epochs as u64);
    if total == 0 {
        bail!("nothing to train: 0 optimizer steps");
    }

    // resume
    let mut step = 0u64;
    if let Some(r) = &a.resume {
        let dir = checkpoint::resolve(r)?;
        let text = std::fs::read_to_string(dir.join("trainer_state.json"))
            .with_context(|| format!("reading {}", dir.join("trainer_state.json").display()))?;
        let st: TrainerState = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid trainer state", dir.join("trainer_state.json").display()))?;
        if let Some(d) = settings_diff(&st.settings, &settings) {
            bail!(
                "cannot resume from {}: {d}; resume with the same settings (nothing was changed on disk)",
                dir.display()
            );
        }
        let params = checkpoint::read_tensors(&dir.join("adapter_model.safetensors"))?;
        let opt = checkpoint::read_tensors(&dir.join("optimizer.safetensors"))?;
        for p in &mut lora.params {
            for (which, buf, m, v) in [("A", &mut p.a, &mut p.ma, &mut p.va), ("B", &mut p.b, &mut p.mb, &mut p.vb)] {
                let n = peft_name(p.layer, p.proj, which);
                let get = |map: &std::collections::BTreeMap<String, Vec<f32>>, k: &str| {
                    map.get(k)
                        .cloned()
                        .with_context(|| format!("checkpoint {}: tensor `{k}` is missing", dir.display()))
                };
                *buf = be.upload(&get(&params, &n)?);
                *m = be.upload(&get(&opt, &format!("{n}.exp_avg"))?);
                *v = be.upload(&get(&opt, &format!("{n}.exp_avg_sq"))?);
            }
        }
        step = st.step;
        writeln!(log, "resuming from {} at step {step}/{total}", dir.display())?;
    }

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let base_name = a.base_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_default()
    });
    let config_json = adapter_config(a, &settings, &base_name, &fingerprint, &modules);
    let mut json_log = match &a.log_json {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    if !a.quiet {
        writeln!(
            log,
            "training {} LoRA parameters ({} modules, r={}) on {} examples ({} held out), {} steps of {} sequences; base {} MiB ({}); loaded in {:.1}s",
            lora.count(&be),
            modules.join(","),
            adapter.r,
            train.len(),
            val.len(),
            total,
            a.batch,
            model.base_bytes() >> 20,
            settings.base_type,
            t_load.elapsed().as_secs_f64()
        )?;
    }

    let save = |lora: &LoraParams<CpuTrain>, step: u64| -> Result<()> {
        let dir = a.out.join(format!("checkpoint-{step}"));
        checkpoint::commit_dir(&dir, |tmp| {
            checkpoint::save_peft(tmp, &lora.to_entries(&be), &config_json)?;
            checkpoint::write_tensors(&tmp.join("optimizer.safetensors"), &tensors_of(&be, lora))?;
            let st = TrainerState {
                format: 1,
                step,
                total_steps: total,
                epoch: step as f64 / steps_per_epoch as f64,
                settings: settings.clone(),
            };
            checkpoint::write_atomic(&tmp.join("trainer_state.json"), serde_json::to_string_pretty(&st)?.as_bytes())
        })?;
        let all = checkpoint::list(&a.out);
        for (_, d) in all.iter().take(all.len().saturating_sub(a.save_total_limit.max(1))) {
            std::fs::remove_dir_all(d).with_context(|| format!("removing old checkpoint {}", d.display()))?;
        }
        Ok(())
    };

    let t0 = Instant::now();
    let (mut tokens_done, start_step) = (0usize, step);
    if !a.quiet {
        progress.start(step, total);
    }
    let mut order_cache: Option<(u64, Vec<usize>)> = None;
    while step < total {
        if a.stop_after.is_some_and(|s| step - start_step >= s) {
            if !a.quiet {
                progress.finish();
            }
            writeln!(
                log,
                "stopping after {} steps as asked (resume with --resume {})",
                step - start_step,
                a.out.display()
            )?;
            return Ok(TrainedAdapter {
                dir: a.out.clone(),
                finished: false,
                steps: step,
                total_steps: total,
                base_name,
                template: settings.templating.template,
            });
        }
        let epoch = step / steps_per_epoch;
        let k = (step % steps_per_epoch) as usize;
        if order_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order_cache = Some((epoch, epoch_order(train.len(), a.seed, epoch, a.shuffle)));
        }
        let order = &order_cache.as_ref().unwrap().1;
        let lo = k * accum * a.micro_batch;
        let hi = ((k + 1) * accum * a.micro_batch).min(train.len());
        let batch: Vec<&Example> = order[lo..hi].iter().map(|&i| &train[i]).collect();
        let n_tok: usize = batch.iter().map(|e| e.n_targets()).sum();
        lora.zero_grad(&be);
        let mut loss = 0f64;
        for (j, ex) in batch.iter().enumerate() {
            let pass = Pass {
                dropout: a.lora_dropout,
                key: splitmix(splitmix(a.seed) ^ (step << 24 | j as u64)),
                checkpoint: a.gradient_checkpointing,
            };
            loss += model.forward_backward(&mut lora, &ex.tokens, &ex.targets, 1.0 / n_tok as f32, &pass)?;
        }
        loss /= n_tok as f64;
        let norm = lora.params.iter().map(|p| be.sum_squares(&p.ga) + be.sum_squares(&p.gb)).sum::<f64>().sqrt();
        let clip = if a.max_grad_norm > 0.0 { (a.max_grad_norm as f64 / (norm + 1e-6)).min(1.0) as f32 } else { 1.0 };
        let lr = lr_at(a.lr, step, a.warmup_steps, total);
        for p in &mut lora.params {
            be.adamw(&mut p.a, &p.ga, &mut p.ma, &mut p.va, &settings.adamw, lr, step + 1, clip);
            be.adamw(&mut p.b, &p.gb, &mut p.mb, &mut p.vb, &settings.adamw, lr, step + 1, clip);
        }
        step += 1;
        tokens_done += batch.iter().map(|e| e.tokens.len()).sum::<usize>();
        let el = t0.elapsed().as_secs_f64();
        let tps = tokens_done as f64 / el.max(1e-9);
        let epoch_f = step as f64 / steps_per_epoch as f64;
        if let Some(f) = json_log.as_mut() {
            let j = serde_json::json!({"step": step, "epoch": epoch_f, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": tps});
            writeln!(f, "{j}")?;
        }
        if !a.quiet {
            let secs_left = el / (step - start_step) as f64 * (total - step) as f64;
            progress.step(&StepReport { step, total, loss, lr, grad_norm: norm, tokens_per_s: tps, secs_left });
        }
        if a.eval_steps > 0 && !val.is_empty() && (step.is_multiple_of(a.eval_steps) || step == total) {
            let el = eval_loss(&model, &lora, &val)?;
            if let Some(f) = json_log.as_mut() {
                writeln!(f, "{}", serde_json::json!({"step": step, "eval_loss": el}))?;
            }
            if !a.quiet {
                progress.eval(step, el);
            }
        }
        if (a.save_steps > 0 && step.is_multiple_of(a.save_steps)) || step == total {
            save(&lora, step)?;
        }
    }
    if !a.quiet {
        progress.finish();
    }
    checkpoint::save_peft(&a.out, &lora.to_entries(&be), &config_json)?;
    if let Some(g) = &a.gguf {
        write_gguf_lora(g, &lora.to_entries(&be), &model.cfg, settings.lora_alpha, &base_name)?;
    }
    writeln!(log, "wrote PEFT adapter to {}", a.out.display())?;
    Ok(TrainedAdapter {
        dir: a.out.clone(),
        finished: true,
        steps: step,
        total_steps: total,
        base_name,
        template: settings.templating.template,
    })
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Token-mean cross-entropy of held-out examples (no dropout).
pub fn eval_loss<B: TrainBackend>(model: &FrozenModel<B>, lora: &LoraParams<B>, val: &[Example]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for ex in val {
        sum += model.loss(lora, &ex.tokens, &ex.targets)?;
        n += ex.n_targets();
    }
    Ok(sum / n.max(1) as f64)
}

/// Read, template and tokenize every --data file; split off the validation records.
fn load_examples(
    a: &TrainConfig,
    t: &Templating,
    tk: &Tokenizer,
    bos: u32,
    eos: u32,
    log: &mut dyn Write,
) -> Result<(Vec<Example>, Vec<Example>, String)> {
    let examples = examples_of(&a.data, a.skip_bad_records, t, tk, bos, eos, log)?;
    if examples.len() <= a.val_size {
        bail!("{} usable records but --val-size {}: nothing left to train on", examples.len(), a.val_size);
    }
    let mut h = Vec::new();
    for e in &examples {
        h.extend((e.tokens.len() as u32).to_le_bytes());
        e.tokens.iter().for_each(|x| h.extend(x.to_le_bytes()));
        e.targets.iter().for_each(|x| h.extend(x.to_le_bytes()));
    }
    let sha = sha_hex(&h);
    // held-out set: a seeded draw, like Chinese-Vicuna's train_test_split(seed=42)
    let mut val = Vec::new();
    if a.val_size > 0 {
        let order = epoch_order(examples.len(), a.seed, u64::MAX, true);
        let held: std::collections::BTreeSet<usize> = order[..a.val_size].iter().copied().collect();
        let mut train = Vec::new();
        for (i, e) in examples.into_iter().enumerate() {
            if held.contains(&i) {
                val.push(e)
            } else {
                train.push(e)
            }
        }
        return Ok((train, val, sha));
    }
    if !a.val_data.is_empty() {
        val = examples_of(&a.val_data, a.skip_bad_records, t, tk, bos, eos, log)?;
    }
    Ok((examples, val, sha))
}

/// Read, template and tokenize data files into examples (records with no response token left
/// after the cutoff are dropped, and counted).
pub fn examples_of(
    files: &[PathBuf],
    skip_bad: bool,
    t: &Templating,
    tk: &Tokenizer,
    bos: u32,
    eos: u32,
    log: &mut dyn Write,
) -> Result<Vec<Example>> {
    let mut skipped = Vec::new();
    let mut records = Vec::new();
    for f in files {
        records.extend(data::read_file(f, skip_bad, &mut skipped)?);
    }
    let mut examples = Vec::with_capacity(records.len());
    let mut empty = 0;
    for (r, origin) in &records {
        match data::tokenize(r, t, tk, bos, eos) {
            Ok(e) if e.n_targets() == 0 => empty += 1,
            Ok(e) => examples.push(e),
            Err(e) if skip_bad => skipped.push(format!("{origin}: {e:#}")),
            Err(e) => bail!("{origin}: {e:#} (--skip-bad-records skips such records)"),
        }
    }
    if !skipped.is_empty() {
        writeln!(log, "skipped {} bad records; first: {}", skipped.len(), skipped[0])?;
    }
    if empty > 0 {
        writeln!(log, "dropped {empty} records with no response tokens left after --cutoff-len {}", t.cutoff_len)?;
    }
    Ok(examples)
}

/// llama.cpp's GGUF LoRA: `blk.N.<proj>.weight.lora_a` (r, in) / `.lora_b` (out, r), Q/K rows in
/// its interleaved RoPE layout for LLaMA models.
pub fn write_gguf_lora(
    path: &Path,
    entries: &[LoraEntry],
    cfg: &vicugna_core::Config,
    alpha: f64,
    base: &str,
) -> Result<()> {
    use vicugna_core::gguf::{GgufWriter, Value};
    let mut g = GgufWriter::new();
    g.set("general.architecture", Value::String(cfg.arch.name().into()));
    g.set("general.type", Value::String("adapter".into()));
    g.set("adapter.type", Value::String("lora".into()));
    g.set("adapter.lora.alpha", Value::F32(alpha as f32));
    g.set("general.base_model.count", Value::U32(1));
    g.set("general.base_model.0.name", Value::String(base.into()));
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for e in entries {
        let (o, i) = e.proj.shape(cfg);
        // llama.cpp's converter interleaves q/k rows of LLaMA models only; Gemma-3 keeps HF's layout
        let b = match e.proj {
            Proj::Q if cfg.arch.gguf_interleaves_rope() => {
                vicugna_core::weights::permute_rope_rows(&e.b, e.r, cfg.num_heads, cfg.head_dim, true)
            }
            Proj::K if cfg.arch.gguf_interleaves_rope() => {
                vicugna_core::weights::permute_rope_rows(&e.b, e.r, cfg.num_kv_heads, cfg.head_dim, true)
            }
            _ => e.b.clone(),
        };
        let n = format!("blk.{}.{}.weight", e.layer, e.proj.gguf());
        g.add_tensor(&format!("{n}.lora_a"), vec![i as u64, e.r as u64], GgmlType::F32, bytes(&e.a))?;
        g.add_tensor(&format!("{n}.lora_b"), vec![e.r as u64, o as u64], GgmlType::F32, bytes(&b))?;
    }
    let mut buf = Vec::new();
    g.write(&mut buf)?;
    checkpoint::write_atomic(path, &buf)
}
