// End to end: the real vicugna-server (fixture model, two published adapters) serving the built
// web app (web/dist) to Debian's Chromium, headless, WebGPU on SwiftShader, driven through the
// page's accessible roles. Greedy replies must carry the same token ids as `vicugna generate
// --json` on the CPU backend for the same conversation, template and adapters.
//
// Needs: web/dist (scripts/build-web.sh), target/debug/{vicugna,vicugna-server} (cargo test builds
// them; VICUGNA_BIN overrides the directory), /usr/bin/chromium. Run by scripts/test-web.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';
import http from 'node:http';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '../..');
const bin = process.env.VICUGNA_BIN || join(root, 'target/debug');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const fixtures = join(root, 'tests/fixtures');
const model = join(fixtures, 'tiny-llama-q4_0.gguf');
// flags that keep Chromium off the network and give it WebGPU on SwiftShader
const chromeArgs = ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

let tmp, server, url, browser, context, page;
const figures = {};

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
    s.on('error', fail);
  });
}

async function startServer(dataDir, port) {
  const proc = spawn(join(bin, 'vicugna-server'),
    ['--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--web-dir', join(root, 'web/dist'),
      '--seed-model', join(root, 'tests/fixtures/tiny-llama-q4_0.gguf')],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', d => { log += d; });
  proc.stderr.on('data', d => { log += d; });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) return { proc, base }; } catch { /* not up yet */ }
    await new Promise(r => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`vicugna-server did not start:\n${log}`);
}

