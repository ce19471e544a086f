//! Garbage collection, removal and disk usage through [`Lifecycle`], on the
//! memory, fs and redb backends: what goes and what stays under each
//! policy, leases respected, layer copies released together, blobs in
//! their grace period kept, and collections racing builders.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod blob_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use blob_common::{gzip, sha, tarish, zstd};
use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_backends::fs::FsBackend;
use imagecache_backends::redb::RedbBackend;
use imagecache_core::{BlobBackend, Digest, ImageId, LeaseResource, StoreBackend};
use imagecache_engine::blob::{BlobCache, LayerOptions, media_type};
use imagecache_engine::lifecycle::{
    Error, Filter, Item, Lifecycle, LifecycleOptions, Policy, Reason,
};
use imagecache_store::{CreateOptions, LeaseOptions, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Fs,
    Redb,
    /// The S3 server of `IMAGECACHE_TEST_S3_URL` (Garage in CI), under a
    /// prefix of its own.
    S3,
}

/// The S3 URL under a fresh prefix, or `None` (the case is skipped) when
/// no server is configured and none is required.
fn s3_url() -> Option<String> {
    imagecache_conformance::s3_test_url("lifecycle")
}

struct Setup {
    lc: Lifecycle,
    _dir: tempfile::TempDir,
}

async fn setup_with(kind: Kind, options: LifecycleOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (images, blobs): (Arc<dyn StoreBackend>, Arc<dyn BlobBackend>) = match kind {
        Kind::Memory => {
            let b = MemoryBackend::new();
            (Arc::new(b.clone()), Arc::new(b))
        }
        Kind::Fs => {
            let b = Arc::new(FsBackend::open(dir.path().join("fs")).await.unwrap());
            (b.clone(), b)
        }
        Kind::Redb => {
            let b = Arc::new(RedbBackend::open(dir.path().join("x.redb")).await.unwrap());
            (b.clone(), b)
        }
        Kind::S3 => {
            let url = s3_url().expect("S3 cases run only with a server");
            let b = imagecache_backends::open(&url).await.unwrap();
            (b.images(), b.blobs())
        }
    };
    let store = Store::open(images).await.unwrap();
    let cache = BlobCache::new(blobs).unwrap();
    Setup {
        lc: Lifecycle::with_options(store, Some(cache), options),
        _dir: dir,
    }
}

/// No grace period, so that blobs put by the test are collectable at once.
async fn setup(kind: Kind) -> Setup {
    setup_with(
        kind,
        LifecycleOptions::new().with_blob_grace(Duration::ZERO),
    )
    .await
}

fn config(comment: &str, diffs: &[Digest], labels: &str) -> Bytes {
    let diffs: Vec<String> = diffs.iter().map(|d| format!("\"{d}\"")).collect();
    Bytes::from(format!(
        r#"{{"created":"2024-01-01T00:00:00Z","config":{{"Labels":{{{labels}}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"comment":"{comment}"}}"#,
        diffs.join(",")
    ))
}

/// Puts a plain layer; returns its digest.
async fn layer(lc: &Lifecycle, seed: u64) -> Digest {
    let tar = tarish(seed, 20_000);
    let d = sha(&tar);
    lc.blobs().unwrap().put_bytes(&d, tar).await.unwrap();
    d
}

async fn image(lc: &Lifecycle, name: &str, parent: Option<ImageId>, layers: &[Digest]) -> ImageId {
    let mut options = CreateOptions::new();
    if let Some(p) = parent {
        options = options.with_parent(p);
    }
    lc.store()
        .create_with(config(name, layers, ""), options)
        .await
        .unwrap()
}

async fn has_blob(lc: &Lifecycle, d: &Digest) -> bool {
    lc.blobs().unwrap().has(d).await.unwrap().is_some()
}

fn reason_of(plan: &imagecache_engine::lifecycle::Plan, item: Item) -> (&Reason, bool) {
    let i = plan.items.iter().find(|i| i.item == item).expect("planned");
    (&i.reason, i.remove)
}

