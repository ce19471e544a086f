//! The conformance harness of the S3 backend (features `s3` and `testing`).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_conformance::{Damage, Fixture, Harness, HookError, HookResult};
use imagecache_core::{BlobBackend, Digest, ImageId, MetadataKey, StoreBackend};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{S3Backend, S3Config};

/// Where an [`S3Harness`] makes its prefixes.
#[derive(Debug)]
enum Target {
    /// Any object store, such as object_store's `InMemory`.
    Store(Arc<dyn ObjectStore>),
    /// A bucket and prefix reached over the network.
    Config(Box<S3Config>),
}

/// Hands the conformance suite fresh S3 stores: one prefix each, below a
/// run prefix that is random per harness, so runs against a shared bucket
/// never meet each other or anyone's data.
///
/// A second handle is a new [`S3Backend`] on the same prefix, as another
/// machine would open it. The damage hooks overwrite objects directly.
/// [`S3Harness::clean_up`] deletes every object under the run prefix;
/// nothing else in the bucket is touched.
///
/// ```no_run
/// # async fn run() -> imagecache_core::Result<()> {
/// use imagecache_backends::s3::S3Harness;
/// let harness = S3Harness::from_url("s3://bucket/prefix?endpoint=http://127.0.0.1:3900")?;
/// let report = imagecache_conformance::run_all(std::sync::Arc::new(harness), None).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct S3Harness {
    target: Target,
    /// The run prefix below which every fixture gets `<n>`.
    run: String,
    next: std::sync::atomic::AtomicUsize,
    /// Whether anything was written under the run prefix yet.
    used: Mutex<bool>,
    /// Whether the run prefix is this harness's to delete when it goes.
    owns_run: bool,
}

/// A random name for one run, unique across processes and machines in
/// practice.
fn run_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let salt = ImageId::of_config(
        format!(
            "{nanos}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .as_bytes(),
    );
    format!("imagecache-conformance-{}", &salt.hex()[..16])
}

impl S3Harness {
    /// A harness over any object store (for example
    /// `object_store::memory::InMemory`), with prefixes at its root.
    pub fn with_store(store: Arc<dyn ObjectStore>) -> Self {
        Self::new(Target::Store(store), run_name())
    }

    /// A harness over object_store's `InMemory`, for offline tests.
    pub fn in_memory() -> Self {
        Self::with_store(Arc::new(object_store::memory::InMemory::new()))
    }

    /// A harness whose prefixes live below the prefix of `config`.
    pub fn with_config(config: S3Config) -> Self {
        let run = match config.prefix.trim_matches('/') {
            "" => run_name(),
            base => format!("{base}/{}", run_name()),
        };
        Self::new(Target::Config(Box::new(config)), run)
    }

    /// A harness whose prefixes are `<prefix of config>/0`, `/1`, …;
    /// the caller picks a prefix nobody else uses and deletes it afterwards
    /// (for example with [`S3Harness::clean_up`]).
    pub fn under(config: S3Config) -> Self {
        let run = config.prefix.trim_matches('/').to_owned();
        let mut harness = Self::new(Target::Config(Box::new(config)), run);
        harness.owns_run = false;
        harness
    }

    /// A harness for an `s3://BUCKET/PREFIX?…` URL; see
    /// [`S3Config::from_url`].
    ///
    /// # Errors
    /// As [`S3Config::from_url`].
    pub fn from_url(url: &str) -> imagecache_core::Result<Self> {
        Ok(Self::with_config(S3Config::from_url(url)?))
    }

    fn new(target: Target, run: String) -> Self {
        Self {
            target,
            run,
            next: std::sync::atomic::AtomicUsize::new(0),
            used: Mutex::new(false),
            owns_run: true,
        }
    }

    /// The prefix below which every fixture of this harness lives.
    pub fn run_prefix(&self) -> &str {
        &self.run
    }

