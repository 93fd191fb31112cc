//! The wgpu backend: `vicugna_core::backend::Backend` on any WebGPU-capable device.
//!
//! Every operation records a compute pass into one command encoder; nothing reaches the GPU
//! until `to_host` submits that encoder and reads the result back, so a decode step is a single
//! submission. Device acquisition is separate (`Wgpu::new(device, queue)`) so tests and the
//! browser inject their own.

use crate::kernels::{
    compile_source, ArgmaxParams, AttentionParams, CopyParams, ElementwiseParams, EmbedParams, Entry, KernelParams,
    LoraParams, MatmulParams, NormParams, RopeParams, SampleParams, Variant, MATMUL_ROWS, MATMUL_TILE, UNIFORM_BYTES,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use vicugna_core::backend::{Backend, Heads, LoraPair, Rope};
use vicugna_core::config::Config;
use vicugna_core::quant::{unpack_row, GgmlType};
use vicugna_core::weights::Matrix;
use vicugna_core::{Error, Result};
use wgpu::util::DeviceExt;

const WG: u32 = 64;
const MAX_GRID: u32 = 65535;

pub use crate::kernels::Format;

impl GpuWeight {
    /// How many row ranges the matrix was split into to fit the device's storage bindings.
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }
}

pub struct GpuWeight {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    /// Row ranges, each small enough for one storage binding.
    parts: Vec<Part>,
}

struct Part {
    row0: usize,
    rows: usize,
    w: wgpu::Buffer,
    sc: Option<wgpu::Buffer>,
}

pub struct GpuVector {
    buf: wgpu::Buffer,
}

pub struct GpuLora {
    r: usize,
    a: wgpu::Buffer, // (r, in)
    b: wgpu::Buffer, // (out, r)
}

pub struct GpuAct {
    pub rows: usize,
    pub cols: usize,
    buf: wgpu::Buffer,
    pool: Pool,
}

impl Drop for GpuAct {
    fn drop(&mut self) {
        // commands already recorded still see this buffer; later ones reuse it (queue order)
        if self.buf.size().is_power_of_two() {
            self.pool.borrow_mut().entry(self.buf.size()).or_default().push(self.buf.clone());
        }
    }
}

/// Free storage buffers by size, reused across decode steps instead of reallocated.
type Pool = Rc<RefCell<HashMap<u64, Vec<wgpu::Buffer>>>>;

pub struct GpuCache {
    max_seq: usize,
    k: Vec<wgpu::Buffer>, // per layer (max_seq, kv_dim)
    v: Vec<wgpu::Buffer>,
}

pub struct Wgpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pipelines: RefCell<HashMap<(Entry, Variant), Rc<wgpu::ComputePipeline>>>,
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    dispatches: std::cell::Cell<u64>,
    pool: Pool,
    /// One uniform buffer per dispatch of the submission being recorded; reused once it is done.
    uniforms: RefCell<(Vec<wgpu::Buffer>, usize)>,
    /// Use the one-row-per-invocation matmul (CPU adapters); see `matmul.wgsl`.
    pub rowwise: bool,
    /// Contexts longer than this many positions are attended in parallel chunks of this size.
    pub attn_chunk: usize,
    /// cos/sin tables for RoPE, one per frequency set (Gemma-3 alternates two):
    /// (inv_freq, positions, (positions, head_dim/2, 2) buffer), grown on demand
    rope_tables: RefCell<Vec<(Vec<f32>, usize, wgpu::Buffer)>>,
    /// With `profile()`: per (entry, variant), launches and seconds, each launch submitted and
    /// waited for alone (so the sum is slower than a normal run; the shares are what it is for).
    profile: RefCell<Option<LaunchTimes>>,
}

/// Per (entry, variant): launches and seconds.
type LaunchTimes = HashMap<(Entry, Variant), (u64, f64)>;

impl Wgpu {
    pub fn new(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Wgpu {
            device,
            queue,
            pipelines: Default::default(),
            encoder: RefCell::new(None),
            dispatches: Default::default(),
            pool: Default::default(),
            uniforms: Default::default(),
            rowwise: false,
            attn_chunk: 256,
            rope_tables: RefCell::new(Vec::new()),
            profile: RefCell::new(None),
        }
    }

