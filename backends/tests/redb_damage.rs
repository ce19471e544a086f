//! A redb file damaged byte by byte: whatever redb makes of it — refusing
//! it, reading garbage it can check, panicking on a check that only holds
//! for files it wrote — the backend answers with a typed error (`Corrupt`
//! when the file is damaged) or with data that passed verification, and
//! never lets a panic or an untyped "task failed" through.
#![cfg(feature = "redb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use imagecache_backends::redb::RedbBackend;
use imagecache_core::{Error, StoreBackend, StoreBackendExt};

/// Opens `path`, loads it and reads every image; the first error, if any.
async fn read_all(path: &std::path::Path) -> Result<usize, Error> {
    let backend = RedbBackend::open(path).await?;
    let snapshot = backend.load().await?;
    for entry in &snapshot.images {
        backend.get(&entry.id).await?;
    }
    Ok(snapshot.images.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_give_typed_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.redb");
    {
        let backend = RedbBackend::open(&clean).await.unwrap();
        for n in 0..50 {
            let config = format!(r#"{{"rootfs":{{"type":"layers"}},"comment":"image {n}"}}"#);
            backend.put(Bytes::from(config)).await.unwrap();
        }
    }
    let bytes = std::fs::read(&clean).unwrap();
    let mut corrupt = 0;
    let mut positions: Vec<usize> = (0..bytes.len()).step_by(bytes.len() / 97 + 1).collect();
    // The header and the first pages hold what redb trusts most.
    positions.extend((0..4096.min(bytes.len())).step_by(61));
    for (n, at) in positions.into_iter().enumerate() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xff;
        let path = dir.path().join(format!("damaged-{n}.redb"));
        std::fs::write(&path, &damaged).unwrap();
        match read_all(&path).await {
            Ok(_) => {}
            Err(Error::Corrupt { .. }) => corrupt += 1,
            Err(Error::Config { .. } | Error::NotFound { .. } | Error::Locked { .. }) => {}
            Err(other) => panic!(
                "byte {at} flipped: an untyped error: {}",
                imagecache_core::error_text(&other)
            ),
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(corrupt > 0, "no flipped byte was reported as damage");
}