function vicugna(args) {
  return execFileSync(join(bin, 'vicugna'), args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/// CPU reference ids for the same chat turn (greedy; the page's default repetition penalty; the
/// exact kernels, whose f32 arithmetic the WGSL kernels share).
function cpuReply(input, { history = [], loras = [], maxNew }) {
  const args = ['generate', '--exact', '--model', model, '--template', 'chat', '--prompt', input, '--json',
    '--max-new-tokens', String(maxNew), '--repetition-penalty', '1.3'];
  if (history.length) {
    const h = join(tmp, `history-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(h, JSON.stringify(history));
    args.push('--history', h);
  }
  for (const l of loras) args.push('--lora', l);
  return JSON.parse(vicugna(args).trim().split('\n').pop());
}

async function modelDownloads() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find(l => l.startsWith('vicugna_http_requests_total') &&
    l.includes('route="/api/models/{id}/files/{file}"') && /status="20[06]"/.test(l));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function waitState(states, timeout = 120_000) {
  await page.waitForFunction(s => s.includes(document.body.dataset.state), states, { timeout });
  return page.evaluate(() => document.body.dataset.state);
}

async function setSettings({ temperature = '0', maxNew = 24 } = {}) {
  await page.getByLabel('Temperature (0 = greedy)').fill(temperature);
  await page.getByLabel('Max new tokens').fill(String(maxNew));
}

/// Type a message, press Send, and return the finished reply with what streamed before it ended.
async function chat(text, timeout = 300_000) {
  const before = await page.locator('.msg.assistant').count();
  // record the reply's text while it is still being generated
  await page.evaluate(() => {
    window.__streamed = [];
    const log = document.querySelector('[role=log]');
    window.__obs?.disconnect();
    window.__obs = new MutationObserver(() => {
      const busy = log.querySelector('.msg.assistant[aria-busy=true] .text');
      if (busy && busy.textContent.length) window.__streamed.push(busy.textContent.length);
    });
    window.__obs.observe(log, { subtree: true, childList: true, characterData: true });
  });
  await page.getByRole('textbox', { name: 'Message' }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
  const reply = page.locator('.msg.assistant').nth(before);
  await reply.and(page.locator('[data-ids]')).waitFor({ timeout });
  return {
    ids: JSON.parse(await reply.getAttribute('data-ids')),
    text: (await reply.locator('.text').textContent()),
    stop: await reply.getAttribute('data-stop'),
    tokPerS: Number(await reply.getAttribute('data-tok-per-s')),
    firstTokenMs: Number(await reply.getAttribute('data-first-token-ms')),
    streamed: await page.evaluate(() => window.__streamed),
  };
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'vicugna-e2e-'));
  const data = join(tmp, 'data');
  // a publish token before the server starts, then two adapters for the seeded fixture base
  const token = execFileSync(join(bin, 'vicugna-server'), ['--data-dir', data, 'token', 'create', '--name', 'e2e'],
    { encoding: 'utf8' }).trim().split('\n').pop();
  ({ proc: server, base: url } = await startServer(data, await freePort()));
  for (const name of ['lora-a', 'lora-b']) {
    vicugna(['publish', '--server', url, '--token', token, '--base', 'tiny-llama-q4_0', '--description',
      `fixture adapter ${name}`, name, '0.1.0', join(fixtures, name)]);
  }
  browser = await chromium.launch({ executablePath: chromiumPath, args: chromeArgs });
  context = await browser.newContext({ acceptDownloads: true });
  page = await context.newPage();
  page.on('pageerror', e => console.log('page error:', e.message));
  page.on('console', m => { if (m.type() === 'error' && !m.text().includes('favicon')) console.log('console:', m.text()); });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGKILL');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  console.log(`e2e figures: ${JSON.stringify(figures)}`);
});

test('the page loads the model over WebGPU and exposes its accessible controls', async () => {
  const t0 = Date.now();
  await page.goto(url);
  assert.equal(await waitState(['ready', 'error']), 'ready', await page.locator('#status').textContent());
  figures.cold_load_s = (Date.now() - t0) / 1e3;
  figures.cold_load_worker_s = Number(await page.evaluate(() => document.body.dataset.loadSeconds));
  assert.equal(await page.evaluate(() => document.body.dataset.fromCache), 'false');
  assert.equal(await modelDownloads(), 1, 'one download of the model file');
  await page.getByRole('log').waitFor();
  assert.match(await page.getByRole('status').textContent(), /ready/);
  assert.match(await page.locator('#estimate').textContent(), /needs about [\d.]+ MB of GPU memory/);
  assert.equal(await page.locator('#progress-text').textContent(), 'Ready: downloaded and verified.');
  assert.match(await page.locator('#gpu-info').textContent(), /no shader-f16: using the f32 kernels/);
  assert.match(await page.locator('#model-license').textContent(), /Apache-2\.0/);
});

/// A proxy in front of the server that sends model files at `rate` bytes/s (a slow network).
function slowProxy(upstream, rate) {
  const srv = http.createServer((req, res) => {
    const up = http.request(`${upstream}${req.url}`, { method: req.method, headers: req.headers }, r => {
      res.writeHead(r.statusCode, r.headers);
      if (!req.url.includes('/files/model.gguf')) return r.pipe(res);
      r.on('data', chunk => {
        r.pause();
        res.write(chunk, () => setTimeout(() => r.resume(), (chunk.length / rate) * 1000));
      });
      r.on('end', () => res.end());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise(ok => srv.listen(0, '127.0.0.1', () => ok(srv)));
}

test('a slow download shows progress, can be cancelled, and loads after', async () => {
  const proxy = await slowProxy(url, 400_000);
  const ctx = await browser.newContext(); // its own, empty cache
  const p = await ctx.newPage();
  try {
    await p.goto(`http://127.0.0.1:${proxy.address().port}/`);
    await p.waitForFunction(() => /downloading · [\d.]+ (kB|MB)\/s · \d+ s left/.test(
      document.querySelector('#progress-text').textContent), null, { timeout: 60_000 });
    const done = Number(await p.locator('#progress').getAttribute('value'));
    assert.ok(done > 0 && done < 4_110_016, `partial progress ${done}`);
    await p.getByRole('button', { name: 'Cancel download' }).click();
    await p.getByRole('status').filter({ hasText: 'Download cancelled.' }).waitFor();
    assert.equal(await p.evaluate(async () => (await (await caches.open('vicugna-models-v1')).keys()).length), 0,
      'a cancelled download leaves no cache entry');
    await p.getByRole('button', { name: 'Load', exact: true }).click();
    await p.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 120_000 });
    assert.equal(await p.evaluate(() => document.body.dataset.fromCache), 'false');
  } finally {
    await ctx.close();
    proxy.close();
  }
});

