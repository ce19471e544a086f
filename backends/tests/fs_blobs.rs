//! Blobs in the directory backend: streamed in and out, never half visible.

#![cfg(feature = "fs")]
// Helpers of a test crate panic on any failure: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{
    Algorithm, BlobBackend as _, BlobBackendExt as _, BlobInfo, ByteStream, Digest, Error, Hasher,
    Key, MetadataKey,
};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Digest {
    Digest::sha256(data)
}

fn chunked(data: &[u8], size: usize) -> ByteStream {
    let chunks: Vec<imagecache_core::Result<Bytes>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn blobs_stream_in_and_out_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let data = pseudo_random(5 * 1024 * 1024 + 4321, 7);
    let digest = sha256(&data);
    // Many small chunks and a few large ones.
    let info = b.put_blob(&digest, chunked(&data, 7000)).await.unwrap();
    assert_eq!(
        info,
        BlobInfo {
            digest,
            size: data.len() as u64
        }
    );
    let path = dir
        .path()
        .join("imagecache/blobs/sha256")
        .join(digest.hex());
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        files(&dir.path().join("imagecache/blobs")),
        vec![format!("sha256/{}", digest.hex())]
    );

    let reader = b.get_blob(&digest).await.unwrap();
    assert_eq!(reader.size, data.len() as u64);
    let chunks: Vec<Bytes> = reader.stream.map(Result::unwrap).collect().await;
    assert!(
        chunks.iter().all(|c| c.len() <= 1 << 20),
        "chunks stay bounded"
    );
    assert!(chunks.len() >= 5);
    assert_eq!(chunks.concat(), data);
    assert_eq!(b.head_blob(&digest).await.unwrap().size, data.len() as u64);

    let big_chunks = pseudo_random(3 * 1024 * 1024, 9);
    let d2 = sha256(&big_chunks);
    b.put_blob(&d2, chunked(&big_chunks, 2 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(b.get_blob_bytes(&d2).await.unwrap(), big_chunks);
}

/// A blob larger than the stretch after which a put starts flushing its
/// data early, on a runtime with few threads for the flushing helper to
/// share: it lands whole, and reads back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_large_blob_flushed_while_written_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let data = pseudo_random(37 * 1024 * 1024 + 5, 11);
    let digest = sha256(&data);
    let info = b.put_blob(&digest, chunked(&data, 1 << 20)).await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(
        files(&dir.path().join("imagecache/blobs")),
        vec![format!("sha256/{}", digest.hex())],
        "no temp file is left behind"
    );
    let back: Vec<Bytes> = b
        .get_blob(&digest)
        .await
        .unwrap()
        .stream
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(back.iter().all(|c| c.len() == 1 << 20 || c.len() == 5));
    assert_eq!(back.concat(), data);
}

#[tokio::test]
async fn failed_blob_stream_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let data = pseudo_random(3 * 1024 * 1024, 3);
    let digest = sha256(&data);
    let wrong = sha256(b"something else");
    let mut parts: Vec<imagecache_core::Result<Bytes>> = data
        .chunks(300_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    parts.push(Err(Error::DigestMismatch {
        expected: digest,
        actual: wrong,
    }));
    let err = b
        .put_blob(&digest, Box::pin(futures::stream::iter(parts)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { actual, .. } if actual == wrong),
        "{err:?}"
    );
    assert!(files(&dir.path().join("imagecache/blobs")).is_empty());
    assert!(b.head_blob(&digest).await.unwrap_err().is_not_found());
    assert!(b.list_blobs().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_blob_put_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let digest = sha256(b"never finished");
    // One chunk, then a body that never ends.
    let body: ByteStream = Box::pin(
        futures::stream::iter(vec![Ok(Bytes::from(vec![1u8; 2 << 20]))])
            .chain(futures::stream::pending()),
    );
    let task = {
        let b = b.clone();
        tokio::spawn(async move { b.put_blob(&digest, body).await })
    };
    let blobs = dir.path().join("imagecache/blobs/sha256");
    let mut seen_temp = false;
    for _ in 0..500 {
        if files(&blobs).iter().any(|f| f.starts_with(".tmp-")) {
            seen_temp = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen_temp, "the put was writing a temp file");
    task.abort();
    let mut cleaned = false;
    for _ in 0..500 {
        if files(&blobs).is_empty() {
            cleaned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cleaned, "left behind: {:?}", files(&blobs));
    assert!(b.head_blob(&digest).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn existing_blob_skips_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let data = Bytes::from_static(b"layer bytes");
    let digest = sha256(&data);
    b.put_blob_bytes(&digest, data.clone()).await.unwrap();
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![Err(Error::Cancelled)]));
    let info = b.put_blob(&digest, failing).await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(b.get_blob_bytes(&digest).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_blob_leave_one_whole_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = Bytes::from(pseudo_random(2 * 1024 * 1024 + 17, 11));
    let digest = sha256(&data);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let b = FsBackend::open(dir.path()).await.unwrap();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            b.put_blob(&digest, chunked(&data, 64 * 1024)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().size, data.len() as u64);
    }
    let b = FsBackend::open(dir.path()).await.unwrap();
    assert_eq!(b.get_blob_bytes(&digest).await.unwrap(), data);
    assert_eq!(
        files(&dir.path().join("imagecache/blobs")),
        vec![format!("sha256/{}", digest.hex())]
    );
}

#[tokio::test]
async fn notes_belong_to_their_blob() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let data = Bytes::from_static(b"compressed");
    let digest = sha256(&data);
    let k = MetadataKey::new("uncompressed").unwrap();
    let err = b
        .set_blob_note(&digest, &k, Bytes::from_static(b"sha256:x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { key: Key::Blob(d) } if d == digest),
        "{err:?}"
    );
    assert!(!dir.path().join("imagecache/blobs/notes").exists());

    b.put_blob_bytes(&digest, data).await.unwrap();
    b.set_blob_note(&digest, &k, Bytes::from_static(b"sha256:x"))
        .await
        .unwrap();
    b.set_blob_note(&digest, &k, Bytes::from_static(b"sha256:y"))
        .await
        .unwrap();
    assert_eq!(
        b.get_blob_note(&digest, &k).await.unwrap(),
        Bytes::from_static(b"sha256:y")
    );
    let note = dir
        .path()
        .join("imagecache/blobs/notes/sha256")
        .join(digest.hex())
        .join("uncompressed");
    assert_eq!(fs::read(&note).unwrap(), b"sha256:y");
    let other = MetadataKey::new("other").unwrap();
    let err = b.get_blob_note(&digest, &other).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                key: Key::BlobNote { .. }
            }
        ),
        "{err:?}"
    );

    b.delete_blob(&digest).await.unwrap();
    assert!(!note.exists());
    assert!(
        b.get_blob_note(&digest, &k)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(b.get_blob(&digest).await.unwrap_err().is_not_found());
    b.delete_blob(&digest).await.unwrap();
}

