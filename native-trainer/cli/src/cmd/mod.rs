//! One module per `vicugna` subcommand: its clap `Args` struct and what it runs.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod logits;
pub mod merge;
pub mod publish;
pub mod pull;
pub mod tokenize;
pub mod train;
