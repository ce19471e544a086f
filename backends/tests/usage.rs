//! Disk usage and blob times on every backend: usage grows by about what is
//! written and shrinks when it is deleted, unfinished writes show as temp,
//! blob times fall within the test's own clock window, and redb compacts.
//!
//! The S3 cases run over object_store's `InMemory` always, and against the
//! servers named by `IMAGECACHE_TEST_S3_URL` (Garage) and
//! `IMAGECACHE_TEST_S3_CONDITIONAL_URL` (moto) when set; an unset URL skips
//! that run, saying so, unless `IMAGECACHE_REQUIRE_S3=1` makes it fail.
// A failed unwrap is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use imagecache_core::{
    BlobBackend, BlobBackendExt as _, ByteStream, Content, Digest, Lease, LeaseId, MetadataKey,
    StoreBackend, StoreBackendExt as _, Timestamp, Usage, UsageKind, WriteBatch,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Deterministic bytes that do not compress, different for every seed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An image config of about `len` bytes.
fn config(len: usize, seed: u64) -> Bytes {
    let pad: String = pseudo_random(len, seed)
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"pad":"{pad}"}}"#
    ))
}

fn key(k: &str) -> MetadataKey {
    MetadataKey::new(k).unwrap()
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<imagecache_core::Result<Bytes>> = data
        .chunks(256 * KIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Bytes and count of one part, zero when absent.
fn part(usage: &Usage, kind: UsageKind) -> (u64, u64) {
    usage.part(kind).map_or((0, 0), |p| (p.bytes, p.count))
}

/// How a backend's parts relate to the bytes written.
#[derive(Debug, Clone, Copy)]
struct Expect {
    /// Where metadata values land (`None`: not measured apart).
    metadata: Option<UsageKind>,
    /// Largest growth allowed for `n` bytes written: block rounding,
    /// directories, database pages.
    most: fn(u64) -> u64,
    /// Whether a config stays behind as overhead after its image is
    /// deleted (S3, until garbage collection).
    config_kept: bool,
}

/// Exact sizes, plus the keys of metadata and notes (memory).
fn exact(n: u64) -> u64 {
    n + 64
}

/// Whole 4 KiB blocks, plus a few directory blocks.
#[cfg(feature = "fs")]
fn blocks(n: u64) -> u64 {
    n.div_ceil(4096) * 4096 + 4 * 4096
}

/// redb pages: a value lands in a page of the next power of two, plus
/// branch pages of the tree.
#[cfg(feature = "redb")]
fn pages(n: u64) -> u64 {
    2 * n + 64 * KIB as u64
}

/// Checks that a part grew by at least `n` and at most `most(n)`.
fn assert_grew(kind: UsageKind, before: &Usage, after: &Usage, n: u64, most: fn(u64) -> u64) {
    let grown = part(after, kind).0.saturating_sub(part(before, kind).0);
    assert!(
        grown >= n && grown <= most(n),
        "{kind} grew by {grown} bytes for {n} written (allowed {n}..={})\nbefore {before:?}\nafter {after:?}",
        most(n)
    );
}

/// One image with a metadata value and one blob with a note: usage grows
/// by about their bytes, and comes back down when they are deleted.
async fn grows_and_shrinks(store: &dyn StoreBackend, blobs: &dyn BlobBackend, expect: Expect) {
    let (u0, b0) = (
        store.usage().await.unwrap(),
        blobs.blob_usage().await.unwrap(),
    );

    let cfg = config(64 * KIB, 1);
    let content = Content::new(cfg.clone()).unwrap();
    let id = content.id();
    let value = Bytes::from(pseudo_random(16 * KIB, 2));
    let mut batch = WriteBatch::new();
    batch.put(content);
    batch.set_metadata(id, key("parent"), value.clone());
    store.write(batch).await.unwrap();
    let data = pseudo_random(3 * MIB + 12345, 3);
    let digest = Digest::sha256(&data);
    blobs.put_blob(&digest, body(&data)).await.unwrap();
    let note = Bytes::from(pseudo_random(8 * KIB, 4));
    blobs
        .set_blob_note(&digest, &key("note"), note.clone())
        .await
        .unwrap();

    let (u1, b1) = (
        store.usage().await.unwrap(),
        blobs.blob_usage().await.unwrap(),
    );
    assert_grew(UsageKind::Configs, &u0, &u1, cfg.len() as u64, expect.most);
    assert_eq!(
        part(&u1, UsageKind::Configs).1,
        part(&u0, UsageKind::Configs).1 + 1
    );
    if let Some(kind) = expect.metadata {
        assert_grew(kind, &u0, &u1, value.len() as u64, expect.most);
    }
    assert_grew(UsageKind::Blobs, &b0, &b1, data.len() as u64, expect.most);
    assert_eq!(
        part(&b1, UsageKind::Blobs).1,
        part(&b0, UsageKind::Blobs).1 + 1
    );
    assert_grew(UsageKind::Notes, &b0, &b1, note.len() as u64, expect.most);
    assert_eq!(
        part(&b1, UsageKind::Notes).1,
        part(&b0, UsageKind::Notes).1 + 1
    );

    leases_are_counted(store).await;

    store.delete(&id).await.unwrap();
    blobs.delete_blob(&digest).await.unwrap();
    let (u2, b2) = (
        store.usage().await.unwrap(),
        blobs.blob_usage().await.unwrap(),
    );
    for (kind, before, after) in [
        (UsageKind::Configs, &u0, &u2),
        (UsageKind::Blobs, &b0, &b2),
        (UsageKind::Notes, &b0, &b2),
    ] {
        // Directories of a file system keep the blocks they grew by.
        let (bytes, count) = part(after, kind);
        assert_eq!(count, part(before, kind).1, "{kind} items after delete");
        assert!(
            bytes <= part(before, kind).0 + 8 * 4096,
            "{kind}: {bytes} bytes after delete, {} before anything was written",
            part(before, kind).0
        );
    }
    if expect.config_kept {
        assert!(
            part(&u2, UsageKind::Overhead).0 >= part(&u0, UsageKind::Overhead).0 + cfg.len() as u64
        );
    }
}

/// A stored lease is one more lease item, of at least its record's
/// bytes, and removing it takes the item away.
async fn leases_are_counted(store: &dyn StoreBackend) {
    let before = part(&store.usage().await.unwrap(), UsageKind::Leases);
    let lease = Lease::new(LeaseId::random(), Duration::from_secs(3600));
    let id = lease.id.clone();
    let record = lease.encode().len() as u64;
    store.set_lease(lease).await.unwrap();
    let with = part(&store.usage().await.unwrap(), UsageKind::Leases);
    assert_eq!(with.1, before.1 + 1, "{with:?}");
    assert!(
        with.0 >= before.0 + record,
        "{with:?} for a record of {record}"
    );
    store.delete_lease(&id).await.unwrap();
    let after = part(&store.usage().await.unwrap(), UsageKind::Leases);
    assert_eq!(after.1, before.1, "{after:?}");
}

/// A fresh put is stored within the test's clock window. File systems
/// stamp files with a clock that may lag by a tick, and S3 servers give
/// whole seconds, so the window is widened by two seconds each way.
async fn put_time_is_now(blobs: &dyn BlobBackend) {
    let data = pseudo_random(100 * KIB, 5);
    let digest = Digest::sha256(&data);
    let start = Timestamp::now_utc().unix_nanos() - 2_000_000_000;
    blobs.put_blob(&digest, body(&data)).await.unwrap();
    let end = Timestamp::now_utc().unix_nanos() + 2_000_000_000;
    let listed = blobs.list_blob_times().await.unwrap();
    let (info, stored) = listed
        .iter()
        .find(|(info, _)| info.digest == digest)
        .expect("the blob is listed");
    assert_eq!(info.size, data.len() as u64);
    let stored = stored.expect("a fresh put has a time").unix_nanos();
    assert!(
        (start..=end).contains(&stored),
        "stored at {stored}, outside {start}..={end}"
    );
}

mod memory {
    use super::*;
    use imagecache_backends::memory::MemoryBackend;

    #[tokio::test]
    async fn usage_grows_and_shrinks() {
        let backend = MemoryBackend::new();
        let expect = Expect {
            metadata: Some(UsageKind::Metadata),
            most: exact,
            config_kept: false,
        };
        grows_and_shrinks(&backend, &backend, expect).await;
    }

    #[tokio::test]
    async fn blob_times_are_the_put_time() {
        put_time_is_now(&MemoryBackend::new()).await;
    }

    #[tokio::test]
    async fn nothing_is_temp() {
        let backend = MemoryBackend::new();
        let data = pseudo_random(10 * KIB, 6);
        backend
            .put_blob(&Digest::sha256(&data), body(&data))
            .await
            .unwrap();
        assert_eq!(
            part(&backend.blob_usage().await.unwrap(), UsageKind::Temp),
            (0, 0)
        );
    }
}

#[cfg(feature = "fs")]
mod fs {
    use std::path::Path;

    use super::*;
    use imagecache_backends::fs::FsBackend;
    use imagecache_core::allocated_bytes;

    /// Allocated bytes of everything under `dir`, `dir` included.
    fn du(dir: &Path) -> u64 {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        let mut total = allocated_bytes(&meta);
        if meta.is_dir() {
            for entry in std::fs::read_dir(dir).unwrap() {
                total += du(&entry.unwrap().path());
            }
        }
        total
    }

    #[tokio::test]
    async fn usage_grows_and_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).await.unwrap();
        let expect = Expect {
            metadata: Some(UsageKind::Metadata),
            most: blocks,
            config_kept: false,
        };
        grows_and_shrinks(&backend, &backend, expect).await;
    }

    #[tokio::test]
    async fn parts_add_up_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).await.unwrap();
        let id = backend.put(config(10 * KIB, 7)).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.set_metadata(id, key("parent"), Bytes::from_static(b"x"));
        batch.set_name("example.com/app:1".parse().unwrap(), id);
        backend.write(batch).await.unwrap();
        let data = pseudo_random(200 * KIB, 8);
        let digest = Digest::sha256(&data);
        backend.put_blob(&digest, body(&data)).await.unwrap();
        backend
            .set_blob_note(&digest, &key("note"), Bytes::from_static(b"y"))
            .await
            .unwrap();
        backend.load().await.unwrap();

        let mut usage = backend.usage().await.unwrap();
        assert_eq!(usage.total, None);
        assert_eq!(part(&usage, UsageKind::Names).1, 1);
        assert_eq!(part(&usage, UsageKind::Metadata).1, 1);
        assert!(part(&usage, UsageKind::Index).0 > 0);
        usage.merge(&backend.blob_usage().await.unwrap());
        assert_eq!(usage.bytes(), du(dir.path()), "{usage:?}");
    }

    #[tokio::test]
    async fn names_beside_imagedb_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path().join("imagedb")).await.unwrap();
        let id = backend.put(config(KIB, 9)).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.set_name("example.com/app:1".parse().unwrap(), id);
        batch.set_name("example.com/app:2".parse().unwrap(), id);
        backend.write(batch).await.unwrap();
        let names = std::fs::metadata(dir.path().join("repositories.json")).unwrap();
        assert_eq!(
            part(&backend.usage().await.unwrap(), UsageKind::Names),
            (allocated_bytes(&names), 2)
        );
    }

    #[tokio::test]
    async fn temp_leftovers_are_counted_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).await.unwrap();
        let data = pseudo_random(KIB, 10);
        backend
            .put_blob(&Digest::sha256(&data), body(&data))
            .await
            .unwrap();
        let blob_temp = dir.path().join("imagecache/blobs/sha256/.tmp-left");
        std::fs::write(&blob_temp, pseudo_random(40 * KIB, 11)).unwrap();
        let config_temp = dir.path().join("content/sha256/.tmp-abc");
        std::fs::write(&config_temp, pseudo_random(20 * KIB, 12)).unwrap();

        let (temp, count) = part(&backend.blob_usage().await.unwrap(), UsageKind::Temp);
        assert_eq!(count, 1);
        assert!(temp >= 40 * KIB as u64, "{temp}");
        let (temp, count) = part(&backend.usage().await.unwrap(), UsageKind::Temp);
        assert_eq!(count, 1);
        assert!(temp >= 20 * KIB as u64, "{temp}");
        assert!(blob_temp.exists() && config_temp.exists());

        // Reclaiming takes the blob leftover off the books, once it has
        // been left alone long enough to be sure its writer is gone.
        std::fs::File::options()
            .write(true)
            .open(&blob_temp)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(backend.scratch().await.unwrap().reclaimed, 1);
        assert_eq!(
            part(&backend.blob_usage().await.unwrap(), UsageKind::Temp),
            (0, 0)
        );
    }

    #[tokio::test]
    async fn blob_times_are_the_put_time() {
        let dir = tempfile::tempdir().unwrap();
        put_time_is_now(&FsBackend::open(dir.path()).await.unwrap()).await;
    }
}

