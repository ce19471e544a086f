//! The fault injector does what its plan says: the Nth call fails, a rate
//! fails about that share of calls, the same seed fails the same calls,
//! each kind does what it claims to the backend behind it, and every
//! injected error can be told from a real one.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use imagecache_backends::MemoryBackend;
use imagecache_conformance::faults::{
    FaultBlobStore, FaultConfig, FaultInjector, FaultKind, FaultStore, Method, injected_fault,
    is_injected,
};
use imagecache_core::{
    BlobBackend, BlobBackendExt as _, ByteStream, Digest, Error, StoreBackend, StoreBackendExt as _,
};

fn config(n: u8) -> Bytes {
    Bytes::from(format!("{{\"n\":{n}}}"))
}

fn wrap(memory: &MemoryBackend, faults: &FaultInjector) -> (FaultStore, FaultBlobStore) {
    (
        FaultStore::new(Arc::new(memory.clone()), faults.clone()),
        FaultBlobStore::new(Arc::new(memory.clone()), faults.clone()),
    )
}

fn only(kind: FaultKind) -> FaultConfig {
    FaultConfig::new(1).with_kinds(&[kind])
}

#[tokio::test]
async fn nth_call_fails_once() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(only(FaultKind::ErrorBefore).with_nth(3));
    let (store, _) = wrap(&memory, &faults);
    let mut outcomes = Vec::new();
    for n in 0..6 {
        outcomes.push(store.put(config(n)).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, true, true, true]);
    let stats = faults.stats();
    assert_eq!((stats.calls, stats.injected), (6, 1));
    assert_eq!(stats.last.as_ref().map(|f| f.call), Some(3));
    // Error before: the third config never reached the backend.
    assert_eq!(memory.load().await.unwrap().images.len(), 5);
}

#[tokio::test]
async fn error_after_applies_the_call() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(only(FaultKind::ErrorAfter).with_nth(1));
    let (store, _) = wrap(&memory, &faults);
    let err = store.put(config(1)).await.unwrap_err();
    let fault = injected_fault(&err).expect("an injected fault");
    assert_eq!((fault.call, fault.method), (1, Method::Write));
    assert!(matches!(
        err,
        Error::Backend {
            backend: "faults",
            retryable: true,
            ..
        }
    ));
    assert_eq!(memory.load().await.unwrap().images.len(), 1);
}

#[tokio::test]
async fn rate_fails_about_that_share_and_repeats_with_the_seed() {
    async fn run(seed: u64) -> Vec<bool> {
        let memory = MemoryBackend::new();
        let faults = FaultInjector::new(
            FaultConfig::new(seed)
                .with_rate(0.25)
                .with_kinds(&[FaultKind::ErrorBefore]),
        );
        let (store, _) = wrap(&memory, &faults);
        let mut failed = Vec::new();
        for _ in 0..2000 {
            failed.push(store.load().await.is_err());
        }
        failed
    }
    let a = run(42).await;
    let share = a.iter().filter(|f| **f).count();
    assert!(
        (400..600).contains(&share),
        "{share} of 2000 failed at rate 0.25"
    );
    assert_eq!(a, run(42).await, "the same seed must fail the same calls");
    assert_ne!(a, run(43).await, "another seed must fail other calls");
}

#[tokio::test]
async fn inactive_injector_neither_fails_nor_counts() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(FaultConfig::new(5).with_rate(1.0));
    let (store, _) = wrap(&memory, &faults);
    faults.set_active(false);
    for _ in 0..10 {
        store.load().await.unwrap();
    }
    assert_eq!(faults.stats().calls, 0);
    faults.set_active(true);
    assert!(store.load().await.is_err());
}

