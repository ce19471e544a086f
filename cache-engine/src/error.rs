//! Errors of the cache engine.

use imagecache_core::ImageId;

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cache lookup or a blob cache operation can fail with. A cache
/// miss is never an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The parent of a lookup is not in the store (Docker: `unable to find image`).
    #[error("unable to find image {id}")]
    UnknownImage {
        /// The image.
        id: ImageId,
        /// Why it could not be read.
        #[source]
        source: imagecache_store::Error,
    },
    /// A cache-from source ended at the probed step, but linking it to the
    /// build's parent failed.
    #[error("failed to set parent for {target} to {parent}")]
    SetParent {
        /// The source image.
        target: ImageId,
        /// The parent of the step.
        parent: ImageId,
        /// Why.
        #[source]
        source: imagecache_store::Error,
    },
    /// Building or storing the intermediate image of a cache-from hit failed.
    #[error("failed to restore cached image from {} to {target}", parent.map_or_else(|| "scratch".to_owned(), |p| p.to_string()))]
    Restore {
        /// The parent of the step, `None` for scratch.
        parent: Option<ImageId>,
        /// The source image whose history matched.
        target: ImageId,
        /// Why.
        #[source]
        source: Box<Self>,
    },
    /// An image's history names more layers than its `rootfs` has.
    #[error(
        "image {id}: history entry {index} adds layer {layer} but rootfs has only {diff_ids} diff_ids"
    )]
    MalformedHistory {
        /// The image.
        id: ImageId,
        /// The history index.
        index: usize,
        /// The 0-based layer the entry would add.
        layer: usize,
        /// How many diff IDs there are.
        diff_ids: usize,
    },
    /// Resolving cache-from sources was cancelled.
    #[error("cache-from resolution cancelled")]
    Cancelled,
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] imagecache_store::Error),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] imagecache_core::Error),
    /// The blob cache failed.
    #[error(transparent)]
    Blob(#[from] crate::blob::Error),
}
