//! `vicugna chat`: interactive chat in the terminal with Chinese-Vicuna's chat template
//! (multi-turn), or one instruction per line with its instruct or Alpaca wording.
//! Commands: /clear, /undo, /exit.

use crate::args::{BackendKind, ModelArgs, Sampling, TemplateArg};
use crate::with_model;
use anyhow::Result;
use std::io::{BufRead, Write};
use vicugna_core::generate::generate;
use vicugna_core::prompt::{self, Template, Turn};

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// chat (multi-turn), instruct (prompt.py's wording), alpaca (finetune.py's) or none
    #[arg(long, value_enum, default_value_t = TemplateArg::Chat)]
    pub template: TemplateArg,
    #[command(flatten)]
    pub sampling: Sampling,
    /// Context budget the conversation is fitted into (older turns are dropped first)
    #[arg(long, default_value_t = 2048)]
    pub max_context: usize,
    /// Where the model runs
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
}

impl ChatArgs {
    pub fn run(&self, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<()> {
        let (any, tk) = self.model.load(self.backend)?;
        let template = Template::from(self.template);
        let eos = with_model!(&any, |m| m.cfg.eos_token_ids.clone());
        let cfg = self.sampling.config(&tk, &eos, template)?;
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
            let ids = prompt::prompt_ids(&tk, template, &history, line, None, self.max_context, cfg.max_new_tokens)?;
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
}
