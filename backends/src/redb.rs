//! The embedded backend (`redb://PATH`): one [redb] database file.
//!
//! # Layout
//!
//! | table | key | value |
//! |---|---|---|
//! | `content` | content block number | the exact bytes of up to 16 KiB of configs, each in a numbered slot |
//! | `id_chunks` | (run, first image ID of the chunk) | up to 314 sorted (image ID, content block and slot, index block number) |
//! | `id_runs` | run | number of images in the run |
//! | `blocks` | index block number | the records (metadata and summary) of up to 32 KiB of images |
//! | `quarantine` | image ID | reason, record and config bytes of a set-aside image |
//! | `names` | name in full (`docker.io/library/busybox:latest`) | image ID |
//! | `leases` | lease ID | the lease's JSON record ([`Lease::encode`]) |
//! | `blobs` | digest string (`sha256:…`) | (upload id, size) |
//! | `blob_chunks` | (upload id, chunk index) | up to 1 MiB less 20 bytes of blob bytes, so that a chunk fills one 1 MiB page |
//! | `blob_notes` | `<digest>/<key>` | note value |
//! | `pending_uploads` | upload id | digest string of a blob still streaming in |
//! | `blob_times` | upload id of a stored blob | when it was published (Unix nanoseconds) |
//! | `meta` | name | layout version and the next upload id |
//!
//! A batch packs the configs it creates into content blocks and their
//! records into index blocks, both appended in creation order, so that
//! redb inserts one value per 16 or 32 KiB instead of one per image. The
//! map from image ID to config and record is kept as a few sorted runs
//! (see `index.rs`): each batch appends its new IDs as one more run, and
//! runs of a similar size are merged, four at a time. So a batch of creates
//! writes sequential data only, instead of one randomly placed page per
//! image as a B-tree keyed by the random IDs would once it outgrows the
//! cache; a lookup by ID costs one B-tree descent per run. [`StoreBackend::load`]
//! reads a few thousand large values and never a config (see `load.rs`).
//!
//! The layout version is kept in `meta`; a file of another version is
//! refused with [`Error::Config`] naming both versions.
//!
//! # Guarantees
//!
//! * A [`WriteBatch`] runs in one write transaction, is validated inside it
//!   against the state the batch has built so far, and commits all or
//!   nothing, across a crash too. Its leases are in the same transaction.
//! * A lease record that does not decode is reported by
//!   [`StoreBackend::load`] in its `quarantined` list, and
//!   [`StoreBackend::leases`] refuses with `Corrupt` naming it (a list
//!   silently missing a lease would let a collector remove what it holds)
//!   until a lease of that ID replaces or removes it.
//! * The database file is locked by redb. A second open, from another
//!   process or from this one, fails at once with [`Error::Locked`] naming
//!   the file and, as far as the advisory `<path>.lock-info` file tells, the
//!   holder.
//! * Blobs stream in and out in bounded memory: they are stored as chunks
//!   of about 1 MiB (each filling one page) written by several short transactions into a pending upload,
//!   then published by one small transaction once the body has ended
//!   without error. Uploads left unfinished by a crash are removed on open.
//! * Every call into redb runs on tokio's blocking pool; no transaction
//!   outlives the blocking call that opened it.
//!
//! [`Error::Locked`]: imagecache_core::Error::Locked
//! [`Error::Config`]: imagecache_core::Error::Config
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load
//! [`StoreBackend::leases`]: imagecache_core::StoreBackend::leases
//! [`WriteBatch`]: imagecache_core::WriteBatch
//! [`Lease::encode`]: imagecache_core::Lease::encode

mod blobs;
#[cfg(feature = "testing")]
mod harness;
mod images;
mod index;
mod leases;
mod load;
mod lock_info;
mod record;
mod usage;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imagecache_core::{Digest, ImageId, Key};
use redb::{ReadableTable as _, TableDefinition};

use self::lock_info::LockInfo;
use self::record::RecordError;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::harness::RedbHarness;
pub use self::usage::CompactionReport;

/// The URL scheme of this backend.
pub const SCHEME: &str = "redb";

const NAME: &str = "redb";

/// The layout version this module writes, kept in `meta` under `format`.
/// Version 1 kept the ID index as one B-tree keyed by image ID (`ids`);
/// version 2 keeps it as sorted runs (`id_chunks`, `id_runs`), packs
/// configs into content blocks, and sizes blocks to fit redb's pages.
const FORMAT: u64 = 2;

