//! The CPU backend's worker threads: one rayon pool per backend (per `--threads N`), a matmul's
//! output rows split over it in contiguous ranges. With one thread there is no pool and nothing
//! to synchronise: the calling thread runs every range itself.

use std::ops::Range;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Threads(Option<Arc<Pool>>);

#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
struct Pool {
    pool: rayon::ThreadPool,
    n: usize,
}

#[cfg(target_arch = "wasm32")]
#[derive(Debug)]
struct Pool {
    n: usize,
}

impl Threads {
    /// The calling thread alone.
    pub const ONE: Threads = Threads(None);

    /// `n` worker threads (0 or 1: the calling thread alone). The browser build has no threads.
    pub fn new(n: usize) -> crate::Result<Threads> {
        #[cfg(not(target_arch = "wasm32"))]
        if n > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("vicugna-cpu-{i}"))
                .build()
                .map_err(|e| crate::Error::Device(format!("starting {n} CPU threads: {e}")))?;
            return Ok(Threads(Some(Arc::new(Pool { pool, n }))));
        }
        let _ = n;
        Ok(Threads::ONE)
    }

    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(1, |p| p.n)
    }

    /// The machine's physical cores (the default thread count): SMT siblings share one core's
    /// execution units, so a second thread per core mostly waits for the first.
    pub fn physical_cores() -> usize {
        #[cfg(not(target_arch = "wasm32"))]
        {
            num_cpus::get_physical().max(1)
        }
        #[cfg(target_arch = "wasm32")]
        {
            1
        }
    }

    /// Call `f` on contiguous ranges covering `0..rows`, at least `min_chunk` rows each (fewer in
    /// the last), in parallel on the pool; on this thread, as one range, without one.
    pub fn for_rows(&self, rows: usize, min_chunk: usize, f: impl Fn(Range<usize>) + Sync + Send) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(p) = &self.0 {
            // a few ranges per thread, so an unlucky one (a page fault, the other SMT sibling)
            // does not hold the whole matmul up
            // ranges start at multiples of `min_chunk`, so a kernel's row groups fall the same way
            // on any thread count
            let chunk = rows.div_ceil(4 * p.n).max(min_chunk).next_multiple_of(min_chunk.max(1));
            if chunk < rows {
                use rayon::prelude::*;
                p.pool.install(|| {
                    (0..rows.div_ceil(chunk)).into_par_iter().for_each(|c| f(c * chunk..((c + 1) * chunk).min(rows)))
                });
                return;
            }
        }
        let _ = min_chunk;
        f(0..rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges_cover_every_row_once_on_any_thread_count() {
        for n in [1, 2, 3, 8] {
            let t = Threads::new(n).unwrap();
            assert_eq!(t.count(), n);
            for rows in [0, 1, 15, 16, 17, 1000, 4099] {
                let seen: Vec<AtomicUsize> = (0..rows).map(|_| AtomicUsize::new(0)).collect();
                t.for_rows(rows, 16, |r| {
                    assert!(r.len() >= 16 || r.end == rows, "{n} threads, {rows} rows: range {r:?}");
                    r.for_each(|i| {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "{n} threads, {rows} rows");
            }
        }
    }
}
