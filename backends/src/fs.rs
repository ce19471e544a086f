//! A directory backend byte-compatible with Docker's image database (`fs://PATH`).
//!
//! # Layout
//!
//! ```text
//! <root>/content/sha256/<hex>              image config bytes (0600)
//! <root>/metadata/sha256/<hex>/<key>       metadata values (files 0600, directories 0700)
//! <root>/imagecache/index                  snapshot of this backend's index
//! <root>/imagecache/journal                changes since the snapshot
//! <root>/imagecache/lock                   serialises index updates across processes
//! <root>/imagecache/quarantine/sha256/<hex>/{content,metadata/,reason}
//! <root>/imagecache/blobs/<alg>/<hex>      cached blobs
//! <root>/imagecache/blobs/notes/<alg>/<hex>/<key>
//! <root>/imagecache/quarantine/names/<n>/{repositories.json,reason}
//! <root>/imagecache/leases/<id>.json       one lease each (0600)
//! <names>/repositories.json                names (0600)
//! ```
//!
//! Leases are this backend's own: one JSON file per lease, the record
//! [`Lease::encode`](imagecache_core::Lease::encode) writes, so that a
//! renewal rewrites one small file. A lease file that cannot be read is
//! reported by a load in [`Snapshot::quarantined`] and left in place;
//! [`StoreBackend::leases`] refuses with `Corrupt` naming it until a lease
//! of its ID replaces or removes it, since a list missing a lease would let
//! a collector remove what it holds.
//!
//! Names (`busybox:latest` → image ID) are kept in Docker's own
//! `repositories.json`, in Docker's format, so Docker and this backend read
//! each other's names. Docker keeps that file beside its image database:
//! `/var/lib/docker/image/overlay2/repositories.json` for the root
//! `/var/lib/docker/image/overlay2/imagedb`. So `<names>` is the root's
//! parent when the root's last component is `imagedb`, and the root itself
//! otherwise. A names file that cannot be read is reported by a load and
//! left alone until a name is set; it is then moved aside to
//! `imagecache/quarantine/names/` and a new one is started. Names whose
//! image is not in the store are kept in the file but not listed, as Docker
//! ignores them too. A running Docker daemon reads the file only when it
//! starts and rewrites it whole from memory, so names this backend writes
//! while a daemon runs on the same directory are lost at the daemon's next
//! change of names (and the daemon does not see them before it restarts).
//!
//! `content/` and `metadata/` are exactly Docker's `imagedb`: a directory
//! written by Docker opens here unchanged, and Docker reads ours, because
//! nothing of this backend's own lives inside them. Every file is written
//! through a temp file in the same directory (named `.tmp-<name><random>`,
//! as Docker names them), fsynced, set to mode 0600 and renamed into place;
//! then the directory is fsynced too, which Docker does not do.
//!
//! # Opening fast
//!
//! [`StoreBackend::load`] does not read configs, and reads metadata files
//! only for images it cannot vouch for. The index in `imagecache/` records,
//! per image, its metadata values, its summary and a change token of its
//! metadata directory (inode, modification and change times). A load lists
//! `content/sha256`, stats each image's metadata directory, and re-reads
//! only the directories whose token differs from the recorded one — an
//! image added, re-parented or stripped of a value by another program,
//! Docker included. Images whose content disappeared are dropped. The
//! index is a cache: when it is missing or damaged the load reads
//! everything and rebuilds it.
//!
//! # Several processes
//!
//! Any number of handles, in one process or several, may share a
//! directory. Every change a handle makes to metadata (a value renamed into
//! place or removed, a metadata directory removed or set aside) is made
//! while holding the index lock (`imagecache/lock`), and its journal record
//! is appended before the lock is released. The journal thus lists the
//! changes of all handles in the order they reached the disk, and replaying
//! it yields exactly what is on disk, however the writes interleave and
//! however coarse the file system's timestamps are. A load reads the index
//! and examines the directory without the lock, then takes it briefly to
//! re-read the images named by records appended meanwhile, so it reports
//! every write that finished before it returned.
//!
//! Records also carry the metadata directory's change token from before
//! and after the change, and apply only on top of the state they were made
//! from; otherwise the image is re-read. That catches changes that leave no
//! record, a program that does not keep the journal (Docker) or a record
//! lost in a crash, as long as the timestamps tell the states apart. The
//! gap: such a change landing within one timestamp tick of this backend's
//! own stat of the same directory can go unnoticed until that directory
//! next changes. Linux 6.13 and later give a directory a fresh timestamp
//! for any change after it was observed, which narrows the tick to the
//! microseconds between this backend's rename and its stat; on older
//! kernels it is a clock tick of a few milliseconds.
//!
//! # Durability and batches
//!
//! A batch is not atomic, but an image's content is durable (file and
//! directory fsynced) before any of its metadata is renamed into place, and
//! metadata is durable when [`StoreBackend::write`] returns. File fsyncs of
//! one batch run concurrently, so they share journal commits.
//!
//! ```
//! # tokio_test_block_on(async {
//! use imagecache_backends::fs::FsBackend;
//! use imagecache_core::{StoreBackend, StoreBackendExt};
//!
//! let dir = tempfile::tempdir()?;
//! let backend = FsBackend::open(dir.path()).await?;
//! let id = backend.put(bytes::Bytes::from_static(br#"{"rootfs":{}}"#)).await?;
//! assert!(dir.path().join("content/sha256").join(id.hex()).is_file());
//! assert_eq!(backend.load().await?.images[0].id, id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load
//! [`StoreBackend::leases`]: imagecache_core::StoreBackend::leases
//! [`StoreBackend::write`]: imagecache_core::StoreBackend::write
//! [`Snapshot::quarantined`]: imagecache_core::Snapshot::quarantined

