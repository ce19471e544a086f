//! Image configs, their records and the quarantine.
//!
//! * `content`: content block number → the exact bytes of up to 16 KiB
//!   worth of configs, each in a numbered slot (see
//!   [`record`](super::record)). Each batch packs the configs it creates
//!   into new blocks, numbered after every block before them, so they are
//!   appended to the end of the tree instead of being scattered through it
//!   by their random IDs, at one B-tree insert per block rather than per
//!   config. Removing a config rewrites its block without it; the block
//!   goes with its last config.
//! * the ID index (`id_chunks` and `id_runs`, see [`index`](super::index)):
//!   image ID → (content block and slot, index block number), kept as a
//!   few sorted runs so that new IDs are appended too.
//! * `blocks`: block number → an index block holding the records of up to
//!   32 KiB worth of images (see [`record`](super::record)). New images fill
//!   the last block, then start new ones.
//! * `quarantine`: image ID → reason, record and config of a set-aside image.
//! * `names`: a name in full (`docker.io/library/busybox:latest`) → the
//!   image ID it points at. Removing an image removes its names in the same
//!   transaction; the first removal in a batch reads the table once into a
//!   map from image to names, which the rest of the batch keeps up to date.
//! * `leases`: lease ID → lease record (see [`leases`](super::leases)),
//!   written in the batch's transaction like everything else.
//!
//! So a batch of creates appends configs, a few blocks and a run of index
//! entries, and [`StoreBackend::load`] reads the blocks in a few thousand
//! large values.
//!
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use imagecache_core::{
    Capabilities, Content, ImageId, Key, Lease, MetadataKey, Quarantined, Reference, Snapshot,
    StoreBackend, Usage, WriteBatch, WriteOp,
};
use redb::{ReadableTable, TableDefinition};

use super::index::{self, ChunkKey, ContentRef, Edit, Entry, Found, Location};
use super::record::{
    BLOCK_TARGET, BlockWriter, CONTENT_TARGET, ContentWriter, ImageKey, QuarantineEntry, Record,
    block_entries, content_slot, find_in_block, remove_slots,
};
use super::{Error, Inner, NAME, RedbBackend};
use super::{leases, load};

#[async_trait]
impl StoreBackend for RedbBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_persistent(true)
            .with_atomic_batch(true)
    }

    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.run(None, move |inner| inner.write(batch.into_ops()))
            .await
    }

    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        let id = *id;
        self.run(Some(Key::Image(id)), move |inner| inner.get(&id))
            .await
    }

    async fn get_metadata(
        &self,
        id: &ImageId,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        let (id, key) = (*id, key.clone());
        self.run(
            Some(Key::Metadata {
                id,
                key: key.clone(),
            }),
            move |inner| inner.get_metadata(&id, &key),
        )
        .await
    }

    async fn load(&self) -> imagecache_core::Result<Snapshot> {
        self.run(None, Inner::load).await
    }

    async fn leases(&self) -> imagecache_core::Result<Vec<Lease>> {
        self.run(None, Inner::leases).await
    }

    /// The database file, table by table: `content` as
    /// [`UsageKind::Configs`] and `blocks` as [`UsageKind::Metadata`] (one
    /// item per image each), `names` as [`UsageKind::Names`], the ID index
    /// and `meta` as [`UsageKind::Index`], `leases` as
    /// [`UsageKind::Leases`] (one item per lease), and as
    /// [`UsageKind::Overhead`] the quarantine plus the rest of the file:
    /// free pages and redb's own bookkeeping. Each table counts the pages
    /// its B-tree occupies. The blob tables are
    /// [`BlobBackend::blob_usage`]'s: merged ([`Usage::merge`]), the two
    /// add up to the file's size, each byte once. No total, since the file
    /// is shared by both. [`RedbBackend::compact`] returns the free pages.
    ///
    /// [`UsageKind::Configs`]: imagecache_core::UsageKind::Configs
    /// [`UsageKind::Metadata`]: imagecache_core::UsageKind::Metadata
    /// [`UsageKind::Names`]: imagecache_core::UsageKind::Names
    /// [`UsageKind::Index`]: imagecache_core::UsageKind::Index
    /// [`UsageKind::Leases`]: imagecache_core::UsageKind::Leases
    /// [`UsageKind::Overhead`]: imagecache_core::UsageKind::Overhead
    /// [`BlobBackend::blob_usage`]: imagecache_core::BlobBackend::blob_usage
    async fn usage(&self) -> imagecache_core::Result<Usage> {
        let measured = self.run(None, Inner::measure).await?;
        Ok(measured.images)
    }

    /// [`RedbBackend::compact`]: the database file's free pages go back to
    /// the file system.
    async fn compact(&self) -> imagecache_core::Result<Option<imagecache_core::Compaction>> {
        let report = Self::compact(self).await?;
        Ok(Some(imagecache_core::Compaction {
            before: report.before,
            after: report.after,
        }))
    }
}

