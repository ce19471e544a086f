//! Low-level file operations shared by the directory backend: atomic
//! writes through same-directory temp files, reads that refuse anything but
//! regular files, directory change tokens, and a small parallel runner for
//! fsyncs.

use std::collections::hash_map::RandomState;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::Error;

/// Mode of every file the backend writes (Docker's `0600`).
pub(super) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the backend creates (Docker's `0700`).
pub(super) const DIR_MODE: u32 = 0o700;
/// Prefix of temp files, as Docker's atomic writer names them.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// How long a temp file must go unmodified before [`reclaim_temp`] tries
/// its lock.
pub(super) const TEMP_SETTLE: Duration = Duration::from_secs(10);

/// Upper bound on fsyncs run at once by one batch.
const MAX_PARALLEL: usize = 16;

/// What occupies a path that is about to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destination {
    /// Nothing: the write creates the file.
    Absent,
    /// A regular file of this length.
    File(u64),
}

/// Names the kind of a file that is not a regular file, for error messages.
pub(super) fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Checks what is at `path` before replacing it, as Docker's atomic writer
/// does: only a regular file may be replaced. Anything else (a directory, a
/// symbolic link, a pipe) is returned as `Err(kind)`.
pub(super) fn check_destination(path: &Path) -> Result<Result<Destination, &'static str>, Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Ok(Destination::File(m.len()))),
        Ok(m) => Ok(Err(kind_name(m.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(Destination::Absent)),
        Err(source) => Err(Error::io("inspect", path, source)),
    }
}

/// A fresh random number for temp file names. Uniqueness is enforced by
/// creating the file exclusively; the randomness only avoids retries.
fn random_suffix() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    // Truncation is intended: ten decimal digits are plenty for a name.
    h.finish() as u32
}

/// A temp file beside its destination, removed on drop unless persisted.
#[derive(Debug)]
pub(super) struct TempFile {
    path: PathBuf,
    file: File,
    armed: bool,
}

impl TempFile {
    /// Creates `<dir>/.tmp-<base><random>` exclusively with mode 0600.
    pub(super) fn create(dir: &Path, base: &str) -> Result<Self, Error> {
        let mut last = None;
        for _ in 0..16 {
            let path = dir.join(format!("{TEMP_PREFIX}{base}{}", random_suffix()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
            {
                Ok(file) => {
                    // Held until the file is closed, by this process or by
                    // the kernel when the process dies: a temp file nobody
                    // holds locked has no writer (see `reclaim_temp`). File
                    // systems without locks simply do not record one.
                    let _ = file.try_lock();
                    return Ok(Self {
                        path,
                        file,
                        armed: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(source) => return Err(Error::io("create temp file", &path, source)),
            }
        }
        let (path, source) = last.unwrap_or_else(|| {
            (
                dir.to_path_buf(),
                io::Error::from(io::ErrorKind::AlreadyExists),
            )
        });
        Err(Error::io("create temp file", &path, source))
    }

    /// Writes bytes.
    pub(super) fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    /// Sets the final mode regardless of the umask, as Docker's writer does.
    pub(super) fn set_mode(&self) -> Result<(), Error> {
        self.file
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| Error::io("chmod", &self.path, e))
    }

    /// The open file.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Flushes the file's data and metadata to stable storage.
    pub(super) fn sync(&self) -> Result<(), Error> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    /// A job that fsyncs this file, for [`run_parallel`].
    pub(super) fn sync_job(&self) -> Result<Job, Error> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io("duplicate descriptor of", &self.path, e))?;
        let path = self.path.clone();
        Ok(Box::new(move || {
            file.sync_all().map_err(|e| Error::io("fsync", &path, e))
        }))
    }

    /// Renames the temp file over `target`.
    pub(super) fn persist(mut self, target: &Path) -> Result<(), Error> {
        fs::rename(&self.path, target).map_err(|e| Error::io("rename into place", target, e))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Nothing useful can be done if this fails; a stale temp file is
            // removed by the next load once it is old enough.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `data` to `target` atomically: temp file, write, chmod, fsync (if
/// `fsync`), rename. The caller fsyncs the directory.
pub(super) fn write_atomic(dir: &Path, name: &str, data: &[u8], fsync: bool) -> Result<(), Error> {
    let mut tmp = TempFile::create(dir, name)?;
    tmp.write_all(data)?;
    tmp.set_mode()?;
    if fsync {
        tmp.sync()?;
    }
    tmp.persist(&dir.join(name))
}

/// Flushes a directory's entries (renames, creations) to stable storage.
pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// A job that fsyncs a directory, for [`run_parallel`].
pub(super) fn sync_dir_job(dir: PathBuf) -> Job {
    Box::new(move || sync_dir(&dir))
}

/// Creates a directory and its missing parents with mode 0700; returns
/// whether `dir` itself had to be created.
pub(super) fn ensure_dir(dir: &Path) -> Result<bool, Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(Error::io(
                "create directory",
                dir,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::io("inspect", dir, source)),
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    Ok(true)
}

/// What [`open_regular`] found.
#[derive(Debug)]
pub(super) enum Opened {
    /// A regular file and its length.
    File(File, u64),
    /// Nothing at the path (or a parent is missing or not a directory).
    Missing,
    /// Something that is not a regular file.
    NotRegular(&'static str),
}

/// Opens a file for reading, refusing anything but a regular file.
///
/// The open is non-blocking so that a named pipe planted at a path cannot
/// hang the caller; regular files ignore the flag.
pub(super) fn open_regular(path: &Path) -> Result<Opened, Error> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(Opened::Missing),
        Err(source) => return Err(Error::io("open", path, source)),
    };
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if meta.is_file() {
        Ok(Opened::File(file, meta.len()))
    } else {
        Ok(Opened::NotRegular(kind_name(meta.file_type())))
    }
}

/// Reads a whole open file whose length is known.
pub(super) fn read_to_end(mut file: File, len: u64, path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    file.read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Reads a regular file; `None` when it does not exist, `Err(kind)` inside
/// `Ok` when something else occupies the path.
pub(super) fn read_regular(path: &Path) -> Result<Option<Result<Vec<u8>, &'static str>>, Error> {
    match open_regular(path)? {
        Opened::File(f, len) => Ok(Some(Ok(read_to_end(f, len, path)?))),
        Opened::Missing => Ok(None),
        Opened::NotRegular(kind) => Ok(Some(Err(kind))),
    }
}

/// Whether an error means "no such file" for the purpose of a lookup.
pub(super) fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Removes a file; a missing file is fine.
pub(super) fn remove_file_if_present(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(source) => Err(Error::io("remove", path, source)),
    }
}

/// Removes whatever is at `path` (a directory tree or a file); missing is fine.
pub(super) fn remove_any(path: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path)
            .map(|()| true)
            .or_else(|e| if is_missing(&e) { Ok(false) } else { Err(e) })
            .map_err(|e| Error::io("remove directory", path, e)),
        Ok(_) => remove_file_if_present(path),
        Err(e) if is_missing(&e) => Ok(false),
        Err(source) => Err(Error::io("inspect", path, source)),
    }
}

