//! Disk usage: what the store and the blob cache occupy, by part, and what
//! a collection could free now.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use imagecache_core::{DiffId, Digest, Error as CoreError, ImageId, Timestamp, Usage};

use super::{Lifecycle, Policy, Result};
use crate::blob::{BlobKind, Compression};

/// Cached blobs of one kind and compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BlobUsage {
    /// What they are.
    pub kind: BlobKind,
    /// How they are compressed, when noted (layers).
    pub compression: Option<Compression>,
    /// How many.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a store and its blob cache occupy; see [`Lifecycle::disk_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DiskUsage {
    /// Images in the store.
    pub images: u64,
    /// Their config bytes.
    pub config_bytes: u64,
    /// Names in the store.
    pub names: u64,
    /// Leases that hold something now.
    pub live_leases: u64,
    /// Lease records past their expiry, which the next collection deletes.
    pub expired_leases: u64,
    /// The image backend's real bytes by part; `None` when it cannot tell.
    pub store: Option<Usage>,
    /// The blob backend's real bytes by part (blobs, notes, temp files,
    /// overhead); `None` when it cannot tell or there is no blob cache.
    pub blob_store: Option<Usage>,
    /// Cached blobs by kind and compression, in logical bytes.
    pub blobs: Vec<BlobUsage>,
    /// Bytes a collection of dangling images and unreferenced blobs would
    /// free now (`prune`).
    pub reclaimable: u64,
    /// Bytes a collection of every unused image would free now
    /// (`prune -a`).
    pub reclaimable_all: u64,
    /// Bytes available on the store's filesystem, when measured.
    pub free_bytes: Option<u64>,
}

impl Lifecycle {
    /// What the store and its blob cache occupy in real bytes (as the
    /// backends report them), cached blobs by kind and compression, leases,
    /// and what a collection could free now. Changes nothing.
    ///
    /// # Errors
    /// Store, blob and backend failures (a backend that cannot measure its
    /// usage is reported as `None`, not as an error).
    pub async fn disk_usage(&self) -> Result<DiskUsage> {
        let now = Timestamp::now_utc();
        let leases = self.store.leases().await?;
        let live = leases.iter().filter(|l| l.is_live(now)).count() as u64;
        // One read of the store and the blob catalog, weighed twice.
        let state = self.plan_state().await?;
        let dangling = super::plan::decide(self, &[Policy::dangling()], &state);
        let all = super::plan::decide(self, &[Policy::all()], &state);
        let mut usage = DiskUsage {
            images: self.store.len() as u64,
            config_bytes: self
                .store
                .ids()
                .iter()
                .filter_map(|id| self.store.info(id))
                .map(|i| i.config_len)
                .sum(),
            names: self.store.names().len() as u64,
            live_leases: live,
            expired_leases: leases.len() as u64 - live,
            store: measured(self.store.backend().usage().await)?,
            blob_store: None,
            blobs: Vec::new(),
            reclaimable: dangling.bytes_to_free(),
            reclaimable_all: all.bytes_to_free(),
            free_bytes: self.free_space(),
        };
        if let Some(blobs) = &self.blobs {
            usage.blob_store = measured(blobs.backend().blob_usage().await)?;
            let mut by: BTreeMap<(BlobKind, Option<&'static str>), BlobUsage> = BTreeMap::new();
            for node in all.graph.blobs.values() {
                let key = (node.kind, node.compression.map(Compression::as_str));
                let entry = by.entry(key).or_insert(BlobUsage {
                    kind: node.kind,
                    compression: node.compression,
                    count: 0,
                    bytes: 0,
                });
                entry.count += 1;
                entry.bytes += node.size;
            }
            usage.blobs = by.into_values().collect();
        }
        Ok(usage)
    }
}

impl Lifecycle {
    /// The bytes of each image's layers that the blob cache holds
    /// uncompressed: what `docker images` shows as SIZE. Layers shared by
    /// several images count in each; a layer not cached counts nothing, and
    /// without a blob cache every size is 0.
    ///
    /// Reads each image's config once and lists the cache once, whatever
    /// the number of images.
    ///
    /// # Errors
    /// A config or the cache's listing could not be read.
    pub async fn image_sizes(&self, ids: &[ImageId]) -> Result<HashMap<ImageId, u64>> {
        let held: HashMap<Digest, u64> = match &self.blobs {
            Some(blobs) => blobs
                .backend()
                .list_blobs()
                .await?
                .into_iter()
                .map(|b| (b.digest, b.size))
                .collect(),
            None => HashMap::new(),
        };
        let mut sizes = HashMap::with_capacity(ids.len());
        for id in ids {
            let size = if held.is_empty() {
                0
            } else {
                let image = self.store.get(id).await?;
                image
                    .rootfs
                    .raw_diff_ids
                    .iter()
                    .filter_map(|raw| DiffId::parse(raw).ok())
                    .filter_map(|diff| held.get(diff.digest()))
                    .sum()
            };
            sizes.insert(*id, size);
        }
        Ok(sizes)
    }
}

/// A backend's usage, `None` when it cannot measure it.
fn measured(result: imagecache_core::Result<Usage>) -> Result<Option<Usage>> {
    match result {
        Ok(u) => Ok(Some(u)),
        Err(CoreError::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bytes available to unprivileged writers on the filesystem holding
/// `path`.
pub(super) fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(path).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