async fn dangling_prune_keeps_named_and_held(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let (l1, l2, l3, l4) = (
        layer(lc, 1).await,
        layer(lc, 2).await,
        layer(lc, 3).await,
        layer(lc, 4).await,
    );
    let base = image(lc, "base", None, &[l1]).await;
    let mid = image(lc, "mid", Some(base), &[l1, l2]).await;
    let top = image(lc, "top", Some(mid), &[l1, l2, l3]).await;
    let named = image(lc, "named", None, &[l4]).await;
    lc.store()
        .tag(&"app:1".parse().unwrap(), &named)
        .await
        .unwrap();
    let held = image(lc, "held", None, &[]).await;
    lc.store()
        .create_lease(LeaseOptions::new().with_resource(LeaseResource::Image(held)))
        .await
        .unwrap();
    let loose = layer(lc, 5).await;

    // A dry run says what goes and why, and changes nothing.
    let plan = lc.plan(&[Policy::dangling()]).await.unwrap();
    assert_eq!(
        reason_of(&plan, Item::Image(top)),
        (&Reason::Dangling, true)
    );
    assert_eq!(
        reason_of(&plan, Item::Image(base)),
        (&Reason::Dangling, true)
    );
    assert_eq!(
        reason_of(&plan, Item::Image(named)),
        (&Reason::Named, false)
    );
    assert!(matches!(
        reason_of(&plan, Item::Image(held)),
        (Reason::Held(_), false)
    ));
    assert_eq!(
        reason_of(&plan, Item::Blob(loose)),
        (&Reason::Unreferenced, true)
    );
    assert_eq!(
        reason_of(&plan, Item::Blob(l4)),
        (&Reason::Referenced, false)
    );
    assert_eq!(lc.store().len(), 5, "{kind:?}: a plan changes nothing");

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let progress =
        move |p: &imagecache_engine::lifecycle::GcProgress| seen2.lock().unwrap().push(*p);
    let report = lc.execute(&plan, Some(&progress)).await.unwrap();
    let gone: BTreeSet<ImageId> = report.images.iter().map(|(id, _)| *id).collect();
    assert_eq!(gone, BTreeSet::from([base, mid, top]), "{kind:?}");
    for d in [l1, l2, l3, loose] {
        assert!(!has_blob(lc, &d).await, "{kind:?}: {d} released");
    }
    assert!(has_blob(lc, &l4).await);
    assert!(lc.store().contains(&named) && lc.store().contains(&held));
    assert_eq!(report.bytes_freed, plan.bytes_to_free(), "{kind:?}");
    // A database file gives its freed pages back after a collection.
    match (kind, report.compaction) {
        (Kind::Redb, Some(c)) => assert!(c.after <= c.before, "{c:?}"),
        (Kind::Redb, None) => panic!("redb compacts after a collection"),
        (_, c) => assert_eq!(c, None, "{kind:?}"),
    }
    let last = seen.lock().unwrap().last().map(|p| (p.done, p.total));
    assert_eq!(last, Some((7, 7)), "{kind:?}");
    // The collection's own lease is gone; the builder's stays.
    assert_eq!(lc.store().leases().await.unwrap().len(), 1);
}

async fn all_prune_keeps_what_leases_hold(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let (l1, l2, l3) = (layer(lc, 1).await, layer(lc, 2).await, layer(lc, 3).await);
    let base = image(lc, "base", None, &[l1]).await;
    let child = image(lc, "child", Some(base), &[l1, l2]).await;
    let other = image(lc, "other", None, &[l3]).await;
    lc.store()
        .tag(&"other:1".parse().unwrap(), &other)
        .await
        .unwrap();
    let pinned = layer(lc, 9).await;
    lc.store()
        .create_lease(
            LeaseOptions::new()
                .with_resource(LeaseResource::Image(child))
                .with_resource(LeaseResource::Blob(pinned)),
        )
        .await
        .unwrap();
    let report = lc.collect(&[Policy::all()], None).await.unwrap();
    assert_eq!(
        report.images.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [other]
    );
    assert!(
        lc.store().contains(&child) && lc.store().contains(&base),
        "{kind:?}"
    );
    for d in [l1, l2, pinned] {
        assert!(has_blob(lc, &d).await, "{kind:?}: held {d} stays");
    }
    assert!(!has_blob(lc, &l3).await);

    // A held image refuses removal; forced, the image goes but the layers
    // the lease holds through it stay until the lease is gone.
    let err = lc.remove_image(&child, false).await.unwrap_err();
    assert!(matches!(err, Error::Held { .. }), "{kind:?}: {err:?}");
    let removed = lc.remove_image(&child, true).await.unwrap();
    assert!(!lc.store().contains(&child));
    assert!(removed.blobs.is_empty(), "{kind:?}: {removed:?}");
    assert!(has_blob(lc, &l2).await);
    for lease in lc.store().leases().await.unwrap() {
        lc.store().delete_lease(&lease.id).await.unwrap();
    }
    let report = lc.collect(&[Policy::dangling()], None).await.unwrap();
    let blobs: Vec<Digest> = report.blobs.iter().map(|(d, _)| *d).collect();
    for d in [l1, l2, pinned] {
        assert!(blobs.contains(&d), "{kind:?}: {blobs:?}");
    }
    assert_eq!(
        report.images.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [base]
    );
}

