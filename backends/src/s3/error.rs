//! The S3 backend's own failures and their mapping onto the contract error.

use imagecache_core::{BoxError, Key};
use object_store::client::{HttpError, HttpErrorKind};

use super::NAME;

/// What can go wrong inside the S3 backend.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    /// The configuration is unusable or the store cannot be opened.
    #[error("{reason}")]
    Config {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A request to the object store failed.
    #[error("{op} {key}: {source}")]
    Store {
        /// What was being done (`get`, `put`, `list` …).
        op: &'static str,
        /// The item, or the object key when no better name exists.
        key: Key,
        #[source]
        source: object_store::Error,
    },
    /// Objects kept disappearing under concurrent compaction.
    #[error("the log under {prefix} kept changing during {attempts} attempts to read it")]
    Unsettled { prefix: String, attempts: usize },
    /// The body of a blob upload failed; the upload was abandoned.
    #[error(transparent)]
    Body(imagecache_core::Error),
}

impl Error {
    pub(super) fn store(op: &'static str, key: Key, source: object_store::Error) -> Self {
        Self::Store { op, key, source }
    }
}

/// Whether a failure is a network fault, a timeout or a server asking to
/// slow down: something a retry may cure.
pub(super) fn is_transient(err: &object_store::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        current = e.source();
    }
    matches!(
        s3_error_code(err).as_deref(),
        Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout")
    )
}

/// The S3 error code (`NoSuchBucket`, `AccessDenied`, …) of a failed request.
///
/// object_store keeps the status of most failures only inside a private
/// type, but the server's XML error body, whose `<Code>` values S3 documents
/// as stable, is part of the error's message.
pub(super) fn s3_error_code(err: &object_store::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(start) = text.find("<Code>") {
            let rest = &text[start + "<Code>".len()..];
            if let Some(end) = rest.find("</Code>") {
                return Some(rest[..end].to_owned());
            }
        }
        current = e.source();
    }
    None
}

impl From<Error> for imagecache_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Config { reason, source } => Self::Config {
                backend: NAME,
                reason,
                source,
            },
            Error::Store { op, key, source } => match source {
                object_store::Error::NotFound { .. } => Self::NotFound { key },
                object_store::Error::AlreadyExists { .. } => Self::AlreadyExists { key },
                object_store::Error::Precondition { .. } => Self::Precondition {
                    key,
                    reason: format!("conditional {op} lost a race"),
                },
                other => Self::Backend {
                    backend: NAME,
                    retryable: is_transient(&other),
                    key: Some(key),
                    source: Box::new(other),
                },
            },
            err @ Error::Unsettled { .. } => Self::Backend {
                backend: NAME,
                key: None,
                retryable: true,
                source: Box::new(err),
            },
            Error::Body(e) => e,
        }
    }
}