    /// A backend tuned for the adapter: CPU adapters (lavapipe, SwiftShader) get the
    /// row-per-invocation matmul. `VICUGNA_MATMUL=rowwise|split` overrides the choice.
    pub fn for_adapter(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Self {
        let mut w = Self::new(device, queue);
        w.rowwise = match std::env::var("VICUGNA_MATMUL").as_deref() {
            Ok("rowwise") => true,
            Ok("split") => false,
            _ => info.device_type == wgpu::DeviceType::Cpu,
        };
        w
    }

    /// The first adapter wgpu finds (Vulkan, Metal, DX12; lavapipe counts), with its own limits.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn default_device() -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
        Self::device_with_limits(|_| {})
    }

    /// Like `default_device`, with the adapter's limits adjusted first (tests use this to force
    /// small storage bindings).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn device_with_limits(
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        pollster::block_on(Self::request_device(&instance, adjust))
    }

    /// The one way a device is acquired, natively and in the browser (which awaits it): the
    /// instance's first high-performance adapter with its own limits (larger storage bindings than
    /// WebGPU's defaults), adjusted by `adjust`. The kernels are f32 only, so no optional feature
    /// is needed; shader-f16 is taken where offered only so the adapter report can show it.
    pub async fn request_device(
        instance: &wgpu::Instance,
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(format!("no GPU adapter: {e}")))?;
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        adjust(&mut limits);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("vicugna"),
                required_features: adapter.features() & wgpu::Features::SHADER_F16,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(format!("requesting a device from {}: {e}", info.name)))?;
        Ok((device, queue, info))
    }

    fn pipeline(&self, entry: Entry, variant: Variant) -> Rc<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.borrow().get(&(entry, variant)) {
            return p.clone();
        }
        // first use: compile (the label is built once per pipeline, not per dispatch)
        let defines = variant.defines();
        let label = format!("{}::{} {defines:?}", entry.family().name(), entry.name());
        let src = compile_source(entry.family(), &defines);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let p = Rc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry.name()),
            compilation_options: Default::default(),
            cache: None,
        }));
        self.pipelines.borrow_mut().insert((entry, variant), p.clone());
        p
    }

    fn storage(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        // zero-length bindings are invalid; pad tiny buffers to 16 bytes
        let mut v;
        let data = if bytes.len() < 16 {
            v = bytes.to_vec();
            v.resize(16, 0);
            &v[..]
        } else {
            bytes
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    fn zeroed(&self, label: &str, bytes: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of at least `bytes` (power-of-two size class) from the pool. Contents are
    /// unspecified: every kernel writes its whole output.
    fn take(&self, bytes: usize) -> wgpu::Buffer {
        let size = (bytes.max(16) as u64).next_power_of_two();
        if let Some(b) = self.pool.borrow_mut().get_mut(&size).and_then(|v| v.pop()) {
            return b;
        }
        self.zeroed("pooled", size as usize)
    }

    fn give(&self, b: wgpu::Buffer) {
        self.pool.borrow_mut().entry(b.size()).or_default().push(b);
    }

    fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut e = self.encoder.borrow_mut();
        let enc = e.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })
        });
        f(enc)
    }

    /// Record one dispatch: `params` at binding 0, then each (binding, buffer) the entry point uses.
    fn dispatch<P: KernelParams>(
        &self,
        entry: Entry,
        variant: Variant,
        mut params: P,
        bufs: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        let (gx, gz) = groups;
        // fold a long x dimension into (x, y) so no dimension exceeds the WebGPU limit
        let (x, y) = if gx > MAX_GRID { (32768, gx.div_ceil(32768)) } else { (gx.max(1), 1) };
        params.set_grid_x(x);
        self.dispatch3(entry, variant, params, bufs, (x, y, gz.max(1)));
    }

    /// A launch whose three grid dimensions are used as given (each within the WebGPU limit).
    fn dispatch3<P: KernelParams>(
        &self,
        entry: Entry,
        variant: Variant,
        params: P,
        bufs: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) {
        debug_assert_eq!(entry.family(), P::FAMILY, "{entry:?} given {}", P::NAME);
        let pipe = self.pipeline(entry, variant);
        self.dispatches.set(self.dispatches.get() + 1);
        let ub = {
            let mut u = self.uniforms.borrow_mut();
            let i = u.1;
            u.1 += 1;
            if i == u.0.len() {
                u.0.push(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: UNIFORM_BYTES as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            u.0[i].clone()
        };
        // queued writes land before the submission that carries this dispatch
        self.queue.write_buffer(&ub, 0, bytemuck::bytes_of(&params));
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ub.as_entire_binding() }];
        for (i, b) in bufs {
            entries.push(wgpu::BindGroupEntry { binding: *i, resource: b.as_entire_binding() });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry.name()),
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        self.with_encoder(|enc| {
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry.name()), timestamp_writes: None });
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        });
        #[cfg(not(target_arch = "wasm32"))]
        if self.profile.borrow().is_some() {
            self.profile_launch(entry, variant);
        }
    }

    /// Time every launch from now on (see `profile`); `take_profile` returns and clears the figures.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(&self) {
        self.finish().ok();
        *self.profile.borrow_mut() = Some(HashMap::new());
    }

    /// Per (kernel, variant): launches and seconds since `profile()`, slowest first.
    pub fn take_profile(&self) -> Vec<(String, u64, f64)> {
        let mut v: Vec<_> = self
            .profile
            .borrow_mut()
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|((e, var), (n, s))| (format!("{}.{} {var:?}", e.family().name(), e.name()), n, s))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn profile_launch(&self, entry: Entry, variant: Variant) {
        // everything recorded before this launch has finished: submit the launch alone and wait
        let t = std::time::Instant::now();
        self.flush();
        self.device.poll(wgpu::PollType::wait_indefinitely()).ok();
        let dt = t.elapsed().as_secs_f64();
        if let Some(m) = self.profile.borrow_mut().as_mut() {
            let e = m.entry((entry, variant)).or_default();
            e.0 += 1;
            e.1 += dt;
        }
    }

    /// `a = entry(a, b)` over every element (elementwise.wgsl).
    fn elementwise(&self, entry: Entry, a: &mut GpuAct, b: &GpuAct) {
        let n = a.rows * a.cols;
        let p = ElementwiseParams { n: n as u32, ..Default::default() };
        self.dispatch(entry, Variant::Plain, p, &[(1, &a.buf), (2, &b.buf)], Self::elems(n));
    }

    /// Elementwise launches: one invocation per element.
    fn elems(n: usize) -> (u32, u32) {
        ((n as u32).div_ceil(WG), 1)
    }

    fn rope_table(&self, rope: &Rope, positions: usize) -> wgpu::Buffer {
        let mut t = self.rope_tables.borrow_mut();
        let slot = t.iter().position(|(inv, _, _)| *inv == rope.inv_freq);
        if let Some((_, cap, buf)) = slot.map(|i| &t[i]) {
            if *cap >= positions {
                return buf.clone();
            }
        }
        let cap = positions.next_power_of_two().max(256);
        let mut v = Vec::with_capacity(cap * rope.inv_freq.len() * 2);
        for pos in 0..cap {
            for &f in &rope.inv_freq {
                // the same f32 arithmetic as the CPU reference
                let (s, c) = (pos as f32 * f).sin_cos();
                v.push(c);
                v.push(s);
            }
        }
        let buf = self.storage("rope", bytemuck::cast_slice(&v));
        match slot {
            Some(i) => t[i] = (rope.inv_freq.clone(), cap, buf.clone()),
            None => t.push((rope.inv_freq.clone(), cap, buf.clone())),
        }
        buf
    }

    /// Record a copy of `bytes` of `buf` into a fresh mappable buffer and submit everything
    /// recorded so far.
    fn stage(&self, buf: &wgpu::Buffer, bytes: u64) -> wgpu::Buffer {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes));
        self.flush();
        staging
    }

    /// The mapped staging buffer's first `bytes`; the submission that filled it is complete, so
    /// the uniform ring can be reused from the start.
    fn take_mapped(&self, staging: wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.uniforms.borrow_mut().1 = 0;
        let slice = staging.slice(..);
        let view = slice.get_mapped_range().map_err(|e| Error::Device(format!("reading the mapped buffer: {e}")))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Submit everything recorded so far plus a copy of `bytes` of `buf`, wait, and return them.
    /// Natively only: a browser cannot block on the GPU (see `read_back_async`).
    fn read_back(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if cfg!(target_arch = "wasm32") {
            return Err(Error::Device(
                "wgpu: a blocking read-back is impossible in the browser; use the async generation API".into(),
            ));
        }
        let staging = self.stage(buf, bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("device poll failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Device("the read-back callback never ran".into()))?
            .map_err(|e| Error::Device(format!("mapping the read-back buffer failed: {e}")))?;
        self.take_mapped(staging, bytes)
    }

    /// `read_back` that awaits the mapping instead of blocking: the browser resolves it from its
    /// event loop. Natively the same as `read_back`.
    async fn read_back_async(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if !cfg!(target_arch = "wasm32") {
            return self.read_back(buf, bytes);
        }
        let staging = self.stage(buf, bytes);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| Error::DeviceLost("before the read-back finished".into()))?
            .map_err(|e| Error::Device(format!("mapping the read-back buffer failed: {e}")))?;
        self.take_mapped(staging, bytes)
    }

    /// Record the GPU argmax of a logits row; the 4-byte result buffer goes back to the pool
    /// after reading.
    fn record_argmax(&self, x: &GpuAct) -> wgpu::Buffer {
        let out = self.take(4);
        let p = ArgmaxParams { n: (x.rows * x.cols) as u32, ..Default::default() };
        self.dispatch(Entry::Argmax, Variant::Plain, p, &[(1, &x.buf), (2, &out)], (1, 1));
        out
    }

    /// Record a GPU top-k/top-p draw, or `None` when `top_k` is outside what the kernel keeps
    /// (then the host samples the read-back logits).
    fn record_sample(&self, x: &GpuAct, temperature: f32, top_k: usize, top_p: f32, u: f32) -> Option<wgpu::Buffer> {
        let n = x.rows * x.cols;
        if top_k == 0 || top_k > 64 || top_k > n {
            return None;
        }
        let (work, out) = (self.take(n * 4), self.take(4));
        let p = SampleParams { n: n as u32, top_k: top_k as u32, temperature, top_p, u, ..Default::default() };
        self.dispatch(Entry::Sample, Variant::Plain, p, &[(1, &x.buf), (2, &work), (3, &out)], (1, 1));
        self.give(work);
        Some(out)
    }

    fn token(&self, out: wgpu::Buffer, b: Vec<u8>) -> u32 {
        self.give(out);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Compute dispatches recorded since this backend was created.
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches.get()
    }

    /// Submit everything recorded so far and wait for the device to finish it.
    pub fn finish(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("device poll failed: {e}")))?;
        self.uniforms.borrow_mut().1 = 0;
        Ok(())
    }

    /// Seconds per copy of `bytes` (a multiple of 16) by the WGSL copy kernel, averaged over `iters`
    /// copies in one submission.
    pub fn bench_copy(&self, bytes: usize, iters: usize) -> Result<f64> {
        let (src, dst) = (self.zeroed("copy-src", bytes), self.zeroed("copy-dst", bytes));
        let n = bytes / 16;
        let p = CopyParams { n: n as u32, ..Default::default() };
        self.dispatch(Entry::Copy, Variant::Plain, p, &[(1, &src), (2, &dst)], Self::elems(n));
        self.finish()?;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            self.dispatch(Entry::Copy, Variant::Plain, p, &[(1, &src), (2, &dst)], Self::elems(n));
        }
        self.finish()?;
        Ok(t.elapsed().as_secs_f64() / iters as f64)
    }

    /// Submit everything recorded so far.
    pub fn flush(&self) {
        if let Some(enc) = self.encoder.borrow_mut().take() {
            self.queue.submit([enc.finish()]);
        }
    }
}

