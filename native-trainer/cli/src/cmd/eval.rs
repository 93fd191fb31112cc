//! `vicugna eval`: the measuring stick for adapters.
//!
//! - Loss mode (`--data`): token-mean cross-entropy and perplexity on the response tokens of a
//!   data file, with the same formats, templates, truncation and masking as `vicugna train`
//!   (and the same forward pass: the training model's, without dropout).
//! - Suite mode (`--suite`): a fixed prompt suite through the base and each adapter on one
//!   resident base (loaded once; adapters attached and detached), with fixed sampling (greedy
//!   and repetition penalty 1.3 unless told otherwise), written as a side-by-side Markdown
//!   report and its JSON twin. Per answer: the share of CJK characters among letters, whether
//!   it ended on EOS, whether a role marker leaked, and distinct character 4-grams.
//!
//! It does not judge facts: a report is read by a person, who says where the model is wrong.

use crate::args::{EarlyStoppingArg, Sampling, TrainTemplateArg};
use crate::model::{load_tokenizer, parse_lora};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vicugna_core::generate::{generate, GenerationConfig, StopReason};
use vicugna_core::lora::{LoraAdapter, LoraEntry};
use vicugna_core::prompt::{self, Template, Turn};
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{Config, Model, ModelWeights};
use vicugna_train::data::{self, Example, Templating};
use vicugna_train::model::{FrozenModel, LoraParams};

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Base model: HF directory or GGUF
    #[arg(long)]
    pub model: PathBuf,
    /// The suite's generations on the CPU (the loss is the training forward's, f32 throughout)
    #[command(flatten)]
    pub kernels: crate::args::KernelArgs,
    /// tokenizer.json or GGUF with a vocabulary (default: the model's own)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// PEFT directory or GGUF LoRA, optionally PATH:WEIGHT; repeatable. Loss mode applies them
    /// together; suite mode runs the base, then each one on its own
    #[arg(long)]
    pub lora: Vec<String>,
    /// Loss mode: data file(s) (JSON array or JSONL, the formats `vicugna train` reads). With
    /// --suite, the report also gives each model's loss on them
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// How --data records are templated: instruct, alpaca, chat, fixed or none
    #[arg(long, value_enum, default_value_t = TrainTemplateArg::Chat)]
    pub template: TrainTemplateArg,
    /// The `fixed` template's instruction
    #[arg(long, default_value = data::MEDICAL_INSTRUCTION)]
    pub instruction: String,
    /// Tokens per record (prompt + response), as in training
    #[arg(long, default_value_t = 256)]
    pub cutoff_len: usize,
    /// Loss mode: print {"loss","ppl","tokens","records"} alone on the last line
    #[arg(long)]
    pub json: bool,
    /// Suite mode: JSONL of {"id", "prompt" (a string, or an array of turns), "template"}
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Suite mode: the Markdown report (its JSON twin is written beside it, .json)
    #[arg(long, requires = "suite")]
    pub out: Option<PathBuf>,
    /// Suite mode: softmax temperature; 0 = greedy
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Suite mode: nucleus sampling threshold
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Suite mode: sample among the K most likely tokens only (0 = all)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Suite mode: repetition penalty (Chinese-Vicuna's 1.3 by default)
    #[arg(long, default_value_t = 1.3)]
    pub repetition_penalty: f32,
    /// Suite mode: the most tokens per answer
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Suite mode: sampling seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Context budget the chat history is fitted into
    #[arg(long, default_value_t = 2048)]
    pub max_context: usize,
    /// Suite mode: take the runs of an earlier report (its JSON) instead of recomputing them when
    /// the model, suite, data and sampling are the same (e.g. the base's answers, made once)
    #[arg(long, requires = "suite")]
    pub reuse: Option<PathBuf>,
    /// No progress output
    #[arg(long)]
    pub quiet: bool,
}

/// Loss-mode result.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    pub loss: f64,
    pub ppl: f64,
    pub tokens: usize,
    pub records: usize,
}

