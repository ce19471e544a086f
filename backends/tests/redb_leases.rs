//! Leases in the redb backend: the `leases` table survives a reopen, and a
//! record damaged in the file is reported by a load, refused by `leases`
//! (never silently dropped), repaired by a write of its ID, and never a
//! panic.
#![cfg(feature = "redb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use imagecache_backends::redb::RedbBackend;
use imagecache_core::{
    Error, Key, Lease, LeaseId, LeaseResource, StoreBackend, StoreBackendExt as _, WriteBatch,
};

fn lease(id: &str) -> Lease {
    let mut lease = Lease::new(LeaseId::new(id).unwrap(), Duration::from_secs(3600));
    lease
        .resources
        .insert(LeaseResource::Blob(imagecache_core::Digest::sha256(
            id.as_bytes(),
        )));
    lease
}

/// Writes raw entries into the `leases` table, below every check of the
/// backend, as damage in the file would leave them.
fn plant(path: &Path, entries: &[(&str, &[u8])]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("leases");
        let mut table = txn.open_table(table).unwrap();
        for (key, value) in entries {
            table.insert(*key, *value).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (a, z) = (lease("a"), lease("z"));
    {
        let b = RedbBackend::open(&path).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.set_lease(z.clone());
        batch.set_lease(lease("gone"));
        batch.set_lease(a.clone());
        batch.delete_lease(LeaseId::new("gone").unwrap());
        b.write(batch).await.unwrap();
    }
    let b = RedbBackend::open(&path).await.unwrap();
    assert_eq!(b.leases().await.unwrap(), vec![a.clone(), z.clone()]);
    assert_eq!(b.load().await.unwrap().leases, vec![a, z]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_lease_records_are_reported_and_refused_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let good = lease("good");
    {
        let b = RedbBackend::open(&path).await.unwrap();
        b.set_lease(good.clone()).await.unwrap();
        b.set_lease(lease("bad")).await.unwrap();
    }
    let other = lease("other").encode();
    plant(
        &path,
        &[
            ("bad", b"{\"id\":\"bad\",\"created\":"),
            ("swapped", &other),
            ("not a lease id", &good.encode()),
        ],
    );

    let b = RedbBackend::open(&path).await.unwrap();
    let snapshot = b.load().await.unwrap();
    assert_eq!(snapshot.leases, vec![good.clone()]);
    let reported: Vec<&str> = snapshot
        .quarantined
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    assert_eq!(
        reported,
        vec![
            "redb leases entry \"bad\"",
            "redb leases entry \"not a lease id\"",
            "redb leases entry \"swapped\"",
        ]
    );
    let err = b.leases().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key: Key::Other(k), .. } if k == "redb leases entry \"bad\""),
        "{err:?}"
    );

    // A write of the ID replaces or removes the damaged record. The entry
    // under a name no lease can have is reported, but holds no lease, so
    // it does not stop `leases`.
    let repaired = lease("bad");
    b.set_lease(repaired.clone()).await.unwrap();
    b.delete_lease(&LeaseId::new("swapped").unwrap())
        .await
        .unwrap();
    assert_eq!(b.leases().await.unwrap(), vec![repaired, good]);
    let snapshot = b.load().await.unwrap();
    assert_eq!(snapshot.quarantined.len(), 1, "{:?}", snapshot.quarantined);
}