/// Bytes `n` elements of a stored type take on the GPU after `repack` (quants plus f32 scales and
/// mins); memory estimates use it before any weight has arrived.
pub fn gpu_bytes(ty: GgmlType, n: u64) -> u64 {
    match ty {
        GgmlType::F32 => n * 4,
        GgmlType::F16 => n * 2,
        GgmlType::Q8_0 | GgmlType::Q5_0 => n + n / 32 * 4,
        GgmlType::Q4_0 => n / 2 + n / 32 * 4,
        GgmlType::Q4_1 | GgmlType::Q4_K => n / 2 + n / 32 * 8,
        GgmlType::Q6_K => n + n / 16 * 4,
        _ => n * 4,
    }
}

/// Repack a stored matrix into the GPU layout: (format, quants/values, per-block f32 parameters:
/// scales, or interleaved (scale, min) pairs for Q4M, or two scales per 32 for Q8S16). Every
/// quantised type the file can hold keeps its integer form (`quant::unpack_row`), so the GPU
/// computes with exactly the CPU's weights; only types without one go to F32.
fn repack(m: &Matrix) -> (Format, Vec<u8>, Option<Vec<f32>>) {
    let rb = m.row_bytes();
    match m.ty {
        GgmlType::F32 => (Format::F32, m.data.to_vec(), None),
        GgmlType::F16 if m.cols.is_multiple_of(2) => (Format::F16, m.data.to_vec(), None),
        GgmlType::Q8_0 | GgmlType::Q4_0 => {
            let (bb, qb, fmt) = if m.ty == GgmlType::Q8_0 { (34, 32, Format::Q8_0) } else { (18, 16, Format::Q4_0) };
            let nb = m.rows * m.cols / 32;
            let mut qs = Vec::with_capacity(nb * qb);
            let mut sc = Vec::with_capacity(nb);
            for r in 0..m.rows {
                for blk in m.data[r * rb..(r + 1) * rb].chunks_exact(bb) {
                    sc.push(half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32());
                    qs.extend_from_slice(&blk[2..]);
                }
            }
            (fmt, qs, Some(sc))
        }
        GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q6_K => {
            let fmt = match m.ty {
                GgmlType::Q5_0 => Format::Q8_0,
                GgmlType::Q6_K => Format::Q8S16,
                _ => Format::Q4M,
            };
            let n = m.rows * m.cols;
            let mut qs = Vec::with_capacity(if fmt == Format::Q4M { n / 2 } else { n });
            let mut sc = Vec::with_capacity(n / 16);
            for r in 0..m.rows {
                let u = unpack_row(m.ty, &m.data[r * rb..(r + 1) * rb]).expect("integer form");
                match fmt {
                    Format::Q4M => {
                        let mins = u.min.as_ref().expect("Q4_1/Q4_K have mins");
                        for (b, q) in u.q.chunks_exact(32).enumerate() {
                            // Q4_0's nibble order: byte j holds elements j and j + 16
                            qs.extend((0..16).map(|j| (q[j] as u8 & 0xF) | ((q[j + 16] as u8) << 4)));
                            sc.push(u.scale[b]);
                            sc.push(mins[b]);
                        }
                    }
                    _ => {
                        qs.extend(u.q.iter().map(|&q| q as u8));
                        sc.extend_from_slice(&u.scale);
                    }
                }
            }
            (fmt, qs, Some(sc))
        }
        // every other type: exact dequantisation to F32 (more memory, same numbers)
        _ => (Format::F32, bytemuck::cast_slice(&m.to_f32()).to_vec(), None),
    }
}