pub(super) const CONTENT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("content");
pub(super) const BLOCKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blocks");
pub(super) const QUARANTINE: TableDefinition<'_, &ImageKey, &[u8]> =
    TableDefinition::new("quarantine");
pub(super) const NAMES: TableDefinition<'_, &str, &ImageKey> = TableDefinition::new("names");

/// Creates the tables of this module if they are missing.
pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), Error> {
    txn.open_table(CONTENT)?;
    txn.open_table(index::CHUNKS)?;
    txn.open_table(index::RUNS)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(NAMES)?;
    txn.open_table(leases::LEASES)?;
    Ok(())
}

/// Where a live image's config is.
enum Config {
    /// In a content block already.
    Stored(ContentRef),
    /// Created by this batch; packed into a content block when it ends.
    Pending(Bytes),
}

/// An image that existed before the batch, or was created by it.
struct Live {
    /// Its config.
    config: Config,
    /// Its record as stored (for an image that existed), until decoded.
    raw: Option<Bytes>,
    /// Its record, once decoded or changed; when set, it is written back.
    record: Option<Record>,
}

impl Live {
    fn record_mut(&mut self, id: &ImageId) -> Result<&mut Record, Error> {
        match &mut self.record {
            Some(record) => Ok(record),
            slot => {
                let raw = self.raw.take().unwrap_or_default();
                let record =
                    Record::decode(&raw).map_err(|source| Error::BadRecord { id: *id, source })?;
                Ok(slot.insert(record))
            }
        }
    }

    /// The record's bytes, as stored or as changed.
    fn encoded(&self) -> Vec<u8> {
        match (&self.record, &self.raw) {
            (Some(record), _) => record.encode(),
            (None, Some(raw)) => raw.to_vec(),
            (None, None) => Record::default().encode(),
        }
    }
}

/// A removed image: its config bytes and its record as stored.
struct Removed {
    data: Bytes,
    record: Vec<u8>,
}

/// Changes to one index block: per image, its new record, or `None` to
/// drop it.
type BlockEdits = Vec<(ImageKey, Option<Vec<u8>>)>;

/// One write transaction applying a [`WriteBatch`](imagecache_core::WriteBatch).
struct Batch<'t> {
    content: redb::Table<'t, u64, &'static [u8]>,
    chunks: redb::Table<'t, ChunkKey, &'static [u8]>,
    runs: redb::Table<'t, u64, u64>,
    blocks: redb::Table<'t, u64, &'static [u8]>,
    quarantine: redb::Table<'t, &'static ImageKey, &'static [u8]>,
    names: redb::Table<'t, &'static str, &'static ImageKey>,
    leases: redb::Table<'t, &'static str, &'static [u8]>,
    /// The names of each image, read from `names` at the batch's first
    /// image removal and kept up to date by every name change after it.
    names_of: Option<HashMap<ImageKey, BTreeSet<String>>>,
    /// The number the next new content block gets.
    next_content: u64,
    /// Slots of configs removed by the batch, cleared when it ends.
    freed: Vec<ContentRef>,
    /// Where each image the batch names was before it, for those that
    /// existed; looked up all at once when the batch opens.
    stored: HashMap<ImageKey, Found>,
    /// Every image an operation has looked at, by key, as the batch has
    /// left it: `None` if it does not exist. Where it was before is in
    /// `stored`.
    touched: HashMap<ImageKey, Option<Live>>,
    /// Blocks read during the batch, so each is read once.
    block_cache: HashMap<u64, Bytes>,
}

