//! Prometheus text-format metrics: requests by route and status, latency histograms, bytes sent,
//! uploads by outcome, and registry sizes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    uploads: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, took: Duration) {
        *self.requests.lock().unwrap().entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        let mut lat = self.latency.lock().unwrap();
        let h = lat.entry(route.to_string()).or_default();
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.n += 1;
    }

    /// `kind`: "adapter" | "model"; `outcome`: "ok" or the error class.
    pub fn upload(&self, kind: &'static str, outcome: &'static str) {
        *self.uploads.lock().unwrap().entry((kind, outcome)).or_default() += 1;
    }

    pub fn add_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, models: i64, adapter_versions: i64) -> String {
        let mut o = String::new();
        o.push_str("# HELP vicugna_http_requests_total HTTP requests by method, route and status.\n");
        o.push_str("# TYPE vicugna_http_requests_total counter\n");
        for ((m, r, s), n) in self.requests.lock().unwrap().iter() {
            let _ =
                writeln!(o, "vicugna_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}", esc(r));
        }
        o.push_str("# HELP vicugna_http_request_duration_seconds Time to the response head, by route.\n");
        o.push_str("# TYPE vicugna_http_request_duration_seconds histogram\n");
        for (r, h) in self.latency.lock().unwrap().iter() {
            let r = esc(r);
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(o, "vicugna_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(o, "vicugna_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.n);
            let _ = writeln!(o, "vicugna_http_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(o, "vicugna_http_request_duration_seconds_count{{route=\"{r}\"}} {}", h.n);
        }
        o.push_str("# HELP vicugna_uploads_total Uploads by kind and outcome.\n# TYPE vicugna_uploads_total counter\n");
        for ((k, r), n) in self.uploads.lock().unwrap().iter() {
            let _ = writeln!(o, "vicugna_uploads_total{{kind=\"{k}\",outcome=\"{r}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP vicugna_bytes_sent_total File bytes sent to clients.\n# TYPE vicugna_bytes_sent_total counter"
        );
        let _ = writeln!(o, "vicugna_bytes_sent_total {}", self.bytes_sent.load(Ordering::Relaxed));
        let _ = writeln!(
            o,
            "# HELP vicugna_bytes_received_total Upload bytes staged.\n# TYPE vicugna_bytes_received_total counter"
        );
        let _ = writeln!(o, "vicugna_bytes_received_total {}", self.bytes_received.load(Ordering::Relaxed));
        let _ = writeln!(
            o,
            "# HELP vicugna_models Registered base models.\n# TYPE vicugna_models gauge\nvicugna_models {models}"
        );
        let _ = writeln!(
            o,
            "# HELP vicugna_adapter_versions Live adapter versions.\n# TYPE vicugna_adapter_versions gauge\nvicugna_adapter_versions {adapter_versions}"
        );
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
