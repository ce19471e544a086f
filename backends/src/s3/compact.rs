//! Compaction, its lease, and the removal of objects nobody needs: configs
//! of images that no longer exist, and everything under a throwaway prefix.

use std::time::{Duration, SystemTime};

use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{ImageId, Key};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::error::Error;
use super::state::{self, Index};
use super::{S3Backend, now_nanos};

/// How long a compaction lease is honoured before it is taken as abandoned.
const LEASE_TTL: Duration = Duration::from_secs(10 * 60);

/// What [`S3Backend::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Whether a new index was written (false when there was nothing to do
    /// or another handle held the compaction lease).
    pub ran: bool,
    /// Records merged into the new index and then deleted.
    pub merged_records: usize,
    /// Older indexes merged into the new one and then deleted.
    pub merged_indexes: usize,
    /// Images (existing or remembered as deleted) in the new index.
    pub images: usize,
}

impl S3Backend {
    /// Merges every record and index into a new index, then removes what it
    /// merged.
    ///
    /// Runs by itself once enough records have piled up; call it to compact
    /// at a moment of your choosing. A record written while compaction runs
    /// is not merged and not removed.
    ///
    /// # Errors
    /// Backend errors from reading the log or writing the index; records and
    /// indexes that could not be removed are left for the next compaction.
    pub async fn compact(&self) -> imagecache_core::Result<CompactionReport> {
        let lease = self.path(&["lease", "compaction"]);
        if self.inner.conditional && !self.take_lease(&lease).await? {
            return Ok(CompactionReport::default());
        }
        let result = self.compact_inner().await;
        if self.inner.conditional
            && let Err(e) = self.inner.store.delete(&lease).await
        {
            tracing::warn!(error = %e, "could not release the compaction lease");
        }
        Ok(result?)
    }

