//! Loading: reconciling the index with what is really in the directory.
//!
//! The cost is one listing of `content/sha256`, one stat per image (of its
//! metadata directory), and reads only for what the index cannot vouch for:
//! images it has never seen, and images whose metadata directory changed
//! since it was recorded.
//!
//! The index is read, and the directory examined, without holding the
//! index lock, so writers are not held up by a load. A writer may change an
//! image in between, within the same timestamp tick as the load's stat, so
//! the load takes the lock once more at the end: every record appended
//! since the index was read names an image to read again, now that no
//! writer of this backend can be midway through changing it. That makes a
//! load report each image as it stood at that moment. When the index files
//! were replaced meanwhile (another handle's load or a compaction), the
//! load starts over; after a few such collisions it holds the lock
//! throughout.
//!
//! An image whose content path is unusable is set aside under the lock,
//! as every change of metadata is, with its journal record: the load takes
//! the lock for it (or uses the hold it is in), examines the path again
//! under it, since a writer may have stored the config meanwhile, and
//! moves the image only if it is still broken.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::thread;

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey, Quarantined, Snapshot, SnapshotEntry};

use super::batch::quarantine_now;
use super::files::{
    Found, TEMP_PREFIX, Token, dir_token_at, file_at, is_missing, kind_at, open_dir, parse_hex32,
    raw_kind_name, read_regular, remove_if_stale,
};
use super::index::{Entries, Entry, IndexLock, Loaded, Record, apply};
use super::{Error, Inner, Layout, leases, names};

/// Below this many images a load runs on one thread.
const PARALLEL_THRESHOLD: usize = 2048;
/// Most threads a load uses for its stats and reads.
const MAX_THREADS: usize = 4;
/// Loads that collide with a rewrite of the index files before one holds
/// the index lock throughout.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// One entry of `content/sha256` with a valid name.
#[derive(Debug)]
struct Listed {
    id: ImageId,
    kind: ListedKind,
}

