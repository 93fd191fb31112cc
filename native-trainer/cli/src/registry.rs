//! `vicugna publish` and `vicugna pull`: the registry's client side.
//!
//! Publishing checks the adapter locally first (the same parser the server uses), then streams the
//! files as multipart. Pulling downloads each file to a temporary name, verifies its SHA-256 against
//! the registry's metadata and only then renames it into place, so a failed pull leaves nothing half
//! written under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reqwest::blocking::{multipart, Client};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn client() -> Result<Client> {
    Ok(Client::builder().timeout(None).user_agent(concat!("vicugna/", env!("CARGO_PKG_VERSION"))).build()?)
}

/// The server's `{"error": ...}` message, or the status alone.
fn failure(what: &str, r: reqwest::blocking::Response) -> anyhow::Error {
    let status = r.status();
    let msg = r.json::<Value>().ok().and_then(|v| v["error"].as_str().map(String::from)).unwrap_or_default();
    anyhow::anyhow!("{what}: {status}{}{msg}", if msg.is_empty() { "" } else { ": " })
}

pub struct Publish<'a> {
    pub server: &'a str,
    pub token: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub dir: &'a Path,
    pub base: Option<&'a str>,
    pub description: Option<&'a str>,
    pub template: Option<&'a str>,
    pub license: Option<&'a str>,
    pub metrics: Option<&'a Path>,
}

/// Publish a PEFT adapter directory; returns the registry's record of the new version.
pub fn publish(a: &Publish) -> Result<Value> {
    let config = a.dir.join("adapter_config.json");
    let weights = a.dir.join("adapter_model.safetensors");
    // Refuse locally what the server would refuse, with the same messages.
    vicugna_core::LoraAdapter::load(a.dir).with_context(|| format!("checking adapter {}", a.dir.display()))?;
    let mut form = multipart::Form::new()
        .file("adapter_config.json", &config)
        .with_context(|| format!("reading {}", config.display()))?
        .file("adapter_model.safetensors", &weights)
        .with_context(|| format!("reading {}", weights.display()))?;
    let readme = a.dir.join("README.md");
    if readme.is_file() {
        form = form.file("README.md", &readme).with_context(|| format!("reading {}", readme.display()))?;
    }
    for (k, v) in [("base", a.base), ("description", a.description), ("template", a.template), ("license", a.license)] {
        if let Some(v) = v {
            form = form.text(k, v.to_string());
        }
    }
    if let Some(m) = a.metrics {
        let text = std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
        form = form.text("metrics", text);
    }
    let url = format!("{}/api/adapters/{}/{}", a.server.trim_end_matches('/'), a.name, a.version);
    let r = client()?.put(&url).bearer_auth(a.token).multipart(form).send().with_context(|| format!("PUT {url}"))?;
    if !r.status().is_success() {
        return Err(failure(&format!("publishing {} {}", a.name, a.version), r));
    }
    Ok(r.json()?)
}

/// Download `NAME[@VERSION]` (latest when no version) into `out` (default `./NAME-VERSION`).
/// Returns the directory.
pub fn pull(server: &str, spec: &str, out: Option<&Path>) -> Result<PathBuf> {
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let server = server.trim_end_matches('/');
    let http = client()?;
    let url = format!("{server}/api/adapters/{name}");
    let r = http.get(&url).send().with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        return Err(failure(&format!("looking up adapter `{name}`"), r));
    }
    let meta: Value = r.json()?;
    let version = version.map(String::from).or_else(|| meta["latest"].as_str().map(String::from));
    let Some(v) =
        meta["versions"].as_array().into_iter().flatten().find(|v| v["version"].as_str() == version.as_deref())
    else {
        bail!("adapter `{name}` has no version {}", version.unwrap_or_default());
    };
    let version = v["version"].as_str().unwrap_or_default();
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{name}-{version}")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in v["files"].as_array().into_iter().flatten() {
        let file = f["file"].as_str().context("registry metadata: file without a name")?;
        let sha = f["sha256"].as_str().context("registry metadata: file without sha256")?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!("registry metadata: refusing file name {file:?}");
        }
        let url = format!("{server}/api/adapters/{name}/{version}/files/{file}");
        download(&http, &url, &dir.join(file), sha)?;
    }
    Ok(dir)
}

/// Download to `dest` via a temporary file, verifying SHA-256.
fn download(http: &Client, url: &str, dest: &Path, sha: &str) -> Result<()> {
    let mut r = http.get(url).send().with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        return Err(failure(&format!("downloading {url}"), r));
    }
    let tmp = dest.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut r, &mut buf).with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).with_context(|| format!("writing {}", tmp.display()))?;
    }
    f.sync_all()?;
    let got = hex::encode(h.finalize());
    if got != sha {
        let _ = std::fs::remove_file(&tmp);
        bail!("{url}: SHA-256 {got} does not match the registry's {sha}");
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}
