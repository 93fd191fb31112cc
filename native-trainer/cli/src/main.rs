//! `vicugna`: argument parsing only; each command is in `vicugna_cli::cmd`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use vicugna_cli::cmd::{
    bench, chat::ChatArgs, convert::ConvertArgs, eval::EvalArgs, generate::GenerateArgs, inspect::InspectArgs,
    logits::LogitsArgs, merge::MergeArgs, publish::PublishArgs, pull::PullArgs, tokenize::TokenizeArgs,
    train::TrainArgs,
};

#[derive(Parser)]
#[command(
    name = "vicugna",
    version,
    about = "Vicugna: LLaMA-family inference and LoRA training (the Chinese-Vicuna recipe)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// In the order a newcomer needs them: talk to a model, train an adapter, measure it, share it.
#[derive(Subcommand)]
enum Cmd {
    /// Interactive multi-turn chat with Chinese-Vicuna's chat template (or one instruction per
    /// line with --template instruct / alpaca)
    Chat(ChatArgs),
    /// Generate a continuation (streams text; --json prints {"ids":[...],"text":"..."})
    Generate(GenerateArgs),
    /// LoRA / QLoRA fine-tuning (Chinese-Vicuna's recipe); writes a PEFT adapter
    Train(Box<TrainArgs>),
    /// Held-out loss on a data file, or a prompt-suite report comparing the base and adapters
    Eval(Box<EvalArgs>),
    /// Publish a PEFT adapter directory to a registry server
    Publish(PublishArgs),
    /// Download an adapter (NAME or NAME@VERSION) from a registry server, verifying SHA-256
    Pull(PullArgs),
    /// Base + adapters -> merged model (OUT.gguf, or an HF directory)
    Merge(MergeArgs),
    /// HF directory or GGUF -> GGUF of another tensor type
    Convert(ConvertArgs),
    /// Metadata, tensor table or adapter summary of a file
    Inspect(InspectArgs),
    /// Print {"tokens":[...],"logits":[[...],...]} for every input position
    Logits(LogitsArgs),
    /// Print {"ids":[...]} for TEXT
    Tokenize(TokenizeArgs),
    /// Single-thread decode tokens/s on random TinyStories-shaped models vs measured bandwidth
    /// (or prefill and decode of a real model with --model)
    Bench(bench::BenchArgs),
    /// Single-thread LoRA training tokens/s and peak memory on a random TinyStories-shaped model
    /// (one JSON line; scripts/bench-train.sh runs it beside PyTorch + PEFT)
    BenchTrain(bench::BenchTrainArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Chat(a) => a.run(&mut std::io::stdin().lock(), &mut stdout),
        Cmd::Generate(a) => a.run(&mut stdout),
        Cmd::Train(a) => a.run(&mut std::io::stderr()).map(drop),
        Cmd::Eval(a) => vicugna_cli::cmd::eval::run(&a, &mut stdout),
        Cmd::Publish(a) => a.run(&mut stdout),
        Cmd::Pull(a) => a.run(&mut stdout),
        Cmd::Merge(a) => a.run(),
        Cmd::Convert(a) => a.run(),
        Cmd::Inspect(a) => a.run(&mut stdout),
        Cmd::Logits(a) => a.run(&mut stdout),
        Cmd::Tokenize(a) => a.run(&mut stdout),
        Cmd::Bench(a) => a.run(&mut stdout),
        Cmd::BenchTrain(a) => a.run(&mut stdout),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `vicugna CMD --help` explains every flag and argument of every command.
    #[test]
    fn every_flag_has_help_text() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "flags without help text: {missing:?}");
    }
}
