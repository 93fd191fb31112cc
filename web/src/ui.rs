//! The page: the chat transcript, composer, settings, model and adapter pickers, wired to the
//! inference worker. All model work happens in the worker; this side only renders and sends
//! requests, so the page never freezes.
//!
//! Accessibility contract (the browser tests use it too): a textbox named "Message", a button
//! named "Send", the transcript in an element with role "log", a status element with role
//! "status", errors in role "alert".

use crate::protocol::{human_bytes, AdapterRef, ErrorKind, Event, Request, Settings};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::rc::Rc;
use vicugna_core::prompt::Turn;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{Document, Element, HtmlElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};

struct UiTurn {
    input: String,
    output: String,
    ids: Vec<u32>,
    tok_per_s: f64,
    els: [Element; 2],
}

struct Pending {
    id: u64,
    input: String,
    text: String,
    els: [Element; 2],
}

/// A model the registry lists, as the page needs it.
#[derive(Clone)]
struct ModelEntry {
    id: String,
    fingerprint: String,
    description: String,
    license: String,
    file_url: String,
    size: u64,
    sha256: String,
    created_at: i64,
}

struct App {
    doc: Document,
    worker: web_sys::Worker,
    models: Vec<ModelEntry>,
    loaded: Option<String>,
    loading: bool,
    pending: Option<Pending>,
    turns: Vec<UiTurn>,
    next_id: u64,
    /// Compatible adapter versions (latest of each name) for the loaded base.
    adapters: Vec<Json>,
    worker_ready: bool,
    queued_load: bool,
}

type Shared = Rc<RefCell<App>>;

fn el(doc: &Document, id: &str) -> Element {
    doc.get_element_by_id(id).unwrap_or_else(|| panic!("index.html lacks #{id}"))
}

fn input_value(doc: &Document, id: &str) -> String {
    let e = el(doc, id);
    if let Some(i) = e.dyn_ref::<HtmlInputElement>() {
        i.value()
    } else if let Some(s) = e.dyn_ref::<HtmlSelectElement>() {
        s.value()
    } else if let Some(t) = e.dyn_ref::<HtmlTextAreaElement>() {
        t.value()
    } else {
        String::new()
    }
}

fn set_disabled(doc: &Document, id: &str, disabled: bool) {
    let _ = if disabled { el(doc, id).set_attribute("disabled", "") } else { el(doc, id).remove_attribute("disabled") };
}

fn set_text(doc: &Document, id: &str, text: &str) {
    el(doc, id).set_text_content(Some(text));
}

fn on(target: &Element, event: &str, f: impl FnMut(web_sys::Event) + 'static) {
    let c = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    let _ = target.add_event_listener_with_callback(event, c.as_ref().unchecked_ref());
    c.forget();
}

/// Entry point of `app.js`.
#[wasm_bindgen]
pub fn start_app() -> Result<(), JsValue> {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!("vicugna page panicked: {info}")));
    }));
    let window = web_sys::window().ok_or("no window")?;
    let doc = window.document().ok_or("no document")?;
    let opts = web_sys::WorkerOptions::new();
    opts.set_type(web_sys::WorkerType::Module);
    let worker = web_sys::Worker::new_with_options("worker.js", &opts)?;
    let app = Rc::new(RefCell::new(App {
        doc: doc.clone(),
        worker: worker.clone(),
        models: Vec::new(),
        loaded: None,
        loading: false,
        pending: None,
        turns: Vec::new(),
        next_id: 1,
        adapters: Vec::new(),
        worker_ready: false,
        queued_load: false,
    }));
    let a = app.clone();
    let onmessage = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
        if let Some(text) = ev.data().as_string() {
            match serde_json::from_str::<Event>(&text) {
                Ok(e) => handle(&a, e),
                Err(e) => web_sys::console::error_1(&format!("bad worker event: {e}").into()),
            }
        }
    });
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    let a = app.clone();
    let onerror = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        alert(&a, ErrorKind::Other, "the inference worker failed to start (see the console)".into(), None);
    });
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
    onerror.forget();
    wire(&app);
    set_state(&app, "starting");
    status(&app, "Starting the WebGPU worker…");
    let a = app.clone();
    spawn_local(async move { fetch_models(&a).await });
    Ok(())
}

