//! LoRA / QLoRA fine-tuning: the training backend trait and its CPU reference, the model's
//! backward pass, data and templates, and the training loop with exact resume.

pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod model;
pub mod run;

#[cfg(test)]
mod tests;