test('a model the GPU limits cannot hold is refused as soon as its header arrives', async () => {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  try {
    await p.goto(url);
    await p.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 120_000 });
    // a 50M-token context: its KV cache cannot fit one storage binding
    await p.getByLabel('Context (tokens)').fill('50000000');
    await p.getByRole('button', { name: 'Load', exact: true }).click();
    const alert = p.getByRole('alert');
    await alert.waitFor({ state: 'visible' });
    assert.equal(await alert.getAttribute('data-kind'), 'too_large');
    assert.match(await alert.textContent(), /cannot hold the model: a 50000000-token KV cache layer/);
    assert.match(await alert.textContent(), /pick a smaller model/);
  } finally {
    await ctx.close();
  }
});

test('a streamed greedy reply has the CPU reference token ids, over two turns', async () => {
  await setSettings({ maxNew: 24 });
  const r1 = await chat('你好');
  assert.ok(r1.streamed.length > 0, 'text appeared before the reply finished');
  const want1 = cpuReply('你好', { maxNew: 24 });
  assert.deepEqual(r1.ids, want1.ids);
  assert.equal(r1.text, want1.text);
  figures.first_token_ms = r1.firstTokenMs;
  figures.tok_per_s = r1.tokPerS;
  // the second turn carries the first as history (Chinese-Vicuna's chat template)
  const r2 = await chat('北京在哪里？');
  const want2 = cpuReply('北京在哪里？', { history: [{ input: '你好', output: want1.text.trim() }], maxNew: 24 });
  assert.deepEqual(r2.ids, want2.ids);
  assert.ok(r2.streamed.length > 0);
});

test('regenerate repeats a greedy reply; undo removes the last turn; save writes JSONL', async () => {
  const turns = await page.locator('.msg').count();
  const last = JSON.parse(await page.locator('.msg.assistant').last().getAttribute('data-ids'));
  await page.getByRole('button', { name: 'Regenerate' }).click();
  await waitState(['ready']);
  await page.locator('.msg.assistant').last().and(page.locator('[data-ids]')).waitFor();
  assert.equal(await page.locator('.msg').count(), turns, 'the regenerated reply replaces the last one');
  assert.deepEqual(JSON.parse(await page.locator('.msg.assistant').last().getAttribute('data-ids')), last);
  const download = page.waitForEvent('download');
  await page.getByRole('button', { name: 'Save conversation' }).click();
  const lines = readFileSync(await (await download).path(), 'utf8').trim().split('\n').map(l => JSON.parse(l));
  assert.equal(lines[0].type, 'settings');
  assert.equal(lines[0].settings.temperature, 0);
  assert.equal(lines[0].model, 'tiny-llama-q4_0');
  assert.deepEqual(lines.slice(1).map(l => l.role), ['user', 'assistant', 'user', 'assistant']);
  assert.deepEqual(lines[4].ids, last);
  await page.getByRole('button', { name: 'Undo last turn' }).click();
  assert.equal(await page.locator('.msg').count(), turns - 2);
  assert.equal(await page.getByRole('textbox', { name: 'Message' }).inputValue(), '北京在哪里？');
  await page.getByRole('button', { name: 'Clear' }).click();
  assert.equal(await page.locator('.msg').count(), 0);
});

