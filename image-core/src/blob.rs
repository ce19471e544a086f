//! The blob contract: layers, manifests and the notes kept beside them.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::digest::Digest;
use crate::error::{Error, MetadataKey, Result};
use crate::time::Timestamp;
use crate::usage::Usage;

/// A stream of bytes, as blobs are read and written.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Size and digest of a stored blob.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct BlobInfo {
    /// The digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// An open blob: its size and a stream of its bytes.
pub struct BlobReader {
    /// Size in bytes, as stored.
    pub size: u64,
    /// The bytes.
    pub stream: ByteStream,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The notes of one blob: small values by key, sorted by key.
pub type BlobNotes = Vec<(MetadataKey, Bytes)>;

/// Storage for blobs (layers, configs, manifests) by digest, with small
/// notes beside each.
///
/// This is the blob half of a backend; [`StoreBackend`](crate::StoreBackend)
/// is the image half. A backend may implement either or both, and a wrapper
/// (a fault injector, a metrics layer) wraps each on its own.
///
/// # Contract
///
/// * **Published whole.** A blob becomes visible only when its body has
///   ended without error; a reader sees no blob or all of it, even while
///   puts of the same digest race.
/// * **Not verified here.** The caller hashes bytes on the way in (the body
///   ends with an error on mismatch) and on the way out; the backend stores
///   and serves bytes. Digests arrive validated ([`Digest`]), so a backend
///   never builds a path or key from unchecked text.
/// * **Notes are advisory** and belong to their blob: they need the blob to
///   exist when written and go when it is deleted.
/// * **Enumerable without reading content**: [`BlobBackend::list_blobs`] and
///   [`BlobBackend::blob_notes`] let a collector see every blob and what
///   its notes say without reading a byte of any blob or image config.
/// * **Deletes are idempotent**: removing something missing is `Ok`.
///
/// # Behavior
///
/// Each bullet is a conformance case of the same name (group `blobs`).
///
/// * `blob_put_get_roundtrips` — a blob streams back byte for byte with its size.
/// * `blob_failed_stream_stores_nothing` — a body that errors leaves no blob visible.
/// * `blob_missing_is_not_found` — head/get of an unknown blob is `NotFound`.
/// * `blob_delete_is_idempotent` — deleting twice succeeds; notes go with the blob.
/// * `blob_notes_roundtrip` — notes read back per (blob, key).
/// * `blob_notes_in_one_call` — every note of a put is written by one call and listed back sorted.
/// * `blob_list_reports_sizes` — listing reports every blob with its size.
/// * `blob_concurrent_puts_are_idempotent` — racing puts of one digest leave one whole blob.
#[async_trait::async_trait]
pub trait BlobBackend: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Stores a blob from a stream, making it visible only once the stream
    /// has ended without error.
    ///
    /// The caller verifies the digest as bytes pass (the stream yields an
    /// error at its end on mismatch); if the stream yields any error, the
    /// backend discards what it wrote and returns that error. Storing a
    /// digest that already exists may skip the body and succeed.
    ///
    /// # Errors
    /// The stream's error; storage failures.
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo>;

    /// Whether this backend already records spans and metrics for its
    /// calls ([`Instrumented`](crate::instrument::Instrumented) says yes),
    /// so that it is not wrapped twice. Other backends keep the default.
    fn is_instrumented(&self) -> bool {
        false
    }

    /// Opens a blob for reading. The bytes are not verified here.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::Blob`](crate::Key::Blob).
    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader>;

    /// Size of a blob.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::Blob`](crate::Key::Blob).
    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo>;

    /// Removes a blob and its notes; a missing blob is not an error.
    async fn delete_blob(&self, digest: &Digest) -> Result<()>;

    /// Every stored blob, sorted by digest.
    async fn list_blobs(&self) -> Result<Vec<BlobInfo>>;

    /// Sets several notes of one blob in one call (for example every note
    /// a layer put records), replacing notes of the same keys and keeping
    /// the others. The blob must exist. An empty list writes nothing and
    /// succeeds, whether or not the blob exists.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::Blob`](crate::Key::Blob) when the blob
    /// is absent and there are notes to write.
    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()>;

    /// Reads a note.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::BlobNote`](crate::Key::BlobNote).
    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes>;

    /// Every note of a blob, sorted by key; empty when it has none or the
    /// blob is absent.
    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes>;

