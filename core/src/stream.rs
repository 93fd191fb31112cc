//! A GGUF model loaded from a stream of chunks (a download in the browser): the header is parsed
//! as soon as it has arrived, then each tensor is handed to the backend the moment its last byte
//! arrives and dropped from host memory. At most one tensor plus one chunk is held at a time, so
//! a 3.8 GB model never has to fit in wasm32's address space.
//!
//! The browser drives it with `fetch` chunks; native tests drive it with arbitrary chunkings and
//! compare with the whole-file loader.

use crate::backend::Backend;
use crate::bytes::Bytes;
use crate::config::Config;
use crate::gguf::GgufFile;
use crate::model::{Model, ModelBuilder};
use crate::tensors::Slot;
use crate::tokenizer::Tokenizer;
use crate::weights::Matrix;
use crate::{Error, Result};

/// Splits a GGUF byte stream into its header and its tensors' bytes, in file order.
pub struct GgufStream {
    name: String,
    total: u64,
    /// Bytes received and not yet handed out; `buf[0]` is file offset `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    received: u64,
    header: Option<GgufFile>,
    /// Tensor indices sorted by their offset in the data section.
    order: Vec<usize>,
    next: usize,
    /// Re-parse the header only once the buffer has doubled (a 262k-token vocabulary is MBs).
    parse_at: usize,
}

impl GgufStream {
    /// `total_len`: the file's length (the download's Content-Length or the registry's size).
    pub fn new(name: &str, total_len: u64) -> Self {
        GgufStream {
            name: name.to_string(),
            total: total_len,
            buf: Vec::new(),
            buf_start: 0,
            received: 0,
            header: None,
            order: Vec::new(),
            next: 0,
            parse_at: 1 << 16,
        }
    }

    pub fn header(&self) -> Option<&GgufFile> {
        self.header.as_ref()
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Tensors handed out so far and in all.
    pub fn tensors_done(&self) -> (usize, usize) {
        (self.next, self.order.len())
    }

    /// Feed the next chunk. Returns the tensors it completed: (index into `header().tensors`,
    /// their bytes).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<(usize, Vec<u8>)>> {
        if self.received + chunk.len() as u64 > self.total {
            return Err(Error::format(
                &self.name,
                format!("the stream is longer than the announced {} bytes", self.total),
            ));
        }
        self.received += chunk.len() as u64;
        self.buf.extend_from_slice(chunk);
        if self.header.is_none() {
            if self.buf.len() < self.parse_at && self.received < self.total {
                return Ok(Vec::new());
            }
            match GgufFile::read_prefix(&self.buf, self.total, &self.name)? {
                None => {
                    self.parse_at = self.buf.len() * 2;
                    return Ok(Vec::new());
                }
                Some(h) => {
                    let mut order: Vec<usize> = (0..h.tensors.len()).collect();
                    order.sort_by_key(|&i| h.tensors[i].offset);
                    // overlapping tensors would make the stream hand out bytes twice
                    for w in order.windows(2) {
                        let (a, b) = (&h.tensors[w[0]], &h.tensors[w[1]]);
                        if a.offset + a.n_bytes() > b.offset {
                            return Err(Error::tensor(&self.name, &b.name, format!("overlaps `{}`", a.name)));
                        }
                    }
                    self.order = order;
                    self.header = Some(h);
                }
            }
        }
        let h = self.header.as_ref().expect("parsed above");
        let mut out = Vec::new();
        while let Some(&i) = self.order.get(self.next) {
            let t = &h.tensors[i];
            let start = h.data_offset + t.offset;
            let end = start + t.n_bytes();
            if self.buf_start + (self.buf.len() as u64) < end {
                break;
            }
            let from = (start - self.buf_start) as usize;
            let to = (end - self.buf_start) as usize;
            // hand the tensor's bytes over without copying them (they can be 100s of MB); only
            // the bytes of the next chunk after it move
            let rest = self.buf.split_off(to);
            let mut bytes = std::mem::replace(&mut self.buf, rest);
            bytes.drain(..from);
            out.push((i, bytes));
            self.buf_start = end;
            self.next += 1;
        }
        Ok(out)
    }

    /// Check that the stream ended where the file does, with every tensor delivered.
    pub fn finish(&self) -> Result<()> {
        if self.received != self.total {
            return Err(Error::format(
                &self.name,
                format!("truncated: {} of {} bytes arrived", self.received, self.total),
            ));
        }
        match &self.header {
            None => Err(Error::format(&self.name, "the stream ended inside the header")),
            Some(h) if self.next < self.order.len() => Err(Error::tensor(
                &self.name,
                &h.tensors[self.order[self.next]].name,
                "the stream ended before this tensor's data",
            )),
            Some(_) => Ok(()),
        }
    }
}

/// A model, its tokenizer and its header, assembled from a GGUF stream on a backend.
pub struct StreamLoader<B: Backend> {
    stream: GgufStream,
    backend: Option<B>,
    builder: Option<ModelBuilder<B>>,
    tokenizer: Option<Tokenizer>,
}

/// What a finished stream yields.
pub struct Loaded<B: Backend> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub header: GgufFile,
}

impl<B: Backend> StreamLoader<B> {
    pub fn new(backend: B, name: &str, total_len: u64) -> Self {
        StreamLoader {
            stream: GgufStream::new(name, total_len),
            backend: Some(backend),
            builder: None,
            tokenizer: None,
        }
    }

    pub fn stream(&self) -> &GgufStream {
        &self.stream
    }

    /// The model's configuration once the header has arrived.
    pub fn config(&self) -> Option<&Config> {
        self.builder.as_ref().map(|b| b.config())
    }

    /// Feed the next chunk; uploads every tensor it completes. Returns true when this chunk
    /// completed the header (the caller may inspect `stream().header()` and `config()` then).
    pub fn push(&mut self, chunk: &[u8]) -> Result<bool> {
        let had_header = self.builder.is_some();
        let tensors = self.stream.push(chunk)?;
        if self.builder.is_none() {
            if let Some(h) = self.stream.header() {
                let cfg = Config::from_gguf(h)?;
                self.tokenizer = Some(Tokenizer::from_gguf(h)?);
                let backend = self.backend.take().expect("the backend moves into the builder once");
                self.builder = Some(ModelBuilder::new(backend, cfg, &h.name));
            }
        }
        let (Some(h), Some(b)) = (self.stream.header.as_ref(), self.builder.as_mut()) else {
            return Ok(false);
        };
        for (i, bytes) in tensors {
            let t = &h.tensors[i];
            let Some(slot) = Slot::from_gguf(&t.name) else {
                continue; // tensors the model does not use
            };
            let cols = t.dims[0] as usize;
            let rows = t.dims[1..].iter().product::<u64>() as usize;
            // f32 data stays 4-byte aligned so the CPU kernels read it in place
            let data = if t.ty == crate::quant::GgmlType::F32 {
                Bytes::from_f32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            } else {
                Bytes::from_vec(bytes)
            };
            b.set(slot, &Matrix { ty: t.ty, rows, cols, data })?;
        }
        Ok(!had_header && self.builder.is_some())
    }

    /// The model, after the whole stream has arrived.
    pub fn finish(self) -> Result<Loaded<B>> {
        self.stream.finish()?;
        let (Some(b), Some(tokenizer), Some(header)) = (self.builder, self.tokenizer, self.stream.header) else {
            return Err(Error::format(&self.stream.name, "the stream ended inside the header"));
        };
        Ok(Loaded { model: b.finish()?, tokenizer, header })
    }
}
