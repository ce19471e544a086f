//! The whole conformance suite over the Docker-compatible `fs` backend.
//!
//! Every case gets its own temporary directory. A second handle is a new
//! `FsBackend` opened on the same directory, as a second process would;
//! damage is done by overwriting files in Docker's layout directly.
// Test support code fails the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![cfg(feature = "fs")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_conformance::Harness;
use imagecache_core::{Digest, ImageId, StoreBackend};

/// A case's directory and every handle opened on it.
type CaseDir = (tempfile::TempDir, Vec<Arc<dyn StoreBackend>>);

/// Keeps every case's directory alive until the harness is dropped, and
/// remembers which directory each backend handle was opened on.
#[derive(Default)]
struct FsHarness {
    dirs: Mutex<Vec<CaseDir>>,
}

impl FsHarness {
    fn root_of(&self, backend: &Arc<dyn StoreBackend>) -> Option<PathBuf> {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, handles)| handles.iter().any(|h| Arc::ptr_eq(h, backend)))
            .map(|(dir, _)| dir.path().to_path_buf())
    }

    fn overwrite(path: PathBuf, data: &[u8]) -> bool {
        std::fs::write(path, data).is_ok()
    }
}

#[async_trait::async_trait]
impl Harness for FsHarness {
    async fn backend(&self) -> Arc<dyn StoreBackend> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend: Arc<dyn StoreBackend> =
            Arc::new(FsBackend::open(dir.path()).await.expect("open fs backend"));
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((dir, vec![backend.clone()]));
        backend
    }

    async fn reopen(&self, backend: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
        let root = self.root_of(backend)?;
        let again: Arc<dyn StoreBackend> = Arc::new(FsBackend::open(&root).await.ok()?);
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let entry = dirs.iter_mut().find(|(d, _)| d.path() == root)?;
        entry.1.push(again.clone());
        Some(again)
    }

    async fn corrupt_content(
        &self,
        backend: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool {
        self.root_of(backend)
            .is_some_and(|root| Self::overwrite(root.join("content/sha256").join(id.hex()), &data))
    }

    async fn corrupt_blob(
        &self,
        backend: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool {
        self.root_of(backend).is_some_and(|root| {
            Self::overwrite(
                root.join("imagecache/blobs")
                    .join(digest.algorithm().as_str())
                    .join(digest.hex()),
                &data,
            )
        })
    }
}

imagecache_conformance::backend_tests!(FsHarness::default());
