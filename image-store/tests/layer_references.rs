//! Layer references taken by a create or a load go back to the provider
//! whenever the operation does not complete: a refused item, a failed
//! backend write, or a future dropped half-way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_core::{
    Capabilities, ChainId, Error as CoreError, ImageId, MetadataKey, Snapshot, StoreBackend,
    StoreBackendExt as _, WriteBatch,
};
use imagecache_store::{CreateOptions, Error, RefCountLayers, Store, StoreOptions};

/// A memory backend whose writes can be made to fail or to never finish,
/// and which can hand out a garbled config for one image.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryBackend,
    fail_writes: AtomicBool,
    stall_writes: AtomicBool,
    garbled: Mutex<Option<ImageId>>,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flaky {}", self.inner)
    }
}

#[async_trait::async_trait]
impl StoreBackend for Flaky {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        if self.stall_writes.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(CoreError::backend("flaky", None, "writes are failing"));
        }
        self.inner.write(batch).await
    }

    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        if *self.garbled.lock().expect("garbled lock") == Some(*id) {
            return Ok(Bytes::from_static(b"{"));
        }
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

/// A config with one layer, and that layer's chain.
fn config(n: u8) -> (Bytes, ChainId) {
    let diff = format!("sha256:{}", format!("{n:02x}").repeat(32));
    let json = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff}"]}},"comment":"{n}"}}"#);
    (Bytes::from(json), ChainId::parse(&diff).expect("a chain"))
}

async fn open(backend: &Arc<Flaky>) -> (Store, Arc<RefCountLayers>) {
    let layers = Arc::new(RefCountLayers::new());
    let store = Store::open_with(
        backend.clone(),
        StoreOptions::new().with_layers(layers.clone()),
    )
    .await
    .expect("open");
    (store, layers)
}

#[tokio::test]
async fn a_failed_write_gives_the_references_back() {
    let backend = Arc::new(Flaky::default());
    let (store, layers) = open(&backend).await;
    let (a, chain_a) = config(1);
    let (b, chain_b) = config(2);
    backend.fail_writes.store(true, Ordering::SeqCst);
    let err = store
        .create_batch(vec![
            (a.clone(), CreateOptions::new()),
            (b, CreateOptions::new()),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert_eq!(layers.references(&chain_a), 0);
    assert_eq!(layers.references(&chain_b), 0);
    assert!(store.is_empty());

    backend.fail_writes.store(false, Ordering::SeqCst);
    let id = store.create(a).await.unwrap();
    assert_eq!(layers.references(&chain_a), 1, "a later create holds one");
    store.delete(&id).await.unwrap();
    assert!(layers.is_empty());
}

#[tokio::test]
async fn a_refused_item_gives_back_what_earlier_items_took() {
    let backend = Arc::new(Flaky::default());
    let (store, layers) = open(&backend).await;
    let (a, chain_a) = config(1);
    let (b, _) = config(2);
    let stranger = ImageId::of_config(b"not stored");
    let err = store
        .create_batch(vec![
            (a, CreateOptions::new()),
            (b, CreateOptions::new().with_parent(stranger)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownParent { parent } if parent == stranger),
        "{err:?}"
    );
    assert_eq!(layers.references(&chain_a), 0);
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_dropped_create_gives_the_references_back() {
    let backend = Arc::new(Flaky::default());
    let (store, layers) = open(&backend).await;
    let (a, chain_a) = config(1);
    backend.stall_writes.store(true, Ordering::SeqCst);
    let create = store.create(a.clone());
    let timed_out = tokio::time::timeout(Duration::from_millis(50), create).await;
    assert!(timed_out.is_err(), "the write never finishes");
    assert_eq!(layers.references(&chain_a), 0);

    backend.stall_writes.store(false, Ordering::SeqCst);
    store.create(a).await.unwrap();
    assert_eq!(layers.references(&chain_a), 1);
}

#[tokio::test]
async fn a_failed_load_gives_the_references_back() {
    let backend = Arc::new(Flaky::default());
    // Stored without summaries, so a load reads both configs.
    let (good, chain_good) = config(1);
    let (bad, _) = config(2);
    backend.inner.put(good).await.unwrap();
    let bad = backend.inner.put(bad).await.unwrap();
    *backend.garbled.lock().unwrap() = Some(bad);
    // Quarantining the garbled config is a write, and it fails.
    backend.fail_writes.store(true, Ordering::SeqCst);
    let layers = Arc::new(RefCountLayers::new());
    let err = Store::open_with(
        backend.clone(),
        StoreOptions::new().with_layers(layers.clone()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert_eq!(layers.references(&chain_good), 0);
    assert!(layers.is_empty());

    backend.fail_writes.store(false, Ordering::SeqCst);
    let store = Store::open_with(
        backend.clone(),
        StoreOptions::new().with_layers(layers.clone()),
    )
    .await
    .unwrap();
    assert_eq!(store.len(), 1, "the garbled config is quarantined");
    assert_eq!(layers.references(&chain_good), 1);
}
