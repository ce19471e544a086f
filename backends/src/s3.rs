//! The S3 backend (`s3://BUCKET/PREFIX?…`): any S3-compatible object store,
//! shared by many machines, through [`object_store`].
//!
//! # Layout
//!
//! | object | holds |
//! |---|---|
//! | `PREFIX/content/sha256/<hex>` | an image config, exactly as given |
//! | `PREFIX/log/<name>` | one record per [`WriteBatch`]: its non-content operations and an "image put" marker per config |
//! | `PREFIX/index/<name>` | a compacted state: every image's metadata, summary and markers, plus the names of the records merged into it |
//! | `PREFIX/quarantine/sha256/<hex>` | a copy of a quarantined config, kept for inspection |
//! | `PREFIX/blobs/<alg>/<hex>` | a cached blob |
//! | `PREFIX/blobnotes/<alg>/<hex>/<key>` | a note attached to a blob |
//! | `PREFIX/lease/compaction` | held during compaction, on stores with conditional writes |
//! | `PREFIX/leases/<id>` | one [`Lease`], the record [`Lease::encode`] writes |
//!
//! `<name>` is the time the object was named, in nanoseconds (20 digits), a
//! dash and 16 random hex digits, so names are unique and sort by time.
//!
//! # Correct without conditional writes
//!
//! Nothing is ever updated in place. Configs are content-addressed, so
//! writing one twice is harmless, and they are verified on every read.
//! Everything several writers change — metadata, summaries, deletes,
//! quarantine marks — is written as a new, uniquely named, immutable record,
//! and readers merge records by a rule that does not depend on the order in
//! which they see them: per image and key, the operation from the latest
//! record wins (records ordered by name, operations by position). An image
//! exists when its latest put marker is newer than its latest delete or
//! quarantine. Two machines writing at once therefore lose nothing: both
//! records land, and every reader that has seen both agrees on the outcome.
//! Concurrent writes to the *same* key resolve to the later record name,
//! which follows the writers' clocks.
//!
//! A batch's operations all land in one record object, written after the
//! configs it adds, and only records make images visible, so a batch is
//! all-or-nothing ([`Capabilities::atomic_batch`]).
//!
//! # Compaction
//!
//! Once more than [`S3Config::with_compact_after`] records have piled up,
//! the handle that notices writes a new index holding the merged state and
//! the names of the records it merged, then deletes those records and the
//! indexes it merged — never a record it has not merged, so a write that
//! lands while compaction runs survives it. Indexes merge like records, so
//! two compactions running at once are harmless too. A reader that finds a
//! listed object gone (deleted by a compaction that finished meanwhile)
//! lists again and picks up the newer index; an object still listed and
//! still gone after that is set aside for good, because some stores keep
//! listing deleted objects for a while (a Garage node that was down when
//! they were deleted does, after it comes back). Where the store honours
//! conditional writes (probed when the backend opens, reported as
//! [`Capabilities::conditional_writes`]), records and indexes are created
//! with create-if-absent, and compaction holds a lease object so that two
//! handles do not do the same work.
//!
//! Deletion markers are kept for [`S3Config::with_tombstone_horizon`]
//! (default one day) and then forgotten by compaction.
//!
//! # Leases
//!
//! Leases are not in the log: each is an object of its own under
//! `leases/`, replaced whole by every write, so that a renewal is one small
//! PUT and never adds to what compaction rewrites.
//! [`StoreBackend::leases`] lists `leases/` and reads every lease object,
//! fresh from the bucket on every call, so clients on one bucket see each
//! other's leases at once. Two writers of one lease ID resolve as the
//! bucket resolves two PUTs: the later wins. A batch's lease changes are
//! folded per ID; the leases it stores are written before its configs and
//! record and the ones it removes are removed after, so a batch cut short
//! leaves its leases holding more than it asked, never less (the
//! all-or-nothing promise of [`Capabilities::atomic_batch`] covers its
//! images and names). A lease object that cannot be read is reported by
//! a load in [`Snapshot::quarantined`], and [`StoreBackend::leases`]
//! refuses with `Corrupt` naming it until a lease of its ID replaces or
//! removes it: a list missing a lease would let a collector remove what it
//! holds.
//!
//! # Opening
//!
//! [`StoreBackend::load`] lists `index/` and `log/`, reads the indexes and
//! the records not merged into them, then lists `content/` and reports every
//! image whose config object is missing in [`Snapshot::quarantined`] instead
//! of [`Snapshot::images`]. It never reads a config. Lookups after that are
//! served from the handle's merged state; a lookup of an image the handle
//! does not know reads the log again first, so a handle sees other handles'
//! new images without an explicit load.
//!
//! # Garbage
//!
//! Deleting an image writes a marker; its config object stays, because
//! deleting it could race a writer re-creating the same image (same bytes,
//! same key) on another machine. [`S3Backend::collect_garbage`] removes the
//! config objects of images that no longer exist and that nobody wrote for
//! a given time; run it where no writer is likely to re-create those images
//! at that moment.
//!
//! # Configuration
//!
//! See [`S3Config`]. Timeouts and retries are always set explicitly, http
//! endpoints need `allow_http=true`, and credentials come from the URL (for
//! tests) or the usual AWS environment variables; they are never logged or
//! shown.
//!
//! [`WriteBatch`]: imagecache_core::WriteBatch
//! [`Capabilities::atomic_batch`]: imagecache_core::Capabilities::atomic_batch
//! [`Capabilities::conditional_writes`]: imagecache_core::Capabilities::conditional_writes
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load
//! [`StoreBackend::leases`]: imagecache_core::StoreBackend::leases
//! [`Lease`]: imagecache_core::Lease
//! [`Lease::encode`]: imagecache_core::Lease::encode
//! [`Snapshot::quarantined`]: imagecache_core::Snapshot::quarantined
//! [`Snapshot::images`]: imagecache_core::Snapshot::images

