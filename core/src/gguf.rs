//! GGUF v2/v3: a complete metadata reader and a writer.
//!
//! The reader takes any `Read + Seek` (a file natively, a byte buffer in the browser), parses the
//! header only, and checks every tensor's extent against the stream length, so a truncated file is
//! an error here rather than a panic later. Tensor data is then sliced out of a `Bytes` (mmap or
//! owned). Limits on string and array sizes stop a corrupted length field from allocating wildly.

use crate::quant::GgmlType;
use crate::{Error, Result};
use std::io::{Read, Seek, SeekFrom, Write};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    /// Any integer type as u64 (negative values refused).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// Short human-readable rendering (arrays summarised) for `vicugna inspect`.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 80 => {
                format!("{:?}…", s.chars().take(80).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) if a.len() > 8 => format!(
                "[{} … ] ({} items)",
                a.iter().take(4).map(|v| v.summary()).collect::<Vec<_>>().join(", "),
                a.len()
            ),
            Value::Array(a) => format!("[{}]", a.iter().map(|v| v.summary()).collect::<Vec<_>>().join(", ")),
            Value::Bool(b) => b.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            other => other.as_i64().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (column) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn n_bytes(&self) -> u64 {
        self.ty.row_bytes(self.n_elements() as usize) as u64
    }
}

#[derive(Debug, Clone)]
pub struct GgufFile {
    /// Display name used in error messages.
    pub name: String,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

const MAX_STRING: u64 = 1 << 26;
const MAX_ARRAY: u64 = 1 << 28;
const MAX_ITEMS: u64 = 1 << 24;
/// Counts come from the file: reserve at most this many up front so a corrupt count cannot make
/// us allocate gigabytes before the truncation is noticed.
const PREALLOC_LIMIT: usize = 4096;

struct Reader<'a, R> {
    r: &'a mut R,
    name: &'a str,
    pos: u64,
    /// Length of the whole file.
    len: u64,
    /// Bytes `r` can deliver: `len`, or less when parsing the prefix of a download.
    avail: u64,
    /// Set when a read needed bytes past `avail` that the file does have.
    short: bool,
}

