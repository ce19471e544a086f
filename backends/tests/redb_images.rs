//! Image configs, metadata and batches on the redb backend, seen from outside.
#![cfg(feature = "redb")]
// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use imagecache_backends::redb::{Durability, RedbBackend, RedbConfig};
use imagecache_core::{
    Content, Error, ImageId, Key, MetadataKey, StoreBackend, StoreBackendExt, WriteBatch,
};
use redb::{ReadableTable as _, TableDefinition};

/// Tables as the module documentation describes them.
const CONTENT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("content");
const IDS: TableDefinition<'_, &[u8; 32], (u64, u64)> = TableDefinition::new("ids");

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

    // Damage one config behind the backend's back, through redb itself.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let (seq, _) = txn
            .open_table(IDS)
            .unwrap()
            .get(&damaged.id().to_bytes())
            .unwrap()
            .unwrap()
            .value();
        txn.open_table(CONTENT)
            .unwrap()
            .insert(seq, &b"{\"rootfs\":{}, \"evil\":1}"[..])
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
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("db.redb")).await;
    let c = config(7);
    backend.put(c.data().clone()).await.unwrap();
    backend
        .insert_raw_content(c.id(), Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let err = backend.get(&c.id()).await.unwrap_err();
    assert!(matches!(&err, Error::Corrupt { .. }), "{err:?}");

    // Empty bytes are damage too, never returned as a config.
    backend
        .insert_raw_content(c.id(), Bytes::new())
        .await
        .unwrap();
    assert!(matches!(
        backend.get(&c.id()).await.unwrap_err(),
        Error::Corrupt { .. }
    ));

    // For an image never stored, the raw write makes it appear, as a disk
    // that grew a file would.
    let ghost = ImageId::of_config(b"ghost");
    backend
        .insert_raw_content(ghost, Bytes::from_static(b"not ghost"))
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
    assert!(caps.persistent && caps.atomic_batch && caps.blobs);
    assert!(!caps.shared);
    assert_eq!(backend.to_string(), format!("redb://{}", path.display()));
    assert_eq!(backend.path(), path);
}