    async fn take_lease(&self, lease: &Path) -> Result<bool, Error> {
        let key = Key::Other(lease.to_string());
        for _ in 0..2 {
            let body = PutPayload::from(self.next_name().to_string());
            match self
                .inner
                .store
                .put_opts(lease, body, PutOptions::from(PutMode::Create))
                .await
            {
                Ok(_) => return Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(e) => return Err(Error::store("put", key, e)),
            }
            let meta = match self.inner.store.head(lease).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::store("head", key, e)),
            };
            let age = SystemTime::now()
                .duration_since(SystemTime::from(meta.last_modified))
                .unwrap_or_default();
            if age < LEASE_TTL {
                tracing::debug!(backend = %self, "compaction skipped: another handle holds the lease");
                return Ok(false);
            }
            tracing::warn!(backend = %self, "taking over an abandoned compaction lease");
            if let Err(e) = self.inner.store.delete(lease).await {
                return Err(Error::store("delete", key, e));
            }
        }
        Ok(false)
    }

    async fn compact_inner(&self) -> Result<CompactionReport, Error> {
        let listing = self.refresh().await?;
        let horizon = now_nanos().saturating_sub(
            u64::try_from(self.inner.tuning.tombstone_horizon.as_nanos()).unwrap_or(u64::MAX),
        );
        let (index, old_indexes) = {
            let view = self.view();
            let merged: Vec<String> = listing
                .records
                .iter()
                .filter(|n| view.applied.contains(*n) || view.covered.contains(*n))
                .cloned()
                .collect();
            let old_indexes: Vec<String> = listing
                .indexes
                .iter()
                .filter(|n| {
                    view.indexes.contains(*n)
                        && !view
                            .unreadable
                            .contains_key(&self.path(&["index", n]).to_string())
                })
                .cloned()
                .collect();
            if merged.is_empty() && old_indexes.len() <= 1 {
                return Ok(CompactionReport::default());
            }
            let index = Index {
                merged,
                state: view.state.compacted(horizon),
            };
            (index, old_indexes)
        };
        let name = self.next_name().to_string();
        let path = self.path(&["index", &name]);
        let body = state::encode_index(&index);
        self.inner
            .store
            .put_opts(&path, PutPayload::from(body), self.create_mode())
            .await
            .map_err(|e| Error::store("put", Key::Other(path.to_string()), e))?;
        {
            let mut view = self.view();
            view.indexes.insert(name);
            view.covered.extend(index.merged.iter().cloned());
            view.uncompacted = view.uncompacted.saturating_sub(index.merged.len());
        }

        // Only now, with the new index stored, may what it merged go.
        let doomed: Vec<Path> = old_indexes
            .iter()
            .map(|n| self.path(&["index", n]))
            .chain(index.merged.iter().map(|n| self.path(&["log", n])))
            .collect();
        let doomed_stream = futures::stream::iter(doomed.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.store.delete_stream(doomed_stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "compaction could not remove a merged object"),
            }
        }
        let report = CompactionReport {
            ran: true,
            merged_records: index.merged.len(),
            merged_indexes: old_indexes.len(),
            images: index.state.len(),
        };
        tracing::debug!(backend = %self, ?report, "compacted");
        Ok(report)
    }

    /// Removes the config objects of images that no longer exist and that
    /// were last written more than `min_age` ago; returns how many it
    /// removed.
    ///
    /// A writer on another machine that re-creates one of those images
    /// between this call's listing and its delete would lose the config
    /// (its next load reports the image as quarantined with the missing
    /// object's key). Choose `min_age` well above the time a batch takes,
    /// and run this where such re-creates are unlikely.
    ///
    /// # Errors
    /// Backend errors from listing or reading the log.
    pub async fn collect_garbage(&self, min_age: Duration) -> imagecache_core::Result<usize> {
        self.refresh().await?;
        let dir = self.path(&["content", "sha256"]);
        let objects = self.list_objects(&dir, Key::Other(dir.to_string())).await?;
        let cutoff = SystemTime::now() - min_age;
        let doomed: Vec<Path> = {
            let view = self.view();
            objects
                .into_iter()
                .filter(|meta| SystemTime::from(meta.last_modified) < cutoff)
                .filter(|meta| {
                    let id = meta
                        .location
                        .filename()
                        .and_then(|hex| ImageId::parse(&format!("sha256:{hex}")).ok());
                    id.is_some_and(|id| !view.state.exists(&id))
                })
                .map(|meta| meta.location)
                .collect()
        };
        let count = doomed.len();
        let stream = futures::stream::iter(doomed.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.store.delete_stream(stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete", Key::Other(dir.to_string()), e).into()),
            }
        }
        Ok(count)
    }

    /// Deletes every object under this backend's prefix — configs, log
    /// records, indexes, blobs and notes — and returns how many there were.
    ///
    /// Meant for throwaway prefixes such as a test run's; any handle on the
    /// prefix sees an empty store afterwards. A backend without a prefix
    /// refuses, so that a whole bucket is never emptied by mistake.
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] when the prefix is empty; backend
    /// errors from listing or deleting.
    pub async fn delete_prefix(&self) -> imagecache_core::Result<usize> {
        let root = &self.inner.root;
        if root.as_ref().is_empty() {
            return Err(Error::Config {
                reason: format!(
                    "refusing to delete every object of {}: the backend has no prefix",
                    self.inner.label
                ),
                source: None,
            }
            .into());
        }
        let key = Key::Other(root.to_string());
        Ok(self.delete_under(root, "delete", key).await?)
    }

    /// Deletes every object under `prefix`, skipping any already gone, and
    /// returns how many it deleted; a failure is reported as `op` on `key`.
    pub(super) async fn delete_under(
        &self,
        prefix: &Path,
        op: &'static str,
        key: Key,
    ) -> Result<usize, Error> {
        let listed = self
            .inner
            .store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.inner.store.delete_stream(listed);
        let mut count = 0;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(op, key, e)),
            }
        }
        Ok(count)
    }

    pub(super) async fn maybe_compact(&self) {
        let due = self.view().uncompacted >= self.inner.tuning.compact_after;
        if due && let Err(e) = self.compact().await {
            tracing::warn!(backend = %self, error = %e, "compaction failed; it will be retried later");
        }
    }
}