mod batch;
mod blobs;
mod files;
#[cfg(feature = "testing")]
mod harness;
mod images;
mod index;
mod leases;
mod names;
mod scan;
mod usage;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::harness::FsHarness;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imagecache_core::{Digest, Error as CoreError, ImageId, Key, Result};

use self::files::{Token, ensure_dir};
use self::index::IndexFiles;

/// The URL scheme of this backend.
pub const SCHEME: &str = "fs";

const NAME: &str = "fs";

/// How long a `.tmp-*` file must sit untouched before a load removes it.
const DEFAULT_TEMP_TTL: Duration = Duration::from_secs(10 * 60);

/// Settings of a [`FsBackend`].
///
/// ```
/// use std::time::Duration;
/// use imagecache_backends::fs::FsConfig;
///
/// let config = FsConfig::new("/var/lib/docker/image/overlay2/imagedb")
///     .with_fsync(true)
///     .with_temp_ttl(Duration::from_secs(300));
/// assert!(config.fsync());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    root: PathBuf,
    fsync: bool,
    temp_ttl: Duration,
}

impl FsConfig {
    /// Settings for a store rooted at `root` (Docker's `imagedb` directory),
    /// with fsync on and a ten-minute temp file lifetime.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fsync: true,
            temp_ttl: DEFAULT_TEMP_TTL,
        }
    }

    /// Whether writes are fsynced (files and directories). Default `true`.
    ///
    /// Turning it off keeps the atomic renames, so readers never see a
    /// half-written file, but a crash may lose recent writes. Meant for
    /// throwaway stores and for building test fixtures quickly.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// How old a leftover `.tmp-*` file must be before a load removes it.
    /// Default ten minutes; younger ones may belong to another process's
    /// write in progress and are left alone.
    pub fn with_temp_ttl(mut self, ttl: Duration) -> Self {
        self.temp_ttl = ttl;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether writes are fsynced.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// The temp file lifetime.
    pub fn temp_ttl(&self) -> Duration {
        self.temp_ttl
    }
}

