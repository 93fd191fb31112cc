//! Registry metadata through sqlx's `Any` driver: a SQLite file by default, PostgreSQL by URL, with the
//! same queries (`$N` placeholders, which both accept) and the same migrations.

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::registry::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
}

/// A blob a row points at: the logical file name, its SHA-256 (the blob key) and size.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FileRow {
    pub file: String,
    pub sha256: String,
    pub size: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    pub id: String,
    pub fingerprint: String,
    pub format: String,
    pub architecture: String,
    #[serde(skip)]
    pub config: String,
    pub tokenizer: String,
    pub description: String,
    pub license: String,
    pub created_at: i64,
    pub files: Vec<FileRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionRow {
    pub name: String,
    pub version: String,
    pub base_model: String,
    pub base_fingerprint: String,
    pub r: i64,
    pub alpha: f64,
    pub target_modules: serde_json::Value,
    pub template: String,
    pub description: String,
    pub metrics: serde_json::Value,
    /// Licence line: the base model's terms and the training data's licences.
    pub license: String,
    pub published_by: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    pub files: Vec<FileRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenRow {
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

type ModelTuple = (String, String, String, String, String, String, String, String, i64);
type VersionTuple =
    (String, String, String, String, i64, f64, String, String, String, String, String, i64, Option<i64>, String);

const VERSION_COLUMNS: &str = "name, version, base_model, base_fingerprint, r, alpha, target_modules, template, \
     description, metrics, published_by, created_at, deleted_at, license";

fn version_row(t: VersionTuple) -> VersionRow {
    VersionRow {
        name: t.0,
        version: t.1,
        base_model: t.2,
        base_fingerprint: t.3,
        r: t.4,
        alpha: t.5,
        target_modules: serde_json::from_str(&t.6).unwrap_or(serde_json::Value::Null),
        template: t.7,
        description: t.8,
        metrics: serde_json::from_str(&t.9).unwrap_or(serde_json::Value::Null),
        published_by: t.10,
        created_at: t.11,
        deleted_at: t.12,
        license: t.13,
        files: vec![],
    }
}

/// Is this the database refusing a duplicate primary or unique key?
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A duplicate key becomes `Exists` with `msg`; any other database error is a storage failure.
fn conflict_or(e: sqlx::Error, msg: impl FnOnce() -> String) -> Error {
    if is_unique_violation(&e) {
        Error::Exists(msg())
    } else {
        e.into()
    }
}

impl Db {
    /// Connect (creating a SQLite file if needed) and bring the schema up to date.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers never block the writer; FULL sync: a commit survives power loss.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the database {}: {e}", redact(&url)))?;
        MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("migrating the database {}: {e}", redact(&url)))?;
        Ok(Db { pool })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- models ----

    pub async fn model(&self, id: &str) -> Result<Option<ModelRow>> {
        let row: Option<ModelTuple> = sqlx::query_as(
            "SELECT id, fingerprint, format, architecture, config, tokenizer, description, license, created_at \
             FROM models WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(t) = row else { return Ok(None) };
        let files = self.model_files(&t.0).await?;
        Ok(Some(model_row(t, files)))
    }

    pub async fn models(&self) -> Result<Vec<ModelRow>> {
        let rows: Vec<ModelTuple> = sqlx::query_as(
            "SELECT id, fingerprint, format, architecture, config, tokenizer, description, license, created_at \
             FROM models ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for t in rows {
            let files = self.model_files(&t.0).await?;
            out.push(model_row(t, files));
        }
        Ok(out)
    }

    async fn model_files(&self, id: &str) -> Result<Vec<FileRow>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT file, sha256, size FROM model_files WHERE model_id = $1 ORDER BY file")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(file, sha256, size)| FileRow { file, sha256, size }).collect())
    }

    /// Insert a model and its files in one transaction. A duplicate id is `Conflict`.
    pub async fn insert_model(&self, m: &ModelRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO models (id, fingerprint, format, architecture, config, tokenizer, description, license, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&m.id)
        .bind(&m.fingerprint)
        .bind(&m.format)
        .bind(&m.architecture)
        .bind(&m.config)
        .bind(&m.tokenizer)
        .bind(&m.description)
        .bind(&m.license)
        .bind(m.created_at)
        .execute(&mut *tx)
        .await;
        r.map_err(|e| conflict_or(e, || format!("model `{}` already exists; models are immutable", m.id)))?;
        for f in &m.files {
            sqlx::query("INSERT INTO model_files (model_id, file, sha256, size) VALUES ($1, $2, $3, $4)")
                .bind(&m.id)
                .bind(&f.file)
                .bind(&f.sha256)
                .bind(f.size)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- adapters ----

    /// Live (not deleted) versions, optionally only those for one base fingerprint, grouped by caller.
    pub async fn versions(&self, base: Option<&str>) -> Result<Vec<VersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM adapter_versions WHERE deleted_at IS NULL{} ORDER BY name, created_at",
            if base.is_some() { " AND base_fingerprint = $1" } else { "" }
        );
        let mut q = sqlx::query_as::<_, VersionTuple>(AssertSqlSafe(sql));
        if let Some(b) = base {
            q = q.bind(b.to_string());
        }
        let rows = q.fetch_all(&self.pool).await?;
        self.with_files(rows).await
    }

    pub async fn adapter(&self, name: &str) -> Result<Vec<VersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM adapter_versions WHERE name = $1 AND deleted_at IS NULL ORDER BY created_at"
        );
        let rows = sqlx::query_as::<_, VersionTuple>(AssertSqlSafe(sql)).bind(name).fetch_all(&self.pool).await?;
        self.with_files(rows).await
    }

    /// A version, deleted or not.
    pub async fn version(&self, name: &str, version: &str) -> Result<Option<VersionRow>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM adapter_versions WHERE name = $1 AND version = $2");
        let row = sqlx::query_as::<_, VersionTuple>(AssertSqlSafe(sql))
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(self.with_files(row.into_iter().collect()).await?.pop())
    }

    async fn with_files(&self, rows: Vec<VersionTuple>) -> Result<Vec<VersionRow>> {
        let mut out = Vec::with_capacity(rows.len());
        for t in rows {
            let mut v = version_row(t);
            let files: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT file, sha256, size FROM adapter_files WHERE name = $1 AND version = $2 ORDER BY file",
            )
            .bind(&v.name)
            .bind(&v.version)
            .fetch_all(&self.pool)
            .await?;
            v.files = files.into_iter().map(|(file, sha256, size)| FileRow { file, sha256, size }).collect();
            out.push(v);
        }
        Ok(out)
    }

    /// Insert a version and its files in one transaction; the primary key makes a second insert of the same
    /// (name, version) fail, so of two concurrent uploads exactly one commits.
    pub async fn insert_version(&self, v: &VersionRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO adapter_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&v.name)
        .bind(&v.version)
        .bind(&v.base_model)
        .bind(&v.base_fingerprint)
        .bind(v.r)
        .bind(v.alpha)
        .bind(v.target_modules.to_string())
        .bind(&v.template)
        .bind(&v.description)
        .bind(v.metrics.to_string())
        .bind(&v.published_by)
        .bind(v.created_at)
        .bind(None::<i64>)
        .bind(&v.license)
        .execute(&mut *tx)
        .await;
        r.map_err(|e| {
            conflict_or(e, || format!("{} {} already exists; published versions are immutable", v.name, v.version))
        })?;
        for f in &v.files {
            sqlx::query("INSERT INTO adapter_files (name, version, file, sha256, size) VALUES ($1, $2, $3, $4, $5)")
                .bind(&v.name)
                .bind(&v.version)
                .bind(&f.file)
                .bind(&f.sha256)
                .bind(f.size)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Mark a version deleted. Returns false when there was no live version to delete.
    pub async fn delete_version(&self, name: &str, version: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE adapter_versions SET deleted_at = $1 WHERE name = $2 AND version = $3 AND deleted_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Is this blob referenced by a model or a live adapter version?
    pub async fn blob_referenced(&self, sha256: &str) -> Result<bool> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM model_files WHERE sha256 = $1) + \
             (SELECT COUNT(*) FROM adapter_files f JOIN adapter_versions v \
                ON f.name = v.name AND f.version = v.version WHERE f.sha256 = $1 AND v.deleted_at IS NULL)",
        )
        .bind(sha256)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    pub async fn counts(&self) -> Result<(i64, i64)> {
        let (m,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM models").fetch_one(&self.pool).await?;
        let (a,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM adapter_versions WHERE deleted_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok((m, a))
    }

    // ---- tokens ----

    pub async fn insert_token(&self, name: &str, hash: &str, scope: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (name, hash, scope, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(name)
            .bind(hash)
            .bind(scope)
            .bind(now_ms())
            .bind(None::<i64>)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, || format!("a token named `{name}` already exists")))?;
        Ok(())
    }

    /// The (name, scope) of a live token with this hash.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as("SELECT name, scope FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows: Vec<(String, String, i64, Option<i64>)> =
            sqlx::query_as("SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, scope, created_at, revoked_at)| TokenRow { name, scope, created_at, revoked_at })
            .collect())
    }
}

fn model_row(t: ModelTuple, files: Vec<FileRow>) -> ModelRow {
    ModelRow {
        id: t.0,
        fingerprint: t.1,
        format: t.2,
        architecture: t.3,
        config: t.4,
        tokenizer: t.5,
        description: t.6,
        license: t.7,
        created_at: t.8,
        files,
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