test('switching adapters changes the reply to the CPU reference with that adapter', async () => {
  const downloads = await modelDownloads();
  const base = cpuReply('你好', { maxNew: 24 });
  await page.getByLabel('lora-a 0.1.0').check();
  await page.getByText('Adapters: lora-a × 1.').first().waitFor();
  const a = await chat('你好');
  const wantA = cpuReply('你好', { loras: [join(fixtures, 'lora-a')], maxNew: 24 });
  assert.deepEqual(a.ids, wantA.ids);
  assert.notDeepEqual(a.ids, base.ids, 'the adapter changes the reply');
  // mix two adapters with weights, on the same resident base
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.getByLabel('weight of lora-a').fill('0.7');
  await page.getByLabel('lora-b 0.1.0').check();
  await page.getByLabel('weight of lora-b').fill('0.5');
  await page.getByLabel('weight of lora-b').dispatchEvent('change');
  await page.getByText('Adapters: lora-a × 0.7, lora-b × 0.5.').first().waitFor();
  const ab = await chat('你好');
  const wantAB = cpuReply('你好', { loras: [join(fixtures, 'lora-a') + ':0.7', join(fixtures, 'lora-b') + ':0.5'], maxNew: 24 });
  assert.deepEqual(ab.ids, wantAB.ids);
  assert.equal(await modelDownloads(), downloads, 'switching adapters never reloads the base');
  // back to the base model alone
  await page.getByLabel('lora-a 0.1.0').uncheck();
  await page.getByLabel('lora-b 0.1.0').uncheck();
  await page.getByText('No adapter: the base model alone.').first().waitFor();
  await page.getByRole('button', { name: 'Clear' }).click();
  assert.deepEqual((await chat('你好')).ids, base.ids);
});

test('stop ends a long reply early and keeps what was generated', async () => {
  await setSettings({ temperature: '0.8', maxNew: 1500 });
  await page.getByRole('textbox', { name: 'Message' }).fill('写一首诗');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.locator('.msg.assistant[aria-busy=true] .text').filter({ hasText: /./ }).waitFor();
  await page.getByRole('button', { name: 'Stop' }).click();
  const reply = page.locator('.msg.assistant').last();
  await reply.and(page.locator('[data-ids]')).waitFor({ timeout: 60_000 });
  assert.equal(await reply.getAttribute('data-stop'), 'cancelled');
  const n = JSON.parse(await reply.getAttribute('data-ids')).length;
  assert.ok(n > 0 && n < 1500, `stopped after ${n} tokens`);
  assert.match(await page.getByRole('status').textContent(), /stopped/);
  await page.getByRole('button', { name: 'Clear' }).click();
});

test('a reload takes the model from the browser cache without a second download', async () => {
  const downloads = await modelDownloads();
  const t0 = Date.now();
  await page.reload();
  assert.equal(await waitState(['ready', 'error']), 'ready');
  figures.cached_load_s = (Date.now() - t0) / 1e3;
  figures.cached_load_worker_s = Number(await page.evaluate(() => document.body.dataset.loadSeconds));
  assert.equal(await page.evaluate(() => document.body.dataset.fromCache), 'true');
  assert.equal(await modelDownloads(), downloads, 'no second download');
  await setSettings({ maxNew: 24 });
  assert.deepEqual((await chat('你好')).ids, cpuReply('你好', { maxNew: 24 }).ids);
});

test('a corrupted cache entry is detected and the model downloaded again', async () => {
  const downloads = await modelDownloads();
  // flip one byte in the middle of the cached GGUF (same key, same length)
  await page.evaluate(async () => {
    const cache = await caches.open('vicugna-models-v1');
    const [req] = await cache.keys();
    const bytes = new Uint8Array(await (await cache.match(req)).arrayBuffer());
    bytes[bytes.length >> 1] ^= 0xff;
    await cache.put(req, new Response(bytes));
  });
  await page.reload();
  assert.equal(await waitState(['ready', 'error']), 'ready', await page.locator('#status').textContent());
  assert.equal(await page.evaluate(() => document.body.dataset.fromCache), 'false');
  assert.equal(await modelDownloads(), downloads + 1, 'downloaded again');
  // and the cache holds a good copy again
  await page.reload();
  assert.equal(await waitState(['ready', 'error']), 'ready');
  assert.equal(await page.evaluate(() => document.body.dataset.fromCache), 'true');
  assert.equal(await modelDownloads(), downloads + 1);
});

