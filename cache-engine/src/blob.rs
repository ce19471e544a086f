//! A verified, streaming blob cache over any [`BlobBackend`].
//!
//! [`BlobCache`] keeps layer, config and manifest blobs by digest, the way
//! buildah's blob cache does, with three differences that matter:
//!
//! * **Every put is verified.** The digest is computed while the bytes
//!   stream to the backend; a body that does not hash to its digest (or is
//!   shorter or longer than announced) ends with an error, and the backend,
//!   which publishes a blob only when its body ends cleanly, stores nothing.
//!   The caller gets a typed [`Error`].
//! * **Every read is verified.** Bytes are hashed on the way out; a stored
//!   blob that no longer matches its digest is evicted and reported, so a
//!   damaged cache heals itself instead of poisoning builds.
//! * **Memory stays flat.** Bodies move in chunks of at most 1 MiB through
//!   bounded pipes (a few chunks in flight), hashing overlaps the backend's
//!   I/O, and gzip or zstd layers are decompressed on a blocking thread fed
//!   by such a pipe. Putting, reading or decompressing a 1 GiB blob uses a
//!   few MiB.
//!
//! # Misses, never failures
//!
//! A cache must not break the build it serves. A blob that is absent,
//! truncated (its size differs from the size recorded when it was put) or
//! corrupt is a *miss*: lookups return `Ok(None)`, log the reason with
//! `tracing::warn!` (absence alone is logged at debug level), count it in
//! [`Counters::errors`], and evict the damaged blob. A backend failure
//! while looking up is treated the same way unless
//! [`BlobCacheOptions::with_strict`] asks for it to be returned as an error.
//!
//! Corruption that keeps the size (same length, wrong bytes) can only be
//! seen once every byte has been read. Hence two ways to read:
//!
//! * [`BlobCache::get`] returns a [`VerifiedReader`] at once. It streams
//!   with constant memory; its last item is [`Error::Corrupt`] if the bytes
//!   were bad, by which time the blob has been evicted. Use it when the
//!   consumer can throw away what it received (a temp file, a hashing
//!   uploader).
//! * [`BlobCache::get_bytes`], [`BlobCache::get_manifest`] and
//!   [`BlobCache::copy_to`] verify fully before they report a hit; bad
//!   bytes turn into a clean miss (`Ok(None)`). `copy_to` has written the
//!   bytes to its destination by then, which the caller discards on a miss.
//!
//! # Counters
//!
//! Each lookup by `get`, `get_bytes`, `copy_to` or `get_manifest` counts
//! one hit or one miss; [`BlobCache::get`] counts its hit when it opens the
//! blob, before the bytes are verified. [`Counters::errors`] counts every
//! problem found along the way (truncated, corrupt, unreadable), in
//! lookups, in [`BlobCache::has`] and in [`BlobCache::substitute`].
//! Refused puts are the caller's errors, returned to it, and not counted.
//!
//! # Notes
//!
//! The cache records small notes beside each blob it stores
//! ([`BlobBackend::set_blob_notes`], one call per blob):
//!
//! | key | value |
//! | --- | --- |
//! | `size` | the size in decimal, to tell a truncated blob by its size alone |
//! | `kind` | `manifest` or `layer`, for blobs put as such |
//! | `media-type` | the media type, when the caller gave one |
//! | `compression` | `gzip` or `zstd`, on a compressed layer |
//! | `decompressed` | on a compressed layer: the digest of its decompressed copy |
//! | `compressed` | on a decompressed layer: the digest of its compressed copy |
//!
//! The last two point at each other, so [`BlobCache::substitute`] can offer
//! either variant of a layer. Notes are written after their blob and are
//! advisory: a failure to write one is logged and does not fail the put,
//! and a note that points at a missing blob is ignored.
//!
//! # Concurrency
//!
//! [`BlobCache`] is cheap to clone; clones share the backend and counters.
//! Concurrent puts of one digest are safe: each body is verified on its
//! own, and the backend publishes whole blobs atomically, so a reader sees
//! either no blob or all of it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use imagecache_backends::MemoryBackend;
//! use imagecache_core::Digest;
//! use imagecache_engine::blob::BlobCache;
//!
//! let cache = BlobCache::new(Arc::new(MemoryBackend::new()))?;
//! let data = bytes::Bytes::from_static(b"a layer");
//! let digest = Digest::sha256(&data);
//! cache.put_bytes(&digest, data.clone()).await?;
//! assert_eq!(cache.get_bytes(&digest).await?, Some(data));
//!
//! // A body that does not match its digest is refused; nothing is stored.
//! let wrong = Digest::sha256(b"something else");
//! assert!(cache.put_bytes(&wrong, "a layer").await.is_err());
//! assert_eq!(cache.has(&wrong).await?, None);
//! # Ok::<(), imagecache_engine::blob::Error>(())
//! # }).unwrap();
//! ```

mod error;
mod layer;
mod pipe;
mod reader;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{BlobBackend, BlobInfo, BlobNotes, ByteStream, Digest, MetadataKey};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

