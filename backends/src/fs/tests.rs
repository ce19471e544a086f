//! Tests of the backend's internals: the index files and how loads and
//! writes keep them.

use std::fs;

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey, StoreBackend as _, StoreBackendExt as _, WriteBatch};

use super::FsBackend;
use super::files::Token;
use super::index::{IndexFiles, Record, Update};

fn id(n: u32) -> ImageId {
    ImageId::of_config(format!("{{\"n\":{n}}}").as_bytes())
}

fn summary_update(n: u32, summary: Bytes) -> Record {
    Record::Update(Update {
        id: id(n),
        put: true,
        pre: Token::Absent,
        post: Token::Absent,
        changes: Vec::new(),
        summary: Some(summary),
    })
}

#[test]
fn large_journal_is_folded_into_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let files = IndexFiles::open(dir.path()).unwrap();
    let big = Bytes::from(vec![7u8; 1 << 20]);
    for n in 0..20 {
        files.append(&[summary_update(n, big.clone())]).unwrap();
    }
    let journal = fs::metadata(dir.path().join("journal")).unwrap().len();
    assert!(journal < 8 << 20, "journal was compacted ({journal} bytes)");
    assert!(dir.path().join("index").exists());
    let loaded = files.read().unwrap();
    assert_eq!(loaded.entries.len(), 20);
    assert!(
        loaded
            .entries
            .values()
            .all(|e| e.summary.as_ref() == Some(&big))
    );
}

#[test]
fn rewriting_after_a_load_keeps_records_appended_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let ours = IndexFiles::open(dir.path()).unwrap();
    let theirs = IndexFiles::open(dir.path()).unwrap();
    ours.append(&[summary_update(1, Bytes::from_static(b"one"))])
        .unwrap();
    let loaded = ours.read().unwrap();
    assert!(loaded.stale);
    theirs
        .append(&[summary_update(2, Bytes::from_static(b"two"))])
        .unwrap();
    ours.store_after_load(
        loaded.journal,
        loaded.snapshot_header,
        loaded.entries.iter(),
    )
    .unwrap();
    let again = theirs.read().unwrap();
    assert_eq!(again.entries.len(), 2);
    assert_eq!(
        again.entries[&id(2)].summary,
        Some(Bytes::from_static(b"two"))
    );
    // And the other handle appends to the new journal, not the replaced one.
    theirs
        .append(&[summary_update(3, Bytes::from_static(b"three"))])
        .unwrap();
    assert_eq!(ours.read().unwrap().entries.len(), 3);
}

#[test]
fn a_load_does_not_overwrite_a_newer_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let ours = IndexFiles::open(dir.path()).unwrap();
    let theirs = IndexFiles::open(dir.path()).unwrap();
    ours.append(&[summary_update(1, Bytes::from_static(b"one"))])
        .unwrap();
    let loaded = ours.read().unwrap();
    // Another process loads and rewrites the index first, with more in it.
    theirs
        .append(&[summary_update(2, Bytes::from_static(b"two"))])
        .unwrap();
    let their_load = theirs.read().unwrap();
    theirs
        .store_after_load(
            their_load.journal,
            their_load.snapshot_header,
            their_load.entries.iter(),
        )
        .unwrap();
    ours.store_after_load(
        loaded.journal,
        loaded.snapshot_header,
        loaded.entries.iter(),
    )
    .unwrap();
    assert_eq!(ours.read().unwrap().entries.len(), 2);
}

#[tokio::test]
async fn a_load_folds_the_journal_and_a_quiet_load_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let mut batch = WriteBatch::new();
    let image =
        batch.put(imagecache_core::Content::new(Bytes::from_static(b"{\"rootfs\":{}}")).unwrap());
    batch.set_metadata(image, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    batch.set_summary(image, "s");
    b.write(batch).await.unwrap();
    let journal = dir.path().join("imagecache/journal");
    let index = dir.path().join("imagecache/index");
    assert!(fs::metadata(&journal).unwrap().len() > 16);

    let first = b.load().await.unwrap();
    assert_eq!(
        fs::metadata(&journal).unwrap().len(),
        16,
        "only the header is left"
    );
    let written = fs::metadata(&index).unwrap().modified().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&index).unwrap());

    let second = b.load().await.unwrap();
    assert_eq!(first, second);
    let meta = fs::metadata(&index).unwrap();
    assert_eq!(meta.modified().unwrap(), written);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "a quiet load rewrites nothing"
    );

    b.delete(&image).await.unwrap();
    assert!(b.load().await.unwrap().images.is_empty());
    assert!(
        b.get_metadata(&image, &MetadataKey::BUILT_LOCALLY)
            .await
            .unwrap_err()
            .is_not_found()
    );
}