test('an unreachable server and a missing WebGPU are explained, not garbled', async () => {
  // no cached copy and no server: the load fails with a network explanation
  await page.evaluate(() => caches.delete('vicugna-models-v1'));
  server.kill('SIGKILL');
  await new Promise(r => server.once('exit', r));
  await page.getByRole('button', { name: 'Load', exact: true }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor({ state: 'visible' });
  assert.equal(await alert.getAttribute('data-kind'), 'network');
  assert.match(await alert.textContent(), /cannot reach the server/);
  assert.match(await alert.textContent(), /Check that the Vicugna server is running/);
  // a browser without WebGPU (Chromium on Linux without --enable-unsafe-webgpu)
  const plain = await chromium.launch({ executablePath: chromiumPath,
    args: chromeArgs.filter(a => a !== '--enable-unsafe-webgpu').concat(['--disable-features=WebGPU']) });
  const data = join(tmp, 'data');
  const port = await freePort();
  const s2 = await startServer(data, port);
  try {
    const p2 = await plain.newPage();
    await p2.goto(s2.base);
    const a2 = p2.getByRole('alert');
    await a2.waitFor({ state: 'visible', timeout: 60_000 });
    assert.equal(await a2.getAttribute('data-kind'), 'no_web_gpu');
    assert.match(await a2.textContent(), /WebGPU/);
  } finally {
    await plain.close();
    s2.proc.kill('SIGKILL');
  }
});

// The real demo model (scripts/fetch-gemma.sh; VICUGNA_GEMMA names the file) with the project's
// Chinese chat adapter seeded as `make run` seeds it: Gemma-3 270M loads from the server with
// progress, vicugna-zh-chat is on by default with the chat template, three prompts of the eval
// suite get the same greedy replies as `vicugna generate --lora eval/vicugna-zh-chat` on the CPU,
// token for token, and a reload comes from the browser cache. Slow on SwiftShader: the figures
// are printed.
const zhAdapter = join(root, 'eval/vicugna-zh-chat');
const zhPrompts = ['1000 + 20 + 4 = ?', '面朝北方，左转90度是什么方位？', '一公斤的棉花和一公斤的铁，哪一个更重？'];
const zhMaxNew = 32;
test('Gemma-3 270M + vicugna-zh-chat by default: streamed into WebGPU, same greedy replies as the CPU, cached', {
  skip: process.env.VICUGNA_GEMMA ? false : 'skipped: VICUGNA_GEMMA is not set (scripts/fetch-gemma.sh)',
}, async () => {
  const gemma = process.env.VICUGNA_GEMMA;
  const data = join(tmp, 'data-gemma');
  execFileSync(join(bin, 'vicugna-server'), ['--data-dir', data, 'model', 'add', '--id', 'gemma-3-270m-q4_k_m',
    '--license', 'Gemma Terms of Use (https://ai.google.dev/gemma/terms)', '--description', 'Gemma-3 270M', gemma],
  { encoding: 'utf8' });
  const add = ['--data-dir', data, 'adapter', 'add', '--name', 'vicugna-zh-chat', '--version', '0.1.0',
    '--template', 'chat', '--description', 'Chinese chat', '--license', 'Gemma Terms of Use; data CC BY-NC 4.0',
    '--metrics', join(zhAdapter, 'metrics.json'), zhAdapter];
  execFileSync(join(bin, 'vicugna-server'), add, { encoding: 'utf8' });
  // seeding again is a no-op (make run does it on every start)
  assert.match(execFileSync(join(bin, 'vicugna-server'), add, { encoding: 'utf8' }), /registered already/);
  const s = await startServer(data, await freePort());
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  try {
    const t0 = Date.now();
    await p.goto(s.base);
    await p.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: 600_000 });
    assert.equal(await p.evaluate(() => document.body.dataset.state), 'ready', await p.locator('#status').textContent());
    figures.gemma_cold_load_s = (Date.now() - t0) / 1e3;
    // the newest model is the default; its licence is shown; the status says what state it is in
    assert.match(await p.locator('#model-select').inputValue(), /^gemma-3-270m/);
    assert.match(await p.locator('#model-license').textContent(), /Gemma Terms of Use/);
    assert.equal(await p.locator('#progress-text').textContent(), 'Ready: downloaded and verified.');
    assert.match(await p.locator('#model-info').textContent(), /18 layers, hidden 640, vocab 262144/);
    // the Chinese chat adapter is on by default, with its template, description, metrics and licence
    await p.locator('#adapter-status').filter({ hasText: 'vicugna-zh-chat × 1' }).waitFor({ timeout: 120_000 });
    assert.equal(await p.locator('#adapter-on-vicugna-zh-chat').isChecked(), true);
    assert.equal(await p.locator('#template').inputValue(), 'chat');
    const row = await p.locator('.adapter').first().textContent();
    assert.match(row, /Chinese chat/);
    assert.match(row, /heldout_loss/);
    assert.match(row, /Licence: Gemma Terms of Use; data CC BY-NC 4\.0/);
    await p.getByLabel('Temperature (0 = greedy)').fill('0');
    await p.getByLabel('Max new tokens').fill(String(zhMaxNew));
    // with the adapter on, the worker prefills the chat template's preamble while nothing is
    // asked (a user reading the page and typing): the first question then prefills only itself
    await p.waitForFunction(() => document.body.dataset.warmHeld !== undefined
      && document.body.dataset.warmHeld === document.body.dataset.warmPrefix, null, { timeout: 120_000 });
    const warm = await p.evaluate(() => ({ ...document.body.dataset }));
    const preamble = Number(warm.warmPrefix);
    assert.ok(preamble > 10, `the chat preamble is ${preamble} tokens`);
    figures.gemma_preamble_tokens = preamble;
    figures.gemma_preamble_prefill_s = Number(warm.warmSeconds);
    figures.zh_replies = [];
    for (const q of zhPrompts) {
      const clear = p.getByRole('button', { name: 'Clear' });
      if (await clear.isEnabled()) await clear.click(); // each prompt on its own, as the suite asks it
      const before = Date.now();
      await p.getByRole('textbox', { name: 'Message' }).fill(q);
      await p.getByRole('button', { name: 'Send' }).click();
      const reply = p.locator('.msg.assistant').last();
      await reply.and(p.locator('[data-ids]')).waitFor({ timeout: 600_000 });
      const ids = JSON.parse(await reply.getAttribute('data-ids'));
      const want = JSON.parse(vicugna(['generate', '--exact', '--model', gemma, '--lora', zhAdapter, '--template', 'chat',
        '--prompt', q, '--json', '--max-new-tokens', String(zhMaxNew), '--repetition-penalty', '1.3'])
        .trim().split('\n').pop());
      assert.deepEqual(ids, want.ids, q);
      assert.equal(await reply.locator('.text').textContent(), want.text);
      // the preamble's keys and values are reused (warmed before the first question, kept from
      // the previous request after it) and the replies above are still the CPU's, token for token
      const promptTokens = Number(await reply.getAttribute('data-prompt-tokens'));
      const reused = Number(await reply.getAttribute('data-prompt-reused'));
      assert.ok(reused >= preamble && reused < promptTokens, `${q}: ${reused} of ${promptTokens} prompt tokens reused`);
      figures.zh_replies.push({ prompt: q, reply: want.text, tokens: ids.length, prompt_tokens: promptTokens,
        prompt_reused: reused, seconds: (Date.now() - before) / 1e3,
        first_token_ms: Number(await reply.getAttribute('data-first-token-ms')) });
    }
    assert.match(await p.locator('#status').textContent(), /-token prompt, \d+ kept from before/);
    figures.gemma_first_token_ms = figures.zh_replies[0].first_token_ms;
    const t1 = Date.now();
    await p.reload();
    await p.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 600_000 });
    assert.equal(await p.evaluate(() => document.body.dataset.fromCache), 'true');
    assert.equal(await p.locator('#progress-text').textContent(), 'Ready: loaded from the browser cache.');
    figures.gemma_cached_load_s = (Date.now() - t1) / 1e3;
  } finally {
    await ctx.close();
    s.proc.kill('SIGKILL');
  }
});