/// Whether a leftover temp file is old enough that no writer can still be
/// using it.
pub(super) fn is_stale(meta: &fs::Metadata, ttl: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= ttl)
}

/// Removes `path` if it is a stale temp file; logs what it did.
/// What [`reclaim_temp`] did with a temp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Temp {
    /// Its writer still holds it: bytes so far.
    Writing(u64),
    /// Its writer was gone; removed, with the bytes it held.
    Reclaimed(u64),
    /// Gone meanwhile, or kept (no lock to tell, and not stale yet).
    Other,
}

/// Removes a temp file of this backend's writers when no writer holds its
/// lock any more (the writer finished elsewhere, was killed or was
/// interrupted), whatever its age. Where the file system has no locks,
/// falls back to [`remove_if_stale`] with `ttl`.
pub(super) fn reclaim_temp(path: &Path, ttl: Duration) -> Temp {
    let Ok(file) = File::open(path) else {
        return Temp::Other;
    };
    let meta = file.metadata().ok();
    let size = meta.as_ref().map_or(0, fs::Metadata::len);
    // A writer locks its file right after creating it. Until a file has
    // been left alone a moment, taking its lock here could come first and
    // make the writer's lock fail, or find it unlocked in between; so a
    // file that young counts as being written.
    let settled = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= TEMP_SETTLE);
    if !settled {
        return Temp::Writing(size);
    }
    match file.try_lock() {
        Ok(()) => match fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), size, "removed the temp file of a writer that is gone");
                Temp::Reclaimed(size)
            }
            Err(_) => Temp::Other,
        },
        Err(std::fs::TryLockError::WouldBlock) => Temp::Writing(size),
        Err(std::fs::TryLockError::Error(_)) => {
            remove_if_stale(path, ttl);
            Temp::Other
        }
    }
}

pub(super) fn remove_if_stale(path: &Path, ttl: Duration) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && is_stale(&m, ttl) => match fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed stale temp file"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temp file")
            }
        },
        _ => {}
    }
}

/// The modification and change times of a file system object, as
/// nanoseconds-resolution pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) ino: u64,
    pub(super) mtime: i64,
    pub(super) mtime_ns: u32,
    pub(super) ctime: i64,
    pub(super) ctime_ns: u32,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_ns: u32::try_from(m.mtime_nsec()).unwrap_or(0),
            ctime: m.ctime(),
            ctime_ns: u32::try_from(m.ctime_nsec()).unwrap_or(0),
        }
    }
}

