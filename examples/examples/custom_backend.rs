//! Writing your own backend and certifying it with the conformance suite.
//!
//! `LoggingMap` below is a complete `StoreBackend` and `BlobBackend` built on a `HashMap`
//! that counts every call it receives. It uses nothing but the public API
//! of `imagecache-core`, exactly as a backend in your own crate would (on
//! Postgres, SQLite, GCS, …). `main` runs every conformance case against it
//! and prints the per-case table; the same harness drives the test below,
//! so `cargo test --example custom_backend` certifies it too.
//!
//! ```sh
//! cargo run --example custom_backend
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use imagecache_conformance::{
    CaseStatus, Damage, Fixture, Harness, HookError, HookResult, RunOptions,
};
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Content, Digest, Error,
    ImageId, Key, Lease, LeaseId, MetadataKey, Quarantined, Reference, Result, Snapshot,
    SnapshotEntry, StoreBackend, WriteBatch, WriteOp, validate_batch,
};

#[derive(Default)]
struct Image {
    content: Bytes,
    metadata: BTreeMap<MetadataKey, Bytes>,
    summary: Option<Bytes>,
}

#[derive(Default)]
struct Data {
    images: HashMap<ImageId, Image>,
    quarantined: BTreeMap<ImageId, String>,
    names: BTreeMap<Reference, ImageId>,
    // A `BTreeMap` keeps leases sorted by ID, as the contract asks.
    leases: BTreeMap<LeaseId, Lease>,
    blobs: HashMap<Digest, (Bytes, BTreeMap<MetadataKey, Bytes>)>,
}

/// A backend on a `HashMap`, counting the calls it serves.
#[derive(Clone, Default)]
struct LoggingMap {
    data: Arc<Mutex<Data>>,
    calls: Arc<AtomicU64>,
}

impl fmt::Debug for LoggingMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LoggingMap({} calls)",
            self.calls.load(Ordering::Relaxed)
        )
    }
}

impl fmt::Display for LoggingMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("logging-map://")
    }
}

impl LoggingMap {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn missing(id: ImageId) -> Error {
    Error::NotFound {
        key: Key::Image(id),
    }
}

#[async_trait::async_trait]
impl StoreBackend for LoggingMap {
    fn capabilities(&self) -> Capabilities {
        // Batches are applied under one lock after validation, so they are
        // atomic; nothing is persistent.
        Capabilities::none().with_atomic_batch(true)
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut data = self.data();
        // The contract's one validation rule, shared by every backend: an
        // image must exist (before, or earlier in the batch) for metadata,
        // summaries, names and quarantine. Nothing is written if it fails.
        validate_batch::<Error>(batch.ops(), |id| Ok(data.images.contains_key(id)))?;
        // `WriteOp` may grow in a later version of the contract: refuse what
        // this backend does not know before applying anything, rather than
        // drop it silently.
        if let Some(op) = batch.ops().iter().find(|op| !known(op)) {
            return Err(Error::Unsupported {
                operation: op.name(),
                backend: "logging-map",
            });
        }
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(c) => {
                    let id = c.id();
                    data.images.entry(id).or_default().content = c.into_data();
                }
                WriteOp::SetMetadata { id, key, value } => {
                    if let Some(i) = data.images.get_mut(&id) {
                        i.metadata.insert(key, value);
                    }
                }
                WriteOp::DeleteMetadata { id, key } => {
                    if let Some(i) = data.images.get_mut(&id) {
                        i.metadata.remove(&key);
                    }
                }
                WriteOp::SetSummary { id, summary } => {
                    if let Some(i) = data.images.get_mut(&id) {
                        i.summary = Some(summary);
                    }
                }
                // An image's names go with it.
                WriteOp::Delete { id } => {
                    data.images.remove(&id);
                    data.names.retain(|_, target| *target != id);
                }
                WriteOp::Quarantine { id, reason } => {
                    data.images.remove(&id);
                    data.quarantined.insert(id, reason);
                    data.names.retain(|_, target| *target != id);
                }
                WriteOp::SetName { name, id } => {
                    data.names.insert(name, id);
                }
                WriteOp::DeleteName { name } => {
                    data.names.remove(&name);
                }
                // A lease is kept as given, whatever it holds and whether
                // or not it has expired; deleting an image leaves it alone.
                WriteOp::SetLease(lease) => {
                    data.leases.insert(lease.id.clone(), lease);
                }
                WriteOp::DeleteLease { id } => {
                    data.leases.remove(&id);
                }
                // Refused above.
                _ => {}
            }
        }
        Ok(())
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        let bytes = self
            .data()
            .images
            .get(id)
            .map(|i| i.content.clone())
            .ok_or_else(|| missing(*id))?;
        Ok(Content::verify(*id, bytes)?.into_data())
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        let data = self.data();
        let image = data.images.get(id).ok_or_else(|| missing(*id))?;
        image
            .metadata
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                key: Key::Metadata {
                    id: *id,
                    key: key.clone(),
                },
            })
    }

    async fn load(&self) -> Result<Snapshot> {
        let data = self.data();
        let mut images: Vec<SnapshotEntry> = data
            .images
            .iter()
            .map(|(id, i)| SnapshotEntry {
                id: *id,
                metadata: i
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                summary: i.summary.clone(),
            })
            .collect();
        images.sort_by_key(|e| e.id);
        Ok(Snapshot {
            images,
            quarantined: data
                .quarantined
                .iter()
                .map(|(id, reason)| Quarantined {
                    name: id.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
            // A `BTreeMap` keeps names sorted, as the contract asks.
            names: data
                .names
                .iter()
                .map(|(name, id)| (name.clone(), *id))
                .collect(),
            leases: data.leases.values().cloned().collect(),
        })
    }

    // The default reads a whole load; a backend lists its leases alone.
    async fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self.data().leases.values().cloned().collect())
    }
}

