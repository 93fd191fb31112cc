//! Host-side model weights as they come out of a file: HF safetensors (+ config.json) or GGUF.
//! Every projection is a `Matrix` in its stored format (F32/F16/BF16/Q*), never converted unless
//! asked, so one model type serves fp and quantised files alike.

use crate::bytes::{map_file, Bytes};
use crate::config::Config;
use crate::gguf::GgufFile;
use crate::layer::{LayerTensors, Norm};
use crate::quant::{dequantize_row, quantize_row, GgmlType};
pub use crate::tensors::Proj;
use crate::tensors::Slot;
use crate::{Error, Result};
use std::path::Path;

/// A (rows, cols) weight matrix stored row-major in one ggml type; rows are output features.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl Matrix {
    pub fn from_f32(rows: usize, cols: usize, v: Vec<f32>) -> Self {
        assert_eq!(v.len(), rows * cols);
        Matrix { ty: GgmlType::F32, rows, cols, data: Bytes::from_f32(v) }
    }
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out)
    }
    pub fn to_f32(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.rows * self.cols];
        for (r, o) in v.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, o);
        }
        v
    }
    /// Re-encode in another type (dequantise, then quantise row by row).
    pub fn convert(&self, ty: GgmlType) -> Result<Matrix> {
        if ty == self.ty {
            return Ok(self.clone());
        }
        if !self.cols.is_multiple_of(ty.block_size()) {
            return Err(Error::shape(
                format!("converting to {ty:?}"),
                format!("row length {} is not a multiple of the {ty:?} block size", self.cols),
            ));
        }
        if ty == GgmlType::F32 {
            return Ok(Matrix::from_f32(self.rows, self.cols, self.to_f32()));
        }
        let mut out = Vec::with_capacity(ty.row_bytes(self.cols) * self.rows);
        let mut tmp = vec![0f32; self.cols];
        for r in 0..self.rows {
            self.row_f32(r, &mut tmp);
            out.extend_from_slice(&quantize_row(ty, &tmp));
        }
        Ok(Matrix { ty, rows: self.rows, cols: self.cols, data: Bytes::from_vec(out) })
    }
}

/// One layer's tensors on the host as the file stores them.
pub type LayerWeights = LayerTensors<Vec<f32>, Matrix>;

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub cfg: Config,
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// None when tied to `embed`.
    pub lm_head: Option<Matrix>,
    /// Where the weights came from (for messages and fingerprints).
    pub source: String,
}

/// Apply llama.cpp's Q/K row permutation (HF rotate-half layout -> interleaved) or its inverse to
/// an (n_heads * head_dim, cols) row-major f32 matrix.
pub fn permute_rope_rows(m: &[f32], cols: usize, n_heads: usize, head_dim: usize, to_interleaved: bool) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    let half = head_dim / 2;
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let hf_row = h * head_dim + s * half + i;
                let il_row = h * head_dim + 2 * i + s;
                let (src, dst) = if to_interleaved { (hf_row, il_row) } else { (il_row, hf_row) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

struct SafeTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Bytes,
    file: String,
}

fn read_safetensors(bytes: &Bytes, file: &str, out: &mut std::collections::HashMap<String, SafeTensor>) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(file, format!("invalid safetensors: {e}")))?;
    let base = bytes.as_ptr() as usize;
    for (name, view) in st.tensors() {
        let off = view.data().as_ptr() as usize - base;
        out.insert(
            name.clone(),
            SafeTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: bytes.slice(off, view.data().len()),
                file: file.to_string(),
            },
        );
    }
    Ok(())
}

fn st_type(t: &SafeTensor, name: &str) -> Result<GgmlType> {
    use safetensors::Dtype::*;
    match t.dtype {
        F32 => Ok(GgmlType::F32),
        F16 => Ok(GgmlType::F16),
        BF16 => Ok(GgmlType::BF16),
        d => Err(Error::tensor(&t.file, name, format!("dtype {d:?} is not supported (F32, F16, BF16)"))),
    }
}

/// Read a safetensors tensor as f32 (any float dtype), checking its shape.
fn st_f32(
    map: &std::collections::HashMap<String, SafeTensor>,
    name: &str,
    shape: &[usize],
    file: &str,
) -> Result<Vec<f32>> {
    let m = st_matrix(map, name, shape, file)?;
    Ok(m.to_f32())
}

