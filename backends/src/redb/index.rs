//! The ID index: where each image's config and record are, by image ID.
//!
//! # Why runs
//!
//! Image IDs are hashes, so the images of one batch land at random places
//! in anything sorted by ID. A B-tree keyed by ID therefore copies about one
//! page per created image once the tree outgrows the cache: a batch of
//! 10,000 creates into a store of a million rewrote most of the tree's
//! leaves, several times the bytes of the configs themselves. So the index
//! is kept as a few sorted *runs*, as a log-structured merge tree keeps its
//! data:
//!
//! * Each batch writes the IDs it created as one new run, sorted and packed
//!   into chunks of up to [`CHUNK_ENTRIES`] entries. A new run's number is
//!   higher than any before it, so its chunks are appended to the end of
//!   the table instead of being scattered through it.
//! * Every indexed image is in exactly one run, so no run hides another. A
//!   lookup asks the runs in turn, largest first, at one B-tree descent
//!   each; a batch looks its IDs up in sorted order, at one or two descents
//!   per chunk it needs.
//! * When [`FANOUT`] runs of about the same size exist, they are merged into
//!   one. Each entry is thus rewritten about once each time the store grows
//!   fourfold, sequentially and at 52 bytes an entry. A million images
//!   written in batches of 10,000 leave at most about a dozen runs.
//! * Deleting an image, or giving it new config bytes, rewrites only the
//!   chunk that holds it.
//!
//! # Tables
//!
//! * `id_chunks`: (run, ID of the chunk's first entry) → chunk.
//! * `id_runs`: run → number of entries in it.
//!
//! Chunk layout: `u8` format (1), then per image, sorted by ID, 52 bytes:
//! the 32 bytes of its ID, the number (`u64`) and slot (`u32`) of the
//! content block holding its config, and the number (`u64`) of the index
//! block holding its record, all little-endian.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use redb::{AccessGuard, ReadableTable, TableDefinition};

use super::Error;
use super::record::{ImageKey, RecordError};

/// Key of a chunk: its run and the ID of its first entry.
pub(super) type ChunkKey = (u64, &'static ImageKey);

pub(super) const CHUNKS: TableDefinition<'_, (u64, &ImageKey), &[u8]> =
    TableDefinition::new("id_chunks");
pub(super) const RUNS: TableDefinition<'_, u64, u64> = TableDefinition::new("id_runs");

/// The only chunk format this module writes and reads.
const CHUNK_FORMAT: u8 = 1;

/// Bytes per entry: ID, content block and slot, index block.
const ENTRY_LEN: usize = 52;

/// Entries per chunk. A full chunk (1 + 314 × 52 = 16,329 bytes) and its
/// key fit one 16 KiB redb page with the leaf's own 48 bytes of overhead;
/// one more entry would double the page.
pub(super) const CHUNK_ENTRIES: usize = 314;

// redb's leaf around a chunk: 4 header bytes, a 4-byte value length and the
// 40-byte key.
const _: () = assert!(1 + CHUNK_ENTRIES * ENTRY_LEN + 4 + 4 + 40 <= 16 << 10);
const _: () = assert!(1 + (CHUNK_ENTRIES + 1) * ENTRY_LEN + 4 + 4 + 40 > 16 << 10);

/// How many runs of one size class are merged together.
pub(super) const FANOUT: usize = 4;

/// Runs smaller than 4^4 = 256 entries all belong to the lowest size
/// class, so that single-image batches do not leave a run per image
/// behind, yet are merged among themselves at little cost.
const SMALL_CLASSES: u32 = 3;

const LOWEST: ImageKey = [0; 32];
const HIGHEST: ImageKey = [0xff; 32];

/// Where a config is: a content block, and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ContentRef {
    pub(super) block: u64,
    pub(super) slot: u32,
}

/// Where an image's config and record are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    /// Its config.
    pub(super) content: ContentRef,
    /// The index block holding its record.
    pub(super) block: u64,
}

/// An indexed image: where it is, and which run says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub(super) location: Location,
    pub(super) run: u64,
}

/// One entry of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) id: ImageKey,
    pub(super) location: Location,
}

/// A change to an indexed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Edit {
    pub(super) id: ImageKey,
    /// The run holding it.
    pub(super) run: u64,
    /// Where its config now is, or `None` to remove it from the index.
    pub(super) content: Option<ContentRef>,
}

