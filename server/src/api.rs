//! The JSON API. Handlers parse and authorise, then call the metadata store (`Db`) and the blob store.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use headers::HeaderMapExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Scope};
use crate::blobs::Staged;
use crate::db::{FileRow, ModelRow, VersionRow};
use crate::error::{ApiError, ApiResult};
use crate::registry::{ADAPTER_FIELDS, ADAPTER_FILES};
use crate::validate::{check_name, check_version, truncate};
use crate::AppState;

type St = State<Arc<AppState>>;

// ---------- multipart ----------

/// The parts of an upload: files staged (hashed, fsynced) and small text fields.
struct Parts {
    files: HashMap<String, Staged>,
    fields: HashMap<String, String>,
}

const MAX_TEXT_FIELD: usize = 64 << 10;

/// A body that broke off or ran over the limit while a file part was being staged.
fn upload_error(e: axum::extract::multipart::MultipartError) -> crate::registry::Error {
    match ApiError::from(e) {
        ApiError::PayloadTooLarge(m) => crate::registry::Error::TooLarge(m),
        other => crate::registry::Error::Rejected(other.to_string()),
    }
}

async fn read_parts(s: &AppState, mp: &mut Multipart, file_parts: &[&str], text_parts: &[&str]) -> ApiResult<Parts> {
    let mut parts = Parts { files: HashMap::new(), fields: HashMap::new() };
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or("").to_string();
        if parts.files.contains_key(&name) || parts.fields.contains_key(&name) {
            return Err(ApiError::Unprocessable(format!("part `{}` appears twice", truncate(&name))));
        }
        if file_parts.contains(&name.as_str()) {
            let staged = s.blobs.stage(field.map(|c| c.map_err(upload_error))).await?;
            s.metrics.bytes_received.fetch_add(staged.size, Ordering::Relaxed);
            parts.files.insert(name, staged);
        } else if text_parts.contains(&name.as_str()) {
            let text = field.text().await?;
            if text.len() > MAX_TEXT_FIELD {
                return Err(ApiError::Unprocessable(format!("part `{name}` is longer than {MAX_TEXT_FIELD} bytes")));
            }
            parts.fields.insert(name, text);
        } else {
            return Err(ApiError::Unprocessable(format!(
                "unexpected part `{}` (expected {})",
                truncate(&name),
                file_parts.iter().chain(text_parts).map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(parts)
}

/// An upload handler's outline: check the caller, parse the body as multipart, run `f`. What a refused
/// upload leaves unread is drained by the server's lingering close (`crate::linger`).
async fn with_upload<T>(
    s: &AppState,
    headers: &HeaderMap,
    scope: Scope,
    mp: Result<Multipart, MultipartRejection>,
    f: impl AsyncFnOnce(&mut Multipart, auth::Caller) -> ApiResult<T>,
) -> ApiResult<T> {
    let caller = auth::require(&s.db, headers, scope).await?;
    let mut mp = mp.map_err(|e| ApiError::Unprocessable(format!("expected a multipart/form-data body: {e}")))?;
    f(&mut mp, caller).await
}

// ---------- models ----------

fn model_json(m: &ModelRow) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    v["url"] = json!(format!("/api/models/{}", m.id));
    v
}

pub async fn list_models(State(s): St) -> ApiResult<Json<Value>> {
    let models = s.db.models().await?;
    Ok(Json(json!({ "models": models.iter().map(model_json).collect::<Vec<_>>() })))
}

pub async fn get_model(State(s): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let m = s.model(&id).await?;
    Ok(Json(model_json(&m)))
}

pub async fn put_model(
    State(s): St,
    Path(id): Path<String>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let result = with_upload(&s, &headers, Scope::Admin, mp, async |mp: &mut Multipart, _| {
        check_name(&id, "model id")?;
        if s.db.model(&id).await?.is_some() {
            return Err(ApiError::Conflict(format!("model `{id}` already exists; models are immutable")));
        }
        let mut parts = read_parts(
            &s,
            mp,
            &["model.gguf", "config.json", "model.safetensors", "tokenizer.json"],
            &["description", "license"],
        )
        .await?;
        let description = parts.fields.remove("description").unwrap_or_default();
        let license = parts.fields.remove("license").unwrap_or_default();
        Ok(s.register_model(&id, parts.files, description, license).await?)
    })
    .await;
    s.metrics.upload("model", outcome(&result));
    let row = result?;
    tracing::info!("registered model {id} ({})", row.fingerprint);
    Ok((StatusCode::CREATED, Json(model_json(&row))))
}

fn outcome<T>(r: &ApiResult<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ApiError::Conflict(_)) => "conflict",
        Err(ApiError::PayloadTooLarge(_)) => "too_large",
        Err(ApiError::Unprocessable(_)) | Err(ApiError::BadRequest(_)) => "invalid",
        Err(_) => "error",
    }
}

pub async fn model_file(
    State(s): St,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let m = s.model(&id).await?;
    let f = m
        .files
        .iter()
        .find(|f| f.file == file)
        .ok_or_else(|| ApiError::NotFound(format!("model `{id}` has no file {:?}", truncate(&file))))?;
    serve_blob(&s, &headers, f).await
}

// ---------- adapters ----------

#[derive(Deserialize)]
pub struct ListQuery {
    base: Option<String>,
}

fn version_json(v: &VersionRow) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
    let urls: serde_json::Map<String, Value> = v
        .files
        .iter()
        .map(|f| (f.file.clone(), json!(format!("/api/adapters/{}/{}/files/{}", v.name, v.version, f.file))))
        .collect();
    j["urls"] = Value::Object(urls);
    j
}