/// Several adapters as one: ranks stacked, each B scaled by its weight · scale, so one LoRA pair
/// per projection gives exactly Σ wᵢ·sᵢ·Bᵢ Aᵢ.
pub fn combine(adapters: &[(LoraAdapter, f32)], cfg: &Config) -> Result<LoraAdapter> {
    let mut slots: Vec<Option<LoraEntry>> = (0..cfg.num_layers * 7).map(|_| None).collect();
    for (a, w) in adapters {
        a.check_fits(cfg).with_context(|| format!("adapter {} does not fit the base", a.source))?;
        for e in &a.entries {
            let (o, _) = e.proj.shape(cfg);
            let b = a.b_for(e, cfg);
            let s = e.scale * w;
            let slot = &mut slots[e.layer * 7 + e.proj as usize];
            let mut merged = match slot.take() {
                None => LoraEntry { layer: e.layer, proj: e.proj, r: 0, scale: 1.0, a: vec![], b: vec![0.0; 0] },
                Some(m) => m,
            };
            let r0 = merged.r;
            let mut nb = vec![0f32; o * (r0 + e.r)];
            for row in 0..o {
                nb[row * (r0 + e.r)..row * (r0 + e.r) + r0].copy_from_slice(&merged.b[row * r0..(row + 1) * r0]);
                for k in 0..e.r {
                    nb[row * (r0 + e.r) + r0 + k] = b[row * e.r + k] * s;
                }
            }
            merged.a.extend_from_slice(&e.a);
            merged.b = nb;
            merged.r = r0 + e.r;
            *slot = Some(merged);
        }
    }
    let entries: Vec<LoraEntry> = slots.into_iter().flatten().collect();
    let r = entries.iter().map(|e| e.r).max().unwrap_or(0);
    Ok(LoraAdapter {
        name: "combined".into(),
        source: adapters.iter().map(|(a, w)| format!("{}:{w}", a.source)).collect::<Vec<_>>().join("+"),
        interleaved: cfg.rope_interleaved,
        r,
        alpha: r as f64,
        use_rslora: false,
        target_modules: vec![],
        base_model: None,
        entries,
    })
}

/// The adapter's identity for --reuse (see `Run::adapter_sha256`).
fn adapter_sha256(spec: &str) -> Result<String> {
    use sha2::Digest;
    let (p, _) = parse_lora(spec)?;
    let files =
        if p.is_dir() { vec![p.join("adapter_config.json"), p.join("adapter_model.safetensors")] } else { vec![p] };
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(hex::encode(h.finalize()))
}

fn load_adapters(specs: &[String]) -> Result<Vec<(LoraAdapter, f32)>> {
    specs
        .iter()
        .map(|s| {
            let (p, w) = parse_lora(s)?;
            let a = LoraAdapter::load(&p).with_context(|| format!("loading adapter {}", p.display()))?;
            Ok((a, w))
        })
        .collect()
}

/// Progress on stderr: an indicatif bar on a terminal, a line every 10 items (and the last) otherwise.
struct Progress {
    what: String,
    total: usize,
    quiet: bool,
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(what: &str, total: usize, quiet: bool) -> Self {
        let bar = if quiet { indicatif::ProgressBar::hidden() } else { crate::progress::bar(total as u64, what) };
        Progress { what: what.into(), total, quiet, bar }
    }
    fn tick(&self, done: usize, extra: &str) {
        if self.quiet {
            return;
        }
        if !self.bar.is_hidden() {
            self.bar.set_position(done as u64);
            self.bar.set_message(extra.to_string());
            if done == self.total {
                self.bar.finish();
            }
        } else if done == self.total || done.is_multiple_of(10) {
            let secs = self.bar.elapsed().as_secs_f64();
            eprintln!("{} {done}/{} {extra} {secs:.0}s", self.what, self.total);
        }
    }
}

/// Token-mean cross-entropy of examples under base + adapter (None: the base alone).
fn loss_of(
    model: &FrozenModel<vicugna_train::cpu::CpuTrain>,
    adapter: &LoraAdapter,
    examples: &[Example],
    label: &str,
    quiet: bool,
) -> Result<Loss> {
    let lora = LoraParams::new(&model.be, &model.cfg, adapter)?;
    let p = Progress::new(&format!("eval loss ({label})"), examples.len(), quiet);
    let (mut sum, mut n) = (0f64, 0usize);
    for (i, ex) in examples.iter().enumerate() {
        sum += model.loss(&lora, &ex.tokens, &ex.targets)?;
        n += ex.n_targets();
        p.tick(i + 1, &format!("loss {:.4}", sum / n.max(1) as f64));
    }
    if n == 0 {
        bail!("no response tokens to evaluate");
    }
    let loss = sum / n as f64;
    Ok(Loss { loss, ppl: loss.exp(), tokens: n, records: examples.len() })
}

