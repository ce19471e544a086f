//! The backend's own index beside Docker's layout, in `<root>/imagecache/`.
//!
//! It holds, per image, the metadata values, the summary record and the
//! change token of the metadata directory, so that opening a store costs a
//! directory listing and one stat per image instead of reading every file.
//!
//! Two files make it up:
//!
//! * `index` — a snapshot: a header (magic, generation), every entry, and a
//!   CRC-32 of all of it. Replaced whole by rename.
//! * `journal` — a header (magic, generation) followed by records appended
//!   by writers, each framed with its length and its own CRC-32 so that a
//!   torn or damaged record is skipped without losing the ones after it.
//!
//! Both are caches: every value in them can be re-derived from the layout
//! except summaries, which the store rebuilds when missing. Neither is ever
//! fsynced. An `flock`ed `lock` file serialises, across processes, every
//! change of metadata with the append of its record, and compaction.
//!
//! Because a writer renames metadata into place and appends the record
//! under one hold of the lock, the records of all handles are in the order
//! their changes reached the disk, and replaying them in order gives the
//! directory's exact contents whatever the change tokens say. The tokens of
//! the metadata directory, before and after each change, are there for
//! changes that left no record (another program, Docker; a record lost in
//! a crash): replay applies a record only when its "before" token equals
//! the token the index holds, and otherwise marks the entry for re-reading.
//! That makes replaying a journal over any older snapshot safe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey};

use super::Error;
use super::files::{FILE_MODE, IdMap, Stamp, TempFile, Token, is_missing};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ICFSIDX1";
const JOURNAL_MAGIC: &[u8; 8] = b"ICFSJRN1";
const HEADER_LEN: usize = 16;
const RECORD_MAGIC: u32 = 0x5245_4331;
const RECORD_HEADER_LEN: usize = 12;

/// The journal is folded into a new snapshot by a writer once it is larger
/// than this and larger than the snapshot.
const COMPACT_MIN_JOURNAL: u64 = 16 << 20;

/// What the index knows about one image.
#[derive(Debug, Clone, Default)]
pub(super) struct Entry {
    /// Token of the metadata directory the values below were read at;
    /// `None` when they must be re-read.
    pub(super) token: Option<Token>,
    /// The content file was seen as a non-empty regular file.
    pub(super) content_known: bool,
    /// Metadata values, sorted by key.
    pub(super) metadata: Vec<(MetadataKey, Bytes)>,
    /// The summary record.
    pub(super) summary: Option<Bytes>,
}

impl Entry {
    fn apply_change(&mut self, key: MetadataKey, value: Option<Bytes>) {
        match (self.metadata.binary_search_by(|(k, _)| k.cmp(&key)), value) {
            (Ok(i), Some(v)) => self.metadata[i].1 = v,
            (Ok(i), None) => {
                self.metadata.remove(i);
            }
            (Err(i), Some(v)) => self.metadata.insert(i, (key, v)),
            (Err(_), None) => {}
        }
    }
}

/// One journal record.
#[derive(Debug, Clone)]
pub(super) enum Record {
    /// A batch changed an image.
    Update(Update),
    /// A batch deleted or quarantined an image.
    Remove(ImageId),
}

/// What one batch did to one image.
#[derive(Debug, Clone)]
pub(super) struct Update {
    /// The image.
    pub(super) id: ImageId,
    /// The batch stored (or found) the content.
    pub(super) put: bool,
    /// Token of the metadata directory before the batch changed it.
    pub(super) pre: Token,
    /// Token after.
    pub(super) post: Token,
    /// Metadata set (`Some`) or removed (`None`).
    pub(super) changes: Vec<(MetadataKey, Option<Bytes>)>,
    /// A new summary.
    pub(super) summary: Option<Bytes>,
}

/// Every entry, by image.
pub(super) type Entries = IdMap<Entry>;