async fn layer_copies_go_together(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let cache = lc.blobs().unwrap();
    let tar = tarish(77, 300_000);
    let diff = sha(&tar);
    let (zst, gz) = (zstd(&tar), gzip(&tar));
    // The zstd copy is put last, so the decompressed copy names it back.
    for (data, mt) in [
        (gz.clone(), media_type::OCI_LAYER_GZIP),
        (zst.clone(), media_type::OCI_LAYER_ZSTD),
    ] {
        cache
            .put_layer_opts(
                &sha(&data),
                blob_common::body(data, 65_536),
                LayerOptions::new().with_media_type(mt),
            )
            .await
            .unwrap();
    }
    let id = image(lc, "layered", None, &[diff]).await;
    let plan = lc.plan(&[Policy::dangling()]).await.unwrap();
    assert_eq!(
        plan.removals().count(),
        4,
        "{kind:?}: a collection takes the image and its three copies"
    );
    // rm releases the copies whose notes confirm each other: the
    // decompressed layer and its zstd copy.
    let removed = lc.remove_image(&id, false).await.unwrap();
    let mut expect = vec![diff, sha(&zst)];
    expect.sort_unstable();
    let got: Vec<Digest> = removed.blobs.iter().map(|(d, _)| *d).collect();
    assert_eq!(got, expect, "{kind:?}");
    for d in &expect {
        assert!(
            !has_blob(lc, d).await,
            "{kind:?}: the zstd copy is released"
        );
    }
    // The gzip copy, whose link nothing confirms any more, is unreferenced
    // and goes with the next collection.
    assert!(has_blob(lc, &sha(&gz)).await);
    let report = lc.collect(&[Policy::dangling()], None).await.unwrap();
    let got: Vec<Digest> = report.blobs.iter().map(|(d, _)| *d).collect();
    assert_eq!(got, [sha(&gz)], "{kind:?}");
}

async fn young_blobs_stay(kind: Kind) {
    let s = setup_with(
        kind,
        LifecycleOptions::new().with_blob_grace(Duration::from_secs(3600)),
    )
    .await;
    let lc = &s.lc;
    let fresh = layer(lc, 1).await;
    let plan = lc.plan(&[Policy::all()]).await.unwrap();
    // Every backend of the project knows when a blob was stored.
    let catalog = lc.blobs().unwrap().catalog().await.unwrap();
    assert!(catalog[0].stored.is_some(), "{kind:?}: no put time");
    assert_eq!(
        reason_of(&plan, Item::Blob(fresh)),
        (&Reason::GracePeriod, false),
        "{kind:?}"
    );
    lc.execute(&plan, None).await.unwrap();
    assert!(has_blob(lc, &fresh).await);
}

async fn space_targets_remove_least_recently_used(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let mut ids = Vec::new();
    for n in 0..4u64 {
        let l = layer(lc, 10 + n).await;
        ids.push(image(lc, &format!("i{n}"), None, &[l]).await);
    }
    // Image 0 was used last: it stays longest.
    lc.store().record_use(&ids[0]);
    let used = lc.plan(&[]).await.unwrap().used_bytes;
    let per = used / 4;
    let report = lc
        .collect(
            &[Policy::all().with_max_used_space(used - per - per / 2)],
            None,
        )
        .await
        .unwrap();
    let gone: Vec<ImageId> = report.images.iter().map(|(id, _)| *id).collect();
    assert_eq!(gone.len(), 2, "{kind:?}: {gone:?}");
    assert!(
        !gone.contains(&ids[0]),
        "{kind:?}: the recently used image stays"
    );
    // The use was flushed to the backend by the collection.
    assert!(lc.store().last_used(&ids[0]).is_some());

    // Reserved space stops a policy early.
    let left = lc.plan(&[]).await.unwrap().used_bytes;
    let report = lc
        .collect(
            &[Policy::all()
                .with_max_used_space(0)
                .with_reserved_space(left - 1)],
            None,
        )
        .await
        .unwrap();
    assert!(report.images.is_empty(), "{kind:?}");
}

