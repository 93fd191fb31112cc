//! The registry over real HTTP on 127.0.0.1 with a real SQLite file (or PostgreSQL when
//! `VICUGNA_TEST_DATABASE_URL` names one; each test then uses its own schema-fresh database).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vicugna_server::auth::{create_token, Scope};
use vicugna_server::{AppState, Settings, DEMO_MODEL_ID};
use vicugna_tests::fixture;

struct Server {
    url: String,
    state: Arc<AppState>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    admin: String,
    publisher: String,
}

async fn test_db_url() -> Option<String> {
    let base = std::env::var("VICUGNA_TEST_DATABASE_URL").ok()?;
    // One database per test: postgres://…/postgres → create vicugna_test_<random>.
    use sqlx::Connection;
    let name = format!("vicugna_test_{:016x}", rand::random::<u64>());
    let mut c = sqlx::PgConnection::connect(&base).await.expect("connect to VICUGNA_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut c).await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

async fn start_with(f: impl FnOnce(&mut Settings)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path().join("data"));
    settings.database_url = test_db_url().await;
    settings.seed_model =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llama-q4_0.gguf"));
    f(&mut settings);
    let state = AppState::open(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(vicugna_server::serve(state.clone(), listener, std::future::pending()));
    let admin = create_token(&state.db, "admin", Scope::Admin).await.unwrap();
    let publisher = create_token(&state.db, "alice", Scope::Publish).await.unwrap();
    Server { url, state, dir, http: reqwest::Client::new(), admin, publisher }
}

async fn start() -> Server {
    start_with(|_| {}).await
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap()
}

fn part(bytes: Vec<u8>, file: &str) -> Part {
    Part::bytes(bytes).file_name(file.to_string())
}

fn adapter_form(dir: &str) -> Form {
    let d = fixture(dir);
    Form::new()
        .part("adapter_config.json", part(read(d.join("adapter_config.json")), "adapter_config.json"))
        .part("adapter_model.safetensors", part(read(d.join("adapter_model.safetensors")), "adapter_model.safetensors"))
        .part("README.md", part(read(d.join("README.md")), "README.md"))
}

impl Server {
    fn u(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.u(path)).send().await.unwrap()
    }
    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.get(path).await;
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn put(&self, path: &str, token: Option<&str>, form: Form) -> (StatusCode, Value) {
        let mut rq = self.http.put(self.u(path)).multipart(form);
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        let r = rq.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn publish(&self, name: &str, version: &str, form: Form) -> (StatusCode, Value) {
        self.put(&format!("/api/adapters/{name}/{version}"), Some(&self.publisher), form).await
    }
    /// Register the HF tiny-llama directory as model `tiny-llama` (the base lora-a and lora-b name).
    async fn register_tiny_llama(&self) -> Value {
        let d = fixture("tiny-llama");
        let form = Form::new()
            .part("config.json", part(read(d.join("config.json")), "config.json"))
            .part("model.safetensors", part(read(d.join("model.safetensors")), "model.safetensors"))
            .part("tokenizer.json", part(read(d.join("tokenizer.json")), "tokenizer.json"))
            .text("description", "tiny-llama fixture (HF)");
        let (s, v) = self.put("/api/models/tiny-llama", Some(&self.admin), form).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
    fn blob_files(&self) -> Vec<String> {
        let mut out = vec![];
        let root = self.dir.path().join("data/blobs/sha256");
        for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                out.push(f.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }
}

fn err(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn seeds_demo_model_and_serves_it_with_etag_range_and_caching() {
    let s = start().await;
    let (st, v) = s.json("/api/models").await;
    assert_eq!(st, StatusCode::OK);
    let m = &v["models"][0];
    assert_eq!(m["id"], DEMO_MODEL_ID);
    assert_eq!(m["format"], "gguf");
    let want = read(fixture("tiny-llama-q4_0.gguf"));
    assert_eq!(m["files"][0]["sha256"], sha(&want));
    assert_eq!(m["fingerprint"].as_str().unwrap().len(), 64);
    assert!(m["architecture"].as_str().unwrap().contains("layers=2 hidden=64"), "{m}");

    let path = format!("/api/models/{DEMO_MODEL_ID}/files/model.gguf");
    let r = s.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha(&want)));
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap().as_ref(), want.as_slice());

    let r = s.http.get(s.u(&path)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // If-None-Match compares weakly: a list with the weak form of our tag matches too
    let weak = format!("\"other\", W/{etag}");
    let r = s.http.get(s.u(&path)).header("if-none-match", &weak).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s.http.get(s.u(&path)).header("if-none-match", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let n = want.len();
    for (range, lo, hi) in
        [("bytes=0-3", 0, 4), ("bytes=100-", 100, n), ("bytes=-10", n - 10, n), ("bytes=5-999999999", 5, n)]
    {
        let r = s.http.get(s.u(&path)).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes {lo}-{}/{n}", hi - 1), "{range}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &want[lo..hi], "{range}");
    }
    let r = s.http.get(s.u(&path)).header("range", format!("bytes={n}-")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes */{n}"));
    // A stale If-Range validator: the whole file.
    let r = s.http.get(s.u(&path)).header("range", "bytes=0-3").header("if-range", "\"0000\"").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), n);
    // If-Range compares strongly: our tag gives the range, its weak form the whole file
    let r = s.http.get(s.u(&path)).header("range", "bytes=0-3").header("if-range", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let r = s
        .http
        .get(s.u(&path))
        .header("range", "bytes=0-3")
        .header("if-range", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    assert_eq!(s.get(&format!("/api/models/{DEMO_MODEL_ID}/files/other.bin")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/api/models/nope").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_discover_download_delete() {
    let s = start().await;
    let base = s.register_tiny_llama().await;
    let fp = base["fingerprint"].as_str().unwrap();
    assert_eq!(base["tokenizer"].as_str().unwrap().len(), "sha256:".len() + 64);

    let form = adapter_form("lora-a")
        .text("description", "test adapter")
        .text("template", "chat")
        .text("metrics", r#"{"eval_loss": 1.5}"#);
    let (st, v) = s.publish("chat-zh", "0.1.0", form).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["base_model"], "tiny-llama");
    assert_eq!(v["base_fingerprint"], fp);
    assert_eq!(v["r"], 8);
    assert_eq!(v["alpha"], 16.0);
    assert_eq!(v["template"], "chat");
    assert_eq!(v["metrics"]["eval_loss"], 1.5);
    assert_eq!(v["published_by"], "alice");
    assert!(v["target_modules"].as_array().unwrap().len() >= 2, "{v}");
    let weights = read(fixture("lora-a/adapter_model.safetensors"));
    let f = v["files"].as_array().unwrap().iter().find(|f| f["file"] == "adapter_model.safetensors").unwrap();
    assert_eq!(f["sha256"], sha(&weights));
    assert_eq!(f["size"], weights.len());

    // Discover: by name, in the list, filtered by base fingerprint.
    let (st, a) = s.json("/api/adapters/chat-zh").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(a["latest"], "0.1.0");
    let (_, l) = s.json(&format!("/api/adapters?base={fp}")).await;
    assert_eq!(l["adapters"][0]["name"], "chat-zh");
    let (_, l) = s.json(&format!("/api/adapters?base={}", "0".repeat(64))).await;
    assert_eq!(l["adapters"].as_array().unwrap().len(), 0);
    assert_eq!(s.get("/api/adapters?base=zz").await.status(), StatusCode::BAD_REQUEST);

    // A second version; latest is by semver.
    let (st, _) = s.publish("chat-zh", "0.10.0", adapter_form("lora-b")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, a) = s.json("/api/adapters/chat-zh").await;
    assert_eq!(a["latest"], "0.10.0");
    assert_eq!(a["versions"].as_array().unwrap().len(), 2);

    // Download with ETag and range.
    let path = "/api/adapters/chat-zh/0.1.0/files/adapter_model.safetensors";
    let r = s.get(path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{}\"", sha(&weights)));
    assert_eq!(r.bytes().await.unwrap().as_ref(), weights.as_slice());
    let r = s.get("/api/adapters/chat-zh/0.1.0/files/adapter_config.json").await;
    assert_eq!(r.headers()["content-type"], "application/json");

    // Immutable: the same version again is 409 and the stored bytes are unchanged.
    let (st, v) = s.publish("chat-zh", "0.1.0", adapter_form("lora-b")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(s.get(path).await.bytes().await.unwrap().as_ref(), weights.as_slice());

    // Delete: another publisher may not; the owner may; then it is gone and the name is not reused.
    let bob = create_token(&s.state.db, "bob", Scope::Publish).await.unwrap();
    let del = |t: String| s.http.delete(s.u("/api/adapters/chat-zh/0.1.0")).bearer_auth(t).send();
    assert_eq!(del(bob).await.unwrap().status(), StatusCode::FORBIDDEN);
    let blobs_before = s.blob_files();
    assert!(blobs_before.contains(&sha(&weights)));
    assert_eq!(del(s.publisher.clone()).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get(path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/api/adapters/chat-zh/0.1.0").await.status(), StatusCode::NOT_FOUND);
    assert!(!s.blob_files().contains(&sha(&weights)), "the deleted version's blob is collected");
    let (st, v) = s.publish("chat-zh", "0.1.0", adapter_form("lora-a")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(err(&v).contains("deleted"), "{v}");
    let (_, a) = s.json("/api/adapters/chat-zh").await;
    assert_eq!(a["latest"], "0.10.0");
    assert_eq!(a["versions"].as_array().unwrap().len(), 1);
    // An admin may delete anyone's version.
    let r = s.http.delete(s.u("/api/adapters/chat-zh/0.10.0")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get("/api/adapters/chat-zh").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_scopes() {
    let s = start().await;
    s.register_tiny_llama().await;
    let (st, _) = s.put("/api/adapters/a/1.0.0", None, adapter_form("lora-a")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.put("/api/adapters/a/1.0.0", Some("vcg_wrong"), adapter_form("lora-a")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let r = s.http.put(s.u("/api/adapters/a/1.0.0")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A publish token cannot register models.
    let form = Form::new().part("model.gguf", part(read(fixture("tiny-llama-q8_0.gguf")), "model.gguf"));
    let (st, v) = s.put("/api/models/other", Some(&s.publisher), form).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // Revoked tokens stop working; tokens are stored hashed.
    assert!(s.state.db.revoke_token("alice").await.unwrap());
    let (st, _) = s.publish("a", "1.0.0", adapter_form("lora-a")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let stored: Vec<(String,)> = sqlx::query_as("SELECT hash FROM tokens").fetch_all(s.state.db.pool()).await.unwrap();
    assert!(stored.iter().all(|(h,)| h.len() == 64 && !h.contains(&s.publisher) && !h.starts_with("vcg_")));
    assert!(create_token(&s.state.db, "alice", Scope::Publish).await.is_err(), "token names are unique");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_reason() {
    let s = start().await;
    s.register_tiny_llama().await;
    // Names, versions and path tricks: 400.
    for path in [
        "/api/adapters/Bad_Name/1.0.0",
        "/api/adapters/-x/1.0.0",
        "/api/adapters/a%2Fb/1.0.0",
        "/api/adapters/a/1.0",
        "/api/adapters/a/1.0.0/files/..%2F..%2Fregistry.db",
        &format!("/api/adapters/{}/1.0.0", "a".repeat(65)),
    ] {
        let (st, v) = s.publish_raw(path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    // Sent raw: an HTTP client library would normalise these before they left.
    for path in [
        "/api/adapters/a/..",
        "/api/adapters/../../etc/passwd",
        "/api/models/x/files/../../../registry.db",
        "/api/models/%2e%2e/files/x",
        "/api/models/a\\b",
        "//etc/passwd",
    ] {
        assert_eq!(s.raw_status("GET", path).await, 400, "{path}");
    }

    // Not multipart, or broken multipart: 422.
    let r = s
        .http
        .put(s.u("/api/adapters/a/1.0.0"))
        .bearer_auth(&s.publisher)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = s
        .http
        .put(s.u("/api/adapters/a/1.0.0"))
        .bearer_auth(&s.publisher)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"adapter_config.json\"\r\n\r\n{\"r\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Missing, unknown and duplicate parts.
    let only_config = Form::new().part("adapter_config.json", part(read(fixture("lora-a/adapter_config.json")), "c"));
    let (st, v) = s.publish("a", "1.0.0", only_config).await;
    assert_eq!((st, err(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "part `adapter_model.safetensors` is required"));
    let (st, v) = s.publish("a", "1.0.0", adapter_form("lora-a").text("evil", "x")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err(&v).starts_with("unexpected part `evil`"), "{v}");

    // Corrupt safetensors: the header is checked and the error names the file.
    let mut bad = read(fixture("lora-a/adapter_model.safetensors"));
    bad.truncate(bad.len() / 2);
    let form = Form::new()
        .part("adapter_config.json", part(read(fixture("lora-a/adapter_config.json")), "c"))
        .part("adapter_model.safetensors", part(bad, "w"));
    let (st, v) = s.publish("a", "1.0.0", form).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err(&v).contains("adapter_model.safetensors"), "{v}");
    assert!(!err(&v).contains(s.dir.path().to_str().unwrap()), "no server paths in errors: {v}");

    // Unknown base, and an adapter that does not fit its base.
    let (st, v) = s.publish("a", "1.0.0", adapter_form("lora-a").text("base", "no-such-model")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err(&v).contains("unknown base model \"no-such-model\""), "{v}");
    let d = fixture("tiny-llama3-tied");
    let form = Form::new()
        .part("config.json", part(read(d.join("config.json")), "config.json"))
        .part("model.safetensors", part(read(d.join("model.safetensors")), "model.safetensors"));
    let (st, v) = s.put("/api/models/tied", Some(&s.admin), form).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["tokenizer"], "none");
    let (st, v) = s.publish("a", "1.0.0", adapter_form("lora-a").text("base", "tied")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err(&v).contains("does not fit base model `tied`"), "{v}");

    // Bad models: not a GGUF, mixed formats; a duplicate id.
    let form = Form::new().part("model.gguf", part(b"GGUF\x03\x00\x00\x00junk".to_vec(), "model.gguf"));
    let (st, v) = s.put("/api/models/junk", Some(&s.admin), form).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(err(&v).starts_with("model.gguf"), "{v}");
    let (st, _) = s.put("/api/models/tied", Some(&s.admin), Form::new()).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Nothing of the refused uploads is left behind.
    assert_eq!(std::fs::read_dir(s.dir.path().join("data/tmp")).unwrap().count(), 0);
    let (_, l) = s.json("/api/adapters").await;
    assert_eq!(l["adapters"].as_array().unwrap().len(), 0);
    let mut referenced: Vec<String> = vec![];
    for m in s.state.db.models().await.unwrap() {
        referenced.extend(m.files.iter().map(|f| f.sha256.clone()));
    }
    referenced.sort();
    assert_eq!(s.blob_files(), referenced, "only the registered models' blobs remain");
}

impl Server {
    /// The status of a request sent byte for byte as given.
    async fn raw_status(&self, method: &str, path: &str) -> u16 {
        let addr = self.url.trim_start_matches("http://");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![];
        c.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{text}"))
    }

    /// PUT a valid adapter at an arbitrary (possibly hostile) raw path.
    async fn publish_raw(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .put(self.u(path))
            .bearer_auth(&self.publisher)
            .multipart(adapter_form("lora-a"))
            .send()
            .await
            .unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_is_413() {
    let s = start_with(|c| c.max_adapter_bytes = 16 << 10).await;
    s.register_tiny_llama().await;
    let (st, v) = s.publish("big", "1.0.0", adapter_form("lora-a")).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(std::fs::read_dir(s.dir.path().join("data/tmp")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_of_one_version_exactly_one_wins() {
    let s = Arc::new(start().await);
    s.register_tiny_llama().await;
    let mut tasks = vec![];
    for i in 0..8 {
        let s = s.clone();
        // Different content per task, so a winner's bytes are identifiable.
        let dir = if i % 2 == 0 { "lora-a" } else { "lora-b" };
        tasks.push(tokio::spawn(async move { (dir, s.publish("race", "1.0.0", adapter_form(dir)).await) }));
    }
    let mut winners = vec![];
    for t in tasks {
        let (dir, (st, v)) = t.await.unwrap();
        match st {
            StatusCode::CREATED => winners.push(dir),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one upload commits");
    let got = s.get("/api/adapters/race/1.0.0/files/adapter_model.safetensors").await.bytes().await.unwrap();
    assert_eq!(got.as_ref(), read(fixture(&format!("{}/adapter_model.safetensors", winners[0]))).as_slice());
    // The loser's distinct blobs were collected.
    let (_, a) = s.json("/api/adapters/race").await;
    let mut referenced: Vec<String> = a["versions"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sha256"].as_str().unwrap().to_string())
        .collect();
    for m in s.state.db.models().await.unwrap() {
        referenced.extend(m.files.iter().map(|f| f.sha256.clone()));
    }
    referenced.sort();
    referenced.dedup();
    assert_eq!(s.blob_files(), referenced);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upload_times_out_with_408() {
    let s = start_with(|c| c.upload_timeout = Duration::from_millis(500)).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /api/adapters/slow/1.0.0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n\
         --B\r\nContent-Disposition: form-data; name=\"adapter_model.safetensors\"\r\n\r\nabc",
        s.publisher
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.expect("answered").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read_dir(s.dir.path().join("data/tmp")).unwrap().count(), 0, "the staged part is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_metrics_and_registry_page() {
    let s = start().await;
    let (st, v) = s.json("/healthz").await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    s.get("/api/models").await;
    s.get("/api/models/nope").await;
    let r = s.get("/metrics").await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("vicugna_http_requests_total{method=\"GET\",route=\"/api/models\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("route=\"/api/models/{id}\",status=\"404\"} 1"), "{text}");
    assert!(text.contains("vicugna_models 1"), "{text}");
    assert!(text.contains("# TYPE vicugna_http_request_duration_seconds histogram"));
    let page = s.get("/").await.text().await.unwrap();
    assert!(page.contains(DEMO_MODEL_ID), "{page}");
    assert_eq!(s.get("/no/such/thing").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_web_app_with_mime_types_and_compression() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>Vicugna</title>").unwrap();
    std::fs::write(web.path().join("app.js"), "console.log('vicugna');\n".repeat(200)).unwrap();
    std::fs::write(web.path().join("app_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let dir = web.path().to_path_buf();
    let s = start_with(move |c| c.web_dir = Some(dir)).await;
    let r = s.get("/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let r = s.get("/app_bg.wasm").await;
    assert_eq!(r.headers()["content-type"], "application/wasm");
    let r = s.http.get(s.u("/app.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(r.headers()["content-type"].to_str().unwrap().contains("javascript"));
    // The API still answers beside the app.
    assert_eq!(s.json("/api/models").await.0, StatusCode::OK);
}

/// The real binary: `token create` prints the token alone on its last line; a server killed with SIGKILL
/// mid-upload restarts with no partial version visible and no orphan left.
#[test]
fn killed_mid_upload_restarts_clean() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_vicugna-server");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db_url = tokio::runtime::Runtime::new().unwrap().block_on(test_db_url());
    let mut cmd = Command::new(bin);
    if let Some(u) = &db_url {
        cmd.arg("--database-url").arg(u);
    }
    let out = cmd.args(["token", "create", "--name", "ci"]).arg("--data-dir").arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    assert!(token.starts_with("vcg_") && token.len() == 68, "{token}");

    let spawn = || {
        let mut cmd = Command::new(bin);
        if let Some(u) = &db_url {
            cmd.env("VICUGNA_DATABASE_URL", u);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .env("VICUGNA_DATA_DIR", &data)
            .env("VICUGNA_SEED_MODEL", fixture("tiny-llama-q4_0.gguf"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap().to_string();
        assert!(line.starts_with("Vicugna registry listening on http://127.0.0.1:"), "{line}");
        (child, addr)
    };
    let (mut child, addr) = spawn();

    // A publish whose body stops halfway: the server is staging it when it is killed.
    let weights = read(fixture("lora-a/adapter_model.safetensors"));
    let config = read(fixture("lora-a/adapter_config.json"));
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--B\r\nContent-Disposition: form-data; name=\"adapter_config.json\"; filename=\"c\"\r\n\r\n",
    );
    body.extend_from_slice(&config);
    body.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"base\"\r\n\r\ntiny-llama-q4_0");
    body.extend_from_slice(
        b"\r\n--B\r\nContent-Disposition: form-data; name=\"adapter_model.safetensors\"; filename=\"w\"\r\n\r\n",
    );
    body.extend_from_slice(&weights);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "PUT /api/adapters/half/1.0.0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body[..body.len() - 1000]).unwrap();
    c.flush().unwrap();
    let tmp = data.join("tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().count() < 2 {
        assert!(std::time::Instant::now() < deadline, "the upload never reached the staging area");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(c);
    assert!(std::fs::read_dir(&tmp).unwrap().count() >= 1, "a partial upload was left behind to sweep");

    // Also an orphan blob, as if killed between storing a blob and committing its row.
    let orphan = "ab".to_string() + &"0".repeat(62);
    let odir = data.join("blobs/sha256/ab");
    std::fs::create_dir_all(&odir).unwrap();
    std::fs::write(odir.join(&orphan), b"orphan").unwrap();

    let (mut child, addr) = spawn();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "staged uploads swept");
    assert!(!odir.join(&orphan).exists(), "orphan blob swept");
    let get = |path: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut b = vec![];
        std::io::Read::read_to_end(&mut c, &mut b).unwrap();
        b
    };
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    assert!(text(get("/api/adapters/half/1.0.0")).starts_with("HTTP/1.1 404"));
    let list = text(get("/api/adapters"));
    assert!(list.ends_with("{\"adapters\":[]}"), "{list}");
    // The seeded model survived the sweep, and its blob is intact.
    let model = get(&format!("/api/models/{DEMO_MODEL_ID}/files/model.gguf"));
    assert!(model.starts_with(b"HTTP/1.1 200"));
    let body_at = model.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&model[body_at..], read(fixture("tiny-llama-q4_0.gguf")).as_slice());
    // And the same version can now be published for real.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "PUT /api/adapters/half/1.0.0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body).unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut c, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    child.kill().unwrap();
    child.wait().unwrap();
    let _: PathBuf = data;
}

/// Files over the in-memory size (the 16.8 MB HF fixture weights) take the mapped-file path: whole,
/// ranged across slice boundaries, suffix, and 416.
#[tokio::test(flavor = "multi_thread")]
async fn large_files_stream_whole_and_in_ranges() {
    let s = start().await;
    s.register_tiny_llama().await;
    let want = read(fixture("tiny-llama/model.safetensors"));
    assert!(want.len() as u64 > vicugna_server::cache::SMALL_BLOB, "the fixture must exceed the cached size");
    let path = "/api/models/tiny-llama/files/model.safetensors";
    let r = s.get(path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), want.len().to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), want.as_slice());
    let n = want.len();
    let mib = 1 << 20;
    let mut expected_sent = n;
    for (lo, hi) in [(mib - 7, 3 * mib + 5), (0, 1), (n - 1, n), (5 * mib, n)] {
        let r = s.http.get(s.u(path)).header("range", format!("bytes={lo}-{}", hi - 1)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes {lo}-{}/{n}", hi - 1));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &want[lo..hi], "{lo}..{hi}");
        expected_sent += hi - lo;
    }
    let r = s.http.get(s.u(path)).header("range", "bytes=-1000").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &want[n - 1000..]);
    let r = s.http.get(s.u(path)).header("range", format!("bytes={n}-")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let text = s.get("/metrics").await.text().await.unwrap();
    let sent: u64 = text.lines().find_map(|l| l.strip_prefix("vicugna_bytes_sent_total ")).unwrap().parse().unwrap();
    assert_eq!(sent, (expected_sent + 1000) as u64, "bytes sent are counted on the streamed path too");
}

/// `vicugna-server adapter add` (how `make run` seeds the default adapter) commits through the
/// same validation as an HTTP publish; again with the same files it is a no-op, with other files
/// under the same version it is refused; the licence line and metrics are served.
#[test]
fn adapter_add_seeds_idempotently_with_its_licence() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_vicugna-server");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db_url = tokio::runtime::Runtime::new().unwrap().block_on(test_db_url());
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        if let Some(u) = &db_url {
            cmd.arg("--database-url").arg(u);
        }
        let o = cmd.arg("--data-dir").arg(&data).args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let gguf = fixture("tiny-llama-q4_0.gguf").display().to_string();
    let (ok, _, err) = run(&["model", "add", "--id", "tiny-llama", &gguf]);
    assert!(ok, "{err}");
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, r#"{"heldout_loss": 2.1, "heldout_loss_base": 2.9}"#).unwrap();
    let lora_a = fixture("lora-a").display().to_string();
    let add = |d: &str| {
        run(&[
            "adapter",
            "add",
            "--name",
            "zh-chat",
            "--version",
            "0.1.0",
            "--template",
            "chat",
            "--description",
            "Chinese chat",
            "--license",
            "base terms; data CC BY-NC 4.0",
            "--metrics",
            metrics.to_str().unwrap(),
            d,
        ])
    };
    let (ok, out, err) = add(&lora_a);
    assert!(ok && out.contains("registered adapter `zh-chat` 0.1.0 for base `tiny-llama`"), "{out}{err}");
    let (ok, out, err) = add(&lora_a);
    assert!(ok && out.contains("registered already"), "{out}{err}");
    let (ok, _, err) = add(&fixture("lora-b").display().to_string());
    assert!(!ok && err.contains("versions are immutable"), "{err}");
    // a directory that is no adapter is refused by the publish validation
    let (ok, _, err) = run(&[
        "adapter",
        "add",
        "--name",
        "bad",
        "--version",
        "0.1.0",
        "--base",
        "tiny-llama",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("adapter_config.json"), "{err}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut settings = Settings::new(&data);
        settings.database_url = db_url.clone();
        let state = AppState::open(settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(vicugna_server::serve(state, listener, std::future::pending()));
        let v: Value = reqwest::get(format!("{url}/api/adapters/zh-chat/0.1.0")).await.unwrap().json().await.unwrap();
        assert_eq!(v["license"], "base terms; data CC BY-NC 4.0");
        assert_eq!(v["template"], "chat");
        assert_eq!(v["description"], "Chinese chat");
        assert_eq!(v["metrics"]["heldout_loss_base"], 2.9);
        assert_eq!(v["published_by"], "admin");
        let w = read(fixture("lora-a/adapter_model.safetensors"));
        let f = v["files"].as_array().unwrap().iter().find(|f| f["file"] == "adapter_model.safetensors").unwrap();
        assert_eq!(f["sha256"], sha(&w));
    });
}
