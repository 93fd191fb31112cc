//! The WebGPU backend in a real browser (headless Chromium on SwiftShader in CI), inside a
//! dedicated worker as the app runs it: logits on the fixture models against the CPU reference
//! compiled into the same wasm (F32 1e-4; Q8_0/Q4_0 1e-3 against the CPU engine on the same
//! quantised weights), with and without LoRA, through the streaming loader the app uses, and 32
//! greedy tokens identical to the CPU's.
//!
//! Run: `scripts/test-web.sh` (wasm-bindgen-test-runner with chromedriver; see webdriver.json).

#![cfg(target_arch = "wasm32")]

use vicugna_core::backend::Backend;
use vicugna_core::cpu::Cpu;
use vicugna_core::generate::{generate_async, GenerationConfig};
use vicugna_core::stream::StreamLoader;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{Bytes, LoraAdapter, Model, ModelWeights};
use vicugna_shaders::Wgpu;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const F32: &[u8] = include_bytes!("../../tests/fixtures/tiny-llama-f32.gguf");
const Q8: &[u8] = include_bytes!("../../tests/fixtures/tiny-llama-q8_0.gguf");
const Q4: &[u8] = include_bytes!("../../tests/fixtures/tiny-llama-q4_0.gguf");
const LORA_A_CFG: &str = include_str!("../../tests/fixtures/lora-a/adapter_config.json");
const LORA_A: &[u8] = include_bytes!("../../tests/fixtures/lora-a/adapter_model.safetensors");
const LORA_B_CFG: &str = include_str!("../../tests/fixtures/lora-b/adapter_config.json");
const LORA_B: &[u8] = include_bytes!("../../tests/fixtures/lora-b/adapter_model.safetensors");

const IDS: [u32; 9] = [1, 450, 4996, 17354, 1701, 29901, 29871, 30275, 30356];

async fn device() -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    Wgpu::request_device(&instance, |_| {}).await.expect("WebGPU device (Chromium needs --enable-unsafe-webgpu)")
}

fn lora(name: &str, cfg: &str, bytes: &[u8]) -> LoraAdapter {
    LoraAdapter::from_peft(
        name,
        cfg,
        "adapter_config.json",
        Bytes::from_vec(bytes.to_vec()),
        "adapter_model.safetensors",
    )
    .unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d.is_finite(), "{what}: non-finite at {i}: {g} vs {w}");
        if d > worst {
            worst = d;
            at = i;
        }
    }
    web_sys::console::log_1(&format!("{what}: max |webgpu - cpu| = {worst:.2e} (at {at})").into());
    assert!(worst <= atol, "{what}: max diff {worst} at {at} ({} vs {}) exceeds {atol}", got[at], want[at]);
}

async fn gpu_logits<B: Backend>(m: &Model<B>) -> Vec<f32> {
    let mut c = m.new_cache(IDS.len()).unwrap();
    m.forward(&IDS, 0, &mut c, vicugna_core::Pick::AllLogits).await.unwrap().logits().unwrap()
}

