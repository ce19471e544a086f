//! Image configs, metadata and batches on the redb backend, seen from outside.
#![cfg(feature = "redb")]
// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use imagecache_backends::redb::{Durability, RedbBackend, RedbConfig, RedbHarness};
use imagecache_conformance::Harness as _;
use imagecache_core::{
    BlobBackend, BlobBackendExt as _, Content, Error, ImageId, Key, MetadataKey, StoreBackend,
    StoreBackendExt, WriteBatch,
};
use redb::{ReadableTable as _, TableDefinition};

/// The table of content blocks, as the module documentation describes it.
const CONTENT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("content");

fn config(n: usize) -> Content {
    Content::new(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{n}}}"#
    ))
    .unwrap()
}

async fn open(path: &Path) -> RedbBackend {
    RedbBackend::open(path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_and_metadata_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("db.redb")).await;
    let c = config(1);
    let id = backend.put(c.data().clone()).await.unwrap();
    assert_eq!(id, c.id());
    assert_eq!(backend.get(&id).await.unwrap(), c.data());

    backend
        .set_metadata(&id, &MetadataKey::PARENT, Bytes::from_static(b"sha256:ab"))
        .await
        .unwrap();
    let custom = MetadataKey::new("user.note").unwrap();
    backend
        .set_metadata(&id, &custom, Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        &backend
            .get_metadata(&id, &MetadataKey::PARENT)
            .await
            .unwrap()[..],
        b"sha256:ab"
    );
    assert!(backend.get_metadata(&id, &custom).await.unwrap().is_empty());

    let err = backend
        .get_metadata(&id, &MetadataKey::LAST_UPDATED)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key: Key::Metadata { id: i, key } } if *i == id && *key == MetadataKey::LAST_UPDATED),
        "{err:?}"
    );
    let missing = config(2).id();
    let err = backend.get(&missing).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key: Key::Image(i) } if *i == missing),
        "{err:?}"
    );
    let err = backend
        .get_metadata(&missing, &MetadataKey::PARENT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key: Key::Image(i) } if *i == missing),
        "{err:?}"
    );

    backend
        .delete_metadata(&id, &MetadataKey::PARENT)
        .await
        .unwrap();
    backend
        .delete_metadata(&id, &MetadataKey::PARENT)
        .await
        .unwrap();
    assert!(
        backend
            .get_metadata(&id, &MetadataKey::PARENT)
            .await
            .unwrap_err()
            .is_not_found()
    );

    backend.delete(&id).await.unwrap();
    backend.delete(&id).await.unwrap();
    assert!(backend.get(&id).await.unwrap_err().is_not_found());
    assert!(backend.load().await.unwrap().images.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_op_anywhere_in_a_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("db.redb")).await;
    let kept = config(10);
    let kept_id = backend.put(kept.data().clone()).await.unwrap();
    backend
        .set_metadata(&kept_id, &MetadataKey::PARENT, Bytes::from_static(b"p0"))
        .await
        .unwrap();
    let before = backend.load().await.unwrap();

    let fresh = config(11);
    let fresh_id = fresh.id();
    let never_stored = config(12).id();
    type AddOp = Box<dyn Fn(&mut WriteBatch)>;
    let bad_ops: Vec<AddOp> = vec![
        Box::new(move |b| b.set_metadata(never_stored, MetadataKey::PARENT, "x")),
        Box::new(move |b| b.set_summary(never_stored, "s")),
        Box::new(move |b| b.quarantine(never_stored, "why")),
        // Deleted earlier in the same batch, so no longer there.
        Box::new(move |b| {
            b.delete(kept_id);
            b.set_metadata(kept_id, MetadataKey::PARENT, "x");
        }),
    ];
    for add_bad in bad_ops {
        let mut batch = WriteBatch::new();
        batch.put(fresh.clone());
        batch.set_metadata(fresh_id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
        batch.set_summary(fresh_id, "summary");
        batch.set_metadata(kept_id, MetadataKey::PARENT, "changed");
        batch.delete_metadata(kept_id, MetadataKey::PARENT);
        add_bad(&mut batch);
        batch.put(config(13));
        let err = backend.write(batch).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { key: Key::Image(_) }),
            "{err:?}"
        );

        assert_eq!(backend.load().await.unwrap(), before);
        assert!(backend.get(&fresh_id).await.unwrap_err().is_not_found());
        assert!(
            backend
                .get(&config(13).id())
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(backend.get(&kept_id).await.unwrap(), kept.data());
        assert_eq!(
            &backend
                .get_metadata(&kept_id, &MetadataKey::PARENT)
                .await
                .unwrap()[..],
            b"p0"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_lists_images_sorted_with_metadata_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("db.redb")).await;
    let mut batch = WriteBatch::new();
    let mut ids = Vec::new();
    for n in 0..200 {
        let id = batch.put(config(n));
        batch.set_metadata(id, MetadataKey::PARENT, format!("parent-of-{n}"));
        if n % 2 == 0 {
            batch.set_summary(id, format!("summary-{n}"));
        }
        ids.push((id, n));
    }
    backend.write(batch).await.unwrap();
    ids.sort();

    let snap = backend.load().await.unwrap();
    assert_eq!(
        snap.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    for (entry, (_, n)) in snap.images.iter().zip(&ids) {
        assert_eq!(
            entry.metadata(&MetadataKey::PARENT).map(|v| v.to_vec()),
            Some(format!("parent-of-{n}").into_bytes())
        );
        let want = (n % 2 == 0).then(|| format!("summary-{n}").into_bytes());
        assert_eq!(entry.summary.as_ref().map(|s| s.to_vec()), want);
    }
    assert!(snap.quarantined.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_after_drop_sees_everything() {
    for durability in [Durability::Immediate, Durability::Deferred] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("db.redb");
        let cfg = RedbConfig::new().with_durability(durability);
        let backend = RedbBackend::open_with(&path, cfg.clone()).await.unwrap();
        let mut batch = WriteBatch::new();
        let a = batch.put(config(1));
        let b = batch.put(config(2));
        batch.set_metadata(b, MetadataKey::PARENT, a.to_string());
        batch.set_summary(b, "sum");
        batch.quarantine(a, "bad bytes");
        backend.write(batch).await.unwrap();
        let digest = imagecache_core::Digest::sha256(b"blob");
        backend
            .put_blob_bytes(&digest, Bytes::from_static(b"blob"))
            .await
            .unwrap();
        let before = backend.load().await.unwrap();
        let clone = backend.clone();
        drop(backend);
        // A clone keeps the database open.
        assert!(matches!(
            RedbBackend::open(&path).await.unwrap_err(),
            Error::Locked { .. }
        ));
        drop(clone);

        let backend = RedbBackend::open_with(&path, cfg).await.unwrap();
        let after = backend.load().await.unwrap();
        assert_eq!(after, before, "{durability:?}");
        assert_eq!(after.images.len(), 1);
        assert_eq!(after.quarantined.len(), 1);
        assert_eq!(after.quarantined[0].reason, "bad bytes");
        assert_eq!(backend.get(&b).await.unwrap(), config(2).data());
        assert_eq!(&backend.get_blob_bytes(&digest).await.unwrap()[..], b"blob");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_damaged_in_the_file_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = open(&path).await;
    let good = config(1);
    let damaged = config(2);
    backend.put(good.data().clone()).await.unwrap();
    backend.put(damaged.data().clone()).await.unwrap();
    drop(backend);

    // Damage one config behind the backend's back, through redb itself:
    // one byte inside the content block that holds it.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let wanted = &damaged.data()[..];
        let (block, mut data, at) = txn
            .open_table(CONTENT)
            .unwrap()
            .iter()
            .unwrap()
            .map(Result::unwrap)
            .find_map(|(k, v)| {
                let v = v.value();
                let at = v.windows(wanted.len()).position(|w| w == wanted)?;
                Some((k.value(), v.to_vec(), at))
            })
            .unwrap();
        let amd = at + wanted.windows(5).position(|w| w == b"amd64").unwrap();
        data[amd] = b'A';
        txn.open_table(CONTENT)
            .unwrap()
            .insert(block, data.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    let backend = open(&path).await;
    assert_eq!(backend.get(&good.id()).await.unwrap(), good.data());
    let err = backend.get(&damaged.id()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key: Key::Image(i), .. } if *i == damaged.id()),
        "{err:?}"
    );
    assert!(err.to_string().contains("failed to verify"), "{err}");
    // Opening does not read configs, so the damage is not reported there.
    assert_eq!(backend.load().await.unwrap().images.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_raw_content_is_seen_as_corrupt() {
    // The raw write is the harness's damage hook, which writes the
    // database's tables directly.
    let harness = RedbHarness::temporary();
    let fixture = harness.fixture().await;
    let backend = fixture.store().unwrap();
    let c = config(7);
    // A neighbour stored in the same batch, so next to it in the file.
    let mut batch = WriteBatch::new();
    batch.put(c.clone());
    let neighbour = batch.put(config(8));
    backend.write(batch).await.unwrap();
    fixture
        .corrupt_config(&c.id(), Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let err = backend.get(&c.id()).await.unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(backend.get(&neighbour).await.unwrap(), config(8).data());

    // Empty bytes are damage too, never returned as a config.
    fixture.truncate_config(&c.id()).await.unwrap();
    assert!(matches!(
        backend.get(&c.id()).await.unwrap_err(),
        Error::Corrupt { .. }
    ));
    // Good bytes written the same way read back; the neighbour is intact.
    fixture
        .corrupt_config(&c.id(), c.data().clone())
        .await
        .unwrap();
    assert_eq!(backend.get(&c.id()).await.unwrap(), c.data());
    assert_eq!(backend.get(&neighbour).await.unwrap(), config(8).data());

    // For an image never stored, the raw write makes it appear, as a disk
    // that grew a file would.
    let ghost = ImageId::of_config(b"ghost");
    fixture
        .corrupt_config(&ghost, Bytes::from_static(b"not ghost"))
        .await
        .unwrap();
    assert!(
        backend
            .load()
            .await
            .unwrap()
            .images
            .iter()
            .any(|e| e.id == ghost)
    );
    assert!(matches!(
        backend.get(&ghost).await.unwrap_err(),
        Error::Corrupt { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_and_display() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = open(&path).await;
    let caps = backend.capabilities();
    assert!(caps.persistent && caps.atomic_batch);
    // Blobs are the other trait of the same backend.
    let _blobs: &dyn BlobBackend = &backend;
    assert!(!caps.shared);
    assert_eq!(backend.to_string(), format!("redb://{}", path.display()));
    assert_eq!(backend.path(), path);
}

/// A deterministic shuffle (Fisher–Yates over a fixed linear congruential
/// sequence), so that a failure can be replayed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// Checks that `backend` holds exactly `want` (config number → parent
/// value), through `load`, `get` and `get_metadata`.
async fn assert_holds(backend: &RedbBackend, want: &[(ImageId, usize, String)]) {
    let mut sorted: Vec<&(ImageId, usize, String)> = want.iter().collect();
    sorted.sort_by_key(|(id, _, _)| *id);
    let snap = backend.load().await.unwrap();
    assert!(snap.quarantined.is_empty(), "{:?}", snap.quarantined);
    assert_eq!(
        snap.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        sorted.iter().map(|(id, _, _)| *id).collect::<Vec<_>>()
    );
    for (entry, (_, _, parent)) in snap.images.iter().zip(&sorted) {
        assert_eq!(
            entry.metadata(&MetadataKey::PARENT).unwrap(),
            parent.as_bytes()
        );
    }
    for (id, n, parent) in want {
        assert_eq!(backend.get(id).await.unwrap(), config(*n).data());
        assert_eq!(
            backend
                .get_metadata(id, &MetadataKey::PARENT)
                .await
                .unwrap(),
            parent.as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffled_batches_of_ids_sharing_prefixes_read_back_after_reopen() {
    // Among 3,000 random IDs, dozens share their first two bytes: keep
    // those, plus others, and store them in a shuffled order.
    let mut all: Vec<(ImageId, usize)> = (0..3000).map(|n| (config(n).id(), n)).collect();
    all.sort();
    let shares = |i: usize| {
        let p = |j: usize| all[j].0.to_bytes()[..2].to_vec();
        (i > 0 && p(i - 1) == p(i)) || (i + 1 < all.len() && p(i + 1) == p(i))
    };
    let mut chosen: Vec<usize> = (0..all.len())
        .filter(|&i| shares(i) || i % 3 == 0)
        .map(|i| all[i].1)
        .collect();
    let sharing = (0..all.len()).filter(|&i| shares(i)).count();
    assert!(sharing > 40, "only {sharing} IDs share a prefix");
    shuffle(&mut chosen, 7);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = open(&path).await;
    let mut want: Vec<(ImageId, usize, String)> = Vec::new();
    // Batch sizes that leave runs of several sizes to be merged.
    let sizes = [1usize, 1, 1, 1, 1, 300, 7, 2, 400, 1, 1, 50];
    let mut rest = &chosen[..];
    for (k, &size) in sizes.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        let mut batch = WriteBatch::new();
        for &n in now {
            let id = batch.put(config(n));
            let parent = format!("parent {n}");
            batch.set_metadata(id, MetadataKey::PARENT, parent.clone());
            want.push((id, n, parent));
        }
        // Storing an image again, from this batch or an earlier one,
        // changes nothing.
        batch.put(config(now[0]));
        if let Some((_, earlier, _)) = want.first() {
            batch.put(config(*earlier));
        }
        backend.write(batch).await.unwrap();
        if k % 5 == 0 {
            assert_holds(&backend, &want).await;
        }
    }
    drop(backend);
    let backend = open(&path).await;
    assert_holds(&backend, &want).await;

    // One batch deletes some images, changes others, and deletes and stores
    // again a third group, spread over every run.
    let mut batch = WriteBatch::new();
    let mut kept = Vec::new();
    for (i, (id, n, parent)) in want.iter().enumerate() {
        match i % 4 {
            0 => batch.delete(*id),
            1 => {
                let changed = format!("changed {n}");
                batch.set_metadata(*id, MetadataKey::PARENT, changed.clone());
                kept.push((*id, *n, changed));
            }
            2 => {
                batch.delete(*id);
                batch.put(config(*n));
                batch.set_metadata(*id, MetadataKey::PARENT, "again");
                kept.push((*id, *n, "again".to_owned()));
            }
            _ => kept.push((*id, *n, parent.clone())),
        }
    }
    backend.write(batch).await.unwrap();
    assert_holds(&backend, &kept).await;
    drop(backend);
    let backend = open(&path).await;
    assert_holds(&backend, &kept).await;
    for (id, _, _) in want.iter().step_by(4) {
        assert!(backend.get(id).await.unwrap_err().is_not_found());
    }
}

/// The table of names, as the module documentation describes it.
const NAMES: TableDefinition<'_, &str, &[u8; 32]> = TableDefinition::new("names");

#[tokio::test(flavor = "multi_thread")]
async fn names_survive_a_reopen_and_a_file_without_the_table_gains_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = open(&path).await;
    let a = backend.put(config(1).data().clone()).await.unwrap();
    let b = backend.put(config(2).data().clone()).await.unwrap();
    let latest: imagecache_core::Reference = "app:latest".parse().unwrap();
    backend.set_name(&latest, &a).await.unwrap();
    let mut batch = WriteBatch::new();
    batch.set_name("ghcr.io/x/y:1".parse().unwrap(), b);
    batch.delete(b);
    backend.write(batch).await.unwrap();
    drop(backend);

    // Names are kept in full, and a deleted image took its names along.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table = txn.open_table(NAMES).unwrap();
            let stored: Vec<(String, [u8; 32])> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_owned(), *v.value())
                })
                .collect();
            assert_eq!(
                stored,
                vec![("docker.io/library/app:latest".to_owned(), a.to_bytes())],
                "names are kept in full, and a deleted image takes its names"
            );
        }
        txn.commit().unwrap();
    }
    let backend = open(&path).await;
    assert_eq!(backend.load().await.unwrap().names, vec![(latest, a)]);
    drop(backend);
    // A file from before names existed has no table; opening makes it.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(NAMES).unwrap();
        txn.commit().unwrap();
    }
    let backend = open(&path).await;
    assert!(backend.load().await.unwrap().names.is_empty());
    backend
        .set_name(&"app:2".parse().unwrap(), &a)
        .await
        .unwrap();
    assert_eq!(backend.load().await.unwrap().names.len(), 1);
}