impl Backend for Wgpu {
    type Weight = GpuWeight;
    type Vector = GpuVector;
    type Lora = GpuLora;
    type Act = GpuAct;
    type Cache = GpuCache;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn load_matrix(&self, m: &Matrix) -> Result<GpuWeight> {
        let (format, w, sc) = repack(m);
        let row_bytes = w.len() / m.rows.max(1);
        let max = self.device.limits().max_storage_buffer_binding_size as usize;
        let per_part = (max / row_bytes.max(1)).min(m.rows).max(1);
        if row_bytes > max {
            return Err(Error::TooLarge {
                what: format!("one row of a {}x{} matrix (a storage binding)", m.rows, m.cols),
                need: row_bytes as u64,
                limit: max as u64,
            });
        }
        let sc_row = sc.as_ref().map_or(0, |s| s.len() / m.rows.max(1)); // f32 parameters per row
        let parts = (0..m.rows)
            .step_by(per_part)
            .map(|row0| {
                let rows = per_part.min(m.rows - row0);
                Part {
                    row0,
                    rows,
                    w: self.storage("weight", &w[row0 * row_bytes..(row0 + rows) * row_bytes]),
                    sc: sc.as_ref().map(|s| {
                        self.storage("scales", bytemuck::cast_slice(&s[row0 * sc_row..(row0 + rows) * sc_row]))
                    }),
                }
            })
            .collect();
        Ok(GpuWeight { format, rows: m.rows, cols: m.cols, parts })
    }

