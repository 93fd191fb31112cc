//! `vicugna publish`: a PEFT adapter directory uploaded to a registry server.

use crate::registry::{self, Publish};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// The registry server
    #[arg(long, env = "VICUGNA_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A publish token (`vicugna-server token create`)
    #[arg(long, env = "VICUGNA_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The adapter's name in the registry
    pub name: String,
    /// Semantic version, e.g. 0.1.0; a published version is immutable
    pub version: String,
    /// Directory with adapter_config.json and adapter_model.safetensors (and README.md)
    pub dir: PathBuf,
    /// The registered base model id (default: base_model_name_or_path in adapter_config.json)
    #[arg(long)]
    pub base: Option<String>,
    /// One line on what the adapter does, shown in the web app's adapter list
    #[arg(long)]
    pub description: Option<String>,
    /// Prompt template the adapter was trained with (instruct, alpaca, chat, ...)
    #[arg(long)]
    pub template: Option<String>,
    /// Licence line (the base model's terms, the training data's licences)
    #[arg(long)]
    pub license: Option<String>,
    /// A JSON file with an object of evaluation figures
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Print the registry's record as JSON
    #[arg(long)]
    pub json: bool,
}

impl PublishArgs {
    pub fn run(&self, out: &mut dyn Write) -> Result<()> {
        let v = registry::publish(&Publish {
            server: &self.server,
            token: &self.token,
            name: &self.name,
            version: &self.version,
            dir: &self.dir,
            base: self.base.as_deref(),
            description: self.description.as_deref(),
            template: self.template.as_deref(),
            license: self.license.as_deref(),
            metrics: self.metrics.as_deref(),
        })?;
        if self.json {
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "published {} {} for base {}",
                self.name,
                self.version,
                v["base_model"].as_str().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}
