//! vicugna-train: LoRA / QLoRA fine-tuning over vicugna-core. The [`backend::TrainBackend`]
//! trait and its CPU reference ([`cpu::CpuTrain`]), the model's LoRA forward and backward
//! ([`model`]), data and templates ([`data`]), checkpoints that resume exactly ([`checkpoint`]),
//! and the training loop ([`run::run`] of a [`TrainConfig`] → a [`TrainedAdapter`]).
//!
//! No command-line parsing, HTTP or GPU code lives here: the `vicugna` CLI (vicugna-cli) parses
//! flags into a `TrainConfig` and publishes what `run` returns.

pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod model;
pub mod run;

pub use run::{run, Lines, Progress, Silent, StepReport, TrainConfig, TrainedAdapter};

#[cfg(test)]
mod tests;
