//! Images: batches validated in full and then applied under the lock.

use async_trait::async_trait;
use bytes::Bytes;
use imagecache_core::{
    Capabilities, Content, Error, ImageId, Key, Lease, MetadataKey, Quarantined, Result, Snapshot,
    SnapshotEntry, StoreBackend, Usage, UsageKind, WriteBatch, WriteOp, validate_batch,
};

use super::MemoryBackend;

#[async_trait]
impl StoreBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_atomic_batch(true)
            .with_conditional_writes(true)
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut state = self.lock();
        validate_batch::<Error>(batch.ops(), |id| Ok(state.images.contains_key(id)))?;
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(content) => {
                    let id = content.id();
                    state.images.entry(id).or_default().content = content.into_data();
                }
                WriteOp::SetMetadata { id, key, value } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.metadata.insert(key, value);
                    }
                }
                WriteOp::DeleteMetadata { id, key } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.metadata.remove(&key);
                    }
                }
                WriteOp::SetSummary { id, summary } => {
                    if let Some(e) = state.images.get_mut(&id) {
                        e.summary = Some(summary);
                    }
                }
                WriteOp::Delete { id } => {
                    state.images.remove(&id);
                    state.names.retain(|_, target| *target != id);
                }
                WriteOp::Quarantine { id, reason } => {
                    if let Some(e) = state.images.remove(&id) {
                        state.quarantined.insert(id, (e, reason));
                    }
                    state.names.retain(|_, target| *target != id);
                }
                WriteOp::SetName { name, id } => {
                    state.names.insert(name, id);
                }
                WriteOp::DeleteName { name } => {
                    state.names.remove(&name);
                }
                WriteOp::SetLease(lease) => {
                    state.leases.insert(lease.id.clone(), lease);
                }
                WriteOp::DeleteLease { id } => {
                    state.leases.remove(&id);
                }
                // Every operation of this version of the contract is handled
                // above; `WriteOp` is non-exhaustive only for other crates.
                _ => {}
            }
        }
        Ok(())
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        let data = self
            .lock()
            .images
            .get(id)
            .map(|e| e.content.clone())
            .ok_or(Error::NotFound {
                key: Key::Image(*id),
            })?;
        Ok(Content::verify(*id, data)?.into_data())
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        let state = self.lock();
        let entry = state.images.get(id).ok_or(Error::NotFound {
            key: Key::Image(*id),
        })?;
        entry
            .metadata
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                key: Key::Metadata {
                    id: *id,
                    key: key.clone(),
                },
            })
    }

    async fn load(&self) -> Result<Snapshot> {
        let state = self.lock();
        Ok(Snapshot {
            images: state
                .images
                .iter()
                .map(|(id, e)| SnapshotEntry {
                    id: *id,
                    metadata: e
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    summary: e.summary.clone(),
                })
                .collect(),
            quarantined: state
                .quarantined
                .iter()
                .map(|(id, (_, reason))| Quarantined {
                    name: id.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
            // Writes keep every name on a stored image; the filter is the
            // contract's rule all the same.
            names: state
                .names
                .iter()
                .filter(|(_, id)| state.images.contains_key(id))
                .map(|(name, id)| (name.clone(), *id))
                .collect(),
            leases: state.leases.values().cloned().collect(),
        })
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self.lock().leases.values().cloned().collect())
    }

    async fn usage(&self) -> Result<Usage> {
        let state = self.lock();
        let mut usage = Usage::default();
        for e in state.images.values() {
            usage.add(UsageKind::Configs, 1, e.content.len() as u64);
            let meta: usize = e
                .metadata
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum();
            let summary = e.summary.as_ref().map_or(0, Bytes::len);
            usage.add(
                UsageKind::Metadata,
                e.metadata.len() as u64,
                (meta + summary) as u64,
            );
        }
        let names: usize = state.names.keys().map(|n| n.to_string().len() + 71).sum();
        usage.add(UsageKind::Names, state.names.len() as u64, names as u64);
        let leases: usize = state.leases.values().map(|l| l.encode().len()).sum();
        usage.add(UsageKind::Leases, state.leases.len() as u64, leases as u64);
        Ok(usage)
    }
}
