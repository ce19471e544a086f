//! Cached blobs in `imagecache/blobs/<alg>/<hex>`, with notes in
//! `imagecache/blobs/notes/<alg>/<hex>/<key>`.
//!
//! A blob is streamed into a temp file beside its destination by a blocking
//! writer fed through a small bounded channel, so memory stays bounded
//! whatever the blob's size; it is fsynced and renamed into place only after
//! the body ended without error. Reads stream the file in 1 MiB chunks.
//!
//! A large blob's data is flushed as it goes, by a helper thread, so that
//! the disk writes the first megabytes while the rest is still being hashed
//! and copied, and the final fsync finds little left to do.

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Digest, Error as CoreError, Key,
    MetadataKey, Result, Scratch, Timestamp, Usage, UsageKind, allocated_bytes, normalize_notes,
};
use tokio::sync::mpsc;

use super::files::{
    Destination, Opened, TEMP_PREFIX, Temp, TempFile, check_destination, ensure_dir, is_missing,
    open_regular, read_regular, reclaim_temp, remove_any, remove_file_if_present, sync_dir,
    write_atomic,
};
use super::usage::add_tree;
use super::{Error, FsBackend, Inner, blocking};

/// Size of the chunks written and read.
const CHUNK: usize = 1 << 20;
/// Chunks at least this large are passed to the writer as they are.
const PASS_THROUGH: usize = CHUNK / 4;
/// Chunks in flight between the body and the writer.
const QUEUE: usize = 4;
/// Bytes written between two requests to flush a blob's data early.
const EARLY_FLUSH: u64 = 16 << 20;

#[async_trait]
impl BlobBackend for FsBackend {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        put(Arc::clone(&self.inner), *digest, body).await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        get(Arc::clone(&self.inner), *digest).await
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        let digest = *digest;
        let path = self.inner.layout.blob_path(&digest);
        blocking(move || head(&path, digest)).await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let digest = *digest;
        blocking(move || delete(&inner, &digest)).await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let inner = Arc::clone(&self.inner);
        let listed = blocking(move || list(&inner)).await?;
        Ok(listed.into_iter().map(|(info, _)| info).collect())
    }

    /// Each blob with its file's modification time: the moment its write
    /// was renamed into place, since a blob file is never written again.
    async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        let inner = Arc::clone(&self.inner);
        blocking(move || list(&inner)).await
    }

    /// The allocated blocks of blob files ([`UsageKind::Blobs`], with the
    /// blocks of their directories), of notes and their directories
    /// ([`UsageKind::Notes`]) and of temp files of blob and note writes
    /// ([`UsageKind::Temp`]), in progress or left by writers that are gone.
    /// Measuring removes nothing; [`BlobBackend::scratch`] does.
    async fn blob_usage(&self) -> Result<Usage> {
        let inner = Arc::clone(&self.inner);
        blocking(move || usage(&inner)).await
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let digest = *digest;
        let notes = normalize_notes(notes);
        blocking(move || set_notes(&inner, &digest, &notes)).await
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        let inner = Arc::clone(&self.inner);
        let digest = *digest;
        blocking(move || notes(&inner, &digest)).await
    }

    async fn scratch(&self) -> Result<Scratch> {
        let inner = Arc::clone(&self.inner);
        blocking(move || scratch(&inner)).await
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        let path = self.inner.layout.notes_dir(digest).join(key.as_str());
        let digest = *digest;
        let key = key.clone();
        blocking(move || match read_regular(&path)? {
            Some(Ok(data)) => Ok(Bytes::from(data)),
            None => Err(CoreError::NotFound {
                key: Key::BlobNote { digest, key },
            }
            .into()),
            Some(Err(found)) => Err(Error::destination(
                path,
                found,
                Key::BlobNote { digest, key },
            )),
        })
        .await
    }
}

enum Msg {
    Data(Bytes),
    Commit,
}

