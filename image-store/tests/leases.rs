//! Leases through the store: their life cycle, what they hold, the guard
//! that renews and releases them, deletes they refuse, and the wait for a
//! garbage collection that names what a new lease asks for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{
    Digest, GC_LEASE_LABEL, ImageId, Lease, LeaseId, LeaseResource, StoreBackendExt as _, Timestamp,
};
use imagecache_store::{CreateOptions, Error, LeaseOptions, Store};

fn config(comment: &str, diff: u8) -> Bytes {
    Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}},"comment":"{comment}"}}"#,
        format!("{diff:02x}").repeat(32)
    ))
}

fn diff(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
}

fn lid(s: &str) -> LeaseId {
    LeaseId::new(s).unwrap()
}

async fn memory_store() -> Store {
    Store::open(Arc::new(MemoryBackend::new())).await.unwrap()
}

/// A base image and a child of it.
async fn chain(store: &Store) -> (ImageId, ImageId) {
    let base = store.create(config("base", 1)).await.unwrap();
    let child = store
        .create_with(config("child", 2), CreateOptions::new().with_parent(base))
        .await
        .unwrap();
    (base, child)
}

#[tokio::test]
async fn lease_life_cycle() {
    let store = memory_store().await;
    let (base, _) = chain(&store).await;
    let lease = store
        .create_lease(
            LeaseOptions::new()
                .with_id(lid("build-1"))
                .with_ttl(Duration::from_secs(60))
                .with_label("owner", "ci")
                .with_resource(LeaseResource::Image(base)),
        )
        .await
        .unwrap();
    assert_eq!(lease.labels.get("owner").map(String::as_str), Some("ci"));
    assert_eq!(store.leases().await.unwrap(), vec![lease.clone()]);

    let err = store
        .create_lease(LeaseOptions::new().with_id(lid("build-1")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseExists { .. }), "{err:?}");

    let blob = LeaseResource::Blob(diff(9));
    let grown = store.add_lease_resources(&lease.id, [blob]).await.unwrap();
    assert!(grown.resources.contains(&blob));
    assert_eq!(store.lease(&lease.id).await.unwrap(), grown);

    let renewed = store
        .renew_lease(&lease.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(renewed.expires > lease.expires);

    let shrunk = store
        .remove_lease_resources(&lease.id, [LeaseResource::Image(base)])
        .await
        .unwrap();
    assert_eq!(shrunk.resources.iter().copied().collect::<Vec<_>>(), [blob]);

    assert!(store.delete_lease(&lease.id).await.unwrap());
    assert!(!store.delete_lease(&lease.id).await.unwrap());
    let err = store.lease(&lease.id).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
    let err = store
        .renew_lease(&lease.id, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn held_images_refuse_delete_unless_forced() {
    let store = memory_store().await;
    let (base, child) = chain(&store).await;
    let other = store.create(config("other", 3)).await.unwrap();
    store
        .create_lease(
            LeaseOptions::new()
                .with_id(lid("pull"))
                .with_resource(LeaseResource::Image(child)),
        )
        .await
        .unwrap();

    for id in [child, base] {
        let err = store.delete(&id).await.unwrap_err();
        match &err {
            Error::Held { resource, lease } => {
                assert_eq!(*resource, LeaseResource::Image(id));
                assert_eq!(lease.as_str(), "pull");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("lease pull"), "{err}");
        assert!(store.contains(&id), "a refused delete changes nothing");
    }
    // An image the lease does not hold goes as before.
    store.delete(&other).await.unwrap();
    // Forced, the held image goes.
    store.delete_forced(&child).await.unwrap();
    assert!(!store.contains(&child));
}

#[tokio::test]
async fn expired_leases_hold_nothing() {
    let store = memory_store().await;
    let (_, child) = chain(&store).await;
    let mut lease = Lease::new(lid("old"), Duration::from_secs(60));
    lease.resources.insert(LeaseResource::Image(child));
    lease.expires = Timestamp::from_unix_nanos(lease.created.unix_nanos() - 1);
    store.backend().set_lease(lease).await.unwrap();

    let held = store
        .held(&store.leases().await.unwrap(), Timestamp::now_utc())
        .await
        .unwrap();
    assert!(held.is_empty(), "{held:?}");
    store.delete(&child).await.unwrap();
    assert_eq!(store.remove_expired_leases().await.unwrap(), [lid("old")]);
    assert!(store.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn held_expands_to_ancestors_and_layers() {
    let store = memory_store().await;
    let (base, child) = chain(&store).await;
    let lone = store.create(config("lone", 5)).await.unwrap();
    let lone_chain = store.info(&lone).unwrap().chain_id.unwrap();
    store
        .create_lease(
            LeaseOptions::new()
                .with_id(lid("a"))
                .with_resource(LeaseResource::Image(child))
                .with_resource(LeaseResource::Layer(lone_chain))
                .with_resource(LeaseResource::Blob(diff(7))),
        )
        .await
        .unwrap();
    let held = store
        .held(&store.leases().await.unwrap(), Timestamp::now_utc())
        .await
        .unwrap();
    assert!(held.images.contains_key(&child));
    assert!(held.images.contains_key(&base), "ancestors are held");
    assert!(!held.images.contains_key(&lone), "a layer holds no image");
    for n in [1, 2, 5, 7] {
        assert_eq!(held.blobs.get(&diff(n)), Some(&lid("a")), "blob {n}");
    }
    assert!(!held.blobs.contains_key(&diff(3)));
    assert_eq!(
        held.holder(&LeaseResource::Layer(lone_chain)),
        Some(&lid("a"))
    );
}

#[tokio::test]
async fn guard_renews_and_releases() {
    let store = memory_store().await;
    let (base, _) = chain(&store).await;
    let guard = store
        .hold(
            LeaseOptions::new()
                .with_ttl(Duration::from_millis(300))
                .with_resource(LeaseResource::Image(base)),
        )
        .await
        .unwrap();
    let id = guard.id().clone();
    assert!(id.as_str().starts_with("lease-"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let lease = store.lease(&id).await.unwrap();
    assert!(
        lease.is_live(Timestamp::now_utc()),
        "renewed in the background past its first expiry"
    );
    assert!(matches!(store.delete(&base).await, Err(Error::Held { .. })));

    guard.add([LeaseResource::Blob(diff(8))]).await.unwrap();
    drop(guard);
    for _ in 0..100 {
        if store.leases().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        store.leases().await.unwrap().is_empty(),
        "dropped → deleted"
    );
    store.delete(&base).await.unwrap();

    let released = store.hold(LeaseOptions::new()).await.unwrap();
    released.release().await.unwrap();
    assert!(store.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn new_leases_wait_for_a_collection_naming_their_resources() {
    let store = memory_store().await;
    let (base, child) = chain(&store).await;
    let mut gc = Lease::new(lid("gc-1"), Duration::from_secs(60));
    gc.labels.insert(GC_LEASE_LABEL.into(), "1".into());
    gc.resources.insert(LeaseResource::Image(child));
    store.backend().set_lease(gc).await.unwrap();

    // A lease on something else does not wait.
    tokio::time::timeout(
        Duration::from_secs(5),
        store.create_lease(LeaseOptions::new().with_resource(LeaseResource::Image(base))),
    )
    .await
    .expect("no wait")
    .unwrap();

    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .create_lease(LeaseOptions::new().with_resource(LeaseResource::Image(child)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits while the collection runs");
    store.backend().delete_lease(&lid("gc-1")).await.unwrap();
    let lease = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("returns once the collection is over")
        .unwrap()
        .unwrap();
    assert!(lease.resources.contains(&LeaseResource::Image(child)));
}

#[tokio::test]
async fn delete_unused_keeps_images_that_gained_children_or_names() {
    let store = memory_store().await;
    let (base, child) = chain(&store).await;
    assert_eq!(store.delete_unused(&base, true).await.unwrap(), None);
    store.tag(&"app:1".parse().unwrap(), &child).await.unwrap();
    assert_eq!(store.delete_unused(&child, false).await.unwrap(), None);
    assert!(store.contains(&child));
    assert!(store.delete_unused(&child, true).await.unwrap().is_some());
    assert!(store.delete_unused(&base, false).await.unwrap().is_some());
    assert!(store.is_empty());
    assert_eq!(store.delete_unused(&base, false).await.unwrap(), None);
}

#[tokio::test]
async fn a_lease_taken_by_another_handle_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        Store::open(Arc::new(FsBackend::open(dir.path()).await.unwrap()))
            .await
            .unwrap()
    };
    let a = open().await;
    let (_, child) = chain(&a).await;
    let b = open().await;
    a.create_lease(
        LeaseOptions::new()
            .with_id(lid("from-a"))
            .with_resource(LeaseResource::Image(child)),
    )
    .await
    .unwrap();
    let err = b.delete(&child).await.unwrap_err();
    assert!(
        matches!(&err, Error::Held { lease, .. } if lease.as_str() == "from-a"),
        "{err:?}"
    );
}
