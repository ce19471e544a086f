//! The contract error shared by every backend and the crates above them.
//!
//! Variants are backend-neutral and carry their context in fields, so callers
//! (and the conformance suite) match on them:
//! `matches!(err, Error::NotFound { .. })`. Where Docker has a well-known
//! error text, the `Display` form contains it (`failed to get digest`,
//! `failed to verify`, `invalid empty data`, `failed to read metadata`, …), so
//! logs read the same as Docker's.

use std::borrow::Cow;
use std::fmt;

use crate::digest::{Digest, DigestError, ImageId};

/// A boxed error used as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a stored item is, for error context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// An image config, by image ID.
    Image(ImageId),
    /// One metadata value of an image.
    Metadata {
        /// The image.
        id: ImageId,
        /// The metadata key.
        key: MetadataKey,
    },
    /// A cached blob, by digest.
    Blob(Digest),
    /// One note attached to a blob.
    BlobNote {
        /// The blob.
        digest: Digest,
        /// The note key.
        key: MetadataKey,
    },
    /// Anything else a backend names: a file, a table, an object key.
    Other(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(id) => write!(f, "image {id}"),
            Self::Metadata { id, key } => write!(f, "metadata {key:?} of image {id}"),
            Self::Blob(d) => write!(f, "blob {d}"),
            Self::BlobNote { digest, key } => write!(f, "note {key:?} of blob {digest}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Name of a small value stored beside an image or a blob.
///
/// One to 128 characters from `A-Z a-z 0-9 . _ -`, not starting with `.`,
/// so a key is always a safe single path component or object-key segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetadataKey(Cow<'static, str>);

impl MetadataKey {
    /// `parent`: the raw parent image ID string (`sha256:<hex>`, no newline).
    pub const PARENT: Self = Self(Cow::Borrowed("parent"));
    /// `lastUpdated`: an RFC 3339 timestamp with nanoseconds.
    pub const LAST_UPDATED: Self = Self(Cow::Borrowed("lastUpdated"));
    /// `builtLocally`: the single byte `0x01`.
    pub const BUILT_LOCALLY: Self = Self(Cow::Borrowed("builtLocally"));
    /// `lastUsed`: an RFC 3339 timestamp with nanoseconds, the last time the
    /// image answered a cache lookup (kept by imagecache; Docker ignores it).
    pub const LAST_USED: Self = Self(Cow::Borrowed("lastUsed"));

    /// Longest key accepted.
    pub const MAX_LEN: usize = 128;

    /// Validates a key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the key is empty, too long, starts with `.`
    /// or has a character outside `A-Z a-z 0-9 . _ -`.
    ///
    /// ```
    /// use imagecache_core::MetadataKey;
    /// assert!(MetadataKey::new("parent").is_ok());
    /// assert!(MetadataKey::new("../x").is_err());
    /// ```
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("empty")
        } else if key.len() > Self::MAX_LEN {
            Some("longer than 128 characters")
        } else if key.starts_with('.') {
            Some("starts with '.'")
        } else if !key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            Some("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidKey { key, reason }),
            None => Ok(Self(Cow::Owned(key))),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetadataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MetadataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for MetadataKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Why an image config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config had no bytes at all.
    #[error("invalid empty data")]
    Empty,
    /// The config is larger than the configured limit.
    #[error("config is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the config.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not JSON, or a field has the wrong JSON type.
    #[error("malformed image config at line {line} column {column}: {message}")]
    Malformed {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// `rootfs` is absent or `null` (Docker: `invalid image JSON, no RootFS key`).
    #[error("invalid image JSON, no RootFS key")]
    NoRootFs,
    /// More history entries add a layer than there are diff IDs.
    #[error(
        "too many non-empty layers in History section ({non_empty} non-empty entries, {diff_ids} diff_ids)"
    )]
    TooManyHistoryLayers {
        /// Number of history entries with `empty_layer` false or absent.
        non_empty: usize,
        /// Number of `rootfs.diff_ids`.
        diff_ids: usize,
    },
    /// A field parsed as JSON but holds a value that is not allowed.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The JSON field, e.g. `created` or `rootfs.diff_ids[2]`.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// The error every [`StoreBackend`](crate::StoreBackend) method returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The item does not exist.
    #[error("{}", not_found_text(key))]
    NotFound {
        /// What was looked for.
        key: Key,
    },
    /// The item already exists and the operation required that it did not.
    #[error("{key} already exists")]
    AlreadyExists {
        /// What exists.
        key: Key,
    },
    /// A precondition of the operation failed (for example a conditional write lost a race).
    #[error("precondition failed for {key}: {reason}")]
    Precondition {
        /// What the precondition was about.
        key: Key,
        /// What failed.
        reason: String,
    },
    /// A digest or ID string is not valid.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
    /// A metadata key, blob note key or other name is not valid.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A Docker image reference (`name[:tag][@digest]`) is not valid.
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference {
        /// The refused reference, at most 200 bytes of it.
        reference: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An image config was refused.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Data written under a key was empty (Docker: `invalid empty data`).
    #[error("invalid empty data for {key}")]
    EmptyData {
        /// Where the data was to be written.
        key: Key,
    },
    /// Data is larger than a limit.
    #[error("{key} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        key: Key,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Stored bytes no longer hash to their digest (Docker: `failed to verify`).
    #[error("failed to verify: {key}: {reason}")]
    Corrupt {
        /// The damaged item.
        key: Key,
        /// What was found, for example the digest the bytes really have.
        reason: String,
        /// The decoding failure behind it, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Bytes offered under a digest hash to something else; nothing was stored.
    #[error("failed to verify: expected {expected}, the data hashes to {actual}")]
    DigestMismatch {
        /// The digest the caller claimed.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A stream ended before the size it announced.
    #[error("{key} was truncated: expected {expected} bytes, got {actual}")]
    Truncated {
        /// The item.
        key: Key,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The backend does not support this operation.
    #[error("operation {operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// The backend.
        backend: &'static str,
    },
    /// The store is held by another process or handle.
    #[error("{backend} store {resource} is locked by {holder}")]
    Locked {
        /// The backend.
        backend: &'static str,
        /// The file or object that is locked.
        resource: String,
        /// Who holds it, as far as it can be told.
        holder: String,
    },
    /// The backend could not be configured or opened (bad URL, missing bucket, bad credentials…).
    #[error("cannot open {backend} store: {reason}")]
    Config {
        /// The backend.
        backend: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The operation was cancelled before it finished; nothing partial is visible.
    #[error("operation cancelled")]
    Cancelled,
    /// The store cannot be reached, or cannot answer because too few of its
    /// servers are up: a refused or timed-out connection, a server that
    /// says it is unavailable, a replicated store that misses the quorum a
    /// read or write needs. Retrying later may succeed. A read changed
    /// nothing; a write may or may not have taken effect, and the backend's
    /// own rules for an interrupted write apply (see its docs).
    #[error("{backend} store is unavailable{}: {reason}", key_suffix(key))]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// The item involved, if known.
        key: Option<Key>,
        /// What could not be reached and what was answered, for a person.
        reason: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// Any other failure of the storage engine (I/O, network, database).
    #[error("{backend} backend error{}: {source}", key_suffix(key))]
    Backend {
        /// The backend.
        backend: &'static str,
        /// The item involved, if known.
        key: Option<Key>,
        /// Whether retrying the same operation may succeed (network faults, timeouts).
        retryable: bool,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

fn not_found_text(key: &Key) -> String {
    match key {
        Key::Image(id) => format!("failed to get digest {id}: not found"),
        Key::Metadata { id, key } => {
            format!("failed to read metadata {key:?} of image {id}: not found")
        }
        other => format!("{other} not found"),
    }
}

fn key_suffix(key: &Option<Key>) -> String {
    key.as_ref().map(|k| format!(" on {k}")).unwrap_or_default()
}

impl Error {
    /// Shorthand for a [`Error::Backend`] that is not retryable.
    pub fn backend(backend: &'static str, key: Option<Key>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            key,
            retryable: false,
            source: source.into(),
        }
    }

    /// Whether the error is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether retrying the operation may succeed: the store is
    /// [unavailable](Error::Unavailable), or a [`Error::Backend`] failure
    /// is marked retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Backend {
                    retryable: true,
                    ..
                }
        )
    }

    /// Whether the error is [`Error::Unavailable`]: the store could not be
    /// reached or lacks the servers to answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// An error and the sources behind it as one text, each source appended
/// after `: ` unless the text already says it (as a transparent wrapper or
/// a message that embeds its source does): what a report, a quarantine
/// record or a one-line message keeps of a failure.
///
/// ```
/// let err = std::io::Error::other("disk on fire");
/// assert_eq!(imagecache_core::error_text(&err), "disk on fire");
/// ```
pub fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_texts_survive() {
        let id = ImageId::of_config(b"x");
        let e = Error::NotFound {
            key: Key::Image(id),
        };
        assert!(e.to_string().contains("failed to get digest"));
        let e = Error::NotFound {
            key: Key::Metadata {
                id,
                key: MetadataKey::PARENT,
            },
        };
        assert!(e.to_string().contains("failed to read metadata"));
        assert!(
            Error::EmptyData {
                key: Key::Image(id)
            }
            .to_string()
            .contains("invalid empty data")
        );
        assert_eq!(
            ConfigError::NoRootFs.to_string(),
            "invalid image JSON, no RootFS key"
        );
        assert!(
            ConfigError::TooManyHistoryLayers {
                non_empty: 2,
                diff_ids: 1
            }
            .to_string()
            .starts_with("too many non-empty layers in History section")
        );
    }
}
