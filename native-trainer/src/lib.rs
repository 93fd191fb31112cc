//! vicugna-trainer: the native `vicugna` CLI's commands as a library (so tests call them
//! directly): LoRA/QLoRA training (`train`), logits, tokenize, generate, chat, convert, merge,
//! inspect, eval (held-out loss and prompt-suite reports), and the registry client (publish, pull).

pub mod bench;
pub mod commands;
pub mod eval;
pub mod registry;
pub mod train;
