//! Leases in the `fs` backend: one JSON file per lease in the backend's
//! own `imagecache/leases/`, never in Docker's directories; they survive a
//! reopen; a damaged file is reported, never a panic, and never silently
//! dropped from `leases`; a batch cut short leaves its leases holding.
#![cfg(feature = "fs")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{
    Content, Error, ImageId, Key, Lease, LeaseId, LeaseResource, StoreBackend,
    StoreBackendExt as _, WriteBatch, WriteOp,
};

fn lease(id: &str, resources: &[LeaseResource]) -> Lease {
    let mut lease = Lease::new(LeaseId::new(id).unwrap(), Duration::from_secs(3600));
    lease.labels.insert("owner".into(), format!("test {id}"));
    lease.resources.extend(resources.iter().copied());
    lease
}

fn leases_dir(root: &Path) -> PathBuf {
    root.join("imagecache/leases")
}

/// Every file below `dir`, as paths relative to it.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_files_of_their_own_beside_docker_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("image/overlay2/imagedb");
    let b = FsBackend::open(&root).await.unwrap();
    let held = ImageId::of_config(b"held");
    let a = lease("build-1", &[LeaseResource::Image(held)]);
    let c = lease("pull-2", &[]);
    let mut batch = WriteBatch::new();
    batch.set_lease(a.clone());
    batch.set_lease(c.clone());
    b.write(batch).await.unwrap();

    let file = leases_dir(&root).join("build-1.json");
    assert_eq!(std::fs::read(&file).unwrap(), a.encode().to_vec());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "lease files are private, as every file here");
    assert_eq!(
        files_below(&leases_dir(&root)),
        vec!["build-1.json", "pull-2.json"],
        "one file per lease and no temp file left behind"
    );
    // Docker's directories and names file are untouched.
    assert!(files_below(&root.join("content")).is_empty());
    assert!(files_below(&root.join("metadata")).is_empty());
    assert!(!b.names_file().exists());

    b.delete_lease(&a.id).await.unwrap();
    assert!(!file.exists());
    assert_eq!(b.leases().await.unwrap(), vec![c]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expired = {
        let mut l = lease("expired", &[]);
        l.expires = l.created;
        l
    };
    let kept = lease(
        "kept",
        &[LeaseResource::Blob(imagecache_core::Digest::sha256(b"x"))],
    );
    {
        let b = FsBackend::open(dir.path()).await.unwrap();
        b.set_lease(kept.clone()).await.unwrap();
        b.set_lease(expired.clone()).await.unwrap();
        b.set_lease(lease("removed", &[])).await.unwrap();
        b.delete_lease(&LeaseId::new("removed").unwrap())
            .await
            .unwrap();
    }
    let b = FsBackend::open(dir.path()).await.unwrap();
    let want = vec![expired, kept];
    assert_eq!(b.leases().await.unwrap(), want);
    assert_eq!(b.load().await.unwrap().leases, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_lease_files_are_reported_and_refused_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let good = lease("good", &[]);
    b.set_lease(good.clone()).await.unwrap();
    let leases = leases_dir(dir.path());
    let bad = leases.join("bad.json");
    let swapped = leases.join("swapped.json");
    let huge = leases.join("huge.json");
    let folder = leases.join("folder.json");
    std::fs::write(&bad, b"{\"id\":\"bad\",").unwrap();
    std::fs::write(&swapped, lease("other", &[]).encode()).unwrap();
    // Sparse: never read whole, refused by its length.
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(imagecache_core::MAX_LEASE_RECORD as u64 + 1)
        .unwrap();
    drop(f);
    std::fs::create_dir(&folder).unwrap();
    // Not named after a lease, or a writer's temp file: not leases at all.
    std::fs::write(leases.join("README"), b"hands off").unwrap();
    std::fs::write(leases.join("bad id!.json"), b"x").unwrap();
    std::fs::write(leases.join(".tmp-good.json123"), b"half").unwrap();

    let snapshot = b.load().await.unwrap();
    assert_eq!(snapshot.leases, vec![good.clone()]);
    let reported: Vec<&str> = snapshot
        .quarantined
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    let damaged = [&bad, &folder, &huge, &swapped].map(|p| p.display().to_string());
    assert_eq!(
        reported,
        damaged.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let why = |p: &Path| {
        snapshot
            .quarantined
            .iter()
            .find(|q| q.name == p.display().to_string())
            .map(|q| q.reason.clone())
            .unwrap()
    };
    assert!(why(&swapped).contains("lease other"), "{}", why(&swapped));
    assert!(why(&folder).contains("directory"), "{}", why(&folder));
    assert!(why(&huge).contains("bytes"), "{}", why(&huge));

    // A list that lacks a stored lease would let a collector remove what
    // it holds: `leases` refuses, naming a damaged file.
    let err = b.leases().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key: Key::Other(k), .. } if damaged.contains(k)),
        "{err:?}"
    );

    // Storing or removing a lease of a damaged file's ID repairs it.
    let repaired = lease("bad", &[]);
    b.set_lease(repaired.clone()).await.unwrap();
    b.delete_lease(&LeaseId::new("swapped").unwrap())
        .await
        .unwrap();
    b.delete_lease(&LeaseId::new("huge").unwrap())
        .await
        .unwrap();
    // A directory is not removed for a lease: that is for whoever made it.
    let refused = b.delete_lease(&LeaseId::new("folder").unwrap()).await;
    assert!(refused.is_err(), "{refused:?}");
    std::fs::remove_dir(&folder).unwrap();

    assert_eq!(b.leases().await.unwrap(), vec![repaired, good]);
    let snapshot = b.load().await.unwrap();
    assert!(
        snapshot.quarantined.is_empty(),
        "{:?}",
        snapshot.quarantined
    );
    assert!(leases.join("README").exists() && leases.join("bad id!.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_leaves_its_leases_holding_more_never_less() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let old = lease("old", &[]);
    b.set_lease(old.clone()).await.unwrap();
    // A directory where the config must go makes the image write fail
    // after validation, midway through the batch.
    let content = Content::new(Bytes::from_static(br#"{"rootfs":{}}"#)).unwrap();
    let id = content.id();
    std::fs::create_dir(dir.path().join("content/sha256").join(id.hex())).unwrap();
    let new = lease("new", &[LeaseResource::Image(id)]);
    let result = b
        .write(WriteBatch::from(vec![
            WriteOp::DeleteLease { id: old.id.clone() },
            WriteOp::Put(content),
            WriteOp::SetLease(new.clone()),
        ]))
        .await;
    assert!(result.is_err(), "the config cannot be written: {result:?}");
    // The new lease was stored before the image; the old one is removed
    // only after everything else succeeds.
    assert_eq!(b.leases().await.unwrap(), vec![new, old]);
}
