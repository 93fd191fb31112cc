//! `vicugna publish` / `vicugna pull` against a real registry server on 127.0.0.1.

use std::process::Command;
use vicugna_server::auth::{create_token, Scope};
use vicugna_server::{AppState, Settings, DEMO_MODEL_ID};
use vicugna_tests::fixture;

fn vicugna(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vicugna"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("VICUGNA_TOKEN")
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A real registry server on 127.0.0.1 with data under `dir`: its runtime, URL and a publish token.
fn registry(dir: &std::path::Path) -> (tokio::runtime::Runtime, String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, token) = rt.block_on(async {
        let mut settings = Settings::new(dir.join("data"));
        settings.seed_model = Some(fixture("tiny-llama-q4_0.gguf"));
        let state = AppState::open(settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = create_token(&state.db, "cli", Scope::Publish).await.unwrap();
        tokio::spawn(vicugna_server::serve(state, listener, std::future::pending()));
        (url, token)
    });
    (rt, url, token)
}

#[test]
fn publish_then_pull_round_trips_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, url, token) = registry(dir.path());
    let lora = fixture("lora-a").display().to_string();

    let (ok, out, err) = vicugna(&[
        "publish",
        "--server",
        &url,
        "--token",
        &token,
        "--base",
        DEMO_MODEL_ID,
        "--template",
        "chat",
        "--json",
        "zh-chat",
        "0.1.0",
        &lora,
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "zh-chat");
    assert_eq!(v["base_model"], DEMO_MODEL_ID);
    assert_eq!(v["template"], "chat");

    let dest = dir.path().join("pulled");
    let (ok, out, err) = vicugna(&["pull", "--server", &url, "zh-chat", "--out", dest.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), dest.display().to_string());
    for f in ["adapter_config.json", "adapter_model.safetensors", "README.md"] {
        assert_eq!(std::fs::read(dest.join(f)).unwrap(), std::fs::read(fixture("lora-a").join(f)).unwrap(), "{f}");
    }
    // The pulled adapter loads.
    vicugna_core::LoraAdapter::load(&dest).unwrap();

    // Failures say what the server said.
    let (ok, _, err) =
        vicugna(&["publish", "--server", &url, "--token", &token, "--base", DEMO_MODEL_ID, "zh-chat", "0.1.0", &lora]);
    assert!(!ok);
    assert!(err.contains("409 Conflict: zh-chat 0.1.0 already exists"), "{err}");
    let (ok, _, err) =
        vicugna(&["publish", "--server", &url, "--token", "vcg_nope", "--base", DEMO_MODEL_ID, "x", "1.0.0", &lora]);
    assert!(!ok);
    assert!(err.contains("401 Unauthorized"), "{err}");
    let (ok, _, err) = vicugna(&["pull", "--server", &url, "zh-chat@9.9.9"]);
    assert!(!ok);
    assert!(err.contains("has no version 9.9.9"), "{err}");
    let (ok, _, err) = vicugna(&["pull", "--server", &url, "nothing-here"]);
    assert!(!ok);
    assert!(err.contains("404 Not Found: no adapter `nothing-here`"), "{err}");
    // A directory that is not an adapter is refused before anything is sent.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, err) =
        vicugna(&["publish", "--server", &url, "--token", &token, "x", "1.0.0", empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("adapter_config.json"), "{err}");
}

#[test]
fn train_publishes_to_the_registry_with_the_bases_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, url, token) = registry(dir.path());
    let base = fixture("tiny-llama-q4_0.gguf");
    let out = dir.path().join("zh-train");
    let (ok, _, err) = vicugna(&[
        "train",
        "--model",
        base.to_str().unwrap(),
        "--data",
        fixture("train/alpaca_tiny.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--micro-batch",
        "2",
        "--batch",
        "4",
        "--max-steps",
        "2",
        "--publish",
        &url,
        "--token",
        &token,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("published zh-train 0.1.0 to {url}")), "{err}");
    // the adapter names the registry's base and carries the same fingerprint the registry computed
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["base_model_name_or_path"], DEMO_MODEL_ID);
    let sha = vicugna_core::identity::sha256_file(&base).unwrap();
    let info = vicugna_server::inspect::gguf_model(&base, &sha).unwrap();
    assert_eq!(cfg["vicugna"]["base_fingerprint"], info.fingerprint.as_str());
    let dest = dir.path().join("pulled");
    let (ok, _, err) = vicugna(&["pull", "--server", &url, "zh-train", "--out", dest.to_str().unwrap()]);
    assert!(ok, "{err}");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(std::fs::read(dest.join(f)).unwrap(), std::fs::read(out.join(f)).unwrap(), "{f}");
    }
}