/// Applies one record to the entries.
///
/// The backend's own writers change metadata only while holding the index
/// lock and append their records before releasing it, so the journal lists
/// their changes in the order they reached the disk, and an entry whose
/// every record applied is exact whatever the tokens say. The tokens are
/// there to catch changes that left no record: another program's, or a
/// record lost in a crash. An update applies only on top of the state it
/// was made from; otherwise the entry is marked for re-reading, and stays
/// marked until a load re-reads it.
pub(super) fn apply(entries: &mut Entries, record: Record) {
    match record {
        Record::Remove(id) => {
            entries.remove(&id);
        }
        Record::Update(u) => {
            // A writer that found no metadata directory may still have
            // raced another writer that created it and recorded its own
            // values first: "absent" is a base only for an image the index
            // knows nothing of, or knows to have no directory. Clearing
            // the values any other time would drop that writer's values.
            let base_known = match entries.get(&u.id) {
                None => u.pre == Token::Absent,
                Some(e) => e.token == Some(u.pre),
            };
            let entry = entries.entry(u.id).or_default();
            if u.put {
                entry.content_known = true;
            }
            if base_known {
                if u.pre == Token::Absent {
                    entry.metadata.clear();
                }
                for (k, v) in u.changes {
                    entry.apply_change(k, v);
                }
                entry.token = Some(u.post);
            } else {
                entry.token = None;
            }
            if let Some(s) = u.summary {
                entry.summary = Some(s);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding.

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    put_u32(out, u32::try_from(len).ok()?);
    Some(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    put_len(out, b.len())?;
    out.extend_from_slice(b);
    Some(())
}

fn put_key(out: &mut Vec<u8>, k: &MetadataKey) -> Option<()> {
    // Keys are at most 128 bytes, so the length fits a byte.
    out.push(u8::try_from(k.as_str().len()).ok()?);
    out.extend_from_slice(k.as_str().as_bytes());
    Some(())
}

fn put_token(out: &mut Vec<u8>, t: &Token) {
    let (tag, s) = match t {
        Token::Absent => (0u8, None),
        Token::Dir(s) => (1, Some(s)),
        Token::Other(s) => (2, Some(s)),
    };
    out.push(tag);
    let s = s.copied().unwrap_or(Stamp {
        ino: 0,
        mtime: 0,
        mtime_ns: 0,
        ctime: 0,
        ctime_ns: 0,
    });
    out.extend_from_slice(&s.ino.to_le_bytes());
    out.extend_from_slice(&s.mtime.to_le_bytes());
    out.extend_from_slice(&s.mtime_ns.to_le_bytes());
    out.extend_from_slice(&s.ctime.to_le_bytes());
    out.extend_from_slice(&s.ctime_ns.to_le_bytes());
}

fn header(magic: &[u8; 8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&generation.to_le_bytes());
    out
}

/// Encodes one snapshot entry; `None` if a value is too large to encode.
fn encode_entry(out: &mut Vec<u8>, id: &ImageId, e: &Entry) -> Option<()> {
    out.extend_from_slice(&id.to_bytes());
    let flags = u8::from(e.content_known)
        | (u8::from(e.token.is_some()) << 1)
        | (u8::from(e.summary.is_some()) << 2);
    out.push(flags);
    put_token(out, &e.token.unwrap_or(Token::Absent));
    put_len(out, e.metadata.len())?;
    for (k, v) in &e.metadata {
        put_key(out, k)?;
        put_bytes(out, v)?;
    }
    if let Some(s) = &e.summary {
        put_bytes(out, s)?;
    }
    Some(())
}

/// Encodes a whole snapshot. Entries that cannot be encoded (a value over
/// 4 GiB) are left out, so they are re-read at the next load.
pub(super) fn encode_snapshot<'a>(
    generation: u64,
    entries: impl ExactSizeIterator<Item = (&'a ImageId, &'a Entry)>,
) -> Vec<u8> {
    let mut out = header(SNAPSHOT_MAGIC, generation);
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for (id, e) in entries {
        let mark = out.len();
        if encode_entry(&mut out, id, e).is_some() {
            count += 1;
        } else {
            out.truncate(mark);
        }
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

fn encode_record_payload(out: &mut Vec<u8>, r: &Record) -> Option<()> {
    match r {
        Record::Remove(id) => {
            out.push(2);
            out.extend_from_slice(&id.to_bytes());
        }
        Record::Update(u) => {
            out.push(1);
            out.extend_from_slice(&u.id.to_bytes());
            out.push(u8::from(u.put) | (u8::from(u.summary.is_some()) << 1));
            put_token(out, &u.pre);
            put_token(out, &u.post);
            put_len(out, u.changes.len())?;
            for (k, v) in &u.changes {
                put_key(out, k)?;
                match v {
                    Some(v) => {
                        out.push(1);
                        put_bytes(out, v)?;
                    }
                    None => out.push(0),
                }
            }
            if let Some(s) = &u.summary {
                put_bytes(out, s)?;
            }
        }
    }
    Some(())
}

/// Encodes records, each framed as magic, payload length, CRC-32, payload.
/// A record that cannot be encoded is left out (its image is re-read).
pub(super) fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut payload = Vec::new();
    for r in records {
        payload.clear();
        if encode_record_payload(&mut payload, r).is_none() {
            continue;
        }
        let Ok(len) = u32::try_from(payload.len()) else {
            continue;
        };
        put_u32(&mut out, RECORD_MAGIC);
        put_u32(&mut out, len);
        put_u32(&mut out, crc32fast::hash(&payload));
        out.extend_from_slice(&payload);
    }
    out
}

// ---------------------------------------------------------------------------
// Decoding. Values are slices of the file's buffer, so a loaded index costs
// one allocation for all its bytes.

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let a = self.buf.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.len()?;
        self.take(n)
    }

    fn id(&mut self) -> Option<ImageId> {
        Some(ImageId::from_bytes(self.array()?))
    }

    fn key(&mut self) -> Option<MetadataKey> {
        let n = usize::from(self.u8()?);
        let raw = self.take(n)?;
        // The three keys Docker uses are interned: no allocation per image.
        for known in [
            MetadataKey::PARENT,
            MetadataKey::LAST_UPDATED,
            MetadataKey::BUILT_LOCALLY,
        ] {
            if known.as_str().as_bytes() == &raw[..] {
                return Some(known);
            }
        }
        MetadataKey::new(std::str::from_utf8(&raw).ok()?).ok()
    }

    fn token(&mut self) -> Option<Token> {
        let tag = self.u8()?;
        let stamp = Stamp {
            ino: self.u64()?,
            mtime: self.i64()?,
            mtime_ns: self.u32()?,
            ctime: self.i64()?,
            ctime_ns: self.u32()?,
        };
        match tag {
            0 => Some(Token::Absent),
            1 => Some(Token::Dir(stamp)),
            2 => Some(Token::Other(stamp)),
            _ => None,
        }
    }
}

fn read_header(buf: &[u8], magic: &[u8; 8]) -> Option<u64> {
    let head = buf.get(..HEADER_LEN)?;
    if &head[..8] != magic {
        return None;
    }
    Some(u64::from_le_bytes(head[8..].try_into().ok()?))
}

/// Decodes a snapshot: its generation and entries. `None` when the file is
/// damaged in any way.
pub(super) fn decode_snapshot(buf: Bytes) -> Option<(u64, Entries)> {
    let body_len = buf.len().checked_sub(4)?;
    let crc = u32::from_le_bytes(buf.get(body_len..)?.try_into().ok()?);
    if crc32fast::hash(&buf[..body_len]) != crc {
        return None;
    }
    let generation = read_header(&buf, SNAPSHOT_MAGIC)?;
    let mut r = Reader {
        buf: buf.slice(..body_len),
        pos: HEADER_LEN,
    };
    let count = r.u64()?;
    let mut entries = Entries::with_capacity_and_hasher(
        usize::try_from(count).ok()?.min(1 << 24),
        Default::default(),
    );
    for _ in 0..count {
        let id = r.id()?;
        let flags = r.u8()?;
        let token = r.token()?;
        let n = r.len()?;
        let mut metadata = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let k = r.key()?;
            let v = r.bytes()?;
            metadata.push((k, v));
        }
        let summary = if flags & 4 != 0 {
            Some(r.bytes()?)
        } else {
            None
        };
        entries.insert(
            id,
            Entry {
                token: (flags & 2 != 0).then_some(token),
                content_known: flags & 1 != 0,
                metadata,
                summary,
            },
        );
    }
    (r.pos == r.buf.len()).then_some((generation, entries))
}

fn decode_record_payload(buf: Bytes) -> Option<Record> {
    let mut r = Reader { buf, pos: 0 };
    let rec = match r.u8()? {
        1 => {
            let id = r.id()?;
            let flags = r.u8()?;
            let pre = r.token()?;
            let post = r.token()?;
            let n = r.len()?;
            let mut changes = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let k = r.key()?;
                let v = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes()?),
                    _ => return None,
                };
                changes.push((k, v));
            }
            let summary = if flags & 2 != 0 {
                Some(r.bytes()?)
            } else {
                None
            };
            Record::Update(Update {
                id,
                put: flags & 1 != 0,
                pre,
                post,
                changes,
                summary,
            })
        }
        2 => Record::Remove(r.id()?),
        _ => return None,
    };
    (r.pos == r.buf.len()).then_some(rec)
}

