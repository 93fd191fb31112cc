//! The streaming GGUF loader (what the browser runs on each `fetch` chunk) against the
//! whole-file loader: the same model whatever the chunking, and clear errors for truncated,
//! overlong or corrupt streams.

use vicugna_core::cpu::Cpu;
use vicugna_core::gguf::GgufFile;
use vicugna_core::stream::{GgufStream, StreamLoader};
use vicugna_core::{Model, ModelWeights};
use vicugna_tests::{assert_close, fixture};

fn logits_whole(path: &str, ids: &[u32]) -> Vec<f32> {
    let m = Model::new(Cpu::EXACT, &ModelWeights::load(&fixture(path)).unwrap()).unwrap();
    let mut c = m.new_cache(ids.len()).unwrap();
    m.forward_blocking(ids, 0, &mut c, vicugna_core::Pick::AllLogits).unwrap().logits().unwrap()
}

/// Feed `bytes` in chunks whose sizes cycle through `sizes`.
fn load_chunked(bytes: &[u8], sizes: &[usize]) -> vicugna_core::Result<vicugna_core::stream::Loaded<Cpu>> {
    let mut l = StreamLoader::new(Cpu::EXACT, "stream.gguf", bytes.len() as u64);
    let (mut pos, mut i) = (0, 0);
    let mut header_seen = 0;
    while pos < bytes.len() {
        let n = sizes[i % sizes.len()].min(bytes.len() - pos);
        if l.push(&bytes[pos..pos + n])? {
            header_seen += 1;
            assert!(l.config().is_some() && l.stream().header().is_some());
        }
        pos += n;
        i += 1;
    }
    assert_eq!(header_seen, 1, "the header is reported exactly once");
    l.finish()
}

#[test]
fn streamed_models_equal_whole_file_models_for_any_chunking() {
    let ids = [1u32, 450, 4996, 17354, 1701, 29901];
    for path in ["tiny-llama-q4_0.gguf", "tiny-llama-f32.gguf"] {
        let bytes = std::fs::read(fixture(path)).unwrap();
        let want = logits_whole(path, &ids);
        // one byte at a time through the header region, odd sizes, network-sized, whole file
        for sizes in [&[1usize, 3, 7, 4093][..], &[65536], &[1 << 20, 17], &[bytes.len()]] {
            let loaded = load_chunked(&bytes, sizes).unwrap();
            let mut c = loaded.model.new_cache(ids.len()).unwrap();
            let got = loaded
                .model
                .forward_blocking(&ids, 0, &mut c, vicugna_core::Pick::AllLogits)
                .unwrap()
                .logits()
                .unwrap();
            assert_close(&got, &want, 0.0, 0.0);
            let whole = vicugna_core::tokenizer::Tokenizer::load(&fixture(path)).unwrap();
            assert_eq!(
                loaded.tokenizer.encode("中国的首都是", true).unwrap(),
                whole.encode("中国的首都是", true).unwrap()
            );
        }
    }
}

#[test]
fn the_stream_hands_out_each_tensor_once_in_file_order() {
    let bytes = std::fs::read(fixture("tiny-llama-q4_0.gguf")).unwrap();
    let whole = GgufFile::from_bytes(&bytes, "whole").unwrap();
    let mut s = GgufStream::new("s", bytes.len() as u64);
    let mut seen = Vec::new();
    for chunk in bytes.chunks(10_000) {
        for (i, data) in s.push(chunk).unwrap() {
            let t = &whole.tensors[i];
            let start = (whole.data_offset + t.offset) as usize;
            assert_eq!(data, &bytes[start..start + t.n_bytes() as usize], "{}", t.name);
            seen.push(i);
        }
    }
    s.finish().unwrap();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), whole.tensors.len());
    assert_eq!(s.tensors_done(), (whole.tensors.len(), whole.tensors.len()));
}

#[test]
fn truncated_overlong_and_corrupt_streams_are_refused() {
    let bytes = std::fs::read(fixture("tiny-llama-q4_0.gguf")).unwrap();
    // the download stops early: finish names the truncation
    let mut l = StreamLoader::new(Cpu::EXACT, "cut.gguf", bytes.len() as u64);
    l.push(&bytes[..bytes.len() - 100]).unwrap();
    let e = l.finish().err().expect("truncated stream must fail").to_string();
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    // ended inside the header
    let mut l = StreamLoader::new(Cpu::EXACT, "head.gguf", bytes.len() as u64);
    l.push(&bytes[..100]).unwrap();
    let e = l.finish().err().unwrap().to_string();
    assert!(e.contains("head.gguf"), "{e}");
    // more bytes than announced
    let mut s = GgufStream::new("long.gguf", 10);
    let e = s.push(&bytes[..11]).unwrap_err().to_string();
    assert!(e.contains("long.gguf") && e.contains("longer"), "{e}");
    // not a GGUF at all: refused as soon as the magic arrives, not after the whole download
    let mut junk = bytes.clone();
    junk[..4].copy_from_slice(b"GGUX");
    let mut l = StreamLoader::new(Cpu::EXACT, "junk.gguf", junk.len() as u64);
    let e = l.push(&junk[..1 << 16]).unwrap_err().to_string();
    assert!(e.contains("junk.gguf") && e.contains("magic"), "{e}");
    // announced length shorter than the tensors the header declares
    let mut l = StreamLoader::new(Cpu::EXACT, "short.gguf", (bytes.len() - 1000) as u64);
    let e = l.push(&bytes[..bytes.len() - 1000]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("short.gguf") && e.contains("past the end"), "{e}");
}
