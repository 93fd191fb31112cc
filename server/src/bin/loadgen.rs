//! `vicugna-loadgen`: a bounded load generator for the registry, loopback only.
//!
//! Starts the registry in-process on a temporary data directory (SQLite, local blobs), publishes the
//! fixture adapter, registers the F32 fixture model, then measures with 1, 8 and 64 concurrent clients:
//! requests/s and p50/p99 latency of `GET /api/adapters/{name}`, and MB/s of adapter and model
//! downloads. When `nginx` is installed it serves the same bytes (the JSON answer saved to a file and
//! the blobs) from a static directory in the same run, and each figure gets its ratio to nginx.
//! Every scenario stops at a fixed request count or duration, whichever comes first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vicugna_server::auth::{create_token, Scope};
use vicugna_server::{AppState, Settings};

#[derive(Clone, Copy)]
struct Limits {
    requests: usize,
    duration: Duration,
}

struct Stats {
    requests: usize,
    bytes: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` tasks fetch `url` in a loop until `limits` is reached; each response body is read fully
/// and its length checked.
async fn run(http: &reqwest::Client, url: &str, expect_len: usize, clients: usize, limits: Limits) -> Result<Stats> {
    let started = Instant::now();
    let deadline = started + limits.duration;
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..clients {
        let (http, url, counter) = (http.clone(), url.to_string(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut bytes = 0u64;
            while Instant::now() < deadline
                && counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < limits.requests
            {
                let t = Instant::now();
                let r = http.get(&url).send().await?;
                if !r.status().is_success() {
                    bail!("GET {url}: {}", r.status());
                }
                let b = r.bytes().await?;
                if b.len() != expect_len {
                    bail!("GET {url}: {} bytes, expected {expect_len}", b.len());
                }
                bytes += b.len() as u64;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, anyhow::Error>((lat, bytes))
        }));
    }
    let mut lat = vec![];
    let mut bytes = 0;
    for t in tasks {
        let (l, b) = t.await??;
        lat.extend(l);
        bytes += b;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Ok(Stats { requests: lat.len(), bytes, secs, p50_ms: pct(0.5), p99_ms: pct(0.99) })
}

/// nginx serving `root` on a free loopback port; stopped on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(root: &Path) -> Result<Option<Nginx>> {
    let Some(bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists()) else {
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("nginx.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               types {{ application/json json; application/octet-stream safetensors gguf; }}\n\
               server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
            root.display()
        ),
    )?;
    let child = std::process::Command::new(bin)
        .args(["-c", &conf.display().to_string(), "-p", &d.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting nginx")?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Some(Nginx { child, port, _dir: dir }));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx did not start")
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let limits = if quick {
        Limits { requests: 200, duration: Duration::from_secs(2) }
    } else {
        Limits { requests: 20_000, duration: Duration::from_secs(8) }
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let data = tempfile::tempdir()?;
    let mut settings = Settings::new(data.path().join("data"));
    settings.seed_model = Some(fixtures.join("tiny-llama-q4_0.gguf"));
    let state = AppState::open(settings).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours = format!("http://{}", listener.local_addr()?);
    let admin = create_token(&state.db, "bench", Scope::Admin).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::spawn(vicugna_server::serve(state.clone(), listener, std::future::pending()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;

    // Publish the fixture adapter and register the F32 fixture model.
    let part = |p: PathBuf, n: &str| -> Result<reqwest::multipart::Part> {
        Ok(reqwest::multipart::Part::bytes(std::fs::read(&p).with_context(|| p.display().to_string())?)
            .file_name(n.to_string()))
    };
    let form = reqwest::multipart::Form::new()
        .part("adapter_config.json", part(fixtures.join("lora-a/adapter_config.json"), "adapter_config.json")?)
        .part("adapter_model.safetensors", part(fixtures.join("lora-a/adapter_model.safetensors"), "w")?)
        .text("base", vicugna_server::DEMO_MODEL_ID);
    let r = http.put(format!("{ours}/api/adapters/bench/1.0.0")).bearer_auth(&admin).multipart(form).send().await?;
    anyhow::ensure!(r.status().is_success(), "publishing the bench adapter: {}", r.text().await?);
    let form =
        reqwest::multipart::Form::new().part("model.gguf", part(fixtures.join("tiny-llama-f32.gguf"), "model.gguf")?);
    let r = http.put(format!("{ours}/api/models/bench-f32")).bearer_auth(&admin).multipart(form).send().await?;
    anyhow::ensure!(r.status().is_success(), "registering the bench model: {}", r.text().await?);

    // The same bytes for nginx.
    let meta = http.get(format!("{ours}/api/adapters/bench")).send().await?.bytes().await?;
    let adapter = std::fs::read(fixtures.join("lora-a/adapter_model.safetensors"))?;
    let model = std::fs::read(fixtures.join("tiny-llama-f32.gguf"))?;
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("meta.json"), &meta)?;
    std::fs::write(root.path().join("adapter.safetensors"), &adapter)?;
    std::fs::write(root.path().join("model.gguf"), &model)?;
    let nginx = start_nginx(root.path())?;

    println!(
        "vicugna-loadgen: loopback, client and servers on the same machine ({} CPUs)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("limits per scenario: {} requests or {:?}, whichever first", limits.requests, limits.duration);
    match &nginx {
        Some(n) => println!("baseline: nginx (sendfile, worker_processes auto) on port {}", n.port),
        None => println!("baseline: nginx not installed; figures without ratios"),
    }
    let scenarios: [(&str, String, &str, usize); 3] = [
        ("GET /api/adapters/{name}", format!("{ours}/api/adapters/bench"), "meta.json", meta.len()),
        (
            "adapter download",
            format!("{ours}/api/adapters/bench/1.0.0/files/adapter_model.safetensors"),
            "adapter.safetensors",
            adapter.len(),
        ),
        ("model download", format!("{ours}/api/models/bench-f32/files/model.gguf"), "model.gguf", model.len()),
    ];
    println!(
        "{:<26} {:>7} | {:>9} {:>9} {:>8} {:>8} | {:>9} {:>9} {:>8} | {:>6}",
        "scenario", "clients", "req/s", "MB/s", "p50 ms", "p99 ms", "nginx r/s", "nginx MB/s", "ng p99", "ratio"
    );
    for (name, url, file, len) in &scenarios {
        for clients in [1, 8, 64] {
            let s = run(&http, url, *len, clients, limits).await?;
            let n = match &nginx {
                Some(ng) => {
                    Some(run(&http, &format!("http://127.0.0.1:{}/{file}", ng.port), *len, clients, limits).await?)
                }
                None => None,
            };
            let mbs = |s: &Stats| s.bytes as f64 / s.secs / 1e6;
            let rps = |s: &Stats| s.requests as f64 / s.secs;
            let (nr, nm, np, ratio) = match &n {
                Some(n) => (
                    format!("{:.0}", rps(n)),
                    format!("{:.1}", mbs(n)),
                    format!("{:.2}", n.p99_ms),
                    format!("{:.2}", rps(&s) / rps(n)),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            println!(
                "{name:<26} {clients:>7} | {:>9.0} {:>9.1} {:>8.2} {:>8.2} | {nr:>9} {nm:>9} {np:>8} | {ratio:>6}",
                rps(&s),
                mbs(&s),
                s.p50_ms,
                s.p99_ms
            );
        }
    }
    println!("ratio: our requests/s over nginx's for the same bytes (≥ 0.80 is the target for downloads)");
    Ok(())
}