#[tokio::test]
async fn listing_reports_every_blob_sorted_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let mut expected = Vec::new();
    for n in 0..5usize {
        let data = Bytes::from(pseudo_random(n * 1000 + 1, n as u64));
        let digest = sha256(&data);
        b.put_blob_bytes(&digest, data).await.unwrap();
        expected.push(BlobInfo {
            digest,
            size: (n * 1000 + 1) as u64,
        });
    }
    let data = Bytes::from_static(b"sha512 blob");
    let mut h = Hasher::new(Algorithm::Sha512);
    h.update(&data);
    let d512 = h.finish();
    b.put_blob_bytes(&d512, data).await.unwrap();
    expected.push(BlobInfo {
        digest: d512,
        size: 11,
    });
    let note = MetadataKey::new("n").unwrap();
    b.set_blob_note(&expected[0].digest, &note, Bytes::from_static(b"v"))
        .await
        .unwrap();
    // Strays in the blob directory are not blobs.
    let sha_dir = dir.path().join("imagecache/blobs/sha256");
    fs::write(sha_dir.join("foobar"), b"x").unwrap();
    fs::write(sha_dir.join(".tmp-abc"), b"x").unwrap();
    expected.sort();
    assert_eq!(b.list_blobs().await.unwrap(), expected);
}

#[tokio::test]
async fn temp_files_are_counted_while_written_and_reclaimed_once_their_writer_is_gone() {
    use imagecache_core::BlobBackend as _;
    let dir = tempfile::tempdir().unwrap();
    let backend = imagecache_backends::fs::FsBackend::open(dir.path())
        .await
        .unwrap();
    let blobs = dir.path().join("imagecache/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    // A writer at work holds its temp file locked…
    let live = blobs.join(".tmp-live");
    let held = std::fs::File::create(&live).unwrap();
    std::io::Write::write_all(&mut &held, &[7u8; 1000]).unwrap();
    held.try_lock().unwrap();
    // …one that was killed left its file behind, unlocked, a minute ago.
    let left = blobs.join(".tmp-left");
    std::fs::write(&left, [1u8; 300]).unwrap();
    let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let age = |path: &std::path::Path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(a_minute_ago)
            .unwrap();
    };
    age(&left);
    age(&live);
    // One just made is left alone whether locked or not: its writer may
    // not have taken the lock yet.
    let fresh = blobs.join(".tmp-fresh");
    std::fs::write(&fresh, [2u8; 50]).unwrap();

    let scratch = backend.scratch().await.unwrap();
    assert_eq!((scratch.in_progress, scratch.in_progress_bytes), (2, 1050));
    assert_eq!((scratch.reclaimed, scratch.reclaimed_bytes), (1, 300));
    assert!(live.exists() && !left.exists() && fresh.exists());
    std::fs::remove_file(&fresh).unwrap();
    // Once the writer lets go, the next look reclaims its file too.
    drop(held);
    let scratch = backend.scratch().await.unwrap();
    assert_eq!((scratch.in_progress, scratch.reclaimed), (0, 1));
    assert!(!live.exists());
    // A put in progress is seen as one.
    let (tx, rx) = futures::channel::mpsc::unbounded::<imagecache_core::Result<bytes::Bytes>>();
    tx.unbounded_send(Ok(bytes::Bytes::from_static(b"partial")))
        .unwrap();
    let digest = imagecache_core::Digest::sha256(b"partial and more");
    let put = tokio::spawn({
        let backend = backend.clone();
        async move { backend.put_blob(&digest, Box::pin(rx)).await }
    });
    let mut seen = 0;
    for _ in 0..100 {
        seen = backend.scratch().await.unwrap().in_progress;
        if seen == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1);
    drop(tx);
    let _ = put.await;
}