    async fn open(&self, prefix: &str) -> imagecache_core::Result<S3Backend> {
        match &self.target {
            Target::Store(store) => S3Backend::with_store(Arc::clone(store), prefix).await,
            Target::Config(config) => {
                let mut config = S3Config::clone(config);
                config.prefix = prefix.to_owned();
                S3Backend::open(config).await
            }
        }
    }

    /// Deletes every object under the run prefix; returns how many there
    /// were.
    ///
    /// # Errors
    /// Storage failures while listing or deleting.
    pub async fn clean_up(&self) -> imagecache_core::Result<usize> {
        let used = std::mem::replace(
            &mut *self
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            false,
        );
        if !used {
            return Ok(0);
        }
        self.open(&self.run).await?.delete_prefix().await
    }
}

impl Drop for S3Harness {
    fn drop(&mut self) {
        let used = *self
            .used
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !used || !self.owns_run || matches!(self.target, Target::Store(_)) {
            return;
        }
        // Drop cannot await, and may run on a runtime worker: delete from a
        // thread of its own with a runtime of its own, and wait for it.
        let Target::Config(config) = &self.target else {
            return;
        };
        let mut config = S3Config::clone(config);
        config.prefix = self.run.clone();
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let backend = S3Backend::open(config).await.ok()?;
                backend.delete_prefix().await.ok()
            })
        });
        if cleaner.join().ok().flatten().is_none() {
            tracing::warn!(prefix = %self.run, "could not delete a conformance run's objects");
        }
    }
}

#[async_trait::async_trait]
impl Harness for S3Harness {
    async fn fixture(&self) -> Box<dyn Fixture> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("{}/{n}", self.run);
        *self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        match self.open(&prefix).await {
            Ok(backend) => Box::new(S3Fixture {
                backend,
                reopen: Reopen {
                    target: match &self.target {
                        Target::Store(store) => Target::Store(Arc::clone(store)),
                        Target::Config(config) => {
                            let mut config = config.clone();
                            config.prefix = prefix.clone();
                            Target::Config(config)
                        }
                    },
                    prefix,
                },
            }),
            Err(e) => panic!("cannot open an S3 store under {prefix}: {e}"),
        }
    }
}

/// How to open a fixture's prefix again.
#[derive(Debug)]
struct Reopen {
    target: Target,
    prefix: String,
}

/// One prefix of an [`S3Harness`].
#[derive(Debug)]
struct S3Fixture {
    backend: S3Backend,
    reopen: Reopen,
}

impl S3Fixture {
    async fn overwrite(&self, hook: &'static str, path: Path, data: Bytes) -> HookResult {
        let (store, _) = self.backend.object_store();
        store
            .put(&path, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| HookError::failed(hook, e))
    }
}

#[async_trait::async_trait]
impl Fixture for S3Fixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        let backend = match &self.reopen.target {
            Target::Store(store) => {
                S3Backend::with_store(Arc::clone(store), &self.reopen.prefix).await
            }
            Target::Config(config) => S3Backend::open(S3Config::clone(config)).await,
        };
        match backend {
            Ok(backend) => Some(Box::new(Self {
                backend,
                reopen: Reopen {
                    target: match &self.reopen.target {
                        Target::Store(store) => Target::Store(Arc::clone(store)),
                        Target::Config(config) => Target::Config(config.clone()),
                    },
                    prefix: self.reopen.prefix.clone(),
                },
            })),
            Err(e) => panic!(
                "cannot reopen the S3 store under {}: {e}",
                self.reopen.prefix
            ),
        }
    }

    fn damage(&self) -> Damage {
        Damage::all()
    }

    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        self.overwrite("corrupt_config", self.backend.content_path(id), data)
            .await
    }

    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        self.overwrite("corrupt_blob", self.backend.blob_path(digest), data)
            .await
    }

    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        self.overwrite("corrupt_note", self.backend.note_path(digest, key), data)
            .await
    }
}
