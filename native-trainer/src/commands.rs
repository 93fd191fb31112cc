//! The `vicugna` subcommands. Errors carry the file and field (anyhow context).

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use vicugna_core::cpu::Cpu;
use vicugna_core::generate::{generate, EarlyStopping, GenerationConfig};
use vicugna_core::gguf::GgufFile;
use vicugna_core::prompt::{self, Template, Turn};
use vicugna_core::quant::GgmlType;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{LoraAdapter, Model, ModelWeights};
use vicugna_shaders::Wgpu;

/// `PATH[:WEIGHT]` for --lora.
pub fn parse_lora(s: &str) -> Result<(PathBuf, f32)> {
    if let Some((p, w)) = s.rsplit_once(':') {
        if let Ok(w) = w.parse::<f32>() {
            return Ok((PathBuf::from(p), w));
        }
    }
    Ok((PathBuf::from(s), 1.0))
}

pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .enumerate()
        .map(|(i, t)| {
            t.trim().parse::<u32>().with_context(|| format!("token list: item {} `{t}` is not a token id", i + 1))
        })
        .collect()
}

/// A model on one of the backends this binary has (one per process, so variant sizes don't matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    Cpu(Model<Cpu>),
    Wgpu(Model<Wgpu>),
}

/// Run `$body` with `$m` bound to the concrete model, whatever its backend.
macro_rules! with_model {
    ($any:expr, |$m:ident| $body:expr) => {
        match $any {
            AnyModel::Cpu($m) => $body,
            AnyModel::Wgpu($m) => $body,
        }
    };
}

fn attach_all<B: vicugna_core::backend::Backend>(m: &mut Model<B>, loras: &[String]) -> Result<()> {
    for l in loras {
        let (p, wt) = parse_lora(l)?;
        let a = LoraAdapter::load(&p).with_context(|| format!("loading adapter {}", p.display()))?;
        m.attach(&a, wt).with_context(|| format!("attaching adapter {}", p.display()))?;
    }
    Ok(())
}

pub fn load_model(model: &Path, loras: &[String], backend: &str) -> Result<AnyModel> {
    let w = ModelWeights::load(model).with_context(|| format!("loading model {}", model.display()))?;
    Ok(match backend {
        "cpu" => {
            let mut m = Model::new(Cpu, &w)?;
            attach_all(&mut m, loras)?;
            AnyModel::Cpu(m)
        }
        "wgpu" => {
            let (device, queue, info) = Wgpu::default_device().context("--backend wgpu")?;
            eprintln!("wgpu: {} ({:?})", info.name, info.backend);
            let mut m = Model::new(Wgpu::for_adapter(device, queue, &info), &w)?;
            attach_all(&mut m, loras)?;
            AnyModel::Wgpu(m)
        }
        other => bail!("--backend `{other}` (cpu, wgpu)"),
    })
}

/// The tokenizer that belongs to a model path: tokenizer.json in an HF directory, or the
/// vocabulary embedded in a GGUF.
pub fn load_tokenizer(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    let p = explicit.unwrap_or(model);
    Tokenizer::load(p).with_context(|| format!("loading tokenizer from {}", p.display()))
}

pub fn logits_json(model: &Path, loras: &[String], tokens: &str, backend: &str) -> Result<String> {
    let ids = parse_ids(tokens)?;
    if ids.is_empty() {
        bail!("--tokens: no token ids given");
    }
    let any = load_model(model, loras, backend)?;
    let (l, vocab) = with_model!(&any, |m| {
        let mut cache = m.new_cache(ids.len())?;
        (m.forward(&ids, 0, &mut cache, true)?, m.cfg.vocab_size)
    });
    let rows: Vec<&[f32]> = l.chunks(vocab).collect();
    Ok(serde_json::json!({"tokens": ids, "logits": rows}).to_string())
}

pub fn tokenize_json(tokenizer: &Path, text: &str, bos: bool) -> Result<String> {
    let t = load_tokenizer(tokenizer, None)?;
    Ok(serde_json::json!({"ids": t.encode(text, bos)?}).to_string())
}