/// The change token of an image's metadata directory.
///
/// Every metadata write, by this backend or by Docker, creates a temp file
/// in the directory and renames it, and every removal unlinks a name; each
/// of these updates the directory's modification and change times. A token
/// equal to the one recorded therefore means nobody changed the metadata
/// since. Linux 6.13 and later give such timestamps fine granularity once
/// they have been observed, so even a change within the same clock tick as
/// the recording stat gets a different token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// No metadata directory.
    Absent,
    /// A directory with these times.
    Dir(Stamp),
    /// Something that is not a directory occupies the path (no metadata).
    Other(Stamp),
}

/// Stats an image's metadata directory (following a symbolic link, as
/// Docker would).
pub(super) fn dir_token(dir: &Path) -> Result<Token, Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(Token::Dir(Stamp::of(&m))),
        Ok(m) => Ok(Token::Other(Stamp::of(&m))),
        Err(e) if is_missing(&e) => Ok(Token::Absent),
        Err(source) => Err(Error::io("inspect", dir, source)),
    }
}

/// The same token as [`dir_token`], from a stat relative to an open
/// directory (`dirfd`/`name`), which spares the kernel the walk of the
/// whole path on every one of a load's many stats.
pub(super) fn dir_token_at(
    dirfd: BorrowedFd<'_>,
    name: &str,
    full_path: impl Fn() -> PathBuf,
) -> Result<Token, Error> {
    use rustix::fs::{AtFlags, FileType, StatxFlags, statx};
    use rustix::io::Errno;
    let mask = StatxFlags::TYPE | StatxFlags::INO | StatxFlags::MTIME | StatxFlags::CTIME;
    match statx(dirfd, name, AtFlags::empty(), mask) {
        Ok(st) => {
            let stamp = Stamp {
                ino: st.stx_ino,
                mtime: st.stx_mtime.tv_sec,
                mtime_ns: st.stx_mtime.tv_nsec,
                ctime: st.stx_ctime.tv_sec,
                ctime_ns: st.stx_ctime.tv_nsec,
            };
            if FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory {
                Ok(Token::Dir(stamp))
            } else {
                Ok(Token::Other(stamp))
            }
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(Token::Absent),
        // Kernels before 4.11 have no statx.
        Err(Errno::NOSYS) => dir_token(&full_path()),
        Err(e) => Err(Error::io("inspect", &full_path(), e.into())),
    }
}

/// What a path relative to an open directory leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing.
    Missing,
    /// A regular file of this size.
    File(u64),
    /// Something else, named for messages.
    Other(&'static str),
}

/// Names a file type reported by the kernel, for messages.
pub(super) fn raw_kind_name(ft: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match ft {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        _ => "special file",
    }
}

/// What `dirfd`/`name` leads to, following symbolic links.
pub(super) fn file_at(
    dirfd: BorrowedFd<'_>,
    name: &str,
    full_path: impl Fn() -> PathBuf,
) -> Result<Found, Error> {
    use rustix::fs::{AtFlags, FileType, StatxFlags, statx};
    use rustix::io::Errno;
    match statx(
        dirfd,
        name,
        AtFlags::empty(),
        StatxFlags::TYPE | StatxFlags::SIZE,
    ) {
        Ok(st) => {
            let ft = FileType::from_raw_mode(u32::from(st.stx_mode));
            Ok(if ft == FileType::RegularFile {
                Found::File(st.stx_size)
            } else {
                Found::Other(raw_kind_name(ft))
            })
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(Found::Missing),
        Err(Errno::NOSYS) => match fs::metadata(full_path()) {
            Ok(m) if m.is_file() => Ok(Found::File(m.len())),
            Ok(m) => Ok(Found::Other(kind_name(m.file_type()))),
            Err(e) if is_missing(&e) => Ok(Found::Missing),
            Err(source) => Err(Error::io("inspect", &full_path(), source)),
        },
        Err(e) => Err(Error::io("inspect", &full_path(), e.into())),
    }
}

/// The type of what `dirfd`/`name` is itself (not following a symbolic
/// link); `None` when nothing is there.
pub(super) fn kind_at(
    dirfd: BorrowedFd<'_>,
    name: &str,
    full_path: impl Fn() -> PathBuf,
) -> Result<Option<rustix::fs::FileType>, Error> {
    use rustix::fs::{AtFlags, FileType, StatxFlags, statx};
    use rustix::io::Errno;
    match statx(dirfd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(u32::from(st.stx_mode)))),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(Errno::NOSYS) => match fs::symlink_metadata(full_path()) {
            Ok(m) => Ok(Some(FileType::from_raw_mode(m.mode()))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(source) => Err(Error::io("inspect", &full_path(), source)),
        },
        Err(e) => Err(Error::io("inspect", &full_path(), e.into())),
    }
}

/// Opens a directory for `*at` calls and listing.
pub(super) fn open_dir(path: &Path) -> Result<OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags, open};
    open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", path, e.into()))
}

