//! The registry's service logic: register base models and adapter versions, look them up, delete
//! versions, and keep the blob store consistent with the metadata (commit, collect, sweep). The
//! HTTP handlers (`api.rs`) and the admin commands (`vicugna-server model add`, `adapter add`)
//! both call it; it knows nothing of HTTP, and its [`Error`] says what went wrong in its own
//! terms (the handlers map it to a status).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::blobs::Staged;
use crate::db::{now_ms, FileRow, ModelRow, VersionRow};
use crate::inspect;
use crate::validate::{check_name, check_version, truncate};
use crate::AppState;

/// What a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name, version or field the caller has to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// It exists (or existed): models and versions are immutable.
    #[error("{0}")]
    Exists(String),
    /// The files do not make a model or an adapter of a registered base.
    #[error("{0}")]
    Rejected(String),
    /// An upload over the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The database or blob store failed: nothing the caller can fix.
    #[error("{0}")]
    Storage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn storage(e: impl std::fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Storage(format!("database: {e}"))
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage(format!("blob store: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(format!("io: {e}"))
    }
}

/// The adapter version's file parts and text fields, as `PUT /api/adapters/{name}/{version}` takes them.
pub const ADAPTER_FILES: [&str; 3] = ["adapter_config.json", "adapter_model.safetensors", "README.md"];
pub const ADAPTER_FIELDS: [&str; 5] = ["base", "description", "template", "metrics", "license"];

/// Run blocking file inspection off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(Error::storage)?
}

