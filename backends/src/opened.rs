//! What [`open`](crate::open) returns: the two halves of one storage.

use std::fmt;
use std::sync::Arc;

use imagecache_core::{BlobBackend, StoreBackend};

/// One storage location opened from a URL: its image backend and its blob
/// backend, which share the location (and, for redb, the open database).
///
/// Clones share everything.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use imagecache_core::{BlobBackendExt as _, Digest, StoreBackendExt as _};
///
/// let backend = imagecache_backends::open("memory://").await?;
/// let id = backend.images().put(bytes::Bytes::from_static(br#"{"rootfs":{}}"#)).await?;
/// let layer = bytes::Bytes::from_static(b"a layer");
/// backend.blobs().put_blob_bytes(&Digest::sha256(&layer), layer).await?;
/// assert_eq!(backend.blobs().list_blobs().await?.len(), 1);
/// # let _ = id;
/// # Ok::<(), imagecache_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Backend {
    images: Arc<dyn StoreBackend>,
    blobs: Arc<dyn BlobBackend>,
}

impl Backend {
    /// Both halves of a backend that implements both traits.
    pub fn new<B: StoreBackend + BlobBackend + Clone>(backend: B) -> Self {
        Self {
            images: Arc::new(backend.clone()),
            blobs: Arc::new(backend),
        }
    }

    /// Two halves given apart, for example each behind its own wrapper.
    pub fn from_parts(images: Arc<dyn StoreBackend>, blobs: Arc<dyn BlobBackend>) -> Self {
        Self { images, blobs }
    }

    /// The image backend, for an image store.
    pub fn images(&self) -> Arc<dyn StoreBackend> {
        Arc::clone(&self.images)
    }

    /// The blob backend, for a blob cache.
    pub fn blobs(&self) -> Arc<dyn BlobBackend> {
        Arc::clone(&self.blobs)
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("images", &format_args!("{}", self.images))
            .field("blobs", &format_args!("{}", self.blobs))
            .finish()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.images, f)
    }
}
