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

mod codec;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey};

use self::codec::{
    decode_records, decode_snapshot, encode_records, encode_snapshot, header, read_header,
};
use super::Error;
use super::files::{FILE_MODE, IdMap, TempFile, Token, is_missing};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ICFSIDX1";
const JOURNAL_MAGIC: &[u8; 8] = b"ICFSJRN1";
const HEADER_LEN: usize = 16;

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
mod tests;
