//! What a cache and its readers share: the backend, the note keys and the
//! counters, with the lookups every read path is built from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use imagecache_core::{BlobBackend, BlobInfo, BlobNotes, ByteStream, Digest, MetadataKey};

use super::{BlobCacheOptions, Counters, Error, Result, VerifiedReader, pipe};

/// The note keys, validated once.
#[derive(Debug)]
pub(super) struct NoteKeys {
    pub(super) size: MetadataKey,
    pub(super) kind: MetadataKey,
    pub(super) media_type: MetadataKey,
    pub(super) compression: MetadataKey,
    pub(super) compressed: MetadataKey,
    pub(super) decompressed: MetadataKey,
}

impl NoteKeys {
    pub(super) fn new() -> imagecache_core::Result<Self> {
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

/// Which way a link between the two copies of a layer is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// From a compressed copy to its decompressed copy.
    ToDecompressed,
    /// From a decompressed copy to its compressed copy.
    ToCompressed,
}

impl NoteKeys {
    /// The note followed along `link`, and the note on its target that must
    /// name the start again.
    fn link(&self, link: Link) -> (&MetadataKey, &MetadataKey) {
        match link {
            Link::ToDecompressed => (&self.decompressed, &self.compressed),
            Link::ToCompressed => (&self.compressed, &self.decompressed),
        }
    }
}

pub(super) const KIND_MANIFEST: &[u8] = b"manifest";
pub(super) const KIND_LAYER: &[u8] = b"layer";

/// State shared by a cache and its readers.
pub(super) struct Inner {
    pub(super) backend: Arc<dyn BlobBackend>,
    pub(super) options: BlobCacheOptions,
    pub(super) notes: NoteKeys,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
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
    pub(super) fn counters(&self) -> Counters {
        Counters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::BLOB_LOOKUPS, "result" => "hit").increment(1);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::BLOB_LOOKUPS, "result" => "miss").increment(1);
    }

    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::BLOB_VERIFY_FAILURES).increment(1);
    }

    /// A backend call made during a lookup failed: an error in strict mode,
    /// otherwise a logged, counted miss.
    pub(super) fn lookup_failed(
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
    pub(super) async fn evict(&self, digest: &Digest) {
        if let Err(error) = self.backend.delete_blob(digest).await {
            tracing::warn!(%digest, %error, "could not evict a damaged cached blob");
        }
    }

    /// Records that a stored blob failed verification while being read.
    pub(super) async fn corrupt(&self, digest: Digest, reason: String) -> Error {
        self.error();
        tracing::warn!(%digest, %reason, "blob cache: cached blob is corrupt; evicting it");
        self.evict(&digest).await;
        Error::Corrupt { digest, reason }
    }

    /// Records that the backend failed while a blob was being read.
    pub(super) fn read_failed(&self, digest: Digest, source: imagecache_core::Error) -> Error {
        self.error();
        tracing::warn!(%digest, error = %source, "blob cache: reading a cached blob failed");
        Error::Read { digest, source }
    }

    /// Size of a stored blob that looks whole: present, and as large as the
    /// size noted when it was put, or verified when it is not. A truncated
    /// blob is evicted.
    pub(super) async fn probe(&self, digest: &Digest) -> Result<Option<u64>> {
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
                    self.sizes_differ(digest, info.size, noted).await
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

    /// Settles a blob whose stored size is not the size noted at put time.
    /// Either may be what was damaged, so the bytes decide: a blob that
    /// verifies is whole and its note is set right; one that does not is
    /// evicted. A blob that cannot be read now is a miss and stays.
    async fn sizes_differ(&self, digest: &Digest, stored: u64, noted: u64) -> Result<Option<u64>> {
        match self.verifies(digest).await {
            Some(true) => {
                tracing::warn!(%digest, stored, noted, "blob cache: the size note is wrong, the blob verifies; rewriting the note");
                let size = Bytes::from(stored.to_string());
                self.note(digest, vec![(self.notes.size.clone(), size)])
                    .await;
                Ok(Some(stored))
            }
            Some(false) => {
                tracing::warn!(%digest, stored, noted, "blob cache miss: cached blob is truncated; evicting it");
                self.evict(digest).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Whether a stored blob's bytes hash to its digest; `None` when they
    /// cannot be read now.
    async fn verifies(&self, digest: &Digest) -> Option<bool> {
        use futures::StreamExt as _;
        let reader = match self.backend.get_blob(digest).await {
            Ok(reader) => reader,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob cache: cannot read a blob to verify it");
                return None;
            }
        };
        let mut check = pipe::Check::new(*digest, Some(reader.size));
        let mut stream = reader.stream;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return None;
            };
            if check.update(&chunk).is_err() {
                return Some(false);
            }
        }
        Some(check.finish().is_ok())
    }

    /// Opens a blob that looks whole, without counting a hit or a miss.
    pub(super) async fn open(self: &Arc<Self>, digest: &Digest) -> Result<Option<VerifiedReader>> {
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
    pub(super) async fn fetch(
        self: &Arc<Self>,
        digest: &Digest,
        limit: Option<u64>,
    ) -> Result<Option<Bytes>> {
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
    pub(super) async fn note(&self, digest: &Digest, notes: BlobNotes) {
        if notes.is_empty() {
            return;
        }
        if let Err(error) = self.backend.set_blob_notes(digest, notes).await {
            tracing::warn!(%digest, %error, "blob cache: could not write notes");
        }
    }

    /// Reads a note that holds a digest; anything else is no note.
    pub(super) async fn note_digest(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> Result<Option<Digest>> {
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

    /// The other copy of a layer, following `digest`'s note along `link`,
    /// only if the link is confirmed from both ends.
    ///
    /// Notes are advisory and anyone who can write below the cache can
    /// change them, so a note naming another blob is honoured only when:
    /// it names a different blob; both blobs are cached and look whole;
    /// and the target's note in the other direction names `digest` back.
    /// That stops a single tampered or stale note from making one blob
    /// pass for the copy of an unrelated one (and, for example, from
    /// getting it removed with an image that never used it). Someone able
    /// to write both notes consistently can still pair two blobs: the
    /// proof would be to decompress one and hash it, which costs a full
    /// read of the layer on every lookup, so that is out of scope.
    pub(super) async fn linked(&self, digest: &Digest, link: Link) -> Result<Option<BlobInfo>> {
        let (forward, back) = self.notes.link(link);
        let Some(other) = self.note_digest(digest, forward).await? else {
            return Ok(None);
        };
        if other == *digest {
            self.error();
            tracing::warn!(%digest, note = %forward, "blob cache: ignoring a note that names its own blob");
            return Ok(None);
        }
        if self.probe(digest).await?.is_none() {
            return Ok(None);
        }
        let Some(size) = self.probe(&other).await? else {
            return Ok(None);
        };
        let confirmed = self.note_digest(&other, back).await?;
        if confirmed != Some(*digest) {
            // Not counted as an error: a decompressed copy shared by a gzip
            // and a zstd layer names only the one put last, so the other
            // link is unconfirmed without anything being damaged.
            tracing::warn!(
                %digest,
                note = %forward,
                target = %other,
                back = ?confirmed.map(|d| d.to_string()),
                "blob cache: ignoring a note its target does not confirm"
            );
            return Ok(None);
        }
        Ok(Some(BlobInfo {
            digest: other,
            size,
        }))
    }

    /// Reads a text note.
    pub(super) async fn note_text(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> Result<Option<String>> {
        match self.backend.get_blob_note(digest, key).await {
            Ok(value) => Ok(String::from_utf8(value.to_vec()).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => self
                .lookup_failed("get_blob_note", digest, e)
                .map(|()| None),
        }
    }
}

pub(super) fn parse_size(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

pub(super) fn chunked(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::iter(pipe::split(data).map(Ok)))
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