#[cfg(feature = "redb")]
mod redb_backend {
    use std::path::Path;

    use super::*;
    use imagecache_backends::redb::RedbBackend;
    use redb::TableHandle as _;

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[tokio::test]
    async fn usage_grows_and_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path().join("store.redb"))
            .await
            .unwrap();
        let expect = Expect {
            metadata: Some(UsageKind::Metadata),
            most: pages,
            config_kept: false,
        };
        grows_and_shrinks(&backend, &backend, expect).await;
    }

    /// A chunk fills a page of its own exactly: blobs take their size,
    /// not twice it.
    #[tokio::test]
    async fn blobs_take_about_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path().join("store.redb"))
            .await
            .unwrap();
        let data = pseudo_random(8 * MIB, 19);
        backend
            .put_blob(&Digest::sha256(&data), body(&data))
            .await
            .unwrap();
        let (bytes, count) = part(&backend.blob_usage().await.unwrap(), UsageKind::Blobs);
        assert_eq!(count, 1);
        let size = data.len() as u64;
        assert!(
            (size..=size + 64 * KIB as u64).contains(&bytes),
            "{bytes} bytes of pages for a blob of {size}"
        );
    }

    #[tokio::test]
    async fn the_two_halves_make_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let backend = RedbBackend::open(&path).await.unwrap();
        let id = backend.put(config(40 * KIB, 14)).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.set_name("example.com/app:1".parse().unwrap(), id);
        backend.write(batch).await.unwrap();
        let data = pseudo_random(2 * MIB, 15);
        backend
            .put_blob(&Digest::sha256(&data), body(&data))
            .await
            .unwrap();

        let images = backend.usage().await.unwrap();
        let blobs = backend.blob_usage().await.unwrap();
        assert_eq!(images.total, None);
        assert_eq!(blobs.total, None);
        assert_eq!(part(&images, UsageKind::Names).1, 1);
        assert_eq!(part(&images, UsageKind::Configs).1, 1);
        assert!(part(&images, UsageKind::Index).0 > 0);
        let mut whole = images.clone();
        whole.merge(&blobs);
        assert_eq!(whole.bytes(), file_len(&path), "{whole:?}");
        // Each half alone is less than the file.
        assert!(images.bytes() < file_len(&path) && blobs.bytes() < file_len(&path));
    }

    #[tokio::test]
    async fn an_upload_in_progress_is_temp() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path().join("store.redb"))
            .await
            .unwrap();
        let (tx, rx) = futures::channel::mpsc::unbounded::<imagecache_core::Result<Bytes>>();
        let data = pseudo_random(3 * MIB, 16);
        tx.unbounded_send(Ok(Bytes::copy_from_slice(&data[..3 * MIB])))
            .unwrap();
        let digest = Digest::sha256(b"never finished");
        let put = tokio::spawn({
            let backend = backend.clone();
            async move { backend.put_blob(&digest, Box::pin(rx)).await }
        });
        // The chunks land one after another; wait for two of them (a chunk
        // is a little under 1 MiB).
        let landed = 2 * MIB as u64 - KIB as u64;
        let mut scratch = backend.scratch().await.unwrap();
        for _ in 0..500 {
            if scratch.in_progress_bytes >= landed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            scratch = backend.scratch().await.unwrap();
        }
        assert_eq!(scratch.in_progress, 1);
        assert!(scratch.in_progress_bytes >= landed, "{scratch:?}");
        let temp = part(&backend.blob_usage().await.unwrap(), UsageKind::Temp);
        assert_eq!(temp.1, 1, "{temp:?}");
        assert!(temp.0 >= scratch.in_progress_bytes, "{temp:?}");
        assert_eq!(
            part(&backend.blob_usage().await.unwrap(), UsageKind::Blobs).1,
            0
        );

        // A failed body discards the upload, and its space stops being temp.
        tx.unbounded_send(Err(imagecache_core::Error::Cancelled))
            .unwrap();
        assert!(put.await.unwrap().is_err());
        let mut left = temp;
        for _ in 0..500 {
            left = part(&backend.blob_usage().await.unwrap(), UsageKind::Temp);
            if left.1 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(left.1, 0, "{left:?}");
        assert_eq!(backend.scratch().await.unwrap().in_progress, 0);
    }

    #[tokio::test]
    async fn blob_times_are_the_put_time() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path().join("store.redb"))
            .await
            .unwrap();
        put_time_is_now(&backend).await;
    }

    /// A file written before blob times were recorded has no `blob_times`
    /// table; it opens, and its blobs have no time.
    #[tokio::test]
    async fn blobs_from_before_times_were_kept_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let old = pseudo_random(100 * KIB, 17);
        let old_digest = Digest::sha256(&old);
        {
            let backend = RedbBackend::open(&path).await.unwrap();
            backend.put_blob(&old_digest, body(&old)).await.unwrap();
        }
        let unrecorded = {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let handle = txn
                .list_tables()
                .unwrap()
                .find(|t| t.name() == "blob_times")
                .expect("this version records blob times");
            assert!(txn.delete_table(handle).unwrap());
            txn.commit().unwrap();
            true
        };
        assert!(unrecorded);

        let backend = RedbBackend::open(&path).await.unwrap();
        let fresh = pseudo_random(10 * KIB, 18);
        let fresh_digest = Digest::sha256(&fresh);
        backend.put_blob(&fresh_digest, body(&fresh)).await.unwrap();
        let times = backend.list_blob_times().await.unwrap();
        let time_of = |d: Digest| times.iter().find(|(i, _)| i.digest == d).unwrap().1;
        assert_eq!(time_of(old_digest), None);
        assert!(time_of(fresh_digest).is_some());
        // The old blob reads back whole.
        assert_eq!(backend.get_blob_bytes(&old_digest).await.unwrap(), old);
    }

    #[tokio::test]
    async fn compact_shrinks_the_file_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let backend = RedbBackend::open(&path).await.unwrap();
        let mut kept = Vec::new();
        let mut doomed = Vec::new();
        for n in 0..8u64 {
            let data = pseudo_random(MIB + 100, 100 + n);
            let digest = Digest::sha256(&data);
            backend.put_blob(&digest, body(&data)).await.unwrap();
            if n % 4 == 0 {
                kept.push((digest, data));
            } else {
                doomed.push(digest);
            }
        }
        let keep_id = backend.put(config(30 * KIB, 200)).await.unwrap();
        let drop_id = backend.put(config(30 * KIB, 201)).await.unwrap();
        let mut batch = WriteBatch::new();
        batch.set_metadata(keep_id, key("parent"), Bytes::from_static(b"kept"));
        backend.write(batch).await.unwrap();
        for digest in &doomed {
            backend.delete_blob(digest).await.unwrap();
        }
        backend.delete(&drop_id).await.unwrap();
        let free_before = part(&backend.usage().await.unwrap(), UsageKind::Overhead).0;

        let report = backend.compact().await.unwrap();
        assert!(report.before >= report.after, "{report:?}");
        // Six of the eight blobs went: the file gives most of them back.
        assert!(report.after + 4 * MIB as u64 <= report.before, "{report:?}");
        assert_eq!(report.after, file_len(&path));
        let usage = backend.usage().await.unwrap();
        assert!(
            part(&usage, UsageKind::Overhead).0 < free_before,
            "{usage:?}"
        );

        for (digest, data) in &kept {
            assert_eq!(&backend.get_blob_bytes(digest).await.unwrap(), data);
        }
        assert_eq!(backend.list_blobs().await.unwrap().len(), kept.len());
        assert_eq!(backend.get(&keep_id).await.unwrap(), config(30 * KIB, 200));
        assert_eq!(
            backend
                .get_metadata(&keep_id, &key("parent"))
                .await
                .unwrap(),
            Bytes::from_static(b"kept")
        );
        assert!(backend.get(&drop_id).await.unwrap_err().is_not_found());
        // The store still writes after compacting, and again reports the
        // file whole.
        let data = pseudo_random(KIB, 300);
        backend
            .put_blob(&Digest::sha256(&data), body(&data))
            .await
            .unwrap();
        let again = backend.compact().await.unwrap();
        assert!(again.before >= again.after);
    }

    #[tokio::test]
    async fn compacting_an_empty_store_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let backend = RedbBackend::open(&path).await.unwrap();
        let report = backend.compact().await.unwrap();
        assert!(report.before >= report.after);
        assert!(backend.load().await.unwrap().images.is_empty());
    }
}