/// The cache redb keeps by default. It bounds what the process holds while
/// blobs stream through, and the operating system caches the file as well.
/// Batched imports do not need more: their writes are sequential (see
/// [`RedbConfig::with_cache_size`]).
const DEFAULT_CACHE_SIZE: usize = 64 << 20;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_NEXT_UPLOAD: &str = "next_upload";

/// When a committed write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is on disk when the write returns (one fsync per batch).
    #[default]
    Immediate,
    /// Commits are visible at once and stay consistent after a crash, but
    /// reach the disk only with a later durable commit or when the database
    /// closes; a crash may lose the most recent ones. For throwaway caches.
    Deferred,
}

impl Durability {
    fn to_redb(self) -> redb::Durability {
        match self {
            Self::Immediate => redb::Durability::Immediate,
            Self::Deferred => redb::Durability::None,
        }
    }
}

/// How a [`RedbBackend`] opens its database.
///
/// ```
/// use imagecache_backends::redb::{Durability, RedbConfig};
/// let config = RedbConfig::new()
///     .with_cache_size(256 << 20)
///     .with_durability(Durability::Immediate);
/// assert_eq!(config.cache_size(), 256 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbConfig {
    cache_size: usize,
    durability: Durability,
}

impl Default for RedbConfig {
    fn default() -> Self {
        Self {
            cache_size: DEFAULT_CACHE_SIZE,
            durability: Durability::default(),
        }
    }
}

impl RedbConfig {
    /// The defaults: a 64 MiB cache and [`Durability::Immediate`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many bytes of the file redb caches in memory (default
    /// 64 MiB).
    ///
    /// The process grows to about this size when it writes or reads that
    /// much, blobs included. Batches write new data in order, so a larger
    /// cache gains them nothing: batches of 50,000 images into a store of a
    /// million were written as fast, for the same CPU time, with the default
    /// as with 256 MiB. A larger cache mostly helps reads of configs that
    /// were read before.
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Sets when commits reach the disk.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The cache size in bytes.
    pub fn cache_size(&self) -> usize {
        self.cache_size
    }

    /// The durability of commits.
    pub fn durability(&self) -> Durability {
        self.durability
    }
}

/// A backend over one redb database file. Clones share the open database.
///
/// ```
/// # tokio_test_block_on(async {
/// use imagecache_backends::redb::RedbBackend;
/// use imagecache_core::{StoreBackend, StoreBackendExt};
///
/// let dir = tempfile::tempdir().unwrap();
/// let backend = RedbBackend::open(dir.path().join("images.redb")).await?;
/// let id = backend.put(bytes::Bytes::from_static(br#"{"rootfs":{}}"#)).await?;
/// assert_eq!(&backend.get(&id).await?[..], br#"{"rootfs":{}}"#);
/// assert_eq!(backend.load().await?.images.len(), 1);
/// # Ok::<(), imagecache_core::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct RedbBackend {
    inner: Arc<Inner>,
}

/// The open database. Dropped, and so closed, with the last clone of the
/// backend and the last blob stream reading from it.
struct Inner {
    /// Declared first so that the sidecar goes before the database closes:
    /// removing it after would race with the next process writing its own.
    lock_info: Option<LockInfo>,
    /// Every operation takes the read side only long enough to begin a
    /// transaction; recovering from a storage failure takes the write side
    /// to close and reopen the file. `None` only while that happens, or
    /// when reopening failed.
    db: std::sync::RwLock<Option<redb::Database>>,
    path: PathBuf,
    config: RedbConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(info) = &self.lock_info {
            info.remove();
        }
    }
}

impl fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedbBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}", self.inner.path.display())
    }
}

impl RedbBackend {
    /// Opens the database at `path` with the default [`RedbConfig`],
    /// creating the file (and its directory) if missing.
    ///
    /// # Errors
    /// [`Error::Locked`](imagecache_core::Error::Locked) when another
    /// process or handle has the file open;
    /// [`Error::Config`](imagecache_core::Error::Config) when the file is not
    /// a database this version can open.
    pub async fn open(path: impl AsRef<Path>) -> imagecache_core::Result<Self> {
        Self::open_with(path, RedbConfig::default()).await
    }

