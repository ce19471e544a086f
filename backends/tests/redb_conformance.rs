//! The whole conformance suite over the redb backend.
//!
//! Every case gets its own database file in a temporary directory. redb
//! locks the file to one open handle, so a second handle in this process is
//! a clone sharing the open database (a second process is refused; see
//! `redb_process.rs`). Damage is done through the backend's raw-write hooks.
#![cfg(feature = "redb")]
// The harness is test code: a failure to set up a case fails the case.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_backends::redb::RedbBackend;
use imagecache_conformance::Harness;
use imagecache_core::{Digest, ImageId, StoreBackend};

/// Keeps every case's directory alive until the harness is dropped, and
/// remembers which backend each handle belongs to.
#[derive(Default)]
struct RedbHarness {
    opened: Mutex<Vec<Opened>>,
}

struct Opened {
    _dir: tempfile::TempDir,
    backend: RedbBackend,
    handles: Vec<Arc<dyn StoreBackend>>,
}

impl RedbHarness {
    fn backend_of(&self, handle: &Arc<dyn StoreBackend>) -> Option<RedbBackend> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|o| o.handles.iter().any(|h| Arc::ptr_eq(h, handle)))
            .map(|o| o.backend.clone())
    }
}

#[async_trait::async_trait]
impl Harness for RedbHarness {
    async fn backend(&self) -> Arc<dyn StoreBackend> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = RedbBackend::open(dir.path().join("store.redb"))
            .await
            .expect("open redb backend");
        let handle: Arc<dyn StoreBackend> = Arc::new(backend.clone());
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Opened {
                _dir: dir,
                backend,
                handles: vec![handle.clone()],
            });
        handle
    }

    async fn reopen(&self, handle: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
        let again: Arc<dyn StoreBackend> = Arc::new(self.backend_of(handle)?);
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        let entry = opened
            .iter_mut()
            .find(|o| o.handles.iter().any(|h| Arc::ptr_eq(h, handle)))?;
        entry.handles.push(again.clone());
        Some(again)
    }

    async fn corrupt_content(
        &self,
        handle: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool {
        match self.backend_of(handle) {
            Some(backend) => backend.insert_raw_content(*id, data).await.is_ok(),
            None => false,
        }
    }

    async fn corrupt_blob(
        &self,
        handle: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool {
        match self.backend_of(handle) {
            Some(backend) => backend.insert_raw_blob(*digest, data).await.is_ok(),
            None => false,
        }
    }
}

imagecache_conformance::backend_tests!(RedbHarness::default());
