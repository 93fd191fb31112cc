//! `vicugna-server`: the adapter registry the trainer publishes to and browsers download from; it also
//! serves the web app and base models.
//!
//! - Metadata in SQL through sqlx (SQLite file by default, PostgreSQL by URL, same migrations).
//! - Blobs content-addressed by SHA-256 through `object_store` (local directory or S3-compatible).
//! - Uploads are staged, hashed and fsynced, validated with vicugna-core's parsers (an adapter must fit
//!   its base model), then committed: blob first, then the metadata in one transaction. A start-up
//!   sweep removes what a killed process left behind, so a partial upload is never visible.
//!
//! Not here: user accounts (bearer tokens with a scope stand in), multi-instance coordination (one
//! server process owns a data directory / bucket prefix), the web app itself (`web/`).

pub mod api;
pub mod auth;
pub mod blobs;
pub mod cache;
pub mod db;
pub mod error;
pub mod inspect;
pub mod metrics;
pub mod registry;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;

/// The id a seed model (`Settings::seed_model`) is registered under: `make run` seeds the
/// random-weight test fixture (it babbles) when the demo model could not be fetched. The binary
/// embeds no model.
pub const DEMO_MODEL_ID: &str = "tiny-llama-q4_0";

#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// `None`: `sqlite://<data_dir>/registry.db`.
    pub database_url: Option<String>,
    /// `None`: `<data_dir>/blobs`.
    pub blob_url: Option<String>,
    /// The built web app; `None` or a directory without index.html serves the registry's own page.
    pub web_dir: Option<PathBuf>,
    pub max_adapter_bytes: usize,
    pub max_model_bytes: usize,
    pub request_timeout: Duration,
    pub upload_timeout: Duration,
    /// A GGUF file registered as `DEMO_MODEL_ID` when the registry has no model.
    pub seed_model: Option<PathBuf>,
}

impl Settings {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            data_dir: data_dir.into(),
            database_url: None,
            blob_url: None,
            web_dir: None,
            max_adapter_bytes: 1 << 30,
            max_model_bytes: 64 << 30,
            request_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(3600),
            seed_model: None,
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("registry.db").display()))
    }
}

pub struct AppState {
    pub db: db::Db,
    pub blobs: blobs::Blobs,
    pub settings: Settings,
    pub metrics: metrics::Metrics,
    pub cache: cache::Cache,
    /// Serialises blob commits with blob collection (see `AppState::commit`).
    commit_lock: tokio::sync::Mutex<()>,
}

impl AppState {
    /// Open the database and blob store, sweep what a killed process left, seed the seed model.
    pub async fn open(settings: Settings) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", settings.data_dir.display()))?;
        let db = db::Db::connect(&settings.database_url()).await?;
        let blobs = blobs::Blobs::open(&settings.data_dir, settings.blob_url.as_deref())?;
        let state = Arc::new(AppState {
            db,
            blobs,
            settings,
            metrics: Default::default(),
            cache: Default::default(),
            commit_lock: tokio::sync::Mutex::new(()),
        });
        let (staged, orphans) = state.sweep().await.map_err(|e| anyhow::anyhow!("start-up sweep: {e}"))?;
        if staged + orphans > 0 {
            tracing::warn!("start-up sweep removed {staged} partial upload(s) and {orphans} unreferenced blob(s)");
        }
        if let Some(path) = &state.settings.seed_model {
            if state.db.models().await.map_err(|e| anyhow::anyhow!("{e}"))?.is_empty() {
                let staged = state.stage_file(path).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let files = [("model.gguf".to_string(), staged)].into_iter().collect();
                state
                    .register_model(
                        DEMO_MODEL_ID,
                        files,
                        "Seed model: a 2-layer LLaMA with random weights from the test fixtures. It produces \
                         gibberish; it exists so everything runs with nothing downloaded."
                            .into(),
                        "Apache-2.0".into(),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("seeding {}: {e}", path.display()))?;
            }
        }
        Ok(state)
    }
}

/// The whole application. Tests call this with their own state.
pub fn app(state: Arc<AppState>) -> Router {
    use axum::routing::put;
    let s = &state.settings;
    let reads = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/models", get(api::list_models))
        .route("/api/models/{id}", get(api::get_model))
        .route("/api/models/{id}/files/{file}", get(api::model_file))
        .route("/api/adapters", get(api::list_adapters))
        .route("/api/adapters/{name}", get(api::get_adapter))
        .route("/api/adapters/{name}/{version}", get(api::get_version).delete(api::delete_adapter))
        .route("/api/adapters/{name}/{version}/files/{file}", get(api::adapter_file))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, s.request_timeout));
    let adapter_uploads = Router::new()
        .route("/api/adapters/{name}/{version}", put(api::put_adapter))
        .layer(DefaultBodyLimit::max(s.max_adapter_bytes));
    let model_uploads =
        Router::new().route("/api/models/{id}", put(api::put_model)).layer(DefaultBodyLimit::max(s.max_model_bytes));
    let uploads = adapter_uploads
        .merge(model_uploads)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, s.upload_timeout))
        .layer(middleware::map_response(close_after_refusal));

    let web = s.web_dir.clone().filter(|d| d.join("index.html").is_file());
    let mut router = reads.merge(uploads);
    router = match web {
        Some(dir) => router.fallback_service(
            Router::new()
                .fallback_service(ServeDir::new(dir).precompressed_br().precompressed_gzip())
                .layer(CompressionLayer::new()),
        ),
        None => router.route("/", get(registry_page)).fallback(|| async { ApiError::NotFound("not found".into()) }),
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(reject_path_tricks))
        .layer(middleware::from_fn(linger))
        .with_state(state)
}

