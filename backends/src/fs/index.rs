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
//! fsynced. An `flock`ed `lock` file serialises appends and compaction
//! across processes.
//!
//! Records carry the token of the metadata directory before and after the
//! writer changed it. Replay applies a record only when its "before" token
//! equals the token the index holds; otherwise some change went unrecorded
//! (another process, Docker, a lost record) and the entry is marked for
//! re-reading. That makes replaying a journal over any older snapshot safe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

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
pub(super) fn apply(entries: &mut Entries, record: Record) {
    match record {
        Record::Remove(id) => {
            entries.remove(&id);
        }
        Record::Update(u) => {
            let entry = entries.entry(u.id).or_default();
            if u.put {
                entry.content_known = true;
            }
            // A directory that did not exist held no metadata, whatever the
            // index believed; otherwise the base must be the state the
            // index recorded.
            let base_known = if u.pre == Token::Absent {
                entry.metadata.clear();
                true
            } else {
                entry.token == Some(u.pre)
            };
            if base_known {
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

/// The index as read at the start of a load.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Entries after replaying the journal.
    pub(super) entries: Entries,
    /// Generation of the snapshot (0 when there was none or it was damaged).
    pub(super) snapshot_generation: u64,
    /// Generation in the snapshot file's header as found, damaged or not;
    /// a later compaction checks it to see whether another process
    /// replaced the snapshot meanwhile.
    pub(super) snapshot_header: Option<u64>,
    /// Generation and length of the journal as read (`None`: no journal).
    pub(super) journal: Option<(u64, u64)>,
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

/// Reads a whole file; `None` if it does not exist.
fn read_file(path: &Path) -> Result<Option<Bytes>, Error> {
    match fs::read(path) {
        Ok(buf) => Ok(Some(Bytes::from(buf))),
        Err(e) if is_missing(&e) => Ok(None),
        Err(source) => Err(Error::io("read", path, source)),
    }
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

    /// Runs `f` holding the in-process mutex and the cross-process flock.
    fn locked<R>(&self, f: impl FnOnce(&mut LockState) -> Result<R, Error>) -> Result<R, Error> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .lock
            .lock()
            .map_err(|e| Error::io("lock", &self.lock_path, e))?;
        let result = f(&mut state);
        if let Err(e) = state.lock.unlock() {
            tracing::warn!(path = %self.lock_path.display(), error = %e, "cannot unlock the index lock");
        }
        result
    }

    /// Reads the snapshot and replays the journal.
    pub(super) fn read(&self) -> Result<Loaded, Error> {
        self.locked(|_| self.read_locked())
    }

    fn read_locked(&self) -> Result<Loaded, Error> {
        let mut loaded = Loaded::default();
        let mut snapshot_valid = false;
        if let Some(buf) = read_file(&self.snapshot)? {
            loaded.snapshot_header = read_header(&buf, SNAPSHOT_MAGIC);
            if let Some((generation, entries)) = decode_snapshot(buf) {
                loaded.snapshot_generation = generation;
                loaded.entries = entries;
                snapshot_valid = true;
            } else {
                tracing::warn!(
                    path = %self.snapshot.display(),
                    "index snapshot is damaged; rebuilding it from the store"
                );
                loaded.stale = true;
            }
        } else {
            loaded.stale = true;
        }
        if let Some(buf) = read_file(&self.journal)? {
            let len = buf.len() as u64;
            match read_header(&buf, JOURNAL_MAGIC) {
                Some(generation) => {
                    loaded.journal = Some((generation, len));
                    // A journal older than the snapshot was folded into it
                    // by a compaction that stopped before replacing it.
                    if !snapshot_valid || generation >= loaded.snapshot_generation {
                        let (records, skipped) = decode_records(&buf.slice(HEADER_LEN..));
                        if skipped > 0 {
                            tracing::warn!(
                                path = %self.journal.display(),
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
                        path = %self.journal.display(),
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
    pub(super) fn append(&self, records: &[Record]) -> Result<(), Error> {
        let bytes = encode_records(records);
        if bytes.is_empty() {
            return Ok(());
        }
        self.locked(|state| {
            let journal = self.current_journal(state)?;
            journal
                .write_all(&bytes)
                .map_err(|e| Error::io("append to", &self.journal, e))?;
            let len = journal
                .metadata()
                .map_err(|e| Error::io("inspect", &self.journal, e))?
                .len();
            if len > COMPACT_MIN_JOURNAL {
                let snapshot_len = fs::metadata(&self.snapshot).map(|m| m.len()).unwrap_or(0);
                if len > snapshot_len {
                    self.compact_locked(state)?;
                }
            }
            Ok(())
        })
    }

    /// The journal to append to, reopened if another process replaced it
    /// and created (empty, at the snapshot's generation) if missing.
    fn current_journal<'s>(&self, state: &'s mut LockState) -> Result<&'s mut File, Error> {
        let on_disk = match fs::metadata(&self.journal) {
            Ok(m) => Some(m.ino()),
            Err(e) if is_missing(&e) => None,
            Err(source) => return Err(Error::io("inspect", &self.journal, source)),
        };
        let cached = state.journal.as_ref().map(|(_, ino)| *ino);
        if on_disk.is_none() || on_disk != cached {
            state.journal = None;
            let usable = match on_disk {
                Some(_) => read_generation(&self.journal, JOURNAL_MAGIC)?.is_some(),
                None => false,
            };
            if !usable {
                let generation =
                    read_generation(&self.snapshot, SNAPSHOT_MAGIC)?.unwrap_or_default();
                replace_file(&self.dir, "journal", &header(JOURNAL_MAGIC, generation))?;
            }
            let f = OpenOptions::new()
                .append(true)
                .open(&self.journal)
                .map_err(|e| Error::io("open", &self.journal, e))?;
            let ino = f
                .metadata()
                .map_err(|e| Error::io("inspect", &self.journal, e))?
                .ino();
            state.journal = Some((f, ino));
        }
        match &mut state.journal {
            Some((f, _)) => Ok(f),
            None => Err(Error::io(
                "open",
                &self.journal,
                io::Error::from(io::ErrorKind::NotFound),
            )),
        }
    }

    /// Folds the journal into a new snapshot (under the lock).
    fn compact_locked(&self, state: &mut LockState) -> Result<(), Error> {
        let loaded = self.read_locked()?;
        let generation = loaded
            .snapshot_header
            .unwrap_or_default()
            .max(loaded.journal.map_or(0, |(g, _)| g))
            + 1;
        let snapshot = encode_snapshot(generation, loaded.entries.iter());
        replace_file(&self.dir, "index", &snapshot)?;
        replace_file(&self.dir, "journal", &header(JOURNAL_MAGIC, generation))?;
        state.journal = None;
        Ok(())
    }

    /// Writes the result of a load as the new snapshot, keeping journal
    /// records appended since `loaded` was read. Does nothing if another
    /// process compacted meanwhile (its snapshot is as good as ours).
    pub(super) fn store_after_load<'a>(
        &self,
        loaded_journal: Option<(u64, u64)>,
        snapshot_header: Option<u64>,
        entries: impl ExactSizeIterator<Item = (&'a ImageId, &'a Entry)>,
    ) -> Result<(), Error> {
        self.locked(|state| {
            let current = read_file(&self.journal)?;
            let current_header = current
                .as_ref()
                .and_then(|b| read_header(b, JOURNAL_MAGIC).map(|g| (g, b.len() as u64)));
            let tail = match (loaded_journal, current_header, &current) {
                (None, None, _) => Bytes::new(),
                (Some((g0, len0)), Some((g1, len1)), Some(buf)) if g0 == g1 && len1 >= len0 => {
                    buf.slice(usize::try_from(len0).unwrap_or(usize::MAX).min(buf.len())..)
                }
                // A journal created after our read holds only newer records.
                (None, Some(_), Some(buf)) => buf.slice(HEADER_LEN..),
                _ => return Ok(()),
            };
            if read_generation(&self.snapshot, SNAPSHOT_MAGIC)? != snapshot_header {
                return Ok(());
            }
            let generation = snapshot_header
                .unwrap_or_default()
                .max(loaded_journal.map_or(0, |(g, _)| g))
                .max(current_header.map_or(0, |(g, _)| g))
                + 1;
            let snapshot = encode_snapshot(generation, entries);
            replace_file(&self.dir, "index", &snapshot)?;
            let mut journal = header(JOURNAL_MAGIC, generation);
            journal.extend_from_slice(&tail);
            replace_file(&self.dir, "journal", &journal)?;
            state.journal = None;
            Ok(())
        })
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
