use super::images::{BLOCKS, QUARANTINE};
use super::record::{BlockWriter, QuarantineEntry, Record, block_entries};
use super::*;
use bytes::Bytes;
use imagecache_core::{
    Content, Error as CoreError, MetadataKey, Quarantined, Snapshot, StoreBackend as _,
    StoreBackendExt as _, WriteBatch,
};
use redb::{ReadableDatabase as _, ReadableTableMetadata as _};

fn content(n: u32) -> Content {
    Content::new(format!("{{\"rootfs\":{{}},\"n\":{n}}}")).unwrap()
}

async fn fresh() -> (tempfile::TempDir, RedbBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    (dir, backend)
}

#[tokio::test(flavor = "multi_thread")]
async fn same_batch_metadata_and_summary_are_encoded_once() {
    let (_dir, backend) = fresh().await;
    let c = content(1);
    let id = c.id();
    let mut batch = WriteBatch::new();
    batch.put(c.clone());
    batch.set_metadata(id, MetadataKey::PARENT, "p");
    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
    batch.set_summary(id, "s1");
    batch.delete_metadata(id, MetadataKey::PARENT);
    batch.set_summary(id, "s2");
    // A second put of the same content keeps what the batch built.
    batch.put(c);
    backend.write(batch).await.unwrap();

    let snap = backend.load().await.unwrap();
    assert_eq!(snap.images.len(), 1);
    let e = &snap.images[0];
    assert_eq!(e.id, id);
    assert_eq!(e.metadata.len(), 1);
    assert_eq!(&e.metadata(&MetadataKey::BUILT_LOCALLY).unwrap()[..], &[1]);
    assert_eq!(e.summary.as_deref(), Some(&b"s2"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_then_put_in_one_batch_starts_clean() {
    let (_dir, backend) = fresh().await;
    let c = content(2);
    let id = c.id();
    let mut batch = WriteBatch::new();
    batch.put(c.clone());
    batch.set_metadata(id, MetadataKey::PARENT, "p");
    backend.write(batch).await.unwrap();

    let mut batch = WriteBatch::new();
    batch.delete(id);
    batch.put(c.clone());
    backend.write(batch).await.unwrap();
    assert_eq!(backend.get(&id).await.unwrap(), c.data());
    let err = backend
        .get_metadata(&id, &MetadataKey::PARENT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            CoreError::NotFound {
                key: Key::Metadata { .. }
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_keeps_bytes_and_record_for_inspection() {
    let (dir, backend) = fresh().await;
    let c = content(3);
    let id = c.id();
    let mut batch = WriteBatch::new();
    batch.put(c.clone());
    batch.set_metadata(id, MetadataKey::PARENT, "p");
    batch.quarantine(id, "hash mismatch");
    backend.write(batch).await.unwrap();

    let snap = backend.load().await.unwrap();
    assert!(snap.images.is_empty());
    assert_eq!(
        snap.quarantined,
        vec![Quarantined {
            name: id.to_string(),
            reason: "hash mismatch".into()
        }]
    );
    assert!(backend.get(&id).await.unwrap_err().is_not_found());
    drop(backend);

    let db = redb::Database::open(dir.path().join("db.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(QUARANTINE).unwrap();
    let raw = Bytes::copy_from_slice(table.get(&id.to_bytes()).unwrap().unwrap().value());
    let entry = QuarantineEntry::decode(&raw).unwrap();
    assert_eq!(entry.content, c.data());
    let record = Record::decode(&entry.record).unwrap();
    assert_eq!(&record.get(&MetadataKey::PARENT).unwrap()[..], b"p");
}

/// Rewrites the record of `id` inside its index block, as a damaged
/// disk would.
fn damage_record(path: &Path, id: &ImageId, record: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let runs = index::runs(&txn.open_table(index::RUNS).unwrap()).unwrap();
        let block = index::find(
            &txn.open_table(index::CHUNKS).unwrap(),
            &runs,
            &id.to_bytes(),
        )
        .unwrap()
        .unwrap()
        .location
        .block;
        let mut blocks = txn.open_table(BLOCKS).unwrap();
        let old = blocks.get(block).unwrap().unwrap().value().to_vec();
        let mut out = BlockWriter::new();
        for entry in block_entries(&old) {
            let (key, range) = entry.unwrap();
            if key == id.to_bytes() {
                out.push(&key, record);
            } else {
                out.push(&key, &old[range]);
            }
        }
        blocks.insert(block, out.as_bytes()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_record_is_reported_not_hidden() {
    let (dir, backend) = fresh().await;
    let good = backend.put(content(4).into_data()).await.unwrap();
    let bad = backend.put(content(5).into_data()).await.unwrap();
    drop(backend);
    damage_record(&dir.path().join("db.redb"), &bad, &[9, 9, 9]);

    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    let snap = backend.load().await.unwrap();
    assert_eq!(snap.images.iter().map(|e| e.id).collect::<Vec<_>>(), [good]);
    assert_eq!(snap.quarantined.len(), 1);
    assert_eq!(snap.quarantined[0].name, bad.to_string());
    assert!(snap.quarantined[0].reason.contains("cannot be decoded"));

    let err = backend
        .get_metadata(&bad, &MetadataKey::PARENT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::Corrupt { key: Key::Image(i), .. } if *i == bad),
        "{err:?}"
    );
    let mut batch = WriteBatch::new();
    batch.set_metadata(bad, MetadataKey::PARENT, "p");
    let err = backend.write(batch).await.unwrap_err();
    assert!(matches!(&err, CoreError::Corrupt { .. }), "{err:?}");

    // The store can still set it aside, keeping the damaged record.
    let mut batch = WriteBatch::new();
    batch.quarantine(bad, "undecodable record");
    backend.write(batch).await.unwrap();
    let snap = backend.load().await.unwrap();
    assert_eq!(snap.quarantined.len(), 1);
    assert_eq!(snap.quarantined[0].reason, "undecodable record");
    assert_eq!(snap.images.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_images_span_blocks_and_load_in_id_order() {
    let (dir, backend) = fresh().await;
    // Enough records for several blocks, in batches of different sizes,
    // then single creates that fill the last block.
    let mut ids = Vec::new();
    let mut n = 0;
    for size in [700usize, 1, 300, 1, 1] {
        let mut batch = WriteBatch::new();
        for _ in 0..size {
            let id = batch.put(content(n));
            batch.set_metadata(id, MetadataKey::PARENT, format!("parent {n}"));
            batch.set_summary(id, vec![n as u8; 100]);
            ids.push((id, n));
            n += 1;
        }
        backend.write(batch).await.unwrap();
    }
    ids.sort();
    let check = |snap: &Snapshot, ids: &[(ImageId, u32)]| {
        assert_eq!(
            snap.images.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        for (e, (_, n)) in snap.images.iter().zip(ids) {
            assert_eq!(
                e.metadata(&MetadataKey::PARENT).unwrap(),
                &format!("parent {n}")
            );
            assert_eq!(e.summary.as_deref(), Some(&vec![*n as u8; 100][..]));
        }
        assert!(snap.quarantined.is_empty(), "{:?}", snap.quarantined);
    };
    check(&backend.load().await.unwrap(), &ids);

    // Update and delete images spread over every block, in one batch.
    let mut batch = WriteBatch::new();
    let mut kept = Vec::new();
    for (i, (id, n)) in ids.iter().enumerate() {
        match i % 3 {
            0 => batch.delete(*id),
            1 => {
                batch.set_metadata(*id, MetadataKey::PARENT, format!("parent {}", n + 1));
                kept.push((*id, n + 1));
            }
            _ => kept.push((*id, *n)),
        }
    }
    // The summaries were written with the old numbers.
    backend.write(batch).await.unwrap();
    let snap = backend.load().await.unwrap();
    assert_eq!(snap.images.len(), kept.len());
    for (e, (id, n)) in snap.images.iter().zip(&kept) {
        assert_eq!(e.id, *id);
        assert_eq!(
            e.metadata(&MetadataKey::PARENT).unwrap(),
            &format!("parent {n}")
        );
    }
    for (id, _) in ids.iter().step_by(3) {
        assert!(backend.get(id).await.unwrap_err().is_not_found());
    }
    for (id, _) in &kept {
        backend.get(id).await.unwrap();
    }

    // Deleting everything removes every block and every index entry.
    let mut batch = WriteBatch::new();
    for (id, _) in &kept {
        batch.delete(*id);
    }
    backend.write(batch).await.unwrap();
    assert!(backend.load().await.unwrap().images.is_empty());
    drop(backend);
    let db = redb::Database::open(dir.path().join("db.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.open_table(BLOCKS).unwrap().len().unwrap(), 0);
    assert_eq!(txn.open_table(index::CHUNKS).unwrap().len().unwrap(), 0);
    assert_eq!(txn.open_table(index::RUNS).unwrap().len().unwrap(), 0);
    assert_eq!(txn.open_table(images::CONTENT).unwrap().len().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_of_many_blocks_loads_sorted_and_reports_damage() {
    let (dir, backend) = fresh().await;
    // About 30 blocks: enough for both threads to share the work.
    let mut ids = Vec::new();
    for chunk in 0..4u32 {
        let mut batch = WriteBatch::new();
        for i in 0..1000 {
            let n = chunk * 1000 + i;
            let id = batch.put(content(n));
            batch.set_metadata(id, MetadataKey::PARENT, format!("p{n}"));
            batch.set_summary(id, vec![n as u8; 200]);
            ids.push((id, n));
        }
        backend.write(batch).await.unwrap();
    }
    drop(backend);
    let path = dir.path().join("db.redb");
    let blocks = {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        txn.open_table(BLOCKS).unwrap().len().unwrap()
    };
    assert!(blocks > 20, "{blocks} blocks");
    let (bad, _) = ids[1234];
    damage_record(&path, &bad, &[7, 7]);

    let backend = RedbBackend::open(&path).await.unwrap();
    let snap = backend.load().await.unwrap();
    ids.retain(|(id, _)| *id != bad);
    ids.sort();
    assert_eq!(
        snap.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    for (e, (_, n)) in snap.images.iter().zip(&ids) {
        assert_eq!(e.metadata(&MetadataKey::PARENT).unwrap(), &format!("p{n}"));
        assert_eq!(e.summary.as_deref(), Some(&vec![*n as u8; 200][..]));
    }
    assert_eq!(snap.quarantined.len(), 1, "{:?}", snap.quarantined);
    assert_eq!(snap.quarantined[0].name, bad.to_string());
}

/// Asserts that `err` is a configuration error of this backend.
fn assert_config(err: &CoreError) {
    assert!(
        matches!(
            err,
            CoreError::Config {
                backend: "redb",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Opens a store whose file records layout version `format`, and
/// returns the error, after checking it is a configuration error.
async fn open_with_format(format: u64) -> CoreError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT, format)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbBackend::open(&path).await.unwrap_err();
    assert_config(&err);
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_layout_version_is_refused_with_advice() {
    let err = open_with_format(FORMAT - 1).await;
    let text = err.to_string();
    assert!(text.contains("version 1"), "{text}");
    assert!(text.contains("recreate the store"), "{text}");
    assert!(text.contains("db.redb"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_stay_near_their_target_size() {
    let (dir, backend) = fresh().await;
    for chunk in 0..4u32 {
        let mut batch = WriteBatch::new();
        for i in 0..500 {
            let id = batch.put(content(chunk * 1000 + i));
            batch.set_summary(id, vec![0u8; 200]);
        }
        backend.write(batch).await.unwrap();
    }
    for i in 0..50 {
        backend.put(content(10_000 + i).into_data()).await.unwrap();
    }
    drop(backend);
    let db = redb::Database::open(dir.path().join("db.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let blocks: Vec<Vec<u8>> = txn
        .open_table(BLOCKS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value().to_vec())
        .collect();
    let sizes: Vec<usize> = blocks.iter().map(Vec::len).collect();
    let total: usize = sizes.iter().sum();
    assert!(
        sizes.iter().all(|&s| s <= record::BLOCK_TARGET),
        "{sizes:?}"
    );
    // Every block but the last is more than three quarters full.
    assert!(
        sizes[..sizes.len() - 1]
            .iter()
            .all(|&s| s > record::BLOCK_TARGET * 3 / 4),
        "{sizes:?}"
    );
    assert!(total > 4 * record::BLOCK_TARGET, "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_layout_version_is_refused() {
    let err = open_with_format(FORMAT + 1).await;
    assert!(err.to_string().contains("version 3"), "{err}");
    assert!(err.to_string().contains("later version"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.redb");
    std::fs::write(&path, b"").unwrap();
    let err = RedbBackend::open(&path).await.unwrap_err();
    assert_config(&err);
    assert!(err.to_string().contains("empty.redb"), "{err}");
    assert!(err.to_string().contains("empty file"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // Where there was nothing, a database is created.
    let fresh = dir.path().join("fresh.redb");
    RedbBackend::open(&fresh).await.unwrap();
    assert!(std::fs::metadata(&fresh).unwrap().len() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_database_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let err = RedbBackend::open(&path).await.unwrap_err();
    assert_config(&err);
    assert!(err.to_string().contains("db.redb"), "{err}");
    // It was not overwritten.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5au8; 8192]);
}