/// Hashes image IDs by eight bytes of their hash.
///
/// IDs are SHA-256 digests, uniformly distributed, so a few of their bytes
/// are as good a hash as any; the maps of a load hold one entry per image
/// and are probed once per image, which makes a cheap hash worth it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.first_chunk::<8>() {
            Some(head) => self.0 ^= u64::from_le_bytes(*head),
            None => {
                for &b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(b);
                }
            }
        }
    }
}

/// A map keyed by image ID, hashed with [`IdHasher`].
pub(super) type IdMap<V> =
    std::collections::HashMap<imagecache_core::ImageId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A unit of blocking work for [`run_parallel`].
pub(super) type Job = Box<dyn FnOnce() -> Result<(), Error> + Send + 'static>;

struct ParState {
    jobs: Vec<Mutex<Option<Job>>>,
    next: AtomicUsize,
    done: Mutex<(usize, Option<Error>)>,
    cv: Condvar,
}

impl ParState {
    /// Takes and runs jobs until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(slot) = self.jobs.get(i) else {
                return;
            };
            let job = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            let result = match job {
                Some(job) => catch_unwind(AssertUnwindSafe(job)).unwrap_or(Err(Error::Panicked)),
                None => Ok(()),
            };
            let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
            done.0 += 1;
            if let Err(e) = result {
                done.1.get_or_insert(e);
            }
            self.cv.notify_all();
        }
    }
}

/// Runs blocking jobs (fsyncs, mostly) concurrently and returns the first
/// error.
///
/// Concurrent fsyncs on one file system share journal commits and device
/// flushes, so a batch that must make several files durable waits for
/// roughly one flush instead of one per file. Helpers come from the tokio
/// blocking pool when one is available; the calling thread works too, and
/// only ever waits for jobs a helper has already started, so the runner
/// cannot deadlock even when the pool is exhausted.
pub(super) fn run_parallel(jobs: Vec<Job>) -> Result<(), Error> {
    let handle = tokio::runtime::Handle::try_current().ok();
    let handle = match handle {
        Some(h) if jobs.len() > 1 => h,
        _ => {
            let mut first = None;
            for job in jobs {
                if let Err(e) = job() {
                    first.get_or_insert(e);
                }
            }
            return first.map_or(Ok(()), Err);
        }
    };
    let total = jobs.len();
    let state = Arc::new(ParState {
        jobs: jobs.into_iter().map(|j| Mutex::new(Some(j))).collect(),
        next: AtomicUsize::new(0),
        done: Mutex::new((0, None)),
        cv: Condvar::new(),
    });
    for _ in 1..total.min(MAX_PARALLEL) {
        let state = Arc::clone(&state);
        drop(handle.spawn_blocking(move || state.work()));
    }
    state.work();
    let mut done = state.done.lock().unwrap_or_else(PoisonError::into_inner);
    while done.0 < total {
        done = state.cv.wait(done).unwrap_or_else(PoisonError::into_inner);
    }
    done.1.take().map_or(Ok(()), Err)
}

/// Parses a 64-character lowercase hex name into 32 bytes.
pub(super) fn parse_hex32(name: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = name.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_names_are_strict() {
        let hex = "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2";
        assert!(parse_hex32(hex).is_some());
        assert!(parse_hex32(&hex.to_uppercase()).is_none());
        assert!(parse_hex32(&hex[1..]).is_none());
        assert!(parse_hex32(&format!("{hex}0")).is_none());
        assert!(parse_hex32("foobar").is_none());
        assert!(parse_hex32(&format!(".tmp-{}", &hex[5..])).is_none());
    }

    #[test]
    fn temp_file_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TempFile::create(dir.path(), "x").unwrap();
        t.write_all(b"abc").unwrap();
        let name = t.path.clone();
        assert!(name.exists());
        drop(t);
        assert!(!name.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        write_atomic(dir.path(), "y", b"data", true).unwrap();
        assert_eq!(fs::read(dir.path().join("y")).unwrap(), b"data");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn parallel_runner_reports_the_first_error_and_runs_everything() {
        let ran = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<Job> = (0..20)
            .map(|i| {
                let ran = Arc::clone(&ran);
                Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    if i == 7 {
                        Err(Error::io(
                            "test",
                            Path::new("/x"),
                            io::Error::from(io::ErrorKind::Other),
                        ))
                    } else {
                        Ok(())
                    }
                }) as Job
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let result = rt.block_on(async move {
            tokio::task::spawn_blocking(move || run_parallel(jobs))
                .await
                .unwrap()
        });
        assert!(result.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 20);
    }
}
