//! `vicugna-server`: serve the registry (the default), or manage its tokens.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vicugna_server::auth::{self, Scope};
use vicugna_server::{AppState, Settings};

#[derive(Parser)]
#[command(name = "vicugna-server", version, about = "Vicugna's adapter registry, model host and web app server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Data directory: SQLite database, blobs, staged uploads.
    #[arg(long, env = "VICUGNA_DATA_DIR", default_value = "data", global = true)]
    data_dir: PathBuf,
    /// `sqlite://FILE` or `postgres://USER:PASSWORD@HOST/DB` (default: SQLite in the data directory).
    #[arg(long, env = "VICUGNA_DATABASE_URL", global = true)]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, env = "VICUGNA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Blob store: `file:///DIR` or `s3://BUCKET/PREFIX` (AWS_* variables for credentials and endpoint).
    #[arg(long, env = "VICUGNA_BLOB_URL")]
    blob_url: Option<String>,
    /// The built web app (default: web/dist when it exists).
    #[arg(long, env = "VICUGNA_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Largest adapter upload (bytes; K/M/G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    max_adapter_bytes: usize,
    /// Largest base-model upload (bytes; K/M/G suffixes).
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    max_model_bytes: usize,
    /// Time limit for reads and downloads to start answering (seconds).
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Time limit for a whole upload (seconds).
    #[arg(long, default_value_t = 3600)]
    upload_timeout: u64,
    /// A GGUF model to register (as `tiny-llama-q4_0`) when the registry has no model, so the chat
    /// has something to run on a fresh data directory (`make run` passes the random-weight test
    /// fixture; nothing is seeded without it).
    #[arg(long, env = "VICUGNA_SEED_MODEL")]
    seed_model: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage base models in the data directory (the server may be stopped or running).
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Manage adapters in the data directory (the server may be stopped or running).
    Adapter {
        #[command(subcommand)]
        action: AdapterAction,
    },
}

#[derive(Subcommand)]
enum AdapterAction {
    /// Register a PEFT adapter directory as NAME VERSION, validated and committed as an HTTP
    /// publish is. Idempotent: the same files under the same version are left alone and reported;
    /// other files under an existing version are refused (versions are immutable).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// Registered base model id (default: base_model_name_or_path in adapter_config.json)
        #[arg(long)]
        base: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Prompt template the adapter was trained with (chat, instruct, alpaca, ...)
        #[arg(long, default_value = "")]
        template: String,
        /// Licence line shown wherever the adapter is listed
        #[arg(long, default_value = "")]
        license: String,
        /// A JSON object of evaluation figures
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Directory with adapter_config.json and adapter_model.safetensors (and README.md)
        dir: PathBuf,
    },
    /// List the registered adapter versions.
    List,
}

