//! The inference worker: owns the WebGPU device, the resident base model and its adapters, and
//! answers the page's requests one at a time (Stop and CancelLoad act at once). Everything that
//! waits — downloads, cache reads, GPU read-backs — is awaited, so the worker's event loop keeps
//! taking messages while a reply is generated.

use crate::protocol::{gpu_bytes, human_bytes, AdapterRef, ErrorKind, Event, Request, Settings};
use js_sys::{Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use vicugna_core::generate::{generate_cached_async, PromptCache};
use vicugna_core::prompt::{self, Turn};
use vicugna_core::stream::StreamLoader;
use vicugna_core::tokenizer::Tokenizer;
use vicugna_core::{Bytes, LoraAdapter, Model};
use vicugna_shaders::Wgpu;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, ReadableStream, ReadableStreamDefaultReader, Response};

const CACHE_NAME: &str = "vicugna-models-v1";

thread_local! {
    /// The worker's global scope, for callbacks that wgpu requires to be `Send` (they capture
    /// nothing and reach the scope through here).
    static SCOPE: RefCell<Option<DedicatedWorkerGlobalScope>> = const { RefCell::new(None) };
    /// Set by the device-lost callback; the next request acquires a new device.
    static DEVICE_LOST: Cell<bool> = const { Cell::new(false) };
}

fn post(e: &Event) {
    let text = serde_json::to_string(e).expect("events serialise");
    SCOPE.with(|s| {
        if let Some(s) = s.borrow().as_ref() {
            let _ = s.post_message(&JsValue::from_str(&text));
        }
    });
}

/// A failure with the kind the page explains it by.
struct Fail(ErrorKind, String);

type Res<T> = Result<T, Fail>;

fn js_err(v: JsValue) -> String {
    v.as_string()
        .or_else(|| v.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn other(e: impl std::fmt::Display) -> Fail {
    Fail(ErrorKind::Other, e.to_string())
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// A CPU implementation (SwiftShader): use the row-per-invocation matmul.
    software: bool,
}

struct Session {
    model_id: String,
    /// The GPU memory estimate for this model (`protocol::gpu_bytes`).
    gpu_bytes: u64,
    model: Model<Wgpu>,
    tk: Tokenizer,
    /// Downloaded adapters by "name@version" (switching back needs no second download).
    adapters: HashMap<String, LoraAdapter>,
    /// Keys and values of the last prompt and reply, on the GPU: the next turn of a chat (or any
    /// prompt sharing the template's preamble) prefills only what is new.
    prompt_cache: PromptCache<Wgpu>,
}

#[derive(Default)]
struct Worker {
    gpu: RefCell<Option<Rc<Gpu>>>,
    session: RefCell<Option<Session>>,
    stop: Cell<bool>,
    cancel: Cell<bool>,
    /// Requests received but not yet taken up: a warm-up stops at its next chunk when one waits.
    queued: Cell<usize>,
    abort: RefCell<Option<web_sys::AbortController>>,
}

/// Entry point of `worker.js`.
#[wasm_bindgen]
pub fn start_worker() {
    console_panics();
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    SCOPE.with(|s| *s.borrow_mut() = Some(scope.clone()));
    let w = Rc::new(Worker::default());
    // each request with the time it arrived, so waiting counts in the time to the first token
    let (tx, mut rx) = futures_channel::mpsc::unbounded::<(Request, f64)>();
    let wm = w.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else { return };
        match serde_json::from_str::<Request>(&text) {
            Ok(Request::Stop) => wm.stop.set(true),
            Ok(Request::CancelLoad) => {
                wm.cancel.set(true);
                if let Some(a) = wm.abort.borrow().as_ref() {
                    a.abort();
                }
            }
            Ok(r) => {
                wm.queued.set(wm.queued.get() + 1);
                let _ = tx.unbounded_send((r, now_ms()));
            }
            Err(e) => post(&Event::Error {
                kind: ErrorKind::Other,
                context: "protocol".into(),
                message: format!("bad request: {e}"),
            }),
        }
    });
    scope.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    spawn_local(async move {
        match w.ensure_gpu().await {
            Ok(g) => post(&Event::Ready {
                adapter: adapter_label(&g.info),
                shader_f16: g.device.features().contains(wgpu::Features::SHADER_F16),
                max_binding: g.device.limits().max_storage_buffer_binding_size,
                max_buffer: g.device.limits().max_buffer_size,
            }),
            Err(Fail(kind, message)) => post(&Event::Error { kind, context: "device".into(), message }),
        }
        // one request at a time, in order
        while let Some((req, arrived)) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut rx), cx)).await
        {
            w.queued.set(w.queued.get().saturating_sub(1));
            let (context, r) = match req {
                Request::Load { model_id, url, size, sha256, max_context } => {
                    ("load", w.load(&model_id, &url, size, &sha256, max_context).await)
                }
                Request::Generate { id, history, input, settings } => {
                    ("generate", w.generate(id, &history, &input, &settings, arrived).await)
                }
                Request::Warm { settings } => ("warm", w.warm(&settings).await),
                Request::SetAdapters { adapters } => ("adapters", w.set_adapters(&adapters).await),
                Request::Stop | Request::CancelLoad => continue,
            };
            if let Err(Fail(kind, message)) = r {
                post(&Event::Error { kind, context: context.into(), message });
            }
        }
    });
}