struct LossEval {
    model: FrozenModel<vicugna_train::cpu::CpuTrain>,
    examples: Vec<Example>,
}

fn loss_eval(a: &EvalArgs, w: &ModelWeights, tk: &Tokenizer) -> Result<LossEval> {
    let cfg = &w.cfg;
    let (bos, eos) = data::bos_eos(cfg, tk)?;
    let t = Templating {
        template: a.template.into(),
        instruction: a.instruction.clone(),
        cutoff_len: a.cutoff_len,
        train_on_inputs: false,
    };
    let examples = vicugna_train::run::examples_of(&a.data, false, &t, tk, bos, eos, &mut std::io::stderr())?;
    if examples.is_empty() {
        bail!("--data: no records with response tokens");
    }
    Ok(LossEval { model: FrozenModel::new(vicugna_train::cpu::CpuTrain, w)?, examples })
}

/// `vicugna eval`: loss mode or suite mode.
pub fn run(a: &EvalArgs, out: &mut dyn Write) -> Result<()> {
    if a.suite.is_none() && a.data.is_empty() {
        bail!("give --data FILE (held-out loss) or --suite FILE (prompt suite report)");
    }
    let w = ModelWeights::load(&a.model).with_context(|| format!("loading model {}", a.model.display()))?;
    let tk = load_tokenizer(&a.model, a.tokenizer.as_deref())?;
    let adapters = load_adapters(&a.lora)?;
    match &a.suite {
        None => {
            let le = loss_eval(a, &w, &tk)?;
            let combined = combine(&adapters, &w.cfg)?;
            let label = if adapters.is_empty() { "base".to_string() } else { a.lora.join(" + ") };
            let l = loss_of(&le.model, &combined, &le.examples, &label, a.quiet)?;
            if !a.json {
                writeln!(
                    out,
                    "{label}: loss {:.4}, perplexity {:.3} over {} tokens of {} records",
                    l.loss, l.ppl, l.tokens, l.records
                )?;
            }
            writeln!(out, "{}", serde_json::to_string(&l)?)?;
        }
        Some(suite) => {
            let items = read_suite(suite)?;
            let report = run_suite(a, &w, &tk, &adapters, &items)?;
            let md = report.markdown();
            match &a.out {
                Some(p) => {
                    write_file(p, md.as_bytes())?;
                    let j = p.with_extension("json");
                    write_file(&j, serde_json::to_string_pretty(&report)?.as_bytes())?;
                    writeln!(out, "wrote {} and {}", p.display(), j.display())?;
                    writeln!(out, "{}", report.summary_table())?;
                }
                None => write!(out, "{md}")?,
            }
        }
    }
    Ok(())
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = p.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("renaming to {}", p.display()))
}

/// One prompt of the suite: one turn, or several (each answered with the model's own earlier
/// answers as history).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SuiteItem {
    pub id: String,
    pub turns: Vec<String>,
    pub template: Template,
}

pub fn read_suite(path: &Path) -> Result<Vec<SuiteItem>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let id = v["id"].as_str().with_context(|| format!("{}: `id` must be a string", at()))?.to_string();
        let turns: Vec<String> = match &v["prompt"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(t) => t
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<_>>()
                .with_context(|| format!("{}: `prompt` array must hold strings", at()))?,
            _ => bail!("{}: `prompt` must be a string or an array of turns", at()),
        };
        if turns.is_empty() || turns.iter().any(|t| t.trim().is_empty()) {
            bail!("{}: `prompt` has an empty turn", at());
        }
        let template: Template = match v.get("template") {
            None | Some(serde_json::Value::Null) => Template::Chat,
            Some(t) => t
                .as_str()
                .with_context(|| format!("{}: `template` must be a string", at()))?
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{}: `template`: {e}", at()))?,
        };
        if turns.len() > 1 && template != Template::Chat {
            bail!("{}: several turns need \"template\": \"chat\"", at());
        }
        if items.iter().any(|x: &SuiteItem| x.id == id) {
            bail!("{}: `id` {id:?} appears twice", at());
        }
        items.push(SuiteItem { id, turns, template });
    }
    if items.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(items)
}

