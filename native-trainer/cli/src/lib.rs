//! vicugna-cli: the `vicugna` command line as a library (so tests call the commands directly).
//! Each subcommand lives in [`cmd`] with its flags; [`args`] holds the flags and value sets
//! several share, [`model`] loads models onto a backend, [`registry`] is the registry's HTTP
//! client (publish, pull). Training itself is the `vicugna-train` library.

pub mod args;
pub mod cmd;
pub mod model;
pub mod progress;
pub mod registry;