    fn load_vector(&self, v: &[f32]) -> Result<GpuVector> {
        Ok(GpuVector { buf: self.storage("vector", bytemuck::cast_slice(v)) })
    }

    fn load_lora(&self, l: &LoraPair) -> Result<GpuLora> {
        Ok(GpuLora {
            r: l.r,
            a: self.storage("lora_a", bytemuck::cast_slice(l.a)),
            b: self.storage("lora_b", bytemuck::cast_slice(l.b)),
        })
    }

    fn new_cache(&self, cfg: &Config, max_seq: usize) -> Result<GpuCache> {
        let bytes = max_seq * cfg.kv_dim() * 4;
        Ok(GpuCache {
            max_seq,
            k: (0..cfg.num_layers).map(|_| self.zeroed("k", bytes)).collect(),
            v: (0..cfg.num_layers).map(|_| self.zeroed("v", bytes)).collect(),
        })
    }

    fn copy_cache(&self, src: &GpuCache) -> Result<GpuCache> {
        let dst = GpuCache {
            max_seq: src.max_seq,
            k: src.k.iter().map(|b| self.zeroed("k", b.size() as usize)).collect(),
            v: src.v.iter().map(|b| self.zeroed("v", b.size() as usize)).collect(),
        };
        self.with_encoder(|enc| {
            for (s, d) in src.k.iter().zip(&dst.k).chain(src.v.iter().zip(&dst.v)) {
                enc.copy_buffer_to_buffer(s, 0, d, 0, s.size());
            }
        });
        Ok(dst)
    }

