//! `vicugna`: argument parsing only; the work is in `vicugna_trainer::commands`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use vicugna_core::prompt::Template;
use vicugna_trainer::commands::{self, GenerateArgs, Sampling};

#[derive(Parser)]
#[command(
    name = "vicugna",
    version,
    about = "Vicugna: LLaMA-family inference with LoRA adapters (Chinese-Vicuna recipe)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// LoRA / QLoRA fine-tuning (Chinese-Vicuna's recipe); writes a PEFT adapter
    Train(Box<vicugna_trainer::train::run::TrainArgs>),
    /// Held-out loss on a data file, or a prompt-suite report comparing the base and adapters
    Eval(Box<vicugna_trainer::eval::EvalArgs>),
    /// Print {"tokens":[...],"logits":[[...],...]} for every input position
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// PEFT directory or GGUF LoRA, optionally PATH:WEIGHT; repeatable
        #[arg(long)]
        lora: Vec<String>,
        #[arg(long)]
        tokens: String,
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Print {"ids":[...]} for TEXT
    Tokenize {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        no_bos: bool,
        text: String,
    },
    /// Generate a continuation (streams text; --json prints {"ids":[...],"text":"..."})
    Generate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        lora: Vec<String>,
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[arg(long, conflicts_with = "prompt_tokens")]
        prompt: Option<String>,
        #[arg(long)]
        prompt_tokens: Option<String>,
        /// the instruct / alpaca template's optional input
        #[arg(long)]
        input: Option<String>,
        #[arg(long, default_value = "none")]
        template: Template,
        /// Earlier turns for --template chat: a JSON file [{"input": ..., "output": ...}, ...]
        #[arg(long)]
        history: Option<PathBuf>,
        /// Context budget the chat history is fitted into (with --history)
        #[arg(long, default_value_t = 2048)]
        max_context: usize,
        #[command(flatten)]
        sampling: Sampling,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Publish a PEFT adapter directory to a registry server
    Publish {
        #[arg(long, env = "VICUGNA_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// A publish token (`vicugna-server token create`)
        #[arg(long, env = "VICUGNA_TOKEN", hide_env_values = true)]
        token: String,
        name: String,
        /// Semantic version, e.g. 0.1.0; a published version is immutable
        version: String,
        /// Directory with adapter_config.json and adapter_model.safetensors (and README.md)
        dir: PathBuf,
        /// The registered base model id (default: base_model_name_or_path in adapter_config.json)
        #[arg(long)]
        base: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Prompt template the adapter was trained with (instruct, chat, ...)
        #[arg(long)]
        template: Option<String>,
        /// Licence line (the base model's terms, the training data's licences)
        #[arg(long)]
        license: Option<String>,
        /// A JSON object of evaluation figures
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Print the registry's record as JSON
        #[arg(long)]
        json: bool,
    },
    /// Download an adapter (NAME or NAME@VERSION) from a registry server, verifying SHA-256
    Pull {
        #[arg(long, env = "VICUGNA_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        spec: String,
        /// Destination directory (default ./NAME-VERSION)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Interactive multi-turn chat with Chinese-Vicuna's chat template (or one instruction per
    /// line with --template instruct / alpaca)
    Chat {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        lora: Vec<String>,
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// chat (multi-turn), instruct (prompt.py's wording), alpaca (finetune.py's) or none
        #[arg(long, default_value = "chat")]
        template: Template,
        #[command(flatten)]
        sampling: Sampling,
        #[arg(long, default_value_t = 2048)]
        max_context: usize,
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// HF directory or GGUF -> GGUF of another type
    Convert {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// f32, f16, q8_0, q4_0, q4_1
        #[arg(long = "type", default_value = "f16")]
        ty: String,
    },
    /// Base + adapters -> merged model (OUT.gguf, or an HF directory)
    Merge {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, required = true)]
        lora: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Metadata, tensor table or adapter summary
    Inspect { path: PathBuf },
    /// Single-thread LoRA training tokens/s and peak memory on a random TinyStories-shaped model
    /// (one JSON line; scripts/bench-train.sh runs it beside PyTorch + PEFT)
    BenchTrain {
        #[arg(long, default_value = "stories15M")]
        shape: String,
        /// Frozen base type: f32, f16, q8_0, q4_0
        #[arg(long, default_value = "f32")]
        base: String,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
    /// Single-thread decode tokens/s on random TinyStories-shaped models vs measured bandwidth
    Bench {
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// a few steps only (smoke test)
        #[arg(long)]
        quick: bool,
        /// Measure this model file instead (prefill and decode tok/s)
        #[arg(long)]
        model: Option<PathBuf>,
        /// decode steps with --model
        #[arg(long, default_value_t = 32)]
        steps: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Logits { model, lora, tokens, backend } => {
            writeln!(stdout, "{}", commands::logits_json(&model, &lora, &tokens, &backend)?)?
        }
        Cmd::Tokenize { tokenizer, no_bos, text } => {
            writeln!(stdout, "{}", commands::tokenize_json(&tokenizer, &text, !no_bos)?)?
        }
        Cmd::Generate {
            model,
            lora,
            tokenizer,
            prompt,
            prompt_tokens,
            input,
            template,
            history,
            max_context,
            sampling,
            json,
            backend,
        } => commands::run_generate(
            &GenerateArgs {
                model: &model,
                loras: &lora,
                tokenizer: tokenizer.as_deref(),
                prompt: prompt.as_deref(),
                prompt_tokens: prompt_tokens.as_deref(),
                input: input.as_deref(),
                template,
                history: history.as_deref(),
                max_context,
                sampling: &sampling,
                json,
                backend: &backend,
            },
            &mut stdout,
        )?,
        Cmd::Chat { model, lora, tokenizer, template, sampling, max_context, backend } => commands::run_chat(
            &model,
            &lora,
            tokenizer.as_deref(),
            template,
            &sampling,
            max_context,
            &backend,
            &mut std::io::stdin().lock(),
            &mut stdout,
        )?,
        Cmd::Eval(a) => vicugna_trainer::eval::run(&a, &mut stdout)?,
        Cmd::Train(a) => {
            vicugna_trainer::train::run::run(&a, &mut std::io::stderr())?;
        }
        Cmd::Convert { model, out, ty } => commands::run_convert(&model, &out, &ty)?,
        Cmd::Merge { model, lora, out } => commands::run_merge(&model, &lora, &out)?,
        Cmd::Publish { server, token, name, version, dir, base, description, template, license, metrics, json } => {
            let v = vicugna_trainer::registry::publish(&vicugna_trainer::registry::PublishArgs {
                server: &server,
                token: &token,
                name: &name,
                version: &version,
                dir: &dir,
                base: base.as_deref(),
                description: description.as_deref(),
                template: template.as_deref(),
                license: license.as_deref(),
                metrics: metrics.as_deref(),
            })?;
            if json {
                writeln!(stdout, "{v}")?;
            } else {
                writeln!(stdout, "published {name} {version} for base {}", v["base_model"].as_str().unwrap_or("?"))?;
            }
        }
        Cmd::Pull { server, spec, out } => {
            let dir = vicugna_trainer::registry::pull(&server, &spec, out.as_deref())?;
            writeln!(stdout, "{}", dir.display())?;
        }
        Cmd::Inspect { path } => commands::run_inspect(&path, &mut stdout)?,
        Cmd::BenchTrain { shape, base, seq, steps } => {
            vicugna_trainer::bench::run_train(&mut stdout, &shape, &base, seq, steps)?
        }
        Cmd::Bench { backend, model: Some(m), steps, .. } => {
            vicugna_trainer::bench::run_model(&mut stdout, &m, &backend, steps)?
        }
        Cmd::Bench { backend, quick, model: None, .. } => match backend.as_str() {
            "cpu" => vicugna_trainer::bench::run(&mut stdout, quick)?,
            "wgpu" => vicugna_trainer::bench::run_wgpu(&mut stdout, quick)?,
            other => anyhow::bail!("--backend `{other}` (cpu, wgpu)"),
        },
    }
    Ok(())
}
