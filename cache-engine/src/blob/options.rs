//! Settings of a blob cache, options of a put, and what the cache reports.

use bytes::Bytes;
use imagecache_core::Digest;

/// Settings of a [`BlobCache`](super::BlobCache).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobCacheOptions {
    /// Return backend failures during lookups as errors instead of counting
    /// them as misses. Off by default: a cache that cannot be read should
    /// slow a build down, not fail it.
    pub strict: bool,
    /// Largest manifest accepted by [`BlobCache::put_manifest`](super::BlobCache::put_manifest) and returned
    /// by [`BlobCache::get_manifest`](super::BlobCache::get_manifest). Default 4 MiB, as registries commonly allow.
    pub max_manifest_size: u64,
    /// Largest decompressed copy [`BlobCache::put_layer`](super::BlobCache::put_layer)
    /// makes of a compressed layer. Default 64 GiB: far above any layer a
    /// registry serves in practice, so it only stops a stream that would
    /// otherwise fill the disk.
    pub max_decompressed_size: u64,
    /// Largest ratio of decompressed to compressed bytes accepted once a
    /// layer has decompressed to more than
    /// [`BlobCacheOptions::decompression_ratio_floor`]. Default 100.
    ///
    /// Real layers compress 2 to 10 times, text-heavy ones up to 20 or 30;
    /// gzip cannot exceed about 1030 and a small bomb (gigabytes of zeros
    /// in a few megabytes) sits near it. 100 leaves real layers a wide
    /// margin and stops a bomb after it has written 100 times its own size.
    /// The ratio is taken against the compressed bytes read so far, the
    /// only count a hostile stream cannot inflate, so a layer that *starts*
    /// with a long run of zeros (a preallocated file) can trip it even if
    /// it compresses less overall; raise this or the floor for such images.
    pub max_decompression_ratio: u64,
    /// Decompressed bytes a layer may reach before
    /// [`BlobCacheOptions::max_decompression_ratio`] applies. Default 64 MiB,
    /// so small, very compressible layers (a few files of zeros, a
    /// directory of text) are never refused by ratio.
    pub decompression_ratio_floor: u64,
}

impl Default for BlobCacheOptions {
    fn default() -> Self {
        Self {
            strict: false,
            max_manifest_size: 4 << 20,
            max_decompressed_size: 64 << 30,
            max_decompression_ratio: 100,
            decompression_ratio_floor: 64 << 20,
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

    /// Sets [`BlobCacheOptions::max_decompressed_size`].
    pub fn with_max_decompressed_size(mut self, bytes: u64) -> Self {
        self.max_decompressed_size = bytes;
        self
    }

    /// Sets [`BlobCacheOptions::max_decompression_ratio`].
    pub fn with_max_decompression_ratio(mut self, ratio: u64) -> Self {
        self.max_decompression_ratio = ratio;
        self
    }

    /// Sets [`BlobCacheOptions::decompression_ratio_floor`].
    pub fn with_decompression_ratio_floor(mut self, bytes: u64) -> Self {
        self.decompression_ratio_floor = bytes;
        self
    }
}

/// Options of one [`BlobCache::put_opts`](super::BlobCache::put_opts).
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

/// What [`BlobCache::clear`](super::BlobCache::clear) removed.
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