    fn act(&self, rows: usize, cols: usize) -> GpuAct {
        GpuAct { rows, cols, buf: self.take(rows * cols * 4), pool: self.pool.clone() }
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: &[f32]) -> GpuAct {
        // a fresh buffer: a queued write into a pooled one could land before earlier recorded uses
        GpuAct { rows, cols, buf: self.storage("act", bytemuck::cast_slice(data)), pool: self.pool.clone() }
    }

    async fn read(&self, x: &GpuAct) -> Result<Vec<f32>> {
        let bytes = self.read_back_async(&x.buf, (x.rows * x.cols * 4) as u64).await?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    async fn argmax(&self, x: &GpuAct) -> Result<u32> {
        let out = self.record_argmax(x);
        let b = self.read_back_async(&out, 4).await?;
        Ok(self.token(out, b))
    }

    async fn sample(&self, x: &GpuAct, temperature: f32, top_k: usize, top_p: f32, u: f32) -> Result<u32> {
        match self.record_sample(x, temperature, top_k, top_p, u) {
            Some(out) => {
                let b = self.read_back_async(&out, 4).await?;
                Ok(self.token(out, b))
            }
            None => {
                let mut v = self.read(x).await?;
                Ok(vicugna_core::generate::sample_host(&mut v, temperature, top_k, top_p, u))
            }
        }
    }

    fn last_row(&self, x: &GpuAct) -> GpuAct {
        let out = self.act(1, x.cols);
        let row = (x.cols * 4) as u64;
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(&x.buf, (x.rows as u64 - 1) * row, &out.buf, 0, row));
        out
    }