/// Whether this backend knows the operation.
fn known(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::Put(_)
            | WriteOp::SetMetadata { .. }
            | WriteOp::DeleteMetadata { .. }
            | WriteOp::SetSummary { .. }
            | WriteOp::Delete { .. }
            | WriteOp::Quarantine { .. }
            | WriteOp::SetName { .. }
            | WriteOp::DeleteName { .. }
            | WriteOp::SetLease(_)
            | WriteOp::DeleteLease { .. }
    )
}

#[async_trait::async_trait]
impl BlobBackend for LoggingMap {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        let mut buf = BytesMut::new();
        let mut body = body;
        while let Some(chunk) = body.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        let size = buf.len() as u64;
        let mut data = self.data();
        let entry = data.blobs.entry(*digest).or_default();
        entry.0 = buf.freeze();
        Ok(BlobInfo {
            digest: *digest,
            size,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let bytes = self
            .data()
            .blobs
            .get(digest)
            .map(|b| b.0.clone())
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })?;
        Ok(BlobReader {
            size: bytes.len() as u64,
            stream: Box::pin(futures::stream::iter([Ok(bytes)])),
        })
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        self.data()
            .blobs
            .get(digest)
            .map(|b| BlobInfo {
                digest: *digest,
                size: b.0.len() as u64,
            })
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.data().blobs.remove(digest);
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let mut all: Vec<BlobInfo> = self
            .data()
            .blobs
            .iter()
            .map(|(d, b)| BlobInfo {
                digest: *d,
                size: b.0.len() as u64,
            })
            .collect();
        all.sort();
        Ok(all)
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        let mut data = self.data();
        let blob = data.blobs.get_mut(digest).ok_or(Error::NotFound {
            key: Key::Blob(*digest),
        })?;
        blob.1.extend(notes);
        Ok(())
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        Ok(self
            .data()
            .blobs
            .get(digest)
            .map(|b| b.1.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        self.data()
            .blobs
            .get(digest)
            .and_then(|b| b.1.get(key).cloned())
            .ok_or_else(|| Error::NotFound {
                key: Key::BlobNote {
                    digest: *digest,
                    key: key.clone(),
                },
            })
    }
}

/// How the suite gets fresh `LoggingMap`s: a harness hands out fixtures,
/// one fresh map each.
struct MapHarness;

#[async_trait::async_trait]
impl Harness for MapHarness {
    async fn fixture(&self) -> Box<dyn Fixture> {
        Box::new(MapFixture(LoggingMap::default()))
    }
}

/// One map under test. A "second handle" on the same data is a clone;
/// damage is done by writing the maps directly, below every check.
#[derive(Clone)]
struct MapFixture(LoggingMap);

#[async_trait::async_trait]
impl Fixture for MapFixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.0.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.0.clone()))
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        Some(Box::new(self.clone()))
    }

    fn damage(&self) -> Damage {
        Damage::all()
    }

    // Each hook damages what is stored and fails for what is not, as the
    // `Fixture` docs ask.
    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        let mut map = self.0.data();
        let image = map
            .images
            .get_mut(id)
            .ok_or_else(|| absent("corrupt_config", id))?;
        image.content = data;
        Ok(())
    }

    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        let mut map = self.0.data();
        let blob = map
            .blobs
            .get_mut(digest)
            .ok_or_else(|| absent("corrupt_blob", digest))?;
        blob.0 = data;
        Ok(())
    }

    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        let mut map = self.0.data();
        let blob = map
            .blobs
            .get_mut(digest)
            .ok_or_else(|| absent("corrupt_note", digest))?;
        blob.1.insert(key.clone(), data);
        Ok(())
    }
}

fn absent(hook: &'static str, what: &dyn std::fmt::Display) -> HookError {
    HookError::failed(hook, format!("{what} is not stored"))
}

async fn certify() -> imagecache_conformance::Report {
    imagecache_conformance::run_with(Arc::new(MapHarness), &RunOptions::new()).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = certify().await;
    for r in &report.results {
        let status = match &r.status {
            CaseStatus::Passed => "pass".to_owned(),
            CaseStatus::Failed { reason } => format!("FAIL  {reason}"),
            CaseStatus::Skipped { reason } => format!("skip  ({reason})"),
            _ => "?".to_owned(),
        };
        println!("{:<8} {:<48} {status}", r.group, r.name);
    }
    println!("{}", report.summary_line());
    anyhow::ensure!(report.failed() == 0, "the backend is not conformant");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logging_map_passes_the_whole_suite() {
        let report = super::certify().await;
        assert_eq!(
            report.failed(),
            0,
            "{:?}",
            report.failures().collect::<Vec<_>>()
        );
        assert_eq!(report.skipped(), 0, "every hook is implemented");
    }
}
