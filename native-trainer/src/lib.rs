//! vicugna-trainer: the native `vicugna` CLI's commands as a library (so tests call them
//! directly): LoRA/QLoRA training (`train`), logits, tokenize, generate, chat, convert, merge,
//! inspect, and the registry client (publish, pull).

pub mod bench;
pub mod commands;
pub mod registry;
pub mod train;
