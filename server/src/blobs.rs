//! Content-addressed blobs through `object_store`: a local directory by default (fsync on), any
//! S3-compatible store by URL. Uploads are first staged in a local temporary file while being hashed,
//! fsynced, validated, and only then copied into the store under `sha256/<2 hex>/<64 hex>`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::registry::{Error, Result};

/// Files up to this size go to the store in one request; larger ones as a multipart upload.
const SINGLE_PUT_MAX: u64 = 8 << 20;
/// Slice size when sending a local blob to a client (object_store's own reads are 8 KiB).
const SEND_CHUNK: usize = 1 << 20;

pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Where uploads are staged (always local: it must survive only until commit).
    tmp: PathBuf,
    pub description: String,
}

/// An upload staged on local disk: hashed and fsynced. The file is removed when this is dropped.
pub struct Staged {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn key(sha: &str) -> StorePath {
    StorePath::from(format!("sha256/{}/{sha}", &sha[..2]))
}

/// A local file streamed as response body chunks.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

impl Blobs {
    /// `url`: `None` or `file:///dir` for a local directory, `s3://bucket/prefix` for S3-compatible stores
    /// (credentials, region and endpoint from the usual `AWS_*` environment variables).
    pub fn open(data_dir: &Path, url: Option<&str>) -> anyhow::Result<Self> {
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| anyhow::anyhow!("creating {}: {e}", tmp.display()))?;
        let (store, description): (Arc<dyn ObjectStore>, String) = match url {
            None => local(&data_dir.join("blobs"))?,
            Some(u) => {
                let parsed = url::Url::parse(u).map_err(|e| anyhow::anyhow!("--blob-url {u}: {e}"))?;
                match parsed.scheme() {
                    "file" => {
                        let p =
                            parsed.to_file_path().map_err(|_| anyhow::anyhow!("--blob-url {u}: not a local path"))?;
                        local(&p)?
                    }
                    "s3" | "s3a" => {
                        let s3 = object_store::aws::AmazonS3Builder::from_env()
                            .with_url(u)
                            .build()
                            .map_err(|e| anyhow::anyhow!("--blob-url {u}: {e}"))?;
                        let prefix = parsed.path().trim_matches('/').to_string();
                        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                            Arc::new(s3)
                        } else {
                            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
                        };
                        (store, u.to_string())
                    }
                    s => anyhow::bail!("--blob-url {u}: unsupported scheme `{s}` (file:// or s3://)"),
                }
            }
        };
        Ok(Blobs { store, tmp, description })
    }

    /// Stream `chunks` into a new staged file, hashing as it goes; fsync before returning.
    pub async fn stage<S, E>(&self, chunks: S) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        Error: From<E>,
    {
        let mut chunks = std::pin::pin!(chunks);
        let name = format!("upload-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let mut staged = Staged { path: self.tmp.join(name), sha256: String::new(), size: 0 };
        let file = tokio::fs::File::create(&staged.path).await?;
        let mut w = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut h = Sha256::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            h.update(&chunk);
            staged.size += chunk.len() as u64;
            w.write_all(&chunk).await?;
        }
        w.flush().await?;
        w.into_inner().sync_all().await?;
        staged.sha256 = hex::encode(h.finalize());
        Ok(staged)
    }

    /// Copy a staged file into the store (skipped when the content is already there).
    pub async fn commit(&self, staged: &Staged) -> Result<()> {
        let k = key(&staged.sha256);
        if self.store.head(&k).await.is_ok() {
            return Ok(());
        }
        if staged.size <= SINGLE_PUT_MAX {
            let data = tokio::fs::read(&staged.path).await?;
            self.store.put(&k, PutPayload::from(data)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&k).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut f = tokio::fs::File::open(&staged.path).await?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok(())
    }

    /// The bytes `range` of a blob (all of it when `None`).
    pub async fn get(&self, sha: &str, range: Option<Range<u64>>) -> Result<BodyStream> {
        let opts = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
        let r = self.store.get_opts(&key(sha), opts).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Storage(format!("blob {sha} is missing from the store")),
            e => e.into(),
        })?;
        let range = r.range.clone();
        Ok(match r.payload {
            // Local files: map them and hand the pages to the socket in large slices, with no read
            // copies. Blobs are immutable and only ever unlinked, which leaves a mapping valid.
            GetResultPayload::File(file, _) => {
                // SAFETY: the file is a committed blob: never written again, never truncated.
                let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }?;
                if (map.len() as u64) < range.end {
                    return Err(Error::Storage(format!("blob {sha} is shorter than its record")));
                }
                let all = Bytes::from_owner(map);
                let (start, end) = (range.start as usize, range.end as usize);
                let chunks: Vec<std::io::Result<Bytes>> =
                    (start..end).step_by(SEND_CHUNK).map(|a| Ok(all.slice(a..(a + SEND_CHUNK).min(end)))).collect();
                Box::pin(futures::stream::iter(chunks))
            }
            GetResultPayload::Stream(s) => Box::pin(s.map_err(std::io::Error::other)),
        })
    }

    pub async fn delete(&self, sha: &str) -> Result<()> {
        match self.store.delete(&key(sha)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every blob's SHA-256.
    pub async fn list(&self) -> Result<Vec<String>> {
        let metas: Vec<_> = self.store.list(Some(&StorePath::from("sha256"))).try_collect().await?;
        Ok(metas.into_iter().filter_map(|m| m.location.filename().filter(|f| is_sha256(f)).map(String::from)).collect())
    }

    /// Remove staged uploads left by a previous process (killed mid-upload). Returns how many.
    pub fn sweep_tmp(&self) -> std::io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.tmp)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn local(dir: &Path) -> anyhow::Result<(Arc<dyn ObjectStore>, String)> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let fs = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| anyhow::anyhow!("opening blob directory {}: {e}", dir.display()))?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok((Arc::new(fs), dir.display().to_string()))
}
