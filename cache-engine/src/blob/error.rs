//! The blob cache's error type.

use imagecache_core::{Digest, Key};

use super::Compression;

/// `Result` with the blob cache's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a blob cache operation failed.
///
/// Every variant names the blob involved. Variants about bad input
/// ([`Error::DigestMismatch`], [`Error::Truncated`], [`Error::TooLarge`],
/// [`Error::UnsupportedCompression`], [`Error::Decompress`],
/// [`Error::DecompressedMismatch`], [`Error::DecompressionBomb`],
/// [`Error::Source`], [`Error::EmptyManifest`])
/// guarantee that nothing was stored under the digest the caller named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes offered under a digest hash to something else.
    #[error("failed to verify blob {expected}: the data hashes to {actual}; nothing was stored")]
    DigestMismatch {
        /// The digest the caller named.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The body ended before the size the caller announced.
    #[error(
        "blob {digest} was truncated: expected {expected} bytes, got {actual}; nothing was stored"
    )]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The body was longer than the size announced, or than a limit of the cache.
    #[error(
        "blob {digest} has at least {size} bytes, over the limit of {limit}; nothing was stored"
    )]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Bytes received when the limit was crossed (or the whole size, when known).
        size: u64,
        /// The limit: the announced size or the cache's manifest limit.
        limit: u64,
    },
    /// A manifest with no bytes.
    #[error("manifest {digest} is empty; nothing was stored")]
    EmptyManifest {
        /// The digest the caller named.
        digest: Digest,
    },
    /// A layer uses a compression the cache cannot decompress.
    #[error(
        "layer {digest} uses {compression} compression, which is not supported; nothing was stored"
    )]
    UnsupportedCompression {
        /// The layer.
        digest: Digest,
        /// The compression, as named by the media type or recognised from the data.
        compression: String,
    },
    /// A layer's bytes are not valid data of its compression.
    #[error("layer {digest} is not valid {compression} data; nothing was stored")]
    Decompress {
        /// The compressed layer.
        digest: Digest,
        /// The compression it was read as.
        compression: Compression,
        /// What the decoder reported.
        #[source]
        source: std::io::Error,
    },
    /// A layer decompresses to something other than the diff ID the caller named.
    #[error("layer {compressed} decompresses to {actual}, expected {expected}; nothing was stored")]
    DecompressedMismatch {
        /// The compressed layer.
        compressed: Digest,
        /// The diff ID the caller named.
        expected: Digest,
        /// The digest of the decompressed bytes.
        actual: Digest,
    },
    /// A layer decompresses to more than a limit of the cache allows
    /// ([`BlobCacheOptions::max_decompressed_size`](super::BlobCacheOptions::max_decompressed_size)
    /// or [`BlobCacheOptions::max_decompression_ratio`](super::BlobCacheOptions::max_decompression_ratio)).
    /// Decompression stopped there, and neither copy was stored.
    #[error(
        "layer {digest} decompressed to {decompressed} bytes from {compressed} compressed bytes, over {limit}; nothing was stored"
    )]
    DecompressionBomb {
        /// The compressed layer.
        digest: Digest,
        /// Compressed bytes read when the limit was crossed.
        compressed: u64,
        /// Decompressed bytes when the limit was crossed.
        decompressed: u64,
        /// The limit crossed.
        limit: DecompressionLimit,
    },
    /// The caller's body stream failed.
    #[error("reading the body of blob {digest} failed; nothing was stored")]
    Source {
        /// The blob being stored.
        digest: Digest,
        /// The body's error.
        #[source]
        source: imagecache_core::Error,
    },
    /// A cached blob's bytes did not match its digest or size when read; it
    /// has been evicted, so the next lookup is a clean miss.
    #[error("failed to verify cached blob {digest}: {reason}; the blob was evicted")]
    Corrupt {
        /// The damaged blob.
        digest: Digest,
        /// What was found.
        reason: String,
    },
    /// The backend failed while a cached blob was being read.
    #[error("reading cached blob {digest} failed")]
    Read {
        /// The blob.
        digest: Digest,
        /// The backend's error.
        #[source]
        source: imagecache_core::Error,
    },
    /// The destination of a copy failed.
    #[error("writing cached blob {digest} to its destination failed")]
    Write {
        /// The blob.
        digest: Digest,
        /// The destination's error.
        #[source]
        source: std::io::Error,
    },
    /// A backend operation failed.
    #[error("blob cache: {operation} failed{}", on_digest(digest))]
    Backend {
        /// The backend method, such as `put_blob` or `list_blobs`.
        operation: &'static str,
        /// The blob involved, if any.
        digest: Option<Digest>,
        /// The backend's error.
        #[source]
        source: imagecache_core::Error,
    },
    /// The operation runs work on Tokio's blocking pool and was called outside a Tokio runtime.
    #[error("{operation} needs a Tokio runtime")]
    NoRuntime {
        /// The operation.
        operation: &'static str,
    },
    /// A stage of a pipeline stopped without a result (it was cancelled or panicked).
    #[error("{stage} of blob {digest} stopped before it finished; nothing was stored")]
    Interrupted {
        /// The blob.
        digest: Digest,
        /// The stage, such as `decompression`.
        stage: &'static str,
    },
}

