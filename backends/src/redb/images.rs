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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;

use bytes::Bytes;
use imagecache_core::{
    Content, ImageId, Key, MetadataKey, Quarantined, Snapshot, SnapshotEntry, WriteOp,
};
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};

use super::record::{
    BLOCK_TARGET, BlockWriter, ImageKey, QuarantineEntry, Record, block_entries, find_in_block,
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
    data: Vec<u8>,
    record: Vec<u8>,
}

/// Changes to one index block: per image, its new record, or `None` to
/// drop it.
type BlockEdits = Vec<(ImageKey, Option<Vec<u8>>)>;

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
    /// Every image an operation has looked at, by key.
    touched: HashMap<ImageKey, Touched>,
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
            touched: HashMap::new(),
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

    /// Removes an image, returning what it held.
    fn remove(&mut self, id: &ImageId) -> Result<Option<Removed>, Error> {
        let Some(live) = self.touch(id)?.now.take() else {
            return Ok(None);
        };
        let data = self
            .content
            .remove(live.seq)?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        Ok(Some(Removed {
            data,
            record: live.encoded(),
        }))
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
                let removed = self.remove(&id)?.ok_or_else(|| not_found(id))?;
                let entry = QuarantineEntry::encode(&reason, &removed.record, &removed.data);
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
        let mut changes: BTreeMap<u64, BlockEdits> = BTreeMap::new();
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

    /// Adds new images' records to the last block while it has room, then
    /// to new blocks. Filling the last block first keeps single-image
    /// batches from making one block per image.
    fn place(&mut self, fresh: Vec<(ImageKey, u64, Vec<u8>)>) -> Result<(), Error> {
        if fresh.is_empty() {
            return Ok(());
        }
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
        for (key, seq, record) in fresh {
            if out.entries() > 0 && out.len() + record.len() + 40 > BLOCK_TARGET {
                self.blocks.insert(number, out.as_bytes())?;
                number += 1;
                out = BlockWriter::new();
            }
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
            found
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

    /// Reads every index block, then reports the records in ID order.
    ///
    /// Blocks are in creation order. Decoding them in that order reads
    /// memory sequentially; walking the records in ID order instead would
    /// miss the CPU cache on nearly every record of a large store. So the
    /// records are decoded first and sorted afterwards. Two threads share
    /// the work, each reading and sorting half of the blocks from the same
    /// read transaction, and the sorted halves are merged.
    pub(super) fn load(&self) -> Result<Snapshot, Error> {
        let txn = self.db.begin_read()?;
        let expected = usize::try_from(txn.open_table(IDS)?.len()?).unwrap_or(0);
        let blocks = txn.open_table(BLOCKS)?;
        let first = blocks.first()?.map(|(k, _)| k.value());
        let last = blocks.last()?.map(|(k, _)| k.value());
        let (lower, upper) = match (first, last) {
            (Some(first), Some(last)) if last > first => {
                let middle = first + (last - first) / 2 + 1;
                let blocks = &blocks;
                std::thread::scope(|scope| {
                    let upper = scope.spawn(move || read_blocks(blocks, middle.., expected / 2));
                    let lower = read_blocks(blocks, ..middle, expected / 2 + 1);
                    let upper = upper
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (lower, upper)
                })
            }
            _ => (read_blocks(&blocks, .., expected), Ok(Part::default())),
        };
        let (lower, upper) = (lower?, upper?);
        let mut quarantined = lower.quarantined;
        quarantined.extend(upper.quarantined);
        let images = merge_by_id(lower.images, upper.images, &mut quarantined);

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

/// The images of some of the blocks, sorted by ID, and what could not be
/// read.
#[derive(Default)]
struct Part {
    images: Vec<SnapshotEntry>,
    quarantined: Vec<Quarantined>,
}

/// Decodes the blocks numbered within `range`, then sorts their images.
fn read_blocks(
    table: &redb::ReadOnlyTable<u64, &'static [u8]>,
    range: impl RangeBounds<u64>,
    capacity: usize,
) -> Result<Part, Error> {
    let mut part = Part {
        images: Vec::with_capacity(capacity),
        quarantined: Vec::new(),
    };
    let mut prefixes: Vec<(u64, u32)> = Vec::with_capacity(capacity);
    let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
    for entry in table.range::<u64>(bounds)? {
        let (number, value) = entry?;
        let data = Bytes::copy_from_slice(value.value());
        for item in block_entries(&data) {
            match item {
                Ok((key, range)) => match Record::decode_at(&data, range) {
                    Ok(record) => {
                        prefixes.push((id_prefix(&key), part.images.len() as u32));
                        part.images.push(SnapshotEntry {
                            id: ImageId::from_bytes(key),
                            metadata: record.metadata,
                            summary: record.summary,
                        });
                    }
                    // A damaged record is reported, not skipped: the image
                    // stays in place until the store decides what to do
                    // with it.
                    Err(err) => part.quarantined.push(Quarantined {
                        name: ImageId::from_bytes(key).to_string(),
                        reason: format!("index record cannot be decoded ({err}); left in place"),
                    }),
                },
                Err(err) => part.quarantined.push(Quarantined {
                    name: format!("index block {}", number.value()),
                    reason: format!(
                        "index block cannot be decoded ({err}); the images after the damage are not listed"
                    ),
                }),
            }
        }
    }
    part.images = sort_by_id(part.images, prefixes);
    Ok(part)
}

fn id_prefix(key: &ImageKey) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&key[..8]);
    u64::from_be_bytes(head)
}

/// Puts `images` in ID order, given each one's 64-bit ID prefix and index.
///
/// Sorting the small (prefix, index) pairs and then moving each entry into
/// place costs far less than sorting the entries themselves.
fn sort_by_id(mut images: Vec<SnapshotEntry>, mut order: Vec<(u64, u32)>) -> Vec<SnapshotEntry> {
    order.sort_unstable();
    // Apply the permutation in place: position i takes the entry first
    // listed at order[i].1, which, if it lies before i, has since been
    // swapped away; following the recorded indices finds where it went.
    for i in 0..order.len() {
        let mut from = order[i].1 as usize;
        while from < i {
            from = order[from].1 as usize;
        }
        order[i].1 = from as u32;
        images.swap(i, from);
    }
    // IDs sharing a 64-bit prefix never occur by chance, but two configs can
    // be crafted to; such a run is put in full-ID order.
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && order[end].0 == order[start].0 {
            end += 1;
        }
        if end - start > 1 {
            images[start..end].sort_by_key(|e| e.id);
        }
        start = end;
    }
    images
}

/// Merges two ID-sorted lists into one, dropping repeated IDs and reporting
/// them. Two records for one image can only come from damage; the first is
/// kept.
fn merge_by_id(
    lower: Vec<SnapshotEntry>,
    upper: Vec<SnapshotEntry>,
    quarantined: &mut Vec<Quarantined>,
) -> Vec<SnapshotEntry> {
    let mut out: Vec<SnapshotEntry> = Vec::with_capacity(lower.len() + upper.len());
    let mut lower = lower.into_iter().peekable();
    let mut upper = upper.into_iter().peekable();
    loop {
        let next = match (lower.peek(), upper.peek()) {
            (Some(a), Some(b)) if a.id <= b.id => lower.next(),
            (Some(_), Some(_)) | (None, Some(_)) => upper.next(),
            (Some(_), None) => lower.next(),
            (None, None) => break,
        };
        let Some(entry) = next else { break };
        if out.last().is_some_and(|last| last.id == entry.id) {
            quarantined.push(Quarantined {
                name: entry.id.to_string(),
                reason: "a second index record for this image was ignored".into(),
            });
        } else {
            out.push(entry);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: ImageKey, tag: &'static [u8]) -> SnapshotEntry {
        SnapshotEntry {
            id: ImageId::from_bytes(key),
            metadata: Vec::new(),
            summary: Some(Bytes::from_static(tag)),
        }
    }

    fn sorted(images: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
        let order = images
            .iter()
            .enumerate()
            .map(|(i, e)| (id_prefix(&e.id.to_bytes()), i as u32))
            .collect();
        sort_by_id(images, order)
    }

    #[test]
    fn ids_sharing_a_prefix_are_ordered_by_the_whole_id() {
        // Keys equal in their first 8 bytes, differing later.
        let mut keys: Vec<ImageKey> = (0..40u8)
            .map(|i| {
                let mut k = [7u8; 32];
                k[31] = i.wrapping_mul(37);
                k[20] = i % 3;
                k
            })
            .collect();
        keys.extend((0..40u8).map(|i| [i.wrapping_mul(101); 32]));
        let images: Vec<_> = keys.iter().map(|k| entry(*k, b"")).collect();
        let out = sorted(images);
        let got: Vec<ImageKey> = out.iter().map(|e| e.id.to_bytes()).collect();
        assert_eq!(got.len(), keys.len());
        let mut want = got.clone();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn merge_keeps_order_and_reports_repeats() {
        let lower = sorted(vec![
            entry([5; 32], b"a"),
            entry([1; 32], b"a"),
            entry([3; 32], b"a"),
        ]);
        let upper = sorted(vec![
            entry([4; 32], b"b"),
            entry([3; 32], b"b"),
            entry([0; 32], b"b"),
        ]);
        let mut quarantined = Vec::new();
        let out = merge_by_id(lower, upper, &mut quarantined);
        let got: Vec<(u8, &[u8])> = out
            .iter()
            .map(|e| (e.id.to_bytes()[0], &e.summary.as_ref().unwrap()[..]))
            .collect();
        assert_eq!(
            got,
            [(0, &b"b"[..]), (1, b"a"), (3, b"a"), (4, b"b"), (5, b"a")]
        );
        assert_eq!(quarantined.len(), 1);
        assert_eq!(
            quarantined[0].name,
            ImageId::from_bytes([3; 32]).to_string()
        );

        // Repeats inside one part are dropped too.
        let mut quarantined = Vec::new();
        let one = sorted(vec![entry([2; 32], b"x"), entry([2; 32], b"y")]);
        let out = merge_by_id(one, Vec::new(), &mut quarantined);
        assert_eq!(out.len(), 1);
        assert_eq!(quarantined.len(), 1);
    }
}