/// What to do about a put, decided before reading the body.
enum Start {
    /// The blob is already stored with this size.
    Exists(u64),
    /// Write into this temp file; `new_dir` if the algorithm directory was
    /// just created (its parent then needs an fsync too).
    Write { tmp: TempFile, new_dir: bool },
}

fn start(inner: &Inner, digest: &Digest) -> Result<Start, Error> {
    let key = || Key::Blob(*digest);
    let dir = inner.layout.blob_dir(digest);
    let path = inner.layout.blob_path(digest);
    let new_dir = ensure_dir(&dir).map_err(|e| e.with_key(key()))?;
    match check_destination(&path).map_err(|e| e.with_key(key()))? {
        Ok(Destination::File(len)) => Ok(Start::Exists(len)),
        Ok(Destination::Absent) => Ok(Start::Write {
            tmp: TempFile::create(&dir, &digest.hex()).map_err(|e| e.with_key(key()))?,
            new_dir,
        }),
        Err(found) => Err(Error::destination(path, found, key())),
    }
}

/// Flushes a file's data on a helper thread whenever asked, while its
/// writer goes on writing.
///
/// The helper holds a duplicate of the writer's descriptor, which shares
/// its error state: an error the helper's flush consumes would not be
/// reported again by the final fsync, so the first error is kept and
/// handed back by [`Flusher::finish`].
struct Flusher {
    kick: std::sync::mpsc::SyncSender<()>,
    outcome: std::sync::mpsc::Receiver<io::Result<()>>,
}

impl Flusher {
    /// Starts the helper; `None` when there is no runtime to run it on or
    /// the descriptor cannot be duplicated (the final fsync then does all
    /// the work, as it would anyway).
    fn start(file: &File) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let file = file.try_clone().ok()?;
        // One pending request is enough: a flush covers everything written
        // before it starts.
        let (kick, kicks) = std::sync::mpsc::sync_channel::<()>(1);
        let (report, outcome) = std::sync::mpsc::channel();
        drop(runtime.spawn_blocking(move || {
            let mut result = Ok(());
            while kicks.recv().is_ok() {
                if result.is_ok() {
                    result = file.sync_data();
                }
            }
            // The writer is waiting for this unless it gave up on the put.
            let _ = report.send(result);
        }));
        Some(Self { kick, outcome })
    }

    /// Asks for a flush of everything written so far, unless one is
    /// already waiting to start.
    fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    /// Waits for the helper to finish its flushes; their first error.
    fn finish(self) -> io::Result<()> {
        drop(self.kick);
        self.outcome
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the blob flushing helper stopped")))
    }
}

/// The blocking side of a put: writes chunks, then commits on `Commit`. If
/// the channel closes first, the temp file is dropped (removed) and `None`
/// is returned.
fn writer(
    inner: &Inner,
    digest: &Digest,
    mut tmp: TempFile,
    new_dir: bool,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<Option<u64>, Error> {
    let key = || Key::Blob(*digest);
    let fsync = inner.config.fsync;
    let mut size = 0u64;
    let mut flusher: Option<Flusher> = None;
    let mut next_flush = EARLY_FLUSH;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => {
                tmp.write_all(&chunk).map_err(|e| e.with_key(key()))?;
                size += chunk.len() as u64;
                if fsync && size >= next_flush {
                    next_flush = size + EARLY_FLUSH;
                    if flusher.is_none() {
                        flusher = Flusher::start(tmp.file());
                    }
                    if let Some(f) = &flusher {
                        f.kick();
                    }
                }
            }
            Msg::Commit => {
                if let Some(f) = flusher.take() {
                    f.finish().map_err(|e| {
                        Error::io("flush", &inner.layout.blob_path(digest), e).with_key(key())
                    })?;
                }
                tmp.set_mode().map_err(|e| e.with_key(key()))?;
                if fsync {
                    tmp.sync().map_err(|e| e.with_key(key()))?;
                }
                tmp.persist(&inner.layout.blob_path(digest))
                    .map_err(|e| e.with_key(key()))?;
                if fsync {
                    sync_dir(&inner.layout.blob_dir(digest))?;
                    if new_dir {
                        sync_dir(&inner.layout.blobs)?;
                    }
                }
                return Ok(Some(size));
            }
        }
    }
    Ok(None)
}

