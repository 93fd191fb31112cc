//! vicugna-core: one LLaMA-family model with LoRA, generic over a small backend trait; Gemma-3 is
//! the same model with configuration switches (post-norms, QK-norm, GeGLU, scaled embeddings,
//! sliding-window layers).
//!
//! What it does: loads HF safetensors + config.json and GGUF (v2/v3, F32/F16/BF16/Q8_0/Q4_0/Q4_1/
//! Q5_0/Q5_1 and Q4_K/Q5_K/Q6_K), HF tokenizer.json and GGUF-embedded vocabularies (SentencePiece
//! and byte-level BPE), PEFT and GGUF LoRA adapters; runs the model on the CPU reference backend
//! with adapters unmerged or merged; samples (greedy, temperature, top-k, top-p, repetition
//! penalty, beam search) with streaming that never splits a UTF-8 character; formats
//! Chinese-Vicuna's prompts. Generation is written once as async code (`generate_async`) so the
//! browser's WebGPU backend awaits its read-backs; `generate` drives it synchronously natively.
//! `stream` builds a model tensor by tensor from a GGUF arriving in chunks (the browser's loader).
//!
//! What it deliberately does not: training (vicugna-train), GPU kernels (vicugna-shaders and
//! the wgpu backend), networking, or model families outside the LLaMA/Gemma-3 block structure.

pub mod backend;
pub mod bytes;
pub mod config;
pub mod cpu;
pub mod error;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod identity;
pub mod layer;
pub mod lora;
pub mod model;
pub mod prompt;
pub mod qdot;
pub mod quant;
pub mod random;
pub mod sample;
pub mod stream;
pub mod synthetic;
pub mod tensors;
pub mod threads;
pub mod tokenizer;
pub mod vmath;
pub mod weights;

pub use bytes::Bytes;
pub use config::{Arch, Config};
pub use error::{Error, Result};
pub use lora::LoraAdapter;
pub use model::{Model, Pick, Picked};
pub use weights::{Matrix, ModelWeights, Proj};
