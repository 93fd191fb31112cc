//! In-memory caches for what downloads read most: immutable metadata (a model, a live adapter version,
//! an adapter's JSON answer) and small blobs. Published bytes never change, so a blob needs no
//! invalidation; metadata changes only when a version is published or deleted, and a generation counter
//! keeps a reader that raced a writer from caching what the writer just changed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;

use crate::db::{ModelRow, VersionRow};

/// Blobs up to this size are kept in memory once read.
pub const SMALL_BLOB: u64 = 4 << 20;
/// Total bytes of small blobs kept.
const BLOB_BUDGET: u64 = 256 << 20;

#[derive(Default)]
pub struct Cache {
    generation: AtomicU64,
    models: RwLock<HashMap<String, ModelRow>>,
    versions: RwLock<HashMap<(String, String), VersionRow>>,
    adapters: RwLock<HashMap<String, Bytes>>,
    blobs: Mutex<Blobs>,
}

#[derive(Default)]
struct Blobs {
    map: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: u64,
}

impl Cache {
    /// Read before querying the database; pass to `put_*` so a stale answer is not cached.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After a database change to adapter `name`: forget what may be stale.
    pub fn invalidate_adapter(&self, name: &str, version: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.adapters.write().unwrap().remove(name);
        self.versions.write().unwrap().remove(&(name.to_string(), version.to_string()));
    }

    pub fn model(&self, id: &str) -> Option<ModelRow> {
        self.models.read().unwrap().get(id).cloned()
    }
    pub fn put_model(&self, m: &ModelRow) {
        // Models are never changed or deleted once registered.
        self.models.write().unwrap().insert(m.id.clone(), m.clone());
    }

    pub fn version(&self, name: &str, version: &str) -> Option<VersionRow> {
        self.versions.read().unwrap().get(&(name.to_string(), version.to_string())).cloned()
    }
    pub fn put_version(&self, generation: u64, v: &VersionRow) {
        let mut map = self.versions.write().unwrap();
        if self.generation() == generation {
            map.insert((v.name.clone(), v.version.clone()), v.clone());
        }
    }

    pub fn adapter_json(&self, name: &str) -> Option<Bytes> {
        self.adapters.read().unwrap().get(name).cloned()
    }
    pub fn put_adapter_json(&self, generation: u64, name: &str, json: Bytes) {
        let mut map = self.adapters.write().unwrap();
        if self.generation() == generation {
            map.insert(name.to_string(), json);
        }
    }

    pub fn blob(&self, sha: &str) -> Option<Bytes> {
        self.blobs.lock().unwrap().map.get(sha).cloned()
    }
    pub fn put_blob(&self, sha: &str, data: Bytes) {
        if data.len() as u64 > SMALL_BLOB {
            return;
        }
        let mut b = self.blobs.lock().unwrap();
        if b.map.contains_key(sha) {
            return;
        }
        while b.bytes + data.len() as u64 > BLOB_BUDGET {
            let Some(old) = b.order.pop_front() else { break };
            if let Some(d) = b.map.remove(&old) {
                b.bytes -= d.len() as u64;
            }
        }
        b.bytes += data.len() as u64;
        b.order.push_back(sha.to_string());
        b.map.insert(sha.to_string(), data);
    }
    pub fn forget_blob(&self, sha: &str) {
        let mut b = self.blobs.lock().unwrap();
        if let Some(d) = b.map.remove(sha) {
            b.bytes -= d.len() as u64;
            b.order.retain(|s| s != sha);
        }
    }
}
