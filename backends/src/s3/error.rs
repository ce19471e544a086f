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
    /// The server could not be reached when the store was opened, or said
    /// it is unavailable.
    #[error("{reason}")]
    Unreachable {
        /// What could not be reached, and what to check.
        reason: String,
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
    unavailability(err).is_some()
        || matches!(
            s3_error_code(err).as_deref(),
            Some("SlowDown" | "InternalError" | "RequestTimeout")
        )
}

/// Why the server could not be used, when the failure says that it could
/// not be reached or that it cannot serve requests now: no connection, a
/// connection that broke or timed out, or a `503 ServiceUnavailable`
/// answer (Garage's answer when a replicated bucket misses its quorum).
/// `None` for every other failure, including errors the server chose to
/// return about the request itself.
pub(super) fn unavailability(err: &object_store::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect => Some("cannot connect to the server".to_owned()),
                HttpErrorKind::Timeout => Some("the server did not answer in time".to_owned()),
                HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    Some("the connection to the server broke".to_owned())
                }
                _ => None,
            };
        }
        current = e.source();
    }
    let unavailable = s3_error_code(err).as_deref() == Some("ServiceUnavailable")
        // An answer without a body (to a HEAD request) has only its status.
        || http_status(err) == Some(503);
    if unavailable {
        return Some(match s3_error_field(err, "Message") {
            Some(message) => format!("the server is unavailable: {message}"),
            None => "the server answered 503 Service Unavailable".to_owned(),
        });
    }
    None
}

/// The HTTP status of a failed request, as object_store's message for a
/// non-2xx answer gives it (the type that holds it is private).
fn http_status(err: &object_store::Error) -> Option<u16> {
    const MARK: &str = "status code: ";
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(start) = text.find(MARK) {
            let digits = text.get(start + MARK.len()..start + MARK.len() + 3)?;
            return digits.parse().ok();
        }
        current = e.source();
    }
    None
}

/// The S3 error code (`NoSuchBucket`, `AccessDenied`, …) of a failed request.
///
/// object_store keeps the status of most failures only inside a private
/// type, but the server's XML error body, whose `<Code>` values S3 documents
/// as stable, is part of the error's message.
pub(super) fn s3_error_code(err: &object_store::Error) -> Option<String> {
    s3_error_field(err, "Code")
}

/// The text of element `<field>` of the S3 XML error body in a failed
/// request's message, with XML's character escapes undone.
fn s3_error_field(err: &object_store::Error, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let close = format!("</{field}>");
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(start) = text.find(&open) {
            let rest = &text[start + open.len()..];
            if let Some(end) = rest.find(&close) {
                return Some(unescape_xml(&rest[..end]));
            }
        }
        current = e.source();
    }
    None
}

fn unescape_xml(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
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
                other => match unavailability(&other) {
                    Some(why) => Self::Unavailable {
                        backend: NAME,
                        reason: format!("{op} {key}: {why}"),
                        key: Some(key),
                        source: Box::new(other),
                    },
                    None => Self::Backend {
                        backend: NAME,
                        retryable: is_transient(&other),
                        key: Some(key),
                        source: Box::new(other),
                    },
                },
            },
            Error::Unreachable { reason, source } => Self::Unavailable {
                backend: NAME,
                key: None,
                reason,
                source: Box::new(source),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure with `text` as its source's message, as object_store
    /// reports a non-2xx answer.
    fn failed(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(text.to_owned())),
        }
    }

    #[test]
    fn a_quorum_failure_is_unavailable_with_the_servers_words() {
        let err = failed(
            "Server returned non-2xx status code: 503 Service Unavailable: <?xml version=\"1.0\"?>\
             <Error><Code>ServiceUnavailable</Code><Message>Could not reach quorum of 2: \
             [&quot;Not connected&quot;]</Message></Error>",
        );
        assert_eq!(
            unavailability(&err).as_deref(),
            Some("the server is unavailable: Could not reach quorum of 2: [\"Not connected\"]")
        );
        assert!(is_transient(&err));
    }

    #[test]
    fn a_503_without_a_body_is_unavailable() {
        let err = failed("Server returned non-2xx status code: 503 Service Unavailable: ");
        assert_eq!(
            unavailability(&err).as_deref(),
            Some("the server answered 503 Service Unavailable")
        );
    }

    #[test]
    fn other_server_errors_are_not_unavailable() {
        let internal = failed(
            "Server returned non-2xx status code: 500 Internal Server Error: \
             <Error><Code>InternalError</Code></Error>",
        );
        assert_eq!(unavailability(&internal), None);
        assert!(is_transient(&internal), "a 500 may be retried");
        let denied = failed(
            "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>",
        );
        assert_eq!(unavailability(&denied), None);
        assert!(!is_transient(&denied));
        let mapped =
            imagecache_core::Error::from(Error::store("get", Key::Other("x".into()), internal));
        assert!(
            mapped.is_retryable() && !mapped.is_unavailable(),
            "{mapped:?}"
        );
    }

    #[test]
    fn unavailable_maps_to_the_contract_kind_naming_the_request() {
        let err = Error::store(
            "put",
            Key::Other("p/log/1".into()),
            failed("Server returned non-2xx status code: 503 Service Unavailable: "),
        );
        match imagecache_core::Error::from(err) {
            imagecache_core::Error::Unavailable {
                backend,
                reason,
                key,
                ..
            } => {
                assert_eq!(backend, "s3");
                assert!(reason.starts_with("put p/log/1: "), "{reason}");
                assert!(key.is_some());
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