/// Which bound on decompression a layer crossed; see [`Error::DecompressionBomb`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressionLimit {
    /// The largest decompressed size, in bytes.
    Size(u64),
    /// The largest ratio of decompressed to compressed bytes.
    Ratio(u64),
}

impl std::fmt::Display for DecompressionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Size(bytes) => write!(f, "the limit of {bytes} decompressed bytes"),
            Self::Ratio(ratio) => write!(f, "the limit of {ratio}:1 decompressed to compressed"),
        }
    }
}

fn on_digest(digest: &Option<Digest>) -> String {
    digest.map(|d| format!(" on blob {d}")).unwrap_or_default()
}

impl Error {
    pub(super) fn backend(
        operation: &'static str,
        digest: Option<Digest>,
        source: imagecache_core::Error,
    ) -> Self {
        Self::Backend {
            operation,
            digest,
            source,
        }
    }

    /// Whether the error was caused by the input the caller offered (wrong
    /// digest, short body, bad compressed data…) rather than by the cache or
    /// its backend.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. }
                | Self::Truncated { .. }
                | Self::TooLarge { .. }
                | Self::EmptyManifest { .. }
                | Self::UnsupportedCompression { .. }
                | Self::Decompress { .. }
                | Self::DecompressedMismatch { .. }
                | Self::DecompressionBomb { .. }
                | Self::Source { .. }
        )
    }

    /// Whether the backend could not be reached or lacked the servers to
    /// answer ([`imagecache_core::Error::Unavailable`]); retrying later may
    /// succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Read { source, .. } | Self::Backend { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }
}

impl From<Error> for imagecache_core::Error {
    /// Maps to the contract error, so blob cache results can travel through
    /// a [`imagecache_core::ByteStream`] (for example into another backend's `put_blob`).
    fn from(err: Error) -> Self {
        match err {
            Error::DigestMismatch { expected, actual } => Self::DigestMismatch { expected, actual },
            Error::Truncated {
                digest,
                expected,
                actual,
            } => Self::Truncated {
                key: Key::Blob(digest),
                expected,
                actual,
            },
            Error::TooLarge {
                digest,
                size,
                limit,
            } => Self::TooLarge {
                key: Key::Blob(digest),
                size,
                limit,
            },
            Error::Corrupt { digest, reason } => Self::Corrupt {
                key: Key::Blob(digest),
                reason,
                source: None,
            },
            Error::Source { source, .. }
            | Error::Read { source, .. }
            | Error::Backend { source, .. } => source,
            other => {
                let key = match &other {
                    Error::EmptyManifest { digest }
                    | Error::UnsupportedCompression { digest, .. }
                    | Error::Decompress { digest, .. }
                    | Error::DecompressionBomb { digest, .. }
                    | Error::Write { digest, .. }
                    | Error::Interrupted { digest, .. } => Some(Key::Blob(*digest)),
                    Error::DecompressedMismatch { compressed, .. } => Some(Key::Blob(*compressed)),
                    _ => None,
                };
                Self::backend("blob-cache", key, other)
            }
        }
    }
}
