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
//! lists again and picks up the newer index. Where the store honours
//! conditional writes (probed when the backend opens, reported as
//! [`Capabilities::conditional_writes`]), records and indexes are created
//! with create-if-absent, and compaction holds a lease object so that two
//! handles do not do the same work.
//!
//! Deletion markers are kept for [`S3Config::with_tombstone_horizon`]
//! (default one day) and then forgotten by compaction.
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

mod blob;
mod config;
mod error;
#[cfg(feature = "testing")]
mod harness;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Content, Digest,
    ImageId, Key, MetadataKey, Quarantined, Snapshot, StoreBackend, WriteBatch, WriteOp,
    normalize_notes, validate_batch,
};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};

pub use self::config::S3Config;
use self::error::{Error, is_transient, s3_error_code};
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::harness::S3Harness;
use self::state::{Index, RecordName, RecordOp, State};

/// The URL scheme of this backend.
pub const SCHEME: &str = "s3";

const NAME: &str = "s3";

/// How often a reader lists again when objects vanish under it.
const MAX_READ_ATTEMPTS: usize = 5;
/// Objects fetched at once while reading the log.
const FETCH_CONCURRENCY: usize = 32;
/// Configs uploaded at once by one batch.
const UPLOAD_CONCURRENCY: usize = 16;
/// How long a compaction lease is honoured before it is taken as abandoned.
const LEASE_TTL: Duration = Duration::from_secs(10 * 60);

/// What [`S3Backend::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Whether a new index was written (false when there was nothing to do
    /// or another handle held the compaction lease).
    pub ran: bool,
    /// Records merged into the new index and then deleted.
    pub merged_records: usize,
    /// Older indexes merged into the new one and then deleted.
    pub merged_indexes: usize,
    /// Images (existing or remembered as deleted) in the new index.
    pub images: usize,
}

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

fn build_store(config: &S3Config) -> Result<Arc<dyn ObjectStore>, Error> {
    let config_error = |reason: String| Error::Config {
        reason,
        source: None,
    };
    let allow_http = config.allow_http.unwrap_or(false);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(config.region.as_deref().unwrap_or("us-east-1"))
        .with_virtual_hosted_style_request(config.virtual_hosted_style);
    if let Some(endpoint) = &config.endpoint {
        if endpoint.starts_with("http://") {
            if !allow_http {
                return Err(config_error(format!(
                    "endpoint {endpoint} is plain http: add allow_http=true to the URL \
                     (or AWS_ALLOW_HTTP=true) to allow unencrypted traffic, or use https"
                )));
            }
        } else if !endpoint.starts_with("https://") {
            return Err(config_error(format!(
                "endpoint {endpoint:?} must start with https:// (or http:// with allow_http=true)"
            )));
        }
        builder = builder.with_endpoint(endpoint);
    }
    if config.skip_signature {
        builder = builder.with_skip_signature(true);
    } else {
        // Explicit credentials also keep the client from asking an instance
        // metadata service, which does not exist off the cloud.
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = &config.session_token {
                    builder = builder.with_token(token);
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(config_error(
                    "only half of the credentials are set: give both AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(config_error(
                    "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add \
                     skip_signature=true to the URL for a public bucket"
                        .into(),
                ));
            }
        }
    }
    let mut client = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(config.timeout)
        .with_connect_timeout(config.connect_timeout);
    if let Some(max) = config.pool_max_idle_per_host {
        client = client.with_pool_max_idle_per_host(max);
    }
    // with_client_options replaces every client option, so allow_http is
    // set inside it above and again after it here.
    builder = builder
        .with_client_options(client)
        .with_allow_http(allow_http)
        .with_retry(RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
            ..RetryConfig::default()
        });
    let store = builder.build().map_err(|e| Error::Config {
        reason: format!("cannot configure the S3 client for {config}"),
        source: Some(Box::new(e)),
    })?;
    Ok(Arc::new(store))
}

fn refused_text(endpoint: &str, bucket: &str) -> String {
    format!(
        "{endpoint} refused the credentials for bucket {bucket:?}: check AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or the URL's access_key_id and secret_access_key), the region, \
         and the key's read/write permission on the bucket"
    )
}