#[tokio::test]
async fn torn_write_stores_nothing() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::disabled();
    let (_, blobs) = wrap(&memory, &faults);
    let data = Bytes::from(vec![7u8; 40_000]);
    let digest = Digest::sha256(&data);
    for _ in 0..20 {
        faults.schedule(1, Some(FaultKind::TornWrite));
        let chunks: Vec<imagecache_core::Result<Bytes>> = data
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        let err = blobs.put_blob(&digest, body).await.unwrap_err();
        assert!(is_injected(&err), "{err}");
        assert!(memory.list_blobs().await.unwrap().is_empty());
    }
    assert_eq!(faults.stats().of_kind(FaultKind::TornWrite), 20);
}

#[tokio::test]
async fn short_read_and_read_error_cut_the_stream() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::disabled();
    let (_, blobs) = wrap(&memory, &faults);
    let data = Bytes::from((0..50_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let digest = Digest::sha256(&data);
    blobs.put_blob_bytes(&digest, data.clone()).await.unwrap();
    for _ in 0..20 {
        faults.schedule(1, Some(FaultKind::ShortRead));
        let reader = blobs.get_blob(&digest).await.unwrap();
        assert_eq!(reader.size, data.len() as u64);
        let got: Vec<Bytes> = reader.stream.try_collect().await.unwrap();
        let got: Vec<u8> = got.concat();
        assert!(got.len() < data.len(), "a short read returned every byte");
        assert_eq!(got[..], data[..got.len()]);

        faults.schedule(1, Some(FaultKind::ReadError));
        let reader = blobs.get_blob(&digest).await.unwrap();
        let err = reader.stream.try_collect::<Vec<Bytes>>().await.unwrap_err();
        assert!(is_injected(&err));
    }
    // Without a fault the blob reads whole.
    assert_eq!(blobs.get_blob_bytes(&digest).await.unwrap(), data);
}

#[tokio::test]
async fn kinds_apply_only_where_they_can() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(only(FaultKind::TornWrite).with_rate(1.0));
    let (store, blobs) = wrap(&memory, &faults);
    // No image call can be torn, so none fails.
    store.put(config(1)).await.unwrap();
    store.load().await.unwrap();
    blobs.list_blobs().await.unwrap();
    let data = Bytes::from_static(b"blob");
    let err = blobs
        .put_blob_bytes(&Digest::sha256(&data), data)
        .await
        .unwrap_err();
    assert!(is_injected(&err));
    assert_eq!(faults.stats().injected, 1);
}

#[tokio::test]
async fn delays_do_not_fail() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(only(FaultKind::Delay).with_rate(1.0));
    let (store, blobs) = wrap(&memory, &faults);
    let id = store.put(config(1)).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap(), config(1));
    let data = Bytes::from_static(b"blob");
    let digest = Digest::sha256(&data);
    blobs.put_blob_bytes(&digest, data.clone()).await.unwrap();
    assert_eq!(blobs.get_blob_bytes(&digest).await.unwrap(), data);
    let stats = faults.stats();
    assert_eq!(stats.of_kind(FaultKind::Delay), 4);
    assert_eq!(stats.failures(), 0);
}

#[tokio::test]
async fn real_errors_are_not_taken_for_injected_ones() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::disabled();
    let (store, _) = wrap(&memory, &faults);
    let id = imagecache_core::ImageId::of_config(b"{}");
    let err = store.get(&id).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(!is_injected(&err));
}

#[tokio::test]
async fn methods_filter_where_faults_land() {
    let memory = MemoryBackend::new();
    let faults = FaultInjector::new(
        only(FaultKind::ErrorBefore)
            .with_rate(1.0)
            .with_methods(&[Method::Get]),
    );
    let (store, _) = wrap(&memory, &faults);
    let id = store.put(config(1)).await.unwrap();
    store.load().await.unwrap();
    let err = store.get(&id).await.unwrap_err();
    assert_eq!(injected_fault(&err).map(|f| f.method), Some(Method::Get));
    let stats = faults.stats();
    assert_eq!((stats.calls, stats.injected), (3, 1));
}
