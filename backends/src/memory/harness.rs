//! The conformance harness of the in-memory backend (feature `testing`).

use std::sync::Arc;

use bytes::Bytes;
use imagecache_conformance::{Damage, Fixture, Harness, HookError, HookResult};
use imagecache_core::{BlobBackend, Digest, ImageId, MetadataKey, StoreBackend};

use super::MemoryBackend;

/// Hands the conformance suite fresh in-memory backends.
///
/// An in-memory backend cannot be reopened the way a directory or a
/// database file can; its "other handle" is a clone, which shares the same
/// state, so the cases that need a second handle run too. The damage hooks
/// replace stored bytes without any check.
///
/// ```no_run
/// // In a test file of a crate that depends on imagecache-backends with
/// // the `testing` feature:
/// imagecache_conformance::backend_tests!(imagecache_backends::memory::MemoryHarness);
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHarness;

#[async_trait::async_trait]
impl Harness for MemoryHarness {
    async fn fixture(&self) -> Box<dyn Fixture> {
        Box::new(MemoryFixture(MemoryBackend::new()))
    }
}

/// One backend of a [`MemoryHarness`].
#[derive(Debug, Clone)]
struct MemoryFixture(MemoryBackend);

#[async_trait::async_trait]
impl Fixture for MemoryFixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.0.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.0.clone()))
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        Some(Box::new(self.clone()))
    }

    fn damage(&self) -> Damage {
        Damage::all()
    }

    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        self.0.insert_raw_content(*id, data);
        Ok(())
    }

    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        self.0.insert_raw_blob(*digest, data);
        Ok(())
    }

    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        if self.0.insert_raw_note(*digest, key.clone(), data) {
            Ok(())
        } else {
            Err(HookError::failed(
                "corrupt_note",
                format!("blob {digest} is not stored"),
            ))
        }
    }
}