pub use error::{Error, Result};
pub use layer::{
    Compression, LayerCompression, LayerInfo, LayerOptions, LayerPut, UnknownCompression,
    media_type,
};
pub use reader::VerifiedReader;

use layer::Declared;
use pipe::{Check, Fed, Origin};

/// Settings of a [`BlobCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobCacheOptions {
    /// Return backend failures during lookups as errors instead of counting
    /// them as misses. Off by default: a cache that cannot be read should
    /// slow a build down, not fail it.
    pub strict: bool,
    /// Largest manifest accepted by [`BlobCache::put_manifest`] and returned
    /// by [`BlobCache::get_manifest`]. Default 4 MiB, as registries commonly allow.
    pub max_manifest_size: u64,
}

impl Default for BlobCacheOptions {
    fn default() -> Self {
        Self {
            strict: false,
            max_manifest_size: 4 << 20,
        }
    }
}

impl BlobCacheOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`BlobCacheOptions::strict`].
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`BlobCacheOptions::max_manifest_size`].
    pub fn with_max_manifest_size(mut self, bytes: u64) -> Self {
        self.max_manifest_size = bytes;
        self
    }
}

/// Options of one [`BlobCache::put_opts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// The size the caller expects; a body of another length is refused.
    pub expected_size: Option<u64>,
    /// A media type to note beside the blob.
    pub media_type: Option<String>,
}

impl PutOptions {
    /// No expectations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`PutOptions::expected_size`].
    pub fn with_expected_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// Sets [`PutOptions::media_type`].
    pub fn with_media_type(mut self, media_type: impl Into<String>) -> Self {
        self.media_type = Some(media_type.into());
        self
    }
}

/// Hit, miss and error counts since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Lookups that found a usable blob.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Problems found: truncated, corrupt or unreadable blobs, failed backend calls.
    pub errors: u64,
}

/// Counters plus what the backend holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobStats {
    /// Lookups that found a usable blob.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Problems found.
    pub errors: u64,
    /// Blobs stored.
    pub blobs: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// What [`BlobCache::clear`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleared {
    /// Blobs removed.
    pub blobs: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A cached manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its exact bytes, verified against the digest.
    pub data: Bytes,
    /// The media type noted when it was put, if any.
    pub media_type: Option<String>,
}

/// The note keys, validated once.
#[derive(Debug)]
struct NoteKeys {
    size: MetadataKey,
    kind: MetadataKey,
    media_type: MetadataKey,
    compression: MetadataKey,
    compressed: MetadataKey,
    decompressed: MetadataKey,
}

impl NoteKeys {
    fn new() -> imagecache_core::Result<Self> {
        Ok(Self {
            size: MetadataKey::new("size")?,
            kind: MetadataKey::new("kind")?,
            media_type: MetadataKey::new("media-type")?,
            compression: MetadataKey::new("compression")?,
            compressed: MetadataKey::new("compressed")?,
            decompressed: MetadataKey::new("decompressed")?,
        })
    }
}

const KIND_MANIFEST: &[u8] = b"manifest";
const KIND_LAYER: &[u8] = b"layer";

/// State shared by a cache and its readers.
struct Inner {
    backend: Arc<dyn BlobBackend>,
    options: BlobCacheOptions,
    notes: NoteKeys,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache")
            .field("backend", &format_args!("{}", self.backend))
            .field("options", &self.options)
            .field("counters", &self.counters())
            .finish()
    }
}

impl Inner {
    fn counters(&self) -> Counters {
        Counters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A backend call made during a lookup failed: an error in strict mode,
    /// otherwise a logged, counted miss.
    fn lookup_failed(
        &self,
        operation: &'static str,
        digest: &Digest,
        source: imagecache_core::Error,
    ) -> Result<()> {
        self.error();
        if self.options.strict {
            return Err(Error::backend(operation, Some(*digest), source));
        }
        tracing::warn!(%digest, operation, error = %source, "blob cache miss: backend failed");
        Ok(())
    }

    /// Evicts a damaged blob; a failure to do so is logged, since the next
    /// read finds the damage again.
    async fn evict(&self, digest: &Digest) {
        if let Err(error) = self.backend.delete_blob(digest).await {
            tracing::warn!(%digest, %error, "could not evict a damaged cached blob");
        }
    }

    /// Records that a stored blob failed verification while being read.
    async fn corrupt(&self, digest: Digest, reason: String) -> Error {
        self.error();
        tracing::warn!(%digest, %reason, "blob cache: cached blob is corrupt; evicting it");
        self.evict(&digest).await;
        Error::Corrupt { digest, reason }
    }

    /// Records that the backend failed while a blob was being read.
    fn read_failed(&self, digest: Digest, source: imagecache_core::Error) -> Error {
        self.error();
        tracing::warn!(%digest, error = %source, "blob cache: reading a cached blob failed");
        Error::Read { digest, source }
    }

    /// Size of a stored blob that looks whole: present, and as large as the
    /// size noted when it was put. A truncated blob is evicted.
    async fn probe(&self, digest: &Digest) -> Result<Option<u64>> {
        let info = match self.backend.head_blob(digest).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => {
                tracing::debug!(%digest, "blob cache miss: not cached");
                return Ok(None);
            }
            Err(e) => return self.lookup_failed("head_blob", digest, e).map(|()| None),
        };
        match self.backend.get_blob_note(digest, &self.notes.size).await {
            Ok(value) => match parse_size(&value) {
                Some(noted) if noted == info.size => Ok(Some(info.size)),
                Some(noted) => {
                    self.error();
                    tracing::warn!(
                        %digest,
                        stored = info.size,
                        noted,
                        "blob cache miss: cached blob is truncated; evicting it"
                    );
                    self.evict(digest).await;
                    Ok(None)
                }
                None => {
                    tracing::warn!(%digest, "blob cache: ignoring an unreadable size note");
                    Ok(Some(info.size))
                }
            },
            // Blobs stored by other tools have no size note; their bytes are
            // still verified when read.
            Err(e) if e.is_not_found() => Ok(Some(info.size)),
            Err(e) => self
                .lookup_failed("get_blob_note", digest, e)
                .map(|()| Some(info.size)),
        }
    }

