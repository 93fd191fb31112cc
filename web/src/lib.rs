//! vicugna-web: the zero-install chat app. One wasm module serves both sides: the page
//! (`start_app`, `ui.rs`: transcript, composer, settings, model and adapter pickers) and a
//! dedicated Web Worker (`start_worker`, `worker.rs`) that owns the WebGPU device and runs the
//! model on `vicugna-shaders`' wgpu backend, so the page never freezes.
//!
//! What it does: streams a GGUF from the registry tensor by tensor into GPU buffers (the whole
//! model is never in wasm memory), verifies its SHA-256 and keeps it in the Cache API keyed by
//! that hash (a damaged entry is detected and fetched again), shows progress and the GPU memory
//! the model needs; chats with Chinese-Vicuna's chat template and history fitting or its
//! instruct template, streaming whole characters as they are generated, with Stop,
//! Regenerate, Undo, Clear and Save (JSONL); lists the registry's adapters for the loaded base
//! (by fingerprint) and mixes them with weights without reloading the base.
//!
//! What it deliberately does not: use shader-f16 or subgroups (SwiftShader and many browsers
//! lack them; the f32 kernels run everywhere), load HF safetensors directories (the registry's
//! GGUF files only), or keep conversations anywhere but the page (Save writes a file).
//!
//! `protocol` is plain Rust (tested natively); the browser sides compile for wasm32 only.

pub mod protocol;

#[cfg(target_arch = "wasm32")]
mod ui;
#[cfg(target_arch = "wasm32")]
mod worker;