/// Sampling flags shared by generate and chat.
#[derive(Debug, Clone, clap::Args)]
pub struct Sampling {
    /// 0 = greedy
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Chinese-Vicuna recommends 1.3-2.0 for its adapters
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// true, false or never
    #[arg(long, default_value = "false")]
    pub early_stopping: String,
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Sampling {
    pub fn config(&self, tk: &Tokenizer, eos: &[u32]) -> Result<GenerationConfig> {
        let eos_ids = vicugna_core::generate::eos_ids(eos, tk);
        Ok(GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            temperature: self.temperature,
            do_sample: self.temperature > 0.0,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            eos_token_ids: eos_ids,
            bad_words_ids: vec![],
            stop_strings: self.stop.clone(),
            num_beams: self.num_beams.max(1),
            length_penalty: self.length_penalty,
            early_stopping: match self.early_stopping.as_str() {
                "true" => EarlyStopping::True,
                "false" => EarlyStopping::False,
                "never" => EarlyStopping::Never,
                o => bail!("--early-stopping: `{o}` (true, false, never)"),
            },
            seed: self.seed,
        })
    }
}

pub struct GenerateArgs<'a> {
    pub model: &'a Path,
    pub loras: &'a [String],
    pub tokenizer: Option<&'a Path>,
    pub prompt: Option<&'a str>,
    pub prompt_tokens: Option<&'a str>,
    pub input: Option<&'a str>,
    pub template: Template,
    /// Earlier chat turns (a JSON array of {"input","output"}) for the chat template.
    pub history: Option<&'a Path>,
    pub max_context: usize,
    pub sampling: &'a Sampling,
    pub json: bool,
    pub backend: &'a str,
}

pub fn run_generate(a: &GenerateArgs, out: &mut dyn Write) -> Result<()> {
    let any = load_model(a.model, a.loras, a.backend)?;
    let tk = load_tokenizer(a.model, a.tokenizer)?;
    let eos = with_model!(&any, |m| m.cfg.eos_token_ids.clone());
    let mut cfg = a.sampling.config(&tk, &eos)?;
    let history: Vec<Turn> = match a.history {
        None => Vec::new(),
        Some(_) if a.template != Template::Chat => bail!("--history needs --template chat"),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: expected a JSON array of {{\"input\",\"output\"}} turns", p.display()))?
        }
    };
    let ids = match (a.prompt, a.prompt_tokens) {
        (_, Some(t)) => parse_ids(t)?,
        (Some(p), None) => match a.template {
            Template::None => tk.encode(p, true)?,
            Template::Instruct => tk.encode(&prompt::instruct(p, a.input), true)?,
            Template::Alpaca => tk.encode(&prompt::alpaca(p, a.input), true)?,
            Template::Chat => prompt::chat_prompt_ids(&tk, &history, p, a.max_context, cfg.max_new_tokens)?,
        },
        (None, None) => bail!("give --prompt TEXT or --prompt-tokens 1,2,3"),
    };
    if a.template == Template::Chat {
        cfg = cfg.with_chat_rules(&tk)?;
    }
    let streaming = !a.json;
    let g = with_model!(&any, |m| generate(m, &tk, &ids, &cfg, |t| {
        if streaming {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }
        true
    })?);
    if a.json {
        writeln!(out, "{}", serde_json::json!({"ids": g.ids, "text": g.text}))?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}

/// Interactive chat with Chinese-Vicuna's chat template (multi-turn), or one instruction per line
/// with its instruct or Alpaca wording. Commands: /clear, /undo, /exit.
#[allow(clippy::too_many_arguments)]
pub fn run_chat(
    model: &Path,
    loras: &[String],
    tokenizer: Option<&Path>,
    template: Template,
    s: &Sampling,
    max_context: usize,
    backend: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    let any = load_model(model, loras, backend)?;
    let tk = load_tokenizer(model, tokenizer)?;
    let eos = with_model!(&any, |m| m.cfg.eos_token_ids.clone());
    let cfg = match template {
        Template::Chat => s.config(&tk, &eos)?.with_chat_rules(&tk)?,
        _ => s.config(&tk, &eos)?,
    };
    let mut history: Vec<Turn> = Vec::new();
    writeln!(out, "vicugna chat — /clear, /undo, /exit")?;
    loop {
        write!(out, "User: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                history.clear();
                continue;
            }
            "/undo" => {
                history.pop();
                continue;
            }
            _ => {}
        }
        let ids = match template {
            Template::Chat => prompt::chat_prompt_ids(&tk, &history, line, max_context, cfg.max_new_tokens)?,
            Template::Instruct => tk.encode(&prompt::instruct(line, None), true)?,
            Template::Alpaca => tk.encode(&prompt::alpaca(line, None), true)?,
            Template::None => tk.encode(line, true)?,
        };
        write!(out, "Assistant: ")?;
        let g = with_model!(&any, |m| generate(m, &tk, &ids, &cfg, |t| {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
            true
        })?);
        writeln!(out)?;
        history.push(Turn { input: line.to_string(), output: g.text.trim().to_string() });
    }
    Ok(())
}