/// Stores a blob from a stream.
async fn put(
    inner: Arc<Inner>,
    digest: Digest,
    mut body: ByteStream,
) -> Result<BlobInfo, CoreError> {
    let start = {
        let inner = Arc::clone(&inner);
        blocking(move || start(&inner, &digest)).await?
    };
    let (tmp, new_dir) = match start {
        Start::Exists(size) => return Ok(BlobInfo { digest, size }),
        Start::Write { tmp, new_dir } => (tmp, new_dir),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = {
        let inner = Arc::clone(&inner);
        tokio::task::spawn_blocking(move || writer(&inner, &digest, tmp, new_dir, rx))
    };

    // Small chunks are gathered into 1 MiB writes; large ones go as they are.
    let mut pending = BytesMut::new();
    let body_result: Result<(), CoreError> = loop {
        let next = body.next().await;
        let send = match next {
            Some(Ok(chunk)) => {
                if chunk.len() >= PASS_THROUGH {
                    if !pending.is_empty()
                        && tx.send(Msg::Data(pending.split().freeze())).await.is_err()
                    {
                        break Ok(());
                    }
                    Some(Msg::Data(chunk))
                } else {
                    pending.extend_from_slice(&chunk);
                    (pending.len() >= CHUNK).then(|| Msg::Data(pending.split().freeze()))
                }
            }
            Some(Err(e)) => break Err(e),
            None => {
                if !pending.is_empty()
                    && tx.send(Msg::Data(pending.split().freeze())).await.is_err()
                {
                    break Ok(());
                }
                let _ = tx.send(Msg::Commit).await;
                break Ok(());
            }
        };
        // A failed send means the writer stopped on an error, which the
        // join below reports.
        if let Some(msg) = send
            && tx.send(msg).await.is_err()
        {
            break Ok(());
        }
    };
    drop(tx);
    let written = match task.await {
        Ok(r) => r,
        Err(e) => return Err(Error::Task(e).into()),
    };
    body_result?;
    match written? {
        Some(size) => Ok(BlobInfo { digest, size }),
        None => Err(Error::WriterStopped {
            path: inner.layout.blob_path(&digest),
            key: Box::new(Key::Blob(digest)),
        }
        .into()),
    }
}

/// Reads up to one chunk; an empty vector means end of file.
///
/// The buffer is read into without being zero-filled first: a file reads
/// straight into a vector's spare capacity.
fn read_chunk(file: File, path: &Path) -> Result<(File, Vec<u8>), Error> {
    let mut buf = Vec::with_capacity(CHUNK);
    let mut limited = file.take(CHUNK as u64);
    limited
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok((limited.into_inner(), buf))
}

/// Opens a blob and streams it.
async fn get(inner: Arc<Inner>, digest: Digest) -> Result<BlobReader, CoreError> {
    let path = inner.layout.blob_path(&digest);
    let opened = {
        let path = path.clone();
        blocking(move || open_regular(&path)).await?
    };
    let (file, size) = match opened {
        Opened::File(f, len) => (f, len),
        Opened::Missing => {
            return Err(CoreError::NotFound {
                key: Key::Blob(digest),
            });
        }
        Opened::NotRegular(kind) => {
            return Err(CoreError::Corrupt {
                key: Key::Blob(digest),
                reason: format!("a {kind} occupies {}", path.display()),
                source: None,
            });
        }
    };
    let path = Arc::new(path);
    let stream = futures::stream::try_unfold(Some(file), move |state| {
        let path = Arc::clone(&path);
        async move {
            let Some(file) = state else {
                return Ok(None);
            };
            let (file, chunk) = blocking(move || {
                read_chunk(file, &path).map_err(|e| e.with_key(Key::Blob(digest)))
            })
            .await?;
            if chunk.is_empty() {
                Ok(None)
            } else {
                Ok(Some((Bytes::from(chunk), Some(file))))
            }
        }
    });
    Ok(BlobReader {
        size,
        stream: Box::pin(stream),
    })
}

/// Size of a blob.
fn head(path: &Path, digest: Digest) -> Result<BlobInfo, Error> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(BlobInfo {
            digest,
            size: m.len(),
        }),
        Ok(m) => Err(Error::destination(
            path.to_path_buf(),
            super::files::kind_name(m.file_type()),
            Key::Blob(digest),
        )),
        Err(e) if is_missing(&e) => Err(CoreError::NotFound {
            key: Key::Blob(digest),
        }
        .into()),
        Err(source) => Err(Error::io("inspect", path, source).with_key(Key::Blob(digest))),
    }
}

