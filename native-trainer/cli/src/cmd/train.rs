//! `vicugna train`: flags → [`TrainConfig`] → [`vicugna_train::run`], then (with --publish) the
//! result uploaded to a registry. The defaults are the library's (`TrainConfig::default()`:
//! Chinese-Vicuna's recipe).

use crate::args::{BaseType, TrainTemplateArg};
use crate::registry::{self, Publish};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use vicugna_train::{TrainConfig, TrainedAdapter};

fn d() -> TrainConfig {
    TrainConfig::default()
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Base model: HF directory (config.json + model.safetensors) or GGUF; it stays frozen
    #[arg(long)]
    pub model: PathBuf,
    /// tokenizer.json or GGUF with a vocabulary (default: the model's own)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Training data (JSON array or JSONL of instruction, chat or prompt/response records);
    /// repeat to merge several files
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Output directory for the PEFT adapter and checkpoints
    #[arg(long)]
    pub out: PathBuf,
    /// How records become prompt and response: instruct (prompt.py's wording), alpaca
    /// (finetune.py's), chat, fixed (one constant instruction) or none
    #[arg(long, value_enum, default_value_t = d().template.into())]
    pub template: TrainTemplateArg,
    /// The `fixed` template's instruction
    #[arg(long, default_value_t = d().instruction)]
    pub instruction: String,
    /// Tokens per example (prompt + response); longer examples are cut
    #[arg(long, default_value_t = d().cutoff_len)]
    pub cutoff_len: usize,
    /// Also train on the prompt tokens (default: loss on the response only)
    #[arg(long)]
    pub train_on_inputs: bool,
    /// Skip malformed records (and say how many) instead of stopping at the first
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Hold out N records (a seeded draw) for the eval loss
    #[arg(long, default_value_t = d().val_size, conflicts_with = "val_data")]
    pub val_size: usize,
    /// Held-out records for the eval loss, in files of their own (same formats as --data); repeatable
    #[arg(long)]
    pub val_data: Vec<PathBuf>,
    /// Keep the frozen base as this type (q4_0 / q8_0: QLoRA); default: as loaded
    #[arg(long, value_enum)]
    pub base_type: Option<BaseType>,
    /// Projections that get a LoRA pair: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
    #[arg(long, value_delimiter = ',', default_values_t = d().target_modules)]
    pub target_modules: Vec<String>,
    /// LoRA rank
    #[arg(long, default_value_t = d().lora_r)]
    pub lora_r: usize,
    /// LoRA alpha (the update is scaled by alpha / r)
    #[arg(long, default_value_t = d().lora_alpha)]
    pub lora_alpha: f64,
    /// Dropout on the LoRA path's input
    #[arg(long, default_value_t = d().lora_dropout)]
    pub lora_dropout: f32,
    /// scale = alpha / sqrt(r) instead of alpha / r
    #[arg(long)]
    pub rslora: bool,
    /// Start from this PEFT adapter (continue-finetuning, e.g. a domain model from a general one)
    #[arg(long)]
    pub init_adapter: Option<PathBuf>,
    /// Continue an interrupted run exactly from a checkpoint (or the latest under a directory)
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Sequences per forward/backward pass
    #[arg(long, default_value_t = d().micro_batch)]
    pub micro_batch: usize,
    /// Sequences per optimizer step (gradient accumulation = batch / micro-batch)
    #[arg(long, default_value_t = d().batch)]
    pub batch: usize,
    /// Passes over the data
    #[arg(long, default_value_t = d().epochs)]
    pub epochs: usize,
    /// Optimizer steps in all (overrides --epochs)
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Peak learning rate (AdamW; linear warm-up, then linear decay to 0)
    #[arg(long, default_value_t = d().lr)]
    pub lr: f32,
    /// Steps of linear warm-up
    #[arg(long, default_value_t = d().warmup_steps)]
    pub warmup_steps: u64,
    /// Clip the gradient's global norm to this (0 = no clipping)
    #[arg(long, default_value_t = d().max_grad_norm)]
    pub max_grad_norm: f32,
    /// AdamW weight decay
    #[arg(long, default_value_t = d().weight_decay)]
    pub weight_decay: f32,
    /// Seed of the adapter's initialisation, the shuffle and the dropout masks
    #[arg(long, default_value_t = d().seed)]
    pub seed: u64,
    /// Keep the data's order in every epoch
    #[arg(long)]
    pub no_shuffle: bool,
    /// Recompute activations in the backward pass (less memory, ~1/3 more compute)
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Save a checkpoint every N steps (0: only at the end)
    #[arg(long, default_value_t = d().save_steps)]
    pub save_steps: u64,
    /// Keep the last K checkpoints
    #[arg(long, default_value_t = d().save_total_limit)]
    pub save_total_limit: usize,
    /// Eval loss every N steps (needs --val-size or --val-data)
    #[arg(long, default_value_t = d().eval_steps)]
    pub eval_steps: u64,
    /// Append one JSON object per optimizer step and per eval to this file
    #[arg(long)]
    pub log_json: Option<PathBuf>,
    /// Also write the adapter as a llama.cpp GGUF LoRA
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Stop after this many steps of this invocation (the run stays resumable; for tests)
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
    /// Publish the result to this registry server when done
    #[arg(long)]
    pub publish: Option<String>,
    /// A publish token for --publish (`vicugna-server token create`)
    #[arg(long, env = "VICUGNA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Registry name for --publish (default: the output directory's name)
    #[arg(long)]
    pub publish_name: Option<String>,
    /// Registry version for --publish
    #[arg(long, default_value = "0.1.0")]
    pub publish_version: String,
    /// The base model's registry id, recorded in adapter_config.json (default: the model's file
    /// or directory name)
    #[arg(long)]
    pub base_name: Option<String>,
    /// No progress output
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            data: self.data.clone(),
            out: self.out.clone(),
            template: self.template.into(),
            instruction: self.instruction.clone(),
            cutoff_len: self.cutoff_len,
            train_on_inputs: self.train_on_inputs,
            skip_bad_records: self.skip_bad_records,
            val_size: self.val_size,
            val_data: self.val_data.clone(),
            base_type: self.base_type.map(Into::into),
            target_modules: self.target_modules.clone(),
            lora_r: self.lora_r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            rslora: self.rslora,
            init_adapter: self.init_adapter.clone(),
            resume: self.resume.clone(),
            micro_batch: self.micro_batch,
            batch: self.batch,
            epochs: self.epochs,
            max_steps: self.max_steps,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            seed: self.seed,
            shuffle: !self.no_shuffle,
            gradient_checkpointing: self.gradient_checkpointing,
            save_steps: self.save_steps,
            save_total_limit: self.save_total_limit,
            eval_steps: self.eval_steps,
            log_json: self.log_json.clone(),
            gguf: self.gguf.clone(),
            stop_after: self.stop_after,
            base_name: self.base_name.clone(),
            quiet: self.quiet,
        }
    }

    /// Train (a progress bar and messages on stderr), then publish when asked (reported on `log`).
    pub fn run(&self, log: &mut dyn Write) -> Result<TrainedAdapter> {
        let mut bar = crate::progress::TrainBar::default();
        let done = vicugna_train::run(&self.config(), &mut bar.log(), &mut bar)?;
        if !done.finished {
            return Ok(done);
        }
        if let Some(server) = &self.publish {
            let token = self.token.as_deref().context("--publish needs --token (or VICUGNA_TOKEN)")?;
            let name = self.publish_name.clone().unwrap_or_else(|| {
                done.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "adapter".into())
            });
            let tmpl = done.template.to_string();
            registry::publish(&Publish {
                server,
                token,
                name: &name,
                version: &self.publish_version,
                dir: &done.dir,
                base: Some(&done.base_name),
                description: None,
                template: Some(&tmpl),
                license: None,
                metrics: None,
            })?;
            writeln!(log, "published {name} {} to {server}", self.publish_version)?;
        }
        Ok(done)
    }
}