/// Decodes the records of a journal body (after its header). Damaged
/// stretches are skipped by scanning for the next record that checks out;
/// returns the records and the number of bytes skipped.
pub(super) fn decode_records(buf: &Bytes) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut pos = 0;
    let magic = RECORD_MAGIC.to_le_bytes();
    while pos + RECORD_HEADER_LEN <= buf.len() {
        let parsed = (|| {
            if buf[pos..pos + 4] != magic {
                return None;
            }
            let len =
                usize::try_from(u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().ok()?)).ok()?;
            let crc = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().ok()?);
            let start = pos + RECORD_HEADER_LEN;
            let end = start.checked_add(len)?;
            let payload = buf.get(start..end)?;
            if crc32fast::hash(payload) != crc {
                return None;
            }
            Some((decode_record_payload(buf.slice(start..end)), end))
        })();
        match parsed {
            Some((rec, end)) => {
                // A record with a valid checksum but an unknown shape comes
                // from a newer format; skipping it only costs a re-read.
                if let Some(rec) = rec {
                    records.push(rec);
                }
                pos = end;
            }
            None => {
                pos += 1;
                skipped += 1;
            }
        }
    }
    skipped += buf.len() - pos.min(buf.len());
    (records, skipped)
}

// ---------------------------------------------------------------------------
// Files.