impl<'t> Batch<'t> {
    /// Opens the tables and looks up every image in `ids`, which must
    /// include every image the batch will name.
    fn open(
        txn: &'t redb::WriteTransaction,
        ids: impl IntoIterator<Item = ImageId>,
    ) -> Result<Self, Error> {
        let content = txn.open_table(CONTENT)?;
        let next_content = content.last()?.map_or(0, |(k, _)| k.value() + 1);
        let chunks = txn.open_table(index::CHUNKS)?;
        let runs = txn.open_table(index::RUNS)?;
        // Looking the IDs up in sorted order visits each index chunk once,
        // however many of the batch's images it holds.
        let mut keys: Vec<ImageKey> = ids.into_iter().map(|id| id.to_bytes()).collect();
        keys.sort_unstable();
        keys.dedup();
        let stored = index::find_many(&chunks, &index::runs(&runs)?, &keys)?;
        Ok(Self {
            content,
            chunks,
            runs,
            blocks: txn.open_table(BLOCKS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            names: txn.open_table(NAMES)?,
            leases: txn.open_table(leases::LEASES)?,
            names_of: None,
            next_content,
            freed: Vec::new(),
            stored,
            touched: HashMap::with_capacity(keys.len()),
            block_cache: HashMap::new(),
        })
    }

    fn block(&mut self, block: u64) -> Result<Bytes, Error> {
        if let Some(raw) = self.block_cache.get(&block) {
            return Ok(raw.clone());
        }
        let raw = self
            .blocks
            .get(block)?
            .map(|g| Bytes::copy_from_slice(g.value()))
            .unwrap_or_default();
        self.block_cache.insert(block, raw.clone());
        Ok(raw)
    }

    /// The batch's view of one image, loaded on first use: `None` if it
    /// does not exist.
    fn touch(&mut self, id: &ImageId) -> Result<&mut Option<Live>, Error> {
        let key = id.to_bytes();
        if !self.touched.contains_key(&key) {
            let live = match self.stored.get(&key).copied() {
                None => None,
                Some(found) => {
                    let block = found.location.block;
                    let data = self.block(block)?;
                    let raw = record_in(&data, block, &key)?.map(|r| data.slice_ref(r));
                    Some(Live {
                        config: Config::Stored(found.location.content),
                        raw,
                        record: None,
                    })
                }
            };
            self.touched.insert(key, live);
        }
        match self.touched.get_mut(&key) {
            Some(live) => Ok(live),
            None => unreachable!("inserted above"),
        }
    }

    fn live(&mut self, id: &ImageId) -> Result<&mut Live, Error> {
        self.touch(id)?.as_mut().ok_or_else(|| not_found(*id))
    }

    fn exists(&self, key: &ImageKey) -> bool {
        self.touched
            .get(key)
            .map_or_else(|| self.stored.contains_key(key), Option::is_some)
    }

    fn put(&mut self, id: &ImageId, data: Bytes) {
        let key = id.to_bytes();
        if self.exists(&key) {
            return;
        }
        let live = Live {
            config: Config::Pending(data),
            raw: None,
            record: Some(Record::default()),
        };
        self.touched.insert(key, Some(live));
    }

    /// Removes an image, returning what it held; its config bytes only
    /// when `keep_config`, as reading them costs a block read.
    fn remove(&mut self, id: &ImageId, keep_config: bool) -> Result<Option<Removed>, Error> {
        let Some(live) = self.touch(id)?.take() else {
            return Ok(None);
        };
        let record = live.encoded();
        let data = match live.config {
            Config::Stored(at) => {
                self.freed.push(at);
                if keep_config {
                    read_config(&self.content, at)?
                } else {
                    Bytes::new()
                }
            }
            Config::Pending(data) => data,
        };
        Ok(Some(Removed { data, record }))
    }

    fn apply(&mut self, op: WriteOp) -> Result<(), Error> {
        match op {
            WriteOp::Put(c) => self.put(&c.id(), c.into_data()),
            WriteOp::SetMetadata { id, key, value } => {
                self.live(&id)?.record_mut(&id)?.set(key, value);
            }
            WriteOp::DeleteMetadata { id, key } => {
                if let Some(live) = self.touch(&id)?.as_mut() {
                    live.record_mut(&id)?.remove(&key);
                }
            }
            WriteOp::SetSummary { id, summary } => {
                self.live(&id)?.record_mut(&id)?.summary = Some(summary);
            }
            WriteOp::Delete { id } => {
                self.remove(&id, false)?;
                self.drop_names(&id)?;
            }
            WriteOp::Quarantine { id, reason } => {
                let removed = self.remove(&id, true)?.ok_or_else(|| not_found(id))?;
                let entry = QuarantineEntry::encode(&reason, &removed.record, &removed.data);
                self.quarantine.insert(&id.to_bytes(), entry.as_slice())?;
                self.drop_names(&id)?;
            }
            WriteOp::SetName { name, id } => {
                if self.touch(&id)?.is_none() {
                    return Err(not_found(id));
                }
                self.set_name(name.as_str(), Some(id.to_bytes()))?;
            }
            WriteOp::DeleteName { name } => self.set_name(name.as_str(), None)?,
            WriteOp::SetLease(lease) => {
                self.leases
                    .insert(lease.id.as_str(), lease.encode().as_ref())?;
            }
            WriteOp::DeleteLease { id } => {
                self.leases.remove(id.as_str())?;
            }
            other => {
                return Err(Error::Contract(imagecache_core::Error::Unsupported {
                    operation: other.name(),
                    backend: NAME,
                }));
            }
        }
        Ok(())
    }

    /// Points `name` at `target`, or removes it for `None`.
    fn set_name(&mut self, name: &str, target: Option<ImageKey>) -> Result<(), Error> {
        let old = match &target {
            Some(key) => self.names.insert(name, key)?,
            None => self.names.remove(name)?,
        }
        .map(|g| *g.value());
        if let Some(names_of) = &mut self.names_of {
            if let Some(old) = old
                && let Some(set) = names_of.get_mut(&old)
            {
                set.remove(name);
            }
            if let Some(key) = target {
                names_of.entry(key).or_default().insert(name.to_owned());
            }
        }
        Ok(())
    }

    /// Removes every name pointing at an image.
    fn drop_names(&mut self, id: &ImageId) -> Result<(), Error> {
        let names_of = match &mut self.names_of {
            Some(map) => map,
            slot => {
                let mut map: HashMap<ImageKey, BTreeSet<String>> = HashMap::new();
                for entry in self.names.iter()? {
                    let (name, key) = entry?;
                    map.entry(*key.value())
                        .or_default()
                        .insert(name.value().to_owned());
                }
                slot.insert(map)
            }
        };
        for name in names_of.remove(&id.to_bytes()).unwrap_or_default() {
            self.names.remove(name.as_str())?;
        }
        Ok(())
    }

    /// Writes the configs, records and index entries of every touched
    /// image.
    fn finish(mut self) -> Result<(), Error> {
        self.free()?;
        // Changes to existing blocks, by block: a new record, or removal.
        let mut changes: BTreeMap<u64, BlockEdits> = BTreeMap::new();
        let mut fresh: Vec<(ImageKey, ContentRef, Vec<u8>)> = Vec::new();
        let mut edits: Vec<Edit> = Vec::new();
        // New configs, packed into content blocks as they come.
        let mut out = ContentWriter::default();
        for (key, now) in std::mem::take(&mut self.touched) {
            let old = self.stored.get(&key).copied();
            let mut config = |live: &Live| self.store(&mut out, &live.config);
            match (old, now) {
                (Some(old), Some(live)) => {
                    if live.record.is_some() {
                        changes
                            .entry(old.location.block)
                            .or_default()
                            .push((key, Some(live.encoded())));
                    }
                    // Deleted and created again in this batch: the record
                    // stays in its block, the config is in a new place.
                    let at = config(&live)?;
                    if old.location.content != at {
                        edits.push(Edit {
                            id: key,
                            run: old.run,
                            content: Some(at),
                        });
                    }
                }
                (Some(old), None) => {
                    changes
                        .entry(old.location.block)
                        .or_default()
                        .push((key, None));
                    edits.push(Edit {
                        id: key,
                        run: old.run,
                        content: None,
                    });
                }
                (None, Some(live)) => fresh.push((key, config(&live)?, live.encoded())),
                (None, None) => {}
            }
        }
        self.flush_content(&out)?;
        for (block, mut edits) in changes {
            let old = self.block(block)?;
            let mut out = BlockWriter::new();
            for entry in block_entries(&old) {
                let (key, range) = entry.map_err(|source| Error::BadBlock { block, source })?;
                match edits.iter().position(|(k, _)| *k == key) {
                    Some(i) => {
                        if let (_, Some(record)) = edits.swap_remove(i) {
                            out.push(&key, &record);
                        }
                    }
                    None => out.push(&key, &old[range]),
                }
            }
            if out.entries() == 0 {
                self.blocks.remove(block)?;
            } else {
                self.blocks.insert(block, out.as_bytes())?;
            }
        }
        index::edit(&mut self.chunks, &mut self.runs, edits)?;
        let entries = self.place(fresh)?;
        index::add(&mut self.chunks, &mut self.runs, entries)
    }

    /// Where a config is once the batch ends: a config the batch created
    /// goes into the content block being filled, `out`, which is written
    /// out first when it has no room left.
    fn store(&mut self, out: &mut ContentWriter, config: &Config) -> Result<ContentRef, Error> {
        let data = match config {
            Config::Stored(at) => return Ok(*at),
            Config::Pending(data) => data,
        };
        if out.slots() > 0 && out.len() + data.len() + 3 > CONTENT_TARGET {
            self.flush_content(out)?;
            *out = ContentWriter::default();
        }
        Ok(ContentRef {
            block: self.next_content,
            slot: out.push(data),
        })
    }

    /// Writes a filled content block under the next number.
    fn flush_content(&mut self, out: &ContentWriter) -> Result<(), Error> {
        if out.slots() > 0 {
            self.content
                .insert(self.next_content, out.encode().as_slice())?;
            self.next_content += 1;
        }
        Ok(())
    }

    /// Clears the slots of removed configs, and removes content blocks left
    /// with none. A block whose slots cannot be read is left as it is: its
    /// configs are unreadable already, and verification reports them.
    fn free(&mut self) -> Result<(), Error> {
        let mut freed = std::mem::take(&mut self.freed);
        freed.sort_unstable();
        for group in freed.chunk_by(|a, b| a.block == b.block) {
            let block = group[0].block;
            let rewritten = {
                let guard = self.content.get(block)?;
                let Some(data) = guard.as_ref().map(|g| g.value()) else {
                    continue;
                };
                let slots: Vec<u32> = group.iter().map(|at| at.slot).collect();
                match remove_slots(data, &slots) {
                    Ok(rewritten) => rewritten,
                    Err(err) => {
                        tracing::warn!(block, error = %err, "content block cannot be decoded; left in place");
                        continue;
                    }
                }
            };
            match rewritten {
                Some(data) => {
                    self.content.insert(block, data.as_slice())?;
                }
                None => {
                    self.content.remove(block)?;
                }
            }
        }
        Ok(())
    }

    /// Adds new images' records to the last block while it has room, then
    /// to new blocks, and returns their index entries. Filling the last
    /// block first keeps single-image batches from making one block per
    /// image.
    fn place(&mut self, fresh: Vec<(ImageKey, ContentRef, Vec<u8>)>) -> Result<Vec<Entry>, Error> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::with_capacity(fresh.len());
        let last = self
            .blocks
            .last()?
            .map(|(k, v)| (k.value(), Bytes::copy_from_slice(v.value())));
        let (mut number, mut out) = match last {
            // A damaged block is left as it is: records appended after the
            // damage could not be read back.
            Some((number, data))
                if data.len() < BLOCK_TARGET && block_entries(&data).all(|e| e.is_ok()) =>
            {
                (number, BlockWriter::continuing(&data))
            }
            Some((number, _)) => (number + 1, BlockWriter::new()),
            None => (0, BlockWriter::new()),
        };
        for (key, content, record) in fresh {
            if out.entries() > 0 && out.len() + record.len() + 40 > BLOCK_TARGET {
                self.blocks.insert(number, out.as_bytes())?;
                number += 1;
                out = BlockWriter::new();
            }
            out.push(&key, &record);
            entries.push(Entry {
                id: key,
                location: Location {
                    content,
                    block: number,
                },
            });
        }
        self.blocks.insert(number, out.as_bytes())?;
        Ok(entries)
    }
}

