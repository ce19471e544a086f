//! Leases: one object per lease, `PREFIX/leases/<id>`, holding the record
//! [`Lease::encode`] writes.
//!
//! Leases stay out of the image log on purpose. A holder renews its lease
//! often, and every record in the log is eventually compacted into an
//! index that holds the state of every image, so renewals kept there would
//! make compaction rewrite that whole state again and again. As objects of
//! their own, a renewal is one small PUT, a removal one DELETE, and
//! [`StoreBackend::leases`](imagecache_core::StoreBackend::leases) one
//! listing of `leases/` and one GET per lease, always read fresh from the
//! bucket, so a lease another client stored is seen at once. Two writers of
//! the same lease ID resolve as the bucket resolves two PUTs: the later one
//! wins whole.
//!
//! A batch's lease changes are folded per ID (the last write wins); the
//! leases it stores are written before its configs and record, and the
//! leases it removes are removed after them. A batch cut short therefore
//! leaves its leases holding more than it asked, never less: its image
//! changes are all-or-nothing, its lease changes lean towards keeping.
//!
//! An object whose bytes are not the lease its name says is damaged, and
//! handled as every persistent backend handles one (see `leases.rs` at the
//! crate root): reported by a load, refused by `leases`.

use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{Key, Lease, LeaseId, MAX_LEASE_RECORD};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

use super::error::Error;
use super::{S3Backend, is_not_found};
use crate::leases::LeaseList;

/// The directory of lease objects under the prefix. (`lease/`, singular,
/// holds the compaction lock, which is not a [`Lease`].)
pub(super) const DIR: &str = "leases";
/// Lease objects written, removed or read at once.
const CONCURRENCY: usize = 16;

impl S3Backend {
    fn lease_path(&self, id: &LeaseId) -> Path {
        self.path(&[DIR, id.as_str()])
    }

    /// Stores `leases`, each replacing its object whole.
    pub(super) async fn put_leases(&self, leases: Vec<Lease>) -> Result<(), Error> {
        futures::stream::iter(leases)
            .map(|lease: Lease| async move {
                let path = self.lease_path(&lease.id);
                self.inner
                    .store
                    .put(&path, PutPayload::from(lease.encode()))
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::store("put", Key::Other(path.to_string()), e))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Removes the objects of `ids`; a lease that is not stored is fine.
    pub(super) async fn delete_leases(&self, ids: Vec<LeaseId>) -> Result<(), Error> {
        futures::stream::iter(ids)
            .map(|id: LeaseId| async move {
                let path = self.lease_path(&id);
                match self.inner.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Error::store("delete", Key::Other(path.to_string()), e)),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Lists `leases/` and reads every lease object in it.
    pub(super) async fn read_leases(&self) -> Result<LeaseList, Error> {
        let dir = self.path(&[DIR]);
        let objects = self.list_objects(&dir, Key::Other(dir.to_string())).await?;
        let mut out = LeaseList::default();
        let mut wanted = Vec::with_capacity(objects.len());
        for meta in objects {
            let Some(id) = meta.location.filename().and_then(|n| LeaseId::new(n).ok()) else {
                tracing::debug!(object = %meta.location, "skipping an object not named after a lease");
                continue;
            };
            // Only objects right under `leases/` are leases.
            if meta.location != self.lease_path(&id) {
                tracing::debug!(object = %meta.location, "skipping an object below a lease's name");
                continue;
            }
            if meta.size > MAX_LEASE_RECORD as u64 {
                out.damaged(
                    meta.location.as_ref(),
                    format!(
                        "{} bytes, over the {MAX_LEASE_RECORD} a lease record may have",
                        meta.size
                    ),
                );
                continue;
            }
            wanted.push(id);
        }
        let fetched: Vec<(LeaseId, Path, Result<bytes::Bytes, Error>)> =
            futures::stream::iter(wanted)
                .map(|id| async move {
                    let path = self.lease_path(&id);
                    let got = self.get_bytes(&path, Key::Other(path.to_string())).await;
                    (id, path, got)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        for (id, path, got) in fetched {
            match got {
                Ok(data) => out.add(path.as_ref(), &id, &data),
                // Removed between the listing and the read.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