    fn embed(&self, out: &mut GpuAct, table: &GpuWeight, tokens: &[u32]) {
        let tb = self.storage("tokens", bytemuck::cast_slice(tokens));
        for part in &table.parts {
            let p = EmbedParams {
                n: tokens.len() as u32,
                rows: part.rows as u32,
                cols: table.cols as u32,
                blocks: (table.cols / 32) as u32,
                row0: part.row0 as u32,
                ..Default::default()
            };
            let mut b = vec![(1, &tb), (2, &out.buf), (3, &part.w)];
            b.extend(part.sc.as_ref().map(|sc| (4, sc)));
            self.dispatch(Entry::Embed, Variant::Format(table.format), p, &b, Self::elems(tokens.len() * table.cols));
        }
    }

    fn rmsnorm(&self, out: &mut GpuAct, x: &GpuAct, w: &GpuVector, eps: f32) {
        let p = NormParams { rows: x.rows as u32, cols: x.cols as u32, eps, ..Default::default() };
        self.dispatch(
            Entry::RmsNorm,
            Variant::Plain,
            p,
            &[(1, &x.buf), (2, &out.buf), (3, &w.buf)],
            (x.rows as u32, 1),
        );
    }

    fn matmul(&self, out: &mut GpuAct, x: &GpuAct, w: &GpuWeight, loras: &[(&GpuLora, f32)]) {
        let n = x.rows;
        // x A^T for every adapter (small), then the projection with the first adapter fused in
        let axs: Vec<wgpu::Buffer> = loras
            .iter()
            .map(|(l, _)| {
                let ax = self.take(n * l.r * 4);
                let pa = LoraParams { n: n as u32, cols: w.cols as u32, rank: l.r as u32, ..Default::default() };
                self.dispatch(
                    Entry::LoraA,
                    Variant::Plain,
                    pa,
                    &[(1, &x.buf), (2, &ax), (3, &l.a)],
                    (l.r as u32, n as u32),
                );
                ax
            })
            .collect();
        let variant = if loras.is_empty() { Variant::Format(w.format) } else { Variant::FormatLora(w.format) };
        for part in &w.parts {
            let mut p = MatmulParams {
                n: n as u32,
                rows: part.rows as u32,
                cols: w.cols as u32,
                blocks: (w.cols / 32) as u32,
                row0: part.row0 as u32,
                total_rows: w.rows as u32,
                ..Default::default()
            };
            let mut bufs = vec![(1, &x.buf), (2, &out.buf), (3, &part.w)];
            bufs.extend(part.sc.as_ref().map(|sc| (4, sc)));
            if let Some((l, s)) = loras.first() {
                p.rank = l.r as u32;
                p.lora_scale = *s;
                bufs.extend([(5, &axs[0]), (6, &l.b)]);
            }
            // CPU adapters: register tiles of MATMUL_ROWS rows (× MATMUL_TILE tokens in prefill)
            let groups = (part.rows.div_ceil(MATMUL_ROWS) as u32).div_ceil(WG);
            if self.rowwise && w.cols.is_multiple_of(32) && n > 1 {
                self.dispatch(Entry::MatmulTiled, variant, p, &bufs, (groups, n.div_ceil(MATMUL_TILE) as u32));
            } else if self.rowwise && w.cols.is_multiple_of(32) {
                self.dispatch(Entry::MatmulRowwise, variant, p, &bufs, (groups, n as u32));
            } else {
                self.dispatch(Entry::Matmul, variant, p, &bufs, (part.rows as u32, n as u32));
            }
        }
        for ((l, s), ax) in loras.iter().zip(&axs).skip(1) {
            let pb = LoraParams { n: n as u32, rows: w.rows as u32, rank: l.r as u32, scale: *s, ..Default::default() };
            self.dispatch(
                Entry::LoraBAdd,
                Variant::Plain,
                pb,
                &[(2, &out.buf), (3, &l.b), (4, ax)],
                Self::elems(n * w.rows),
            );
        }
        axs.into_iter().for_each(|b| self.give(b));
    }

    fn rope(&self, x: &mut GpuAct, n_heads: usize, head_dim: usize, pos0: usize, rope: &Rope) {
        let table = self.rope_table(rope, pos0 + x.rows);
        let p = RopeParams {
            n: x.rows as u32,
            heads: n_heads as u32,
            head_dim: head_dim as u32,
            pos0: pos0 as u32,
            interleaved: rope.interleaved as u32,
            ..Default::default()
        };
        self.dispatch(
            Entry::Rope,
            Variant::Plain,
            p,
            &[(1, &x.buf), (2, &table)],
            Self::elems(x.rows * n_heads * head_dim / 2),
        );
    }

