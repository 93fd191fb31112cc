//! Shared, cheaply cloneable byte ranges: an owned buffer or a memory-mapped file. Weights keep a
//! `Bytes` into the file they came from, so a mapped model is never copied.

use std::sync::Arc;

#[derive(Clone)]
pub struct Bytes {
    buf: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

/// f32 storage that hands out bytes: keeps 4-byte alignment for zero-copy f32 views.
struct AlignedF32(Vec<f32>);
impl AsRef<[u8]> for AlignedF32 {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl Bytes {
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Bytes { buf: Arc::new(v), start: 0, len }
    }
    pub fn from_f32(v: Vec<f32>) -> Self {
        let len = v.len() * 4;
        Bytes { buf: Arc::new(AlignedF32(v)), start: 0, len }
    }
    pub fn from_shared(buf: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        let len = (*buf).as_ref().len();
        Bytes { buf, start: 0, len }
    }
    /// A sub-range; the caller has checked `start + len <= self.len()`.
    pub fn slice(&self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.len, "Bytes::slice out of range");
        Bytes { buf: self.buf.clone(), start: self.start + start, len }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        &(*self.buf).as_ref()[self.start..self.start + self.len]
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len)
    }
}

/// Map a file read-only (native) or read it whole (wasm has no mmap).
pub fn map_file(path: &std::path::Path) -> crate::Result<Bytes> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(&p, e))?;
    #[cfg(not(target_arch = "wasm32"))]
    {
        // SAFETY: the mapping is read-only; a model file modified while mapped is undefined
        // behaviour we accept, as every mmap-based loader (llama.cpp, safetensors) does.
        let m = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::Error::io(&p, e))?;
        Ok(Bytes::from_shared(Arc::new(m)))
    }
    #[cfg(target_arch = "wasm32")]
    {
        use std::io::Read;
        let mut v = Vec::new();
        let mut file = file;
        file.read_to_end(&mut v).map_err(|e| crate::Error::io(&p, e))?;
        Ok(Bytes::from_vec(v))
    }
}