async fn filters_and_keep_duration(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let web = lc
        .store()
        .create(config("web", &[], r#""team":"web""#))
        .await
        .unwrap();
    let db = lc
        .store()
        .create(config("db", &[], r#""team":"db""#))
        .await
        .unwrap();
    let plan = lc
        .plan(&[Policy::dangling().with_filter(Filter::parse("label=team=web").unwrap())])
        .await
        .unwrap();
    assert_eq!(
        reason_of(&plan, Item::Image(web)),
        (&Reason::Dangling, true)
    );
    assert_eq!(
        reason_of(&plan, Item::Image(db)),
        (&Reason::Filtered, false)
    );
    // Created in 2024, used just now: kept by a one-hour keep duration.
    lc.store().record_use(&db);
    let plan = lc
        .plan(&[Policy::dangling().with_keep_duration(Duration::from_secs(3600))])
        .await
        .unwrap();
    assert_eq!(reason_of(&plan, Item::Image(db)), (&Reason::Recent, false));
    assert_eq!(
        reason_of(&plan, Item::Image(web)),
        (&Reason::Dangling, true)
    );
}

async fn disk_usage_reports_parts(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let l = layer(lc, 1).await;
    image(lc, "a", None, &[l]).await;
    let loose = layer(lc, 2).await;
    let du = lc.disk_usage().await.unwrap();
    assert_eq!(du.images, 1);
    assert!(du.config_bytes > 0);
    let blob_bytes: u64 = du.blobs.iter().map(|b| b.bytes).sum();
    assert_eq!(blob_bytes, 40_000, "{kind:?}");
    assert!(
        du.reclaimable >= 20_000 + du.config_bytes,
        "{kind:?}: {du:?}"
    );
    assert!(du.reclaimable_all >= du.reclaimable);
    // Every backend of the project measures its real bytes.
    let store = du.store.as_ref().expect("image backend usage");
    let blobs = du.blob_store.as_ref().expect("blob backend usage");
    assert!(store.bytes() >= du.config_bytes, "{kind:?}: {store:?}");
    assert!(blobs.bytes() >= 40_000, "{kind:?}: {blobs:?}");
    assert!(has_blob(lc, &loose).await, "disk usage changes nothing");
}

/// Builders take leases on base images (half of them named, so that some
/// are sure to survive until their lease), check them, and hold the layer
/// and the child they are about to make before making them, while
/// collections of dangling images run again and again: nothing a builder
/// held or built on is removed.
async fn collections_racing_builders(kind: Kind) {
    let s = setup(kind).await;
    let lc = s.lc.clone();
    let mut bases = Vec::new();
    for n in 0..6u64 {
        let l = layer(&lc, 100 + n).await;
        let id = image(&lc, &format!("base{n}"), None, &[l]).await;
        if n % 2 == 0 {
            let name = format!("base:{n}").parse().unwrap();
            lc.store().tag(&name, &id).await.unwrap();
        }
        bases.push((id, l));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = tokio::spawn({
        let (lc, stop) = (lc.clone(), Arc::clone(&stop));
        async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs < 3 {
                lc.collect(&[Policy::dangling()], None).await.unwrap();
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        }
    });
    let mut builders = Vec::new();
    for (n, (base, base_layer)) in bases.into_iter().enumerate() {
        let lc = lc.clone();
        builders.push(tokio::spawn(async move {
            let guard = lc
                .store()
                .hold(LeaseOptions::new().with_resource(LeaseResource::Image(base)))
                .await
                .unwrap();
            if !lc.store().contains(&base) {
                return None; // collected before the lease: build from scratch
            }
            let tar = tarish(1000 + n as u64, 10_000);
            let l = sha(&tar);
            let bytes = config(&format!("child{n}"), &[base_layer, l], "");
            let child = ImageId::of_config(&bytes);
            // Held before they exist, so no collection can take them
            // between their making and the lease.
            guard
                .add([LeaseResource::Blob(l), LeaseResource::Image(child)])
                .await
                .unwrap();
            lc.blobs().unwrap().put_bytes(&l, tar).await.unwrap();
            let made = lc
                .store()
                .create_with(bytes, CreateOptions::new().with_parent(base))
                .await
                .unwrap();
            assert_eq!(made, child);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((guard, base, base_layer, child, l))
        }));
    }
    let mut built = Vec::new();
    for b in builders {
        built.push(b.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc.await.unwrap() >= 3);
    let mut checked = 0;
    for (guard, base, base_layer, child, l) in built.into_iter().flatten() {
        for id in [base, child] {
            assert!(
                lc.store().contains(&id),
                "{kind:?}: held image {id} removed"
            );
        }
        for d in [base_layer, l] {
            assert!(has_blob(&lc, &d).await, "{kind:?}: held blob {d} removed");
        }
        assert_eq!(lc.store().parent(&child).unwrap(), Some(base));
        guard.release().await.unwrap();
        checked += 1;
    }
    assert!(
        checked >= 3,
        "{kind:?}: the named bases survive until their lease"
    );
    // Released, everything goes.
    lc.collect(&[Policy::all()], None).await.unwrap();
    assert!(lc.store().is_empty(), "{kind:?}");
}

/// Expired leases hold nothing and a collection deletes their records; a
/// periodic collector runs on its own until dropped.
async fn expired_leases_and_the_periodic_collector(kind: Kind) {
    let s = setup(kind).await;
    let lc = &s.lc;
    let l = layer(lc, 1).await;
    let id = image(lc, "old", None, &[l]).await;
    lc.store()
        .create_lease(
            LeaseOptions::new()
                .with_ttl(Duration::from_millis(1))
                .with_resource(LeaseResource::Image(id)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let collector = lc.spawn_collector(vec![Policy::dangling()], Duration::from_millis(50));
    let mut last = None;
    for _ in 0..200 {
        if collector.runs() >= 2 {
            last = collector.last();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(collector);
    let last = last.expect("the collector ran twice").unwrap();
    assert!(last.images.is_empty(), "the first run took the image");
    assert!(
        !lc.store().contains(&id),
        "{kind:?}: an expired lease holds nothing"
    );
    assert!(!has_blob(lc, &l).await);
    assert!(
        lc.store().leases().await.unwrap().is_empty(),
        "{kind:?}: expired record deleted"
    );
}

/// Free space on the store's filesystem as a target: a target already met
/// removes nothing, one out of reach removes every selected image.
async fn free_space_target(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let s = setup_with(
        kind,
        LifecycleOptions::new()
            .with_blob_grace(Duration::ZERO)
            .with_free_space_path(dir.path()),
    )
    .await;
    let lc = &s.lc;
    for n in 0..3u64 {
        let l = layer(lc, 20 + n).await;
        image(lc, &format!("i{n}"), None, &[l]).await;
    }
    let free = lc.free_space().expect("free space is measured");
    let met = lc
        .plan(&[Policy::all().with_min_free_space(free / 2)])
        .await
        .unwrap();
    assert!(met.free_bytes.is_some());
    assert_eq!(met.removals().count(), 0, "{kind:?}");
    let out_of_reach = lc
        .plan(&[Policy::all().with_min_free_space(u64::MAX)])
        .await
        .unwrap();
    let images = out_of_reach
        .removals()
        .filter(|i| matches!(i.item, Item::Image(_)))
        .count();
    assert_eq!(images, 3, "{kind:?}");
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() { super::$case(Kind::Memory).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fs() { super::$case(Kind::Fs).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() { super::$case(Kind::Redb).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                if s3_url().is_some() {
                    super::$case(Kind::S3).await
                } else {
                    eprintln!("skipped: S3 (IMAGECACHE_TEST_S3_URL not set)");
                }
            }
        }
    )*};
}

on_every_backend!(
    dangling_prune_keeps_named_and_held,
    all_prune_keeps_what_leases_hold,
    layer_copies_go_together,
    young_blobs_stay,
    space_targets_remove_least_recently_used,
    filters_and_keep_duration,
    disk_usage_reports_parts,
    collections_racing_builders,
    expired_leases_and_the_periodic_collector,
    free_space_target,
);
