//! Shared helpers for Vicugna's golden tests: fixture paths, reference loading and one
//! `assert_close` that reports the first bad index, the max difference and a few pairs.

use std::path::PathBuf;
use vicugna_core::bytes::map_file;
use vicugna_core::weights::SafetensorsFile;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

pub fn safetensors(rel: &str) -> SafetensorsFile {
    let p = fixture(rel);
    SafetensorsFile::from_bytes(map_file(&p).expect("fixture present"), &p.display().to_string())
        .expect("fixture parses")
}

pub fn tensor(st: &SafetensorsFile, name: &str) -> Vec<f32> {
    st.f32(name).unwrap_or_else(|e| panic!("{e}")).0
}

pub fn ids(st: &SafetensorsFile, name: &str) -> Vec<u32> {
    st.i64(name).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|v| v as u32).collect()
}

/// Max |a - e| over all elements.
pub fn max_abs_diff(a: &[f32], e: &[f32]) -> f32 {
    assert_eq!(a.len(), e.len(), "length mismatch");
    a.iter().zip(e).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// Passes when |a - e| <= atol + rtol * |e| everywhere (NaN never passes; matching infinities do).
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "length mismatch: {} vs {}", actual.len(), expected.len());
    let bad = |a: f32, e: f32| !(a == e || (a - e).abs() <= atol + rtol * e.abs());
    if let Some(first) = actual.iter().zip(expected).position(|(&a, &e)| bad(a, e)) {
        let max = actual
            .iter()
            .zip(expected)
            .filter(|(a, e)| a.is_finite() && e.is_finite())
            .map(|(a, e)| (a - e).abs())
            .fold(0f32, f32::max);
        let n_bad = actual.iter().zip(expected).filter(|(&a, &e)| bad(a, e)).count();
        let pairs: Vec<String> =
            (first..(first + 4).min(actual.len())).map(|i| format!("[{i}] {} vs {}", actual[i], expected[i])).collect();
        panic!(
            "not close (atol {atol}, rtol {rtol}): {n_bad} of {} bad, first at {first}, max |diff| {max}; {}",
            actual.len(),
            pairs.join(", ")
        );
    }
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}