/// The paths of the layout.
#[derive(Debug)]
struct Layout {
    /// `<root>/content/sha256`.
    content: PathBuf,
    /// `<root>/metadata/sha256`.
    metadata: PathBuf,
    /// `<root>/imagecache`.
    own: PathBuf,
    /// `<root>/imagecache/quarantine/sha256`.
    quarantine: PathBuf,
    /// `<root>/imagecache/blobs`.
    blobs: PathBuf,
    /// `<root>/imagecache/blobs/notes`.
    notes: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        let own = root.join("imagecache");
        let blobs = own.join("blobs");
        Self {
            content: root.join("content").join("sha256"),
            metadata: root.join("metadata").join("sha256"),
            quarantine: own.join("quarantine").join("sha256"),
            notes: blobs.join("notes"),
            blobs,
            own,
        }
    }

    fn content_path(&self, id: &ImageId) -> PathBuf {
        self.content.join(id.hex())
    }

    /// `<root>/imagecache/leases`: one file per lease.
    fn leases(&self) -> PathBuf {
        self.own.join(leases::DIR_NAME)
    }

    /// `<root>/imagecache/quarantine/names`: damaged names files set aside.
    fn names_quarantine(&self) -> PathBuf {
        self.own.join("quarantine").join("names")
    }

    fn metadata_dir(&self, id: &ImageId) -> PathBuf {
        self.metadata.join(id.hex())
    }

    fn blob_dir(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.algorithm().as_str())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest).join(digest.hex())
    }

    fn notes_dir(&self, digest: &Digest) -> PathBuf {
        self.notes
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }
}

#[derive(Debug)]
struct Inner {
    config: FsConfig,
    layout: Layout,
    index: IndexFiles,
    /// `repositories.json`, beside `imagedb` or in the root.
    names_file: PathBuf,
    /// Lets this module's tests coarsen change tokens and pause writers.
    #[cfg(test)]
    seams: tests::Seams,
}

impl Inner {
    /// The change token of a metadata directory.
    fn dir_token(&self, dir: &Path) -> Result<Token, Error> {
        files::dir_token(dir).map(|t| self.seen(t))
    }

    /// A token as this handle sees it: as read, except in tests that
    /// simulate a coarse clock.
    #[cfg(not(test))]
    fn seen(&self, token: Token) -> Token {
        token
    }

    #[cfg(test)]
    fn seen(&self, token: Token) -> Token {
        self.seams.seen(token)
    }
}

/// A store in a directory laid out as Docker's image database.
///
/// Clones share one handle. Several handles, in one process or several, may
/// use the same directory at once; each sees the others' writes at its next
/// [`StoreBackend::load`].
///
/// [`StoreBackend::load`]: imagecache_core::StoreBackend::load
#[derive(Clone)]
pub struct FsBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsBackend")
            .field("root", &self.inner.config.root)
            .field("fsync", &self.inner.config.fsync)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}", self.inner.config.root.display())
    }
}

impl FsBackend {
    /// Opens (creating if needed) a store at `root` with default settings.
    ///
    /// Creates `content/sha256` and `metadata/sha256` (mode 0700) as Docker
    /// does, and `imagecache/` beside them for this backend's own files.
    ///
    /// # Errors
    /// [`CoreError::Config`] (`failed to create storage backend`) when a
    /// directory cannot be created, for example because `root`,
    /// `root/content` or `root/metadata` is a regular file.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(FsConfig::new(root)).await
    }

    /// Opens a store with explicit settings.
    ///
    /// # Errors
    /// As [`FsBackend::open`].
    pub async fn open_with(config: FsConfig) -> Result<Self> {
        blocking(move || {
            let layout = Layout::new(&config.root);
            for dir in [&layout.content, &layout.metadata, &layout.own] {
                ensure_dir(dir).map_err(|e| e.into_create())?;
            }
            let index = IndexFiles::open(&layout.own).map_err(Error::into_create)?;
            let names_file = names::file_path(&config.root);
            Ok(Self {
                inner: Arc::new(Inner {
                    config,
                    layout,
                    index,
                    names_file,
                    #[cfg(test)]
                    seams: tests::Seams::default(),
                }),
            })
        })
        .await
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &FsConfig {
        &self.inner.config
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.config.root
    }

    /// Where this store keeps its names: Docker's `repositories.json`,
    /// beside the root when the root is an `imagedb` directory, inside it
    /// otherwise (see the [module docs](self)).
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use imagecache_backends::fs::FsBackend;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let docker = FsBackend::open(dir.path().join("overlay2/imagedb")).await?;
    /// assert_eq!(docker.names_file(), dir.path().join("overlay2/repositories.json"));
    /// let plain = FsBackend::open(dir.path().join("store")).await?;
    /// assert_eq!(plain.names_file(), dir.path().join("store/repositories.json"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn names_file(&self) -> &Path {
        &self.inner.names_file
    }
}