impl<R: Read> Reader<'_, R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n <= self.len.saturating_sub(self.pos) && n > self.avail.saturating_sub(self.pos) {
            self.short = true;
            return Err(Error::format(self.name, format!("header continues past byte {}", self.avail)));
        }
        if n > self.len.saturating_sub(self.pos) {
            return Err(Error::format(
                self.name,
                format!("truncated while reading {what} at byte {} (need {n} bytes, file has {})", self.pos, self.len),
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| Error::format(self.name, format!("reading {what} at byte {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(buf)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, what)?;
        Ok(v.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(Error::format(self.name, format!("{what}: string length {n} is implausible (corrupt file?)")));
        }
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| Error::format(self.name, format!("{what}: string is not UTF-8")))
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::format(self.name, format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(Error::format(self.name, format!("{what}: arrays nested too deeply")));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // every element takes at least one byte, so a count larger than the rest of the file is corrupt
                if n > MAX_ARRAY || n > self.len.saturating_sub(self.pos) {
                    return Err(Error::format(self.name, format!("{what}: array length {n} exceeds the file")));
                }
                let mut v = Vec::with_capacity((n as usize).min(PREALLOC_LIMIT));
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(Error::format(self.name, format!("{what}: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Parse the header of a GGUF stream. `name` is used in error messages.
    pub fn read<R: Read + Seek>(r: &mut R, name: &str) -> Result<Self> {
        let len = r.seek(SeekFrom::End(0)).map_err(|e| Error::io(name, e))?;
        r.seek(SeekFrom::Start(0)).map_err(|e| Error::io(name, e))?;
        let mut rd = Reader { r, name, pos: 0, len, avail: len, short: false };
        Self::parse(&mut rd)
    }

    /// Parse the header from the first bytes of a file of `total_len` bytes (a download in
    /// progress): `Ok(None)` when the header does not end within `prefix` yet.
    pub fn read_prefix(prefix: &[u8], total_len: u64, name: &str) -> Result<Option<Self>> {
        let mut c = std::io::Cursor::new(prefix);
        let avail = (prefix.len() as u64).min(total_len);
        let mut rd = Reader { r: &mut c, name, pos: 0, len: total_len, avail, short: false };
        match Self::parse(&mut rd) {
            Ok(f) => Ok(Some(f)),
            Err(_) if rd.short => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn parse<R: Read>(rd: &mut Reader<'_, R>) -> Result<Self> {
        let (name, len) = (rd.name, rd.len);
        let magic = rd.arr::<4>("magic")?;
        if magic != GGUF_MAGIC {
            return Err(Error::format(name, format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")")));
        }
        let version = rd.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::field(name, "version", format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let n_tensors = rd.u64("tensor count")?;
        let n_kv = rd.u64("metadata count")?;
        if n_tensors > MAX_ITEMS || n_kv > MAX_ITEMS {
            return Err(Error::format(name, format!("implausible counts: {n_tensors} tensors, {n_kv} metadata keys")));
        }
        let mut metadata = Vec::with_capacity((n_kv as usize).min(PREALLOC_LIMIT));
        for i in 0..n_kv {
            let key = rd.string(&format!("metadata key #{i}"))?;
            let ty = rd.u32(&key)?;
            let v = rd.value(ty, &key, 0)?;
            metadata.push((key, v));
        }
        let mut tensors = Vec::with_capacity((n_tensors as usize).min(PREALLOC_LIMIT));
        for i in 0..n_tensors {
            let tname = rd.string(&format!("tensor name #{i}"))?;
            let nd = rd.u32(&tname)?;
            if nd == 0 || nd > 4 {
                return Err(Error::tensor(name, &tname, format!("{nd} dimensions (1 to 4 supported)")));
            }
            let mut dims = Vec::new();
            for _ in 0..nd {
                dims.push(rd.u64(&tname)?);
            }
            let tid = rd.u32(&tname)?;
            let ty = GgmlType::from_id(tid)
                .ok_or_else(|| Error::tensor(name, &tname, format!("unknown ggml type id {tid}")))?;
            let offset = rd.u64(&tname)?;
            let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            match n {
                Some(n) if n > 0 && n < (1u64 << 40) => {
                    if dims[0] % ty.block_size() as u64 != 0 {
                        return Err(Error::tensor(
                            name,
                            &tname,
                            format!(
                                "row length {} is not a multiple of the {:?} block size {}",
                                dims[0],
                                ty,
                                ty.block_size()
                            ),
                        ));
                    }
                }
                _ => return Err(Error::tensor(name, &tname, format!("implausible shape {dims:?}"))),
            }
            tensors.push(TensorInfo { name: tname, dims, ty, offset });
        }
        let mut f = GgufFile {
            name: name.to_string(),
            version,
            metadata,
            tensors,
            alignment: DEFAULT_ALIGNMENT,
            data_offset: 0,
        };
        if let Some(v) = f.get("general.alignment") {
            let a = v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                Error::field(name, "general.alignment", format!("{} is not a power of two", v.summary()))
            })?;
            f.alignment = a;
        }
        f.data_offset = rd.pos.div_ceil(f.alignment) * f.alignment;
        for t in &f.tensors {
            if t.offset % f.alignment != 0 {
                return Err(Error::tensor(
                    name,
                    &t.name,
                    format!("offset {} is not aligned to {}", t.offset, f.alignment),
                ));
            }
            let end = f.data_offset.checked_add(t.offset).and_then(|o| o.checked_add(t.n_bytes()));
            if end.is_none_or(|e| e > len) {
                return Err(Error::tensor(
                    name,
                    &t.name,
                    format!(
                        "data (offset {}, {} bytes) extends past the end of the file ({len} bytes): truncated?",
                        t.offset,
                        t.n_bytes()
                    ),
                ));
            }
        }
        Ok(f)
    }

    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        Self::read(&mut std::io::Cursor::new(bytes), name)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::field(&self.name, key, format!("expected an unsigned integer, found {}", v.summary()))
            }),
        }
    }
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::field(&self.name, key, format!("expected a number, found {}", v.summary()))),
        }
    }
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)?.ok_or_else(|| Error::field(&self.name, key, "missing"))
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// The bytes of one tensor inside the whole-file buffer `file`.
    pub fn tensor_data(&self, file: &crate::Bytes, t: &TensorInfo) -> crate::Bytes {
        // extents were validated against the stream length in `read`
        file.slice((self.data_offset + t.offset) as usize, t.n_bytes() as usize)
    }
}

