//! A verified, streaming blob cache over any [`BlobBackend`].
//!
//! [`BlobCache`] keeps layer, config and manifest blobs by digest, the way
//! buildah's blob cache does, with four differences that matter:
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
//! * **Decompression is bounded.** A small compressed layer can expand to
//!   gigabytes (a "decompression bomb"). Decompression stops with
//!   [`Error::DecompressionBomb`], storing neither copy, once the output
//!   passes [`BlobCacheOptions::max_decompressed_size`] or, past
//!   [`BlobCacheOptions::decompression_ratio_floor`], grows more than
//!   [`BlobCacheOptions::max_decompression_ratio`] times the compressed
//!   bytes read so far.
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
//! Notes are also untrusted. Whoever can write below the cache can change
//! them, and a note that made one blob pass for a copy of another would
//! make [`BlobCache::substitute`] describe a layer with the wrong bytes, or
//! a caller that removes an image's layers with their variants (as
//! [`BlobCache::variant`] reports them) remove an unrelated blob. So every
//! place that follows a `compressed` or `decompressed` note
//! ([`BlobCache::variant`], [`BlobCache::substitute`], and
//! [`BlobCache::put_layer`] when it looks for a cached decompressed copy)
//! honours it only when the note names another blob, both blobs are cached
//! and look whole, and the target's note in the other direction names the
//! first blob back. A note naming its own blob is never honoured.
//!
//! This is a structural check, not a proof: someone able to write *both*
//! notes consistently can still pair two unrelated blobs. Proving the pair
//! means decompressing one copy and hashing it, a full read of the layer on
//! every lookup; the notes hold nothing cheaper that a forger could not
//! rewrite too (sizes and compression names are notes as well). Protecting
//! the cache's storage from writers is the way to rule that case out.
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

mod catalog;
mod error;
mod inner;
mod layer;
mod layer_put;
mod manifest;
mod options;
mod pipe;
mod reader;
mod variants;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{BlobBackend, BlobInfo, BlobNotes, ByteStream, Digest};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

pub use catalog::{BlobKind, CatalogEntry};
pub use error::{DecompressionLimit, Error, Result};
pub use layer::{
    Compression, LayerCompression, LayerInfo, LayerOptions, LayerPut, UnknownCompression,
    media_type,
};
pub use options::{BlobCacheOptions, BlobStats, Cleared, Counters, Manifest, PutOptions};
pub use reader::VerifiedReader;

/// Bytes read from `reader` per chunk of a [`reader_body`].
const READ_CHUNK: usize = 256 << 10;

/// A blob body that reads `reader` to its end in chunks, for
/// [`BlobCache::put_opts`], [`BlobCache::put_layer_opts`] and the backends'
/// `put_blob`. A read error ends the body with that error (as
/// [`imagecache_core::Error::Backend`] from `"reader"`).
pub fn reader_body<R>(reader: R) -> ByteStream
where
    R: AsyncRead + Unpin + Send + 'static,
{
    Box::pin(futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = bytes::BytesMut::zeroed(READ_CHUNK);
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.freeze()), Some(reader)))
            }
            Err(e) => Some((
                Err(imagecache_core::Error::backend("reader", None, e)),
                None,
            )),
        }
    }))
}

use inner::{Inner, NoteKeys, chunked};
use pipe::{Check, Fed, Origin};

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
                backend: imagecache_core::instrument::instrument_blobs(backend),
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
    /// Checks presence and the size noted at put time; the bytes are read
    /// only when the two disagree. Then a blob that verifies keeps its
    /// place and its size note is set right (the note was what was
    /// damaged), and a truncated blob is evicted and reported as absent.
    /// Counts no hit or miss, only errors.
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

    /// Stores a blob read from any [`AsyncRead`] (a file, a socket, a
    /// decompressor), verifying it on the way; see [`BlobCache::put_opts`]
    /// and [`reader_body`].
    ///
    /// # Errors
    /// As [`BlobCache::put_opts`]; a failing reader is [`Error::Source`]
    /// and stores nothing.
    pub async fn put_reader<R>(
        &self,
        digest: &Digest,
        reader: R,
        opts: PutOptions,
    ) -> Result<BlobInfo>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.put_opts(digest, reader_body(reader), opts).await
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