    /// Space held by unfinished writes: puts in progress, and what writers
    /// that are gone (killed, interrupted) left behind, which this call
    /// reclaims. The default reports nothing, for backends whose unfinished
    /// writes take no space or are cleaned up by the store itself.
    async fn scratch(&self) -> Result<Scratch> {
        Ok(Scratch::default())
    }

    /// Every blob with when it was stored, where the backend knows (a
    /// file's modification time, an object's last-modified, a recorded put
    /// time); a garbage collector keeps blobs younger than its grace
    /// period. The default lists [`BlobBackend::list_blobs`] with no times,
    /// and a collector treats a blob of unknown age as old.
    async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        Ok(self
            .list_blobs()
            .await?
            .into_iter()
            .map(|b| (b, None))
            .collect())
    }

    /// The space blobs, notes and unfinished writes occupy, in real bytes
    /// ([`Usage`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] from the default, for backends that cannot
    /// measure it; storage failures.
    async fn blob_usage(&self) -> Result<Usage> {
        Err(Error::Unsupported {
            operation: "blob_usage",
            backend: "this",
        })
    }
}

/// What [`BlobBackend::scratch`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scratch {
    /// Unfinished writes whose writer is still at work.
    pub in_progress: u32,
    /// Bytes they hold.
    pub in_progress_bytes: u64,
    /// Leftovers of writers that are gone, removed by this call.
    pub reclaimed: u32,
    /// Bytes they held.
    pub reclaimed_bytes: u64,
}

/// A blob backend behind a pointer.
pub type DynBlobBackend = dyn BlobBackend;

macro_rules! forward_blob_backend {
    ($ptr:ident) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: BlobBackend + ?Sized> BlobBackend for $ptr<T> {
            fn is_instrumented(&self) -> bool {
                (**self).is_instrumented()
            }
            async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
                (**self).put_blob(digest, body).await
            }
            async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
                (**self).get_blob(digest).await
            }
            async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
                (**self).head_blob(digest).await
            }
            async fn delete_blob(&self, digest: &Digest) -> Result<()> {
                (**self).delete_blob(digest).await
            }
            async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
                (**self).list_blobs().await
            }
            async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
                (**self).set_blob_notes(digest, notes).await
            }
            async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
                (**self).get_blob_note(digest, key).await
            }
            async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
                (**self).blob_notes(digest).await
            }
            async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
                (**self).list_blob_times().await
            }
            async fn blob_usage(&self) -> Result<Usage> {
                (**self).blob_usage().await
            }
            async fn scratch(&self) -> Result<Scratch> {
                (**self).scratch().await
            }
        }
    };
}

forward_blob_backend!(Arc);
forward_blob_backend!(Box);

/// Conveniences over [`BlobBackend`], for every blob backend.
#[async_trait::async_trait]
pub trait BlobBackendExt: BlobBackend {
    /// Sets one note.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::Blob`](crate::Key::Blob) when the blob
    /// is absent.
    async fn set_blob_note(&self, digest: &Digest, key: &MetadataKey, value: Bytes) -> Result<()> {
        self.set_blob_notes(digest, vec![(key.clone(), value)])
            .await
    }

    /// Stores a blob held in memory, verifying its digest first.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`] when `data` does not hash to `digest`.
    async fn put_blob_bytes(&self, digest: &Digest, data: Bytes) -> Result<BlobInfo> {
        let mut h = digest.hasher();
        h.update(&data);
        let actual = h.finish();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(data) }));
        self.put_blob(digest, body).await
    }

    /// Reads a whole blob into memory (unverified).
    async fn get_blob_bytes(&self, digest: &Digest) -> Result<Bytes> {
        use futures::TryStreamExt as _;
        let reader = self.get_blob(digest).await?;
        let capacity = usize::try_from(reader.size).unwrap_or(0);
        let mut out = Vec::with_capacity(capacity);
        let mut stream = reader.stream;
        while let Some(chunk) = stream.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }
}

impl<T: BlobBackend + ?Sized> BlobBackendExt for T {}

/// Sorts notes by key and keeps the last value given for each key, the
/// order [`BlobBackend::set_blob_notes`] applies them in.
pub fn normalize_notes(mut notes: BlobNotes) -> BlobNotes {
    // A stable sort keeps equal keys in the caller's order, so the last
    // value written for a key is the one kept, as sequential writes would.
    notes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: BlobNotes = Vec::with_capacity(notes.len());
    for (key, value) in notes {
        match out.last_mut() {
            Some(last) if last.0 == key => last.1 = value,
            _ => out.push((key, value)),
        }
    }
    out
}