/// Versions grouped by adapter name, newest version (by semver) first.
fn group(versions: Vec<VersionRow>) -> Vec<Value> {
    let mut by_name: Vec<(String, Vec<VersionRow>)> = vec![];
    for v in versions {
        match by_name.iter_mut().find(|(n, _)| *n == v.name) {
            Some((_, vs)) => vs.push(v),
            None => by_name.push((v.name.clone(), vec![v])),
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut vs)| {
            vs.sort_by_key(|v| std::cmp::Reverse(semver_key(&v.version)));
            json!({
                "name": name,
                "latest": vs[0].version,
                "versions": vs.iter().map(version_json).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn semver_key(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v).ok()
}

pub async fn list_adapters(State(s): St, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    if let Some(b) = &q.base {
        if !crate::blobs::is_sha256(b) {
            return Err(ApiError::BadRequest("`base` must be a model fingerprint (64 lowercase hex digits)".into()));
        }
    }
    let versions = s.db.versions(q.base.as_deref()).await?;
    Ok(Json(json!({ "adapters": group(versions) })))
}

pub async fn get_adapter(State(s): St, Path(name): Path<String>) -> ApiResult<Response> {
    check_name(&name, "adapter name")?;
    let json_response = |b: bytes::Bytes| ([(header::CONTENT_TYPE, "application/json")], b).into_response();
    if let Some(b) = s.cache.adapter_json(&name) {
        return Ok(json_response(b));
    }
    let generation = s.cache.generation();
    let versions = s.db.adapter(&name).await?;
    let v = group(versions).pop().ok_or_else(|| ApiError::NotFound(format!("no adapter `{name}`")))?;
    let b = bytes::Bytes::from(v.to_string());
    s.cache.put_adapter_json(generation, &name, b.clone());
    Ok(json_response(b))
}

pub async fn get_version(State(s): St, Path((name, version)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    Ok(Json(version_json(&s.live_version(&name, &version).await?)))
}

pub async fn put_adapter(
    State(s): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let result = with_upload(&s, &headers, Scope::Publish, mp, async |mp: &mut Multipart, caller: auth::Caller| {
        check_name(&name, "adapter name")?;
        check_version(&version)?;
        publish(&s, &caller.name, &name, &version, mp).await
    })
    .await;
    s.metrics.upload("adapter", outcome(&result));
    let row = result?;
    tracing::info!("published {name} {version} for {} by {}", row.base_model, row.published_by);
    Ok((StatusCode::CREATED, Json(version_json(&row))))
}

async fn publish(s: &AppState, caller: &str, name: &str, version: &str, mp: &mut Multipart) -> ApiResult<VersionRow> {
    // Refuse before reading the body when the answer is already known.
    s.refuse_existing(name, version).await?;
    let parts = read_parts(s, mp, &ADAPTER_FILES, &ADAPTER_FIELDS).await?;
    Ok(s.register_adapter(caller, name, version, parts.files, parts.fields).await?)
}

pub async fn delete_adapter(
    State(s): St,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let caller = auth::require(&s.db, &headers, Scope::Publish).await?;
    let v = s.live_version(&name, &version).await?;
    if caller.scope != Scope::Admin && v.published_by != caller.name {
        return Err(ApiError::Forbidden(format!(
            "{name} {version} was published by another token; an admin token can delete it"
        )));
    }
    s.delete_version(&name, &version, &v).await?;
    tracing::info!("deleted {name} {version} by {}", caller.name);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn adapter_file(
    State(s): St,
    Path((name, version, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let v = s.live_version(&name, &version).await?;
    let f = v
        .files
        .iter()
        .find(|f| f.file == file)
        .ok_or_else(|| ApiError::NotFound(format!("{name} {version} has no file {:?}", truncate(&file))))?;
    serve_blob(&s, &headers, f).await
}

// ---------- downloads ----------

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("json") => "application/json",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A `Range` header no byte of the file satisfies (416).
#[derive(Debug, PartialEq)]
pub struct Unsatisfiable;

/// `Range: bytes=…` → `Ok(Some(range))`, `Ok(None)` to send everything (absent, multi-range or
/// syntactically invalid, as RFC 9110 allows), `Err` when unsatisfiable.
///
/// Kept by hand, on purpose: `headers` 0.4's `Range::satisfiable_ranges` drops a suffix longer
/// than the blob (RFC 9110 §14.1.3: the whole representation is sent), passes ranges that start
/// past the end, and cannot tell an invalid header (ignored) from an unsatisfiable one (416);
/// tower-http's file service serves local files, and blobs may live in S3.
pub fn parse_range(h: &str, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        return Ok(Some(size - n.min(size)..size));
    }
    let Ok(start) = a.parse::<u64>() else { return Ok(None) };
    let end = if b.is_empty() {
        size
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.saturating_add(1).min(size),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some(start..end))
}

/// Send a blob with its SHA-256 as a strong ETag, `Range` support and immutable caching.
async fn serve_blob(s: &Arc<AppState>, headers: &HeaderMap, f: &FileRow) -> ApiResult<Response> {
    let etag = format!("\"{}\"", f.sha256);
    let size = f.size as u64;
    let common = |b: axum::http::response::Builder| {
        b.header(header::ETAG, &etag)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, content_type(&f.file))
    };
    // the conditional headers by the `headers` crate: If-None-Match compares weakly, If-Range
    // strongly (a weak or date validator sends everything), as RFC 9110 says
    let tag: headers::ETag = etag.parse().map_err(ApiError::internal)?;
    if headers.typed_get::<headers::IfNoneMatch>().is_some_and(|inm| !inm.precondition_passes(&tag)) {
        return common(Response::builder().status(StatusCode::NOT_MODIFIED))
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let if_range_ok = headers.typed_get::<headers::IfRange>().is_none_or(|ir| !ir.is_modified(Some(&tag), None));
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) if if_range_ok => parse_range(h, size).map_err(|_| ApiError::RangeNotSatisfiable { size })?,
        _ => None,
    };
    let (status, r) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r),
        None => (StatusCode::OK, 0..size),
    };
    let body = if size <= crate::cache::SMALL_BLOB {
        // Small blobs (adapters, configs) come from memory after their first read.
        let all = match s.cache.blob(&f.sha256) {
            Some(b) => b,
            None => {
                let mut stream = s.blobs.get(&f.sha256, None).await?;
                let mut buf = Vec::with_capacity(size as usize);
                while let Some(c) = stream.next().await {
                    buf.extend_from_slice(&c?);
                }
                if buf.len() as u64 != size {
                    return Err(ApiError::Internal(format!(
                        "blob {} is {} bytes, expected {size}",
                        f.sha256,
                        buf.len()
                    )));
                }
                let b = bytes::Bytes::from(buf);
                s.cache.put_blob(&f.sha256, b.clone());
                b
            }
        };
        s.metrics.add_sent(r.end - r.start);
        Body::from(all.slice(r.start as usize..r.end as usize))
    } else {
        let stream = s.blobs.get(&f.sha256, Some(r.clone())).await?;
        let state = s.clone();
        Body::from_stream(stream.inspect(move |c| {
            if let Ok(b) = c {
                state.metrics.add_sent(b.len() as u64);
            }
        }))
    };
    let mut b = common(Response::builder().status(status)).header(header::CONTENT_LENGTH, r.end - r.start);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1));
    }
    b.body(body).map_err(ApiError::internal)
}

// ---------- operations ----------

pub async fn healthz(State(s): St) -> Response {
    match sqlx::query("SELECT 1").execute(s.db.pool()).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response(),
        Err(e) => {
            tracing::error!("health check: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unavailable" }))).into_response()
        }
    }
}

pub async fn metrics(State(s): St) -> ApiResult<Response> {
    let (m, a) = s.db.counts().await?;
    let mut r = s.metrics.render(m, a).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-0", 10), Ok(Some(0..1)));
        assert_eq!(parse_range("bytes=2-", 10), Ok(Some(2..10)));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some(7..10)));
        assert_eq!(parse_range("bytes=-30", 10), Ok(Some(0..10)));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some(5..10)));
        assert_eq!(parse_range("bytes=10-", 10), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=-0", 10), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-", 0), Err(Unsatisfiable));
        // Ignored (send everything): other units, several ranges, nonsense, reversed.
        for h in ["items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=5-2", "bytes=", "bytes=-"] {
            assert_eq!(parse_range(h, 10), Ok(None), "{h}");
        }
    }
}