/// Turns a failed first request into an explanation of what to fix.
fn explain_probe_failure(config: &S3Config, err: object_store::Error) -> Error {
    let endpoint = config
        .endpoint
        .as_deref()
        .unwrap_or("the default AWS endpoint");
    let bucket = &config.bucket;
    let code = s3_error_code(&err);
    let missing_bucket = "NoSuchBucket";
    let refused = [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
    ];
    let reason = match (&err, code.as_deref()) {
        (_, Some(c)) if c == missing_bucket => format!(
            "bucket {bucket:?} does not exist at {endpoint}: create it (for example \
             `garage bucket create {bucket}` or `aws s3 mb s3://{bucket}`) or fix the bucket name"
        ),
        (
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
            _,
        ) => refused_text(endpoint, bucket),
        (_, Some(c)) if refused.contains(&c) => refused_text(endpoint, bucket),
        (_, Some("AuthorizationHeaderMalformed")) => format!(
            "{endpoint} refused the request's region: set region= in the URL (or AWS_REGION) \
             to the server's region"
        ),
        (object_store::Error::NotFound { .. }, _) => format!(
            "bucket {bucket:?} was not found at {endpoint}: create it or fix the bucket name"
        ),
        (e, _) if is_transient(e) => format!(
            "cannot reach {endpoint}: check that the server is running and that the endpoint \
             (host and port) is right"
        ),
        (_, Some(c)) => format!("probing bucket {bucket:?} at {endpoint} failed with {c}"),
        (_, None) => format!("probing bucket {bucket:?} at {endpoint} failed"),
    };
    Error::Config {
        reason,
        source: Some(Box::new(err)),
    }
}

