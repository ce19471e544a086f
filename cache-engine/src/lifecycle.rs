//! The life cycle of a store and its blob cache: removing images and blobs
//! with their leases respected, garbage collection under policies, and
//! disk usage.
//!
//! [`Lifecycle`] pairs a [`Store`] with an optional [`BlobCache`] and
//! offers what a builder, a pull or an operator needs to keep a cache from
//! filling its disk without ever removing what a running task holds.
//!
//! # What is kept
//!
//! An item (image or blob) is kept when a kept item refers to it:
//!
//! * an image refers to its parent, to the blobs of its layers (by diff
//!   ID), to its config stored as a blob, and to the manifests whose config
//!   it is;
//! * a layer blob refers to its other copies named by notes (gzip, zstd,
//!   decompressed) — so a layer's zstd copy goes with it;
//! * a manifest refers to its config, its layers and the manifests an index
//!   lists.
//!
//! The roots are the images no policy selects, everything a live lease
//! holds ([`Store::held`]: images with their ancestors, layers, blobs), and
//! blobs younger than the [grace period](LifecycleOptions::blob_grace), so
//! a blob put just before the image or manifest that refers to it is not
//! collected in between. Notes are untrusted, and they are used only to
//! keep more, never to remove anything; so a blob whose notes (or manifest
//! body) cannot be read when the collection looks is a root too
//! ([`Reason::Unreadable`]), and a later collection decides about it.
//!
//! # Safe while builds run
//!
//! A collection is mark and sweep under a lease of its own:
//!
//! 1. **Plan** ([`Lifecycle::plan`]): read the leases, mark what is kept,
//!    decide what goes, each decision with its [`Reason`]. Nothing changes.
//! 2. **Announce**: write a lease labelled
//!    [`GC_LEASE_LABEL`](imagecache_core::GC_LEASE_LABEL) that names every
//!    item about to go. It holds nothing; it tells holders to wait.
//! 3. **Re-check**: read the leases again and plan again. Only what both
//!    plans remove, and what nothing kept by the second refers to, goes. A
//!    holder writes its lease before it reads for collection leases
//!    ([`Store::create_lease`]), and the collector writes before it reads
//!    too, so one of them always sees the other: either the lease is seen
//!    here and its resources stay, or the holder waits until this
//!    collection is over and then finds its resources present or gone,
//!    never removed from under it.
//! 4. **Sweep**: remove images children first with
//!    [`Store::delete_unused`], which keeps an image that gained a child or
//!    a name in the meantime; then remove the blobs that nothing still
//!    stored refers to (images created during the sweep are read and
//!    counted); then delete the collection's lease and the expired leases,
//!    and reclaim temp files whose writer is gone.
//!
//! The same holds across processes and machines on backends that share
//! leases (fs, redb through one process, S3 between clients of a bucket).
//!
//! # Last use
//!
//! An image's last use is the latest of its creation, its last update (a
//! tag, an import) and its last cache hit. Hits are recorded by
//! [`LocalCache::lookup`](crate::LocalCache::lookup) through
//! [`Store::record_use`], which costs a map insert, and written in one
//! batch by [`Store::flush_uses`], which every collection calls first.

mod check;
mod graph;
mod plan;
mod policy;
mod sweep;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imagecache_core::{Digest, Image, ImageId, LeaseId, LeaseResource, Timestamp};
use imagecache_store::Store;

use crate::blob::BlobCache;

pub use check::{CheckProblem, CheckReport, LAST_CHECK_LEASE};
pub use graph::Item;
pub use plan::{Plan, PlanItem, Reason};
pub use policy::{Filter, Policy, parse_duration};
pub use sweep::{Collector, GcProgress, GcReport, ProgressFn};
pub use usage::{BlobUsage, DiskUsage};

/// Errors of the life-cycle services.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A live lease holds what was to be removed.
    #[error("conflict: unable to remove {resource}: it is being used by lease {lease}")]
    Held {
        /// What was to be removed.
        resource: LeaseResource,
        /// The lease holding it.
        lease: LeaseId,
    },
    /// A prune filter could not be read.
    #[error("invalid filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong.
        reason: String,
    },
    /// The image store failed or refused.
    #[error(transparent)]
    Store(#[from] imagecache_store::Error),
    /// The blob cache failed.
    #[error(transparent)]
    Blob(#[from] crate::blob::Error),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] imagecache_core::Error),
    /// The collection was cancelled; what was removed so far is reported
    /// by the progress callback.
    #[error("garbage collection cancelled")]
    Cancelled,
}

/// `Result` with the life-cycle [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`Lifecycle`] collects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LifecycleOptions {
    /// Blobs stored more recently than this are never collected (default
    /// 10 minutes).
    pub blob_grace: Duration,
    /// How long the lease a collection announces itself with lives (default
    /// 10 minutes); a holder waits at most this long for a collection that
    /// died.
    pub collection_ttl: Duration,
    /// A path on the filesystem that holds the store, where
    /// [`Policy::min_free_space`] is measured.
    pub free_space_path: Option<PathBuf>,
}