fn cpu_logits(m: &Model<Cpu>) -> Vec<f32> {
    let mut c = m.new_cache(IDS.len()).unwrap();
    m.forward_blocking(&IDS, 0, &mut c, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap()
}

#[wasm_bindgen_test]
async fn webgpu_logits_match_the_cpu_reference_with_and_without_lora() {
    let (device, queue, info) = device().await;
    web_sys::console::log_1(&format!("adapter: {info:?}").into());
    let (a, b) = (lora("a", LORA_A_CFG, LORA_A), lora("b", LORA_B_CFG, LORA_B));
    // both matmul variants: row-per-invocation (what the app picks on SwiftShader) and split
    // rows; one backend each, shared by every model so pipelines are compiled once
    let backends: Vec<Wgpu> = [true, false]
        .into_iter()
        .map(|rowwise| {
            let mut be = Wgpu::new(device.clone(), queue.clone());
            be.rowwise = rowwise;
            be
        })
        .collect();
    for (name, bytes, atol) in [("f32", F32, 1e-4f32), ("q8_0", Q8, 1e-3), ("q4_0", Q4, 1e-3)] {
        let w = ModelWeights::from_gguf_bytes(Bytes::from_vec(bytes.to_vec()), name).unwrap();
        let mut cpu = Model::new(Cpu::EXACT, &w).unwrap();
        for be in &backends {
            let rowwise = be.rowwise;
            let mut gpu = Model::new(be, &w).unwrap();
            let tag = format!("{name} rowwise={rowwise}");
            assert_close(&format!("{tag} base"), &gpu_logits(&gpu).await, &cpu_logits(&cpu), atol);
            // hot-swap on the resident base: a, then b, then a 0.7 + b 0.5
            for (label, set) in [("a", vec![(&a, 1.0)]), ("b", vec![(&b, 1.0)]), ("a+b", vec![(&a, 0.7), (&b, 0.5)])] {
                for m in [&mut gpu as &mut dyn Attach, &mut cpu] {
                    m.clear();
                    for (l, wt) in &set {
                        m.attach_one(l, *wt);
                    }
                }
                assert_close(&format!("{tag} lora {label}"), &gpu_logits(&gpu).await, &cpu_logits(&cpu), atol);
            }
            cpu.detach("a");
            cpu.detach("b");
        }
    }
}

/// Attach/detach on a model of any backend, for the loop above.
trait Attach {
    fn clear(&mut self);
    fn attach_one(&mut self, a: &LoraAdapter, w: f32);
}
impl<B: Backend> Attach for Model<B> {
    fn clear(&mut self) {
        for (n, _) in self.adapters() {
            self.detach(&n);
        }
    }
    fn attach_one(&mut self, a: &LoraAdapter, w: f32) {
        self.attach(a, w).unwrap();
    }
}

#[wasm_bindgen_test]
async fn streamed_into_webgpu_greedy_tokens_equal_the_cpu_for_32_steps() {
    let (device, queue, _) = device().await;
    let w = ModelWeights::from_gguf_bytes(Bytes::from_vec(Q4.to_vec()), "q4_0").unwrap();
    let mut cpu = Model::new(Cpu::EXACT, &w).unwrap();
    // the app's load path: the GGUF in network-sized chunks straight into GPU buffers
    let mut be = Wgpu::new(device.clone(), queue.clone());
    be.rowwise = true;
    let mut loader = StreamLoader::new(be, "q4_0 stream", Q4.len() as u64);
    for chunk in Q4.chunks(65_536) {
        loader.push(chunk).unwrap();
    }
    let loaded = loader.finish().unwrap();
    let (mut gpu, tk): (Model<Wgpu>, Tokenizer) = (loaded.model, loaded.tokenizer);
    assert_close("streamed q4_0", &gpu_logits(&gpu).await, &cpu_logits(&cpu), 1e-3);
    let cfg = GenerationConfig { max_new_tokens: 32, ..Default::default() };
    let prompt = tk.encode("中国的首都是", true).unwrap();
    for adapter in [None, Some(lora("a", LORA_A_CFG, LORA_A))] {
        if let Some(a) = &adapter {
            gpu.attach(a, 1.0).unwrap();
            cpu.attach(a, 1.0).unwrap();
        }
        let want = vicugna_core::generate::generate(&cpu, &tk, &prompt, &cfg, |_| true).unwrap();
        let got = generate_async(&gpu, &tk, &prompt, &cfg, |_| true).await.unwrap();
        assert_eq!(got.ids.len(), 32);
        assert_eq!(got.ids, want.ids, "greedy tokens, adapter {:?}", adapter.as_ref().map(|a| &a.name));
        // repetition penalty: the logits come back to the host every step
        let rp = GenerationConfig { repetition_penalty: 1.3, ..cfg.clone() };
        let want = vicugna_core::generate::generate(&cpu, &tk, &prompt, &rp, |_| true).unwrap();
        let got = generate_async(&gpu, &tk, &prompt, &rp, |_| true).await.unwrap();
        assert_eq!(got.ids, want.ids, "greedy tokens with repetition penalty");
    }
}