fn source_gguf(model: &Path) -> Result<Option<(GgufFile, vicugna_core::Bytes)>> {
    if model.is_dir() {
        return Ok(None);
    }
    let b = vicugna_core::bytes::map_file(model)?;
    let g = GgufFile::from_bytes(&b, &model.display().to_string())?;
    Ok(Some((g, b)))
}

fn write_gguf(w: &ModelWeights, model: &Path, out: &Path) -> Result<()> {
    let src = source_gguf(model)?;
    let tj = if model.is_dir() { std::fs::read_to_string(model.join("tokenizer.json")).ok() } else { None };
    let g = w.to_gguf(src.as_ref().map(|s| &s.0), tj.as_deref())?;
    // write next to the target and rename, so a failed run never leaves a half-written model
    let tmp = out.with_extension("gguf.partial");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    g.write(&mut f).with_context(|| format!("writing {}", tmp.display()))?;
    f.into_inner().map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

pub fn run_convert(model: &Path, out: &Path, ty: &str) -> Result<()> {
    let ty = GgmlType::parse(ty)
        .filter(|t| matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1))
        .ok_or_else(|| anyhow!("--type `{ty}` (f32, f16, q8_0, q4_0, q4_1)"))?;
    let w = ModelWeights::load(model).with_context(|| format!("loading {}", model.display()))?;
    write_gguf(&w.convert(ty)?, model, out)
}

pub fn run_merge(model: &Path, loras: &[String], out: &Path) -> Result<()> {
    let mut w = ModelWeights::load(model).with_context(|| format!("loading {}", model.display()))?;
    for l in loras {
        let (p, wt) = parse_lora(l)?;
        LoraAdapter::load(&p)
            .and_then(|a| a.merge_into(&mut w, wt))
            .with_context(|| format!("merging {}", p.display()))?;
    }
    if out.extension().is_some_and(|e| e == "gguf") {
        write_gguf(&w, model, out)
    } else {
        w.save_hf_dir(out)?;
        if model.is_dir() && model.join("tokenizer.json").exists() {
            std::fs::copy(model.join("tokenizer.json"), out.join("tokenizer.json"))?;
        }
        Ok(())
    }
}

pub fn run_inspect(path: &Path, out: &mut dyn Write) -> Result<()> {
    if path.is_dir() && path.join("adapter_config.json").exists() || path.is_file() && is_gguf_adapter(path) {
        let a = LoraAdapter::load(path)?;
        writeln!(
            out,
            "adapter {}: r={} alpha={} rslora={} base={:?}",
            path.display(),
            a.r,
            a.alpha,
            a.use_rslora,
            a.base_model
        )?;
        writeln!(out, "modules: {}", a.modules().join(", "))?;
        let params: usize = a.entries.iter().map(|e| e.a.len() + e.b.len()).sum();
        writeln!(out, "{} tensor pairs, {} parameters", a.entries.len(), params)?;
        return Ok(());
    }
    if let Some((g, _)) = source_gguf(path)? {
        writeln!(
            out,
            "GGUF v{} {}: {} metadata keys, {} tensors",
            g.version,
            path.display(),
            g.metadata.len(),
            g.tensors.len()
        )?;
        for (k, v) in &g.metadata {
            writeln!(out, "  {k} = {}", v.summary())?;
        }
        for t in &g.tensors {
            writeln!(out, "  {:<32} {:>6?} {:?}", t.name, t.ty, t.dims)?;
        }
        return Ok(());
    }
    let w = ModelWeights::load(path)?;
    writeln!(out, "{}: {:?}", path.display(), w.cfg)?;
    Ok(())
}

fn is_gguf_adapter(p: &Path) -> bool {
    source_gguf(p).ok().flatten().is_some_and(|(g, _)| g.get_str("general.type") == Some("adapter"))
}