/// What one answer looks like, measured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AnswerStats {
    /// CJK characters among letters (None: the answer has no letters, e.g. only digits).
    pub cjk_share: Option<f64>,
    pub ended_on_eos: bool,
    /// A role marker (User:/Assistant:/用户：/助手：) in the text, or generation cut at one.
    pub role_leak: bool,
    /// Distinct character 4-grams over all 4-grams (1.0 = no repetition; None: too short).
    pub distinct_4: Option<f64>,
    pub new_tokens: usize,
}

impl AnswerStats {
    pub fn mostly_chinese(&self) -> bool {
        self.cjk_share.is_none_or(|s| s >= 0.5)
    }
    /// A loop: under half of the character 4-grams distinct.
    pub fn degenerate(&self) -> bool {
        self.distinct_4.is_some_and(|d| d < 0.5)
    }
}

pub fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The measures of one answer.
pub fn answer_stats(text: &str, stop: StopReason, new_tokens: usize) -> AnswerStats {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    let cjk = text.chars().filter(|&c| is_cjk(c)).count();
    let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let distinct_4 = (chars.len() >= 24).then(|| {
        let grams: Vec<&[char]> = chars.windows(4).collect();
        let set: std::collections::HashSet<&[char]> = grams.iter().copied().collect();
        set.len() as f64 / grams.len() as f64
    });
    const MARKERS: [&str; 6] = ["User:", "User：", "Assistant:", "Assistant：", "用户：", "用户:"];
    AnswerStats {
        cjk_share: (letters > 0).then(|| cjk as f64 / letters as f64),
        ended_on_eos: stop == StopReason::Eos,
        role_leak: stop == StopReason::StopString || MARKERS.iter().any(|m| text.contains(m)),
        distinct_4,
        new_tokens,
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Answer {
    pub id: String,
    pub turn: usize,
    pub prompt: String,
    pub text: String,
    pub stats: AnswerStats,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Run {
    /// "base", or the adapter as given (PATH[:WEIGHT]).
    pub name: String,
    /// SHA-256 of the adapter's files (adapter_config.json then adapter_model.safetensors, or the
    /// GGUF LoRA): --reuse takes a run only for the same adapter, not merely the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_sha256: Option<String>,
    pub loss: Option<Loss>,
    pub answers: Vec<Answer>,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    pub model: String,
    pub suite: String,
    pub data: Vec<String>,
    pub sampling: serde_json::Value,
    pub runs: Vec<Run>,
}

fn run_suite(
    a: &EvalArgs,
    w: &ModelWeights,
    tk: &Tokenizer,
    adapters: &[(LoraAdapter, f32)],
    items: &[SuiteItem],
) -> Result<Report> {
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        max_new_tokens: a.max_new_tokens,
        min_new_tokens: 0,
        num_beams: 1,
        length_penalty: 1.0,
        early_stopping: EarlyStoppingArg::False,
        stop: vec![],
        seed: a.seed,
    };
    let mut model = Model::new(a.kernels.cpu()?, w)?;
    let base_cfg = sampling.config(tk, &model.cfg.eos_token_ids, Template::None)?;
    let chat_cfg = sampling.config(tk, &model.cfg.eos_token_ids, Template::Chat)?;
    let le = if a.data.is_empty() { None } else { Some(loss_eval(a, w, tk)?) };
    // f32 settings as written on the command line (1.3, not 1.2999999523162842)
    let short = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
    let sampling_json = serde_json::json!({
        "temperature": short(a.temperature), "top_p": short(a.top_p), "top_k": a.top_k,
        "repetition_penalty": short(a.repetition_penalty), "max_new_tokens": a.max_new_tokens, "seed": a.seed,
    });
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut report = Report {
        model: file_name(&a.model),
        suite: a.suite.as_deref().map(file_name).unwrap_or_default(),
        data: a.data.iter().map(|d| file_name(d)).collect(),
        sampling: sampling_json,
        runs: vec![],
    };
    let reusable: Vec<Run> = match &a.reuse {
        None => vec![],
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let old: Report = serde_json::from_str(&text).with_context(|| format!("{}: not a report", p.display()))?;
            let same = old.model == report.model
                && old.suite == report.suite
                && old.data == report.data
                && old.sampling == report.sampling;
            if !same {
                bail!("--reuse {}: made with another model, suite, data or sampling", p.display());
            }
            old.runs
        }
    };
    let mut runs = Vec::new();
    let names: Vec<String> = std::iter::once("base".to_string()).chain(a.lora.iter().cloned()).collect();
    let n_turns: usize = items.iter().map(|i| i.turns.len()).sum();
    for (k, name) in names.iter().enumerate() {
        let sha = if k == 0 { None } else { Some(adapter_sha256(name)?) };
        if let Some(r) =
            reusable.iter().find(|r| &r.name == name && r.adapter_sha256 == sha && r.answers.len() == n_turns)
        {
            if !a.quiet {
                eprintln!("suite ({name}): reused from {}", a.reuse.as_ref().expect("reusable").display());
            }
            runs.push(r.clone());
            continue;
        }
        // one resident base: detach the previous adapter, attach this one
        for (n, _) in model.adapters() {
            model.detach(&n);
        }
        let single: Vec<(LoraAdapter, f32)> = if k == 0 { vec![] } else { vec![adapters[k - 1].clone()] };
        if let Some((ad, wt)) = single.first() {
            let mut ad = ad.clone();
            ad.name = name.clone();
            model.attach(&ad, *wt).with_context(|| format!("attaching {name}"))?;
        }
        let loss = match &le {
            Some(le) => {
                let c = combine(&single, &w.cfg)?;
                Some(loss_of(&le.model, &c, &le.examples, name, a.quiet)?)
            }
            None => None,
        };
        let t0 = Instant::now();
        let p = Progress::new(&format!("suite ({name})"), n_turns, a.quiet);
        let mut answers = Vec::new();
        for item in items {
            let mut history: Vec<Turn> = Vec::new();
            for (ti, turn) in item.turns.iter().enumerate() {
                let cfg: &GenerationConfig = if item.template == Template::Chat { &chat_cfg } else { &base_cfg };
                let ids = prompt::prompt_ids(tk, item.template, &history, turn, None, a.max_context, a.max_new_tokens)?;
                let g = generate(&model, tk, &ids, cfg, |_| true).with_context(|| format!("{}: {name}", item.id))?;
                let text = g.text.trim().to_string();
                let stats = answer_stats(&text, g.stop, g.ids.len());
                history.push(Turn { input: turn.clone(), output: text.clone() });
                answers.push(Answer { id: item.id.clone(), turn: ti + 1, prompt: turn.clone(), text, stats });
                p.tick(answers.len(), &item.id);
            }
        }
        runs.push(Run { name: name.clone(), adapter_sha256: sha, loss, answers, seconds: t0.elapsed().as_secs_f64() });
    }
    report.runs = runs;
    Ok(report)
}

fn pct(n: usize, d: usize) -> String {
    format!("{n}/{d} ({:.0}%)", 100.0 * n as f64 / d.max(1) as f64)
}

impl Report {
    /// One row per run: held-out loss and the suite's measures.
    pub fn summary_table(&self) -> String {
        let mut s = String::from(
            "| model | held-out loss (ppl) | mostly Chinese | ended on EOS | role-marker leaks | loops (distinct-4 < 0.5) | mean new tokens | seconds |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.runs {
            let n = r.answers.len();
            let c = |f: &dyn Fn(&AnswerStats) -> bool| r.answers.iter().filter(|a| f(&a.stats)).count();
            let loss = r.loss.map(|l| format!("{:.4} ({:.2})", l.loss, l.ppl)).unwrap_or_else(|| "—".into());
            let mean = r.answers.iter().map(|a| a.stats.new_tokens).sum::<usize>() as f64 / n.max(1) as f64;
            s += &format!(
                "| {} | {loss} | {} | {} | {} | {} | {mean:.0} | {:.0} |\n",
                r.name,
                pct(c(&|s| s.mostly_chinese()), n),
                pct(c(&|s| s.ended_on_eos), n),
                c(&|s| s.role_leak),
                c(&|s| s.degenerate()),
                r.seconds
            );
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Prompt suite report\n\nModel `{}`, suite `{}`, sampling `{}`.\n\n",
            self.model, self.suite, self.sampling
        );
        if !self.data.is_empty() {
            s += &format!(
                "Held-out loss: token-mean cross-entropy on the response tokens of {}.\n\n",
                self.data.join(", ")
            );
        }
        s += &self.summary_table();
        s += "\nPer answer: CJK share of letters · EOS (✓) or cut at the token limit (✗) · role-marker leak · distinct character 4-grams · new tokens.\n";
        let first = match self.runs.first() {
            Some(r) => r,
            None => return s,
        };
        for (i, a) in first.answers.iter().enumerate() {
            let title = if a.turn > 1 { format!("{} (turn {})", a.id, a.turn) } else { a.id.clone() };
            s += &format!("\n## {title}\n\n**Prompt:** {}\n", a.prompt);
            for r in &self.runs {
                let Some(x) = r.answers.get(i) else { continue };
                let st = &x.stats;
                let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into());
                s += &format!(
                    "\n**{}** — CJK {} · {} · {} · distinct-4 {} · {} tokens\n\n",
                    r.name,
                    f(st.cjk_share),
                    if st.ended_on_eos { "EOS ✓" } else { "EOS ✗" },
                    if st.role_leak { "role leak ✗" } else { "no leak" },
                    f(st.distinct_4),
                    st.new_tokens
                );
                let quoted: String = x.text.lines().map(|l| format!("> {l}\n")).collect();
                s += if quoted.is_empty() { "> (empty)\n" } else { &quoted };
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_measures() {
        let s = answer_stats("北京是中国的首都。Beijing", StopReason::Eos, 9);
        assert!((s.cjk_share.unwrap() - 8.0 / 15.0).abs() < 1e-9, "{s:?}");
        assert!(s.ended_on_eos && !s.role_leak && s.mostly_chinese());
        assert_eq!(s.distinct_4, None, "too short to measure repetition");
        assert_eq!(answer_stats("1024", StopReason::Eos, 2).cjk_share, None);
        assert!(answer_stats("1024", StopReason::Eos, 2).mostly_chinese(), "digits only are not 'not Chinese'");
        let leak = answer_stats("好的。\nUser：你好", StopReason::MaxTokens, 9);
        assert!(leak.role_leak && !leak.ended_on_eos);
        assert!(answer_stats("好的。", StopReason::StopString, 3).role_leak, "cut at a role marker");
        let lp = answer_stats(&"我爱北京天安门".repeat(20), StopReason::MaxTokens, 140);
        assert!(lp.degenerate(), "{lp:?}");
        let fine = answer_stats(
            "光合作用是植物利用阳光、水和二氧化碳制造有机物并释放氧气的过程，它为地球上的生命提供了能量。",
            StopReason::Eos,
            40,
        );
        assert!(!fine.degenerate() && fine.distinct_4.unwrap() > 0.9, "{fine:?}");
        let en = answer_stats("Pizza is a dish of Italian origin.", StopReason::Eos, 9);
        assert!(!en.mostly_chinese());
    }

    #[test]
    fn combined_adapters_equal_the_weighted_sum() {
        let cfg = Config {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            ..Config::llama_defaults()
        };
        let mk = |seed: u64, r: usize, scale: f32| {
            let mut entries = Vec::new();
            let (o, i) = vicugna_core::Proj::Q.shape(&cfg);
            let f = |k: usize| ((k as u64 * 2654435761 + seed) % 1000) as f32 / 1000.0 - 0.5;
            entries.push(LoraEntry {
                layer: 0,
                proj: vicugna_core::Proj::Q,
                r,
                scale,
                a: (0..r * i).map(f).collect(),
                b: (0..o * r).map(|k| f(k + 7)).collect(),
            });
            LoraAdapter {
                name: format!("a{seed}"),
                source: format!("a{seed}"),
                interleaved: cfg.rope_interleaved,
                r,
                alpha: scale as f64 * r as f64,
                use_rslora: false,
                target_modules: vec!["q_proj".into()],
                base_model: None,
                entries,
            }
        };
        let (a, b) = (mk(1, 2, 2.0), mk(5, 3, 0.5));
        let c = combine(&[(a.clone(), 0.7), (b.clone(), 1.5)], &cfg).unwrap();
        let (o, i) = vicugna_core::Proj::Q.shape(&cfg);
        let delta = |e: &LoraEntry, w: f32| -> Vec<f32> {
            let mut d = vec![0f32; o * i];
            for r in 0..o {
                for c in 0..i {
                    d[r * i + c] = (0..e.r).map(|k| e.b[r * e.r + k] * e.a[k * i + c]).sum::<f32>() * e.scale * w;
                }
            }
            d
        };
        let (da, db, dc) = (delta(&a.entries[0], 0.7), delta(&b.entries[0], 1.5), delta(&c.entries[0], 1.0));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].r, 5);
        for k in 0..o * i {
            assert!((dc[k] - da[k] - db[k]).abs() < 1e-5, "at {k}: {} vs {}", dc[k], da[k] + db[k]);
        }
    }
}