fn wire(app: &Shared) {
    let doc = app.borrow().doc.clone();
    let a = app.clone();
    on(&el(&doc, "composer"), "submit", move |e| {
        e.prevent_default();
        send(&a);
    });
    let a = app.clone();
    on(&el(&doc, "message"), "keydown", move |e| {
        let k: web_sys::KeyboardEvent = e.unchecked_into();
        if k.key() == "Enter" && !k.shift_key() && !k.is_composing() {
            k.prevent_default();
            send(&a);
        }
    });
    let a = app.clone();
    on(&el(&doc, "stop"), "click", move |_| post(&a, &Request::Stop));
    let a = app.clone();
    on(&el(&doc, "regenerate"), "click", move |_| regenerate(&a));
    let a = app.clone();
    on(&el(&doc, "undo"), "click", move |_| undo(&a));
    let a = app.clone();
    on(&el(&doc, "clear"), "click", move |_| clear(&a));
    let a = app.clone();
    on(&el(&doc, "save"), "click", move |_| save(&a));
    let a = app.clone();
    on(&el(&doc, "load"), "click", move |_| load_selected(&a));
    let a = app.clone();
    on(&el(&doc, "cancel-load"), "click", move |_| post(&a, &Request::CancelLoad));
    let a = app.clone();
    on(&el(&doc, "alert-dismiss"), "click", move |_| {
        let _ = el(&a.borrow().doc, "alert").set_attribute("hidden", "");
    });
    let a = app.clone();
    on(&el(&doc, "adapter-list"), "change", move |_| apply_adapters(&a));
    let a = app.clone();
    on(&el(&doc, "template"), "change", move |_| warm(&a));
    buttons(app);
}

/// Let the worker prefill the chosen template's preamble while the user types (it stops as soon
/// as the question is sent); only once a model is loaded and nothing is being generated.
fn warm(app: &Shared) {
    let idle = {
        let a = app.borrow();
        a.loaded.is_some() && !a.loading && a.pending.is_none()
    };
    if idle {
        post(app, &Request::Warm { settings: settings(app) });
    }
}

fn post(app: &Shared, r: &Request) {
    let text = serde_json::to_string(r).expect("requests serialise");
    let _ = app.borrow().worker.post_message(&JsValue::from_str(&text));
}

fn status(app: &Shared, text: &str) {
    set_text(&app.borrow().doc, "status", text);
}

/// `data-state` on <body>: starting, loading, ready, generating, error (for people's CSS and tests).
fn set_state(app: &Shared, s: &str) {
    if let Some(b) = app.borrow().doc.body() {
        let _ = b.set_attribute("data-state", s);
    }
}

fn buttons(app: &Shared) {
    let a = app.borrow();
    let d = &a.doc;
    let busy = a.pending.is_some();
    let ready = a.loaded.is_some() && !a.loading;
    set_disabled(d, "send", !ready || busy);
    set_disabled(d, "stop", !busy);
    set_disabled(d, "regenerate", !ready || busy || a.turns.is_empty());
    set_disabled(d, "undo", busy || a.turns.is_empty());
    set_disabled(d, "clear", busy || a.turns.is_empty());
    set_disabled(d, "save", a.turns.is_empty());
    set_disabled(d, "load", a.loading || !a.worker_ready || a.models.is_empty());
    set_disabled(d, "cancel-load", !a.loading);
}

/// Show an error with what to do about it.
fn alert(app: &Shared, kind: ErrorKind, message: String, context: Option<&str>) {
    let advice = match kind {
        ErrorKind::NoWebGpu => {
            "This app runs the model on your GPU through WebGPU. Open it in a browser with WebGPU enabled."
        }
        ErrorKind::DeviceLost => "The GPU reset. Press “Load” to load the model again; the conversation is kept.",
        ErrorKind::OutOfMemory | ErrorKind::TooLarge => {
            "Close other GPU-heavy tabs or pick a smaller model, then press “Load”."
        }
        ErrorKind::Network => "Check that the Vicugna server is running and reachable, then press “Load” again.",
        ErrorKind::Corrupt => "The file did not verify; press “Load” to download it again.",
        ErrorKind::Cancelled | ErrorKind::Other => "",
    };
    {
        let a = app.borrow();
        let d = &a.doc;
        let ctx = context.map(|c| format!("{c}: ")).unwrap_or_default();
        set_text(d, "alert-text", &format!("{ctx}{message}"));
        set_text(d, "alert-advice", advice);
        let _ = el(d, "alert").remove_attribute("hidden");
        let kind = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let _ = el(d, "alert").set_attribute("data-kind", &kind);
    }
    buttons(app);
}