/// A refused upload may not have been read to its end (`linger` bounds what it reads): tell the client
/// this connection is done, so it does not send its next request into a socket about to close.
async fn close_after_refusal(mut resp: Response) -> Response {
    if resp.status().is_client_error() || resp.status().is_server_error() {
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    resp
}

/// Lingering close, as nginx's `lingering_close`: a request answered before its body was read to the
/// end (a refused upload, a multipart parser that stopped at the closing boundary before the chunked
/// terminator) has the rest read and discarded before the answer goes out. A server that closes a
/// socket with unread bytes in it sends a TCP reset, and the reset can reach the client before it has
/// read the answer: it then sees a broken connection instead of the 400 or 413. Bounded by
/// `LINGER_BYTES`, `LINGER_IDLE` between reads and `LINGER_TOTAL` in all; a timed-out (408) client is
/// not waited for.
async fn linger(req: Request, next: Next) -> Response {
    use axum::body::{Body, HttpBody};
    const LINGER_BYTES: u64 = 64 << 20;
    const LINGER_IDLE: Duration = Duration::from_secs(2);
    const LINGER_TOTAL: Duration = Duration::from_secs(10);

    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let slot = Arc::new(std::sync::Mutex::new(Some(body)));
    let resp = next.run(Request::from_parts(parts, Body::new(SharedBody(slot.clone())))).await;
    let rest = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut rest) = rest.filter(|b| !b.is_end_stream() && resp.status() != StatusCode::REQUEST_TIMEOUT) {
        let _ = tokio::time::timeout(LINGER_TOTAL, async {
            let mut seen = 0u64;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(
                LINGER_IDLE,
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut rest).poll_frame(cx)),
            )
            .await
            {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    }
    resp
}

/// A request body the handler reads while `linger` keeps hold of what it leaves.
struct SharedBody(Arc<std::sync::Mutex<Option<axum::body::Body>>>);

impl axum::body::HttpBody for SharedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().map_or(true, |s| s.as_ref().is_none_or(|b| b.is_end_stream()))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().ok().and_then(|s| s.as_ref().map(|b| b.size_hint())).unwrap_or_default()
    }
}

/// 400 for paths that try to leave their segment: `..`, encoded slashes or backslashes, NUL, `//`.
async fn reject_path_tricks(req: Request, next: Next) -> Response {
    let p = req.uri().path();
    let lower = p.to_ascii_lowercase();
    let bad = p.split('/').any(|seg| seg == ".." || seg == ".")
        || p.contains("//")
        || p.contains('\\')
        || ["%2f", "%5c", "%00", "%2e%2e", "%2e."].iter().any(|t| lower.contains(t))
        || lower.contains(".%2e")
        || p.len() > 1024;
    if bad {
        return ApiError::BadRequest("invalid path".into()).into_response();
    }
    next.run(req).await
}

/// Count requests and time them by route.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "other".into());
    let method = req.method().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    state.metrics.record(&method, &route, resp.status().as_u16(), t.elapsed());
    resp
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The registry's own page (when no web app build is configured): what it holds and where.
async fn registry_page(State(s): State<Arc<AppState>>) -> error::ApiResult<Html<String>> {
    let models = s.db.models().await?;
    let adapters = s.db.versions(None).await?;
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Vicugna registry</title>\
         <body style=\"font-family:sans-serif;max-width:60em;margin:2em auto\"><h1>Vicugna registry</h1>\
         <p>The chat app is served here once <code>web/</code> is built (<code>--web-dir</code>). \
         The API: <code>/api/models</code>, <code>/api/adapters</code>, <code>/healthz</code>, <code>/metrics</code>.</p>\
         <h2>Base models</h2><ul>",
    );
    for m in &models {
        h += &format!(
            "<li><a href=\"/api/models/{0}\">{0}</a> — {1} <small>({2}; licence: {3}; fingerprint {4})</small></li>",
            esc(&m.id),
            esc(&m.description),
            esc(&m.architecture),
            esc(&m.license),
            &m.fingerprint[..12.min(m.fingerprint.len())]
        );
    }
    h += "</ul><h2>Adapters</h2><ul>";
    for v in &adapters {
        h += &format!(
            "<li><a href=\"/api/adapters/{0}\">{0}</a> {1} — base {2}, r={3} — {4}</li>",
            esc(&v.name),
            esc(&v.version),
            esc(&v.base_model),
            v.r,
            esc(&v.description)
        );
    }
    if adapters.is_empty() {
        h += "<li>none yet: <code>vicugna publish</code> adds one</li>";
    }
    h += "</ul></body></html>";
    Ok(Html(h))
}

/// Serve until `shutdown` resolves; prints the URL once listening.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