/// Removes a blob and its notes.
fn delete(inner: &Inner, digest: &Digest) -> Result<(), Error> {
    let key = || Key::Blob(*digest);
    // Notes first: a crash in between leaves a blob without notes, which
    // are only hints, rather than notes without their blob.
    remove_any(&inner.layout.notes_dir(digest)).map_err(|e| e.with_key(key()))?;
    let removed =
        remove_file_if_present(&inner.layout.blob_path(digest)).map_err(|e| e.with_key(key()))?;
    if removed && inner.config.fsync {
        sync_dir(&inner.layout.blob_dir(digest))?;
    }
    Ok(())
}

/// One entry of the blob directories, as [`walk`] finds it.
enum Walked<'a> {
    /// `blobs/` itself or one of its algorithm directories.
    Dir(&'a Path),
    /// A blob file (or something else under a blob's name).
    Blob(Digest, &'a fs::DirEntry),
    /// A temp file of a blob write.
    Temp(&'a fs::DirEntry),
}

/// Visits `blobs/`, its algorithm directories and what they hold; the
/// notes and anything that is neither a blob nor a temp file are passed
/// over. A missing `blobs/` visits nothing.
fn walk(
    inner: &Inner,
    mut visit: impl FnMut(Walked<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let root = &inner.layout.blobs;
    let algs = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(source) => return Err(Error::io("list", root, source)),
    };
    visit(Walked::Dir(root))?;
    for alg in algs {
        let alg = alg.map_err(|e| Error::io("list", root, e))?;
        let alg_name = alg.file_name();
        let Some(alg_name) = alg_name.to_str() else {
            continue;
        };
        if alg_name == "notes" || !alg.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir: PathBuf = alg.path();
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if is_missing(&e) => continue,
            Err(source) => return Err(Error::io("list", &dir, source)),
        };
        visit(Walked::Dir(&dir))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                visit(Walked::Temp(&entry))?;
                continue;
            }
            // Anything that is not `<alg>/<hex>` fails to parse.
            if let Ok(digest) = Digest::parse(&format!("{alg_name}:{name}")) {
                visit(Walked::Blob(digest, &entry))?;
            }
        }
    }
    Ok(())
}

/// The metadata of a listed entry when it is a regular file; `None` when
/// it is something else or gone meanwhile.
fn file_meta(entry: &fs::DirEntry) -> Result<Option<fs::Metadata>, Error> {
    match entry.metadata() {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(source) => Err(Error::io("inspect", &entry.path(), source)),
    }
}