/// A decoded view of one chunk's entries.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    entries: &'a [[u8; ENTRY_LEN]],
}

impl<'a> Chunk<'a> {
    /// Checks the format and the length. The order of the entries is not
    /// checked here, as that would cost as much as the search; merging
    /// sorts them again whatever they are.
    fn parse(data: &'a [u8]) -> Result<Self, RecordError> {
        let Some((&format, rest)) = data.split_first() else {
            return Err(RecordError("index chunk is empty"));
        };
        if format != CHUNK_FORMAT {
            return Err(RecordError("unknown index chunk format"));
        }
        let (entries, tail) = rest.as_chunks::<ENTRY_LEN>();
        if !tail.is_empty() {
            return Err(RecordError("index chunk ends inside an entry"));
        }
        if entries.is_empty() {
            return Err(RecordError("index chunk has no entries"));
        }
        Ok(Self { entries })
    }

    fn find(&self, key: &ImageKey) -> Option<Location> {
        // Comparing the leading eight bytes as a number first settles
        // nearly every step of the search without a call to memcmp.
        let head = be_u64(&key[..8]);
        self.entries
            .binary_search_by(|e| {
                be_u64(&e[..8])
                    .cmp(&head)
                    .then_with(|| e[8..32].cmp(&key[8..]))
            })
            .ok()
            .map(|i| decode_entry(&self.entries[i]).location)
    }

    fn iter(&self) -> impl Iterator<Item = Entry> + 'a {
        self.entries.iter().map(decode_entry)
    }
}

fn decode_entry(raw: &[u8; ENTRY_LEN]) -> Entry {
    let mut id = [0u8; 32];
    id.copy_from_slice(&raw[..32]);
    Entry {
        id,
        location: Location {
            content: ContentRef {
                block: le_u64(&raw[32..40]),
                slot: le_u32(&raw[40..44]),
            },
            block: le_u64(&raw[44..52]),
        },
    }
}

fn be_u64(raw: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(raw);
    u64::from_be_bytes(b)
}

fn le_u64(raw: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(raw);
    u64::from_le_bytes(b)
}

fn le_u32(raw: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(raw);
    u32::from_le_bytes(b)
}

fn encode_chunk(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(CHUNK_FORMAT);
    for e in entries {
        out.extend_from_slice(&e.id);
        out.extend_from_slice(&e.location.content.block.to_le_bytes());
        out.extend_from_slice(&e.location.content.slot.to_le_bytes());
        out.extend_from_slice(&e.location.block.to_le_bytes());
    }
    out
}

fn bad_chunk(run: u64) -> impl FnOnce(RecordError) -> Error {
    move |source| Error::BadChunk { run, source }
}

/// The size class of a run of `count` entries: ⌊log₄ count⌋, with the
/// smallest runs all in class 0.
fn size_class(count: u64) -> u32 {
    (count.max(1).ilog2() / 2).saturating_sub(SMALL_CLASSES)
}

/// The runs and their sizes, largest first: most lookups end in the
/// largest run.
pub(super) fn runs(table: &impl ReadableTable<u64, u64>) -> Result<Vec<(u64, u64)>, Error> {
    let mut runs = Vec::new();
    for entry in table.iter()? {
        let (run, count) = entry?;
        runs.push((run.value(), count.value()));
    }
    runs.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(runs)
}

/// How many images the index holds.
pub(super) fn len(table: &impl ReadableTable<u64, u64>) -> Result<u64, Error> {
    let mut total = 0u64;
    for entry in table.iter()? {
        total = total.saturating_add(entry?.1.value());
    }
    Ok(total)
}

type ChunkGuard<'g> = AccessGuard<'g, &'static [u8]>;

/// One end of a range of chunk keys.
type KeyBound<'k> = Bound<(u64, &'k ImageKey)>;

/// The chunk of `run` whose entries would include `key`: the last chunk
/// starting at or before it.
fn chunk_for<'g>(
    chunks: &'g impl ReadableTable<ChunkKey, &'static [u8]>,
    run: u64,
    key: &ImageKey,
) -> Result<Option<(ImageKey, ChunkGuard<'g>)>, Error> {
    let found = chunks.range((run, &LOWEST)..=(run, key))?.next_back();
    match found {
        None => Ok(None),
        Some(entry) => {
            let (k, v) = entry?;
            let first = *k.value().1;
            Ok(Some((first, v)))
        }
    }
}

