//! An in-memory backend (`memory://`).
//!
//! Everything lives in process memory behind one mutex; clones share it.
//! Batches are atomic (validated in full, then applied under the lock), but
//! nothing survives the process. Blobs are buffered whole, so this backend
//! is for tests and small throwaway caches, not for gigabyte layers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use imagecache_core::{Digest, ImageId, Lease, LeaseId, MetadataKey, Reference, Timestamp};

mod blobs;
#[cfg(feature = "testing")]
mod harness;
mod images;

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
    stored: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<ImageId, ImageEntry>,
    quarantined: BTreeMap<ImageId, (ImageEntry, String)>,
    names: BTreeMap<Reference, ImageId>,
    leases: BTreeMap<LeaseId, Lease>,
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