/// Whether the store refuses a second create-if-absent write of one key.
async fn probe_conditional(store: &Arc<dyn ObjectStore>, root: &Path) -> Result<bool, Error> {
    let path = root.clone().join("probe").join(format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    ));
    let key = Key::Other(path.to_string());
    let create = || PutOptions::from(PutMode::Create);
    match store
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
    {
        Ok(_) => {}
        Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => {
            return Ok(false);
        }
        Err(e) => return Err(Error::store("put", key, e)),
    }
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await;
    let outcome = match second {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(true),
        Ok(_)
        | Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => Ok(false),
        Err(e) => Err(Error::store("put", key, e)),
    };
    if let Err(e) = store.delete(&path).await {
        tracing::warn!(error = %e, path = %path, "could not remove the conditional-write probe");
    }
    outcome
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
        let config = config.with_env_fallbacks();
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
        if let Some(endpoint) = &config.endpoint {
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

    /// Reads the indexes and records this handle has not merged yet.
    async fn refresh(&self) -> Result<Listing, Error> {
        let _reading = self.inner.reading.lock().await;
        for attempt in 1..=MAX_READ_ATTEMPTS {
            let last_attempt = attempt == MAX_READ_ATTEMPTS;
            let (indexes, records) =
                futures::try_join!(self.list_names("index"), self.list_names("log"))?;
            let mut raced = false;

            let wanted: Vec<String> = {
                let view = self.view();
                indexes
                    .iter()
                    .filter(|n| !view.indexes.contains(*n))
                    .cloned()
                    .collect()
            };
            let fetched: Vec<(String, Result<Bytes, Error>)> = futures::stream::iter(wanted)
                .map(|name| async move {
                    let path = self.path(&["index", &name]);
                    let got = self.get_bytes(&path, Key::Other(path.to_string())).await;
                    (name, got)
                })
                .buffer_unordered(4)
                .collect()
                .await;
            for (name, got) in fetched {
                let bytes = match got {
                    Ok(b) => b,
                    Err(e) if is_not_found(&e) => {
                        // A newer compaction merged and removed it.
                        raced = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let decoded = state::decode_index(&bytes);
                let mut view = self.view();
                match decoded {
                    Ok(index) => {
                        let Index { merged, state } = index;
                        view.covered.extend(merged);
                        view.state.join(state);
                    }
                    Err(e) => {
                        let key = self.path(&["index", &name]).to_string();
                        tracing::warn!(object = %key, reason = %e, "unreadable index");
                        view.unreadable.insert(key, e.to_string());
                    }
                }
                view.indexes.insert(name);
            }

            let wanted: Vec<String> = {
                let view = self.view();
                records
                    .iter()
                    .filter(|n| {
                        !view.applied.contains(*n)
                            && !view.covered.contains(*n)
                            && !view
                                .unreadable
                                .contains_key(&self.path(&["log", n]).to_string())
                    })
                    .cloned()
                    .collect()
            };
            let fetched: Vec<(String, Result<Bytes, Error>)> = futures::stream::iter(wanted)
                .map(|name| async move {
                    let path = self.path(&["log", &name]);
                    let got = self.get_bytes(&path, Key::Other(path.to_string())).await;
                    (name, got)
                })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
            let mut view = self.view();
            for (name, got) in fetched {
                let key = self.path(&["log", &name]).to_string();
                let bytes = match got {
                    Ok(b) => b,
                    Err(e) if is_not_found(&e) && !last_attempt => {
                        raced = true;
                        continue;
                    }
                    Err(e) if is_not_found(&e) => {
                        view.unreadable
                            .insert(key, "listed, then gone, and merged by no index".into());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let parsed = RecordName::parse(&name)
                    .ok_or_else(|| "not a record name".to_owned())
                    .and_then(|n| {
                        state::decode_record(&bytes)
                            .map(|ops| (n, ops))
                            .map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok((record, ops)) => {
                        view.state.apply(record, ops);
                        view.applied.insert(name);
                    }
                    Err(reason) => {
                        tracing::warn!(object = %key, reason = %reason, "unreadable record");
                        view.unreadable.insert(key, reason);
                    }
                }
            }
            if !raced {
                view.loaded = true;
                view.uncompacted = records
                    .iter()
                    .filter(|n| !view.covered.contains(*n) && view.applied.contains(*n))
                    .count();
                return Ok(Listing { indexes, records });
            }
        }
        Err(Error::Unsettled {
            prefix: self.inner.root.to_string(),
            attempts: MAX_READ_ATTEMPTS,
        })
    }

    async fn ensure_loaded(&self) -> Result<(), Error> {
        if !self.view().loaded {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Whether `id` exists, reading the log again if this handle does not
    /// know it yet.
    async fn known(&self, id: &ImageId) -> Result<bool, Error> {
        self.ensure_loaded().await?;
        if self.view().state.exists(id) {
            return Ok(true);
        }
        self.refresh().await?;
        Ok(self.view().state.exists(id))
    }

    /// Merges every record and index into a new index, then removes what it
    /// merged.
    ///
    /// Runs by itself once enough records have piled up; call it to compact
    /// at a moment of your choosing. A record written while compaction runs
    /// is not merged and not removed.
    ///
    /// # Errors
    /// Backend errors from reading the log or writing the index; records and
    /// indexes that could not be removed are left for the next compaction.
    pub async fn compact(&self) -> imagecache_core::Result<CompactionReport> {
        let lease = self.path(&["lease", "compaction"]);
        if self.inner.conditional && !self.take_lease(&lease).await? {
            return Ok(CompactionReport::default());
        }
        let result = self.compact_inner().await;
        if self.inner.conditional
            && let Err(e) = self.inner.store.delete(&lease).await
        {
            tracing::warn!(error = %e, "could not release the compaction lease");
        }
        Ok(result?)
    }

    async fn take_lease(&self, lease: &Path) -> Result<bool, Error> {
        let key = Key::Other(lease.to_string());
        for _ in 0..2 {
            let body = PutPayload::from(self.next_name().to_string());
            match self
                .inner
                .store
                .put_opts(lease, body, PutOptions::from(PutMode::Create))
                .await
            {
                Ok(_) => return Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(e) => return Err(Error::store("put", key, e)),
            }
            let meta = match self.inner.store.head(lease).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::store("head", key, e)),
            };
            let age = SystemTime::now()
                .duration_since(SystemTime::from(meta.last_modified))
                .unwrap_or_default();
            if age < LEASE_TTL {
                tracing::debug!(backend = %self, "compaction skipped: another handle holds the lease");
                return Ok(false);
            }
            tracing::warn!(backend = %self, "taking over an abandoned compaction lease");
            if let Err(e) = self.inner.store.delete(lease).await {
                return Err(Error::store("delete", key, e));
            }
        }
        Ok(false)
    }

    async fn compact_inner(&self) -> Result<CompactionReport, Error> {
        let listing = self.refresh().await?;
        let horizon = now_nanos().saturating_sub(
            u64::try_from(self.inner.tuning.tombstone_horizon.as_nanos()).unwrap_or(u64::MAX),
        );
        let (index, old_indexes) = {
            let view = self.view();
            let merged: Vec<String> = listing
                .records
                .iter()
                .filter(|n| view.applied.contains(*n) || view.covered.contains(*n))
                .cloned()
                .collect();
            let old_indexes: Vec<String> = listing
                .indexes
                .iter()
                .filter(|n| {
                    view.indexes.contains(*n)
                        && !view
                            .unreadable
                            .contains_key(&self.path(&["index", n]).to_string())
                })
                .cloned()
                .collect();
            if merged.is_empty() && old_indexes.len() <= 1 {
                return Ok(CompactionReport::default());
            }
            let index = Index {
                merged,
                state: view.state.compacted(horizon),
            };
            (index, old_indexes)
        };
        let name = self.next_name().to_string();
        let path = self.path(&["index", &name]);
        let body = state::encode_index(&index);
        self.inner
            .store
            .put_opts(&path, PutPayload::from(body), self.create_mode())
            .await
            .map_err(|e| Error::store("put", Key::Other(path.to_string()), e))?;
        {
            let mut view = self.view();
            view.indexes.insert(name);
            view.covered.extend(index.merged.iter().cloned());
            view.uncompacted = view.uncompacted.saturating_sub(index.merged.len());
        }

        // Only now, with the new index stored, may what it merged go.
        let doomed: Vec<Path> = old_indexes
            .iter()
            .map(|n| self.path(&["index", n]))
            .chain(index.merged.iter().map(|n| self.path(&["log", n])))
            .collect();
        let doomed_stream = futures::stream::iter(doomed.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.store.delete_stream(doomed_stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "compaction could not remove a merged object"),
            }
        }
        let report = CompactionReport {
            ran: true,
            merged_records: index.merged.len(),
            merged_indexes: old_indexes.len(),
            images: index.state.len(),
        };
        tracing::debug!(backend = %self, ?report, "compacted");
        Ok(report)
    }

    /// Removes the config objects of images that no longer exist and that
    /// were last written more than `min_age` ago; returns how many it
    /// removed.
    ///
    /// A writer on another machine that re-creates one of those images
    /// between this call's listing and its delete would lose the config
    /// (its next load reports the image as quarantined with the missing
    /// object's key). Choose `min_age` well above the time a batch takes,
    /// and run this where such re-creates are unlikely.
    ///
    /// # Errors
    /// Backend errors from listing or reading the log.
    pub async fn collect_garbage(&self, min_age: Duration) -> imagecache_core::Result<usize> {
        self.refresh().await?;
        let dir = self.path(&["content", "sha256"]);
        let objects: Vec<object_store::ObjectMeta> = self
            .inner
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", Key::Other(dir.to_string()), e))?;
        let cutoff = SystemTime::now() - min_age;
        let doomed: Vec<Path> = {
            let view = self.view();
            objects
                .into_iter()
                .filter(|meta| SystemTime::from(meta.last_modified) < cutoff)
                .filter(|meta| {
                    let id = meta
                        .location
                        .filename()
                        .and_then(|hex| ImageId::parse(&format!("sha256:{hex}")).ok());
                    id.is_some_and(|id| !view.state.exists(&id))
                })
                .map(|meta| meta.location)
                .collect()
        };
        let count = doomed.len();
        let stream = futures::stream::iter(doomed.into_iter().map(Ok)).boxed();
        let mut deleted = self.inner.store.delete_stream(stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("delete", Key::Other(dir.to_string()), e).into()),
            }
        }
        Ok(count)
    }

    /// Deletes every object under this backend's prefix — configs, log
    /// records, indexes, blobs and notes — and returns how many there were.
    ///
    /// Meant for throwaway prefixes such as a test run's; any handle on the
    /// prefix sees an empty store afterwards. A backend without a prefix
    /// refuses, so that a whole bucket is never emptied by mistake.
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] when the prefix is empty; backend
    /// errors from listing or deleting.
    pub async fn delete_prefix(&self) -> imagecache_core::Result<usize> {
        let root = &self.inner.root;
        if root.as_ref().is_empty() {
            return Err(Error::Config {
                reason: format!(
                    "refusing to delete every object of {}: the backend has no prefix",
                    self.inner.label
                ),
                source: None,
            }
            .into());
        }
        let key = Key::Other(root.to_string());
        Ok(self.delete_under(root, "delete", key).await?)
    }

    /// Deletes every object under `prefix`, skipping any already gone, and
    /// returns how many it deleted; a failure is reported as `op` on `key`.
    async fn delete_under(
        &self,
        prefix: &Path,
        op: &'static str,
        key: Key,
    ) -> Result<usize, Error> {
        let listed = self
            .inner
            .store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.inner.store.delete_stream(listed);
        let mut count = 0;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(op, key, e)),
            }
        }
        Ok(count)
    }

    /// Checks a batch against the merged state with the contract's rule
    /// ([`validate_batch`]). Returns the first image that does not exist
    /// when an operation needs it, since another handle may have created
    /// it meanwhile.
    fn check_batch(state: &State, ops: &[WriteOp]) -> Option<ImageId> {
        match validate_batch(ops, |id| Ok(state.exists(id))) {
            Ok(()) => None,
            Err(imagecache_core::Error::NotFound {
                key: Key::Image(id),
            }) => Some(id),
            // `exists` never fails, so nothing else is returned.
            Err(_) => None,
        }
    }

    async fn write_record(&self, ops: &[RecordOp]) -> Result<RecordName, Error> {
        let body = state::encode_record(ops);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let name = self.next_name();
            let path = self.path(&["log", &name.to_string()]);
            match self
                .inner
                .store
                .put_opts(&path, PutPayload::from(body.clone()), self.create_mode())
                .await
            {
                Ok(_) => return Ok(name),
                // A name taken by another writer (astronomically unlikely):
                // pick another.
                Err(object_store::Error::AlreadyExists { .. }) if attempt < 3 => {}
                Err(e) => return Err(Error::store("put", Key::Other(path.to_string()), e)),
            }
        }
    }

    async fn maybe_compact(&self) {
        let due = self.view().uncompacted >= self.inner.tuning.compact_after;
        if due && let Err(e) = self.compact().await {
            tracing::warn!(backend = %self, error = %e, "compaction failed; it will be retried later");
        }
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

#[async_trait]
impl StoreBackend for S3Backend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_persistent(true)
            .with_shared(true)
            .with_atomic_batch(true)
            .with_conditional_writes(self.inner.conditional)
    }

    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_loaded().await?;
        let missing = Self::check_batch(&self.view().state, batch.ops());
        if missing.is_some() {
            // Another handle may have created the image since this one last
            // read the log.
            self.refresh().await?;
            if let Some(id) = Self::check_batch(&self.view().state, batch.ops()) {
                return Err(imagecache_core::Error::NotFound {
                    key: Key::Image(id),
                });
            }
        }

        let mut contents: BTreeMap<ImageId, Bytes> = BTreeMap::new();
        let mut quarantines: Vec<ImageId> = Vec::new();
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(content) => {
                    let id = content.id();
                    contents.insert(id, content.into_data());
                    ops.push(RecordOp::Put(id));
                }
                WriteOp::SetMetadata { id, key, value } => {
                    ops.push(RecordOp::SetMetadata(id, key, value));
                }
                WriteOp::DeleteMetadata { id, key } => ops.push(RecordOp::DeleteMetadata(id, key)),
                WriteOp::SetSummary { id, summary } => ops.push(RecordOp::SetSummary(id, summary)),
                WriteOp::Delete { id } => ops.push(RecordOp::Delete(id)),
                WriteOp::Quarantine { id, reason } => {
                    quarantines.push(id);
                    ops.push(RecordOp::Quarantine(id, reason));
                }
                // check_batch refused every other operation.
                _ => {}
            }
        }

        // Configs first: a record may only name content that is stored.
        // Content is always overwritten (never put-if-absent), which heals a
        // damaged object and refreshes its age for collect_garbage.
        futures::stream::iter(contents)
            .map(|(id, data)| async move {
                let path = self.content_path(&id);
                self.inner
                    .store
                    .put(&path, PutPayload::from(data))
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::store("put", Key::Image(id), e))
            })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        for id in quarantines {
            let from = self.content_path(&id);
            let to = self.path(&["quarantine", "sha256", &id.hex()]);
            match self.inner.store.copy(&from, &to).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("copy", Key::Image(id), e).into()),
            }
        }

        let name = self.write_record(&ops).await?;
        {
            let mut view = self.view();
            view.state.apply(name, ops);
            view.applied.insert(name.to_string());
            view.uncompacted += 1;
        }
        self.maybe_compact().await;
        Ok(())
    }

    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        if !self.known(id).await? {
            return Err(imagecache_core::Error::NotFound {
                key: Key::Image(*id),
            });
        }
        let data = self
            .get_bytes(&self.content_path(id), Key::Image(*id))
            .await?;
        Content::verify(*id, data).map(Content::into_data)
    }

    async fn get_metadata(
        &self,
        id: &ImageId,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        if !self.known(id).await? {
            return Err(imagecache_core::Error::NotFound {
                key: Key::Image(*id),
            });
        }
        let view = self.view();
        view.state
            .image(id)
            .and_then(|image| image.metadata(key))
            .cloned()
            .ok_or_else(|| imagecache_core::Error::NotFound {
                key: Key::Metadata {
                    id: *id,
                    key: key.clone(),
                },
            })
    }

    async fn load(&self) -> imagecache_core::Result<Snapshot> {
        self.refresh().await?;
        // Listed after the log: a config is stored before the record that
        // names it, so every image in the records read has its config listed
        // unless the object is really gone.
        let dir = self.path(&["content", "sha256"]);
        let present: HashSet<String> = self
            .inner
            .store
            .list(Some(&dir))
            .map_err(|e| Error::store("list", Key::Other(dir.to_string()), e))
            .try_filter_map(|meta| async move { Ok(meta.location.filename().map(str::to_owned)) })
            .try_collect()
            .await?;
        let snapshot = {
            let view = self.view();
            let mut images = Vec::new();
            let mut quarantined: Vec<Quarantined> = view
                .state
                .quarantined()
                .map(|(id, reason)| Quarantined {
                    name: id.to_string(),
                    reason: reason.to_owned(),
                })
                .collect();
            for entry in view.state.entries() {
                if present.contains(&entry.id.hex()) {
                    images.push(entry);
                } else {
                    quarantined.push(Quarantined {
                        name: entry.id.to_string(),
                        reason: format!(
                            "config object {} is missing",
                            self.content_path(&entry.id)
                        ),
                    });
                }
            }
            quarantined.extend(view.unreadable.iter().map(|(name, reason)| Quarantined {
                name: name.clone(),
                reason: reason.clone(),
            }));
            quarantined.sort_by(|a, b| a.name.cmp(&b.name));
            Snapshot {
                images,
                quarantined,
            }
        };
        self.maybe_compact().await;
        Ok(snapshot)
    }
}

