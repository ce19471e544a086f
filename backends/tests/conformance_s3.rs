//! The whole conformance suite over the S3 backend, three times:
//!
//! * over object_store's `InMemory`, always (offline);
//! * against the Garage server named by `IMAGECACHE_TEST_S3_URL` (no
//!   conditional writes);
//! * against the moto server named by `IMAGECACHE_TEST_S3_CONDITIONAL_URL`
//!   (conditional writes honoured).
//!
//! `scripts/test.sh` starts both servers and sets the variables. Without
//! them the server runs print `skipped: … (… not set)`, unless
//! `IMAGECACHE_REQUIRE_S3=1`, which makes a missing server a failure.
//! Every case gets a fresh random prefix; nothing else in the bucket is
//! touched, and each prefix is deleted when the harness is dropped.
// Test support code fails the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![cfg(feature = "s3")]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_backends::s3::{S3Backend, S3Config};
use imagecache_conformance::Harness;
use imagecache_core::{Digest, ImageId, StoreBackend};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

enum Target {
    Memory(Arc<dyn ObjectStore>),
    Url(String),
}

struct S3Harness {
    target: Target,
    /// Every handle made, with its backend, so hooks can reach its objects.
    handles: Mutex<Vec<(Arc<dyn StoreBackend>, S3Backend)>>,
    runtime: tokio::runtime::Handle,
}

fn random_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let salt = ImageId::of_config(format!("{nanos}-{:?}", std::thread::current().id()).as_bytes());
    format!("conformance-{}", &salt.hex()[..16])
}

impl S3Harness {
    fn new(target: Target) -> Self {
        Self {
            target,
            handles: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn from_env(var: &str) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Ok(Self::new(Target::Url(url))),
            _ if std::env::var("IMAGECACHE_REQUIRE_S3").as_deref() == Ok("1") => {
                panic!("{var} is not set but IMAGECACHE_REQUIRE_S3=1")
            }
            _ => Err(format!("{var} not set")),
        }
    }

    async fn open(&self, prefix: &str) -> S3Backend {
        match &self.target {
            Target::Memory(store) => S3Backend::with_store(store.clone(), prefix)
                .await
                .expect("in-memory S3 backend"),
            Target::Url(url) => {
                let config = S3Config::from_url(url).expect("test URL");
                let base = config.prefix().trim_matches('/').to_owned();
                let full = if base.is_empty() {
                    prefix.to_owned()
                } else {
                    format!("{base}/{prefix}")
                };
                let url = with_prefix(url, &full);
                S3Backend::open(S3Config::from_url(&url).expect("prefixed URL"))
                    .await
                    .expect("open S3 backend")
            }
        }
    }

    fn remember(&self, backend: S3Backend) -> Arc<dyn StoreBackend> {
        let dynamic: Arc<dyn StoreBackend> = Arc::new(backend.clone());
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((dynamic.clone(), backend));
        dynamic
    }

    fn concrete(&self, backend: &Arc<dyn StoreBackend>) -> Option<S3Backend> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(d, _)| Arc::ptr_eq(d, backend))
            .map(|(_, b)| b.clone())
    }

    async fn overwrite(
        &self,
        backend: &Arc<dyn StoreBackend>,
        parts: &[&str],
        data: Bytes,
    ) -> bool {
        let Some(b) = self.concrete(backend) else {
            return false;
        };
        let (store, root) = b.object_store();
        let mut path = root.clone();
        for p in parts {
            path = path.join(*p);
        }
        store.put(&path, PutPayload::from(data)).await.is_ok()
    }
}

/// `url` with its path (the prefix) replaced by `prefix`.
fn with_prefix(url: &str, prefix: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let rest = base.strip_prefix("s3://").expect("an s3:// URL");
    let bucket = rest.split('/').next().expect("a bucket");
    if query.is_empty() {
        format!("s3://{bucket}/{prefix}")
    } else {
        format!("s3://{bucket}/{prefix}?{query}")
    }
}

impl Drop for S3Harness {
    fn drop(&mut self) {
        // Remove every prefix this harness used; only ours, never the bucket.
        let handles: Vec<S3Backend> = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|(_, b)| b)
            .collect();
        let runtime = self.runtime.clone();
        let cleanup = move || {
            runtime.block_on(async {
                for b in handles {
                    let _ = b.delete_prefix().await;
                }
            })
        };
        // The harness is dropped on a runtime worker; hand that worker's
        // duties to another thread while this one waits for the deletes.
        tokio::task::block_in_place(cleanup);
    }
}

#[async_trait::async_trait]
impl Harness for S3Harness {
    async fn backend(&self) -> Arc<dyn StoreBackend> {
        let backend = self.open(&random_prefix()).await;
        self.remember(backend)
    }

    async fn reopen(&self, backend: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
        let b = self.concrete(backend)?;
        let (_, root) = b.object_store();
        let prefix = root.as_ref().rsplit('/').next()?.to_owned();
        let again = self.open(&prefix).await;
        Some(self.remember(again))
    }

    async fn corrupt_content(
        &self,
        backend: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool {
        self.overwrite(backend, &["content", "sha256", &id.hex()], data)
            .await
    }

    async fn corrupt_blob(
        &self,
        backend: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool {
        self.overwrite(
            backend,
            &["blobs", digest.algorithm().as_str(), &digest.hex()],
            data,
        )
        .await
    }
}

mod in_memory {
    use super::*;

    imagecache_conformance::backend_tests!(S3Harness::new(Target::Memory(Arc::new(
        object_store::memory::InMemory::new()
    ))));
}

mod garage {
    use super::*;

    imagecache_conformance::backend_tests!(S3Harness::from_env("IMAGECACHE_TEST_S3_URL"));
}

mod moto {
    use super::*;

    imagecache_conformance::backend_tests!(S3Harness::from_env(
        "IMAGECACHE_TEST_S3_CONDITIONAL_URL"
    ));
}
