// The inference worker: the same wasm module, started on its worker side (web/src/worker.rs).
import init, { start_worker } from './vicugna_web.js';
await init();
start_worker();