async fn fetch_json(url: &str) -> Result<Json, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot reach the server ({url}): {e:?}"))?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| "not a Response".to_string())?;
    if !resp.ok() {
        return Err(format!("the server answered {} for {url}", resp.status()));
    }
    let text = JsFuture::from(resp.text().map_err(|e| format!("{e:?}"))?).await.map_err(|e| format!("{e:?}"))?;
    serde_json::from_str(&text.as_string().unwrap_or_default()).map_err(|e| format!("{url}: bad JSON: {e}"))
}

async fn fetch_models(app: &Shared) {
    let list = match fetch_json("/api/models").await {
        Ok(j) => j,
        Err(e) => {
            set_state(app, "error");
            alert(app, ErrorKind::Network, e, Some("model list"));
            return;
        }
    };
    let mut models = Vec::new();
    for m in list["models"].as_array().into_iter().flatten() {
        if m["format"] != "gguf" {
            continue; // the browser streams GGUF files only
        }
        let Some(f) = m["files"].as_array().and_then(|f| f.iter().find(|f| f["file"] == "model.gguf")) else {
            continue;
        };
        let id = m["id"].as_str().unwrap_or_default().to_string();
        models.push(ModelEntry {
            file_url: format!("/api/models/{id}/files/model.gguf"),
            id,
            fingerprint: m["fingerprint"].as_str().unwrap_or_default().into(),
            description: m["description"].as_str().unwrap_or_default().into(),
            license: m["license"].as_str().unwrap_or_default().into(),
            size: f["size"].as_u64().unwrap_or(0),
            sha256: f["sha256"].as_str().unwrap_or_default().into(),
            created_at: m["created_at"].as_i64().unwrap_or(0),
        });
    }
    // the most recently registered model first: the demo model (`make demo-model`) over the
    // bundled fixture the server seeds
    models.sort_by_key(|m| std::cmp::Reverse(m.created_at));
    {
        let a = app.borrow();
        let sel = el(&a.doc, "model-select");
        sel.set_inner_html("");
        for m in &models {
            let o = a.doc.create_element("option").expect("option");
            let _ = o.set_attribute("value", &m.id);
            o.set_text_content(Some(&format!("{} ({})", m.id, human_bytes(m.size))));
            let _ = sel.append_child(&o);
        }
    }
    let empty = models.is_empty();
    app.borrow_mut().models = models;
    if empty {
        alert(app, ErrorKind::Other, "the server lists no GGUF model".into(), Some("model list"));
        return;
    }
    describe_selected(app);
    let ready = app.borrow().worker_ready;
    if ready {
        load_selected(app);
    } else {
        app.borrow_mut().queued_load = true;
    }
    buttons(app);
}

fn selected_model(app: &Shared) -> Option<ModelEntry> {
    let a = app.borrow();
    let id = input_value(&a.doc, "model-select");
    a.models.iter().find(|m| m.id == id).or(a.models.first()).cloned()
}

fn describe_selected(app: &Shared) {
    if let Some(m) = selected_model(app) {
        let a = app.borrow();
        set_text(&a.doc, "model-description", &m.description);
        set_text(
            &a.doc,
            "model-license",
            &format!("Licence: {}", if m.license.is_empty() { "not stated" } else { &m.license }),
        );
    }
}

fn load_selected(app: &Shared) {
    let Some(m) = selected_model(app) else { return };
    describe_selected(app);
    let max_context = input_value(&app.borrow().doc, "max-context").parse().unwrap_or(2048);
    {
        let mut a = app.borrow_mut();
        a.loading = true;
        a.loaded = None;
        a.adapters.clear();
        el(&a.doc, "adapter-list").set_inner_html("");
        let _ = el(&a.doc, "alert").set_attribute("hidden", "");
        let _ = el(&a.doc, "progress").set_attribute("value", "0");
    }
    set_state(app, "loading");
    status(app, &format!("Loading {}…", m.id));
    post(app, &Request::Load { model_id: m.id.clone(), url: m.file_url, size: m.size, sha256: m.sha256, max_context });
    buttons(app);
}