/// The first ID of the chunk after the one that would include `key`.
fn next_chunk_start(
    chunks: &impl ReadableTable<ChunkKey, &'static [u8]>,
    run: u64,
    key: &ImageKey,
) -> Result<Option<ImageKey>, Error> {
    let bounds: (KeyBound<'_>, KeyBound<'_>) = (
        Bound::Excluded((run, key)),
        Bound::Included((run, &HIGHEST)),
    );
    let next = chunks.range(bounds)?.next();
    match next {
        None => Ok(None),
        Some(entry) => Ok(Some(*entry?.0.value().1)),
    }
}

/// Where `key` is, if it is indexed.
pub(super) fn find(
    chunks: &impl ReadableTable<ChunkKey, &'static [u8]>,
    runs: &[(u64, u64)],
    key: &ImageKey,
) -> Result<Option<Found>, Error> {
    for &(run, _) in runs {
        if let Some((_, guard)) = chunk_for(chunks, run, key)? {
            let chunk = Chunk::parse(guard.value()).map_err(bad_chunk(run))?;
            if let Some(location) = chunk.find(key) {
                return Ok(Some(Found { location, run }));
            }
        }
    }
    Ok(None)
}

/// Looks up many IDs at once: `keys` must be sorted and distinct. Returns
/// where each indexed one is.
///
/// Each run is walked in key order, keeping the chunk that covers the
/// current key together with where the next chunk starts, so a chunk is
/// fetched once however many of the keys fall into it.
pub(super) fn find_many(
    chunks: &impl ReadableTable<ChunkKey, &'static [u8]>,
    runs: &[(u64, u64)],
    keys: &[ImageKey],
) -> Result<HashMap<ImageKey, Found>, Error> {
    let mut found = HashMap::with_capacity(keys.len().min(1 << 16));
    let mut pending: Vec<ImageKey> = keys.to_vec();
    for &(run, _) in runs {
        if pending.is_empty() {
            break;
        }
        let mut missing = Vec::with_capacity(pending.len());
        // The chunk covering keys below `until` (and at or after the key it
        // was fetched for), if any chunk does.
        let mut current: Option<ChunkGuard<'_>> = None;
        // Starting at the lowest key makes the first key fetch its chunk.
        let mut until: Option<ImageKey> = Some(LOWEST);
        for key in pending {
            if until.is_some_and(|u| key >= u) {
                current = chunk_for(chunks, run, &key)?.map(|(_, guard)| guard);
                until = next_chunk_start(chunks, run, &key)?;
            }
            let location = match &current {
                Some(guard) => Chunk::parse(guard.value())
                    .map_err(bad_chunk(run))?
                    .find(&key),
                None => None,
            };
            match location {
                Some(location) => {
                    found.insert(key, Found { location, run });
                }
                None => missing.push(key),
            }
        }
        pending = missing;
    }
    Ok(found)
}

/// Writes `entries` (sorted, distinct) as the chunks of `run`.
fn write_run(
    chunks: &mut redb::Table<'_, ChunkKey, &'static [u8]>,
    run: u64,
    entries: &[Entry],
) -> Result<(), Error> {
    for part in entries.chunks(CHUNK_ENTRIES) {
        let encoded = encode_chunk(part);
        chunks.insert((run, &part[0].id), encoded.as_slice())?;
    }
    Ok(())
}

/// The number the next run gets: above every run there is.
fn next_run(runs: &redb::Table<'_, u64, u64>) -> Result<u64, Error> {
    Ok(runs.last()?.map_or(0, |(run, _)| run.value() + 1))
}

/// Adds the images a batch created as a new run, then merges runs as the
/// size classes require.
pub(super) fn add(
    chunks: &mut redb::Table<'_, ChunkKey, &'static [u8]>,
    runs: &mut redb::Table<'_, u64, u64>,
    mut entries: Vec<Entry>,
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable_by_key(|e| e.id);
    let run = next_run(runs)?;
    write_run(chunks, run, &entries)?;
    runs.insert(run, entries.len() as u64)?;
    compact(chunks, runs)
}