    /// Opens the database at `path` with `config`; see [`RedbBackend::open`].
    ///
    /// # Errors
    /// As [`RedbBackend::open`].
    pub async fn open_with(
        path: impl AsRef<Path>,
        config: RedbConfig,
    ) -> imagecache_core::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Inner::open(path, config))
            .await
            .map_err(Error::Join)??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Replaces the stored bytes of an image without any check, as a damaged
    /// disk would, for the conformance harness's damage hooks.
    #[cfg(feature = "testing")]
    pub(crate) async fn insert_raw_content(
        &self,
        id: ImageId,
        data: bytes::Bytes,
    ) -> imagecache_core::Result<()> {
        self.run(Some(Key::Image(id)), move |inner| {
            inner.insert_raw_content(&id, &data)
        })
        .await
    }

    /// Replaces the stored bytes of a blob without any check.
    #[cfg(feature = "testing")]
    pub(crate) async fn insert_raw_blob(
        &self,
        digest: Digest,
        data: bytes::Bytes,
    ) -> imagecache_core::Result<()> {
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner.insert_raw_blob(&digest, &data)
        })
        .await
    }

    /// Writes one note of a blob without any check.
    #[cfg(feature = "testing")]
    pub(crate) async fn insert_raw_note(
        &self,
        digest: Digest,
        key: imagecache_core::MetadataKey,
        data: bytes::Bytes,
    ) -> imagecache_core::Result<()> {
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner.insert_raw_note(&digest, &key, &data)
        })
        .await
    }

    /// Runs `f` on the blocking pool and maps its error, naming `key` in
    /// storage failures.
    async fn run<T: Send + 'static>(
        &self,
        key: Option<Key>,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> imagecache_core::Result<T> {
        let inner = Arc::clone(&self.inner);
        let result = match tokio::task::spawn_blocking(move || {
            let result = f(&inner);
            // redb refuses every later transaction of a handle whose
            // storage failed; reopen so that the next call can succeed.
            if let Err(err) = &result
                && err.is_storage()
                && let Err(reopen) = inner.recover()
            {
                tracing::warn!(path = %inner.path.display(), error = %reopen, "cannot reopen the database after a storage failure");
            }
            result
        })
        .await
        {
            Ok(result) => result,
            Err(join) => Err(Error::Join(join)),
        };
        result.map_err(|err| with_key(err.into(), key))
    }
}

/// Names `key` in a storage failure that does not name anything yet.
fn with_key(err: imagecache_core::Error, key: Option<Key>) -> imagecache_core::Error {
    match err {
        imagecache_core::Error::Backend {
            backend,
            key: None,
            retryable,
            source,
        } => imagecache_core::Error::Backend {
            backend,
            key,
            retryable,
            source,
        },
        other => other,
    }
}

