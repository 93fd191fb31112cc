//! The training library stays a library: no command-line parsing, HTTP client or GPU API among
//! its (normal) dependencies, so a CUDA backend or a server can depend on it without them.

#[test]
fn no_cli_http_or_gpu_crates_in_the_dependency_tree() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "vicugna-train", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"vicugna-core"), "the tree lists vicugna-core:\n{tree}");
    for banned in ["clap", "reqwest", "wgpu", "naga", "tokio", "hyper", "vicugna-shaders"] {
        assert!(!crates.contains(&banned), "vicugna-train depends on {banned}:\n{tree}");
    }
}