#[derive(Subcommand)]
enum ModelAction {
    /// Register a GGUF file as a base model (validated as the HTTP upload is); an id that exists
    /// already is left alone and reported.
    Add {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Licence shown wherever the model is listed
        #[arg(long, default_value = "")]
        license: String,
        file: PathBuf,
    },
    /// List the registered base models.
    List,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (alone, on the last line). It is stored hashed: keep it.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "publish", value_parser = ["publish", "admin"])]
        scope: String,
    },
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
    /// List tokens (names and scopes; never the tokens).
    List,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1usize << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{s}: unknown suffix (K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("{s}: expected a size such as 512M"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "vicugna_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::new(&cli.store.data_dir);
    settings.database_url = cli.store.database_url.clone();
    match cli.command {
        Some(Command::Token { action }) => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating {}", settings.data_dir.display()))?;
            let db = vicugna_server::db::Db::connect(&settings.database_url()).await?;
            match action {
                TokenAction::Create { name, scope } => {
                    let scope = Scope::parse(&scope).expect("clap checked");
                    let token = auth::create_token(&db, &name, scope).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    eprintln!("created {} token `{name}`; it is shown once:", scope.as_str());
                    println!("{token}");
                }
                TokenAction::Revoke { name } => {
                    if !db.revoke_token(&name).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                        anyhow::bail!("no live token named `{name}`");
                    }
                    println!("revoked `{name}`");
                }
                TokenAction::List => {
                    for t in db.tokens().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                        let state = if t.revoked_at.is_some() { "revoked" } else { "live" };
                        println!("{}\t{}\t{state}", t.name, t.scope);
                    }
                }
            }
            Ok(())
        }
        Some(Command::Model { action }) => {
            let state = AppState::open(settings).await?;
            match action {
                ModelAction::Add { id, description, license, file } => {
                    if state.db.models().await.map_err(|e| anyhow::anyhow!("{e}"))?.iter().any(|m| m.id == id) {
                        println!("model `{id}` is registered already");
                        return Ok(());
                    }
                    let staged =
                        state.stage_file(&file).await.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    let files = [("model.gguf".to_string(), staged)].into_iter().collect();
                    let row = state
                        .register_model(&id, files, description, license)
                        .await
                        .map_err(|e| anyhow::anyhow!("registering {}: {e}", file.display()))?;
                    println!("registered `{}` ({}), fingerprint {}", row.id, row.architecture, row.fingerprint);
                }
                ModelAction::List => {
                    for m in state.db.models().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                        println!("{}\t{}\t{}", m.id, m.fingerprint, m.architecture);
                    }
                }
            }
            Ok(())
        }
        Some(Command::Adapter { action }) => {
            let state = AppState::open(settings).await?;
            let e = |e: vicugna_server::registry::Error| anyhow::anyhow!("{e}");
            match action {
                AdapterAction::Add { name, version, base, description, template, license, metrics, dir } => {
                    let weights = dir.join("adapter_model.safetensors");
                    if let Some(v) = state.db.version(&name, &version).await.map_err(e)? {
                        let sha = vicugna_core::identity::sha256_file(&weights)?;
                        let same = v.files.iter().any(|f| f.file == "adapter_model.safetensors" && f.sha256 == sha);
                        if same && v.deleted_at.is_none() {
                            println!("adapter `{name}` {version} is registered already");
                            return Ok(());
                        }
                        anyhow::bail!(
                            "adapter `{name}` {version} exists with other weights (or was deleted): versions are immutable, register a new version"
                        );
                    }
                    let mut files = std::collections::HashMap::new();
                    for f in vicugna_server::registry::ADAPTER_FILES {
                        let p = dir.join(f);
                        if p.is_file() {
                            let staged =
                                state.stage_file(&p).await.map_err(|err| anyhow::anyhow!("{}: {err}", p.display()))?;
                            files.insert(f.to_string(), staged);
                        }
                    }
                    let mut fields: std::collections::HashMap<String, String> =
                        [("description", description), ("template", template), ("license", license)]
                            .into_iter()
                            .filter(|(_, v)| !v.is_empty())
                            .map(|(k, v)| (k.to_string(), v))
                            .collect();
                    if let Some(b) = base {
                        fields.insert("base".into(), b);
                    }
                    if let Some(m) = metrics {
                        let text = std::fs::read_to_string(&m).with_context(|| format!("reading {}", m.display()))?;
                        fields.insert("metrics".into(), text);
                    }
                    let row = state
                        .register_adapter("admin", &name, &version, files, fields)
                        .await
                        .map_err(|err| anyhow::anyhow!("registering {}: {err}", dir.display()))?;
                    println!("registered adapter `{}` {} for base `{}`", row.name, row.version, row.base_model);
                }
                AdapterAction::List => {
                    for v in state.db.versions(None).await.map_err(e)? {
                        println!("{}\t{}\t{}\t{}", v.name, v.version, v.base_model, v.template);
                    }
                }
            }
            Ok(())
        }
        None => {
            let a = cli.serve;
            settings.blob_url = a.blob_url;
            settings.web_dir = a.web_dir.or_else(|| Some(PathBuf::from("web/dist")).filter(|d| d.is_dir()));
            settings.max_adapter_bytes = a.max_adapter_bytes;
            settings.max_model_bytes = a.max_model_bytes;
            settings.request_timeout = Duration::from_secs(a.request_timeout);
            settings.upload_timeout = Duration::from_secs(a.upload_timeout);
            settings.seed_model = a.seed_model;
            let state = AppState::open(settings).await?;
            let listener =
                tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("listening on {}", a.listen))?;
            let addr = listener.local_addr()?;
            println!("Vicugna registry listening on http://{addr}");
            vicugna_server::serve(state, listener, shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