/// Merges runs until no size class holds [`FANOUT`] of them.
fn compact(
    chunks: &mut redb::Table<'_, ChunkKey, &'static [u8]>,
    runs: &mut redb::Table<'_, u64, u64>,
) -> Result<(), Error> {
    loop {
        let mut classes: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (run, count) in self::runs(runs)? {
            classes.entry(size_class(count)).or_default().push(run);
        }
        // Smallest class first: its merge may complete the next class.
        match classes.into_values().find(|group| group.len() >= FANOUT) {
            Some(group) => merge(chunks, runs, &group)?,
            None => return Ok(()),
        }
    }
}

/// Replaces the runs of `group` by one run holding all their entries.
fn merge(
    chunks: &mut redb::Table<'_, ChunkKey, &'static [u8]>,
    runs: &mut redb::Table<'_, u64, u64>,
    group: &[u64],
) -> Result<(), Error> {
    let target = next_run(runs)?;
    let mut entries: Vec<Entry> = Vec::new();
    for &run in group {
        for item in chunks.range((run, &LOWEST)..=(run, &HIGHEST))? {
            let (_, value) = item?;
            entries.extend(Chunk::parse(value.value()).map_err(bad_chunk(run))?.iter());
        }
        chunks.retain_in((run, &LOWEST)..=(run, &HIGHEST), |_, _| false)?;
        runs.remove(run)?;
    }
    // A stable sort finds the sorted stretches the runs already are and
    // merges them, instead of sorting from scratch.
    entries.sort_by_key(|e| e.id);
    let before = entries.len();
    // An image in two runs can only come from damage; the first entry
    // found is kept, as a lookup would have found it.
    entries.dedup_by(|later, earlier| later.id == earlier.id);
    if entries.len() != before {
        tracing::warn!(
            dropped = before - entries.len(),
            "index runs named the same images twice; kept one entry each"
        );
    }
    if !entries.is_empty() {
        write_run(chunks, target, &entries)?;
        runs.insert(target, entries.len() as u64)?;
    }
    Ok(())
}