fn console_panics() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!("vicugna worker panicked: {info}")));
        post(&Event::Error { kind: ErrorKind::Other, context: "panic".into(), message: info.to_string() });
    }));
}

fn adapter_label(info: &wgpu::AdapterInfo) -> String {
    if info.name.is_empty() {
        format!("{:?} WebGPU adapter", info.device_type)
    } else {
        info.name.clone()
    }
}

/// The page's own description of its WebGPU adapter (vendor/architecture), which wgpu does not
/// pass through; used to recognise SwiftShader.
async fn js_adapter_info(gpu: &JsValue) -> Option<(String, String)> {
    let req = Reflect::get(gpu, &"requestAdapter".into()).ok()?.dyn_into::<js_sys::Function>().ok()?;
    let adapter = JsFuture::from(req.call0(gpu).ok()?.dyn_into::<js_sys::Promise>().ok()?).await.ok()?;
    let info = Reflect::get(&adapter, &"info".into()).ok()?;
    let s = |k: &str| Reflect::get(&info, &k.into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    Some((s("vendor"), s("architecture")))
}

impl Worker {
    async fn ensure_gpu(&self) -> Res<Rc<Gpu>> {
        if DEVICE_LOST.with(|l| l.replace(false)) {
            // the model's buffers died with the device
            *self.session.borrow_mut() = None;
            *self.gpu.borrow_mut() = None;
        }
        if let Some(g) = self.gpu.borrow().as_ref() {
            return Ok(g.clone());
        }
        let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let gpu = Reflect::get(&scope.navigator(), &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
        if gpu.is_undefined() {
            return Err(Fail(
                ErrorKind::NoWebGpu,
                "this browser does not offer WebGPU (navigator.gpu is missing): use a current Chrome, Edge or \
                 Safari, or enable WebGPU in the browser's settings/flags"
                    .into(),
            ));
        }
        let js_info = js_adapter_info(&gpu).await;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let (device, queue, mut info) = Wgpu::request_device(&instance, |_| {}).await.map_err(|e| {
            Fail(
                ErrorKind::NoWebGpu,
                format!("WebGPU is present but gave no usable device ({e}): is the GPU blocklisted?"),
            )
        })?;
        let software = info.device_type == wgpu::DeviceType::Cpu
            || js_info.as_ref().is_some_and(|(_, arch)| arch.contains("swiftshader"));
        if info.name.is_empty() {
            if let Some((vendor, arch)) = &js_info {
                info.name = format!("{vendor} {arch}").trim().to_string();
            }
        }
        device.set_device_lost_callback(|reason, message| {
            if reason == wgpu::DeviceLostReason::Destroyed {
                return;
            }
            DEVICE_LOST.with(|l| l.set(true));
            post(&Event::Error {
                kind: ErrorKind::DeviceLost,
                context: "device".into(),
                message: format!("the GPU device was lost ({message}); reload the model to continue"),
            });
        });
        device.on_uncaptured_error(std::sync::Arc::new(|e: wgpu::Error| {
            let kind =
                if matches!(e, wgpu::Error::OutOfMemory { .. }) { ErrorKind::OutOfMemory } else { ErrorKind::Other };
            post(&Event::Error { kind, context: "gpu".into(), message: e.to_string() });
        }));
        let g = Rc::new(Gpu { device, queue, info, software });
        *self.gpu.borrow_mut() = Some(g.clone());
        Ok(g)
    }

    fn backend(g: &Gpu) -> Wgpu {
        let mut w = Wgpu::new(g.device.clone(), g.queue.clone());
        w.rowwise = g.software;
        w
    }

    async fn cache(&self) -> Option<web_sys::Cache> {
        let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let caches = scope.caches().ok()?;
        JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
    }

    async fn load(&self, model_id: &str, url: &str, size: u64, sha256: &str, max_context: usize) -> Res<()> {
        self.cancel.set(false);
        let g = self.ensure_gpu().await?;
        // free the previous model's GPU memory before streaming the next one in
        *self.session.borrow_mut() = None;
        let t0 = now_ms();
        let key = format!("/vicugna-cache/sha256/{sha256}");
        let cache = self.cache().await;
        if let Some(cache) = &cache {
            let hit = JsFuture::from(cache.match_with_str(&key)).await.ok().filter(|v| !v.is_undefined());
            if let Some(resp) = hit.and_then(|v| v.dyn_into::<Response>().ok()) {
                match self.stream_model(&g, resp.body(), model_id, size, sha256, max_context, "cache").await {
                    Ok(s) => return self.loaded(s, true, t0),
                    // a partial or damaged entry: drop it and download again
                    Err(Fail(ErrorKind::Corrupt, why)) => {
                        web_sys::console::warn_1(&format!("cached {model_id} failed verification: {why}").into());
                        let _ = JsFuture::from(cache.delete_with_str(&key)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let abort = web_sys::AbortController::new().map_err(|e| other(js_err(e)))?;
        *self.abort.borrow_mut() = Some(abort.clone());
        let init = web_sys::RequestInit::new();
        init.set_signal(Some(&abort.signal()));
        // the verified copy lives in the Cache API; a second copy in the HTTP cache would double
        // the disk a multi-GB model takes (and could hand back what just failed verification)
        init.set_cache(web_sys::RequestCache::NoStore);
        let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let resp = JsFuture::from(scope.fetch_with_str_and_init(url, &init)).await.map_err(|e| {
            if self.cancel.get() {
                Fail(ErrorKind::Cancelled, "download cancelled".into())
            } else {
                Fail(ErrorKind::Network, format!("cannot reach the server for {url}: {}", js_err(e)))
            }
        })?;
        let resp: Response = resp.dyn_into().map_err(|_| other("fetch did not return a Response"))?;
        if !resp.ok() {
            return Err(Fail(ErrorKind::Network, format!("the server answered {} for {url}", resp.status())));
        }
        let body = resp.body().ok_or_else(|| Fail(ErrorKind::Network, format!("{url}: empty response")))?;
        // one branch into the cache, one into the GPU; the cache entry is kept only if verified
        let branches = body.tee();
        let (a, b): (ReadableStream, ReadableStream) =
            (branches.get(0).unchecked_into(), branches.get(1).unchecked_into());
        let put = cache.as_ref().and_then(|c| {
            let r = Response::new_with_opt_readable_stream(Some(&b)).ok()?;
            Some(c.put_with_str(&key, &r))
        });
        let result = self.stream_model(&g, Some(a), model_id, size, sha256, max_context, "download").await;
        if result.is_err() {
            abort.abort();
        }
        let put_ok = match put {
            Some(p) => JsFuture::from(p).await.is_ok(),
            None => false,
        };
        self.abort.borrow_mut().take();
        match result {
            Ok(s) => {
                if !put_ok {
                    web_sys::console::warn_1(&"the model could not be stored in the browser cache".into());
                }
                self.loaded(s, false, t0)
            }
            Err(e) => {
                if let Some(c) = &cache {
                    let _ = JsFuture::from(c.delete_with_str(&key)).await;
                }
                Err(e)
            }
        }
    }

    fn loaded(&self, s: Session, from_cache: bool, t0: f64) -> Res<()> {
        let c = &s.model.cfg;
        let summary = format!(
            "{} layers, hidden {}, vocab {}, {} KV heads",
            c.num_layers, c.hidden_size, c.vocab_size, c.num_kv_heads
        );
        post(&Event::Loaded {
            model_id: s.model_id.clone(),
            from_cache,
            seconds: (now_ms() - t0) / 1e3,
            gpu_bytes: s.gpu_bytes,
            summary,
        });
        *self.session.borrow_mut() = Some(s);
        Ok(())
    }

    /// Stream a GGUF body into GPU buffers, hashing as it goes; the SHA-256 must match.
    #[allow(clippy::too_many_arguments)]
    async fn stream_model(
        &self,
        g: &Gpu,
        body: Option<ReadableStream>,
        model_id: &str,
        size: u64,
        sha256: &str,
        max_context: usize,
        phase: &str,
    ) -> Res<Session> {
        let body = body.ok_or_else(|| Fail(ErrorKind::Corrupt, "no body".into()))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let oom = g.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut loader = StreamLoader::new(Self::backend(g), model_id, size);
        let mut hasher = Sha256::new();
        let mut estimate = 0;
        let (t0, mut last_post) = (now_ms(), 0.0);
        // a corrupt cached copy is fetched again; a corrupt download is reported
        let bad = |e: vicugna_core::Error| {
            let kind = match ErrorKind::of(&e) {
                ErrorKind::Other => ErrorKind::Corrupt,
                k => k,
            };
            Fail(kind, e.to_string())
        };
        loop {
            if self.cancel.get() {
                let _ = reader.cancel();
                return Err(Fail(ErrorKind::Cancelled, "download cancelled".into()));
            }
            let r = JsFuture::from(reader.read()).await.map_err(|e| {
                if self.cancel.get() {
                    Fail(ErrorKind::Cancelled, "download cancelled".into())
                } else if phase == "cache" {
                    Fail(ErrorKind::Corrupt, format!("reading the cached copy: {}", js_err(e)))
                } else {
                    Fail(ErrorKind::Network, format!("the download broke off: {}", js_err(e)))
                }
            })?;
            if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
                break;
            }
            let chunk: Uint8Array = Reflect::get(&r, &"value".into()).map_err(|e| other(js_err(e)))?.unchecked_into();
            let v = chunk.to_vec();
            hasher.update(&v);
            if loader.push(&v).map_err(bad)? {
                let (h, c) = (loader.stream().header().expect("header"), loader.config().expect("config"));
                let need = gpu_bytes(h, c, max_context);
                estimate = need;
                self.check_fits(g, h, c, need, max_context)?;
                post(&Event::Estimate {
                    gpu_bytes: need,
                    summary: format!("needs about {} of GPU memory", human_bytes(need)),
                });
            }
            let t = now_ms();
            let done = loader.stream().received();
            if t - last_post > 100.0 || done == size {
                last_post = t;
                let rate = done as f64 / ((t - t0).max(1.0) / 1e3);
                post(&Event::Progress {
                    phase: phase.into(),
                    done,
                    total: size,
                    bytes_per_s: rate,
                    eta_s: (size - done) as f64 / rate.max(1.0),
                });
            }
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if digest != sha256 {
            return Err(Fail(
                ErrorKind::Corrupt,
                format!("{model_id}: SHA-256 {digest} does not match the registry's {sha256}"),
            ));
        }
        let loaded = loader.finish().map_err(bad)?;
        if let Some(e) = oom.pop().await {
            return Err(Fail(ErrorKind::OutOfMemory, format!("out of GPU memory while loading {model_id}: {e}")));
        }
        Ok(Session {
            model_id: model_id.into(),
            gpu_bytes: estimate,
            model: loaded.model,
            tk: loaded.tokenizer,
            adapters: HashMap::new(),
            prompt_cache: PromptCache::new(max_context),
        })
    }

    /// Refuse before downloading the weights when the device's limits cannot hold the model.
    fn check_fits(
        &self,
        g: &Gpu,
        h: &vicugna_core::gguf::GgufFile,
        c: &vicugna_core::Config,
        need: u64,
        max_context: usize,
    ) -> Res<()> {
        let limits = g.device.limits();
        let binding = limits.max_storage_buffer_binding_size;
        let too_large = |what: String| {
            Fail(
                ErrorKind::TooLarge,
                format!("this GPU cannot hold the model: {what} (the model needs about {} in all)", human_bytes(need)),
            )
        };
        for t in &h.tensors {
            let row = t.n_bytes() / t.dims[1..].iter().product::<u64>().max(1);
            if row * 2 > binding {
                return Err(too_large(format!(
                    "one row of `{}` ({}) exceeds a storage binding of {}",
                    t.name,
                    human_bytes(row),
                    human_bytes(binding)
                )));
            }
        }
        let kv = max_context as u64 * c.kv_dim() as u64 * 4;
        if kv > binding.min(limits.max_buffer_size) {
            return Err(too_large(format!(
                "a {max_context}-token KV cache layer ({}) exceeds a storage binding of {}",
                human_bytes(kv),
                human_bytes(binding)
            )));
        }
        Ok(())
    }

    async fn generate(&self, id: u64, history: &[Turn], input: &str, settings: &Settings, arrived: f64) -> Res<()> {
        self.stop.set(false);
        self.ensure_gpu().await?;
        // requests run one at a time, so the session can leave its cell while it generates
        let mut s = self
            .session
            .take()
            .ok_or_else(|| Fail(ErrorKind::Other, "no model is loaded yet: load one first".into()))?;
        let r = self.generate_with(&mut s, id, history, input, settings, arrived).await;
        if !DEVICE_LOST.with(|l| l.get()) {
            *self.session.borrow_mut() = Some(s);
        }
        r
    }

    /// While nothing else is asked of it, prefill the tokens every first-turn prompt of the
    /// settings' template begins with (`prompt::fixed_prefix`), 16 per pass, so that the first
    /// question prefills only itself. Stops after the pass in flight when a request arrives
    /// (what it ran is kept: the request starts from it). Nothing to do if the cache holds it.
    async fn warm(&self, settings: &Settings) -> Res<()> {
        self.ensure_gpu().await?;
        let Some(mut s) = self.session.take() else { return Ok(()) };
        let t0 = now_ms();
        let r = async {
            let prefix = prompt::fixed_prefix(&s.tk, settings.template, settings.max_context, settings.max_new_tokens)
                .map_err(other)?;
            let ran = s
                .prompt_cache
                .warm(&s.model, &prefix, 16, || self.queued.get() == 0)
                .await
                .map_err(|e| Fail(ErrorKind::of(&e), format!("prefilling the template's preamble: {e}")))?;
            let held = s.prompt_cache.tokens().iter().zip(&prefix).take_while(|(a, b)| a == b).count();
            post(&Event::Warmed { ran, held, prefix: prefix.len(), seconds: (now_ms() - t0) / 1e3 });
            Ok(())
        }
        .await;
        if !DEVICE_LOST.with(|l| l.get()) {
            *self.session.borrow_mut() = Some(s);
        }
        r
    }

    async fn generate_with(
        &self,
        s: &mut Session,
        id: u64,
        history: &[Turn],
        input: &str,
        settings: &Settings,
        arrived: f64,
    ) -> Res<()> {
        let cfg = settings.generation_config(&s.tk, &s.model.cfg.eos_token_ids).map_err(other)?;
        let ids = settings.prompt_ids(&s.tk, history, input).map_err(other)?;
        let t0 = now_ms();
        let first = Cell::new(0.0);
        let count = Cell::new(0usize);
        let oom = self.gpu.borrow().as_ref().map(|g| g.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory));
        let rate = |n: usize| n as f64 / ((now_ms() - t0).max(1.0) / 1e3);
        let g = generate_cached_async(
            &s.model,
            &s.tk,
            &ids,
            &cfg,
            &mut s.prompt_cache,
            |_| {
                if count.get() == 0 {
                    first.set(now_ms() - arrived);
                }
                count.set(count.get() + 1);
                !self.stop.get()
            },
            |text| {
                post(&Event::Text { id, text: text.into(), tokens: count.get(), tok_per_s: rate(count.get()) });
                !self.stop.get()
            },
        )
        .await
        .map_err(|e| {
            if DEVICE_LOST.with(|l| l.get()) || ErrorKind::of(&e) == ErrorKind::DeviceLost {
                Fail(ErrorKind::DeviceLost, format!("the GPU device was lost while generating: {e}"))
            } else {
                Fail(ErrorKind::of(&e), e.to_string())
            }
        })?;
        if let Some(scope) = oom {
            if let Some(e) = scope.pop().await {
                return Err(Fail(ErrorKind::OutOfMemory, format!("out of GPU memory while generating: {e}")));
            }
        }
        let secs = (now_ms() - t0) / 1e3;
        post(&Event::Done {
            id,
            ids: g.ids.clone(),
            text: g.text,
            stop: format!("{:?}", g.stop).to_lowercase(),
            prompt_tokens: ids.len(),
            prompt_reused: g.reused,
            new_tokens: g.ids.len(),
            seconds: secs,
            tok_per_s: g.ids.len() as f64 / secs.max(1e-3),
            first_token_ms: first.get(),
        });
        Ok(())
    }

    async fn set_adapters(&self, wanted: &[AdapterRef]) -> Res<()> {
        // fetch what is missing before touching the model, so a failed download changes nothing
        let mut fetched = Vec::new();
        for a in wanted {
            let key = format!("{}@{}", a.name, a.version);
            let have = self.session.borrow().as_ref().is_some_and(|s| s.adapters.contains_key(&key));
            if !have {
                fetched.push((key, fetch_adapter(a).await?));
            }
        }
        let mut guard = self.session.borrow_mut();
        let s = guard.as_mut().ok_or_else(|| Fail(ErrorKind::Other, "no model is loaded yet".into()))?;
        for (k, a) in fetched {
            s.adapters.insert(k, a);
        }
        for (name, _) in s.model.adapters() {
            if !wanted.iter().any(|a| a.name == name) {
                s.model.detach(&name);
            }
        }
        for a in wanted {
            let ad = &s.adapters[&format!("{}@{}", a.name, a.version)];
            s.model.attach(ad, a.weight).map_err(|e| other(format!("adapter {}@{}: {e}", a.name, a.version)))?;
        }
        post(&Event::AdaptersSet { active: s.model.adapters() });
        Ok(())
    }
}

async fn fetch_bytes(url: &str) -> Res<Vec<u8>> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| Fail(ErrorKind::Network, format!("cannot reach the server for {url}: {}", js_err(e))))?;
    let resp: Response = resp.dyn_into().map_err(|_| other("fetch did not return a Response"))?;
    if !resp.ok() {
        return Err(Fail(ErrorKind::Network, format!("the server answered {} for {url}", resp.status())));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|e| other(js_err(e)))?)
        .await
        .map_err(|e| Fail(ErrorKind::Network, format!("{url}: {}", js_err(e))))?;
    Ok(Uint8Array::new(&buf).to_vec())
}

async fn fetch_adapter(a: &AdapterRef) -> Res<LoraAdapter> {
    let cfg = fetch_bytes(&a.config_url).await?;
    let weights = fetch_bytes(&a.weights_url).await?;
    let digest: String = Sha256::digest(&weights).iter().map(|b| format!("{b:02x}")).collect();
    if digest != a.weights_sha256 {
        return Err(Fail(
            ErrorKind::Corrupt,
            format!("adapter {}@{}: SHA-256 {digest} does not match the registry's", a.name, a.version),
        ));
    }
    let text = String::from_utf8(cfg).map_err(|_| other("adapter_config.json is not UTF-8"))?;
    LoraAdapter::from_peft(&a.name, &text, "adapter_config.json", Bytes::from_vec(weights), "adapter_model.safetensors")
        .map_err(|e| other(format!("adapter {}@{}: {e}", a.name, a.version)))
}
