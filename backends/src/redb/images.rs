//! Image configs, their records and the quarantine, in four tables.
//!
//! * `content`: content sequence number → config bytes. Sequence numbers
//!   grow, so new configs are appended to the end of the tree instead of
//!   being scattered through it by their random IDs.
//! * `ids`: image ID → (content sequence number, index block number). The
//!   only table keyed by the random IDs, and its entries are small.
//! * `blocks`: block number → an index block holding the records of about
//!   32 KiB worth of images (see [`record`](super::record)). New images fill
//!   the last block, then start new ones.
//! * `quarantine`: image ID → reason, record and config of a set-aside image.
//!
//! So a batch of creates appends configs and a few blocks and inserts one
//! small entry per image into `ids`, and [`StoreBackend::load`] reads the
//! blocks in a few thousand large values.
//!
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use bytes::Bytes;
use imagecache_core::{
    Content, ImageId, Key, MetadataKey, Quarantined, Snapshot, SnapshotEntry, WriteOp,
};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::record::{
    BLOCK_TARGET, BlockWriter, ImageKey, QuarantineEntry, Record, RecordError, block_entries,
    find_in_block,
};
use super::{Error, Inner, NAME};

pub(super) const CONTENT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("content");
pub(super) const IDS: TableDefinition<'_, &ImageKey, (u64, u64)> = TableDefinition::new("ids");
pub(super) const BLOCKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blocks");
pub(super) const QUARANTINE: TableDefinition<'_, &ImageKey, &[u8]> =
    TableDefinition::new("quarantine");

/// Creates the tables of this module if they are missing.
pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), Error> {
    txn.open_table(CONTENT)?;
    txn.open_table(IDS)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(QUARANTINE)?;
    Ok(())
}

/// An image that existed before the batch, or was created by it.
struct Live {
    /// Its content sequence number.
    seq: u64,
    /// Its record as stored (for an image that existed), until decoded.
    raw: Option<Bytes>,
    /// Its record, once decoded or changed.
    record: Option<Record>,
    /// Whether the record must be written back.
    dirty: bool,
}