impl AppState {
    /// Put staged files into the blob store and run `insert`; on failure remove the blobs nothing
    /// references. Serialised with deletions so a blob is never collected while a commit needs it.
    async fn commit(&self, staged: &[&Staged], insert: impl std::future::Future<Output = Result<()>>) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        let mut result = Ok(());
        for f in staged {
            if let Err(e) = self.blobs.commit(f).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = insert.await;
        }
        if result.is_err() {
            let shas: Vec<String> = staged.iter().map(|f| f.sha256.clone()).collect();
            if let Err(e) = self.collect(&shas).await {
                tracing::warn!("collecting blobs after a failed commit: {e}");
            }
        }
        result
    }

    /// Delete those of `shas` that no live row references. Caller holds `commit_lock`.
    async fn collect(&self, shas: &[String]) -> Result<()> {
        for sha in shas {
            if !self.db.blob_referenced(sha).await? {
                self.cache.forget_blob(sha);
                self.blobs.delete(sha).await?;
            }
        }
        Ok(())
    }

    /// Start-up sweep: staged uploads of a killed process and blobs that no row references (a process
    /// killed between putting the blob and committing its row). Returns (staged, blobs) removed.
    pub async fn sweep(&self) -> Result<(usize, usize)> {
        let _guard = self.commit_lock.lock().await;
        let staged = self.blobs.sweep_tmp()?;
        let mut orphans = 0;
        for sha in self.blobs.list().await? {
            if !self.db.blob_referenced(&sha).await? {
                self.blobs.delete(&sha).await?;
                orphans += 1;
            }
        }
        Ok((staged, orphans))
    }

    /// Register a base model from staged files (the PUT handler and the bundled demo model).
    pub async fn register_model(
        &self,
        id: &str,
        mut files: HashMap<String, Staged>,
        description: String,
        license: String,
    ) -> Result<ModelRow> {
        check_name(id, "model id")?;
        let gguf = files.remove("model.gguf");
        let cfg = files.remove("config.json");
        let st = files.remove("model.safetensors");
        let tok = files.remove("tokenizer.json");
        let (info, staged) = match (gguf, cfg, st, tok) {
            (Some(g), None, None, None) => {
                let (path, sha) = (g.path.clone(), g.sha256.clone());
                let info = blocking(move || inspect::gguf_model(&path, &sha)).await?;
                (info, vec![("model.gguf", g)])
            }
            (None, Some(c), Some(w), t) => {
                let (cp, wp, sha) = (c.path.clone(), w.path.clone(), w.sha256.clone());
                let tp = t.as_ref().map(|t| t.path.clone());
                let info = blocking(move || inspect::hf_model(&cp, &wp, &sha, tp.as_deref())).await?;
                let mut v = vec![("config.json", c), ("model.safetensors", w)];
                if let Some(t) = t {
                    v.push(("tokenizer.json", t));
                }
                (info, v)
            }
            _ => {
                return Err(Error::Rejected(
                    "a base model is either `model.gguf` alone or `config.json` + `model.safetensors` \
                     (+ `tokenizer.json`)"
                        .into(),
                ))
            }
        };
        let row = ModelRow {
            id: id.to_string(),
            fingerprint: info.fingerprint,
            format: info.format.to_string(),
            architecture: info.architecture,
            config: serde_json::to_string(&info.config).map_err(Error::storage)?,
            tokenizer: info.tokenizer,
            description,
            license,
            created_at: now_ms(),
            files: staged
                .iter()
                .map(|(n, f)| FileRow { file: n.to_string(), sha256: f.sha256.clone(), size: f.size as i64 })
                .collect(),
        };
        let refs: Vec<&Staged> = staged.iter().map(|(_, f)| f).collect();
        self.commit(&refs, self.db.insert_model(&row)).await?;
        Ok(row)
    }

    /// A registered model (cached: models are immutable).
    pub async fn model(&self, id: &str) -> Result<ModelRow> {
        check_name(id, "model id")?;
        if let Some(m) = self.cache.model(id) {
            return Ok(m);
        }
        let m = self.db.model(id).await?.ok_or_else(|| Error::NotFound(format!("no model `{id}`")))?;
        self.cache.put_model(&m);
        Ok(m)
    }

    pub async fn refuse_existing(&self, name: &str, version: &str) -> Result<()> {
        match self.db.version(name, version).await? {
            None => Ok(()),
            Some(v) => Err(Error::Exists(if v.deleted_at.is_some() {
                format!("{name} {version} was deleted; a version is never reused, publish a new one")
            } else {
                format!("{name} {version} already exists; published versions are immutable")
            })),
        }
    }

    /// Validate and commit an adapter version from staged files and text fields (the PUT
    /// handler, and `vicugna-server adapter add` for the bundled default adapter).
    pub async fn register_adapter(
        &self,
        caller: &str,
        name: &str,
        version: &str,
        mut files: HashMap<String, Staged>,
        mut fields: HashMap<String, String>,
    ) -> Result<VersionRow> {
        check_name(name, "adapter name")?;
        check_version(version)?;
        self.refuse_existing(name, version).await?;
        let missing = |p: &str| Error::Rejected(format!("part `{p}` is required"));
        let config = files.remove("adapter_config.json").ok_or_else(|| missing("adapter_config.json"))?;
        let weights = files.remove("adapter_model.safetensors").ok_or_else(|| missing("adapter_model.safetensors"))?;
        let readme = files.remove("README.md");
        let (cp, wp) = (config.path.clone(), weights.path.clone());
        let (info, lora) = blocking(move || inspect::peft_adapter(&cp, &wp)).await?;

        let base_id = fields.remove("base").filter(|b| !b.is_empty()).or(info.base_model.clone()).ok_or_else(|| {
            Error::Rejected(
                "the adapter does not name its base: give a `base` part or `base_model_name_or_path` in \
             adapter_config.json (a registered model id)"
                    .into(),
            )
        })?;
        let base = match check_name(&base_id, "base model id") {
            Ok(()) => self.db.model(&base_id).await?,
            Err(_) => None,
        }
        .ok_or_else(|| {
            Error::Rejected(format!("unknown base model {:?}: it must be a registered model id", truncate(&base_id)))
        })?;
        let base_config: vicugna_core::Config = serde_json::from_str(&base.config).map_err(Error::storage)?;
        lora.check_fits(&base_config)
            .map_err(|e| Error::Rejected(format!("the adapter does not fit base model `{}`: {e}", base.id)))?;

        let metrics = match fields.remove("metrics") {
            None => json!({}),
            Some(t) => match serde_json::from_str::<Value>(&t) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(Error::Rejected("part `metrics` must be a JSON object".into())),
            },
        };
        let mut staged = vec![("adapter_config.json", &config), ("adapter_model.safetensors", &weights)];
        if let Some(r) = &readme {
            staged.push(("README.md", r));
        }
        let row = VersionRow {
            name: name.to_string(),
            version: version.to_string(),
            base_model: base.id.clone(),
            base_fingerprint: base.fingerprint.clone(),
            r: info.r,
            alpha: info.alpha,
            target_modules: info.target_modules,
            template: fields.remove("template").unwrap_or_default(),
            description: fields.remove("description").unwrap_or_default(),
            metrics,
            license: fields.remove("license").unwrap_or_default(),
            published_by: caller.to_string(),
            created_at: now_ms(),
            deleted_at: None,
            files: staged
                .iter()
                .map(|(n, f)| FileRow { file: n.to_string(), sha256: f.sha256.clone(), size: f.size as i64 })
                .collect(),
        };
        let refs: Vec<&Staged> = staged.iter().map(|(_, f)| *f).collect();
        self.commit(&refs, self.db.insert_version(&row)).await?;
        self.cache.invalidate_adapter(name, version);
        Ok(row)
    }

    /// A published, not deleted adapter version (cached until it changes).
    pub async fn live_version(&self, name: &str, version: &str) -> Result<VersionRow> {
        check_name(name, "adapter name")?;
        check_version(version)?;
        if let Some(v) = self.cache.version(name, version) {
            return Ok(v);
        }
        let generation = self.cache.generation();
        match self.db.version(name, version).await? {
            Some(v) if v.deleted_at.is_none() => {
                self.cache.put_version(generation, &v);
                Ok(v)
            }
            _ => Err(Error::NotFound(format!("no adapter `{name}` version {version}"))),
        }
    }

    /// Stage a local file (`vicugna-server model add`), hashed and fsynced like an upload.
    pub async fn stage_file(&self, path: &std::path::Path) -> Result<Staged> {
        let f = tokio::fs::File::open(path).await?;
        self.blobs.stage(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)).await
    }

    /// Delete a published version and the blobs nothing else references.
    pub async fn delete_version(&self, name: &str, version: &str, v: &VersionRow) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        let deleted = self.db.delete_version(name, version).await?;
        self.cache.invalidate_adapter(name, version);
        if !deleted {
            return Err(Error::NotFound(format!("no adapter `{name}` version {version}")));
        }
        let shas: Vec<String> = v.files.iter().map(|f| f.sha256.clone()).collect();
        self.collect(&shas).await
    }
}
