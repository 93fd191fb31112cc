// The page: load the wasm module and hand over to Rust (web/src/ui.rs).
import init, { start_app } from './vicugna_web.js';
await init();
start_app();