impl Live {
    fn record_mut(&mut self, id: &ImageId) -> Result<&mut Record, Error> {
        self.dirty = true;
        match &mut self.record {
            Some(record) => Ok(record),
            slot => {
                let raw = self.raw.take().unwrap_or_default();
                let record = Record::decode(&raw)
                    .map_err(|source| Error::BadRecord { id: *id, source })?;
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

/// What a batch has done to one image.
struct Touched {
    /// The index block its record was in before the batch, if it existed.
    old_block: Option<u64>,
    /// Its content sequence number before the batch, if it existed.
    old_seq: Option<u64>,
    /// The image as the batch has left it, if it exists.
    now: Option<Live>,
}

/// One write transaction applying a [`WriteBatch`](imagecache_core::WriteBatch).
struct Batch<'t> {
    content: redb::Table<'t, u64, &'static [u8]>,
    ids: redb::Table<'t, &'static ImageKey, (u64, u64)>,
    blocks: redb::Table<'t, u64, &'static [u8]>,
    quarantine: redb::Table<'t, &'static ImageKey, &'static [u8]>,
    next_seq: u64,
    /// Every image an operation has looked at, by key, in key order.
    touched: BTreeMap<ImageKey, Touched>,
    /// Blocks read during the batch, so each is read once.
    block_cache: HashMap<u64, Bytes>,
}

impl<'t> Batch<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, Error> {
        let content = txn.open_table(CONTENT)?;
        let next_seq = content.last()?.map_or(0, |(k, _)| k.value() + 1);
        Ok(Self {
            content,
            ids: txn.open_table(IDS)?,
            blocks: txn.open_table(BLOCKS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            next_seq,
            touched: BTreeMap::new(),
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

    /// The batch's view of one image, loaded on first use.
    fn touch(&mut self, id: &ImageId) -> Result<&mut Touched, Error> {
        let key = id.to_bytes();
        if !self.touched.contains_key(&key) {
            let stored = self.ids.get(&key)?.map(|g| g.value());
            let touched = match stored {
                None => Touched {
                    old_block: None,
                    old_seq: None,
                    now: None,
                },
                Some((seq, block)) => {
                    let data = self.block(block)?;
                    let raw = find_in_block(&data, &key)
                        .map_err(|source| Error::BadRecord { id: *id, source })?
                        .map(|r| data.slice_ref(r));
                    Touched {
                        old_block: Some(block),
                        old_seq: Some(seq),
                        now: Some(Live {
                            seq,
                            raw,
                            record: None,
                            dirty: false,
                        }),
                    }
                }
            };
            self.touched.insert(key, touched);
        }
        match self.touched.get_mut(&key) {
            Some(touched) => Ok(touched),
            None => unreachable!("inserted above"),
        }
    }

    fn live(&mut self, id: &ImageId) -> Result<&mut Live, Error> {
        self.touch(id)?.now.as_mut().ok_or_else(|| not_found(*id))
    }

    fn exists(&self, key: &ImageKey) -> Result<bool, Error> {
        Ok(match self.touched.get(key) {
            Some(t) => t.now.is_some(),
            None => self.ids.get(key)?.is_some(),
        })
    }

    fn put(&mut self, id: &ImageId, data: &[u8]) -> Result<(), Error> {
        let key = id.to_bytes();
        if self.exists(&key)? {
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.content.insert(seq, data)?;
        let live = Live {
            seq,
            raw: None,
            record: Some(Record::default()),
            dirty: true,
        };
        match self.touched.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().now = Some(live),
            Entry::Vacant(e) => {
                e.insert(Touched {
                    old_block: None,
                    old_seq: None,
                    now: Some(live),
                });
            }
        }
        Ok(())
    }

    /// Removes an image, returning its config bytes and record.
    fn remove(&mut self, id: &ImageId) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        let Some(live) = self.touch(id)?.now.take() else {
            return Ok(None);
        };
        let data = self
            .content
            .remove(live.seq)?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        Ok(Some((data, live.encoded())))
    }

    fn apply(&mut self, op: WriteOp) -> Result<(), Error> {
        match op {
            WriteOp::Put(c) => self.put(&c.id(), c.data())?,
            WriteOp::SetMetadata { id, key, value } => {
                self.live(&id)?.record_mut(&id)?.set(key, value);
            }
            WriteOp::DeleteMetadata { id, key } => {
                if let Some(live) = self.touch(&id)?.now.as_mut() {
                    live.record_mut(&id)?.remove(&key);
                }
            }
            WriteOp::SetSummary { id, summary } => {
                self.live(&id)?.record_mut(&id)?.summary = Some(summary);
            }
            WriteOp::Delete { id } => {
                self.remove(&id)?;
            }
            WriteOp::Quarantine { id, reason } => {
                let (data, record) = self.remove(&id)?.ok_or_else(|| not_found(id))?;
                let entry = QuarantineEntry::encode(&reason, &record, &data);
                self.quarantine.insert(&id.to_bytes(), entry.as_slice())?;
            }
            other => {
                return Err(Error::Contract(imagecache_core::Error::Unsupported {
                    operation: op_name(&other),
                    backend: NAME,
                }));
            }
        }
        Ok(())
    }

    /// Writes the records and index entries of every touched image.
    fn finish(mut self) -> Result<(), Error> {
        // Changes to existing blocks, by block: a new record, or removal.
        let mut changes: BTreeMap<u64, Vec<(ImageKey, Option<Vec<u8>>)>> = BTreeMap::new();
        let mut fresh: Vec<(ImageKey, u64, Vec<u8>)> = Vec::new();
        for (key, t) in std::mem::take(&mut self.touched) {
            match (t.old_block, t.now) {
                (Some(block), Some(live)) => {
                    if live.dirty {
                        changes
                            .entry(block)
                            .or_default()
                            .push((key, Some(live.encoded())));
                    }
                    if t.old_seq != Some(live.seq) {
                        self.ids.insert(&key, (live.seq, block))?;
                    }
                }
                (Some(block), None) => {
                    changes.entry(block).or_default().push((key, None));
                    self.ids.remove(&key)?;
                }
                (None, Some(live)) => fresh.push((key, live.seq, live.encoded())),
                (None, None) => {}
            }
        }
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
        self.place(fresh)
    }

    /// Adds new images' records, given in key order, to the last block
    /// while it has room, then to new blocks.
    ///
    /// Every block keeps its entries sorted by key. Nothing depends on that
    /// for correctness, but it lets [`Inner::load`], which walks all records
    /// in key order, move forward through each block instead of jumping
    /// around in it, which keeps it cache-friendly.
    fn place(&mut self, fresh: Vec<(ImageKey, u64, Vec<u8>)>) -> Result<(), Error> {
        if fresh.is_empty() {
            return Ok(());
        }
        let last = self
            .blocks
            .last()?
            .map(|(k, v)| (k.value(), Bytes::copy_from_slice(v.value())));
        let mut fresh = fresh.into_iter().peekable();
        let mut number = match last {
            Some((number, data)) if data.len() < BLOCK_TARGET => {
                // Merge the records that still fit into the last block.
                let mut joining = Vec::new();
                let mut size = data.len();
                while let Some((_, _, record)) = fresh.peek() {
                    if size + record.len() + 40 > BLOCK_TARGET {
                        break;
                    }
                    size += record.len() + 40;
                    joining.extend(fresh.next());
                }
                if !joining.is_empty() {
                    self.merge_into(number, &data, joining)?;
                }
                number + 1
            }
            Some((number, _)) => number + 1,
            None => 0,
        };
        let mut out = BlockWriter::new();
        for (key, seq, record) in fresh {
            if out.entries() > 0 && out.len() + record.len() + 40 > BLOCK_TARGET {
                self.blocks.insert(number, out.as_bytes())?;
                number += 1;
                out = BlockWriter::new();
            }
            out.push(&key, &record);
            self.ids.insert(&key, (seq, number))?;
        }
        if out.entries() > 0 {
            self.blocks.insert(number, out.as_bytes())?;
        }
        Ok(())
    }

    /// Rewrites block `number` (currently `data`) with `joining` merged in.
    fn merge_into(
        &mut self,
        number: u64,
        data: &[u8],
        joining: Vec<(ImageKey, u64, Vec<u8>)>,
    ) -> Result<(), Error> {
        let mut out = BlockWriter::new();
        let mut joining = joining.into_iter().peekable();
        for entry in block_entries(data) {
            let (key, range) = entry.map_err(|source| Error::BadBlock {
                block: number,
                source,
            })?;
            while let Some((new_key, seq, record)) = joining.next_if(|(k, _, _)| *k < key) {
                out.push(&new_key, &record);
                self.ids.insert(&new_key, (seq, number))?;
            }
            out.push(&key, &data[range]);
        }
        for (key, seq, record) in joining {
            out.push(&key, &record);
            self.ids.insert(&key, (seq, number))?;
        }
        self.blocks.insert(number, out.as_bytes())?;
        Ok(())
    }
}

fn not_found(id: ImageId) -> Error {
    Error::Contract(imagecache_core::Error::NotFound {
        key: Key::Image(id),
    })
}

fn op_name(op: &WriteOp) -> &'static str {
    match op {
        WriteOp::Put(_) => "put",
        WriteOp::SetMetadata { .. } => "set_metadata",
        WriteOp::DeleteMetadata { .. } => "delete_metadata",
        WriteOp::SetSummary { .. } => "set_summary",
        WriteOp::Delete { .. } => "delete",
        WriteOp::Quarantine { .. } => "quarantine",
        _ => "unknown write operation",
    }
}

/// Where one record lies during [`Inner::load`]: its block and the offset of
/// its entry there.
#[derive(Clone, Copy)]
struct Loc {
    block: u32,
    entry: u32,
}

impl Inner {
    /// Applies a batch in one write transaction; an error aborts it whole.
    pub(super) fn write(&self, ops: Vec<WriteOp>) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let mut batch = Batch::open(&txn)?;
            for op in ops {
                batch.apply(op)?;
            }
            batch.finish()?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(super) fn get(&self, id: &ImageId) -> Result<Bytes, Error> {
        let txn = self.db.begin_read()?;
        let (seq, _) = txn
            .open_table(IDS)?
            .get(&id.to_bytes())?
            .map(|g| g.value())
            .ok_or_else(|| not_found(*id))?;
        let data = txn
            .open_table(CONTENT)?
            .get(seq)?
            .map(|g| Bytes::copy_from_slice(g.value()))
            .unwrap_or_default();
        Ok(Content::verify(*id, data)?.into_data())
    }

    pub(super) fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes, Error> {
        let txn = self.db.begin_read()?;
        let image = id.to_bytes();
        let (_, block) = txn
            .open_table(IDS)?
            .get(&image)?
            .map(|g| g.value())
            .ok_or_else(|| not_found(*id))?;
        let raw = {
            let blocks = txn.open_table(BLOCKS)?;
            let guard = blocks.get(block)?;
            let data = guard.as_ref().map(|g| g.value()).unwrap_or_default();
            let found =
                find_in_block(data, &image).map_err(|source| Error::BadBlock { block, source })?;
            found.map(Bytes::copy_from_slice).ok_or(Error::MissingRecord { id: *id, block })?
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

    /// Reads every index block, then reports the records in ID order.
    ///
    /// Blocks are in creation order, and sorting a million snapshot entries
    /// would cost more than reading them. So the entries' locations are
    /// counted into buckets by the first two bytes of their IDs (which are
    /// uniformly distributed hashes), each small bucket is sorted, and the
    /// records are decoded once, straight into their final order.
    pub(super) fn load(&self) -> Result<Snapshot, Error> {
        const BUCKETS: usize = 1 << 16;
        let txn = self.db.begin_read()?;
        let mut quarantined = Vec::new();
        let mut blocks: Vec<Bytes> = Vec::new();
        let mut locs: Vec<Loc> = Vec::new();
        let mut counts = vec![0u32; BUCKETS + 1];
        for entry in txn.open_table(BLOCKS)?.iter()? {
            let (number, value) = entry?;
            let data = Bytes::copy_from_slice(value.value());
            let block = blocks.len() as u32;
            // Entries follow the block's format byte, one after another.
            let mut pos = 1usize;
            for item in block_entries(&data) {
                match item {
                    Ok((key, range)) => {
                        counts[bucket_of(&key) + 1] += 1;
                        locs.push(Loc {
                            block,
                            entry: pos as u32,
                        });
                        pos = range.end;
                    }
                    Err(err) => quarantined.push(Quarantined {
                        name: format!("index block {}", number.value()),
                        reason: format!(
                            "index block cannot be decoded past byte {pos} ({err}); its images after that point are not listed"
                        ),
                    }),
                }
            }
            blocks.push(data);
        }

        // Counting sort of the locations by bucket, then a sort by full ID
        // within each bucket.
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let key_at = |loc: &Loc| -> &[u8] {
            let start = loc.entry as usize;
            &blocks[loc.block as usize][start..start + 32]
        };
        let mut next = counts.clone();
        let mut order = vec![Loc { block: 0, entry: 0 }; locs.len()];
        for loc in &locs {
            let b = bucket_of(key_at(loc));
            order[next[b] as usize] = *loc;
            next[b] += 1;
        }
        drop(locs);
        for b in 0..BUCKETS {
            let range = counts[b] as usize..counts[b + 1] as usize;
            if range.len() > 1 {
                order[range].sort_unstable_by(|x, y| key_at(x).cmp(key_at(y)));
            }
        }

        let mut images: Vec<SnapshotEntry> = Vec::with_capacity(order.len());
        let mut previous: Option<ImageKey> = None;
        for loc in &order {
            let data = &blocks[loc.block as usize];
            let (key, record) = match entry_at(data, loc.entry as usize) {
                Ok(found) => found,
                // The first pass read this entry, so it cannot fail here.
                Err(_) => continue,
            };
            let id = ImageId::from_bytes(key);
            if previous == Some(key) {
                quarantined.push(Quarantined {
                    name: id.to_string(),
                    reason: "a second index record for this image was ignored".into(),
                });
                continue;
            }
            previous = Some(key);
            match Record::decode_at(data, record) {
                Ok(record) => images.push(SnapshotEntry {
                    id,
                    metadata: record.metadata,
                    summary: record.summary,
                }),
                // A damaged record is reported, not skipped: the image stays
                // in place until the store decides what to do with it.
                Err(err) => quarantined.push(Quarantined {
                    name: id.to_string(),
                    reason: format!("index record cannot be decoded ({err}); left in place"),
                }),
            }
        }

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
        Ok(Snapshot {
            images,
            quarantined,
        })
    }

    /// Stores `data` as an image's config without any check (for tests of
    /// corrupt-content handling). An image not stored before appears with
    /// no metadata.
    pub(super) fn insert_raw_content(&self, id: &ImageId, data: &[u8]) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let key = id.to_bytes();
            let stored = txn.open_table(IDS)?.get(&key)?.map(|g| g.value());
            match stored {
                Some((seq, _)) => {
                    txn.open_table(CONTENT)?.insert(seq, data)?;
                }
                None => {
                    let mut batch = Batch::open(&txn)?;
                    batch.put(id, data)?;
                    batch.finish()?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn bucket_of(key: &[u8]) -> usize {
    usize::from(key[0]) << 8 | usize::from(key[1])
}

/// The key and record range of the block entry starting at `offset`.
fn entry_at(data: &[u8], offset: usize) -> Result<(ImageKey, Range<usize>), RecordError> {
    let tail = data
        .get(offset..)
        .ok_or(RecordError("entry offset past the block"))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(tail.get(..32).ok_or(RecordError("record ends early"))?);
    let (len, used) = super::record::read_varint(&tail[32..])?;
    let start = offset + 32 + used;
    let end = start
        .checked_add(usize::try_from(len).map_err(|_| RecordError("length does not fit in memory"))?)
        .filter(|&end| end <= data.len())
        .ok_or(RecordError("length exceeds the record"))?;
    Ok((key, start..end))
}
