//! The conformance harness of the `fs` backend (feature `testing`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_conformance::{Damage, Fixture, Harness, HookResult};
use imagecache_core::{BlobBackend, Digest, ImageId, MetadataKey, StoreBackend};

use super::FsBackend;
use crate::testing::{Namespaces, overwrite};

/// Hands the conformance suite fresh `fs` stores: one directory each,
/// temporary or below a directory of the caller's.
///
/// A second handle is a new [`FsBackend`] on the same directory, as a second
/// process would open it. The damage hooks write files of the layout
/// directly: configs, blobs and notes.
///
/// ```no_run
/// // In a test file of a crate that depends on imagecache-backends with
/// // the `fs` and `testing` features:
/// imagecache_conformance::backend_tests!(imagecache_backends::fs::FsHarness::temporary());
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct FsHarness {
    namespaces: Namespaces,
}

impl FsHarness {
    /// A harness whose stores live in temporary directories, removed when
    /// the harness is dropped.
    pub fn temporary() -> Self {
        Self {
            namespaces: Namespaces::temporary(),
        }
    }

    /// A harness whose stores are `<dir>/0`, `<dir>/1`, …; removing `dir`
    /// afterwards is the caller's.
    pub fn under(dir: impl Into<PathBuf>) -> Self {
        Self {
            namespaces: Namespaces::under(dir),
        }
    }
}

#[async_trait::async_trait]
impl Harness for FsHarness {
    async fn fixture(&self) -> Box<dyn Fixture> {
        let root = self.namespaces.fresh();
        Box::new(FsFixture::open(root).await)
    }
}

/// One `fs` store of an [`FsHarness`].
#[derive(Debug)]
struct FsFixture {
    root: PathBuf,
    backend: FsBackend,
}

impl FsFixture {
    async fn open(root: PathBuf) -> Self {
        match FsBackend::open(root.clone()).await {
            Ok(backend) => Self { root, backend },
            Err(e) => panic!("cannot open an fs store at {}: {e}", root.display()),
        }
    }
}

#[async_trait::async_trait]
impl Fixture for FsFixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.backend.clone()))
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        Some(Box::new(Self::open(self.root.clone()).await))
    }

    fn damage(&self) -> Damage {
        Damage::all()
    }

    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        let path = self.backend.inner.layout.content_path(id);
        overwrite("corrupt_config", &path, data, true).await
    }

    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        let path = self.backend.inner.layout.blob_path(digest);
        overwrite("corrupt_blob", &path, data, true).await
    }

    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        let path = self
            .backend
            .inner
            .layout
            .notes_dir(digest)
            .join(key.as_str());
        overwrite("corrupt_note", &path, data, false).await
    }
}
