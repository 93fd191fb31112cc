//! Flags that several commands share, and the closed sets of values flags take (clap
//! `ValueEnum`s: `--help` lists them, a wrong value is refused with the list, and no command
//! matches strings). Each maps onto the library type it stands for.

use anyhow::Result;
use clap::ValueEnum;
use std::path::PathBuf;
use vicugna_core::generate::{EarlyStopping, GenerationConfig, GenerationSettings};
use vicugna_core::prompt::Template;
use vicugna_core::quant::GgmlType;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_train::data::TrainTemplate;

/// Where the model runs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU reference backend
    Cpu,
    /// WebGPU kernels through wgpu (Vulkan, Metal, DX12; lavapipe on machines without a GPU)
    Wgpu,
}

/// Prompt wording for inference (generate, chat, eval's suite).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateArg {
    /// Chinese-Vicuna's prompt.py instruct wording
    Instruct,
    /// Chinese-Vicuna's finetune.py / generate.py Alpaca wording
    Alpaca,
    /// Chinese-Vicuna's multi-turn chat template (User:/Assistant:)
    Chat,
    /// The text as given
    None,
}

impl From<TemplateArg> for Template {
    fn from(t: TemplateArg) -> Template {
        match t {
            TemplateArg::Instruct => Template::Instruct,
            TemplateArg::Alpaca => Template::Alpaca,
            TemplateArg::Chat => Template::Chat,
            TemplateArg::None => Template::None,
        }
    }
}

/// How training and loss-eval records become prompt and response.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainTemplateArg {
    /// Chinese-Vicuna's prompt.py instruct wording
    Instruct,
    /// Chinese-Vicuna's finetune.py Alpaca wording
    Alpaca,
    /// Chinese-Vicuna's chat template (records with history, or instruction records as one turn)
    Chat,
    /// One constant instruction (--instruction) for every record: domain models
    Fixed,
    /// Prompt and response as given, no wording added
    None,
}

impl From<TrainTemplateArg> for TrainTemplate {
    fn from(t: TrainTemplateArg) -> TrainTemplate {
        match t {
            TrainTemplateArg::Instruct => TrainTemplate::Instruct,
            TrainTemplateArg::Alpaca => TrainTemplate::Alpaca,
            TrainTemplateArg::Chat => TrainTemplate::Chat,
            TrainTemplateArg::Fixed => TrainTemplate::Fixed,
            TrainTemplateArg::None => TrainTemplate::None,
        }
    }
}

impl From<TrainTemplate> for TrainTemplateArg {
    fn from(t: TrainTemplate) -> TrainTemplateArg {
        match t {
            TrainTemplate::Instruct => TrainTemplateArg::Instruct,
            TrainTemplate::Alpaca => TrainTemplateArg::Alpaca,
            TrainTemplate::Chat => TrainTemplateArg::Chat,
            TrainTemplate::Fixed => TrainTemplateArg::Fixed,
            TrainTemplate::None => TrainTemplateArg::None,
        }
    }
}

/// Tensor types `vicugna convert` writes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertType {
    F32,
    F16,
    #[value(name = "bf16")]
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
}

impl From<ConvertType> for GgmlType {
    fn from(t: ConvertType) -> GgmlType {
        match t {
            ConvertType::F32 => GgmlType::F32,
            ConvertType::F16 => GgmlType::F16,
            ConvertType::Bf16 => GgmlType::BF16,
            ConvertType::Q8_0 => GgmlType::Q8_0,
            ConvertType::Q4_0 => GgmlType::Q4_0,
            ConvertType::Q4_1 => GgmlType::Q4_1,
        }
    }
}

/// Types the frozen base can be kept in while training (vicugna_train::run::BASE_TYPES).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<BaseType> for GgmlType {
    fn from(t: BaseType) -> GgmlType {
        match t {
            BaseType::F32 => GgmlType::F32,
            BaseType::F16 => GgmlType::F16,
            BaseType::Q8_0 => GgmlType::Q8_0,
            BaseType::Q4_0 => GgmlType::Q4_0,
        }
    }
}

/// Beam search's stopping rule (transformers' `early_stopping`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStoppingArg {
    /// Stop as soon as num_beams finished candidates exist
    True,
    /// Stop when no better candidate can be found by the heuristic (transformers' default)
    False,
    /// Stop only when no better candidate can exist
    Never,
}

impl From<EarlyStoppingArg> for EarlyStopping {
    fn from(e: EarlyStoppingArg) -> EarlyStopping {
        match e {
            EarlyStoppingArg::True => EarlyStopping::True,
            EarlyStoppingArg::False => EarlyStopping::False,
            EarlyStoppingArg::Never => EarlyStopping::Never,
        }
    }
}

/// The base model and the adapters on it: shared by every command that runs the model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Base model: a GGUF file, or an HF directory (config.json + model.safetensors + tokenizer.json)
    #[arg(long)]
    pub model: PathBuf,
    /// LoRA adapter to apply: a PEFT directory or a GGUF LoRA, optionally PATH:WEIGHT (default
    /// weight 1); repeat to mix several on the one base
    #[arg(long)]
    pub lora: Vec<String>,
    /// tokenizer.json or a GGUF with a vocabulary (default: the model's own)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub kernels: KernelArgs,
}

/// The CPU backend's kernels and threads, for every command that runs the model.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct KernelArgs {
    /// CPU: f32 activations in every matmul (the reference the golden tests use, single-threaded)
    /// instead of activations rounded to 8 bits per block with integer dot products (llama.cpp's
    /// numerics)
    #[arg(long)]
    pub exact: bool,
    /// CPU threads for the matmuls (default: the machine's physical cores; `bench`: 1)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl KernelArgs {
    /// The CPU backend these flags ask for; `threads` when --threads is not given.
    pub fn cpu_or(self, threads: usize) -> anyhow::Result<vicugna_core::cpu::Cpu> {
        use vicugna_core::cpu::Cpu;
        use vicugna_core::threads::Threads;
        if self.exact {
            return Ok(Cpu::EXACT);
        }
        let n = self.threads.map_or(threads, usize::from);
        Ok(Cpu::FAST.with_threads(Threads::new(n)?))
    }

    /// The CPU backend these flags ask for, on the machine's physical cores by default.
    pub fn cpu(self) -> anyhow::Result<vicugna_core::cpu::Cpu> {
        self.cpu_or(vicugna_core::threads::Threads::physical_cores())
    }
}

/// Sampling and search flags shared by generate and chat (transformers' generate() semantics).
#[derive(Debug, Clone, clap::Args)]
pub struct Sampling {
    /// Softmax temperature; 0 = greedy
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0 = all)
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches P
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Divide the logits of tokens already in the text by this (Chinese-Vicuna recommends 1.3-2.0
    /// for its adapters; 1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// The most tokens to generate
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Ban end-of-sequence until this many tokens have been generated
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Beam search with this many beams (1 = no beam search)
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// Beam search: score = log-probability / length^P
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// Beam search's stopping rule
    #[arg(long, value_enum, default_value_t = EarlyStoppingArg::False)]
    pub early_stopping: EarlyStoppingArg,
    /// Stop when the text ends with this string (repeatable)
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Sampling seed (the same seed and settings give the same text)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Sampling {
    pub fn settings(&self) -> GenerationSettings {
        GenerationSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping.into(),
            stop: self.stop.clone(),
            seed: self.seed,
        }
    }

    /// The generation config every front end builds from the same settings (core's rule).
    pub fn config(&self, tk: &Tokenizer, model_eos: &[u32], template: Template) -> Result<GenerationConfig> {
        Ok(self.settings().config(tk, model_eos, template)?)
    }
}