/// The bytes of a stored config; empty when they cannot be found, which
/// verification then reports.
fn read_config(
    content: &impl ReadableTable<u64, &'static [u8]>,
    at: ContentRef,
) -> Result<Bytes, Error> {
    let guard = content.get(at.block)?;
    let data = guard.as_ref().map(|g| g.value()).unwrap_or_default();
    Ok(content_slot(data, at.slot)
        .ok()
        .flatten()
        .map(Bytes::copy_from_slice)
        .unwrap_or_default())
}

/// The names whose image is in `images` (sorted by ID), sorted by name; an
/// entry that does not decode, or that points at an image not in
/// `images`, is reported in `quarantined`.
fn read_names(
    table: &redb::ReadOnlyTable<&'static str, &'static ImageKey>,
    images: &[imagecache_core::SnapshotEntry],
    quarantined: &mut Vec<Quarantined>,
) -> Result<Vec<(Reference, ImageId)>, Error> {
    let mut names = Vec::new();
    for entry in table.iter()? {
        let (name, key) = entry?;
        let id = ImageId::from_bytes(*key.value());
        match Reference::parse(name.value()) {
            Ok(name) => {
                if images.binary_search_by(|e| e.id.cmp(&id)).is_ok() {
                    names.push((name, id));
                } else {
                    // Batches are atomic and take an image's names along
                    // when they delete or set it aside, so a name left
                    // pointing at nothing is damage: reported, not listed.
                    quarantined.push(Quarantined {
                        name: format!("{NAME} names entry {:?}", name.as_str()),
                        reason: format!("points at {id}, which the store does not hold"),
                    });
                }
            }
            Err(e) => quarantined.push(Quarantined {
                name: format!("{NAME} names entry {:?}", name.value()),
                reason: e.to_string(),
            }),
        }
    }
    // The table is in key order, which is the full form's order already;
    // sorting keeps the snapshot's promise whatever the key encoding.
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// One image's record in the index block `data`, numbered `block`.
fn record_in<'d>(data: &'d [u8], block: u64, key: &ImageKey) -> Result<Option<&'d [u8]>, Error> {
    find_in_block(data, key).map_err(|source| Error::BadBlock { block, source })
}

