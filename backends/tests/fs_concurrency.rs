//! Many writers on one image's metadata, through several handles opened on
//! one directory (as several processes would), with loads running at the
//! same time: every load after the writers finish must report exactly the
//! metadata files on disk.

#![cfg(feature = "fs")]
// Helpers of a test crate panic on any failure: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{
    ImageId, MetadataKey, Snapshot, StoreBackend, StoreBackendExt as _, WriteBatch,
};
use tokio::sync::Barrier;

/// Writers per round.
const WRITERS: usize = 8;
/// Handles opened on the directory.
const HANDLES: usize = 3;
/// Rounds, each on a fresh image (the first writes to an image, when its
/// metadata directory does not exist yet, race the hardest).
const ROUNDS: usize = 30;

fn key(s: &str) -> MetadataKey {
    MetadataKey::new(s).unwrap()
}

/// The metadata files of an image as they are on disk, temp files aside.
fn on_disk(root: &Path, id: &ImageId) -> BTreeMap<String, Bytes> {
    let dir = root.join("metadata/sha256").join(id.hex());
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.starts_with(".tmp-") {
            continue;
        }
        out.insert(name, Bytes::from(fs::read(e.path()).unwrap()));
    }
    out
}

fn reported(snapshot: &Snapshot, id: &ImageId) -> BTreeMap<String, Bytes> {
    let entry = snapshot
        .images
        .iter()
        .find(|e| e.id == *id)
        .expect("the image is reported");
    entry
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
        .collect()
}

/// One round: every writer sets its own key and the shared `last` key on
/// one fresh image, each write its own batch, all released at once; one
/// task loads meanwhile. Returns the image.
async fn round(handles: &[Arc<FsBackend>], n: usize) -> ImageId {
    let config = Bytes::from(format!(r#"{{"rootfs":{{}},"round":{n}}}"#));
    let id = handles[0].put(config).await.unwrap();
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let done = Arc::new(AtomicBool::new(false));

    let loader = {
        let b = Arc::clone(&handles[HANDLES - 1]);
        let start = Arc::clone(&start);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            start.wait().await;
            while !done.load(Ordering::SeqCst) {
                b.load().await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let b = Arc::clone(&handles[i % HANDLES]);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut batch = WriteBatch::new();
                batch.set_metadata(id, key(&format!("seen-by-{i}")), format!("writer-{i}"));
                b.write(batch).await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_metadata_writers_through_several_handles_match_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut handles = Vec::new();
    for _ in 0..HANDLES {
        handles.push(Arc::new(FsBackend::open(root).await.unwrap()));
    }
    let mut failures = Vec::new();
    for n in 0..ROUNDS {
        let id = round(&handles, n).await;
        let disk = on_disk(root, &id);
        assert_eq!(disk.len(), WRITERS, "every writer's file is on disk");
        // Every handle, and a handle opened afresh, must agree with the disk.
        let fresh = FsBackend::open(root).await.unwrap();
        let mut loads: Vec<(String, Snapshot)> = Vec::new();
        for (h, b) in handles.iter().enumerate() {
            loads.push((format!("handle {h}"), b.load().await.unwrap()));
        }
        loads.push(("a fresh handle".to_owned(), fresh.load().await.unwrap()));
        for (who, snapshot) in loads {
            let got = reported(&snapshot, &id);
            if got != disk {
                failures.push(format!(
                    "round {n}, {who}: load reported keys {:?}, disk has {:?}",
                    got.keys().collect::<Vec<_>>(),
                    disk.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} loads differed from the disk:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
