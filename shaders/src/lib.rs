//! vicugna-shaders: the WGSL kernels of the wgpu backend.
//!
//! Not implemented yet — the WGSL backend is its own issue ("WGSL backend: 4-bit LLaMA inference
//! with unmerged LoRA on WebGPU"). This crate deliberately exports nothing until those kernels
//! exist and are tested against the CPU reference in `vicugna-core`.