/// Where the index files stood when a load read them, so that the load can
/// tell, under the lock at its end, which records were appended since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReadPoint {
    /// Generation in the snapshot file's header as found, damaged or not.
    snapshot_header: Option<u64>,
    /// The journal as read, when it had a valid header.
    journal: Option<JournalAt>,
}

/// A journal file and how much of it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JournalAt {
    generation: u64,
    ino: u64,
    len: u64,
}

/// The index as read at the start of a load.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Entries after replaying the journal.
    pub(super) entries: Entries,
    /// Where the files stood.
    pub(super) point: ReadPoint,
    /// The snapshot was missing, damaged, or the journal held records: the
    /// index should be rewritten after the load.
    pub(super) stale: bool,
}

struct LockState {
    lock: File,
    /// The journal opened for appending, with its inode number, so that a
    /// journal replaced by another process's compaction is noticed.
    journal: Option<(File, u64)>,
}

/// The index files and the lock that guards them.
pub(super) struct IndexFiles {
    dir: PathBuf,
    snapshot: PathBuf,
    journal: PathBuf,
    lock_path: PathBuf,
    state: Mutex<LockState>,
}

impl std::fmt::Debug for IndexFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Reads a whole file and its inode number; `None` if it does not exist.
fn read_file(path: &Path) -> Result<Option<(Bytes, u64)>, Error> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(source) => return Err(Error::io("open", path, source)),
    };
    let meta = f.metadata().map_err(|e| Error::io("inspect", path, e))?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some((Bytes::from(buf), meta.ino())))
}