impl Listed {
    /// A sort key in ID order that compares as two integers: sorting a
    /// hundred thousand names this way is several times faster than
    /// comparing digests byte by byte.
    fn order(&self) -> (u128, u128) {
        let b = self.id.to_bytes();
        let (hi, lo) = b.split_at(16);
        let hi: [u8; 16] = hi.try_into().unwrap_or_default();
        let lo: [u8; 16] = lo.try_into().unwrap_or_default();
        (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
    }
}

#[derive(Debug, Clone, Copy)]
enum ListedKind {
    File,
    Symlink,
    /// A directory, pipe or other object that cannot hold a config.
    Other(&'static str),
}

impl From<rustix::fs::FileType> for ListedKind {
    fn from(ft: rustix::fs::FileType) -> Self {
        use rustix::fs::FileType;
        match ft {
            FileType::RegularFile => Self::File,
            FileType::Symlink => Self::Symlink,
            other => Self::Other(raw_kind_name(other)),
        }
    }
}

/// What the load decided about one listed image.
#[derive(Debug)]
enum Outcome {
    /// The index entry is current. `checked`: the content was examined now.
    Keep { checked: bool },
    /// The metadata was read from disk.
    Fresh {
        token: Token,
        metadata: Vec<(MetadataKey, Bytes)>,
        checked: bool,
    },
    /// The content path is unusable; set it aside for this reason.
    Quarantine(String),
    /// The content disappeared while loading.
    Gone,
}

/// Lists `content/sha256`: valid names only, stale temp files removed.
///
/// Reads the directory with `getdents` into one buffer, so a listing of
/// many thousands of names allocates nothing per name.
fn list_content(inner: &Inner) -> Result<Vec<Listed>, Error> {
    use rustix::fs::{AtFlags, Dir, FileType, StatxFlags, statx};
    let dir = &inner.layout.content;
    let ttl = inner.config.temp_ttl;
    let fd = open_dir(dir)?;
    let mut entries = Dir::read_from(&fd).map_err(|e| Error::io("list", dir, e.into()))?;
    let mut listed = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| Error::io("list", dir, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name.starts_with(TEMP_PREFIX.as_bytes()) {
            remove_if_stale(&dir.join(OsStr::from_bytes(name)), ttl);
            continue;
        }
        let Some(bytes) = std::str::from_utf8(name).ok().and_then(parse_hex32) else {
            if name != b"." && name != b".." {
                tracing::debug!(
                    name = %String::from_utf8_lossy(name),
                    "skipping invalid digest: not 64 lowercase hex characters"
                );
            }
            continue;
        };
        let mut ft = entry.file_type();
        if ft == FileType::Unknown {
            // Some file systems do not report types in directory entries.
            let st = statx(
                &fd,
                entry.file_name(),
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::TYPE,
            )
            .map_err(|e| Error::io("inspect", &dir.join(OsStr::from_bytes(name)), e.into()))?;
            ft = FileType::from_raw_mode(u32::from(st.stx_mode));
        }
        listed.push(Listed {
            id: ImageId::from_bytes(bytes),
            kind: ft.into(),
        });
    }
    Ok(listed)
}

/// Reads every metadata value in an image's directory.
fn read_metadata(
    dir: &Path,
    token: Token,
    ttl: std::time::Duration,
) -> Result<Vec<(MetadataKey, Bytes)>, Error> {
    if !matches!(token, Token::Dir(_)) {
        return Ok(Vec::new());
    }
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(source) => return Err(Error::io("list", dir, source)),
    };
    let mut metadata = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            remove_if_stale(&entry.path(), ttl);
            continue;
        }
        let Ok(key) = MetadataKey::new(name) else {
            tracing::debug!(dir = %dir.display(), name, "skipping metadata file with an invalid key");
            continue;
        };
        match read_regular(&entry.path())? {
            Some(Ok(value)) => metadata.push((key, Bytes::from(value))),
            Some(Err(kind)) => {
                tracing::debug!(dir = %dir.display(), name, kind, "skipping metadata entry that is not a file");
            }
            // Removed between the listing and the read.
            None => {}
        }
    }
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(metadata)
}

/// Open directories a load stats relative to.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    inner: &'a Inner,
    content: BorrowedFd<'a>,
    metadata: BorrowedFd<'a>,
}

/// Decides about one listed image.
fn examine(dirs: Dirs<'_>, listed: &Listed, entry: Option<&Entry>) -> Result<Outcome, Error> {
    let id = &listed.id;
    let layout = &dirs.inner.layout;
    let mut buf = [0; 128];
    let name = id.hex_in(&mut buf);
    if let ListedKind::Other(kind) = listed.kind {
        return Ok(Outcome::Quarantine(format!(
            "a {kind} occupies the content path"
        )));
    }
    let mut checked = false;
    if !entry.is_some_and(|e| e.content_known) {
        // Never seen as a good file: check it is a non-empty regular file
        // before reporting the image (old non-atomic writers left empty
        // files behind after a crash).
        match file_at(dirs.content, name, || layout.content_path(id))? {
            Found::File(len) if len > 0 => checked = true,
            Found::File(_) => {
                return Ok(Outcome::Quarantine("the content file is empty".into()));
            }
            Found::Other(kind) => {
                return Ok(Outcome::Quarantine(format!(
                    "the content path leads to a {kind}"
                )));
            }
            Found::Missing => {
                return Ok(if matches!(listed.kind, ListedKind::Symlink) {
                    Outcome::Quarantine("the content path is a dangling symbolic link".into())
                } else {
                    Outcome::Gone
                });
            }
        }
    }
    let token = dirs.inner.seen(dir_token_at(dirs.metadata, name, || {
        layout.metadata_dir(id)
    })?);
    if let Some(e) = entry
        && e.token == Some(token)
    {
        return Ok(Outcome::Keep { checked });
    }
    let metadata = read_metadata(&layout.metadata_dir(id), token, dirs.inner.config.temp_ttl)?;
    Ok(Outcome::Fresh {
        token,
        metadata,
        checked,
    })
}