impl Default for LifecycleOptions {
    fn default() -> Self {
        Self {
            blob_grace: Duration::from_secs(600),
            collection_ttl: Duration::from_secs(600),
            free_space_path: None,
        }
    }
}

impl LifecycleOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the grace period of new blobs.
    #[must_use]
    pub fn with_blob_grace(mut self, grace: Duration) -> Self {
        self.blob_grace = grace;
        self
    }

    /// Sets the life of a collection's lease.
    #[must_use]
    pub fn with_collection_ttl(mut self, ttl: Duration) -> Self {
        self.collection_ttl = ttl;
        self
    }

    /// Sets where free space is measured.
    #[must_use]
    pub fn with_free_space_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.free_space_path = Some(path.into());
        self
    }
}

/// The life-cycle services over a store and its blob cache; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    store: Store,
    blobs: Option<BlobCache>,
    options: LifecycleOptions,
}

/// What [`Lifecycle::remove_image`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removed {
    /// The image.
    pub image: Option<ImageId>,
    /// Blobs that only it referred to, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

impl Lifecycle {
    /// Services over `store` and, when given, its blob cache, with default
    /// options.
    pub fn new(store: Store, blobs: Option<BlobCache>) -> Self {
        Self::with_options(store, blobs, LifecycleOptions::default())
    }

    /// Services with options.
    pub fn with_options(store: Store, blobs: Option<BlobCache>, options: LifecycleOptions) -> Self {
        Self {
            store,
            blobs,
            options,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The blob cache, if any.
    pub fn blobs(&self) -> Option<&BlobCache> {
        self.blobs.as_ref()
    }

    /// The options.
    pub fn options(&self) -> &LifecycleOptions {
        &self.options
    }

    /// Removes an image (its names go with it, its children are orphaned)
    /// and the blobs that nothing else kept refers to: its layers, their
    /// compressed and decompressed copies, its manifests.
    ///
    /// # Errors
    /// [`Error::Held`] naming the lease when a live lease holds the image
    /// or one of its descendants, unless `force`; store and blob failures.
    pub async fn remove_image(&self, id: &ImageId, force: bool) -> Result<Removed> {
        let image = self.store.get(id).await?;
        let result = if force {
            self.store.delete_forced(id).await
        } else {
            self.store.delete(id).await
        };
        match result {
            Ok(_) => {}
            Err(imagecache_store::Error::Held { resource, lease }) => {
                return Err(Error::Held { resource, lease });
            }
            Err(e) => return Err(e.into()),
        }
        let blobs = self.release_blobs(&[image]).await?;
        Ok(Removed {
            image: Some(*id),
            blobs,
        })
    }

    /// Removes the blobs that the given (already removed) images referred
    /// to and nothing kept refers to now; returns them with their sizes.
    ///
    /// # Errors
    /// Store and blob failures.
    pub async fn release_blobs(&self, removed: &[Arc<Image>]) -> Result<Vec<(Digest, u64)>> {
        sweep::release_blobs(self, removed).await
    }

    /// Removes a blob unless a live lease holds it or one of its noted
    /// copies (or `force`).
    ///
    /// # Errors
    /// [`Error::Held`] naming the lease; blob failures.
    pub async fn remove_blob(&self, digest: &Digest, force: bool) -> Result<()> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        if !force {
            let leases = self.store.leases().await?;
            let held = self.store.held(&leases, Timestamp::now_utc()).await?;
            let mut copies = vec![*digest];
            for link in blobs.catalog_links(digest).await? {
                copies.push(link);
            }
            for d in copies {
                if let Some(lease) = held.blobs.get(&d) {
                    return Err(Error::Held {
                        resource: LeaseResource::Blob(*digest),
                        lease: lease.clone(),
                    });
                }
            }
        }
        blobs.delete(digest).await?;
        Ok(())
    }

    /// Plans a collection under `policies`, evaluated in order: every
    /// image and blob with whether it goes and why. Changes nothing
    /// (a dry run).
    ///
    /// # Errors
    /// Store, blob and backend failures.
    pub async fn plan(&self, policies: &[Policy]) -> Result<Plan> {
        let state = self.plan_state().await?;
        Ok(plan::decide(self, policies, &state))
    }

    /// What plans decide from, with uses flushed and leases read first.
    async fn plan_state(&self) -> Result<plan::State> {
        self.store.flush_uses().await?;
        let leases = self.store.leases().await?;
        plan::State::read(self, &leases).await
    }

    /// Gives the space deletes freed back to the file system where the
    /// backend holds on to it (a redb file's free pages); `None` when the
    /// backend has nothing to compact. Collections do this after removing
    /// anything.
    ///
    /// # Errors
    /// Backend failures, retryable when a read is in progress.
    pub async fn compact(&self) -> Result<Option<imagecache_core::Compaction>> {
        Ok(self.store.backend().compact().await?)
    }

    /// Bytes available on the filesystem at
    /// [`LifecycleOptions::free_space_path`], if set and measurable.
    pub fn free_space(&self) -> Option<u64> {
        let path = self.options.free_space_path.as_ref()?;
        usage::free_space(path)
    }
}
