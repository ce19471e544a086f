//! The conformance harness of the `redb` backend (feature `testing`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_conformance::{Damage, Fixture, Harness, HookError, HookResult};
use imagecache_core::{BlobBackend, Digest, ImageId, MetadataKey, StoreBackend};

use super::RedbBackend;
use crate::testing::Namespaces;

/// Hands the conformance suite fresh redb stores: one database file each,
/// in a temporary directory or below a directory of the caller's.
///
/// redb lets one process open a file once, so a second handle in this
/// process is a clone sharing the open database (a second process is
/// refused). The damage hooks write the database's tables directly,
/// without any check.
///
/// ```no_run
/// // In a test file of a crate that depends on imagecache-backends with
/// // the `redb` and `testing` features:
/// imagecache_conformance::backend_tests!(imagecache_backends::redb::RedbHarness::temporary());
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct RedbHarness {
    namespaces: Namespaces,
}

impl RedbHarness {
    /// A harness whose databases live in temporary directories, removed
    /// when the harness is dropped.
    pub fn temporary() -> Self {
        Self {
            namespaces: Namespaces::temporary(),
        }
    }

    /// A harness whose databases are `<dir>/0/store.redb`, `<dir>/1/…`;
    /// removing `dir` afterwards is the caller's.
    pub fn under(dir: impl Into<PathBuf>) -> Self {
        Self {
            namespaces: Namespaces::under(dir),
        }
    }
}

#[async_trait::async_trait]
impl Harness for RedbHarness {
    async fn fixture(&self) -> Box<dyn Fixture> {
        let file = self.namespaces.fresh().join("store.redb");
        match RedbBackend::open(file.clone()).await {
            Ok(backend) => Box::new(RedbFixture { backend }),
            Err(e) => panic!("cannot open a redb store at {}: {e}", file.display()),
        }
    }
}

/// One database of a [`RedbHarness`].
#[derive(Debug, Clone)]
struct RedbFixture {
    backend: RedbBackend,
}

fn failed(hook: &'static str) -> impl FnOnce(imagecache_core::Error) -> HookError {
    move |e| HookError::failed(hook, e)
}

#[async_trait::async_trait]
impl Fixture for RedbFixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        Some(Box::new(self.clone()))
    }

    fn damage(&self) -> Damage {
        Damage::all()
    }

    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        self.backend
            .insert_raw_content(*id, data)
            .await
            .map_err(failed("corrupt_config"))
    }

    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        self.backend
            .insert_raw_blob(*digest, data)
            .await
            .map_err(failed("corrupt_blob"))
    }

    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        self.backend
            .insert_raw_note(*digest, key.clone(), data)
            .await
            .map_err(failed("corrupt_note"))
    }
}
