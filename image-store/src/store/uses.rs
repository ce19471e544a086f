//! Last use: cache hits recorded in memory at no cost to lookups and
//! written to the backend in batches.

use std::collections::HashMap;

use imagecache_core::{ImageId, MetadataKey, Timestamp, WriteBatch};

use super::{Store, lock};
use crate::error::Result;

/// Uses recorded since the last flush.
pub(crate) type PendingUses = std::sync::Mutex<HashMap<ImageId, Timestamp>>;

impl Store {
    /// Records that an image was used now (answered a cache lookup, was
    /// pulled or built on). Costs a map insert; the time reaches the
    /// backend at the next [`Store::flush_uses`], so uses recorded since
    /// then are lost if the process dies, which only makes an image look
    /// a little older to a collector.
    pub fn record_use(&self, id: &ImageId) {
        lock(&self.inner.uses).insert(*id, Timestamp::now_utc());
    }

    /// When the image was last used, as recorded by [`Store::record_use`]
    /// (flushed or not); `None` when never.
    pub fn last_used(&self, id: &ImageId) -> Option<Timestamp> {
        let pending = lock(&self.inner.uses).get(id).copied();
        let stored = self.state().entries.get(id).and_then(|e| e.last_used);
        pending.max(stored)
    }

    /// Writes the uses recorded since the last flush to the backend, as the
    /// `lastUsed` metadata of each image still stored, in one batch.
    /// Returns how many were written.
    ///
    /// # Errors
    /// Backend failures; the uses are then kept for the next flush.
    pub async fn flush_uses(&self) -> Result<usize> {
        self.ensure_fresh().await?;
        let pending: HashMap<ImageId, Timestamp> = std::mem::take(&mut *lock(&self.inner.uses));
        if pending.is_empty() {
            return Ok(0);
        }
        let _guard = self.inner.mutation.write().await;
        let mut batch = WriteBatch::new();
        let mut written = Vec::new();
        {
            let state = self.state();
            for (id, time) in &pending {
                if state.entries.contains_key(id) {
                    batch.set_metadata(*id, MetadataKey::LAST_USED, time.to_string());
                    written.push((*id, *time));
                }
            }
        }
        if let Err(e) = self.write_batch(batch).await {
            let mut uses = lock(&self.inner.uses);
            for (id, time) in pending {
                let slot = uses.entry(id).or_insert(time);
                *slot = (*slot).max(time);
            }
            return Err(e);
        }
        let mut state = self.state_mut();
        for (id, time) in &written {
            if let Some(e) = state.entries.get_mut(id) {
                e.last_used = Some(*time);
            }
        }
        Ok(written.len())
    }
}