/// Examines every listed image, on several threads for large stores.
fn examine_all(
    dirs: Dirs<'_>,
    entries: &Entries,
    listed: &[Listed],
) -> Result<Vec<Outcome>, Error> {
    let run = |part: &[Listed]| -> Result<Vec<Outcome>, Error> {
        part.iter()
            .map(|l| examine(dirs, l, entries.get(&l.id)))
            .collect()
    };
    let threads = thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_THREADS);
    if listed.len() < PARALLEL_THRESHOLD || threads < 2 {
        return run(listed);
    }
    let chunk = listed.len().div_ceil(threads);
    thread::scope(|s| {
        let handles: Vec<_> = listed
            .chunks(chunk)
            .skip(1)
            .map(|part| s.spawn(move || run(part)))
            .collect();
        // The calling thread takes the first chunk itself.
        let mut out = run(listed.get(..chunk).unwrap_or(listed))?;
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part?),
                Err(_) => return Err(Error::Panicked),
            }
        }
        Ok(out)
    })
}

/// What is at an image's content path now, as a listing would report it;
/// `None` when nothing is.
fn relist(dirs: Dirs<'_>, id: &ImageId) -> Result<Option<Listed>, Error> {
    let mut buf = [0; 128];
    let kind = kind_at(dirs.content, id.hex_in(&mut buf), || {
        dirs.inner.layout.content_path(id)
    })?;
    Ok(kind.map(|ft| Listed {
        id: *id,
        kind: ft.into(),
    }))
}

/// The images a load reports, in ID order, and what it found on the way.
#[derive(Default)]
struct Settled {
    images: Vec<(ImageId, Entry)>,
    failed_quarantines: Vec<Quarantined>,
    /// Images this load set aside, whose names go with them.
    set_aside: Vec<ImageId>,
    /// The index should be rewritten.
    changed: bool,
}

impl Settled {
    /// Takes in what examining one image decided; `old` is what the index
    /// held for it. `held` is the index lock when the caller holds it;
    /// setting an image aside takes it otherwise.
    fn settle(
        &mut self,
        dirs: Dirs<'_>,
        held: Option<&mut IndexLock<'_>>,
        id: ImageId,
        old: Option<Entry>,
        outcome: Outcome,
    ) {
        match outcome {
            Outcome::Keep { checked } => {
                let Some(mut e) = old else {
                    return;
                };
                if checked && !e.content_known {
                    e.content_known = true;
                    self.changed = true;
                }
                self.images.push((id, e));
            }
            Outcome::Fresh {
                token,
                metadata,
                checked,
            } => {
                let (known, summary) = old.map_or((false, None), |e| (e.content_known, e.summary));
                self.images.push((
                    id,
                    Entry {
                        token: Some(token),
                        content_known: known || checked,
                        metadata,
                        summary,
                    },
                ));
                self.changed = true;
            }
            Outcome::Quarantine(reason) => {
                self.changed = true;
                match held {
                    Some(lock) => self.set_aside(dirs, lock, id, old, &reason),
                    None => match dirs.inner.index.lock() {
                        Ok(mut lock) => self.set_aside(dirs, &mut lock, id, old, &reason),
                        Err(e) => self.failed_to_set_aside(id, &reason, &e),
                    },
                }
            }
            Outcome::Gone => self.changed = true,
        }
    }