mod blobs;
mod compact;
mod config;
mod connect;
mod error;
#[cfg(feature = "testing")]
mod harness;
mod images;
mod leases;
mod state;
mod usage;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt as _;
use imagecache_core::{Digest, ImageId, Key, MetadataKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};

pub use self::compact::CompactionReport;
pub use self::config::S3Config;
use self::connect::{build_store, explain_probe_failure, probe_conditional};
use self::error::Error;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::harness::S3Harness;
use self::state::{RecordName, State};

/// The URL scheme of this backend.
pub const SCHEME: &str = "s3";

const NAME: &str = "s3";

/// What one handle has read and merged so far.
#[derive(Debug, Default)]
struct View {
    state: State,
    /// Records whose operations are in `state`.
    applied: HashSet<String>,
    /// Records merged into an index that was joined into `state`.
    covered: HashSet<String>,
    /// Indexes joined into `state`.
    indexes: HashSet<String>,
    /// Objects that could not be decoded: object key → why.
    unreadable: BTreeMap<String, String>,
    /// Listed objects (index or record keys) that were gone when read, and
    /// gone again after a later listing whose indexes were all joined:
    /// removed by a compaction whose index this handle has joined, and
    /// still listed by a store whose listings lag behind its deletes (as a
    /// Garage node's can for a while after it missed them while down).
    /// Names are never reused, so they are never read again.
    vanished: HashSet<String>,
    /// Records known to be neither compacted nor unreadable.
    uncompacted: usize,
    /// Whether the log has been read once.
    loaded: bool,
}

/// The names found by one listing of `index/` and `log/`.
#[derive(Debug, Default)]
struct Listing {
    indexes: BTreeSet<String>,
    records: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy)]
struct Tuning {
    compact_after: usize,
    multipart_threshold: usize,
    part_size: usize,
    tombstone_horizon: Duration,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    root: Path,
    label: String,
    conditional: bool,
    tuning: Tuning,
    view: Mutex<View>,
    /// Serialises reads of the log by this handle, so concurrent callers do
    /// not fetch the same objects twice.
    reading: tokio::sync::Mutex<()>,
    last_nanos: AtomicU64,
}

/// A backend that keeps images and blobs in an S3 bucket. Clones share one
/// handle; separate handles (other processes, other machines) see each
/// other's writes after [`StoreBackend::load`].
///
/// ```no_run
/// # async fn demo() -> imagecache_core::Result<()> {
/// use imagecache_backends::s3::{S3Backend, S3Config};
/// use imagecache_core::StoreBackend;
///
/// let config = S3Config::from_url("s3://cache/images?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true")?;
/// let backend = S3Backend::open(config).await?;
/// let snapshot = backend.load().await?;
/// println!("{} images in {backend}", snapshot.images.len());
/// # Ok(())
/// # }
/// ```
///
/// [`StoreBackend::load`]: imagecache_core::StoreBackend::load
#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.inner.label)
            .field("conditional_writes", &self.inner.conditional)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.label)
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn root_path(prefix: &str) -> Result<Path, Error> {
    if prefix.is_empty() {
        return Ok(Path::default());
    }
    Path::parse(prefix).map_err(|e| Error::Config {
        reason: format!("invalid prefix {prefix:?}"),
        source: Some(Box::new(e)),
    })
}