#[cfg(feature = "s3")]
mod s3 {
    use std::sync::Arc;

    use super::*;
    use imagecache_backends::s3::{S3Backend, S3Config};
    use object_store::ObjectStore;
    use object_store::memory::InMemory;

    /// A backend on a fresh random prefix of the server `var` names, or
    /// `None` (skipped, saying so) when it is unset.
    async fn on_server(var: &str) -> Option<S3Backend> {
        let url = match std::env::var(var) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                if std::env::var("IMAGECACHE_REQUIRE_S3").as_deref() == Ok("1") {
                    panic!("{var} is not set, and IMAGECACHE_REQUIRE_S3=1 requires the S3 tests");
                }
                eprintln!("skipped: S3 usage tests ({var} not set)");
                return None;
            }
        };
        // The run's own prefix goes at the end of the URL's path.
        let run = format!("usage-{:016x}", rand::random::<u64>());
        let (location, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut url = format!("{}/{run}", location.trim_end_matches('/'));
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let config = S3Config::from_url(&url).unwrap();
        Some(S3Backend::open(config).await.unwrap())
    }

    async fn in_memory() -> S3Backend {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        S3Backend::with_store(store, "usage").await.unwrap()
    }

    const EXPECT: Expect = Expect {
        // Metadata lives in the log records, measured as the index.
        metadata: Some(UsageKind::Index),
        most: |n| 2 * n + 4 * KIB as u64,
        config_kept: true,
    };

    async fn grows_and_shrinks_then_collects(backend: &S3Backend) {
        grows_and_shrinks(backend, backend, EXPECT).await;
        // Collecting garbage removes the config of the deleted image.
        backend.collect_garbage(Duration::ZERO).await.unwrap();
        let usage = backend.usage().await.unwrap();
        assert_eq!(part(&usage, UsageKind::Overhead), (0, 0), "{usage:?}");
    }

    async fn times_and_no_temp(backend: &S3Backend) {
        put_time_is_now(backend).await;
        let usage = backend.blob_usage().await.unwrap();
        assert_eq!(part(&usage, UsageKind::Temp), (0, 0));
        assert_eq!(usage.total, None);
    }

    #[tokio::test]
    async fn in_memory_usage_grows_and_shrinks() {
        grows_and_shrinks_then_collects(&in_memory().await).await;
    }

    #[tokio::test]
    async fn in_memory_blob_times() {
        times_and_no_temp(&in_memory().await).await;
    }

    #[tokio::test]
    async fn garage_usage_grows_and_shrinks() {
        if let Some(backend) = on_server("IMAGECACHE_TEST_S3_URL").await {
            grows_and_shrinks_then_collects(&backend).await;
            backend.delete_prefix().await.unwrap();
        }
    }

    #[tokio::test]
    async fn garage_blob_times() {
        if let Some(backend) = on_server("IMAGECACHE_TEST_S3_URL").await {
            times_and_no_temp(&backend).await;
            backend.delete_prefix().await.unwrap();
        }
    }

    #[tokio::test]
    async fn moto_usage_grows_and_shrinks() {
        if let Some(backend) = on_server("IMAGECACHE_TEST_S3_CONDITIONAL_URL").await {
            grows_and_shrinks_then_collects(&backend).await;
            backend.delete_prefix().await.unwrap();
        }
    }

    #[tokio::test]
    async fn moto_blob_times() {
        if let Some(backend) = on_server("IMAGECACHE_TEST_S3_CONDITIONAL_URL").await {
            times_and_no_temp(&backend).await;
            backend.delete_prefix().await.unwrap();
        }
    }
}
