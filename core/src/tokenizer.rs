//! Tokenizers: HF `tokenizer.json` (through the `tokenizers` crate) and vocabularies embedded in
//! GGUF files, re-implemented to match llama.cpp exactly: SentencePiece (`tokenizer.ggml.model =
//! llama`, score-ordered bigram merges with byte fallback) and byte-level BPE (`gpt2`, with the
//! llama-bpe, qwen2 and gpt-2 pre-tokenizers). Plus incremental detokenisation for streaming that
//! never emits half a UTF-8 character.

use crate::gguf::GgufFile;
use crate::{Error, Result};
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// ggml token types (same numbering as SentencePiece piece types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_i64(v: i64) -> Self {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

enum Kind {
    Hf(Box<tokenizers::Tokenizer>),
    Spm { scores: Vec<f32>, add_space_prefix: bool },
    Bpe { ranks: HashMap<(String, String), usize>, pre: Vec<fancy_regex::Regex>, ignore_merges: bool },
}

pub struct Tokenizer {
    kind: Kind,
    /// Bytes each token contributes to decoded text (empty for control tokens).
    pieces: Vec<Vec<u8>>,
    texts: Vec<String>,
    types: Vec<TokenType>,
    to_id: HashMap<String, u32>,
    /// Tokens matched in raw text before the model tokenizer runs, longest first.
    specials: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub name: String,
}

/// GPT-2's byte <-> printable-unicode mapping used by byte-level BPE.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    map
}

/// The inverse of `bytes_to_unicode`, for decoding byte-level BPE pieces.
fn unicode_to_bytes() -> HashMap<char, u8> {
    bytes_to_unicode().iter().enumerate().map(|(b, c)| (*c, b as u8)).collect()
}

fn byte_token(piece: &str) -> Option<u8> {
    let h = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if h.len() == 2 {
        u8::from_str_radix(h, 16).ok()
    } else {
        None
    }
}

const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