impl S3Backend {
    /// Opens the store described by `config`, checking that the bucket is
    /// reachable and finding out whether it honours conditional writes.
    ///
    /// Unset credentials, endpoint and region are taken from the AWS
    /// environment variables (see [`S3Config`]).
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] saying what to fix when the
    /// configuration is incomplete, the endpoint cannot be reached, the
    /// bucket does not exist or the credentials are refused.
    pub async fn open(config: S3Config) -> imagecache_core::Result<Self> {
        let store = build_store(&config)?;
        let root = root_path(&config.prefix)?;
        store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| explain_probe_failure(&config, e))?;
        let backend = Self::with_store_config(store, config).await?;
        tracing::debug!(backend = %backend, conditional_writes = backend.inner.conditional, "opened");
        Ok(backend)
    }

    /// The object store this backend writes to and the path of its prefix,
    /// for tools that must reach the objects themselves (inspection, or
    /// tests that damage objects on purpose). Writing there bypasses every
    /// guarantee of this backend.
    pub fn object_store(&self) -> (&Arc<dyn ObjectStore>, &object_store::path::Path) {
        (&self.inner.store, &self.inner.root)
    }

    /// A backend over any [`ObjectStore`], with objects under `prefix`, for
    /// example `object_store::memory::InMemory` in tests.
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] for a bad prefix; a backend error
    /// when the conditional-write probe fails.
    pub async fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> imagecache_core::Result<Self> {
        Self::with_store_config(store, S3Config::new("memory", prefix)?).await
    }

    /// Like [`S3Backend::with_store`], with the tuning (and the bucket name
    /// shown by `Display`) taken from `config`; its connection settings are
    /// not used.
    ///
    /// # Errors
    /// As [`S3Backend::with_store`].
    pub async fn with_store_config(
        store: Arc<dyn ObjectStore>,
        config: S3Config,
    ) -> imagecache_core::Result<Self> {
        let root = root_path(&config.prefix)?;
        let conditional = probe_conditional(&store, &root).await?;
        let mut label = format!("s3://{}/{}", config.bucket, config.prefix);
        if let Some(endpoint) = config.endpoint() {
            label.push_str(&format!(" (endpoint {endpoint})"));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                root,
                label,
                conditional,
                tuning: Tuning {
                    compact_after: config.compact_after,
                    multipart_threshold: config.multipart_threshold,
                    part_size: config.part_size,
                    tombstone_horizon: config.tombstone_horizon,
                },
                view: Mutex::new(View::default()),
                reading: tokio::sync::Mutex::new(()),
                last_nanos: AtomicU64::new(0),
            }),
        })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // Every update of the view is a merge that leaves it consistent at
        // each step, so a panic elsewhere cannot leave it half-changed.
        self.inner
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.inner.root.clone();
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    fn content_path(&self, id: &ImageId) -> Path {
        self.path(&["content", "sha256", &id.hex()])
    }

    fn blob_path(&self, digest: &Digest) -> Path {
        self.path(&["blobs", digest.algorithm().as_str(), &digest.hex()])
    }

    fn note_path(&self, digest: &Digest, key: &MetadataKey) -> Path {
        self.path(&[
            "blobnotes",
            digest.algorithm().as_str(),
            &digest.hex(),
            key.as_str(),
        ])
    }

    /// A fresh, unique, time-ordered object name. Names from one handle
    /// always increase, even if the clock steps back.
    fn next_name(&self) -> RecordName {
        let now = now_nanos();
        let previous = self
            .inner
            .last_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        RecordName {
            nanos: now.max(previous + 1),
            random: rand::random(),
        }
    }

    fn create_mode(&self) -> PutOptions {
        if self.inner.conditional {
            PutOptions::from(PutMode::Create)
        } else {
            PutOptions::default()
        }
    }

    /// Every object below `dir`; a failure names `key`.
    async fn list_objects(
        &self,
        dir: &Path,
        key: Key,
    ) -> Result<Vec<object_store::ObjectMeta>, Error> {
        self.inner
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", key, e))
    }

    /// Lists the object names directly under `PREFIX/<dir>/`.
    async fn list_names(&self, dir: &str) -> Result<BTreeSet<String>, Error> {
        let path = self.path(&[dir]);
        self.inner
            .store
            .list(Some(&path))
            .map_err(|e| Error::store("list", Key::Other(path.to_string()), e))
            .try_filter_map(|meta| async move { Ok(meta.location.filename().map(str::to_owned)) })
            .try_collect()
            .await
    }

    async fn get_bytes(&self, path: &Path, key: Key) -> Result<Bytes, Error> {
        let result = self
            .inner
            .store
            .get(path)
            .await
            .map_err(|e| Error::store("get", key.clone(), e))?;
        result
            .bytes()
            .await
            .map_err(|e| Error::store("read", key, e))
    }
}

fn is_not_found(err: &Error) -> bool {
    matches!(
        err,
        Error::Store {
            source: object_store::Error::NotFound { .. },
            ..
        }
    )
}