    /// Opens a blob that looks whole, without counting a hit or a miss.
    async fn open(self: &Arc<Self>, digest: &Digest) -> Result<Option<VerifiedReader>> {
        let Some(size) = self.probe(digest).await? else {
            return Ok(None);
        };
        match self.backend.get_blob(digest).await {
            Ok(reader) => {
                if reader.size != size {
                    // The blob changed between the two calls (a concurrent
                    // put or evict); the stream is checked against what the
                    // backend is serving now.
                    tracing::debug!(%digest, head = size, open = reader.size, "blob changed size while opening");
                }
                Ok(Some(VerifiedReader::new(
                    Arc::clone(self),
                    *digest,
                    reader.size,
                    reader.stream,
                )))
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(%digest, "blob cache miss: blob vanished while opening");
                Ok(None)
            }
            Err(e) => self.lookup_failed("get_blob", digest, e).map(|()| None),
        }
    }

    /// Reads a whole blob, verified, counting one hit or one miss.
    async fn fetch(self: &Arc<Self>, digest: &Digest, limit: Option<u64>) -> Result<Option<Bytes>> {
        let Some(reader) = self.open(digest).await? else {
            self.miss();
            return Ok(None);
        };
        if let Some(limit) = limit
            && reader.size() > limit
        {
            tracing::warn!(%digest, size = reader.size(), limit, "blob cache miss: too large for a manifest");
            self.miss();
            return Ok(None);
        }
        match reader.bytes().await {
            Ok(data) => {
                self.hit();
                Ok(Some(data))
            }
            Err(Error::Read { digest, source }) if self.options.strict => {
                Err(Error::Read { digest, source })
            }
            // Corrupt and unreadable blobs were logged and counted by the reader.
            Err(_) => {
                self.miss();
                Ok(None)
            }
        }
    }

    /// Sets a blob's notes in one call; failures are logged, since notes
    /// are advisory.
    async fn note(&self, digest: &Digest, notes: BlobNotes) {
        if notes.is_empty() {
            return;
        }
        if let Err(error) = self.backend.set_blob_notes(digest, notes).await {
            tracing::warn!(%digest, %error, "blob cache: could not write notes");
        }
    }

    /// Reads a note that holds a digest; anything else is no note.
    async fn note_digest(&self, digest: &Digest, key: &MetadataKey) -> Result<Option<Digest>> {
        let value = match self.backend.get_blob_note(digest, key).await {
            Ok(value) => value,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                return self
                    .lookup_failed("get_blob_note", digest, e)
                    .map(|()| None);
            }
        };
        let parsed = std::str::from_utf8(&value)
            .ok()
            .and_then(|s| Digest::parse(s.trim()).ok());
        if parsed.is_none() {
            self.error();
            tracing::warn!(%digest, note = %key, "blob cache: ignoring a note that is not a digest");
        }
        Ok(parsed)
    }

    /// Reads a text note.
    async fn note_text(&self, digest: &Digest, key: &MetadataKey) -> Result<Option<String>> {
        match self.backend.get_blob_note(digest, key).await {
            Ok(value) => Ok(String::from_utf8(value.to_vec()).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => self
                .lookup_failed("get_blob_note", digest, e)
                .map(|()| None),
        }
    }
}

fn parse_size(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn chunked(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::iter(pipe::split(data).map(Ok)))
}

/// A verified, streaming blob cache over any [`BlobBackend`]; see the
/// [module docs](self) for its guarantees.
#[derive(Clone)]
pub struct BlobCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl BlobCache {
    /// A cache over `backend` with default options.
    ///
    /// # Errors
    /// [`Error::Backend`] only if the cache's note keys cannot be made,
    /// which does not happen with this version's keys.
    pub fn new(backend: Arc<dyn BlobBackend>) -> Result<Self> {
        Self::with_options(backend, BlobCacheOptions::default())
    }

