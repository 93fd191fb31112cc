//! vicugna-shaders: WGSL kernels and the wgpu backend of `vicugna-core`'s model.
//!
//! What it does: every operation of `vicugna_core::backend::Backend` as a WGSL compute kernel
//! (one `.wgsl` file per kernel family under `wgsl/`, specialised by a tiny `#if NAME` define
//! preprocessor), F32/F16/Q8_0/Q4_0 weights and the types real files contain (Q5_0, Q4_1, Q4_K,
//! Q6_K) kept quantised: repacked at load into aligned integer and f32 scale/min arrays that give
//! exactly the CPU's dequantised weights (Q5_1/Q5_K/BF16 are dequantised to F32), Gemma-3's extra
//! operations (GeGLU, QK-norm, scaling, sliding-window attention), LoRA applied unmerged inside the
//! projection kernel so adapters swap without touching the resident base, f32 arithmetic only
//! (no shader-f16, no subgroups: it runs on SwiftShader/WebGPU as well as native Vulkan/Metal/DX12).
//!
//! Also: matrices larger than one storage binding split by rows; attention split into chunks for
//! long contexts; greedy and top-k/top-p sampling on the GPU (a decode step reads back 4 bytes);
//! one submission per decode step with pooled buffers; a row-per-invocation matmul variant for CPU
//! adapters (lavapipe, SwiftShader).
//!
//! What it does not do yet (see the WGSL backend issue): a tuned matvec for real GPUs (measured on
//! lavapipe only), a tiled prefill matmul (prefill re-reads each weight row per token), activations
//! larger than one storage binding, optional shader-f16/subgroup fast paths.

pub mod kernels;
pub mod wgpu_backend;

pub use kernels::{compile_source, preprocess, Entry, Family, Format, KernelParams, Variant};
pub use wgpu_backend::Wgpu;