/// Reads the generation in a file's header, if the header is valid.
fn read_generation(path: &Path, magic: &[u8; 8]) -> Result<Option<u64>, Error> {
    let mut head = [0u8; HEADER_LEN];
    match File::open(path) {
        Ok(mut f) => match f.read_exact(&mut head) {
            Ok(()) => Ok(read_header(&head, magic)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(source) => Err(Error::io("read", path, source)),
        },
        Err(e) if is_missing(&e) => Ok(None),
        Err(source) => Err(Error::io("open", path, source)),
    }
}

/// Writes a whole index file by rename. No fsync: the index is a cache, and
/// a damaged one is detected by its checksum and rebuilt.
fn replace_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), Error> {
    let mut tmp = TempFile::create(dir, name)?;
    tmp.write_all(data)?;
    tmp.persist(&dir.join(name))
}

impl IndexFiles {
    /// Opens (creating) the lock file in `dir`.
    pub(super) fn open(dir: &Path) -> Result<Self, Error> {
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            snapshot: dir.join("index"),
            journal: dir.join("journal"),
            lock_path,
            state: Mutex::new(LockState {
                lock,
                journal: None,
            }),
        })
    }

    /// Takes the in-process mutex and the cross-process flock, until the
    /// returned guard is dropped.
    pub(super) fn lock(&self) -> Result<IndexLock<'_>, Error> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .lock
            .lock()
            .map_err(|e| Error::io("lock", &self.lock_path, e))?;
        Ok(IndexLock { files: self, state })
    }

    /// Reads the snapshot and replays the journal.
    pub(super) fn read(&self) -> Result<Loaded, Error> {
        self.lock()?.read()
    }

    /// Appends records under the lock.
    #[cfg(test)]
    pub(super) fn append(&self, records: &[Record]) -> Result<(), Error> {
        self.lock()?.append(records)
    }
}

/// The index lock, held. While it is held no handle of this backend, in
/// any process, changes metadata or the index files.
pub(super) struct IndexLock<'a> {
    files: &'a IndexFiles,
    state: MutexGuard<'a, LockState>,
}

impl std::fmt::Debug for IndexLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexLock")
            .field("dir", &self.files.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for IndexLock<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.state.lock.unlock() {
            tracing::warn!(path = %self.files.lock_path.display(), error = %e, "cannot unlock the index lock");
        }
    }
}

