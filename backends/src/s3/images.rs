//! Images: reading and merging the log and indexes into the handle's view,
//! writing a batch as configs plus one record (and its leases as objects
//! of their own, see `leases.rs`), and serving lookups and loads from the
//! merged state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{
    Capabilities, Content, ImageId, Key, Lease, MetadataKey, Quarantined, Snapshot, StoreBackend,
    Usage, WriteBatch, WriteOp, validate_batch,
};
use object_store::{ObjectStoreExt as _, PutPayload};

use super::error::Error;
use super::state::{self, Index, RecordName, RecordOp, State};
use super::{Listing, S3Backend, View, is_not_found};
use crate::leases::LeaseEdits;

/// How often a reader lists again when objects vanish under it.
const MAX_READ_ATTEMPTS: usize = 5;
/// Objects fetched at once while reading the log.
const FETCH_CONCURRENCY: usize = 32;
/// Configs uploaded at once by one batch.
const UPLOAD_CONCURRENCY: usize = 16;

/// Listed objects found gone while one refresh reads the log.
#[derive(Debug, Default)]
struct Gone {
    /// Found gone before the current listing.
    earlier: HashSet<String>,
    /// Found gone since the current listing.
    current: HashSet<String>,
}

impl Gone {
    /// Whether `key` was found gone before the current listing, which
    /// therefore shows the index that merged it.
    fn seen_before(&self, key: &str) -> bool {
        self.earlier.contains(key)
    }

    fn first_time(&mut self, key: String) {
        self.current.insert(key);
    }

    /// Sets `key`, found gone in two listings, aside for good.
    fn confirm(&self, key: String, view: &mut View) {
        tracing::debug!(object = %key, "listed but gone in two listings: merged by a compaction");
        view.vanished.insert(key);
    }

    /// Called once an attempt is over, before the next listing.
    fn next_listing(&mut self) {
        self.earlier.extend(self.current.drain());
    }
}

impl S3Backend {
    /// Reads the indexes and records this handle has not merged yet.
    ///
    /// An object that is listed but gone when read was removed by a
    /// compaction, which stored the index that merged it first; the next
    /// listing, made after the object was found gone, therefore shows that
    /// index (or a newer one that merged it). So a reader lists again, and
    /// an object found gone a second time after such a listing is known
    /// to be merged into an index that listing shows, which the reader
    /// joins before it settles: it is set aside as vanished instead of
    /// being waited for, since a store whose listings lag behind its
    /// deletes would otherwise never let a reader settle.
    pub(super) async fn refresh(&self) -> Result<Listing, Error> {
        let _reading = self.inner.reading.lock().await;
        let mut gone = Gone::default();
        for attempt in 1..=MAX_READ_ATTEMPTS {
            let last_attempt = attempt == MAX_READ_ATTEMPTS;
            let (indexes, records) =
                futures::try_join!(self.list_names("index"), self.list_names("log"))?;
            let indexes_raced = self.join_indexes(&indexes, &mut gone).await?;

            let wanted = self.wanted_records(&records);
            let fetched = self.fetch_all("log", wanted, FETCH_CONCURRENCY).await;
            let mut view = self.view();
            let records_raced = self.apply_records(&mut view, fetched, last_attempt, &mut gone)?;
            gone.next_listing();
            if !(indexes_raced || records_raced) {
                view.loaded = true;
                view.uncompacted = records
                    .iter()
                    .filter(|n| !view.covered.contains(*n) && view.applied.contains(*n))
                    .count();
                return Ok(Listing { indexes, records });
            }
        }
        Err(Error::Unsettled {
            prefix: self.inner.root.to_string(),
            attempts: MAX_READ_ATTEMPTS,
        })
    }

