//! vicugna-web: the zero-install browser chat app (wasm-bindgen + web-sys, WebGPU in a Worker).
//!
//! Not implemented yet — it depends on the WGSL backend and the registry server, each its own
//! issue. This crate deliberately exports nothing until then.
