//! Errors of the image store.

use imagecache_core::{BoxError, ChainId, ConfigError, ImageId, LeaseId, LeaseResource, Reference};

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the image store can refuse or fail at.
///
/// Texts follow Docker's where Docker has one (`No such image: <term>`,
/// `unknown parent image ID <id>`, `invalid image JSON, no RootFS key`, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config was refused; nothing was stored.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// No image with this ID is in the store.
    #[error("failed to get digest {id}: no such image in the store")]
    NotFound {
        /// The ID looked for.
        id: ImageId,
    },
    /// Delete of an image the store does not hold (Docker: `unrecognized image ID`).
    #[error("unrecognized image ID {id}")]
    UnknownImage {
        /// The ID given.
        id: ImageId,
    },
    /// A search term matched nothing (Docker: `No such image: <term>`).
    /// Control characters in the term are shown escaped, so the text is
    /// safe to print on a terminal.
    #[error("No such image: {}", printable(term))]
    NoSuchImage {
        /// The term searched for.
        term: String,
    },
    /// A search term matched more than one image (Docker: `ambiguous digest string`).
    #[error("ambiguous digest string {term:?}: matches {first} and {second} at least")]
    Ambiguous {
        /// The term searched for.
        term: String,
        /// The first match.
        first: ImageId,
        /// Another match.
        second: ImageId,
    },
    /// No image has this name (Docker: `No such image: <name>`).
    #[error("No such image: {name}")]
    NameNotFound {
        /// The name looked for, with the default tag applied.
        name: Reference,
    },
    /// A digest reference names another image already; unlike a tag, it
    /// cannot be moved (Docker: `cannot overwrite digest`).
    #[error("cannot overwrite digest reference {name}: it names image {current}")]
    DigestInUse {
        /// The digest reference.
        name: Reference,
        /// The image it names.
        current: ImageId,
    },
    /// A search term was empty; it would match every image.
    #[error("empty search term: give at least one character of an image ID")]
    EmptySearch,
    /// The parent named is not in the store (Docker: `unknown parent image ID`).
    #[error("unknown parent image ID {parent}")]
    UnknownParent {
        /// The parent given.
        parent: ImageId,
    },
    /// Setting this parent would make the image its own ancestor.
    #[error("cannot set parent of {id} to {parent}: {parent} descends from {id}, a parent cycle")]
    ParentCycle {
        /// The image.
        id: ImageId,
        /// The parent refused.
        parent: ImageId,
    },
    /// The layer provider refused the image's layer chain.
    #[error("failed to get layer {chain_id}: {source}")]
    Layer {
        /// The chain.
        chain_id: ChainId,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A config stored in the backend no longer parses or verifies; it has
    /// been quarantined (or reported, if quarantine is off).
    #[error("image {id} is corrupt: {source}")]
    Corrupt {
        /// The image.
        id: ImageId,
        /// What reading or parsing it found.
        #[source]
        source: Box<Self>,
    },
    /// A live lease holds what was to be removed (Docker: `image is being
    /// used`). Release the lease, wait for it to expire, or force the
    /// removal.
    #[error("conflict: unable to remove {resource}: it is being used by lease {lease}")]
    Held {
        /// What was to be removed.
        resource: LeaseResource,
        /// The lease holding it.
        lease: LeaseId,
    },
    /// No lease has this ID (or it has expired).
    #[error("lease {id} not found")]
    LeaseNotFound {
        /// The ID looked for.
        id: LeaseId,
    },
    /// A lease with this ID exists already.
    #[error("lease {id} already exists")]
    LeaseExists {
        /// The ID.
        id: LeaseId,
    },
    /// A garbage collection kept removing a resource a new lease asked
    /// for, for longer than a holder waits.
    #[error(
        "a garbage collection (lease {lease}) is still removing resources this lease asked for; try again later"
    )]
    Collecting {
        /// The collection's lease.
        lease: LeaseId,
    },
    /// A listing filter could not be read.
    #[error("invalid filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter as given, at most 200 characters of it.
        filter: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] imagecache_core::Error),
}

/// `text` with its control characters (and the bidirectional overrides
/// that reorder what a terminal shows) escaped as `\u{…}`; other text is
/// left as it is.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Error {
    /// Whether the error means "no such image" (unknown ID or name, no
    /// search match).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound { .. }
            | Self::UnknownImage { .. }
            | Self::NoSuchImage { .. }
            | Self::NameNotFound { .. } => true,
            Self::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }

    /// Whether the backend could not be reached or lacked the servers to
    /// answer ([`imagecache_core::Error::Unavailable`]); retrying later may
    /// succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Backend(e) => e.is_unavailable(),
            Self::Corrupt { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }

    /// Whether a config read failed because the stored bytes are bad (they
    /// do not verify or do not parse), rather than because the backend
    /// could not read them. Only damage sets an image aside: a transient
    /// failure (a dropped connection, a busy file) must leave it in place.
    pub(crate) fn is_damage(&self) -> bool {
        use imagecache_core::Error as Core;
        match self {
            Self::InvalidConfig(_) | Self::Corrupt { .. } => true,
            Self::Backend(e) => matches!(
                e,
                Core::Corrupt { .. }
                    | Core::InvalidConfig(_)
                    | Core::EmptyData { .. }
                    | Core::DigestMismatch { .. }
                    | Core::Truncated { .. }
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_shown_without_raw_control_characters() {
        let e = Error::NoSuchImage {
            term: "a\u{1b}[31mb\u{0}\u{202e}c".into(),
        };
        assert_eq!(
            e.to_string(),
            "No such image: a\\u{1b}[31mb\\u{0}\\u{202e}c"
        );
        let e = Error::NoSuchImage {
            term: "busybox:latest".into(),
        };
        assert_eq!(e.to_string(), "No such image: busybox:latest");
    }
}