    /// Reads the objects `names` under `PREFIX/<dir>/`, `concurrency` at a
    /// time, each with what reading it gave.
    async fn fetch_all(
        &self,
        dir: &str,
        names: Vec<String>,
        concurrency: usize,
    ) -> Vec<(String, Result<Bytes, Error>)> {
        futures::stream::iter(names)
            .map(|name| async move {
                let path = self.path(&[dir, &name]);
                let got = self.get_bytes(&path, Key::Other(path.to_string())).await;
                (name, got)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// Reads the listed indexes this handle has not joined yet and joins
    /// them into its state; returns whether one was gone when read.
    async fn join_indexes(
        &self,
        indexes: &BTreeSet<String>,
        gone: &mut Gone,
    ) -> Result<bool, Error> {
        let mut raced = false;
        let wanted: Vec<String> = {
            let view = self.view();
            indexes
                .iter()
                .filter(|n| {
                    !view.indexes.contains(*n)
                        && !view
                            .vanished
                            .contains(&self.path(&["index", n]).to_string())
                })
                .cloned()
                .collect()
        };
        for (name, got) in self.fetch_all("index", wanted, 4).await {
            let bytes = match got {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => {
                    // A newer compaction merged and removed it.
                    let key = self.path(&["index", &name]).to_string();
                    if gone.seen_before(&key) {
                        gone.confirm(key, &mut self.view());
                    } else {
                        gone.first_time(key);
                        raced = true;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let decoded = state::decode_index(&bytes);
            let mut view = self.view();
            match decoded {
                Ok(index) => {
                    let Index { merged, state } = index;
                    view.covered.extend(merged);
                    view.state.join(state);
                }
                Err(e) => {
                    let key = self.path(&["index", &name]).to_string();
                    tracing::warn!(object = %key, reason = %e, "unreadable index");
                    view.unreadable.insert(key, e.to_string());
                }
            }
            view.indexes.insert(name);
        }
        Ok(raced)
    }

    /// The listed records that are neither applied, merged into a joined
    /// index, nor known to be unreadable.
    fn wanted_records(&self, records: &BTreeSet<String>) -> Vec<String> {
        let view = self.view();
        records
            .iter()
            .filter(|n| {
                let key = self.path(&["log", n]).to_string();
                !view.applied.contains(*n)
                    && !view.covered.contains(*n)
                    && !view.unreadable.contains_key(&key)
                    && !view.vanished.contains(&key)
            })
            .cloned()
            .collect()
    }

    /// Applies fetched records to `view`; returns whether one was gone when
    /// read for the first time. A record gone again after a new listing is
    /// set aside as vanished; on the last attempt, one gone for the first
    /// time is set down as unreadable instead.
    fn apply_records(
        &self,
        view: &mut View,
        fetched: Vec<(String, Result<Bytes, Error>)>,
        last_attempt: bool,
        gone: &mut Gone,
    ) -> Result<bool, Error> {
        let mut raced = false;
        for (name, got) in fetched {
            let key = self.path(&["log", &name]).to_string();
            let bytes = match got {
                Ok(b) => b,
                Err(e) if is_not_found(&e) && gone.seen_before(&key) => {
                    gone.confirm(key, view);
                    continue;
                }
                Err(e) if is_not_found(&e) && !last_attempt => {
                    gone.first_time(key);
                    raced = true;
                    continue;
                }
                Err(e) if is_not_found(&e) => {
                    view.unreadable
                        .insert(key, "listed, then gone, and merged by no index".into());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let parsed = RecordName::parse(&name)
                .ok_or_else(|| "not a record name".to_owned())
                .and_then(|n| {
                    state::decode_record(&bytes)
                        .map(|ops| (n, ops))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((record, ops)) => {
                    view.state.apply(record, ops);
                    view.applied.insert(name);
                }
                Err(reason) => {
                    tracing::warn!(object = %key, reason = %reason, "unreadable record");
                    view.unreadable.insert(key, reason);
                }
            }
        }
        Ok(raced)
    }

    async fn ensure_loaded(&self) -> Result<(), Error> {
        if !self.view().loaded {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Whether `id` exists, reading the log again if this handle does not
    /// know it yet.
    async fn known(&self, id: &ImageId) -> Result<bool, Error> {
        self.ensure_loaded().await?;
        if self.view().state.exists(id) {
            return Ok(true);
        }
        self.refresh().await?;
        Ok(self.view().state.exists(id))
    }

    /// Checks a batch against the merged state with the contract's rule
    /// ([`validate_batch`]). Returns the first image that does not exist
    /// when an operation needs it, since another handle may have created
    /// it meanwhile.
    fn check_batch(state: &State, ops: &[WriteOp]) -> Option<ImageId> {
        match validate_batch(ops, |id| Ok(state.exists(id))) {
            Ok(()) => None,
            Err(imagecache_core::Error::NotFound {
                key: Key::Image(id),
            }) => Some(id),
            // `exists` never fails, so nothing else is returned.
            Err(_) => None,
        }
    }

    async fn write_record(&self, ops: &[RecordOp]) -> Result<RecordName, Error> {
        let body = state::encode_record(ops);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let name = self.next_name();
            let path = self.path(&["log", &name.to_string()]);
            match self
                .inner
                .store
                .put_opts(&path, PutPayload::from(body.clone()), self.create_mode())
                .await
            {
                Ok(_) => return Ok(name),
                // A name taken by another writer (astronomically unlikely):
                // pick another.
                Err(object_store::Error::AlreadyExists { .. }) if attempt < 3 => {}
                Err(e) => return Err(Error::store("put", Key::Other(path.to_string()), e)),
            }
        }
    }

    /// Checks a batch against the merged state, reading the log again
    /// first when an image it needs is unknown, since another handle may
    /// have created it meanwhile.
    async fn validate(&self, ops: &[WriteOp]) -> imagecache_core::Result<()> {
        self.ensure_loaded().await?;
        if Self::check_batch(&self.view().state, ops).is_none() {
            return Ok(());
        }
        self.refresh().await?;
        match Self::check_batch(&self.view().state, ops) {
            Some(id) => Err(imagecache_core::Error::NotFound {
                key: Key::Image(id),
            }),
            None => Ok(()),
        }
    }

    /// Uploads a batch's configs, then copies those it quarantines aside:
    /// a record may only name content that is stored. Content is always
    /// overwritten (never put-if-absent), which heals a damaged object and
    /// refreshes its age for collect_garbage.
    async fn store_contents(
        &self,
        contents: BTreeMap<ImageId, Bytes>,
        quarantines: Vec<ImageId>,
    ) -> Result<(), Error> {
        futures::stream::iter(contents)
            .map(|(id, data)| async move {
                let path = self.content_path(&id);
                self.inner
                    .store
                    .put(&path, PutPayload::from(data))
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::store("put", Key::Image(id), e))
            })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        for id in quarantines {
            let from = self.content_path(&id);
            let to = self.path(&["quarantine", "sha256", &id.hex()]);
            match self.inner.store.copy(&from, &to).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("copy", Key::Image(id), e)),
            }
        }
        Ok(())
    }
}

/// Whether an operation is a lease's, kept outside the log.
fn is_lease_op(op: &WriteOp) -> bool {
    matches!(op, WriteOp::SetLease(_) | WriteOp::DeleteLease { .. })
}

/// A batch taken apart: the configs to upload, the images to copy aside,
/// and the operations of its record (leases are left out).
struct Split {
    contents: BTreeMap<ImageId, Bytes>,
    quarantines: Vec<ImageId>,
    ops: Vec<RecordOp>,
}

/// Takes a batch apart; see [`Split`].
fn split(batch: WriteBatch) -> imagecache_core::Result<Split> {
    let mut split = Split {
        contents: BTreeMap::new(),
        quarantines: Vec::new(),
        ops: Vec::with_capacity(batch.len()),
    };
    for op in batch.into_ops() {
        let op = match op {
            WriteOp::Put(content) => {
                let id = content.id();
                split.contents.insert(id, content.into_data());
                RecordOp::Put(id)
            }
            WriteOp::SetMetadata { id, key, value } => RecordOp::SetMetadata(id, key, value),
            WriteOp::DeleteMetadata { id, key } => RecordOp::DeleteMetadata(id, key),
            WriteOp::SetSummary { id, summary } => RecordOp::SetSummary(id, summary),
            WriteOp::Delete { id } => RecordOp::Delete(id),
            WriteOp::Quarantine { id, reason } => {
                split.quarantines.push(id);
                RecordOp::Quarantine(id, reason)
            }
            WriteOp::SetName { name, id } => RecordOp::SetName(name, id),
            WriteOp::DeleteName { name } => RecordOp::DeleteName(name),
            // Lease objects, written around the record.
            WriteOp::SetLease(_) | WriteOp::DeleteLease { .. } => continue,
            // Every operation of this version of the contract is handled
            // above; `WriteOp` is non-exhaustive only for other crates.
            other => {
                return Err(imagecache_core::Error::Unsupported {
                    operation: other.name(),
                    backend: super::NAME,
                });
            }
        };
        split.ops.push(op);
    }
    Ok(split)
}

#[async_trait]
impl StoreBackend for S3Backend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_persistent(true)
            .with_shared(true)
            .with_atomic_batch(true)
            .with_conditional_writes(self.inner.conditional)
    }

    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let leases = LeaseEdits::of(batch.ops());
        // A batch of leases alone names no image, so it needs no look at
        // the log: a renewal costs one PUT.
        if batch.ops().iter().any(|op| !is_lease_op(op)) {
            self.validate(batch.ops()).await?;
        }
        let Split {
            contents,
            quarantines,
            ops,
        } = split(batch)?;
        // Leases stored first and removed last: a batch cut short leaves
        // its leases holding more than it asked, never less.
        self.put_leases(leases.sets).await?;
        self.store_contents(contents, quarantines).await?;
        if !ops.is_empty() {
            let name = self.write_record(&ops).await?;
            let mut view = self.view();
            view.state.apply(name, ops);
            view.applied.insert(name.to_string());
            view.uncompacted += 1;
        }
        self.delete_leases(leases.removals).await?;
        self.maybe_compact().await;
        Ok(())
    }

    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        if !self.known(id).await? {
            return Err(imagecache_core::Error::NotFound {
                key: Key::Image(*id),
            });
        }
        let data = self
            .get_bytes(&self.content_path(id), Key::Image(*id))
            .await?;
        Content::verify(*id, data).map(Content::into_data)
    }

    async fn get_metadata(
        &self,
        id: &ImageId,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        if !self.known(id).await? {
            return Err(imagecache_core::Error::NotFound {
                key: Key::Image(*id),
            });
        }
        let view = self.view();
        view.state
            .image(id)
            .and_then(|image| image.metadata(key))
            .cloned()
            .ok_or_else(|| imagecache_core::Error::NotFound {
                key: Key::Metadata {
                    id: *id,
                    key: key.clone(),
                },
            })
    }

    async fn load(&self) -> imagecache_core::Result<Snapshot> {
        self.refresh().await?;
        let (leases, damaged_leases) = self.read_leases().await?.into_parts();
        // Listed after the log: a config is stored before the record that
        // names it, so every image in the records read has its config listed
        // unless the object is really gone.
        let dir = self.path(&["content", "sha256"]);
        let present: HashSet<String> = self
            .inner
            .store
            .list(Some(&dir))
            .map_err(|e| Error::store("list", Key::Other(dir.to_string()), e))
            .try_filter_map(|meta| async move { Ok(meta.location.filename().map(str::to_owned)) })
            .try_collect()
            .await?;
        let snapshot = {
            let view = self.view();
            let mut images = Vec::new();
            let mut quarantined: Vec<Quarantined> = view
                .state
                .quarantined()
                .map(|(id, reason)| Quarantined {
                    name: id.to_string(),
                    reason: reason.to_owned(),
                })
                .collect();
            for entry in view.state.entries() {
                if present.contains(&entry.id.hex()) {
                    images.push(entry);
                } else {
                    quarantined.push(Quarantined {
                        name: entry.id.to_string(),
                        reason: format!(
                            "config object {} is missing",
                            self.content_path(&entry.id)
                        ),
                    });
                }
            }
            quarantined.extend(view.unreadable.iter().map(|(name, reason)| Quarantined {
                name: name.clone(),
                reason: reason.clone(),
            }));
            quarantined.extend(damaged_leases);
            quarantined.sort_by(|a, b| a.name.cmp(&b.name));
            // Only names of the images listed: an image whose config object
            // is missing takes its names with it.
            let names = view
                .state
                .names()
                .filter(|(_, id)| images.binary_search_by(|e| e.id.cmp(id)).is_ok())
                .map(|(name, id)| (name.clone(), id))
                .collect();
            Snapshot {
                images,
                quarantined,
                names,
                leases,
            }
        };
        self.maybe_compact().await;
        Ok(snapshot)
    }

    async fn leases(&self) -> imagecache_core::Result<Vec<Lease>> {
        Ok(self.read_leases().await?.into_leases()?)
    }

    /// The sizes of the objects under the prefix, blobs aside: config
    /// objects of existing images as [`UsageKind::Configs`] (one item per
    /// config); log records, indexes and the compaction lease as
    /// [`UsageKind::Index`], since metadata, summaries and names live
    /// inside them and are not told apart; lease records under `leases/`
    /// as [`UsageKind::Leases`]; and as [`UsageKind::Overhead`] quarantine
    /// copies plus the config objects of images deleted or quarantined,
    /// which stay until [`S3Backend::collect_garbage`] removes them. Reads
    /// the log first (as a load does) to tell the configs apart, then lists
    /// each directory. No total: the parts are the whole.
    ///
    /// [`UsageKind::Configs`]: imagecache_core::UsageKind::Configs
    /// [`UsageKind::Index`]: imagecache_core::UsageKind::Index
    /// [`UsageKind::Leases`]: imagecache_core::UsageKind::Leases
    /// [`UsageKind::Overhead`]: imagecache_core::UsageKind::Overhead
    async fn usage(&self) -> imagecache_core::Result<Usage> {
        Ok(self.measure_images().await?)
    }
}
