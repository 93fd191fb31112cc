//! `vicugna train` against PEFT: the same data, settings and starting adapter give the same
//! per-step losses and the same final adapter as transformers + PEFT (tests/fixtures/train, made by
//! `scripts/gen_fixtures.py train`); PEFT's logits with our adapter equal our engine's; resume is
//! exact, also after SIGKILL; bad input is refused with a clear error and touches no checkpoint.

use clap::Parser;
use std::path::{Path, PathBuf};
use vicugna_cli::cmd::train::TrainArgs;
use vicugna_core::cpu::Cpu;
use vicugna_core::{LoraAdapter, Model, ModelWeights};
use vicugna_tests::{assert_close, fixture, safetensors, tensor};
use vicugna_train::checkpoint::read_tensors;
use vicugna_train::data::{self, Templating, TrainTemplate};
use vicugna_train::{run, Silent, TrainConfig};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: TrainArgs,
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("train/reference.json")).unwrap()).unwrap()
}

/// `vicugna train` arguments with the fixture's settings, plus `extra` (which overrides).
fn argv(out: &Path, extra: &[&str]) -> Vec<String> {
    let s = &reference()["settings"];
    let f = |p: &str| fixture(p).display().to_string();
    let mut v: Vec<String> = vec!["train".into()];
    for (k, val) in [
        ("--model", f("tiny-llama")),
        ("--data", f("train/alpaca_tiny.json")),
        ("--out", out.display().to_string()),
        ("--init-adapter", f("lora-a")),
        ("--lora-dropout", "0".into()),
        ("--cutoff-len", s["cutoff"].to_string()),
        ("--micro-batch", s["micro"].to_string()),
        ("--batch", s["batch"].to_string()),
        ("--epochs", s["epochs"].to_string()),
        ("--lr", s["lr"].to_string()),
        ("--warmup-steps", s["warmup"].to_string()),
        ("--max-grad-norm", s["max_grad_norm"].to_string()),
    ] {
        if !extra.contains(&k) {
            v.push(k.into());
            v.push(val);
        }
    }
    v.extend(["--no-shuffle".into(), "--quiet".into()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The run `vicugna train` makes of those arguments.
fn args(out: &Path, extra: &[&str]) -> TrainConfig {
    Cli::parse_from(argv(out, extra)).a.config()
}

fn log_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn data_pipeline_matches_hf_tokenization_and_masking() {
    let tk = vicugna_core::tokenizer::Tokenizer::load(&fixture("tiny-llama/tokenizer.json")).unwrap();
    let t = Templating {
        template: TrainTemplate::Instruct,
        instruction: String::new(),
        cutoff_len: reference()["settings"]["cutoff"].as_u64().unwrap() as usize,
        train_on_inputs: false,
    };
    let recs = data::read_file(&fixture("train/alpaca_tiny.json"), false, &mut vec![]).unwrap();
    let refs = reference()["examples"].as_array().unwrap().clone();
    assert_eq!(recs.len(), refs.len());
    for ((r, origin), e) in recs.iter().zip(&refs) {
        let ex = data::tokenize(r, &t, &tk, 1, 2).unwrap();
        let ids: Vec<u32> = e["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let labels: Vec<i64> = e["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ex.tokens, ids[..ids.len() - 1], "{origin}: token ids");
        let want: Vec<i32> = labels[1..].iter().map(|&l| if l < 0 { -1 } else { l as i32 }).collect();
        assert_eq!(ex.targets, want, "{origin}: labels masked on the prompt");
    }
}

#[test]
fn training_matches_peft_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("log.jsonl");
    let gguf = dir.path().join("out.gguf");
    run(
        &args(&out, &["--log-json", log.to_str().unwrap(), "--gguf", gguf.to_str().unwrap()]),
        &mut std::io::sink(),
        &mut Silent,
    )
    .unwrap();
    let ours = log_lines(&log);
    let theirs = reference()["steps"].as_array().unwrap().clone();
    assert_eq!(ours.len(), theirs.len(), "optimizer steps");
    for (o, t) in ours.iter().zip(&theirs) {
        let (lo, lt) = (o["loss"].as_f64().unwrap(), t["loss"].as_f64().unwrap());
        eprintln!(
            "step {}: loss {lo:.7} vs PEFT {lt:.7}, grad norm {} vs {}",
            t["step"], o["grad_norm"], t["grad_norm"]
        );
        assert!(((lo - lt) / lt).abs() < 1e-4, "step {}: loss {lo} vs PEFT {lt}", t["step"]);
        let (go, gt) = (o["grad_norm"].as_f64().unwrap(), t["grad_norm"].as_f64().unwrap());
        assert!(((go - gt) / gt).abs() < 1e-4, "step {}: grad norm {go} vs PEFT {gt}", t["step"]);
        let (ro, rt) = (o["lr"].as_f64().unwrap(), t["lr"].as_f64().unwrap());
        assert!((ro - rt).abs() <= 1e-9 + 1e-6 * rt, "step {}: lr {ro} vs {rt}", t["step"]);
    }
    // the final adapter, tensor by tensor (PEFT names)
    let mine = read_tensors(&out.join("adapter_model.safetensors")).unwrap();
    let peft = read_tensors(&fixture("train/peft-trained/adapter_model.safetensors")).unwrap();
    assert_eq!(mine.keys().collect::<Vec<_>>(), peft.keys().collect::<Vec<_>>(), "PEFT tensor names");
    let mut worst = 0f32;
    for (k, v) in &peft {
        worst = worst.max(vicugna_tests::max_abs_diff(&mine[k], v));
        assert_close(&mine[k], v, 1e-4, 0.0);
    }
    eprintln!("final adapter: max |ours - PEFT| = {worst:.2e}");
    // PEFT ran our adapter (scripts/gen_fixtures.py train): same logits as our engine with it
    let r = safetensors("train/reference.safetensors");
    let probe = vicugna_tests::ids(&r, "probe_ids");
    let mut m = Model::new(Cpu::EXACT, &ModelWeights::load(&fixture("tiny-llama")).unwrap()).unwrap();
    m.attach(&LoraAdapter::load(&out).unwrap(), 1.0).unwrap();
    let mut cache = m.new_cache(probe.len()).unwrap();
    let logits = m.forward_blocking(&probe, 0, &mut cache, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap();
    let want = tensor(&r, "peft_logits_of_vicugna_adapter");
    eprintln!("PEFT logits with our adapter: max diff {:.2e}", vicugna_tests::max_abs_diff(&logits, &want));
    assert_close(&logits, &want, 1e-4, 0.0);
    // the llama.cpp GGUF LoRA written beside it is the same adapter
    let mut g = Model::new(Cpu::EXACT, &ModelWeights::load(&fixture("tiny-llama")).unwrap()).unwrap();
    g.attach(&LoraAdapter::load(&gguf).unwrap(), 1.0).unwrap();
    let mut cache = g.new_cache(probe.len()).unwrap();
    assert_close(
        &g.forward_blocking(&probe, 0, &mut cache, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap(),
        &logits,
        1e-5,
        0.0,
    );
    // the config PEFT read names the base and carries its fingerprint
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["base_model_name_or_path"], "tiny-llama");
    assert_eq!(cfg["vicugna"]["base_fingerprint"].as_str().unwrap().len(), 64);
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under a directory with its contents.
fn snapshot(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            v.extend(snapshot(&e.path()));
        } else {
            v.push((e.path(), bytes(&e.path())));
        }
    }
    v.sort();
    v
}

#[test]
fn resume_is_exact_and_refuses_changed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (full, part) = (dir.path().join("full"), dir.path().join("part"));
    let extra = ["--epochs", "3", "--lora-dropout", "0.05", "--save-steps", "1"];
    run(&args(&full, &extra), &mut std::io::sink(), &mut Silent).unwrap();
    let mut stop = extra.to_vec();
    stop.extend(["--stop-after", "2"]);
    run(&args(&part, &stop), &mut std::io::sink(), &mut Silent).unwrap();
    assert!(!part.join("adapter_model.safetensors").exists(), "stopped early: no final adapter yet");
    let before = snapshot(&part);
    // a changed batch geometry or learning rate is refused, and nothing on disk changes
    for (flag, val, field) in [("--micro-batch", "1", "micro_batch"), ("--lr", "0.002", "lr")] {
        let mut cli: Vec<&str> = extra.to_vec();
        cli.extend([flag, val, "--resume", part.to_str().unwrap()]);
        let e = run(&args(&part, &cli), &mut std::io::sink(), &mut Silent).unwrap_err().to_string();
        assert!(e.contains(&format!("`{field}` was")) && e.contains("checkpoint-2"), "{e}");
        assert_eq!(snapshot(&part), before, "a refused resume touches nothing");
    }
    let mut res = extra.to_vec();
    let p = part.to_str().unwrap();
    res.extend(["--resume", p]);
    run(&args(&part, &res), &mut std::io::sink(), &mut Silent).unwrap();
    assert_eq!(
        bytes(&part.join("adapter_model.safetensors")),
        bytes(&full.join("adapter_model.safetensors")),
        "resumed run ends with the same adapter bytes"
    );
}

#[test]
fn sigkilled_run_resumes_to_the_same_bytes() {
    let exe = env!("CARGO_BIN_EXE_vicugna");
    let dir = tempfile::tempdir().unwrap();
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    let extra = ["--epochs", "40", "--lora-dropout", "0.05", "--save-steps", "3", "--save-total-limit", "2"];
    run(&args(&full, &extra), &mut std::io::sink(), &mut Silent).unwrap();
    let cli = |out: &Path, more: &[&str]| {
        let mut all = extra.to_vec();
        all.extend(more);
        let mut c = std::process::Command::new(exe);
        c.args(argv(out, &all)).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c
    };
    let mut child = cli(&killed, &[]).spawn().unwrap();
    // kill it hard once a checkpoint exists and before it finishes
    let t0 = std::time::Instant::now();
    while !killed.join("checkpoint-6").exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was killed before finishing (it must outlast checkpoint-6)");
    assert!(!killed.join("adapter_model.safetensors").exists());
    let st = cli(&killed, &["--resume", killed.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    assert_eq!(bytes(&killed.join("adapter_model.safetensors")), bytes(&full.join("adapter_model.safetensors")));
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"instruction\":\"你好\",\"input\":\"\",\"output\":\"你好！\"}\n\n{\"instruction\":\"缺少输出\"}\n{not json}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut a = args(&out, &[]);
    a.data = vec![bad.clone()];
    let e = format!("{:#}", run(&a, &mut std::io::sink(), &mut Silent).unwrap_err());
    assert!(e.contains(&format!("{}:3", bad.display())) && e.contains("missing `output`"), "{e}");
    a.skip_bad_records = true;
    a.val_size = 0;
    let mut log = Vec::new();
    run(&a, &mut log, &mut Silent).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("skipped 2 bad records"), "{log}");
    // a JSON array names the line of the bad element
    let arr = dir.path().join("bad.json");
    std::fs::write(&arr, "[\n {\"instruction\":\"a\",\"output\":\"b\"},\n {\"instruction\":7,\"output\":\"b\"}\n]\n")
        .unwrap();
    a.data = vec![arr.clone()];
    a.skip_bad_records = false;
    let e = format!("{:#}", run(&a, &mut std::io::sink(), &mut Silent).unwrap_err());
    assert!(e.contains(&format!("{}:3", arr.display())) && e.contains("`instruction` must be a string"), "{e}");
    // an adapter made for another base
    let mut a = args(&dir.path().join("o2"), &[]);
    a.model = fixture("tiny-llama3-tied");
    a.tokenizer = Some(fixture("tiny-llama/tokenizer.json"));
    let e = format!("{:#}", run(&a, &mut std::io::sink(), &mut Silent).unwrap_err());
    assert!(e.contains("--init-adapter") && e.contains("different base"), "{e}");
}

#[test]
fn eval_loss_is_logged_on_held_out_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let a =
        args(&dir.path().join("out"), &["--val-size", "2", "--eval-steps", "1", "--log-json", log.to_str().unwrap()]);
    run(&a, &mut std::io::sink(), &mut Silent).unwrap();
    let lines = log_lines(&log);
    let evals: Vec<f64> = lines.iter().filter_map(|l| l["eval_loss"].as_f64()).collect();
    let steps = lines.iter().filter(|l| l.get("loss").is_some()).count();
    assert_eq!(evals.len(), steps, "one eval per step");
    assert!(evals.iter().all(|e| e.is_finite() && *e > 0.0), "{evals:?}");
    // 6 training records, micro-batch 2, batch 4: 2 steps per epoch
    assert_eq!(steps, 4);
}