fn not_found(id: ImageId) -> Error {
    Error::Contract(imagecache_core::Error::NotFound {
        key: Key::Image(id),
    })
}

impl Inner {
    /// Applies a batch in one write transaction; an error aborts it whole.
    pub(super) fn write(&self, ops: Vec<WriteOp>) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let mut batch = Batch::open(&txn, ops.iter().filter_map(WriteOp::id))?;
            for op in ops {
                batch.apply(op)?;
            }
            batch.finish()?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Where an image is, in a read transaction.
    fn locate(txn: &redb::ReadTransaction, id: &ImageId) -> Result<Location, Error> {
        let runs = index::runs(&txn.open_table(index::RUNS)?)?;
        let found = index::find(&txn.open_table(index::CHUNKS)?, &runs, &id.to_bytes())?;
        Ok(found.ok_or_else(|| not_found(*id))?.location)
    }

    pub(super) fn get(&self, id: &ImageId) -> Result<Bytes, Error> {
        let txn = self.begin_read()?;
        let at = Self::locate(&txn, id)?.content;
        let data = read_config(&txn.open_table(CONTENT)?, at)?;
        Ok(Content::verify(*id, data)?.into_data())
    }

    pub(super) fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes, Error> {
        let txn = self.begin_read()?;
        let image = id.to_bytes();
        let block = Self::locate(&txn, id)?.block;
        let raw = {
            let blocks = txn.open_table(BLOCKS)?;
            let guard = blocks.get(block)?;
            let data = guard.as_ref().map(|g| g.value()).unwrap_or_default();
            record_in(data, block, &image)?
                .map(Bytes::copy_from_slice)
                .ok_or(Error::MissingRecord { id: *id, block })?
        };
        let record = Record::decode(&raw).map_err(|source| Error::BadRecord { id: *id, source })?;
        record.get(key).cloned().ok_or_else(|| {
            Error::Contract(imagecache_core::Error::NotFound {
                key: Key::Metadata {
                    id: *id,
                    key: key.clone(),
                },
            })
        })
    }

