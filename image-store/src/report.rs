//! What a store reports: problems found on open, and what it knows about
//! an image without its config.

use std::fmt;
use std::sync::Arc;

use imagecache_core::{ChainId, ImageId, MetadataKey, Platform, Quarantined, Timestamp};

/// Something found wrong while opening or refreshing a store. The store
/// opened anyway; these entries are left out or set right in memory only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An image was set aside (quarantined) now or earlier.
    Quarantined(Quarantined),
    /// A config could not be read or parsed; with quarantine off it stays
    /// where it is and is left out of the store.
    Unreadable {
        /// The image.
        id: ImageId,
        /// Why.
        reason: String,
    },
    /// A metadata value could not be understood and is ignored.
    BadMetadata {
        /// The image.
        id: ImageId,
        /// The key.
        key: MetadataKey,
        /// Why.
        reason: String,
    },
    /// Stored parent links formed a cycle; this image's link is ignored in memory.
    ParentCycle {
        /// The image whose link was ignored.
        id: ImageId,
        /// The parent it named.
        parent: ImageId,
    },
    /// The layer provider refused the image's layers; the image is left out.
    MissingLayer {
        /// The image.
        id: ImageId,
        /// Its chain.
        chain_id: ChainId,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quarantined(q) => write!(f, "{} quarantined: {}", q.name, q.reason),
            Self::Unreadable { id, reason } => write!(f, "image {id} unreadable: {reason}"),
            Self::BadMetadata { id, key, reason } => {
                write!(f, "image {id} metadata {key:?} ignored: {reason}")
            }
            Self::ParentCycle { id, parent } => {
                write!(
                    f,
                    "image {id}: parent {parent} would close a cycle; link ignored"
                )
            }
            Self::MissingLayer {
                id,
                chain_id,
                reason,
            } => write!(f, "image {id} left out: layer {chain_id}: {reason}"),
        }
    }
}

/// What opening (or refreshing) a store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Images in the store.
    pub images: usize,
    /// Names (`busybox:latest`) in the store.
    pub names: usize,
    /// Configs that had to be read because no summary was stored for them
    /// (new since the last open, or written by another program).
    pub configs_read: usize,
    /// Everything that was wrong.
    pub problems: Vec<Problem>,
}

/// A snapshot of what the store knows about an image, without its config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ImageInfo {
    /// The image.
    pub id: ImageId,
    /// Its stored parent.
    pub parent: Option<ImageId>,
    /// Its children, sorted.
    pub children: Vec<ImageId>,
    /// Whether it was built locally.
    pub built_locally: bool,
    /// When it was last tagged or touched.
    pub last_updated: Option<Timestamp>,
    /// Its config's `created` time.
    pub created: Option<Timestamp>,
    /// Its platform.
    pub platform: Arc<Platform>,
    /// Size of its config in bytes.
    pub config_len: u64,
    /// Number of history entries.
    pub history_len: u32,
    /// Number of layers.
    pub layers: u32,
    /// Its layer chain, if any.
    pub chain_id: Option<ChainId>,
}

/// An image that may answer a classic builder cache probe: see
/// [`Store::cache_candidates`](crate::Store::cache_candidates).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Candidate {
    /// The image.
    pub id: ImageId,
    /// Whether it was built locally.
    pub built_locally: bool,
    /// Its `created` time.
    pub created: Option<Timestamp>,
    /// Its platform.
    pub platform: Arc<Platform>,
    /// The [`ExactKey`](imagecache_core::ExactKey) of its container config:
    /// equal to the probe's, it settles `compare` without the config.
    pub exact_key: imagecache_core::ExactKey,
}