#[async_trait]
impl BlobBackend for S3Backend {
    async fn put_blob(
        &self,
        digest: &Digest,
        body: ByteStream,
    ) -> imagecache_core::Result<BlobInfo> {
        let path = self.blob_path(digest);
        let key = Key::Blob(*digest);
        // An existing blob has the same bytes (the digest says so); keep it.
        match self.inner.store.head(&path).await {
            Ok(meta) => {
                return Ok(BlobInfo {
                    digest: *digest,
                    size: meta.size,
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store("head", key, e).into()),
        }
        let size = blob::put(
            &self.inner.store,
            &path,
            &key,
            body,
            self.inner.tuning.multipart_threshold,
            self.inner.tuning.part_size,
        )
        .await?;
        Ok(BlobInfo {
            digest: *digest,
            size,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobReader> {
        let key = Key::Blob(*digest);
        let result = self
            .inner
            .store
            .get(&self.blob_path(digest))
            .await
            .map_err(|e| Error::store("get", key.clone(), e))?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(move |e| Error::store("read", key.clone(), e).into())
            .boxed();
        Ok(BlobReader { size, stream })
    }

    async fn head_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobInfo> {
        let meta = self
            .inner
            .store
            .head(&self.blob_path(digest))
            .await
            .map_err(|e| Error::store("head", Key::Blob(*digest), e))?;
        Ok(BlobInfo {
            digest: *digest,
            size: meta.size,
        })
    }

    async fn delete_blob(&self, digest: &Digest) -> imagecache_core::Result<()> {
        let key = Key::Blob(*digest);
        match self.inner.store.delete(&self.blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store("delete", key, e).into()),
        }
        let notes = self.path(&["blobnotes", digest.algorithm().as_str(), &digest.hex()]);
        self.delete_under(&notes, "delete notes of", key).await?;
        Ok(())
    }

    async fn list_blobs(&self) -> imagecache_core::Result<Vec<BlobInfo>> {
        let dir = self.path(&["blobs"]);
        let objects: Vec<object_store::ObjectMeta> = self
            .inner
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", Key::Other(dir.to_string()), e))?;
        let mut blobs: Vec<BlobInfo> = objects
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<String> = meta
                    .location
                    .prefix_match(&dir)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                let [alg, hex] = parts.as_slice() else {
                    return None;
                };
                match Digest::parse(&format!("{alg}:{hex}")) {
                    Ok(digest) => Some(BlobInfo {
                        digest,
                        size: meta.size,
                    }),
                    Err(e) => {
                        tracing::warn!(object = %meta.location, error = %e, "ignoring a stray object under blobs/");
                        None
                    }
                }
            })
            .collect();
        blobs.sort();
        Ok(blobs)
    }

    async fn set_blob_notes(
        &self,
        digest: &Digest,
        notes: BlobNotes,
    ) -> imagecache_core::Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        self.head_blob(digest).await?;
        // One object per note, all written at once: a note is one small
        // PUT, and the round trips overlap instead of adding up.
        let puts = normalize_notes(notes).into_iter().map(|(key, value)| {
            let path = self.note_path(digest, &key);
            async move {
                self.inner
                    .store
                    .put(&path, PutPayload::from(value))
                    .await
                    .map_err(|e| {
                        Error::store(
                            "put",
                            Key::BlobNote {
                                digest: *digest,
                                key,
                            },
                            e,
                        )
                    })
            }
        });
        futures::future::try_join_all(puts).await?;
        Ok(())
    }

    async fn blob_notes(&self, digest: &Digest) -> imagecache_core::Result<BlobNotes> {
        let dir = self.path(&["blobnotes", digest.algorithm().as_str(), &digest.hex()]);
        let objects: Vec<object_store::ObjectMeta> = self
            .inner
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", Key::Blob(*digest), e))?;
        let reads = objects.into_iter().filter_map(|meta| {
            let key = {
                let mut parts = meta.location.prefix_match(&dir)?;
                let key = MetadataKey::new(parts.next()?.as_ref()).ok()?;
                if parts.next().is_some() {
                    return None;
                }
                key
            };
            let note_key = Key::BlobNote {
                digest: *digest,
                key: key.clone(),
            };
            Some(async move {
                match self.get_bytes(&meta.location, note_key).await {
                    Ok(value) => Ok(Some((key, value))),
                    // Deleted between the listing and the read.
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        });
        let mut notes: BlobNotes = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        notes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(notes)
    }

    async fn get_blob_note(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        let note_key = Key::BlobNote {
            digest: *digest,
            key: key.clone(),
        };
        Ok(self
            .get_bytes(&self.note_path(digest, key), note_key)
            .await?)
    }
}