/// Temp files of blob writes: counted while their writer holds them,
/// removed once it is gone (see [`reclaim_temp`]).
fn scratch(inner: &Inner) -> Result<Scratch, Error> {
    let mut out = Scratch::default();
    walk(inner, |walked| {
        if let Walked::Temp(entry) = walked {
            match reclaim_temp(&entry.path(), inner.config.temp_ttl) {
                Temp::Writing(size) => {
                    out.in_progress += 1;
                    out.in_progress_bytes += size;
                }
                Temp::Reclaimed(size) => {
                    out.reclaimed += 1;
                    out.reclaimed_bytes += size;
                }
                Temp::Other => {}
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every blob with its modification time (when it was stored), sorted by
/// digest. Temp files of writers that are gone are removed on the way.
fn list(inner: &Inner) -> Result<Vec<(BlobInfo, Option<Timestamp>)>, Error> {
    let mut out = Vec::new();
    walk(inner, |walked| {
        match walked {
            Walked::Temp(entry) => {
                reclaim_temp(&entry.path(), inner.config.temp_ttl);
            }
            Walked::Blob(digest, entry) => {
                if let Some(m) = file_meta(entry)? {
                    let stored = m.modified().ok().map(timestamp);
                    out.push((
                        BlobInfo {
                            digest,
                            size: m.len(),
                        },
                        stored,
                    ));
                }
            }
            Walked::Dir(_) => {}
        }
        Ok(())
    })?;
    out.sort_by_key(|a| a.0);
    Ok(out)
}

/// A file time as a UTC timestamp.
fn timestamp(time: SystemTime) -> Timestamp {
    let nanos = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    Timestamp::from_unix_nanos(nanos)
}

/// The blocks of blobs, notes and unfinished blob writes, measured without
/// removing anything.
fn usage(inner: &Inner) -> Result<Usage, Error> {
    let mut usage = Usage::default();
    walk(inner, |walked| {
        match walked {
            Walked::Dir(dir) => {
                if let Ok(meta) = fs::symlink_metadata(dir) {
                    usage.add(UsageKind::Blobs, 0, allocated_bytes(&meta));
                }
            }
            Walked::Blob(_, entry) => {
                if let Some(meta) = file_meta(entry)? {
                    usage.add(UsageKind::Blobs, 1, allocated_bytes(&meta));
                }
            }
            Walked::Temp(entry) => {
                if let Some(meta) = file_meta(entry)? {
                    usage.add(UsageKind::Temp, 1, allocated_bytes(&meta));
                }
            }
        }
        Ok(())
    })?;
    add_tree(&mut usage, &inner.layout.notes, UsageKind::Notes)?;
    Ok(usage)
}

/// Attaches notes to a stored blob: each written atomically, then one
/// directory sync for all of them.
fn set_notes(inner: &Inner, digest: &Digest, notes: &BlobNotes) -> Result<(), Error> {
    if notes.is_empty() {
        return Ok(());
    }
    let blob = inner.layout.blob_path(digest);
    let missing = || {
        Error::from(CoreError::NotFound {
            key: Key::Blob(*digest),
        })
    };
    match fs::metadata(&blob) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(missing()),
        Err(e) if is_missing(&e) => return Err(missing()),
        Err(source) => return Err(Error::io("inspect", &blob, source)),
    }
    let note_key = |key: &MetadataKey| Key::BlobNote {
        digest: *digest,
        key: key.clone(),
    };
    let dir = inner.layout.notes_dir(digest);
    let first = &notes[0].0;
    let new_dir = ensure_dir(&dir).map_err(|e| e.with_key(note_key(first)))?;
    let fsync = inner.config.fsync;
    for (key, value) in notes {
        let target = dir.join(key.as_str());
        if let Err(found) = check_destination(&target).map_err(|e| e.with_key(note_key(key)))? {
            return Err(Error::destination(target, found, note_key(key)));
        }
        write_atomic(&dir, key.as_str(), value, fsync).map_err(|e| e.with_key(note_key(key)))?;
    }
    if fsync {
        sync_dir(&dir)?;
        if new_dir && let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Every note of a blob, sorted by key; none when the blob has no notes
/// directory. Files that are not notes (temp files, foreign names) are
/// passed over.
fn notes(inner: &Inner, digest: &Digest) -> Result<BlobNotes, Error> {
    let dir = inner.layout.notes_dir(digest);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(BlobNotes::new()),
        Err(source) => return Err(Error::io("list", &dir, source)),
    };
    let mut out = BlobNotes::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", &dir, source))?;
        let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|name| MetadataKey::new(name).ok())
        else {
            continue;
        };
        // A note removed meanwhile, or something that is not a file, is
        // left out.
        if let Some(Ok(data)) = read_regular(&entry.path())? {
            out.push((key, Bytes::from(data)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
