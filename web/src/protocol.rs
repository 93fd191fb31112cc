//! Messages between the page and the inference worker (JSON strings over `postMessage`), and the
//! plain-Rust rules both sides share: generation settings → `GenerationConfig` and prompt ids
//! with the same semantics as `vicugna generate`, and the GPU memory estimate. Native code and
//! tests use these too; nothing here touches the browser.

use serde::{Deserialize, Serialize};
use vicugna_core::generate::{EarlyStopping, GenerationConfig, GenerationSettings};
use vicugna_core::prompt::{self, Template, Turn};
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::Result;

/// The settings panel. Defaults: Chinese-Vicuna's chat settings (nucleus sampling with a
/// repetition penalty in its recommended 1.3–2.0 range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// "chat" (multi-turn, Chinese-Vicuna's chat template), or one instruction in "instruct"
    /// (`prompt.py`'s wording) or "alpaca" (`finetune.py`'s wording), or "none".
    pub template: Template,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub num_beams: usize,
    pub length_penalty: f32,
    /// Stop when the text ends with one of these.
    pub stop: Vec<String>,
    pub seed: u64,
    /// Tokens of context the history is fitted into (as `vicugna chat --max-context`).
    pub max_context: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            template: Template::Chat,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            repetition_penalty: 1.3,
            max_new_tokens: 128,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            stop: vec![],
            seed: 0,
            max_context: 2048,
        }
    }
}

impl Settings {
    /// What the CLI's flags of the same names give (core's `GenerationSettings::config`: sampling
    /// only when the temperature is positive, the model's and tokenizer's EOS ids, and for the
    /// chat template Chinese-Vicuna's chat rules).
    pub fn generation_config(&self, tk: &Tokenizer, model_eos: &[u32]) -> Result<GenerationConfig> {
        GenerationSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: EarlyStopping::False,
            stop: self.stop.clone(),
            seed: self.seed,
        }
        .config(tk, model_eos, self.template)
    }

    /// The prompt as token ids: the chat template with the history fitted into `max_context`,
    /// or the instruct / Alpaca wording for `input` alone (core's `prompt::prompt_ids`).
    pub fn prompt_ids(&self, tk: &Tokenizer, history: &[Turn], input: &str) -> Result<Vec<u32>> {
        prompt::prompt_ids(tk, self.template, history, input, None, self.max_context, self.max_new_tokens)
    }
}

/// One adapter version chosen in the picker, with where to fetch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    pub name: String,
    pub version: String,
    pub weight: f32,
    pub config_url: String,
    pub weights_url: String,
    /// SHA-256 of adapter_model.safetensors, as the registry recorded it.
    pub weights_sha256: String,
}

/// Page → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Load a GGUF base model (streamed into GPU buffers, cached by SHA-256).
    Load {
        model_id: String,
        url: String,
        size: u64,
        sha256: String,
        max_context: usize,
    },
    /// Cancel a load in progress.
    CancelLoad,
    Generate {
        id: u64,
        history: Vec<Turn>,
        input: String,
        settings: Settings,
    },
    /// Stop the generation in progress (the reply so far is kept).
    Stop,
    /// Make exactly these adapters active, with these weights; the base stays resident.
    SetAdapters {
        adapters: Vec<AdapterRef>,
    },
    /// Idle time: prefill what every first-turn prompt of these settings' template begins with,
    /// stopping as soon as another request arrives.
    Warm {
        settings: Settings,
    },
}

/// What went wrong, so the page can offer the right way forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoWebGpu,
    DeviceLost,
    OutOfMemory,
    TooLarge,
    Network,
    Corrupt,
    Cancelled,
    Other,
}

impl ErrorKind {
    /// The kind of a core error (GPU device lost, too large for the device, a file that does not
    /// parse); everything else is `Other`.
    pub fn of(e: &vicugna_core::Error) -> ErrorKind {
        use vicugna_core::Error as E;
        match e {
            E::DeviceLost(_) => ErrorKind::DeviceLost,
            E::TooLarge { .. } => ErrorKind::TooLarge,
            E::Format { .. } | E::Field { .. } | E::Tensor { .. } => ErrorKind::Corrupt,
            E::Device(_) | E::Io { .. } | E::Unsupported { .. } => ErrorKind::Other,
            E::ContextOverflow { .. } | E::Shape { .. } | E::Invalid(_) => ErrorKind::Other,
        }
    }
}