/// Applies changes to indexed images. Each chunk concerned is read and
/// written once.
pub(super) fn edit(
    chunks: &mut redb::Table<'_, ChunkKey, &'static [u8]>,
    runs: &mut redb::Table<'_, u64, u64>,
    mut edits: Vec<Edit>,
) -> Result<(), Error> {
    edits.sort_unstable_by_key(|e| (e.run, e.id));
    let mut removed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut i = 0;
    while i < edits.len() {
        let run = edits[i].run;
        let (first, mut entries) = match chunk_for(chunks, run, &edits[i].id)? {
            Some((first, guard)) => {
                let entries: Vec<Entry> = Chunk::parse(guard.value())
                    .map_err(bad_chunk(run))?
                    .iter()
                    .collect();
                (first, entries)
            }
            None => (LOWEST, Vec::new()),
        };
        let last = entries.last().map(|e| e.id);
        let start = i;
        while i < edits.len()
            && edits[i].run == run
            && (i == start || last.is_some_and(|last| edits[i].id <= last))
        {
            let edit = edits[i];
            let pos = entries
                .binary_search_by(|e| e.id.cmp(&edit.id))
                .map_err(|_| Error::BadChunk {
                    run,
                    source: RecordError("an indexed image is missing from its run"),
                })?;
            match edit.content {
                Some(content) => entries[pos].location.content = content,
                None => {
                    entries.remove(pos);
                    *removed.entry(run).or_default() += 1;
                }
            }
            i += 1;
        }
        match entries.first() {
            None => {
                chunks.remove((run, &first))?;
            }
            Some(head) => {
                if head.id != first {
                    chunks.remove((run, &first))?;
                }
                chunks.insert((run, &head.id), encode_chunk(&entries).as_slice())?;
            }
        }
    }
    for (run, gone) in removed {
        let count = runs.get(run)?.map_or(0, |c| c.value());
        match count.saturating_sub(gone) {
            0 => {
                runs.remove(run)?;
            }
            left => {
                runs.insert(run, left)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase as _;

    fn key(n: u64) -> ImageKey {
        // Spread the keys over the whole key space, in a scrambled order.
        let mut k = [0u8; 32];
        let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (n << 7);
        k[..8].copy_from_slice(&x.to_be_bytes());
        k[8..16].copy_from_slice(&n.to_be_bytes());
        k
    }

    fn at(n: u64) -> ContentRef {
        ContentRef {
            block: n / 20,
            slot: (n % 20) as u32,
        }
    }

    fn entry(n: u64) -> Entry {
        Entry {
            id: key(n),
            location: Location {
                content: at(n),
                block: n / 100,
            },
        }
    }

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        (dir, db)
    }

    /// Adds `range` of entries as one batch would.
    fn add_batch(db: &redb::Database, range: std::ops::Range<u64>) {
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(CHUNKS).unwrap();
            let mut runs = txn.open_table(RUNS).unwrap();
            add(&mut chunks, &mut runs, range.map(entry).collect()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn apply_edits(db: &redb::Database, edits: Vec<Edit>) {
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(CHUNKS).unwrap();
            let mut runs = txn.open_table(RUNS).unwrap();
            edit(&mut chunks, &mut runs, edits).unwrap();
        }
        txn.commit().unwrap();
    }

    fn lookup_all(db: &redb::Database, keys: &[ImageKey]) -> (Vec<Option<Found>>, usize) {
        let txn = db.begin_read().unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        let runs_table = txn.open_table(RUNS).unwrap();
        let list = runs(&runs_table).unwrap();
        let one_by_one: Vec<Option<Found>> = keys
            .iter()
            .map(|k| find(&chunks, &list, k).unwrap())
            .collect();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let many = find_many(&chunks, &list, &sorted).unwrap();
        for (k, one) in keys.iter().zip(&one_by_one) {
            assert_eq!(many.get(k), one.as_ref(), "batch and single lookups differ");
        }
        (one_by_one, list.len())
    }

    #[test]
    fn size_classes_group_runs_by_powers_of_four() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 0);
        assert_eq!(size_class(255), 0);
        assert_eq!(size_class(256), 1);
        assert_eq!(size_class(1023), 1);
        assert_eq!(size_class(1024), 2);
        assert_eq!(size_class(10_000), 3);
        assert_eq!(size_class(40_000), 4);
        assert_eq!(size_class(1_000_000), 6);
    }

    #[test]
    fn chunk_encoding_roundtrips_and_rejects_damage() {
        let entries: Vec<Entry> = {
            let mut e: Vec<Entry> = (0..5).map(entry).collect();
            e.sort_unstable_by_key(|e| e.id);
            e
        };
        let raw = encode_chunk(&entries);
        assert_eq!(raw.len(), 1 + 5 * ENTRY_LEN);
        let chunk = Chunk::parse(&raw).unwrap();
        assert_eq!(chunk.iter().collect::<Vec<_>>(), entries);
        for e in &entries {
            assert_eq!(chunk.find(&e.id), Some(e.location));
        }
        assert_eq!(chunk.find(&key(99)), None);

        assert!(Chunk::parse(&[]).is_err());
        assert!(Chunk::parse(&[CHUNK_FORMAT]).is_err());
        assert!(Chunk::parse(&raw[..raw.len() - 1]).is_err());
        let mut other = raw.clone();
        other[0] = 9;
        assert!(Chunk::parse(&other).is_err());
    }

    #[test]
    fn a_chunk_takes_its_entries_and_one_byte() {
        assert_eq!(encode_chunk(&[entry(1)]).len(), 1 + ENTRY_LEN);
        let full: Vec<Entry> = (0..CHUNK_ENTRIES as u64).map(entry).collect();
        assert_eq!(encode_chunk(&full).len(), 1 + CHUNK_ENTRIES * ENTRY_LEN);
    }

    #[test]
    fn batches_merge_into_few_runs_and_every_entry_stays_findable() {
        let (_dir, db) = db();
        // Batch sizes that cross chunk boundaries and size classes.
        let mut next = 0;
        let mut max_runs = 0;
        for size in [
            1u64, 1, 3, 700, 1, 1, 1, 2000, 341, 340, 339, 5, 5, 5, 5, 5, 900,
        ] {
            add_batch(&db, next..next + size);
            next += size;
            let keys: Vec<ImageKey> = (0..next).map(key).collect();
            let (found, runs) = lookup_all(&db, &keys);
            max_runs = max_runs.max(runs);
            for (n, f) in found.iter().enumerate() {
                let f = f.unwrap_or_else(|| panic!("entry {n} of {next} lost"));
                assert_eq!(f.location, entry(n as u64).location);
            }
            // Keys never added are not found.
            let (absent, _) = lookup_all(&db, &(next..next + 50).map(key).collect::<Vec<_>>());
            assert!(absent.iter().all(Option::is_none));
        }
        // Runs of one size class never reach FANOUT after a batch.
        let txn = db.begin_read().unwrap();
        let list = runs(&txn.open_table(RUNS).unwrap()).unwrap();
        let mut per_class: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, count) in &list {
            *per_class.entry(size_class(*count)).or_default() += 1;
        }
        assert!(per_class.values().all(|&n| n < FANOUT), "{list:?}");
        assert_eq!(len(&txn.open_table(RUNS).unwrap()).unwrap(), next);
        assert!(max_runs < 12, "{max_runs} runs");
    }

    #[test]
    fn edits_update_and_remove_across_chunks_and_runs() {
        let (_dir, db) = db();
        add_batch(&db, 0..1000);
        add_batch(&db, 1000..1100);
        let all: Vec<ImageKey> = (0..1100).map(key).collect();
        let (found, _) = lookup_all(&db, &all);
        // Remove every third image, renumber every third plus one, in
        // both runs; this removes whole chunks' first entries too.
        let mut edits = Vec::new();
        for (n, f) in found.iter().enumerate() {
            let f = f.unwrap();
            match n % 3 {
                0 => edits.push(Edit {
                    id: key(n as u64),
                    run: f.run,
                    content: None,
                }),
                1 => edits.push(Edit {
                    id: key(n as u64),
                    run: f.run,
                    content: Some(at(10_000 + n as u64)),
                }),
                _ => {}
            }
        }
        apply_edits(&db, edits);

        let (after, _) = lookup_all(&db, &all);
        for (n, f) in after.iter().enumerate() {
            match n % 3 {
                0 => assert_eq!(*f, None, "{n} was removed"),
                1 => assert_eq!(f.unwrap().location.content, at(10_000 + n as u64)),
                _ => assert_eq!(f.unwrap().location, entry(n as u64).location),
            }
        }
        let txn = db.begin_read().unwrap();
        assert_eq!(len(&txn.open_table(RUNS).unwrap()).unwrap(), 1100 - 367);

        // Removing the rest empties the index: no runs, no chunks.
        drop(txn);
        let edits = after
            .iter()
            .enumerate()
            .filter_map(|(n, f)| {
                f.map(|f| Edit {
                    id: key(n as u64),
                    run: f.run,
                    content: None,
                })
            })
            .collect();
        apply_edits(&db, edits);
        let txn = db.begin_read().unwrap();
        assert!(
            txn.open_table(RUNS)
                .unwrap()
                .iter()
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            txn.open_table(CHUNKS)
                .unwrap()
                .iter()
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn ids_sharing_long_prefixes_are_told_apart() {
        let (_dir, db) = db();
        // IDs equal in their first 31 bytes, and IDs at the ends of the
        // key space, across two batches that get merged with others.
        let mut ids: Vec<ImageKey> = (0..=255u8)
            .map(|b| {
                let mut k = [0x42u8; 32];
                k[31] = b;
                k
            })
            .collect();
        ids.push(LOWEST);
        ids.push(HIGHEST);
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(CHUNKS).unwrap();
            let mut runs = txn.open_table(RUNS).unwrap();
            for (part, slice) in ids.chunks(50).enumerate() {
                let entries = slice
                    .iter()
                    .enumerate()
                    .map(|(i, id)| Entry {
                        id: *id,
                        location: Location {
                            content: at((part * 50 + i) as u64),
                            block: part as u64,
                        },
                    })
                    .collect();
                add(&mut chunks, &mut runs, entries).unwrap();
            }
        }
        txn.commit().unwrap();
        let (found, _) = lookup_all(&db, &ids);
        for (n, f) in found.iter().enumerate() {
            assert_eq!(f.unwrap().location.content, at(n as u64));
        }
        let mut near = [0x42u8; 32];
        near[30] = 0x43;
        let (absent, _) = lookup_all(&db, &[near]);
        assert_eq!(absent, [None]);
    }
}
