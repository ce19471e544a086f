//! The command's errors, their exit codes and their one-line form.

use std::error::Error as StdError;
use std::path::PathBuf;

use imagecache_core::ImageId;

/// Exit code of a successful command.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code for "not found" and for a miss the command was asked about.
pub(crate) const EXIT_NOT_FOUND: u8 = 1;
/// Exit code for bad usage (clap uses the same).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for every other failure.
pub(crate) const EXIT_ERROR: u8 = 3;
/// Exit code after Ctrl-C, as shells report a process ended by SIGINT.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// `Result` with the command's [`CliError`].
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// The store URL could not be opened.
    #[error("cannot open store {}", redacted(url))]
    OpenStore {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: imagecache_core::Error,
    },
    /// No store URL was given and no default location could be derived.
    #[error(
        "no store given and no default location: set --store, IMAGECACHE_STORE, XDG_DATA_HOME or HOME"
    )]
    NoDefaultStore,
    /// The image store refused or failed.
    #[error(transparent)]
    Store(#[from] imagecache_store::Error),
    /// A life-cycle service (prune, removal, disk usage) failed or refused.
    #[error(transparent)]
    Lifecycle(#[from] imagecache_engine::lifecycle::Error),
    /// The builder cache failed.
    #[error(transparent)]
    Engine(#[from] imagecache_engine::Error),
    /// The blob cache refused or failed.
    #[error(transparent)]
    Blob(#[from] imagecache_engine::blob::Error),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] imagecache_core::Error),
    /// An import or export failed; nothing was imported or written.
    #[error(transparent)]
    Transfer(#[from] imagecache_transfer::Error),
    /// Something looked up does not exist.
    #[error("{what}")]
    NotFound {
        /// What was not found, as a sentence fragment.
        what: String,
    },
    /// An argument is not acceptable.
    #[error("invalid {what}: {reason}")]
    Usage {
        /// The argument.
        what: String,
        /// Why.
        reason: String,
    },
    /// `rm` of an image that has children, without `--force` (Docker's text).
    #[error(
        "conflict: unable to delete {} - image has dependent child images: {}",
        short(id),
        children.iter().map(short).collect::<Vec<_>>().join(", ")
    )]
    HasChildren {
        /// The image.
        id: ImageId,
        /// Its children.
        children: Vec<ImageId>,
    },
    /// A file could not be read or written.
    #[error("{}: {action} failed", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file given as input is not what it should be.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The parser's error, if any.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// Writing to standard output failed.
    #[error("writing output failed")]
    Output(#[source] std::io::Error),
    /// The conformance run had failures.
    #[error("{failed} conformance case(s) failed against {store}")]
    ConformanceFailed {
        /// How many.
        failed: usize,
        /// The store URL.
        store: String,
    },
    /// A blocking task stopped without a result.
    #[error("{task} stopped before it finished")]
    Join {
        /// The task.
        task: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Ctrl-C was pressed; the store is consistent.
    #[error("interrupted; the store is unchanged by the interrupted step")]
    Interrupted,
}

/// The first 12 hex digits of an ID, as Docker shows IDs.
/// A store URL as messages show it: the values of query keys that may
/// carry secrets (keys, secrets, tokens) are replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    let Some((location, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let secret = |key: &str| {
        let key = key.to_ascii_lowercase();
        ["secret", "token", "key_id", "password", "customer_key"]
            .iter()
            .any(|word| key.contains(word))
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if secret(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{location}?{}", pairs.join("&"))
}

pub(crate) fn short(id: &ImageId) -> String {
    id.hex()[..12].to_owned()
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound { .. } => EXIT_NOT_FOUND,
            // A store that is not there, asked for by a command that reads.
            Self::OpenStore { source, .. } if source.is_not_found() => EXIT_NOT_FOUND,
            Self::Usage { .. } | Self::NoDefaultStore => EXIT_USAGE,
            Self::Store(e) => store_exit_code(e),
            Self::Engine(imagecache_engine::Error::Store(e)) => store_exit_code(e),
            Self::Lifecycle(imagecache_engine::lifecycle::Error::Store(e)) => store_exit_code(e),
            Self::Engine(imagecache_engine::Error::UnknownImage { .. }) => EXIT_NOT_FOUND,
            Self::Interrupted => EXIT_INTERRUPTED,
            Self::Transfer(e) if e.is_interrupted() => EXIT_INTERRUPTED,
            Self::Transfer(imagecache_transfer::Error::NoSuchImage { .. }) => EXIT_NOT_FOUND,
            _ => EXIT_ERROR,
        }
    }

    /// The error and its sources on one line, joined with `": "`.
    ///
    /// A source whose text the message already contains is left out: many
    /// errors in the workspace quote their source in their own text.
    pub(crate) fn one_line(&self) -> String {
        crate::text::one_line(self)
    }
}

fn store_exit_code(e: &imagecache_store::Error) -> u8 {
    match e {
        imagecache_store::Error::EmptySearch | imagecache_store::Error::InvalidFilter { .. } => {
            EXIT_USAGE
        }
        e if e.is_not_found() => EXIT_NOT_FOUND,
        _ => EXIT_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_errors_exit_with_one() {
        let e = CliError::Store(imagecache_store::Error::NoSuchImage { term: "ab".into() });
        assert_eq!(e.exit_code(), EXIT_NOT_FOUND);
        assert_eq!(CliError::Interrupted.exit_code(), EXIT_INTERRUPTED);
        let e = CliError::Store(imagecache_store::Error::EmptySearch);
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn store_urls_in_messages_hide_secrets() {
        let url = "s3://b/p?endpoint=http://h:1&access_key_id=AK&secret_access_key=SK&aws_session_token=T&region=r";
        assert_eq!(
            redacted(url),
            "s3://b/p?endpoint=http://h:1&access_key_id=***&secret_access_key=***&aws_session_token=***&region=r"
        );
        assert_eq!(redacted("redb:///x.redb"), "redb:///x.redb");
    }
}