/// Worker → page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker has a WebGPU device.
    Ready {
        adapter: String,
        shader_f16: bool,
        max_binding: u64,
        max_buffer: u64,
    },
    /// Bytes of the model moved so far: `phase` is "download" or "cache".
    Progress {
        phase: String,
        done: u64,
        total: u64,
        bytes_per_s: f64,
        eta_s: f64,
    },
    /// The header has arrived: what the model needs on the GPU.
    Estimate {
        gpu_bytes: u64,
        summary: String,
    },
    Loaded {
        model_id: String,
        from_cache: bool,
        seconds: f64,
        gpu_bytes: u64,
        summary: String,
    },
    /// New text of reply `id` (whole characters only) and the tokens generated so far.
    Text {
        id: u64,
        text: String,
        tokens: usize,
        tok_per_s: f64,
    },
    Done {
        id: u64,
        ids: Vec<u32>,
        text: String,
        stop: String,
        prompt_tokens: usize,
        /// Prompt tokens whose keys and values were kept from the previous request (not run).
        #[serde(default)]
        prompt_reused: usize,
        new_tokens: usize,
        seconds: f64,
        tok_per_s: f64,
        first_token_ms: f64,
    },
    AdaptersSet {
        active: Vec<(String, f32)>,
    },
    /// A warm-up ran `ran` tokens; `held` of the template's `prefix` tokens are now prefilled.
    Warmed {
        ran: usize,
        held: usize,
        prefix: usize,
        seconds: f64,
    },
    /// `context` says what was being done ("load", "generate", "adapters", "device").
    Error {
        kind: ErrorKind,
        context: String,
        message: String,
    },
}

/// Bytes the wgpu backend will hold for a model: weights in their GPU layout (quants + f32 scales
/// and mins, F32/F16 as stored, types without an integer form dequantised to F32), the KV cache for
/// `max_seq` positions and the largest activations. An estimate: the pools and the pipeline
/// objects add a little.
pub fn gpu_bytes(header: &vicugna_core::gguf::GgufFile, cfg: &vicugna_core::Config, max_seq: usize) -> u64 {
    let weights: u64 =
        header.tensors.iter().map(|t| vicugna_shaders::wgpu_backend::gpu_bytes(t.ty, t.n_elements())).sum();
    let kv = 2 * cfg.num_layers as u64 * max_seq as u64 * cfg.kv_dim() as u64 * 4;
    let widest = cfg.vocab_size.max(cfg.intermediate_size * 2).max(cfg.hidden_size * 4) as u64;
    weights + kv + widest * 4 * 4
}

/// "12.3 MB", "1.2 GB".
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let r = Request::Generate {
            id: 7,
            history: vec![Turn { input: "你好".into(), output: "你好！".into() }],
            input: "北京在哪里？".into(),
            settings: Settings::default(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"type":"generate","id":7"#), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let e = Event::Error { kind: ErrorKind::DeviceLost, context: "device".into(), message: "lost".into() };
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains(r#""kind":"device_lost""#), "{s}");
        let w = Request::Warm { settings: Settings::default() };
        let s = serde_json::to_string(&w).unwrap();
        assert!(s.starts_with(r#"{"type":"warm","settings":{"#), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), w);
        let s = serde_json::to_string(&Event::Warmed { ran: 16, held: 36, prefix: 36, seconds: 1.5 }).unwrap();
        assert_eq!(s, r#"{"type":"warmed","ran":16,"held":36,"prefix":36,"seconds":1.5}"#);
        // a Done from an older worker (no prompt_reused) still reads
        let d: Event = serde_json::from_str(
            r#"{"type":"done","id":1,"ids":[],"text":"","stop":"eos","prompt_tokens":3,"new_tokens":0,"seconds":0.1,"tok_per_s":0,"first_token_ms":5}"#,
        )
        .unwrap();
        assert!(matches!(d, Event::Done { prompt_reused: 0, .. }));
        // settings the page leaves out take their defaults
        let p: Settings = serde_json::from_str(r#"{"temperature":0}"#).unwrap();
        assert_eq!(p, Settings { temperature: 0.0, ..Settings::default() });
    }

    #[test]
    fn core_errors_choose_the_pages_advice() {
        use vicugna_core::Error as E;
        assert_eq!(ErrorKind::of(&E::DeviceLost("reset".into())), ErrorKind::DeviceLost);
        let big = E::TooLarge { what: "one row".into(), need: 9 << 30, limit: 1 << 30 };
        assert_eq!(ErrorKind::of(&big), ErrorKind::TooLarge);
        assert!(big.to_string().contains("9663676416 bytes") && big.to_string().contains("1073741824"), "{big}");
        assert_eq!(ErrorKind::of(&E::format("m.gguf", "bad magic")), ErrorKind::Corrupt);
        let over = E::ContextOverflow { positions: 2049, capacity: 2048 };
        assert_eq!(ErrorKind::of(&over), ErrorKind::Other);
        assert_eq!(over.to_string(), "context overflow: 2049 positions exceed the KV cache of 2048");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(4_110_016), "4.1 MB");
        assert_eq!(human_bytes(3_800_000_000), "3.80 GB");
    }
}