    /// A cache over `backend`.
    ///
    /// # Errors
    /// As [`BlobCache::new`].
    pub fn with_options(backend: Arc<dyn BlobBackend>, options: BlobCacheOptions) -> Result<Self> {
        let notes = NoteKeys::new().map_err(|e| Error::backend("note keys", None, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                options,
                notes,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        })
    }

    /// The backend the cache stores into.
    pub fn backend(&self) -> &Arc<dyn BlobBackend> {
        &self.inner.backend
    }

    /// The options the cache was made with.
    pub fn options(&self) -> &BlobCacheOptions {
        &self.inner.options
    }

    /// The size of a cached blob, if it is there and looks whole.
    ///
    /// Checks presence and the size noted at put time, not the bytes; a
    /// truncated blob is evicted and reported as absent. Counts no hit or
    /// miss, only errors.
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`].
    pub async fn has(&self, digest: &Digest) -> Result<Option<u64>> {
        self.inner.probe(digest).await
    }

    /// Stores a blob from a stream, verifying it on the way.
    ///
    /// The body is hashed as it streams to the backend; see
    /// [`BlobCache::put_opts`].
    ///
    /// # Errors
    /// As [`BlobCache::put_opts`].
    pub async fn put(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        self.put_opts(digest, body, PutOptions::default()).await
    }

    /// Stores a blob held in memory, verifying it first.
    ///
    /// # Errors
    /// As [`BlobCache::put_opts`].
    pub async fn put_bytes(&self, digest: &Digest, data: impl Into<Bytes>) -> Result<BlobInfo> {
        let data = data.into();
        let opts = PutOptions::new().with_expected_size(data.len() as u64);
        self.put_opts(digest, chunked(data), opts).await
    }

    /// Stores a blob from a stream, verifying it on the way.
    ///
    /// The body streams to the backend in bounded chunks while its digest
    /// (and length, with [`PutOptions::expected_size`]) is checked; the
    /// backend publishes it only if every check passes. A blob that is
    /// already cached and looks whole is not stored again: the body is
    /// dropped unread and the stored blob's info is returned.
    ///
    /// # Errors
    /// Nothing is stored on [`Error::DigestMismatch`], [`Error::Truncated`],
    /// [`Error::TooLarge`] (longer than announced) or [`Error::Source`] (the
    /// body failed). [`Error::Backend`] when the backend fails.
    pub async fn put_opts(
        &self,
        digest: &Digest,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<BlobInfo> {
        self.put_noted(digest, body, opts, BlobNotes::new()).await
    }

    /// [`BlobCache::put_opts`], writing `notes` beside the size and media
    /// type notes in the same call.
    async fn put_noted(
        &self,
        digest: &Digest,
        body: ByteStream,
        opts: PutOptions,
        mut notes: BlobNotes,
    ) -> Result<BlobInfo> {
        let inner = &self.inner;
        let info = match inner.probe(digest).await? {
            Some(size) => {
                tracing::debug!(%digest, size, "blob already cached");
                BlobInfo {
                    digest: *digest,
                    size,
                }
            }
            None => {
                let size = self
                    .stream_to_backend(digest, body, opts.expected_size, Origin::Caller)
                    .await?;
                notes.push((inner.notes.size.clone(), Bytes::from(size.to_string())));
                BlobInfo {
                    digest: *digest,
                    size,
                }
            }
        };
        if let Some(media_type) = opts.media_type {
            notes.push((inner.notes.media_type.clone(), Bytes::from(media_type)));
        }
        inner.note(digest, notes).await;
        Ok(info)
    }

    /// Streams `body` into the backend through a verifying pipe; returns the size.
    async fn stream_to_backend(
        &self,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
        origin: Origin,
    ) -> Result<u64> {
        let (tx, rx) = pipe::pipe();
        let check = Check::new(*digest, expected_size);
        let (stored, fed) = futures::join!(
            self.inner
                .backend
                .put_blob(digest, pipe::receiver_stream(rx)),
            pipe::feed(body, check, tx, origin, *digest),
        );
        match (stored, fed) {
            // Our verdict explains a failure better than the backend's
            // echo of it, and must win even if a backend that already had
            // the blob skipped the body and succeeded.
            (_, Err(err)) => Err(err),
            (Ok(info), Ok(Fed::Verified(_) | Fed::Abandoned)) => Ok(info.size),
            (Err(source), Ok(_)) => Err(Error::backend("put_blob", Some(*digest), source)),
        }
    }

    /// Stores a layer and a decompressed copy of it; see [`BlobCache::put_layer_opts`].
    ///
    /// # Errors
    /// As [`BlobCache::put_layer_opts`].
    pub async fn put_layer(&self, digest: &Digest, body: ByteStream) -> Result<LayerPut> {
        self.put_layer_opts(digest, body, LayerOptions::default())
            .await
    }

    /// Stores a layer; a compressed layer is also kept decompressed.
    ///
    /// The compression comes from [`LayerOptions::compression`], else the
    /// media type, else the first bytes. An uncompressed layer is stored as
    /// it is. A gzip or zstd layer is stored verified, and decompressed on a
    /// blocking thread as it streams; the decompressed copy is stored under
    /// its own digest and each copy gets a note naming the other. Neither is
    /// published unless the compressed digest matched, the data decoded,
    /// and (with [`LayerOptions::diff_id`]) the decompressed digest matched.
    /// Without a diff ID the decompressed digest is learned in the first
    /// pass and the copy is made from the stored compressed blob in a second.
    ///
    /// Needs a Tokio runtime (for the blocking thread).
    ///
    /// # Errors
    /// Nothing is stored on [`Error::UnsupportedCompression`] (for example
    /// xz, bzip2), [`Error::Decompress`] (invalid data),
    /// [`Error::DecompressedMismatch`], or any error of [`BlobCache::put_opts`]
    /// about the body. [`Error::Backend`] when the backend fails;
    /// [`Error::NoRuntime`] outside Tokio.
    pub async fn put_layer_opts(
        &self,
        digest: &Digest,
        body: ByteStream,
        opts: LayerOptions,
    ) -> Result<LayerPut> {
        let inner = &self.inner;
        let declared = match (opts.compression, opts.media_type.as_deref()) {
            (Some(c), _) => Declared::Known(c),
            (None, Some(media_type)) => layer::declared_by(media_type),
            (None, None) => Declared::Unknown,
        };
        if let Declared::Unsupported(compression) = declared {
            return Err(Error::UnsupportedCompression {
                digest: *digest,
                compression,
            });
        }
        let (head, body) = peek(body, 8, digest).await?;
        let compression = match declared {
            Declared::Known(c) => c,
            _ => match layer::sniffed(&head) {
                Declared::Known(c) => c,
                Declared::Unsupported(compression) => {
                    return Err(Error::UnsupportedCompression {
                        digest: *digest,
                        compression,
                    });
                }
                Declared::Unknown => Compression::None,
            },
        };

        if compression == Compression::None {
            let mut put = PutOptions::new();
            put.expected_size = opts.expected_size;
            put.media_type = opts.media_type;
            let kind = vec![(inner.notes.kind.clone(), Bytes::from_static(KIND_LAYER))];
            let info = self.put_noted(digest, body, put, kind).await?;
            return Ok(LayerPut {
                compression,
                compressed: None,
                decompressed: info,
            });
        }

        let compressed_size = inner.probe(digest).await?;
        let known_diff = match (opts.diff_id, compressed_size) {
            (Some(diff), _) => Some(diff),
            (None, Some(_)) => inner.note_digest(digest, &inner.notes.decompressed).await?,
            (None, None) => None,
        };
        let diff_size = match known_diff {
            Some(diff) => inner.probe(&diff).await?,
            None => None,
        };

        let (compressed, decompressed) = match (compressed_size, known_diff, diff_size) {
            // Both copies are already cached; the body is not needed.
            (Some(c_size), Some(diff), Some(d_size)) => (
                BlobInfo {
                    digest: *digest,
                    size: c_size,
                },
                BlobInfo {
                    digest: diff,
                    size: d_size,
                },
            ),
            _ => {
                let store_diff = known_diff.filter(|_| diff_size.is_none());
                let pass = LayerPass {
                    digest: *digest,
                    compression,
                    origin: Origin::Caller,
                    expected_size: opts.expected_size,
                    store_compressed: compressed_size.is_none(),
                    diff: known_diff,
                    store_diff: store_diff.is_some(),
                };
                let (c_size, decoded) = self.layer_pass(pass, body).await?;
                let diff = decoded.digest;
                if store_diff.is_none() && inner.probe(&diff).await?.is_none() {
                    // The decompressed digest was unknown up front, so the
                    // copy is made now from the stored compressed blob.
                    self.decompress_stored(digest, compression, c_size, diff)
                        .await?;
                }
                (
                    BlobInfo {
                        digest: *digest,
                        size: c_size,
                    },
                    decoded,
                )
            }
        };

        let keys = &inner.notes;
        let diff = &decompressed.digest;
        let mut compressed_notes: BlobNotes = vec![
            (keys.size.clone(), Bytes::from(compressed.size.to_string())),
            (keys.kind.clone(), Bytes::from_static(KIND_LAYER)),
            (
                keys.compression.clone(),
                Bytes::from_static(compression.as_str().as_bytes()),
            ),
            (keys.decompressed.clone(), Bytes::from(diff.to_string())),
        ];
        if let Some(media_type) = opts.media_type {
            compressed_notes.push((keys.media_type.clone(), Bytes::from(media_type)));
        }
        let decompressed_notes: BlobNotes = vec![
            (
                keys.size.clone(),
                Bytes::from(decompressed.size.to_string()),
            ),
            (keys.kind.clone(), Bytes::from_static(KIND_LAYER)),
            (keys.compressed.clone(), Bytes::from(digest.to_string())),
        ];
        // One call per copy, both in flight at once.
        futures::join!(
            inner.note(digest, compressed_notes),
            inner.note(diff, decompressed_notes)
        );
        tracing::debug!(%digest, decompressed = %diff, %compression, "layer cached in both forms");
        Ok(LayerPut {
            compression,
            compressed: Some(compressed),
            decompressed,
        })
    }

    /// Makes the decompressed copy of a stored compressed layer.
    async fn decompress_stored(
        &self,
        digest: &Digest,
        compression: Compression,
        size: u64,
        diff: Digest,
    ) -> Result<()> {
        let reader = self
            .inner
            .backend
            .get_blob(digest)
            .await
            .map_err(|e| Error::backend("get_blob", Some(*digest), e))?;
        let body: ByteStream = Box::pin(pipe::ReadAhead::new(reader.stream));
        let pass = LayerPass {
            digest: *digest,
            compression,
            origin: Origin::Stored,
            expected_size: Some(size),
            store_compressed: false,
            diff: Some(diff),
            store_diff: true,
        };
        let result = self.layer_pass(pass, body).await;
        match result {
            Ok(_) => Ok(()),
            // The compressed blob verified a moment ago; if it does not now,
            // it was damaged in storage.
            Err(
                err @ (Error::DigestMismatch { .. }
                | Error::Truncated { .. }
                | Error::TooLarge { .. }),
            ) => Err(self.inner.corrupt(*digest, err.to_string()).await),
            Err(err) => Err(err),
        }
    }

    /// One pass over a compressed layer: verify it, optionally store it,
    /// decompress it, optionally store the decompressed copy under `diff`.
    /// Returns the compressed size and the decompressed blob's info.
    async fn layer_pass(&self, pass: LayerPass, body: ByteStream) -> Result<(u64, BlobInfo)> {
        let LayerPass {
            digest,
            compression,
            origin,
            expected_size,
            store_compressed,
            diff,
            store_diff,
        } = pass;
        let digest = &digest;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            operation: "put_layer",
        })?;
        let backend = &self.inner.backend;
        let (decode_tx, decode_rx) = pipe::pipe();
        let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel();

        let (store_tx, store_rx) = if store_compressed {
            let (tx, rx) = pipe::pipe();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let store_compressed = async {
            match store_rx {
                Some(rx) => Some(backend.put_blob(digest, pipe::receiver_stream(rx)).await),
                None => None,
            }
        };

        let diff_target = diff.filter(|_| store_diff);
        let (out_tx, out_rx) = if diff_target.is_some() {
            let (tx, rx) = pipe::pipe();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let store_decompressed = async {
            match (diff_target, out_rx) {
                (Some(diff), Some(rx)) => {
                    Some(backend.put_blob(&diff, pipe::receiver_stream(rx)).await)
                }
                _ => None,
            }
        };

        let compressed = *digest;
        let decoder = runtime.spawn_blocking(move || {
            layer::decode_blocking(compressed, compression, decode_rx, out_tx, diff, verdict_tx)
        });
        let feeder = layer::feed_tee(
            body,
            Check::new(*digest, expected_size),
            store_tx,
            decode_tx,
            verdict_rx,
            origin,
            *digest,
        );

        let (stored, fed, stored_diff, decoded) =
            futures::join!(store_compressed, feeder, store_decompressed, decoder);

        let size = match fed? {
            Fed::Verified(size) => Some(size),
            Fed::Abandoned => None,
        };
        let decoded = match decoded {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Interrupted {
                    digest: *digest,
                    stage: "decompression",
                });
            }
        };
        let Some(size) = size else {
            return Err(Error::Interrupted {
                digest: *digest,
                stage: "decompression",
            });
        };
        if let Some(Err(source)) = stored {
            return Err(Error::backend("put_blob", Some(*digest), source));
        }
        if let Some(Err(source)) = stored_diff {
            return Err(Error::backend(
                "put_blob",
                Some(decoded.info.digest),
                source,
            ));
        }
        Ok((size, decoded.info))
    }

    /// Opens a cached blob for streaming, verified as it is read.
    ///
    /// Returns at once; the bytes are checked as they pass, and a corrupt
    /// blob ends the stream with [`Error::Corrupt`] after being evicted (see
    /// [`VerifiedReader`]). Counts a hit when the blob opens, else a miss.
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`].
    /// Absent, truncated and unreadable blobs are `Ok(None)`.
    pub async fn get(&self, digest: &Digest) -> Result<Option<VerifiedReader>> {
        let reader = self.inner.open(digest).await?;
        if reader.is_some() {
            self.inner.hit();
        } else {
            self.inner.miss();
        }
        Ok(reader)
    }

    /// Reads a whole cached blob into memory, returning it only once every
    /// byte verified; a corrupt blob is evicted and is a miss.
    ///
    /// Meant for small blobs (configs, manifests); stream large ones with
    /// [`BlobCache::get`] or [`BlobCache::copy_to`].
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`],
    /// [`Error::Read`].
    pub async fn get_bytes(&self, digest: &Digest) -> Result<Option<Bytes>> {
        self.inner.fetch(digest, None).await
    }

    /// Copies a cached blob into `dest`, verifying every byte, and reports a
    /// hit only if all of them matched.
    ///
    /// Memory use is constant. On `Ok(None)` the blob was absent, or was
    /// found corrupt or unreadable part way (and evicted if corrupt): in that
    /// case `dest` has received bytes that must be discarded.
    ///
    /// # Errors
    /// [`Error::Write`] when `dest` fails; in strict mode also
    /// [`Error::Backend`] and [`Error::Read`].
    pub async fn copy_to<W>(&self, digest: &Digest, dest: &mut W) -> Result<Option<BlobInfo>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let inner = &self.inner;
        let Some(mut reader) = inner.open(digest).await? else {
            inner.miss();
            return Ok(None);
        };
        let size = reader.size();
        let write_err = |source| Error::Write {
            digest: *digest,
            source,
        };
        while let Some(item) = reader.next().await {
            match item {
                Ok(chunk) => dest.write_all(&chunk).await.map_err(write_err)?,
                Err(Error::Read { digest, source }) if inner.options.strict => {
                    return Err(Error::Read { digest, source });
                }
                Err(_) => {
                    inner.miss();
                    return Ok(None);
                }
            }
        }
        dest.flush().await.map_err(write_err)?;
        inner.hit();
        Ok(Some(BlobInfo {
            digest: *digest,
            size,
        }))
    }

    /// Stores a manifest, verified, with notes marking its kind and media type.
    ///
    /// # Errors
    /// Nothing is stored on [`Error::EmptyManifest`], [`Error::TooLarge`]
    /// (over [`BlobCacheOptions::max_manifest_size`]) or
    /// [`Error::DigestMismatch`]. [`Error::Backend`] when the backend fails.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        data: impl Into<Bytes>,
        media_type: Option<&str>,
    ) -> Result<BlobInfo> {
        let inner = &self.inner;
        let data = data.into();
        let size = data.len() as u64;
        if data.is_empty() {
            return Err(Error::EmptyManifest { digest: *digest });
        }
        if size > inner.options.max_manifest_size {
            return Err(Error::TooLarge {
                digest: *digest,
                size,
                limit: inner.options.max_manifest_size,
            });
        }
        let mut check = Check::new(*digest, Some(size));
        check.update(&data)?;
        check.finish()?;
        let info = inner
            .backend
            .put_blob(digest, chunked(data))
            .await
            .map_err(|e| Error::backend("put_blob", Some(*digest), e))?;
        let mut notes: BlobNotes = vec![
            (inner.notes.size.clone(), Bytes::from(size.to_string())),
            (inner.notes.kind.clone(), Bytes::from_static(KIND_MANIFEST)),
        ];
        if let Some(media_type) = media_type {
            notes.push((
                inner.notes.media_type.clone(),
                Bytes::from(media_type.to_owned()),
            ));
        }
        inner.note(digest, notes).await;
        Ok(info)
    }

    /// Reads a cached manifest, fully verified, with its noted media type.
    ///
    /// A blob larger than [`BlobCacheOptions::max_manifest_size`] is not
    /// read and is a miss. Counts one hit or miss.
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`], [`Error::Read`].
    pub async fn get_manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        let inner = &self.inner;
        let Some(data) = inner
            .fetch(digest, Some(inner.options.max_manifest_size))
            .await?
        else {
            return Ok(None);
        };
        let media_type = inner.note_text(digest, &inner.notes.media_type).await?;
        Ok(Some(Manifest {
            digest: *digest,
            data,
            media_type,
        }))
    }

    /// The digest noted as the other variant of a cached layer: its
    /// decompressed copy when `to` is [`Compression::None`], else its
    /// compressed copy. Only variants that are cached and look whole count.
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`].
    pub async fn variant(&self, digest: &Digest, to: Compression) -> Result<Option<BlobInfo>> {
        let inner = &self.inner;
        let key = if to == Compression::None {
            &inner.notes.decompressed
        } else {
            &inner.notes.compressed
        };
        let Some(other) = inner.note_digest(digest, key).await? else {
            return Ok(None);
        };
        Ok(inner.probe(&other).await?.map(|size| BlobInfo {
            digest: other,
            size,
        }))
    }

    /// Rewrites a list of layers to their cached compressed or decompressed
    /// variants, as buildah's blob cache does when an image is copied.
    ///
    /// With [`LayerCompression::Preserve`], or when the source image is
    /// `signed` (a signature covers the exact manifest, which substitution
    /// would change), the list is returned unchanged. Otherwise each layer
    /// whose other variant is cached (and looks whole) is replaced by it,
    /// with its digest, size and a media type of the same family (OCI or
    /// Docker). Layers without a cached variant, or whose media type has no
    /// name for the variant's compression, are kept as they are.
    ///
    /// # Errors
    /// Only in [strict](BlobCacheOptions::strict) mode: [`Error::Backend`].
    pub async fn substitute(
        &self,
        layers: &[LayerInfo],
        mode: LayerCompression,
        signed: bool,
    ) -> Result<Vec<LayerInfo>> {
        if signed || mode == LayerCompression::Preserve {
            return Ok(layers.to_vec());
        }
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            let replaced = self.substitute_one(layer, mode).await?;
            out.push(replaced.unwrap_or_else(|| layer.clone()));
        }
        Ok(out)
    }

    async fn substitute_one(
        &self,
        layer: &LayerInfo,
        mode: LayerCompression,
    ) -> Result<Option<LayerInfo>> {
        let inner = &self.inner;
        let key = match mode {
            LayerCompression::Compress => &inner.notes.compressed,
            LayerCompression::Decompress => &inner.notes.decompressed,
            LayerCompression::Preserve => return Ok(None),
        };
        let Some(other) = inner.note_digest(&layer.digest, key).await? else {
            return Ok(None);
        };
        let Some(size) = inner.probe(&other).await? else {
            return Ok(None);
        };
        let to = match mode {
            LayerCompression::Decompress => Compression::None,
            _ => inner
                .note_text(&other, &inner.notes.compression)
                .await?
                .and_then(|name| name.parse().ok())
                .unwrap_or(Compression::Gzip),
        };
        let Some(media_type) = layer::switched_media_type(&layer.media_type, to) else {
            tracing::debug!(
                digest = %layer.digest,
                media_type = %layer.media_type,
                %to,
                "no media type for the cached variant; keeping the layer"
            );
            return Ok(None);
        };
        tracing::debug!(digest = %layer.digest, substitute = %other, %to, "substituting cached layer");
        Ok(Some(LayerInfo {
            digest: other,
            size,
            media_type: media_type.to_owned(),
        }))
    }

    /// Removes one blob and its notes; removing a missing blob is not an error.
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        self.inner
            .backend
            .delete_blob(digest)
            .await
            .map_err(|e| Error::backend("delete_blob", Some(*digest), e))
    }

    /// The hit, miss and error counts so far.
    pub fn counters(&self) -> Counters {
        self.inner.counters()
    }

    /// The counters plus the number and total size of stored blobs.
    ///
    /// # Errors
    /// [`Error::Backend`] when the backend cannot list its blobs.
    pub async fn stats(&self) -> Result<BlobStats> {
        let blobs = self
            .inner
            .backend
            .list_blobs()
            .await
            .map_err(|e| Error::backend("list_blobs", None, e))?;
        let Counters {
            hits,
            misses,
            errors,
        } = self.counters();
        Ok(BlobStats {
            hits,
            misses,
            errors,
            blobs: blobs.len() as u64,
            bytes: blobs.iter().map(|b| b.size).sum(),
        })
    }

    /// Removes every blob in the backend (including blobs other tools
    /// stored there, as buildah's `ClearCache` does), with their notes.
    ///
    /// # Errors
    /// [`Error::Backend`] for the first blob that could not be removed; the
    /// others are still attempted.
    pub async fn clear(&self) -> Result<Cleared> {
        let backend = &self.inner.backend;
        let blobs = backend
            .list_blobs()
            .await
            .map_err(|e| Error::backend("list_blobs", None, e))?;
        let results: Vec<(BlobInfo, imagecache_core::Result<()>)> = futures::stream::iter(blobs)
            .map(|info| async move { (info, backend.delete_blob(&info.digest).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut cleared = Cleared::default();
        let mut first_error = None;
        for (info, result) in results {
            match result {
                Ok(()) => {
                    cleared.blobs += 1;
                    cleared.bytes += info.size;
                }
                Err(e) => {
                    first_error
                        .get_or_insert_with(|| Error::backend("delete_blob", Some(info.digest), e));
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(cleared),
        }
    }
}

/// What one pass over a compressed layer does; see [`BlobCache::layer_pass`].
#[derive(Debug, Clone, Copy)]
struct LayerPass {
    /// The compressed layer.
    digest: Digest,
    /// How it is compressed.
    compression: Compression,
    /// Where the body comes from.
    origin: Origin,
    /// The compressed size to insist on.
    expected_size: Option<u64>,
    /// Whether to store the compressed bytes.
    store_compressed: bool,
    /// The decompressed digest, when known: verified, and the key to store under.
    diff: Option<Digest>,
    /// Whether to store the decompressed bytes under `diff`.
    store_diff: bool,
}

/// Reads the first `want` bytes of a body (fewer if it is shorter) and
/// returns them with a body that still yields everything.
async fn peek(mut body: ByteStream, want: usize, digest: &Digest) -> Result<(Vec<u8>, ByteStream)> {
    let mut prefix = Vec::new();
    let mut have = 0;
    while have < want {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                have += chunk.len();
                prefix.push(chunk);
            }
            Ok(None) => break,
            Err(source) => {
                return Err(Error::Source {
                    digest: *digest,
                    source,
                });
            }
        }
    }
    let head: Vec<u8> = prefix
        .iter()
        .flat_map(|c| c.iter().copied())
        .take(want)
        .collect();
    let replay = futures::stream::iter(prefix.into_iter().map(Ok));
    Ok((head, Box::pin(replay.chain(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_keys_are_valid() {
        assert!(NoteKeys::new().is_ok());
    }

    #[test]
    fn sizes_parse_strictly() {
        assert_eq!(parse_size(b"42"), Some(42));
        assert_eq!(parse_size(b" 42\n"), Some(42));
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"\xff"), None);
    }
}