    /// Moves a broken image aside under the index lock, as every change of
    /// metadata is made, once it is seen still broken under the lock: a
    /// writer may have stored its content again since it was examined.
    fn set_aside(
        &mut self,
        dirs: Dirs<'_>,
        lock: &mut IndexLock<'_>,
        id: ImageId,
        old: Option<Entry>,
        reason: &str,
    ) {
        let now = relist(dirs, &id).and_then(|listed| match listed {
            Some(listed) => examine(dirs, &listed, None),
            None => Ok(Outcome::Gone),
        });
        let reason = match now {
            Ok(Outcome::Quarantine(reason)) => reason,
            Ok(other) => return self.settle(dirs, Some(lock), id, old, other),
            Err(e) => return self.failed_to_set_aside(id, reason, &e),
        };
        tracing::warn!(%id, reason, "setting a broken image aside");
        self.set_aside.push(id);
        if let Err(e) = quarantine_now(dirs.inner, lock, &id, &reason) {
            self.failed_to_set_aside(id, &reason, &e);
        }
    }

    fn failed_to_set_aside(&mut self, id: ImageId, reason: &str, e: &Error) {
        tracing::warn!(%id, error = %e, "cannot move a broken image aside");
        self.failed_quarantines.push(Quarantined {
            name: id.to_string(),
            reason: format!("{reason} (could not be moved aside: {e})"),
        });
    }

    /// Takes in records appended while the load ran: their summaries and
    /// removals apply as they are, and every image they name is examined
    /// again from scratch. Runs under the index lock, when no writer of
    /// this backend is midway through a change.
    fn catch_up(
        &mut self,
        dirs: Dirs<'_>,
        lock: &mut IndexLock<'_>,
        records: Vec<Record>,
    ) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.changed = true;
        let mut touched: Vec<ImageId> = records
            .iter()
            .map(|r| match r {
                Record::Update(u) => u.id,
                Record::Remove(id) => *id,
            })
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let mut held = Entries::default();
        for id in &touched {
            if let Ok(i) = self.images.binary_search_by(|(other, _)| other.cmp(id)) {
                held.insert(*id, std::mem::take(&mut self.images[i].1));
            }
        }
        for r in records {
            apply(&mut held, r);
        }
        let mut again = Self::default();
        for id in &touched {
            let old = held.remove(id);
            let outcome = match relist(dirs, id)? {
                Some(listed) => examine(dirs, &listed, None)?,
                None => Outcome::Gone,
            };
            again.settle(dirs, Some(lock), *id, old, outcome);
        }
        self.failed_quarantines
            .append(&mut again.failed_quarantines);
        self.set_aside.append(&mut again.set_aside);
        // Both lists are in ID order: one merge puts the images examined
        // again in place of their old entries, however many there are.
        let old = std::mem::take(&mut self.images);
        self.images.reserve(old.len() + again.images.len());
        let mut fresh = again.images.into_iter().peekable();
        for (id, e) in old {
            while let Some((next, _)) = fresh.peek()
                && *next < id
            {
                self.images.extend(fresh.next());
            }
            if touched.binary_search(&id).is_err() {
                self.images.push((id, e));
            }
        }
        self.images.extend(fresh);
        Ok(())
    }
}

/// Everything set aside, now or earlier, from `imagecache/quarantine`.
fn list_quarantine(layout: &Layout) -> Result<Vec<Quarantined>, Error> {
    let dir = &layout.quarantine;
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(source) => return Err(Error::io("list", dir, source)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let hex = name.split('.').next().unwrap_or(name);
        let Some(bytes) = parse_hex32(hex) else {
            continue;
        };
        let reason = match read_regular(&entry.path().join("reason"))? {
            Some(Ok(r)) => String::from_utf8_lossy(&r).into_owned(),
            _ => "no reason recorded".to_owned(),
        };
        out.push(Quarantined {
            name: ImageId::from_bytes(bytes).to_string(),
            reason,
        });
    }
    Ok(out)
}

/// Loads the store; see the module docs.
pub(super) fn load(inner: &Inner) -> Result<Snapshot, Error> {
    let content = open_dir(&inner.layout.content)?;
    let metadata = open_dir(&inner.layout.metadata)?;
    let dirs = Dirs {
        inner,
        content: content.as_fd(),
        metadata: metadata.as_fd(),
    };
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let (loaded, listed) = read_and_list(inner, None)?;
        let point = loaded.point;
        let mut settled = settle_all(dirs, loaded, &listed, None)?;
        let mut lock = inner.index.lock()?;
        if let Some(records) = lock.changes_since(&point)? {
            settled.catch_up(dirs, &mut lock, records)?;
            return finish(inner, &mut lock, settled);
        }
    }
    let mut lock = inner.index.lock()?;
    let (loaded, listed) = read_and_list(inner, Some(&lock))?;
    let settled = settle_all(dirs, loaded, &listed, Some(&mut lock))?;
    finish(inner, &mut lock, settled)
}