    fn attention(
        &self,
        out: &mut GpuAct,
        q: &GpuAct,
        k: &GpuAct,
        v: &GpuAct,
        cache: &mut GpuCache,
        layer: usize,
        pos0: usize,
        heads: &Heads,
    ) -> Result<()> {
        let n = q.rows;
        if pos0 + n > cache.max_seq {
            return Err(Error::ContextOverflow { positions: pos0 + n, capacity: cache.max_seq });
        }
        let kvb = (heads.kv_dim() * 4) as u64;
        self.with_encoder(|enc| {
            enc.copy_buffer_to_buffer(&k.buf, 0, &cache.k[layer], pos0 as u64 * kvb, n as u64 * kvb);
            enc.copy_buffer_to_buffer(&v.buf, 0, &cache.v[layer], pos0 as u64 * kvb, n as u64 * kvb);
        });
        let p = AttentionParams {
            n: n as u32,
            stride: (pos0 + n) as u32,
            heads: heads.n_heads as u32,
            head_dim: heads.head_dim as u32,
            pos0: pos0 as u32,
            kv_heads: heads.n_kv_heads as u32,
            window: heads.window.unwrap_or(0) as u32,
            scale: heads.scale,
            ..Default::default()
        };
        let len = pos0 + n;
        if len <= self.attn_chunk {
            let scratch = self.take(n * heads.n_heads * len * 4);
            self.dispatch(
                Entry::Attention,
                Variant::Plain,
                p,
                &[(1, &q.buf), (2, &cache.k[layer]), (3, &cache.v[layer]), (4, &out.buf), (5, &scratch)],
                (heads.n_heads as u32, n as u32),
            );
            self.give(scratch);
            return Ok(());
        }
        // long context: chunks of positions in parallel, then a combine pass
        let chunks = len.div_ceil(self.attn_chunk);
        let scratch = self.take(n * heads.n_heads * chunks * self.attn_chunk * 4);
        let parts = self.take(n * heads.n_heads * chunks * (2 + heads.head_dim) * 4);
        let p = AttentionParams { chunks: chunks as u32, chunk_len: self.attn_chunk as u32, ..p };
        let bufs = [(1, &q.buf), (2, &cache.k[layer]), (3, &cache.v[layer]), (5, &scratch), (6, &parts)];
        self.dispatch3(
            Entry::AttentionPartial,
            Variant::Plain,
            p,
            &bufs,
            (heads.n_heads as u32, chunks as u32, n as u32),
        );
        self.dispatch3(
            Entry::AttentionCombine,
            Variant::Plain,
            p,
            &[(4, &out.buf), (6, &parts)],
            (heads.n_heads as u32, 1, n as u32),
        );
        Ok(())
    }

    fn silu_mul(&self, gate: &mut GpuAct, up: &GpuAct) {
        self.elementwise(Entry::SiluMul, gate, up);
    }

    fn add(&self, x: &mut GpuAct, y: &GpuAct) {
        self.elementwise(Entry::Add, x, y);
    }

    fn gelu_mul(&self, gate: &mut GpuAct, up: &GpuAct) {
        self.elementwise(Entry::GeluMul, gate, up);
    }

    fn scale(&self, x: &mut GpuAct, s: f32) {
        let n = x.rows * x.cols;
        let p = ElementwiseParams { n: n as u32, factor: s, ..Default::default() };
        self.dispatch(Entry::Scale, Variant::Plain, p, &[(1, &x.buf)], Self::elems(n));
    }

    fn rmsnorm_heads(&self, x: &mut GpuAct, w: &GpuVector, head_dim: usize, eps: f32) {
        let rows = x.rows * x.cols / head_dim;
        let p = NormParams { rows: rows as u32, cols: head_dim as u32, eps, ..Default::default() };
        self.dispatch(Entry::RmsNormInplace, Variant::Plain, p, &[(2, &x.buf), (3, &w.buf)], (rows as u32, 1));
    }
}