impl IndexLock<'_> {
    /// Reads the snapshot and replays the journal.
    pub(super) fn read(&self) -> Result<Loaded, Error> {
        let files = self.files;
        let mut loaded = Loaded::default();
        let mut snapshot_valid = false;
        let mut snapshot_generation = 0;
        if let Some((buf, _)) = read_file(&files.snapshot)? {
            loaded.point.snapshot_header = read_header(&buf, SNAPSHOT_MAGIC);
            if let Some((generation, entries)) = decode_snapshot(buf) {
                snapshot_generation = generation;
                loaded.entries = entries;
                snapshot_valid = true;
            } else {
                tracing::warn!(
                    path = %files.snapshot.display(),
                    "index snapshot is damaged; rebuilding it from the store"
                );
                loaded.stale = true;
            }
        } else {
            loaded.stale = true;
        }
        if let Some((buf, ino)) = read_file(&files.journal)? {
            let len = buf.len() as u64;
            match read_header(&buf, JOURNAL_MAGIC) {
                Some(generation) => {
                    loaded.point.journal = Some(JournalAt {
                        generation,
                        ino,
                        len,
                    });
                    // A journal older than the snapshot was folded into it
                    // by a compaction that stopped before replacing it.
                    if !snapshot_valid || generation >= snapshot_generation {
                        let (records, skipped) = decode_records(&buf.slice(HEADER_LEN..));
                        if skipped > 0 {
                            tracing::warn!(
                                path = %files.journal.display(),
                                skipped,
                                "skipped damaged bytes in the index journal"
                            );
                        }
                        loaded.stale |= !records.is_empty() || skipped > 0;
                        for r in records {
                            apply(&mut loaded.entries, r);
                        }
                    } else {
                        loaded.stale = true;
                    }
                }
                None => {
                    tracing::warn!(
                        path = %files.journal.display(),
                        "index journal has a damaged header; ignoring it"
                    );
                    loaded.stale = true;
                }
            }
        }
        Ok(loaded)
    }

    /// Appends records; folds the journal into a new snapshot when it has
    /// grown large.
    ///
    /// If the records cannot be written whole, the index files are removed,
    /// so that the next load rebuilds the index from the store: a lost
    /// record could otherwise go unnoticed wherever the change tokens are
    /// too coarse to tell the states apart.
    pub(super) fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        let bytes = encode_records(records);
        if bytes.is_empty() {
            return Ok(());
        }
        let files = self.files;
        let appended = self.current_journal().and_then(|journal| {
            journal
                .write_all(&bytes)
                .and_then(|()| journal.metadata())
                .map(|m| m.len())
                .map_err(|e| Error::io("append to", &files.journal, e))
        });
        let len = match appended {
            Ok(len) => len,
            Err(e) => {
                self.invalidate();
                return Err(e);
            }
        };
        if len > COMPACT_MIN_JOURNAL {
            let snapshot_len = fs::metadata(&files.snapshot).map_or(0, |m| m.len());
            if len > snapshot_len
                && let Err(e) = self.compact()
            {
                // The records are in the journal; only the folding failed.
                tracing::warn!(error = %e, "cannot fold the index journal into a snapshot");
            }
        }
        Ok(())
    }

    /// Removes the index files (best effort): the next load reads the
    /// whole store and writes them anew.
    fn invalidate(&mut self) {
        self.state.journal = None;
        for path in [&self.files.journal, &self.files.snapshot] {
            if let Err(e) = fs::remove_file(path)
                && !is_missing(&e)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a damaged index file");
            }
        }
    }

    /// The journal to append to, reopened if another process replaced it
    /// and created (empty, at the snapshot's generation) if missing,
    /// damaged, or older than the snapshot (whose records a load ignores).
    fn current_journal(&mut self) -> Result<&mut File, Error> {
        let files = self.files;
        let on_disk = match fs::metadata(&files.journal) {
            Ok(m) => Some(m.ino()),
            Err(e) if is_missing(&e) => None,
            Err(source) => return Err(Error::io("inspect", &files.journal, source)),
        };
        let cached = self.state.journal.as_ref().map(|(_, ino)| *ino);
        if on_disk.is_none() || on_disk != cached {
            self.state.journal = None;
            let snapshot_generation = read_generation(&files.snapshot, SNAPSHOT_MAGIC)?;
            let usable = match on_disk {
                Some(_) => read_generation(&files.journal, JOURNAL_MAGIC)?
                    .is_some_and(|g| g >= snapshot_generation.unwrap_or(0)),
                None => false,
            };
            if !usable {
                replace_file(
                    &files.dir,
                    "journal",
                    &header(JOURNAL_MAGIC, snapshot_generation.unwrap_or_default()),
                )?;
            }
            let f = OpenOptions::new()
                .append(true)
                .open(&files.journal)
                .map_err(|e| Error::io("open", &files.journal, e))?;
            let ino = f
                .metadata()
                .map_err(|e| Error::io("inspect", &files.journal, e))?
                .ino();
            self.state.journal = Some((f, ino));
        }
        match &mut self.state.journal {
            Some((f, _)) => Ok(f),
            None => Err(Error::io(
                "open",
                &files.journal,
                io::Error::from(io::ErrorKind::NotFound),
            )),
        }
    }

    /// The generation for files replacing the current ones.
    fn next_generation(&self) -> Result<u64, Error> {
        let snapshot = read_generation(&self.files.snapshot, SNAPSHOT_MAGIC)?;
        let journal = read_generation(&self.files.journal, JOURNAL_MAGIC)?;
        Ok(snapshot.unwrap_or(0).max(journal.unwrap_or(0)) + 1)
    }

    /// Writes `entries` as the new snapshot, with an empty journal.
    fn replace<'e>(
        &mut self,
        generation: u64,
        entries: impl ExactSizeIterator<Item = (&'e ImageId, &'e Entry)>,
    ) -> Result<(), Error> {
        let snapshot = encode_snapshot(generation, entries);
        replace_file(&self.files.dir, "index", &snapshot)?;
        replace_file(
            &self.files.dir,
            "journal",
            &header(JOURNAL_MAGIC, generation),
        )?;
        self.state.journal = None;
        Ok(())
    }

    /// Folds the journal into a new snapshot.
    fn compact(&mut self) -> Result<(), Error> {
        let loaded = self.read()?;
        let generation = self.next_generation()?;
        self.replace(generation, loaded.entries.iter())
    }

    /// The records appended since `point`, or `None` when that cannot be
    /// told: the files were replaced meanwhile (by a compaction, or by
    /// another handle's load), or the new records are damaged.
    pub(super) fn changes_since(&self, point: &ReadPoint) -> Result<Option<Vec<Record>>, Error> {
        let files = self.files;
        if read_generation(&files.snapshot, SNAPSHOT_MAGIC)? != point.snapshot_header {
            return Ok(None);
        }
        let mut f = match File::open(&files.journal) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => {
                return Ok(point.journal.is_none().then(Vec::new));
            }
            Err(source) => return Err(Error::io("open", &files.journal, source)),
        };
        let meta = f
            .metadata()
            .map_err(|e| Error::io("inspect", &files.journal, e))?;
        let mut head = [0u8; HEADER_LEN];
        let generation = match f.read_exact(&mut head) {
            Ok(()) => read_header(&head, JOURNAL_MAGIC),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
            Err(source) => return Err(Error::io("read", &files.journal, source)),
        };
        let start = match (point.journal, generation) {
            (Some(at), Some(g)) if at.generation == g && at.ino == meta.ino() => {
                if meta.len() < at.len {
                    return Ok(None);
                }
                at.len
            }
            // No usable journal then: one found now was created afresh by
            // a writer (the snapshot is the same), so all of it is new.
            (None, Some(_)) => HEADER_LEN as u64,
            // Nobody appended to a damaged journal (writers replace it).
            (None, None) => return Ok(Some(Vec::new())),
            _ => return Ok(None),
        };
        if meta.len() == start {
            return Ok(Some(Vec::new()));
        }
        f.seek(io::SeekFrom::Start(start))
            .map_err(|e| Error::io("read", &files.journal, e))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)
            .map_err(|e| Error::io("read", &files.journal, e))?;
        let (records, skipped) = decode_records(&Bytes::from(tail));
        Ok((skipped == 0).then_some(records))
    }

    /// Writes the result of a load as the new snapshot and empties the
    /// journal. The entries must account for every record in the journal:
    /// either they were read under this same hold, or [`Self::changes_since`]
    /// was consulted under it and its records were taken in.
    pub(super) fn store<'e>(
        &mut self,
        entries: impl ExactSizeIterator<Item = (&'e ImageId, &'e Entry)>,
    ) -> Result<(), Error> {
        let generation = self.next_generation()?;
        self.replace(generation, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ImageId {
        ImageId::of_config(&[n])
    }

    fn stamp(n: i64) -> Token {
        Token::Dir(Stamp {
            ino: 7,
            mtime: n,
            mtime_ns: 1,
            ctime: n,
            ctime_ns: 2,
        })
    }

    fn update(n: u8, pre: Token, post: Token, key: &str, value: Option<&'static [u8]>) -> Record {
        Record::Update(Update {
            id: id(n),
            put: true,
            pre,
            post,
            changes: vec![(
                MetadataKey::new(key).unwrap(),
                value.map(Bytes::from_static),
            )],
            summary: None,
        })
    }

    #[test]
    fn records_roundtrip_and_survive_damage() {
        let recs = vec![
            update(1, Token::Absent, stamp(1), "parent", Some(b"sha256:x")),
            Record::Remove(id(9)),
            update(2, stamp(3), stamp(4), "custom-key", None),
        ];
        let mut bytes = encode_records(&recs);
        let (back, skipped) = decode_records(&Bytes::from(bytes.clone()));
        assert_eq!(skipped, 0);
        assert_eq!(back.len(), 3);
        // Damage a byte inside the first record's payload: it is skipped,
        // the others are still read.
        bytes[20] ^= 0xff;
        let (back, skipped) = decode_records(&Bytes::from(bytes.clone()));
        assert!(skipped > 0);
        assert_eq!(back.len(), 2);
        assert!(matches!(back[0], Record::Remove(i) if i == id(9)));
        // A torn tail loses only the torn record.
        let cut = bytes.len() - 3;
        let (back, _) = decode_records(&Bytes::from(bytes[..cut].to_vec()));
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn replay_marks_unchained_updates_for_rereading() {
        let mut entries = Entries::default();
        apply(
            &mut entries,
            update(1, Token::Absent, stamp(1), "parent", Some(b"p")),
        );
        let e = &entries[&id(1)];
        assert_eq!(e.token, Some(stamp(1)));
        assert_eq!(e.metadata.len(), 1);
        // Chained: applied.
        apply(
            &mut entries,
            update(1, stamp(1), stamp(2), "builtLocally", Some(b"\x01")),
        );
        assert_eq!(entries[&id(1)].metadata.len(), 2);
        assert_eq!(entries[&id(1)].token, Some(stamp(2)));
        // Not chained (someone changed the directory unrecorded): dirty.
        apply(&mut entries, update(1, stamp(5), stamp(6), "parent", None));
        assert_eq!(entries[&id(1)].token, None);
        apply(&mut entries, Record::Remove(id(1)));
        assert!(entries.is_empty());
    }

    #[test]
    fn an_absent_base_counts_only_for_an_image_without_a_directory() {
        // Two writers both found no metadata directory; the one whose record
        // comes second must not wipe what the first recorded.
        let mut entries = Entries::default();
        apply(
            &mut entries,
            update(1, Token::Absent, stamp(1), "seen-by-a", Some(b"a")),
        );
        apply(
            &mut entries,
            update(1, Token::Absent, stamp(2), "seen-by-b", Some(b"b")),
        );
        assert_eq!(entries[&id(1)].token, None, "marked for re-reading");
        // A marked entry stays marked, whatever comes after.
        apply(
            &mut entries,
            update(1, Token::Absent, stamp(3), "seen-by-c", Some(b"c")),
        );
        assert_eq!(entries[&id(1)].token, None);

        // An image known to have no directory (content only) takes it.
        apply(
            &mut entries,
            update(2, Token::Absent, Token::Absent, "x", None),
        );
        assert_eq!(entries[&id(2)].token, Some(Token::Absent));
        apply(
            &mut entries,
            update(2, Token::Absent, stamp(4), "parent", Some(b"p")),
        );
        assert_eq!(entries[&id(2)].token, Some(stamp(4)));
        assert_eq!(entries[&id(2)].metadata.len(), 1);

        // After a removal the image is unknown again: a new directory is a
        // fresh start.
        apply(&mut entries, Record::Remove(id(2)));
        apply(
            &mut entries,
            update(2, Token::Absent, stamp(5), "builtLocally", Some(b"\x01")),
        );
        let e = &entries[&id(2)];
        assert_eq!(e.token, Some(stamp(5)));
        assert_eq!(e.metadata.len(), 1);
        assert_eq!(e.metadata[0].0.as_str(), "builtLocally");
    }

    #[test]
    fn snapshot_roundtrips_and_detects_damage() {
        let mut entries = Entries::default();
        entries.insert(
            id(1),
            Entry {
                token: Some(stamp(1)),
                content_known: true,
                metadata: vec![(MetadataKey::PARENT, Bytes::from_static(b"sha256:abc"))],
                summary: Some(Bytes::from_static(b"sum")),
            },
        );
        entries.insert(id(2), Entry::default());
        let bytes = encode_snapshot(5, entries.iter());
        let (generation, back) = decode_snapshot(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(generation, 5);
        assert_eq!(back.len(), 2);
        let e = &back[&id(1)];
        assert_eq!(e.token, Some(stamp(1)));
        assert_eq!(e.summary.as_deref(), Some(&b"sum"[..]));
        assert_eq!(e.metadata[0].1, Bytes::from_static(b"sha256:abc"));
        assert_eq!(back[&id(2)].token, None);
        for i in [0, 17, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode_snapshot(Bytes::from(bad)).is_none(), "flip at {i}");
        }
        assert!(decode_snapshot(Bytes::from(bytes[..bytes.len() - 1].to_vec())).is_none());
    }
}