fn settings(app: &Shared) -> Settings {
    let d = app.borrow().doc.clone();
    let num = |id: &str, dflt: f64| input_value(&d, id).trim().parse::<f64>().unwrap_or(dflt);
    let dflt = Settings::default();
    Settings {
        template: input_value(&d, "template").parse().unwrap_or(dflt.template),
        temperature: num("temperature", dflt.temperature as f64) as f32,
        top_p: num("top-p", dflt.top_p as f64) as f32,
        top_k: num("top-k", dflt.top_k as f64).max(0.0) as usize,
        repetition_penalty: num("repetition-penalty", dflt.repetition_penalty as f64) as f32,
        max_new_tokens: num("max-new-tokens", dflt.max_new_tokens as f64).max(1.0) as usize,
        num_beams: num("num-beams", 1.0).max(1.0) as usize,
        seed: num("seed", 0.0).max(0.0) as u64,
        min_new_tokens: dflt.min_new_tokens,
        length_penalty: dflt.length_penalty,
        stop: dflt.stop.clone(),
        max_context: num("max-context", dflt.max_context as f64).max(16.0) as usize,
    }
}

fn message_el(app: &Shared, role: &str, text: &str) -> Element {
    let a = app.borrow();
    let e = a.doc.create_element("div").expect("div");
    let _ = e.set_attribute("class", &format!("msg {role}"));
    let _ = e.set_attribute("data-role", role);
    let who = a.doc.create_element("span").expect("span");
    let _ = who.set_attribute("class", "who");
    who.set_text_content(Some(if role == "user" { "User" } else { "Assistant" }));
    let body = a.doc.create_element("div").expect("div");
    let _ = body.set_attribute("class", "text");
    body.set_text_content(Some(text));
    let _ = e.append_child(&who);
    let _ = e.append_child(&body);
    let log = el(&a.doc, "log");
    let _ = log.append_child(&e);
    if let Some(h) = log.dyn_ref::<HtmlElement>() {
        h.set_scroll_top(h.scroll_height());
    }
    e
}

fn text_of(e: &Element) -> Element {
    e.query_selector(".text").ok().flatten().unwrap_or_else(|| e.clone())
}

fn send(app: &Shared) {
    let input = {
        let a = app.borrow();
        if a.pending.is_some() || a.loaded.is_none() || a.loading {
            return;
        }
        input_value(&a.doc, "message").trim().to_string()
    };
    if input.is_empty() {
        return;
    }
    if let Some(t) =
        app.borrow().doc.get_element_by_id("message").and_then(|e| e.dyn_into::<HtmlTextAreaElement>().ok())
    {
        t.set_value("");
    }
    ask(app, input);
}

fn ask(app: &Shared, input: String) {
    let s = settings(app);
    let user = message_el(app, "user", &input);
    let bot = message_el(app, "assistant", "");
    let _ = bot.set_attribute("aria-busy", "true");
    let history: Vec<Turn> = if s.template == vicugna_core::prompt::Template::Chat {
        app.borrow().turns.iter().map(|t| Turn { input: t.input.clone(), output: t.output.clone() }).collect()
    } else {
        Vec::new()
    };
    let id = {
        let mut a = app.borrow_mut();
        let id = a.next_id;
        a.next_id += 1;
        a.pending = Some(Pending { id, input: input.clone(), text: String::new(), els: [user, bot] });
        id
    };
    set_state(app, "generating");
    status(app, "Generating…");
    post(app, &Request::Generate { id, history, input, settings: s });
    buttons(app);
}

fn regenerate(app: &Shared) {
    let last = {
        let mut a = app.borrow_mut();
        if a.pending.is_some() {
            return;
        }
        a.turns.pop()
    };
    if let Some(t) = last {
        t.els.iter().for_each(|e| e.remove());
        ask(app, t.input);
    }
}

fn undo(app: &Shared) {
    let last = app.borrow_mut().turns.pop();
    if let Some(t) = last {
        t.els.iter().for_each(|e| e.remove());
        if let Some(m) =
            app.borrow().doc.get_element_by_id("message").and_then(|e| e.dyn_into::<HtmlTextAreaElement>().ok())
        {
            m.set_value(&t.input);
        }
        status(app, "Removed the last turn.");
    }
    buttons(app);
}

fn clear(app: &Shared) {
    let turns = std::mem::take(&mut app.borrow_mut().turns);
    turns.iter().flat_map(|t| t.els.iter()).for_each(|e| e.remove());
    status(app, "Conversation cleared.");
    buttons(app);
}