fn st_matrix(
    map: &std::collections::HashMap<String, SafeTensor>,
    name: &str,
    shape: &[usize],
    file: &str,
) -> Result<Matrix> {
    let t = map.get(name).ok_or_else(|| Error::tensor(file, name, "missing"))?;
    if t.shape != shape {
        return Err(Error::tensor(
            &t.file,
            name,
            format!("shape {:?} contradicts the config (expected {shape:?})", t.shape),
        ));
    }
    let ty = st_type(t, name)?;
    let (rows, cols) = if shape.len() == 2 { (shape[0], shape[1]) } else { (1, shape[0]) };
    let m = Matrix { ty, rows, cols, data: t.data.clone() };
    // keep f32 rows 4-byte aligned so the CPU kernels read them in place
    if ty == GgmlType::F32 && !(m.data.as_ptr() as usize).is_multiple_of(4) {
        return Ok(Matrix::from_f32(rows, cols, m.to_f32()));
    }
    Ok(m)
}

/// Public wrapper used by the adapter loader: all tensors of one safetensors file.
pub struct SafetensorsFile {
    map: std::collections::HashMap<String, SafeTensor>,
    pub file: String,
}

impl SafetensorsFile {
    pub fn from_bytes(bytes: Bytes, file: &str) -> Result<Self> {
        let mut map = Default::default();
        read_safetensors(&bytes, file, &mut map)?;
        Ok(SafetensorsFile { map, file: file.to_string() })
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|s| s.as_str())
    }
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.map.get(name).map(|t| t.shape.as_slice())
    }
    /// Any float tensor as f32 with its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.map.get(name).ok_or_else(|| Error::tensor(&self.file, name, "missing"))?;
        // the safetensors parser has checked that the data length matches shape and dtype
        let ty = st_type(t, name)?;
        let n = t.shape.iter().product();
        let m = Matrix { ty, rows: 1, cols: n, data: t.data.clone() };
        Ok((m.to_f32(), t.shape.clone()))
    }
    /// Integer tensors (fixtures store token ids as I32/I64).
    pub fn i64(&self, name: &str) -> Result<Vec<i64>> {
        let t = self.map.get(name).ok_or_else(|| Error::tensor(&self.file, name, "missing"))?;
        Ok(match t.dtype {
            safetensors::Dtype::I32 => {
                t.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
            }
            safetensors::Dtype::I64 => {
                t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
            }
            safetensors::Dtype::U8 => t.data.iter().map(|&b| b as i64).collect(),
            d => return Err(Error::tensor(&self.file, name, format!("dtype {d:?} is not an integer type"))),
        })
    }
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        Ok(&self.map.get(name).ok_or_else(|| Error::tensor(&self.file, name, "missing"))?.data)
    }
}

