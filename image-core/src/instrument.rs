//! Spans and metrics for every backend call.
//!
//! [`Instrumented`] wraps any [`StoreBackend`] or [`BlobBackend`] — ours or
//! yours — and, around each call, opens a `debug` span named `backend` with
//! the backend and the operation as fields, and records through the
//! [`metrics`] facade:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`BACKEND_CALLS`] | counter | `op` |
//! | [`BACKEND_ERRORS`] | counter | `op`, `kind` (the [`Error::kind_name`]; "not found" is an answer, not an error, and is not counted) |
//! | [`BACKEND_SECONDS`] | histogram | `op` |
//! | [`BLOB_BYTES_PUT`] | counter | |
//!
//! `imagecache_store::Store` and `imagecache_engine::blob::BlobCache` wrap
//! the backends they are given, so nothing is needed to get these. Without
//! a `tracing` subscriber and a `metrics` recorder installed (the library
//! installs neither), each costs a few atomic loads per call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument as _;

use crate::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Compaction, Digest,
    Error, ImageId, Lease, MetadataKey, Result, Scratch, Snapshot, StoreBackend, Timestamp, Usage,
    WriteBatch,
};

/// Counter of backend calls, by `op`.
pub const BACKEND_CALLS: &str = "imagecache_backend_calls_total";
/// Counter of failed backend calls, by `op` and error `kind`.
pub const BACKEND_ERRORS: &str = "imagecache_backend_errors_total";
/// Histogram of backend call durations in seconds, by `op`.
pub const BACKEND_SECONDS: &str = "imagecache_backend_call_seconds";
/// Counter of blob bytes accepted by `put_blob` (a blob already stored
/// counts whole, though a backend may skip its body).
pub const BLOB_BYTES_PUT: &str = "imagecache_blob_bytes_put_total";

/// A backend whose calls are traced and measured; see the [module
/// docs](self).
pub struct Instrumented<B: ?Sized> {
    inner: Arc<B>,
}

impl<B: ?Sized> Instrumented<B> {
    /// Wraps a backend.
    pub fn new(inner: Arc<B>) -> Self {
        Self { inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }
}

impl<B: ?Sized + fmt::Debug> fmt::Debug for Instrumented<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<B: ?Sized + fmt::Display> fmt::Display for Instrumented<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Wraps a store backend, unless it is wrapped already.
pub fn instrument_store(backend: Arc<dyn StoreBackend>) -> Arc<dyn StoreBackend> {
    if backend.is_instrumented() {
        backend
    } else {
        Arc::new(Instrumented::new(backend))
    }
}

/// Wraps a blob backend, unless it is wrapped already.
pub fn instrument_blobs(backend: Arc<dyn BlobBackend>) -> Arc<dyn BlobBackend> {
    if backend.is_instrumented() {
        backend
    } else {
        Arc::new(Instrumented::new(backend))
    }
}

/// Runs one backend call inside its span and records its metrics.
async fn measured<T>(
    backend: &(impl fmt::Display + ?Sized),
    op: &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!("backend", backend = %backend, op);
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    metrics::counter!(BACKEND_CALLS, "op" => op).increment(1);
    metrics::histogram!(BACKEND_SECONDS, "op" => op).record(seconds);
    match &result {
        Err(e) if !e.is_not_found() => {
            let kind = e.kind_name();
            metrics::counter!(BACKEND_ERRORS, "op" => op, "kind" => kind).increment(1);
            span.in_scope(|| tracing::debug!(kind, error = %e, seconds, "backend call failed"));
        }
        _ => span.in_scope(|| tracing::debug!(seconds, "backend call")),
    }
    result
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl StoreBackend for Instrumented<dyn StoreBackend> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn is_instrumented(&self) -> bool {
        true
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let ops = batch.len();
        let call = self.inner.write(batch);
        measured(
            &*self.inner,
            "write",
            call.instrument(tracing::trace_span!("batch", ops)),
        )
        .await
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        measured(&*self.inner, "get", self.inner.get(id)).await
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        measured(
            &*self.inner,
            "get_metadata",
            self.inner.get_metadata(id, key),
        )
        .await
    }

    async fn load(&self) -> Result<Snapshot> {
        measured(&*self.inner, "load", self.inner.load()).await
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        measured(&*self.inner, "leases", self.inner.leases()).await
    }

    async fn usage(&self) -> Result<Usage> {
        measured(&*self.inner, "usage", self.inner.usage()).await
    }

    async fn compact(&self) -> Result<Option<Compaction>> {
        measured(&*self.inner, "compact", self.inner.compact()).await
    }
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl BlobBackend for Instrumented<dyn BlobBackend> {
    fn is_instrumented(&self) -> bool {
        true
    }

    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        let info = measured(&*self.inner, "put_blob", self.inner.put_blob(digest, body)).await?;
        metrics::counter!(BLOB_BYTES_PUT).increment(info.size);
        Ok(info)
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        measured(&*self.inner, "get_blob", self.inner.get_blob(digest)).await
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        measured(&*self.inner, "head_blob", self.inner.head_blob(digest)).await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        measured(&*self.inner, "delete_blob", self.inner.delete_blob(digest)).await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        measured(&*self.inner, "list_blobs", self.inner.list_blobs()).await
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        let call = self.inner.set_blob_notes(digest, notes);
        measured(&*self.inner, "set_blob_notes", call).await
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        let call = self.inner.get_blob_note(digest, key);
        measured(&*self.inner, "get_blob_note", call).await
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        measured(&*self.inner, "blob_notes", self.inner.blob_notes(digest)).await
    }

    async fn scratch(&self) -> Result<Scratch> {
        measured(&*self.inner, "scratch", self.inner.scratch()).await
    }

    async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        measured(
            &*self.inner,
            "list_blob_times",
            self.inner.list_blob_times(),
        )
        .await
    }

    async fn blob_usage(&self) -> Result<Usage> {
        measured(&*self.inner, "blob_usage", self.inner.blob_usage()).await
    }
}

impl Error {
    /// A short stable name of the error's kind, for metrics labels and
    /// logs: `not_found`, `corrupt`, `backend`, ….
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Precondition { .. } => "precondition",
            Self::InvalidDigest(_) => "invalid_digest",
            Self::InvalidKey { .. } => "invalid_key",
            Self::InvalidReference { .. } => "invalid_reference",
            Self::InvalidConfig(_) => "invalid_config",
            Self::EmptyData { .. } => "empty_data",
            Self::TooLarge { .. } => "too_large",
            Self::Corrupt { .. } => "corrupt",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::Truncated { .. } => "truncated",
            Self::Unsupported { .. } => "unsupported",
            Self::Locked { .. } => "locked",
            Self::Config { .. } => "config",
            Self::Cancelled => "cancelled",
            Self::Unavailable { .. } => "unavailable",
            Self::Backend { .. } => "backend",
        }
    }
}