    /// Reads every index block and the quarantine; see [`load`](super::load).
    pub(super) fn load(&self) -> Result<Snapshot, Error> {
        let txn = self.begin_read()?;
        let load::Loaded {
            images,
            mut quarantined,
        } = load::read(
            &txn.open_table(BLOCKS)?,
            index::len(&txn.open_table(index::RUNS)?)?,
        )?;
        for entry in txn.open_table(QUARANTINE)?.iter()? {
            let (key, value) = entry?;
            let id = ImageId::from_bytes(*key.value());
            let reason = QuarantineEntry::decode_reason(value.value())
                .unwrap_or_else(|err| format!("quarantined; the reason cannot be decoded ({err})"));
            quarantined.push(Quarantined {
                name: id.to_string(),
                reason,
            });
        }
        let names = read_names(&txn.open_table(NAMES)?, &images, &mut quarantined)?;
        let (leases, damaged) = leases::read(&txn.open_table(leases::LEASES)?)?.into_parts();
        quarantined.extend(damaged);
        Ok(Snapshot {
            images,
            quarantined,
            names,
            leases,
        })
    }

    /// Reads the `leases` table alone.
    pub(super) fn leases(&self) -> Result<Vec<Lease>, Error> {
        let txn = self.begin_read()?;
        Ok(leases::read(&txn.open_table(leases::LEASES)?)?.into_leases()?)
    }

    /// Stores `data` as an image's config without any check (for tests of
    /// corrupt-content handling). An image not stored before appears with
    /// no metadata.
    #[cfg(feature = "testing")]
    pub(super) fn insert_raw_content(&self, id: &ImageId, data: &[u8]) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let mut batch = Batch::open(&txn, [*id])?;
            let data = Bytes::copy_from_slice(data);
            // The bytes go to a new content block like any new config, and
            // the old slot is cleared, so the other configs sharing its
            // block are left as they were.
            match batch.touch(id)?.as_mut() {
                Some(live) => {
                    let old = std::mem::replace(&mut live.config, Config::Pending(data));
                    if let Config::Stored(at) = old {
                        batch.freed.push(at);
                    }
                }
                None => batch.put(id, data),
            }
            batch.finish()?;
        }
        txn.commit()?;
        Ok(())
    }
}
