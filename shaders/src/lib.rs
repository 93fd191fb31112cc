//! vicugna-shaders: WGSL kernels and the wgpu backend of `vicugna-core`'s model.
//!
//! What it does: every operation of `vicugna_core::backend::Backend` as a WGSL compute kernel
//! (one `.wgsl` file per kernel family under `wgsl/`, specialised by a tiny `#if NAME` define
//! preprocessor), F32/F16/Q8_0/Q4_0 weights (Q formats repacked at load into aligned scale and
//! quant arrays; other GGUF types are dequantised to F32 at load), LoRA applied unmerged inside the
//! projection kernel so adapters swap without touching the resident base, f32 arithmetic only
//! (no shader-f16, no subgroups: it runs on SwiftShader/WebGPU as well as native Vulkan/Metal/DX12).
//!
//! What it does not do yet (see the WGSL backend issue): tensors larger than one storage binding,
//! GPU-side sampling, a tuned decode path (one submission per step, reused buffers), the bench.

pub mod kernels;
pub mod wgpu_backend;

pub use kernels::{preprocess, Params, KERNELS};
pub use wgpu_backend::Wgpu;
