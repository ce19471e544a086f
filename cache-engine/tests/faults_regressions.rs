//! Defects the model-based test (`tests/model.rs`) found, each pinned by a
//! small test over the fault injector: a transient backend failure must
//! change nothing that a retry would not find unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_conformance::faults::{FaultInjector, FaultKind, FaultStore, is_injected};
use imagecache_core::{BlobBackend as _, Reference, StoreBackend, StoreBackendExt as _};
use imagecache_store::{Error, Store};

fn config(comment: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":[]}},"comment":"{comment}"}}"#
    ))
}

fn faulty(memory: &MemoryBackend, faults: &FaultInjector) -> Arc<dyn StoreBackend> {
    Arc::new(FaultStore::new(Arc::new(memory.clone()), faults.clone()))
}

/// Found as: Redb, fault seed 4878150409536081645 — `remove_image` read
/// the config of an image the store had not read yet, the read failed with
/// an injected error, and the image was quarantined (names and all).
#[tokio::test]
async fn a_config_read_that_fails_sets_nothing_aside() {
    let memory = MemoryBackend::new();
    let id = {
        let store = Store::open(Arc::new(memory.clone())).await.unwrap();
        let id = store.create(config("kept")).await.unwrap();
        let name: Reference = "app:1".parse().unwrap();
        store.tag(&name, &id).await.unwrap();
        id
    };
    let faults = FaultInjector::disabled();
    // A new handle has not read the config yet.
    let store = Store::open(faulty(&memory, &faults)).await.unwrap();
    faults.schedule(1, Some(FaultKind::ErrorBefore));
    let err = store.get(&id).await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(is_injected(&err));

    assert!(store.contains(&id), "the store let go of a healthy image");
    assert_eq!(store.names_of(&id).len(), 1);
    let snapshot = memory.load().await.unwrap();
    assert!(
        snapshot.quarantined.is_empty(),
        "{:?}",
        snapshot.quarantined
    );
    assert_eq!(snapshot.images.len(), 1);
    assert_eq!(snapshot.names.len(), 1);
    // The retry reads it.
    assert_eq!(store.get(&id).await.unwrap().id(), id);
}

/// The same on open: an image without a summary has its config read, and
/// a read that fails must fail the open, not quarantine the image.
#[tokio::test]
async fn an_open_whose_config_read_fails_fails_and_sets_nothing_aside() {
    let memory = MemoryBackend::new();
    // Content alone, without the summary a store writes beside it.
    let id = memory.put(config("no summary")).await.unwrap();
    let faults = FaultInjector::disabled();
    // The open's first call loads; the second reads the config.
    faults.schedule(2, Some(FaultKind::ErrorBefore));
    let err = Store::open(faulty(&memory, &faults)).await.unwrap_err();
    assert!(is_injected(&err), "{err:?}");
    assert_eq!(faults.stats().injected, 1);

    let snapshot = memory.load().await.unwrap();
    assert!(
        snapshot.quarantined.is_empty(),
        "{:?}",
        snapshot.quarantined
    );
    let store = Store::open(faulty(&memory, &faults)).await.unwrap();
    assert!(store.contains(&id));
    assert!(store.report().problems.is_empty());
}

/// A collection that cannot read a blob's notes cannot tell what the blob
/// is (a layer's other copy, a manifest of a kept image): it keeps it. It
/// used to see no notes at all, and so removed the gzip copy of a kept
/// layer and the manifest of a kept image.
#[tokio::test]
async fn a_collection_that_cannot_read_notes_keeps_the_blobs() {
    use imagecache_conformance::faults::{FaultBlobStore, FaultConfig, Method};
    use imagecache_core::Digest;
    use imagecache_engine::blob::BlobCache;
    use imagecache_engine::lifecycle::{Lifecycle, LifecycleOptions, Policy};
    use std::io::Write as _;

    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(
        FaultConfig::new(3)
            .with_rate(1.0)
            .with_kinds(&[FaultKind::ErrorBefore])
            .with_methods(&[Method::BlobNotes]),
    );
    faults.set_active(false);
    let blobs = Arc::new(FaultBlobStore::new(
        Arc::new(memory.clone()),
        faults.clone(),
    ));
    let cache = BlobCache::new(blobs).unwrap();
    let store = Store::open(Arc::new(memory.clone())).await.unwrap();
    let lc = Lifecycle::with_options(
        store.clone(),
        Some(cache.clone()),
        LifecycleOptions::new().with_blob_grace(std::time::Duration::ZERO),
    );

    let raw = Bytes::from(vec![b'x'; 5000]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    let gz = Bytes::from(enc.finish().unwrap());
    let (diff, compressed) = (Digest::sha256(&raw), Digest::sha256(&gz));
    let body = Box::pin(futures::stream::iter([Ok(gz.clone())]));
    cache.put_layer(&compressed, body).await.unwrap();
    let config = Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff}"]}},"comment":"kept"}}"#
    ));
    let id = store.create(config).await.unwrap();
    store.tag(&"app:1".parse().unwrap(), &id).await.unwrap();
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{id}","size":1}},"layers":[{{"digest":"{compressed}","size":{}}}]}}"#,
        gz.len()
    ));
    let manifest_digest = Digest::sha256(&manifest);
    cache
        .put_manifest(&manifest_digest, manifest, None)
        .await
        .unwrap();

    faults.set_active(true);
    let report = lc.collect(&[Policy::dangling()], None).await;
    faults.set_active(false);
    assert!(faults.stats().injected > 0);
    if let Ok(report) = report {
        assert!(report.blobs.is_empty(), "removed {:?}", report.blobs);
    }
    let mut left: Vec<Digest> = memory
        .list_blobs()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.digest)
        .collect();
    left.sort();
    let mut all = vec![diff, compressed, manifest_digest];
    all.sort();
    assert_eq!(left, all, "a blob of the kept image was collected");
}