impl ModelWeights {
    /// Load a model from an HF directory (config.json + *.safetensors) or a .gguf file.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::load_hf_dir(path)
        } else {
            let bytes = map_file(path)?;
            Self::from_gguf_bytes(bytes, &path.display().to_string())
        }
    }

    pub fn load_hf_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg_name = cfg_path.display().to_string();
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_name, e))?;
        let cfg = Config::from_hf_json(&text, &cfg_name)?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir.display().to_string(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "safetensors")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("adapter_"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::format(dir.display().to_string(), "no *.safetensors weights in the model directory"));
        }
        let mut parts = Vec::new();
        for f in &files {
            parts.push((map_file(f)?, f.display().to_string()));
        }
        Self::from_hf_parts(cfg, &parts, &dir.display().to_string())
    }

    /// From an already-parsed config and safetensors buffers (the browser passes bytes).
    pub fn from_hf_parts(cfg: Config, parts: &[(Bytes, String)], source: &str) -> Result<Self> {
        let mut map = std::collections::HashMap::new();
        for (b, name) in parts {
            read_safetensors(b, name, &mut map)?;
        }
        let file = parts.first().map(|p| p.1.clone()).unwrap_or_default();
        let c = &cfg;
        let h = c.hidden_size;
        let embed = st_matrix(&map, &Slot::Embed.hf(), &[c.vocab_size, h], &file)?;
        let mut layers = Vec::new(); // the count comes from the file: no preallocation
        for i in 0..c.num_layers {
            // HF checkpoints of the LLaMA layout name no extra norms: an architecture that has
            // them reports the first as missing
            let missing = |slot: Slot| Error::tensor(&file, slot.hf(), "missing");
            layers.push(LayerTensors::assemble(
                c,
                i,
                |n: Norm| match n.slot(i).hf_name() {
                    Some(name) => st_f32(&map, &name, &[n.len(c)], &file).map(Some),
                    None => Ok(None),
                },
                |p| {
                    let (o, n) = p.shape(c);
                    st_matrix(&map, &Slot::Proj(i, p).hf(), &[o, n], &file).map(Some)
                },
                missing,
            )?);
        }
        let lm_head = if c.tie_embeddings && !map.contains_key(&Slot::LmHead.hf()) {
            None
        } else {
            Some(st_matrix(&map, &Slot::LmHead.hf(), &[c.vocab_size, h], &file)?)
        };
        Ok(ModelWeights {
            embed,
            layers,
            norm: st_f32(&map, &Slot::Norm.hf(), &[h], &file)?,
            lm_head,
            cfg,
            source: source.to_string(),
        })
    }

    pub fn from_gguf_bytes(bytes: Bytes, name: &str) -> Result<Self> {
        let g = GgufFile::from_bytes(&bytes, name)?;
        Self::from_gguf(&g, &bytes)
    }

    pub fn from_gguf(g: &GgufFile, bytes: &Bytes) -> Result<Self> {
        let mut cfg = Config::from_gguf(g)?;
        let name = &g.name;
        let mat = |t: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let ti = g.tensor(t).ok_or_else(|| Error::tensor(name, t, "missing"))?;
            let dims: Vec<u64> = if rows == 1 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
            if ti.dims != dims {
                return Err(Error::tensor(
                    name,
                    t,
                    format!("ggml shape {:?} contradicts the metadata (expected {dims:?})", ti.dims),
                ));
            }
            if !ti.ty.can_dequantize() {
                return Err(Error::tensor(name, t, format!("tensor type {:?} is not supported", ti.ty)));
            }
            Ok(Matrix { ty: ti.ty, rows, cols, data: g.tensor_data(bytes, ti) })
        };
        let vec = |t: &str, n: usize| -> Result<Vec<f32>> { Ok(mat(t, 1, n)?.to_f32()) };
        let c = cfg.clone();
        let h = c.hidden_size;
        let embed = mat(&Slot::Embed.gguf_name(), c.vocab_size, h)?;
        let mut layers = Vec::new(); // the count comes from the file: no preallocation
        for i in 0..c.num_layers {
            layers.push(LayerTensors::assemble(
                &c,
                i,
                |n| vec(&n.slot(i).gguf_name(), n.len(&c)).map(Some),
                |p| {
                    let (o, n) = p.shape(&c);
                    mat(&Slot::Proj(i, p).gguf_name(), o, n).map(Some)
                },
                |slot| Error::tensor(name, slot.gguf_name(), "missing"),
            )?);
        }
        if g.tensor(&Slot::RopeFreqs.gguf_name()).is_some() {
            cfg.rope_freq_factors = Some(vec(&Slot::RopeFreqs.gguf_name(), c.head_dim / 2)?);
        }
        Ok(ModelWeights {
            lm_head: if c.tie_embeddings { None } else { Some(mat(&Slot::LmHead.gguf_name(), c.vocab_size, h)?) },
            norm: vec(&Slot::Norm.gguf_name(), h)?,
            embed,
            layers,
            cfg,
            source: name.clone(),
        })
    }

    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Every matrix converted to `ty` where its rows allow it (others kept), as `vicugna convert` does.
    pub fn convert(&self, ty: GgmlType) -> Result<Self> {
        let conv = |m: &Matrix| {
            if m.cols.is_multiple_of(ty.block_size()) {
                m.convert(ty)
            } else {
                m.convert(GgmlType::F32)
            }
        };
        let mut out = self.clone();
        out.embed = conv(&self.embed)?;
        for l in &mut out.layers {
            for p in l.proj.iter_mut() {
                *p = conv(p)?;
            }
        }
        if let Some(h) = &self.lm_head {
            out.lm_head = Some(conv(h)?);
        }
        Ok(out)
    }
}