/// Reads the index (under `held` if given, else taking the lock briefly)
/// while listing `content/sha256`; the listing comes back in ID order.
fn read_and_list(
    inner: &Inner,
    held: Option<&IndexLock<'_>>,
) -> Result<(Loaded, Vec<Listed>), Error> {
    let (loaded, listed) = thread::scope(|s| {
        let index = s.spawn(|| match held {
            Some(lock) => lock.read(),
            None => inner.index.read(),
        });
        let listed = list_content(inner);
        let loaded = index.join().map_err(|_| Error::Panicked);
        Ok::<_, Error>((loaded??, listed?))
    })?;
    let mut listed = listed;
    // Sorting the small listing yields the images in ID order.
    listed.sort_unstable_by_key(Listed::order);
    Ok((loaded, listed))
}

/// Examines every listed image against the index and decides about each;
/// `held` is the index lock when the caller holds it.
fn settle_all(
    dirs: Dirs<'_>,
    loaded: Loaded,
    listed: &[Listed],
    mut held: Option<&mut IndexLock<'_>>,
) -> Result<Settled, Error> {
    let outcomes = examine_all(dirs, &loaded.entries, listed)?;
    let mut entries = loaded.entries;
    let mut settled = Settled {
        images: Vec::with_capacity(listed.len()),
        failed_quarantines: Vec::new(),
        set_aside: Vec::new(),
        changed: loaded.stale,
    };
    for (l, outcome) in listed.iter().zip(outcomes) {
        let old = entries.remove(&l.id);
        settled.settle(dirs, held.as_deref_mut(), l.id, old, outcome);
    }
    // Whatever is left in the index lost its content since it was recorded.
    settled.changed |= !entries.is_empty();
    Ok(settled)
}

/// Rewrites the index if the load learnt anything (under the lock it still
/// holds), and builds the snapshot.
fn finish(inner: &Inner, lock: &mut IndexLock<'_>, settled: Settled) -> Result<Snapshot, Error> {
    let Settled {
        images,
        mut failed_quarantines,
        set_aside,
        changed,
    } = settled;
    if changed && let Err(e) = lock.store(images.iter().map(|(id, e)| (id, e))) {
        tracing::warn!(error = %e, "cannot rewrite the index; the next load does the same work again");
    }
    let mut quarantined = list_quarantine(&inner.layout)?;
    quarantined.append(&mut failed_quarantines);
    // Names go with the images set aside, as with a quarantine in a batch.
    // A failure costs only names that stay hidden while their image is.
    if !set_aside.is_empty()
        && let Err(e) = names::drop_images_locked(inner, lock, &set_aside)
    {
        tracing::warn!(error = %e, "cannot remove the names of images set aside");
    }
    // Read under the lock too, so that the names agree with the images.
    let ids: Vec<ImageId> = images.iter().map(|(id, _)| *id).collect();
    let (names, damaged) = names::for_snapshot(inner, &ids)?;
    quarantined.extend(damaged);
    quarantined.extend(names::list_set_aside(inner)?);
    let (leases, damaged_leases) = leases::read_locked(inner)?.into_parts();
    quarantined.extend(damaged_leases);
    quarantined.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.reason.cmp(&b.reason)));
    Ok(Snapshot {
        images: images
            .into_iter()
            .map(|(id, e)| SnapshotEntry {
                id,
                metadata: e.metadata,
                summary: e.summary,
            })
            .collect(),
        quarantined,
        names,
        leases,
    })
}
