//! `vicugna generate`: one continuation of a prompt, streamed as text or printed as JSON.

use crate::args::{BackendKind, ModelArgs, Sampling, TemplateArg};
use crate::model::parse_ids;
use crate::with_model;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use vicugna_core::generate::generate;
use vicugna_core::prompt::{self, Template, Turn};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (the instruction, for --template instruct / alpaca / chat)
    #[arg(long, conflicts_with = "prompt_tokens")]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated (no template applied)
    #[arg(long)]
    pub prompt_tokens: Option<String>,
    /// The instruct / alpaca template's optional input
    #[arg(long)]
    pub input: Option<String>,
    /// How the prompt is worded
    #[arg(long, value_enum, default_value_t = TemplateArg::None)]
    pub template: TemplateArg,
    /// Earlier turns for --template chat: a JSON file [{"input": ..., "output": ...}, ...]
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Context budget the chat history is fitted into (with --history)
    #[arg(long, default_value_t = 2048)]
    pub max_context: usize,
    #[command(flatten)]
    pub sampling: Sampling,
    /// Print {"ids":[...],"text":"..."} at the end instead of streaming the text
    #[arg(long)]
    pub json: bool,
    /// Where the model runs
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
}

impl GenerateArgs {
    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        let (any, tk) = self.model.load(self.backend)?;
        let template = Template::from(self.template);
        let eos = with_model!(&any, |m| m.cfg.eos_token_ids.clone());
        let cfg = self.sampling.config(&tk, &eos, template)?;
        let history: Vec<Turn> = match &self.history {
            None => Vec::new(),
            Some(_) if template != Template::Chat => bail!("--history needs --template chat"),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| {
                    format!("{}: expected a JSON array of {{\"input\",\"output\"}} turns", p.display())
                })?
            }
        };
        let ids = match (&self.prompt, &self.prompt_tokens) {
            (_, Some(t)) => parse_ids(t)?,
            (Some(p), None) => prompt::prompt_ids(
                &tk,
                template,
                &history,
                p,
                self.input.as_deref(),
                self.max_context,
                cfg.max_new_tokens,
            )?,
            (None, None) => bail!("give --prompt TEXT or --prompt-tokens 1,2,3"),
        };
        let streaming = !self.json;
        let g = with_model!(&any, |m| generate(m, &tk, &ids, &cfg, |t| {
            if streaming {
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
            }
            true
        })?);
        if self.json {
            writeln!(out, "{}", serde_json::json!({"ids": g.ids, "text": g.text}))?;
        } else {
            writeln!(out)?;
        }
        Ok(())
    }
}
