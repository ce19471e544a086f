//! An in-memory backend (`memory://`).
//!
//! Everything lives in process memory behind one mutex; clones share it.
//! Batches are atomic (validated in full, then applied under the lock), but
//! nothing survives the process. Blobs are buffered whole, so this backend
//! is for tests and small throwaway caches, not for gigabyte layers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Content, Digest, Error,
    ImageId, Key, MetadataKey, Quarantined, Result, Snapshot, SnapshotEntry, StoreBackend,
    WriteBatch, WriteOp, validate_batch,
};

#[cfg(feature = "testing")]
mod harness;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::harness::MemoryHarness;

/// The URL scheme of this backend.
pub const SCHEME: &str = "memory";

#[derive(Debug, Default)]
struct ImageEntry {
    content: Bytes,
    metadata: BTreeMap<MetadataKey, Bytes>,
    summary: Option<Bytes>,
}

#[derive(Debug, Default)]
struct BlobEntry {
    data: Bytes,
    notes: BTreeMap<MetadataKey, Bytes>,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<ImageId, ImageEntry>,
    quarantined: BTreeMap<ImageId, (ImageEntry, String)>,
    blobs: BTreeMap<Digest, BlobEntry>,
}

/// A backend that keeps everything in memory. Clones share the same data.
///
/// ```
/// # tokio_test_block_on(async {
/// use imagecache_backends::MemoryBackend;
/// use imagecache_core::{StoreBackend, StoreBackendExt};
///
/// let backend = MemoryBackend::new();
/// let id = backend.put(bytes::Bytes::from_static(br#"{"rootfs":{}}"#)).await?;
/// assert_eq!(&backend.get(&id).await?[..], br#"{"rootfs":{}}"#);
/// # Ok::<(), imagecache_core::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl fmt::Display for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory://")
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated:
        // every mutation is validated before it starts. Keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the stored bytes of an image without any check, as a damaged
    /// disk would, for the conformance harness's damage hooks.
    #[cfg(feature = "testing")]
    pub(crate) fn insert_raw_content(&self, id: ImageId, data: Bytes) {
        self.lock().images.entry(id).or_default().content = data;
    }

    /// Replaces the stored bytes of a blob without any check.
    #[cfg(feature = "testing")]
    pub(crate) fn insert_raw_blob(&self, digest: Digest, data: Bytes) {
        self.lock().blobs.entry(digest).or_default().data = data;
    }

    /// Replaces one note of a stored blob without any check; `false` when
    /// the blob is absent.
    #[cfg(feature = "testing")]
    pub(crate) fn insert_raw_note(&self, digest: Digest, key: MetadataKey, data: Bytes) -> bool {
        match self.lock().blobs.get_mut(&digest) {
            Some(blob) => {
                blob.notes.insert(key, data);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl StoreBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_atomic_batch(true)
            .with_conditional_writes(true)
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut state = self.lock();
        validate_batch::<Error>(batch.ops(), |id| Ok(state.images.contains_key(id)))?;
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(content) => {
                    let id = content.id();
                    state.images.entry(id).or_default().content = content.into_data();
                }
                WriteOp::SetMetadata { id, key, value } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.metadata.insert(key, value);
                    }
                }
                WriteOp::DeleteMetadata { id, key } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.metadata.remove(&key);
                    }
                }
                WriteOp::SetSummary { id, summary } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.summary = Some(summary);
                    }
                }
                WriteOp::Delete { id } => {
                    state.images.remove(&id);
                }
                WriteOp::Quarantine { id, reason } => {
                    if let Some(e) = state.images.remove(&id) {
                        state.quarantined.insert(id, (e, reason));
                    }
                }
                // Every operation of this version of the contract is handled above.
                _ => {}
            }
        }
        Ok(())
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        let data = self
            .lock()
            .images
            .get(id)
            .map(|e| e.content.clone())
            .ok_or(Error::NotFound {
                key: Key::Image(*id),
            })?;
        Ok(Content::verify(*id, data)?.into_data())
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        let state = self.lock();
        let entry = state.images.get(id).ok_or(Error::NotFound {
            key: Key::Image(*id),
        })?;
        entry
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
        let state = self.lock();
        Ok(Snapshot {
            images: state
                .images
                .iter()
                .map(|(id, e)| SnapshotEntry {
                    id: *id,
                    metadata: e
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    summary: e.summary.clone(),
                })
                .collect(),
            quarantined: state
                .quarantined
                .iter()
                .map(|(id, (_, reason))| Quarantined {
                    name: id.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
        })
    }
}

#[async_trait]
impl BlobBackend for MemoryBackend {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        // Buffer outside the lock; publish only once the body has ended cleanly.
        let mut buf = BytesMut::new();
        let mut body = body;
        while let Some(chunk) = body.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        let data = buf.freeze();
        let size = data.len() as u64;
        let mut state = self.lock();
        let entry = state.blobs.entry(*digest).or_default();
        entry.data = data;
        Ok(BlobInfo {
            digest: *digest,
            size,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let data = self
            .lock()
            .blobs
            .get(digest)
            .map(|b| b.data.clone())
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })?;
        let size = data.len() as u64;
        // Hand the blob out in bounded chunks, as a streaming backend would.
        let chunks: Vec<Result<Bytes>> = (0..data.len())
            .step_by(1 << 20)
            .map(|start| Ok(data.slice(start..data.len().min(start + (1 << 20)))))
            .collect();
        Ok(BlobReader {
            size,
            stream: Box::pin(futures::stream::iter(chunks)),
        })
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        self.lock()
            .blobs
            .get(digest)
            .map(|b| BlobInfo {
                digest: *digest,
                size: b.data.len() as u64,
            })
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.lock().blobs.remove(digest);
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        Ok(self
            .lock()
            .blobs
            .iter()
            .map(|(d, b)| BlobInfo {
                digest: *d,
                size: b.data.len() as u64,
            })
            .collect())
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        let mut state = self.lock();
        let blob = state.blobs.get_mut(digest).ok_or(Error::NotFound {
            key: Key::Blob(*digest),
        })?;
        blob.notes.extend(notes);
        Ok(())
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        Ok(self
            .lock()
            .blobs
            .get(digest)
            .map(|b| {
                b.notes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        self.lock()
            .blobs
            .get(digest)
            .and_then(|b| b.notes.get(key).cloned())
            .ok_or_else(|| Error::NotFound {
                key: Key::BlobNote {
                    digest: *digest,
                    key: key.clone(),
                },
            })
    }
}