/// Refuses an existing file with no bytes: redb would take it for a place
/// to create a database, and a typo or a truncated file would then become
/// an empty store. A file a concurrent opener has just created gets its
/// header within moments, so an empty file is looked at a few times.
fn refuse_empty_file(path: &Path) -> Result<(), Error> {
    for attempt in 0..4 {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() && meta.len() == 0 => {
                if attempt == 3 {
                    return Err(Error::EmptyFile {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

impl Inner {
    fn open(path: PathBuf, config: RedbConfig) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        refuse_empty_file(&path)?;
        let db = open_database(&path, &config)?;
        // Only the holder of the redb lock gets here, so only it writes the
        // sidecar; a refused opener reads it.
        let lock_info = match LockInfo::write(&path) {
            Ok(info) => Some(info),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot record lock information");
                None
            }
        };
        let inner = Self {
            lock_info,
            db: std::sync::RwLock::new(Some(db)),
            path,
            config,
        };
        inner.prepare()?;
        Ok(inner)
    }

    /// Creates missing tables, checks the layout version and removes the
    /// chunks of uploads a crash left unfinished. The database is locked to
    /// this handle, so every pending upload here is an orphan.
    fn prepare(&self) -> Result<(), Error> {
        let txn = self.begin_write(redb::Durability::Immediate)?;
        let orphans = {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(META_FORMAT)?.map(|g| g.value());
            match found {
                None => {
                    meta.insert(META_FORMAT, FORMAT)?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(Error::Format {
                        path: self.path.clone(),
                        found,
                    });
                }
            }
            images::create_tables(&txn)?;
            blobs::prepare(&txn)?
        };
        txn.commit()?;
        if orphans > 0 {
            tracing::info!(path = %self.path.display(), uploads = orphans, "removed unfinished blob uploads");
        }
        Ok(())
    }

    fn begin_write(&self, durability: redb::Durability) -> Result<redb::WriteTransaction, Error> {
        let mut txn = self.database(redb::Database::begin_write)??;
        txn.set_durability(durability)?;
        Ok(txn)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, Error> {
        use redb::ReadableDatabase as _;
        Ok(self.database(redb::Database::begin_read)??)
    }

    /// Runs `f` on the open database.
    fn database<T>(&self, f: impl FnOnce(&redb::Database) -> T) -> Result<T, Error> {
        let db = self
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match db.as_ref() {
            Some(db) => Ok(f(db)),
            None => Err(Error::Closed {
                path: self.path.clone(),
            }),
        }
    }

    /// After a storage failure (a full disk, a file size limit) redb
    /// refuses every later transaction of this handle. Closes and reopens
    /// the file — which removes the unfinished uploads, the failed one
    /// among them — and gives the space they held back to the file system,
    /// so that the store is usable again and the disk no fuller than
    /// before. Transactions still open elsewhere keep the file open; the
    /// reopen then fails and the next storage failure tries again.
    fn recover(&self) -> Result<(), Error> {
        self.reopen()?;
        if let Err(err) = self.compact_file() {
            // Compacting needs room too; without it the freed pages stay
            // in the file for later puts, and the failed attempt left the
            // handle refusing transactions again.
            tracing::info!(path = %self.path.display(), error = %err, "no room to compact after a storage failure");
            self.reopen()?;
        }
        tracing::info!(path = %self.path.display(), "reopened the database after a storage failure");
        Ok(())
    }

    /// Closes and reopens the file, removing unfinished uploads.
    fn reopen(&self) -> Result<(), Error> {
        {
            let mut db = self
                .db
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            drop(db.take());
            *db = Some(open_database(&self.path, &self.config)?);
        }
        self.prepare()
    }

    /// The durability the configuration asks for.
    fn durability(&self) -> redb::Durability {
        self.config.durability.to_redb()
    }
}

/// Opens (creating if needed) the database file.
fn open_database(path: &Path, config: &RedbConfig) -> Result<redb::Database, Error> {
    redb::Builder::new()
        .set_cache_size(config.cache_size)
        .create(path)
        .map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen {
                holder: lock_info::describe_holder(path),
                path: path.to_owned(),
            },
            source => Error::Open {
                path: path.to_owned(),
                source,
            },
        })
}

/// What to do about a file of another layout version.
fn format_hint(found: u64) -> &'static str {
    if found < FORMAT {
        "; the file was written by an earlier version: recreate the store"
    } else {
        "; the file was written by a later version of imagecache"
    }
}

fn blob_not_found(digest: Digest) -> Error {
    Error::Contract(imagecache_core::Error::NotFound {
        key: Key::Blob(digest),
    })
}

/// Failures of this backend, mapped to the contract error in one place.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// An outcome the contract names (not found, corrupt content, …).
    #[error(transparent)]
    Contract(#[from] imagecache_core::Error),
    #[error("{} is already open", path.display())]
    AlreadyOpen { path: PathBuf, holder: String },
    #[error("cannot open database file {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(
        "database file {} has imagecache layout version {found}; this version reads only version {FORMAT}{}",
        path.display(),
        format_hint(*found)
    )]
    Format { path: PathBuf, found: u64 },
    #[error(
        "{} is an empty file, not a redb database; remove it to create a new store there",
        path.display()
    )]
    EmptyFile { path: PathBuf },
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot begin a transaction")]
    Transaction(#[from] redb::TransactionError),
    #[error("cannot set the durability of a transaction")]
    Durability(#[from] redb::SetDurabilityError),
    #[error("cannot open a table")]
    Table(#[from] redb::TableError),
    #[error("storage failure")]
    Storage(#[from] redb::StorageError),
    #[error("cannot commit a transaction")]
    Commit(#[from] redb::CommitError),
    #[error("cannot compact the database file")]
    Compaction(#[from] redb::CompactionError),
    #[error("cannot inspect {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the index record of {id} cannot be decoded")]
    BadRecord {
        id: ImageId,
        #[source]
        source: RecordError,
    },
    #[error("index block {block} cannot be decoded")]
    BadBlock {
        block: u64,
        #[source]
        source: RecordError,
    },
    #[error("index block {block} holds no record for {id}")]
    MissingRecord { id: ImageId, block: u64 },
    #[error("run {run} of the ID index cannot be used")]
    BadChunk {
        run: u64,
        #[source]
        source: RecordError,
    },

    #[error("a blocking task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("{} is closed after a storage failure and could not be reopened yet", path.display())]
    Closed { path: PathBuf },
}

/// What a damaged database is called in errors.
const DATABASE: &str = "the redb database file";

/// The message a panic carried, when it is text.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map_or_else(|_| "no message".to_owned(), |text| (*text).to_owned()),
    }
}

impl Error {
    /// Whether the storage under redb failed (I/O: a full disk, a file
    /// size limit, a failing device), after which redb refuses the
    /// handle's transactions until it is reopened.
    fn is_storage(&self) -> bool {
        matches!(
            self,
            Self::Storage(redb::StorageError::Io(_) | redb::StorageError::PreviousIo)
                | Self::Commit(redb::CommitError::Storage(
                    redb::StorageError::Io(_) | redb::StorageError::PreviousIo
                ))
                | Self::Transaction(redb::TransactionError::Storage(
                    redb::StorageError::Io(_) | redb::StorageError::PreviousIo
                ))
                | Self::Compaction(redb::CompactionError::Storage(
                    redb::StorageError::Io(_) | redb::StorageError::PreviousIo
                ))
        )
    }
}

impl From<Error> for imagecache_core::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Contract(err) => err,
            Error::AlreadyOpen { path, holder } => Self::Locked {
                backend: NAME,
                resource: path.display().to_string(),
                holder,
            },
            Error::BadRecord { id, source } => Self::Corrupt {
                key: Key::Image(id),
                reason: "index record cannot be decoded".to_owned(),
                source: Some(Box::new(source)),
            },
            Error::BadBlock { block, source } => Self::Corrupt {
                key: Key::Other(NAME.to_owned() + " index"),
                reason: format!("index block {block} cannot be decoded"),
                source: Some(Box::new(source)),
            },
            Error::BadChunk { run, source } => Self::Corrupt {
                key: Key::Other(NAME.to_owned() + " index"),
                reason: format!("run {run} of the ID index cannot be used"),
                source: Some(Box::new(source)),
            },
            Error::MissingRecord { id, block } => Self::Corrupt {
                key: Key::Image(id),
                reason: format!("index block {block} holds no record for it"),
                source: None,
            },
            Error::Open { path, source } => Self::Config {
                backend: NAME,
                reason: format!("cannot open database file {}", path.display()),
                source: Some(Box::new(source)),
            },
            err @ (Error::Format { .. } | Error::EmptyFile { .. }) => Self::Config {
                backend: NAME,
                reason: err.to_string(),
                source: None,
            },
            Error::CreateDir { path, source } => Self::Config {
                backend: NAME,
                reason: format!("cannot create directory {}", path.display()),
                source: Some(Box::new(source)),
            },
            // redb reports damage it recognises as `Corrupted`, and some it
            // does not recognise by panicking (always, for checks that only
            // hold on files it wrote, in builds with debug assertions): both
            // mean the file is damaged, never a bug of the caller.
            Error::Storage(redb::StorageError::Corrupted(reason)) => Self::Corrupt {
                key: Key::Other(DATABASE.to_owned()),
                reason,
                source: None,
            },
            Error::Join(join) if join.is_panic() => Self::Corrupt {
                key: Key::Other(DATABASE.to_owned()),
                reason: format!(
                    "redb stopped on damaged data ({})",
                    panic_text(join.into_panic())
                ),
                source: None,
            },
            // Another transaction of this handle is open (a blob being
            // read); compacting again once it ends succeeds.
            err @ Error::Compaction(redb::CompactionError::TransactionInProgress) => {
                Self::Backend {
                    backend: NAME,
                    key: None,
                    retryable: true,
                    source: Box::new(err),
                }
            }
            err => Self::backend(NAME, None, err),
        }
    }
}

#[cfg(test)]
mod tests;