/// Runs blocking file system work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(CoreError::from),
        Err(e) => Err(Error::Task(e).into()),
    }
}

/// Whether an image's content file is present: a non-empty regular file.
fn content_present(path: &Path) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.is_file() && m.len() > 0),
        Err(e) if files::is_missing(&e) => Ok(false),
        Err(source) => Err(Error::io("inspect", path, source)),
    }
}

/// Failures of the directory backend, mapped to the contract error by the
/// one `From` impl below.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A directory of the layout could not be created.
    #[error("failed to create storage backend at {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file system call failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        key: Option<Box<Key>>,
        #[source]
        source: io::Error,
    },
    /// Something other than a regular file occupies a path the backend
    /// writes or reads (Docker: `failed to write digest data`).
    #[error("{}: {} is a {found}, not a regular file", write_failure(key), path.display())]
    Destination {
        path: PathBuf,
        found: &'static str,
        key: Box<Key>,
    },
    /// An outcome the contract names (not found, corrupt, unsupported),
    /// passed through unchanged.
    #[error(transparent)]
    Contract(Box<CoreError>),
    /// A blocking task panicked or was cancelled.
    #[error("blocking file system task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A parallel job panicked.
    #[error("a parallel file system job panicked")]
    Panicked,
    /// The blob writer stopped without reporting a result.
    #[error("blob writer for {} stopped before committing", path.display())]
    WriterStopped { path: PathBuf, key: Box<Key> },
}

fn write_failure(key: &Key) -> String {
    match key {
        Key::Image(id) => format!("failed to write digest data for {id}"),
        other => format!("failed to write {other}"),
    }
}

impl Error {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            key: None,
            source,
        }
    }

    fn destination(path: PathBuf, found: &'static str, key: Key) -> Self {
        Self::Destination {
            path,
            found,
            key: Box::new(key),
        }
    }

    /// Attaches the item involved, for the contract error's context.
    fn with_key(mut self, k: Key) -> Self {
        if let Self::Io { key, .. } = &mut self {
            key.get_or_insert_with(|| Box::new(k));
        }
        self
    }

    /// Turns a failure while opening into Docker's
    /// `failed to create storage backend`.
    fn into_create(self) -> Self {
        match self {
            Self::Io { path, source, .. } => Self::Create { path, source },
            other => other,
        }
    }

    fn key(&self) -> Option<Key> {
        match self {
            Self::Io { key, .. } => key.as_deref().cloned(),
            Self::Destination { key, .. } | Self::WriterStopped { key, .. } => {
                Some(Key::clone(key))
            }
            Self::Create { .. } | Self::Contract(_) | Self::Task(_) | Self::Panicked => None,
        }
    }
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Self::Contract(Box::new(e))
    }
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Create { path, source } => Self::Config {
                backend: NAME,
                reason: format!("failed to create storage backend at {}", path.display()),
                source: Some(Box::new(source)),
            },
            Error::Contract(e) => *e,
            Error::Task(ref j) if j.is_cancelled() => Self::Cancelled,
            other => Self::Backend {
                backend: NAME,
                key: other.key(),
                retryable: false,
                source: Box::new(other),
            },
        }
    }
}

#[cfg(test)]
mod tests;
