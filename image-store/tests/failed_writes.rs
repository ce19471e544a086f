//! A backend may apply a write and still report a failure (a connection
//! lost after the server committed). The store must not act on memory that
//! lags the backend afterwards: its next change reloads first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_core::{
    Capabilities, Error as CoreError, ImageId, MetadataKey, Snapshot, StoreBackend, WriteBatch,
};
use imagecache_store::{CreateOptions, Error, Store};

/// Applies every write; when armed, reports the next one as failed.
#[derive(Debug, Default)]
struct ApplyThenFail {
    inner: MemoryBackend,
    armed: AtomicBool,
}

impl std::fmt::Display for ApplyThenFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "apply-then-fail {}", self.inner)
    }
}

#[async_trait::async_trait]
impl StoreBackend for ApplyThenFail {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        self.inner.write(batch).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(CoreError::Backend {
                backend: "test",
                key: None,
                retryable: true,
                source: "the connection dropped after the write".into(),
            });
        }
        Ok(())
    }
    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        self.inner.get(id).await
    }
    async fn get_metadata(
        &self,
        id: &ImageId,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        self.inner.get_metadata(id, key).await
    }
    async fn load(&self) -> imagecache_core::Result<Snapshot> {
        self.inner.load().await
    }
}

fn config(comment: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers"}},"comment":"{comment}"}}"#
    ))
}

#[tokio::test]
async fn a_change_after_a_failed_write_sees_what_the_backend_applied() {
    let backend = Arc::new(ApplyThenFail::default());
    let store = Store::open(backend.clone()).await.unwrap();
    let base = store.create(config("base")).await.unwrap();

    // The delete is applied, but reported as failed.
    backend.armed.store(true, Ordering::SeqCst);
    assert!(store.delete(&base).await.is_err());

    // Building on the deleted parent is refused instead of storing a child
    // whose parent link names nothing.
    let err = store
        .create_with(config("child"), CreateOptions::new().with_parent(base))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownParent { .. }), "{err:?}");
    assert!(!store.contains(&base));
    let snapshot = backend.inner.load().await.unwrap();
    assert!(snapshot.images.is_empty(), "{snapshot:?}");

    // A create reported as failed is picked up the same way.
    backend.armed.store(true, Ordering::SeqCst);
    assert!(store.create(config("again")).await.is_err());
    let again = ImageId::of_config(&config("again"));
    store
        .tag(&"again:1".parse().unwrap(), &again)
        .await
        .unwrap();
    assert!(store.contains(&again));
}
