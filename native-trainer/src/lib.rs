//! vicugna-trainer: the native `vicugna` CLI's commands as a library (so tests call them
//! directly). Today: logits, tokenize, generate, chat, convert, merge, inspect, and the registry
//! client (publish, pull). LoRA training
//! arrives with its own issue; `vicugna train` does not exist yet rather than pretending.

pub mod bench;
pub mod commands;
pub mod registry;