impl Tokenizer {
    /// A tokenizer.json, a model directory holding one, or a .gguf file (vocab-only files too).
    pub fn load(path: &Path) -> Result<Self> {
        let p = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let name = p.display().to_string();
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&name, e))?;
        if bytes.starts_with(b"GGUF") {
            let g = GgufFile::from_bytes(&bytes, &name)?;
            Self::from_gguf(&g)
        } else {
            Self::from_hf_json(&bytes, &name)
        }
    }

    pub fn from_hf_json(bytes: &[u8], name: &str) -> Result<Self> {
        let tk = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::format(name, format!("invalid tokenizer.json: {e}")))?;
        let j: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::format(name, format!("invalid JSON: {e}")))?;
        let byte_level = j.get("decoder").map(|d| d.to_string().contains("\"ByteLevel\"")).unwrap_or(false)
            || j.get("pre_tokenizer").map(|d| d.to_string().contains("\"ByteLevel\"")).unwrap_or(false);
        let n = tk.get_vocab_size(true);
        let u2b = unicode_to_bytes();
        let special: std::collections::HashSet<u32> =
            tk.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(id, _)| *id).collect();
        let mut pieces = Vec::with_capacity(n);
        let mut texts = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut to_id = HashMap::new();
        for id in 0..n as u32 {
            let t = tk.id_to_token(id).unwrap_or_default();
            let (bytes, ty) = if special.contains(&id) {
                (vec![], TokenType::Control)
            } else if let Some(b) = byte_token(&t) {
                (vec![b], TokenType::Byte)
            } else if byte_level {
                (t.chars().map(|c| u2b.get(&c).copied().unwrap_or(b'?')).collect(), TokenType::Normal)
            } else {
                (t.replace('\u{2581}', " ").into_bytes(), TokenType::Normal)
            };
            to_id.insert(t.clone(), id);
            pieces.push(bytes);
            texts.push(t);
            types.push(ty);
        }
        let cfg_tok = |k: &str| -> Option<u32> {
            let s = j.get("added_tokens")?.as_array()?;
            s.iter()
                .find(|t| t.get("content").and_then(|c| c.as_str()) == Some(k))
                .and_then(|t| t.get("id")?.as_u64())
                .map(|v| v as u32)
        };
        let post = j.get("post_processor").map(|p| p.to_string()).unwrap_or_default();
        let bos = ["<s>", "<|begin_of_text|>", "<bos>"].iter().find_map(|t| cfg_tok(t));
        let eos = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"].iter().find_map(|t| cfg_tok(t));
        let add_bos = bos.is_some_and(|b| post.contains(&format!("\"{}\"", texts[b as usize])));
        Ok(Tokenizer {
            kind: Kind::Hf(Box::new(tk)),
            pieces,
            texts,
            types,
            to_id,
            specials: vec![],
            bos,
            eos,
            add_bos,
            name: name.to_string(),
        })
    }

    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let name = &g.name;
        // files written by `vicugna convert` from an HF directory carry the tokenizer.json itself
        if g.get("tokenizer.ggml.model").is_none() {
            if let Some(j) = g.get_str("tokenizer.huggingface.json") {
                return Self::from_hf_json(j.as_bytes(), name);
            }
        }
        let model = g
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| Error::field(name, "tokenizer.ggml.model", "missing: no embedded vocabulary"))?;
        let tokens = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .ok_or_else(|| Error::field(name, "tokenizer.ggml.tokens", "missing or not an array"))?;
        let texts: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| Error::field(name, "tokenizer.ggml.tokens", format!("entry {i} is not a string")))
            })
            .collect::<Result<_>>()?;
        let n = texts.len();
        let types: Vec<TokenType> = match g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) if a.len() == n => a.iter().map(|v| TokenType::from_i64(v.as_i64().unwrap_or(1))).collect(),
            Some(a) => {
                return Err(Error::field(
                    name,
                    "tokenizer.ggml.token_type",
                    format!("{} entries for {n} tokens", a.len()),
                ))
            }
            None => vec![TokenType::Normal; n],
        };
        let mut to_id = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            to_id.insert(t.clone(), i as u32); // later duplicates win, as in llama.cpp
        }
        let id_field = |k: &str| -> Result<Option<u32>> {
            match g.get_u64(k)? {
                Some(v) if (v as usize) < n => Ok(Some(v as u32)),
                Some(v) => Err(Error::field(name, k, format!("token id {v} is outside the vocabulary of {n}"))),
                None => Ok(None),
            }
        };
        let bos = id_field("tokenizer.ggml.bos_token_id")?;
        let eos = id_field("tokenizer.ggml.eos_token_id")?;
        let flag = |k: &str| g.get(k).and_then(|v| v.as_bool());
        let u2b = unicode_to_bytes();
        let (kind, pieces, add_bos) = match model {
            "llama" => {
                let scores: Vec<f32> = match g.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
                    Some(a) if a.len() == n => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    _ => {
                        return Err(Error::field(name, "tokenizer.ggml.scores", format!("missing or not {n} numbers")))
                    }
                };
                let pieces = texts
                    .iter()
                    .zip(&types)
                    .map(|(t, ty)| match ty {
                        TokenType::Control | TokenType::Unused => vec![],
                        TokenType::Byte => byte_token(t).map(|b| vec![b]).unwrap_or_default(),
                        TokenType::Unknown => "\u{2585}".as_bytes().to_vec(),
                        TokenType::UserDefined => t.as_bytes().to_vec(),
                        TokenType::Normal => t.replace('\u{2581}', " ").into_bytes(),
                    })
                    .collect();
                let asp = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                (
                    Kind::Spm { scores, add_space_prefix: asp },
                    pieces,
                    flag("tokenizer.ggml.add_bos_token").unwrap_or(true),
                )
            }
            "gpt2" => {
                let merges = g
                    .get("tokenizer.ggml.merges")
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| Error::field(name, "tokenizer.ggml.merges", "missing (required for BPE)"))?;
                let mut ranks = HashMap::with_capacity(merges.len());
                for (i, m) in merges.iter().enumerate() {
                    let s = m.as_str().ok_or_else(|| {
                        Error::field(name, "tokenizer.ggml.merges", format!("entry {i} is not a string"))
                    })?;
                    let (a, b) = s.split_once(' ').ok_or_else(|| {
                        Error::field(name, "tokenizer.ggml.merges", format!("entry {i} `{s}` has no space"))
                    })?;
                    ranks.entry((a.to_string(), b.to_string())).or_insert(i);
                }
                let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
                let (res, ignore_merges): (&[&str], bool) = match pre {
                    "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral" => (&[LLAMA3_RE], true),
                    "qwen2" | "deepseek-r1-qwen" => (&[QWEN2_RE], false),
                    "gpt-2" | "gpt2" | "mpt" | "olmo" => (&[GPT2_RE], false),
                    other => {
                        return Err(Error::unsupported(
                            name,
                            format!(
                                "BPE pre-tokenizer `tokenizer.ggml.pre = {other}` (supported: llama-bpe, qwen2, gpt-2)"
                            ),
                        ))
                    }
                };
                let pre = res.iter().map(|r| fancy_regex::Regex::new(r).expect("static regex")).collect();
                let pieces = texts
                    .iter()
                    .zip(&types)
                    .map(|(t, ty)| match ty {
                        TokenType::Control | TokenType::Unused => vec![],
                        TokenType::UserDefined => t.as_bytes().to_vec(),
                        _ => t.chars().map(|c| u2b.get(&c).copied().unwrap_or(b'?')).collect(),
                    })
                    .collect();
                (Kind::Bpe { ranks, pre, ignore_merges }, pieces, flag("tokenizer.ggml.add_bos_token").unwrap_or(false))
            }
            other => {
                return Err(Error::unsupported(
                    name,
                    format!("tokenizer.ggml.model = `{other}` (supported: llama, gpt2)"),
                ))
            }
        };
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| matches!(types[i as usize], TokenType::Control | TokenType::UserDefined | TokenType::Unknown))
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));
        Ok(Tokenizer {
            kind,
            pieces,
            texts,
            types,
            to_id,
            specials,
            bos,
            eos,
            add_bos: add_bos && bos.is_some(),
            name: name.clone(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(|s| s.as_str())
    }
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.to_id.get(text).copied()
    }
    /// Bytes this token contributes to decoded text.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map(|v| v.as_slice()).unwrap_or(&[])
    }
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TokenType::Control)
    }

    /// Encode user text: BOS when the model wants it and `add_bos`; special-token text in the
    /// input is treated as plain text (llama.cpp's `parse_special = false`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_bos, false)
    }

    pub fn encode_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if let Kind::Hf(tk) = &self.kind {
            let enc = tk
                .encode(text, add_bos && self.add_bos)
                .map_err(|e| Error::format(&self.name, format!("tokenizing: {e}")))?;
            return Ok(enc.get_ids().to_vec());
        }
        if add_bos && self.add_bos {
            out.extend(self.bos);
        }
        // split the text around special tokens (user-defined always, control when parse_special)
        enum Frag<'a> {
            Text(&'a str),
            Tok(u32),
        }
        let mut frags = if text.is_empty() { vec![] } else { vec![Frag::Text(text)] };
        for &sid in &self.specials {
            let ty = self.types[sid as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let st = &self.texts[sid as usize];
            if st.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Text(mut s) => {
                        while let Some(p) = s.find(st.as_str()) {
                            if p > 0 {
                                next.push(Frag::Text(&s[..p]));
                            }
                            next.push(Frag::Tok(sid));
                            s = &s[p + st.len()..];
                        }
                        if !s.is_empty() {
                            next.push(Frag::Text(s));
                        }
                    }
                    t => next.push(t),
                }
            }
            frags = next;
        }
        let mut prev_special = true;
        for f in frags {
            match f {
                Frag::Tok(t) => {
                    out.push(t);
                    prev_special = true;
                }
                Frag::Text(s) => {
                    match &self.kind {
                        Kind::Spm { scores, add_space_prefix } => {
                            let mut t = String::new();
                            if *add_space_prefix && prev_special {
                                t.push(' ');
                            }
                            t.push_str(s);
                            self.spm_encode(&t.replace(' ', "\u{2581}"), scores, &mut out);
                        }
                        Kind::Bpe { ranks, pre, ignore_merges } => {
                            self.bpe_encode(s, ranks, pre, *ignore_merges, &mut out)
                        }
                        Kind::Hf(_) => unreachable!(),
                    }
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    fn byte_to_token(&self, b: u8) -> Option<u32> {
        self.to_id.get(&format!("<0x{b:02X}>")).copied().or_else(|| self.to_id.get(&(b as char).to_string()).copied())
    }

    /// llama.cpp's llm_tokenizer_spm: merge adjacent symbols by highest vocabulary score.
    fn spm_encode(&self, text: &str, scores: &[f32], out: &mut Vec<u32>) {
        #[derive(Clone, Copy)]
        struct Sym {
            start: usize,
            n: usize,
            prev: isize,
            next: isize,
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl Ord for Bigram {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                // highest score first; ties: leftmost first
                self.score.partial_cmp(&o.score).unwrap_or(std::cmp::Ordering::Equal).then(o.left.cmp(&self.left))
            }
        }
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (off, c)) in text.char_indices().enumerate() {
            syms.push(Sym { start: off, n: c.len_utf8(), prev: i as isize - 1, next: i as isize + 1 });
        }
        if let Some(l) = syms.last_mut() {
            l.next = -1;
        }
        let mut heap = BinaryHeap::new();
        let mut rev_merge: HashMap<String, (usize, usize)> = HashMap::new();
        let try_add = |l: isize,
                       r: isize,
                       syms: &[Sym],
                       heap: &mut BinaryHeap<Bigram>,
                       rev: &mut HashMap<String, (usize, usize)>| {
            if l < 0 || r < 0 {
                return;
            }
            let (ls, rs) = (syms[l as usize], syms[r as usize]);
            let t = &text[ls.start..ls.start + ls.n + rs.n];
            let Some(&id) = self.to_id.get(t) else { return };
            heap.push(Bigram { score: scores[id as usize], left: l as usize, right: r as usize, size: t.len() });
            rev.insert(t.to_string(), (l as usize, r as usize));
        };
        for i in 1..syms.len() {
            try_add(i as isize - 1, i as isize, &syms, &mut heap, &mut rev_merge);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (syms[b.left], syms[b.right]);
            if l.n == 0 || r.n == 0 || l.n + r.n != b.size {
                continue;
            }
            syms[b.left].n += r.n;
            syms[b.right].n = 0;
            syms[b.left].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = b.left as isize;
            }
            let lp = syms[b.left].prev;
            try_add(lp, b.left as isize, &syms, &mut heap, &mut rev_merge);
            let ln = syms[b.left].next;
            try_add(b.left as isize, ln, &syms, &mut heap, &mut rev_merge);
        }
        fn resegment(
            tk: &Tokenizer,
            text: &str,
            syms: &[(usize, usize)],
            i: usize,
            rev: &HashMap<String, (usize, usize)>,
            out: &mut Vec<u32>,
        ) {
            let (start, n) = syms[i];
            let t = &text[start..start + n];
            if let Some(&id) = tk.to_id.get(t) {
                out.push(id);
                return;
            }
            if let Some(&(a, b)) = rev.get(t) {
                resegment(tk, text, syms, a, rev, out);
                resegment(tk, text, syms, b, rev, out);
                return;
            }
            out.extend(t.bytes().filter_map(|b| tk.byte_to_token(b)));
        }
        let flat: Vec<(usize, usize)> = syms.iter().map(|s| (s.start, s.n)).collect();
        let mut i = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            if syms[i as usize].n > 0 {
                resegment(self, text, &flat, i as usize, &rev_merge, out);
            }
            i = syms[i as usize].next;
        }
    }

    /// llama.cpp's llm_tokenizer_bpe: regex pre-split, byte-level encode, merges by rank.
    fn bpe_encode(
        &self,
        text: &str,
        ranks: &HashMap<(String, String), usize>,
        pre: &[fancy_regex::Regex],
        ignore_merges: bool,
        out: &mut Vec<u32>,
    ) {
        let b2u = bytes_to_unicode();
        // successive regexes each split the pieces left by the previous one; unmatched gaps are kept
        let mut words: Vec<&str> = vec![text];
        for re in pre {
            let mut next = Vec::new();
            for w in words {
                let mut last = 0;
                for m in re.find_iter(w).flatten() {
                    if m.start() > last {
                        next.push(&w[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < w.len() {
                    next.push(&w[last..]);
                }
            }
            words = next;
        }
        for w in words {
            let enc: String = w.bytes().map(|b| b2u[b as usize]).collect();
            if ignore_merges {
                if let Some(&id) = self.to_id.get(&enc) {
                    out.push(id);
                    continue;
                }
            }
            let mut parts: Vec<String> = enc.chars().map(|c| c.to_string()).collect();
            // repeatedly merge the lowest-ranked adjacent pair (leftmost on ties)
            loop {
                let mut best: Option<(usize, usize)> = None;
                for i in 0..parts.len().saturating_sub(1) {
                    if let Some(&r) = ranks.get(&(parts[i].clone(), parts[i + 1].clone())) {
                        if best.is_none_or(|(br, _)| r < br) {
                            best = Some((r, i));
                        }
                    }
                }
                let Some((_, i)) = best else { break };
                let right = parts.remove(i + 1);
                parts[i].push_str(&right);
            }
            for p in parts {
                match self.to_id.get(&p) {
                    Some(&id) => out.push(id),
                    None => out.extend(p.chars().filter_map(|c| self.to_id.get(&c.to_string()).copied())),
                }
            }
        }
    }

    /// Decode ids to text (control tokens dropped; invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut b = Vec::new();
        for &i in ids {
            b.extend_from_slice(self.token_bytes(i));
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Incremental detokeniser: emits only complete UTF-8 characters, holding back a partial one
/// until its remaining bytes arrive (LLaMA spells a Chinese character as up to 3 byte tokens).
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Feed one token's bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("validated prefix"));
                    match e.error_len() {
                        // an incomplete sequence at the end: keep it for the next token
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        // an invalid byte sequence can never complete: replace it and go on
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
    /// End of stream: whatever is left is an incomplete character.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// The Split regexes of the byte-level BPE pre-tokenizers llama.cpp implements, as HF
/// tokenizer.json files spell them, with the `tokenizer.ggml.pre` name llama.cpp knows them by.
const HF_PRE_TOKENIZERS: &[(&str, &str)] = &[
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "llama-bpe",
    ),
    (LLAMA3_RE, "llama-bpe"),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2",
    ),
    (QWEN2_RE, "qwen2"),
];

/// The vocabulary of an HF `tokenizer.json` as the `tokenizer.ggml.*` metadata llama.cpp reads
/// (what `convert_hf_to_gguf.py` writes), so a GGUF made from an HF directory carries a
/// vocabulary llama.cpp and our own GGUF tokenizers load:
///
/// - SentencePiece-style BPE (byte fallback, `▁` for spaces: LLaMA 1/2, Mistral, Chinese-LLaMA) as
///   `llama`, with token types as llama.cpp's SentencePiece path gives them (`<unk>` unknown,
///   special added tokens control, `<0xNN>` byte, other added tokens user-defined). The scores
///   are −(1 + the rank of the first merge that makes each token) (0 for tokens no merge makes),
///   so SentencePiece's highest-score-first merging follows the BPE merge order. (llama.cpp's
///   own converter writes −1000 for every token when there is no `tokenizer.model`, which makes
///   its tokenizer merge left to right instead.)
/// - byte-level BPE (Llama 3, Qwen2, GPT-2) as `gpt2` with its merges and the pre-tokenizer named
///   as llama.cpp names it (`llama-bpe`, `qwen2`, `gpt-2`), recognised from the Split regex.
///
/// Special ids (BOS, EOS, unknown, padding when the model has one) and `add_bos_token` /
/// `add_eos_token` from the post-processor are written too. A tokenizer this cannot express
/// (WordPiece, Unigram, an unknown pre-tokenizer) is an `Unsupported` error naming what.
pub fn gguf_vocab_from_hf_json(bytes: &[u8], name: &str) -> Result<Vec<(String, crate::gguf::Value)>> {
    use crate::gguf::Value;
    let tk = Tokenizer::from_hf_json(bytes, name)?;
    let j: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::format(name, format!("invalid JSON: {e}")))?;
    let model = &j["model"];
    let ty = model["type"].as_str().unwrap_or("?");
    if ty != "BPE" {
        return Err(Error::unsupported(name, format!("writing a `{ty}` tokenizer as GGUF (only BPE models)")));
    }
    let has = |v: &serde_json::Value, t: &str| v.to_string().contains(&format!("\"type\":\"{t}\""));
    let byte_level = has(&j["pre_tokenizer"], "ByteLevel") || has(&j["decoder"], "ByteLevel");
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
    let merges: Vec<(String, String)> = match model["merges"].as_array() {
        Some(a) => a
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                // tokenizers >= 0.20 writes pairs, older files "a b" strings
                serde_json::Value::Array(p) if p.len() == 2 => {
                    Ok((p[0].as_str().unwrap_or("").to_string(), p[1].as_str().unwrap_or("").to_string()))
                }
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::field(name, "model.merges", format!("entry {i} `{s}` has no space"))),
                other => Err(Error::field(name, "model.merges", format!("entry {i} is {other}, not a pair"))),
            })
            .collect::<Result<_>>()?,
        None => return Err(Error::field(name, "model.merges", "missing")),
    };
    let n = tk.texts.len();
    let added: HashMap<u32, bool> = j["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|t| Some((t["id"].as_u64()? as u32, t["special"].as_bool().unwrap_or(false)))).collect()
        })
        .unwrap_or_default();
    let unk = model["unk_token"].as_str().and_then(|u| tk.token_id(u));
    // a TemplateProcessing whose single-sequence template ends in the EOS token appends it
    let add_eos = tk.eos.is_some_and(|e| {
        j["post_processor"]["single"].as_array().and_then(|a| a.last()).and_then(|l| l["SpecialToken"]["id"].as_str())
            == Some(tk.texts[e as usize].as_str())
    });
    let mut out: Vec<(String, Value)> = Vec::new();
    let types: Vec<i32> = (0..n as u32)
        .map(|id| match added.get(&id) {
            _ if Some(id) == unk && !byte_level => 2,
            Some(true) => 3,
            Some(false) => 4,
            None if !byte_level && byte_token(&tk.texts[id as usize]).is_some() => 6,
            None => 1,
        })
        .collect();
    if byte_level {
        let pre_json = &j["pre_tokenizer"];
        let regex = |v: &serde_json::Value| v["pattern"]["Regex"].as_str().map(String::from);
        let split = match pre_json["type"].as_str() {
            Some("Sequence") => pre_json["pretokenizers"].as_array().and_then(|a| a.iter().find_map(regex)),
            Some("Split") => regex(pre_json),
            _ => None,
        };
        let pre = match &split {
            Some(r) => HF_PRE_TOKENIZERS.iter().find(|(p, _)| p == r).map(|(_, n)| *n).ok_or_else(|| {
                Error::unsupported(
                    name,
                    format!("writing the BPE pre-tokenizer regex `{r}` as GGUF (known: llama-bpe, qwen2, gpt-2)"),
                )
            })?,
            // GPT-2: a bare ByteLevel pre-tokenizer with its built-in regex
            None if has(pre_json, "ByteLevel") && pre_json.to_string().contains("\"use_regex\":true") => "gpt-2",
            None => {
                return Err(Error::unsupported(
                    name,
                    format!("writing the byte-level BPE pre-tokenizer {pre_json} as GGUF (no Split regex)"),
                ))
            }
        };
        out.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        out.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
        out.push((
            "tokenizer.ggml.tokens".into(),
            Value::Array(tk.texts.iter().map(|t| Value::String(t.clone())).collect()),
        ));
        out.push(("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())));
        out.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.iter().map(|(a, b)| Value::String(format!("{a} {b}"))).collect()),
        ));
    } else if byte_fallback {
        let mut first: HashMap<String, usize> = HashMap::with_capacity(merges.len());
        for (r, (a, b)) in merges.iter().enumerate() {
            first.entry(format!("{a}{b}")).or_insert(r);
        }
        let scores =
            tk.texts.iter().map(|t| Value::F32(first.get(t).map(|&r| -((r + 1) as f32)).unwrap_or(0.0))).collect();
        let norm = j["normalizer"].to_string();
        let pre = &j["pre_tokenizer"];
        let add_space_prefix = norm.contains("\"prepend\":\"\u{2581}\"")
            || (has(pre, "Metaspace")
                && pre["prepend_scheme"]
                    .as_str()
                    .map(|s| s != "never")
                    .unwrap_or(pre["add_prefix_space"].as_bool().unwrap_or(true)));
        out.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
        out.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
        out.push((
            "tokenizer.ggml.tokens".into(),
            Value::Array(tk.texts.iter().map(|t| Value::String(t.clone())).collect()),
        ));
        out.push(("tokenizer.ggml.scores".into(), Value::Array(scores)));
        out.push(("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())));
        out.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(add_space_prefix)));
    } else {
        return Err(Error::unsupported(
            name,
            "writing a BPE tokenizer with neither byte fallback nor a byte-level pre-tokenizer as GGUF",
        ));
    }
    let id = |k: &str, v: Option<u32>, out: &mut Vec<(String, Value)>| {
        if let Some(v) = v {
            out.push((format!("tokenizer.ggml.{k}"), Value::U32(v)));
        }
    };
    id("bos_token_id", tk.bos, &mut out);
    id("eos_token_id", tk.eos, &mut out);
    id("unknown_token_id", unk, &mut out);
    let pad = j["padding"]["pad_id"].as_u64().map(|v| v as u32).filter(|&v| (v as usize) < n);
    id("padding_token_id", pad, &mut out);
    out.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(tk.add_bos)));
    out.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(add_eos)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_holds_partial_characters() {
        let s = "中国";
        let b = s.as_bytes();
        let mut d = StreamDecoder::new();
        let mut got = Vec::new();
        for byte in b {
            got.push(d.push(&[*byte]));
        }
        assert_eq!(got, vec!["", "", "中", "", "", "国"]);
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn stream_decoder_replaces_invalid_bytes() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(d.push(&[0xe4, 0xb8]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
