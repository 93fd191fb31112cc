//! `vicugna pull`: an adapter downloaded from a registry server, every file verified by SHA-256.

use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PullArgs {
    /// The registry server
    #[arg(long, env = "VICUGNA_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// NAME (the newest version) or NAME@VERSION
    pub spec: String,
    /// Destination directory (default ./NAME-VERSION)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl PullArgs {
    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        let dir = crate::registry::pull(&self.server, &self.spec, self.out.as_deref())?;
        writeln!(out, "{}", dir.display())?;
        Ok(())
    }
}