/// The conversation as JSONL: a settings line, then one line per message.
fn conversation_jsonl(app: &Shared) -> String {
    let a = app.borrow();
    let s = settings(app);
    let adapters: Vec<Json> =
        selected_adapters(&a).iter().map(|r| serde_json::json!([r.name, r.version, r.weight])).collect();
    let mut out = serde_json::json!({
        "type": "settings",
        "model": a.loaded,
        "adapters": adapters,
        "settings": s,
    })
    .to_string();
    out.push('\n');
    for t in &a.turns {
        out.push_str(&serde_json::json!({"role": "user", "text": t.input}).to_string());
        out.push('\n');
        out.push_str(
            &serde_json::json!({"role": "assistant", "text": t.output, "ids": t.ids, "tok_per_s": t.tok_per_s})
                .to_string(),
        );
        out.push('\n');
    }
    out
}

fn save(app: &Shared) {
    let text = conversation_jsonl(app);
    let parts = js_sys::Array::of1(&JsValue::from_str(&text));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("application/jsonl");
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    let a = app.borrow();
    if let Ok(link) =
        a.doc.create_element("a").and_then(|e| e.dyn_into::<web_sys::HtmlAnchorElement>().map_err(JsValue::from))
    {
        link.set_href(&url);
        link.set_download(&format!("vicugna-chat-{}.jsonl", js_sys::Date::now() as u64));
        link.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

fn selected_adapters(a: &App) -> Vec<AdapterRef> {
    let mut out = Vec::new();
    for v in &a.adapters {
        let name = v["name"].as_str().unwrap_or_default();
        let Some(cb) =
            a.doc.get_element_by_id(&format!("adapter-on-{name}")).and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
        else {
            continue;
        };
        if !cb.checked() {
            continue;
        }
        let weight = input_value(&a.doc, &format!("adapter-weight-{name}")).parse::<f32>().unwrap_or(1.0);
        let file = |f: &str| v["files"].as_array().and_then(|fs| fs.iter().find(|x| x["file"] == f)).cloned();
        let Some(w) = file("adapter_model.safetensors") else { continue };
        out.push(AdapterRef {
            name: name.into(),
            version: v["version"].as_str().unwrap_or_default().into(),
            weight,
            config_url: v["urls"]["adapter_config.json"].as_str().unwrap_or_default().into(),
            weights_url: v["urls"]["adapter_model.safetensors"].as_str().unwrap_or_default().into(),
            weights_sha256: w["sha256"].as_str().unwrap_or_default().into(),
        });
    }
    out
}

fn apply_adapters(app: &Shared) {
    let chosen = selected_adapters(&app.borrow());
    status(app, "Switching adapters…");
    post(app, &Request::SetAdapters { adapters: chosen });
}

async fn fetch_adapters(app: &Shared, fingerprint: String) {
    let list = match fetch_json(&format!("/api/adapters?base={fingerprint}")).await {
        Ok(j) => j,
        Err(e) => {
            alert(app, ErrorKind::Network, e, Some("adapter list"));
            return;
        }
    };
    let mut latest = Vec::new();
    for a in list["adapters"].as_array().into_iter().flatten() {
        let want = a["latest"].clone();
        if let Some(v) = a["versions"].as_array().and_then(|vs| vs.iter().find(|v| v["version"] == want)) {
            latest.push(v.clone());
        }
    }
    let a = app.borrow();
    let list_el = el(&a.doc, "adapter-list");
    list_el.set_inner_html("");
    if latest.is_empty() {
        list_el.set_text_content(Some("No adapters for this base in the registry yet."));
    }
    let text = |v: &Json, k: &str| v[k].as_str().filter(|d| !d.is_empty()).map(html_escape);
    for v in &latest {
        let name = v["name"].as_str().unwrap_or_default();
        let row = a.doc.create_element("div").expect("div");
        let _ = row.set_attribute("class", "adapter");
        let desc = text(v, "description").map(|d| format!(" — {d}")).unwrap_or_default();
        let metrics = v["metrics"]
            .as_object()
            .filter(|m| !m.is_empty())
            .map(|m| {
                let items: Vec<String> = m.iter().map(|(k, x)| format!("{k}: {}", metric_value(x))).collect();
                format!(r#"<span class="metrics">{}</span>"#, html_escape(&items.join(" · ")))
            })
            .unwrap_or_default();
        let license =
            text(v, "license").map(|l| format!(r#"<span class="license">Licence: {l}</span>"#)).unwrap_or_default();
        row.set_inner_html(&format!(
            r#"<label><input type="checkbox" id="adapter-on-{n}"> {n} {ver}</label>
               <label>weight <input type="number" id="adapter-weight-{n}" value="1" step="0.1" min="0" max="2" aria-label="weight of {n}"></label>
               <span class="desc">r={r}{desc}</span>{metrics}{license}"#,
            n = html_escape(name),
            ver = html_escape(v["version"].as_str().unwrap_or_default()),
            r = v["r"],
        ));
        let _ = list_el.append_child(&row);
    }
    // the project's own Chinese chat adapter is what a newcomer meets first: on by default for
    // its base, with the template it was trained with
    let default = latest.iter().find(|v| v["name"] == DEFAULT_ADAPTER).cloned();
    if let Some(v) = &default {
        if let Some(cb) = a
            .doc
            .get_element_by_id(&format!("adapter-on-{DEFAULT_ADAPTER}"))
            .and_then(|e| e.dyn_into::<HtmlInputElement>().ok())
        {
            cb.set_checked(true);
        }
        let t = v["template"].as_str().unwrap_or_default();
        // the templates the page's selector offers: every one but `none`
        if t.parse::<vicugna_core::prompt::Template>().is_ok_and(|t| t != vicugna_core::prompt::Template::None) {
            if let Some(sel) = a.doc.get_element_by_id("template").and_then(|e| e.dyn_into::<HtmlSelectElement>().ok())
            {
                sel.set_value(t);
            }
        }
    }
    drop(a);
    app.borrow_mut().adapters = latest;
    if default.is_some() {
        apply_adapters(app); // the preamble is prefilled once the adapter is on
    } else {
        warm(app);
    }
}

/// The adapter selected by default when the registry has it for the loaded base.
pub const DEFAULT_ADAPTER: &str = "vicugna-zh-chat";

fn metric_value(x: &Json) -> String {
    match x {
        Json::Number(n) => {
            n.as_f64().map(|f| if f.fract() == 0.0 { format!("{f:.0}") } else { format!("{f:.3}") }).unwrap_or_default()
        }
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn handle(app: &Shared, e: Event) {
    match e {
        Event::Ready { adapter, shader_f16, .. } => {
            let f16 = if shader_f16 { "shader-f16 available" } else { "no shader-f16: using the f32 kernels" };
            set_text(&app.borrow().doc, "gpu-info", &format!("GPU: {adapter} ({f16})"));
            let queued = {
                let mut a = app.borrow_mut();
                a.worker_ready = true;
                std::mem::take(&mut a.queued_load)
            };
            status(app, "WebGPU ready.");
            if queued {
                load_selected(app);
            }
            buttons(app);
        }
        Event::Progress { phase, done, total, bytes_per_s, eta_s } => {
            let a = app.borrow();
            let p = el(&a.doc, "progress");
            let _ = p.set_attribute("max", &total.max(1).to_string());
            let _ = p.set_attribute("value", &done.to_string());
            let verb = if phase == "cache" { "from the browser cache" } else { "downloading" };
            set_text(
                &a.doc,
                "progress-text",
                &format!(
                    "{} / {} {verb} · {}/s · {:.0} s left",
                    human_bytes(done),
                    human_bytes(total),
                    human_bytes(bytes_per_s as u64),
                    eta_s
                ),
            );
        }
        Event::Estimate { summary, .. } => set_text(&app.borrow().doc, "estimate", &format!("This model {summary}.")),
        Event::Loaded { model_id, from_cache, seconds, summary, .. } => {
            let fingerprint = {
                let mut a = app.borrow_mut();
                a.loading = false;
                a.loaded = Some(model_id.clone());
                if let Some(b) = a.doc.body() {
                    let _ = b.set_attribute("data-from-cache", if from_cache { "true" } else { "false" });
                    let _ = b.set_attribute("data-load-seconds", &format!("{seconds:.3}"));
                }
                a.models.iter().find(|m| m.id == model_id).map(|m| m.fingerprint.clone()).unwrap_or_default()
            };
            let src = if from_cache { "from the browser cache" } else { "downloaded" };
            set_text(&app.borrow().doc, "model-info", &format!("{model_id}: {summary}"));
            // the download figures have done their job: say what state the model is in
            let ready =
                if from_cache { "Ready: loaded from the browser cache." } else { "Ready: downloaded and verified." };
            set_text(&app.borrow().doc, "progress-text", ready);
            status(app, &format!("Model {model_id} ready ({src} in {seconds:.1} s)."));
            set_state(app, "ready");
            let a = app.clone();
            spawn_local(async move { fetch_adapters(&a, fingerprint).await });
            buttons(app);
        }
        Event::Text { id, text, tokens, tok_per_s } => {
            let mut a = app.borrow_mut();
            if let Some(p) = a.pending.as_mut().filter(|p| p.id == id) {
                p.text.push_str(&text);
                text_of(&p.els[1]).set_text_content(Some(&p.text));
                let log = el(&a.doc, "log");
                if let Some(h) = log.dyn_ref::<HtmlElement>() {
                    h.set_scroll_top(h.scroll_height());
                }
                set_text(&a.doc, "status", &format!("Generating… {tokens} tokens, {tok_per_s:.1} tok/s"));
            }
        }
        Event::Done {
            id,
            ids,
            text,
            stop,
            prompt_tokens,
            prompt_reused,
            new_tokens,
            tok_per_s,
            first_token_ms,
            ..
        } => {
            let p = {
                let mut a = app.borrow_mut();
                match a.pending.take() {
                    Some(p) if p.id == id => Some(p),
                    other => {
                        a.pending = other;
                        None
                    }
                }
            };
            if let Some(p) = p {
                let bot = &p.els[1];
                text_of(bot).set_text_content(Some(&text));
                let _ = bot.remove_attribute("aria-busy");
                let _ = bot.set_attribute("data-ids", &serde_json::to_string(&ids).unwrap_or_default());
                let _ = bot.set_attribute("data-tok-per-s", &format!("{tok_per_s:.2}"));
                let _ = bot.set_attribute("data-stop", &stop);
                let _ = bot.set_attribute("data-first-token-ms", &format!("{first_token_ms:.0}"));
                let _ = bot.set_attribute("data-prompt-tokens", &prompt_tokens.to_string());
                let _ = bot.set_attribute("data-prompt-reused", &prompt_reused.to_string());
                let output = text.trim().to_string();
                app.borrow_mut().turns.push(UiTurn { input: p.input, output, ids, tok_per_s, els: p.els });
                let stopped = if stop == "cancelled" { " (stopped)" } else { "" };
                status(
                    app,
                    &format!(
                        "{new_tokens} tokens at {tok_per_s:.1} tok/s, first token after {first_token_ms:.0} ms \
                         ({prompt_tokens}-token prompt, {prompt_reused} kept from before){stopped}."
                    ),
                );
                set_state(app, "ready");
            }
            buttons(app);
        }
        Event::AdaptersSet { active } => {
            let s = if active.is_empty() {
                "No adapter: the base model alone.".to_string()
            } else {
                format!(
                    "Adapters: {}.",
                    active.iter().map(|(n, w)| format!("{n} × {w}")).collect::<Vec<_>>().join(", ")
                )
            };
            set_text(&app.borrow().doc, "adapter-status", &s);
            status(app, &s);
            warm(app);
        }
        Event::Warmed { ran, held, prefix, seconds } => {
            if let Some(b) = app.borrow().doc.body() {
                let _ = b.set_attribute("data-warm-held", &held.to_string());
                let _ = b.set_attribute("data-warm-prefix", &prefix.to_string());
                let _ = b.set_attribute("data-warm-seconds", &format!("{seconds:.3}"));
            }
            web_sys::console::log_1(
                &format!("preamble prefilled: {held} of {prefix} tokens ({ran} run in {seconds:.1} s)").into(),
            );
        }
        Event::Error { kind, context, message } => {
            let generating = context == "generate" || kind == ErrorKind::DeviceLost;
            {
                let mut a = app.borrow_mut();
                if context == "load" || kind == ErrorKind::DeviceLost {
                    a.loading = false;
                    if kind == ErrorKind::DeviceLost {
                        a.loaded = None;
                    }
                }
                if generating {
                    if let Some(p) = a.pending.take() {
                        p.els.iter().for_each(|e| e.remove());
                    }
                }
            }
            if kind == ErrorKind::Cancelled {
                status(app, "Download cancelled.");
                set_state(app, "idle");
                buttons(app);
                return;
            }
            set_state(app, "error");
            status(app, &format!("Error: {message}"));
            alert(app, kind, message, Some(&context));
        }
    }
}