/// Builds a GGUF file in memory order: metadata, tensor infos, aligned data.
#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, key: &str, v: Value) {
        if let Some(e) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            e.1 = v;
        } else {
            self.metadata.push((key.to_string(), v));
        }
    }
    /// `dims` in ggml order (contiguous dimension first); `data` already encoded in `ty`.
    pub fn add_tensor(&mut self, name: &str, dims: Vec<u64>, ty: GgmlType, data: Vec<u8>) -> Result<()> {
        let n: u64 = dims.iter().product();
        if ty.row_bytes(n as usize) != data.len() {
            return Err(Error::shape(
                "GGUF writer",
                format!(
                    "tensor `{name}` of {n} {ty:?} elements needs {} bytes, got {}",
                    ty.row_bytes(n as usize),
                    data.len()
                ),
            ));
        }
        self.tensors.push((name.to_string(), dims, ty, data));
        Ok(())
    }

    pub fn write<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        fn wstr<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
            w.write_all(&(s.len() as u64).to_le_bytes())?;
            w.write_all(s.as_bytes())
        }
        fn wval<W: Write>(w: &mut W, v: &Value) -> std::io::Result<()> {
            match v {
                Value::U8(x) => w.write_all(&[*x]),
                Value::I8(x) => w.write_all(&[*x as u8]),
                Value::U16(x) => w.write_all(&x.to_le_bytes()),
                Value::I16(x) => w.write_all(&x.to_le_bytes()),
                Value::U32(x) => w.write_all(&x.to_le_bytes()),
                Value::I32(x) => w.write_all(&x.to_le_bytes()),
                Value::F32(x) => w.write_all(&x.to_le_bytes()),
                Value::Bool(x) => w.write_all(&[*x as u8]),
                Value::String(s) => wstr(w, s),
                Value::Array(a) => {
                    let ety = a.first().map(|e| e.type_id()).unwrap_or(4);
                    w.write_all(&ety.to_le_bytes())?;
                    w.write_all(&(a.len() as u64).to_le_bytes())?;
                    a.iter().try_for_each(|e| wval(w, e))
                }
                Value::U64(x) => w.write_all(&x.to_le_bytes()),
                Value::I64(x) => w.write_all(&x.to_le_bytes()),
                Value::F64(x) => w.write_all(&x.to_le_bytes()),
            }
        }
        let align = DEFAULT_ALIGNMENT;
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let md: Vec<_> = self.metadata.iter().filter(|(k, _)| k != "general.alignment").collect();
        head.extend_from_slice(&(md.len() as u64).to_le_bytes());
        for (k, v) in md {
            wstr(&mut head, k)?;
            head.extend_from_slice(&v.type_id().to_le_bytes());
            wval(&mut head, v)?;
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            wstr(&mut head, name)?;
            head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + data.len() as u64).div_ceil(align) * align;
        }
        let pad = (head.len() as u64).div_ceil(align) * align - head.len() as u64;
        head.resize(head.len() + pad as usize, 0);
        w.write_all(&head)?;
        for (_, _, _, data) in &self.tensors {
            w.write_all(data)?;
            let pad = (data.len() as u64).div_ceil(align) * align - data.len() as u64;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }
}
