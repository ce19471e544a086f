//! Blobs on the redb backend: streaming, failures, notes, races.
#![cfg(feature = "redb")]
// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_backends::redb::RedbBackend;
use imagecache_conformance::Harness as _;
use imagecache_core::{
    Algorithm, BlobBackend as _, BlobBackendExt as _, BlobInfo, ByteStream, Digest, Error, Hasher,
    Key, MetadataKey,
};
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};

/// Tables as the module documentation describes them.
const BLOB_CHUNKS: TableDefinition<'_, (u64, u32), &[u8]> = TableDefinition::new("blob_chunks");
const PENDING_UPLOADS: TableDefinition<'_, u64, &str> = TableDefinition::new("pending_uploads");

const MIB: usize = 1 << 20;
/// Bytes in every chunk but a blob's last: a leaf page of 1 MiB less
/// redb's 20 bytes of header, value length and key.
const CHUNK: usize = MIB - 20;

/// Deterministic bytes, produced piece by piece so a large body never sits
/// in memory: piece sizes cycle through `sizes`.
fn generated(total: usize, sizes: &'static [usize]) -> impl Iterator<Item = Bytes> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = total;
    let mut turn = 0;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = sizes[turn % sizes.len()].min(left);
        turn += 1;
        left -= n;
        let mut piece = Vec::with_capacity(n);
        while piece.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            piece.extend_from_slice(&state.to_le_bytes());
        }
        piece.truncate(n);
        Some(Bytes::from(piece))
    })
}

fn digest_of(pieces: impl Iterator<Item = Bytes>) -> Digest {
    let mut h = Hasher::new(Algorithm::Sha256);
    for p in pieces {
        h.update(&p);
    }
    h.finish()
}

fn body_of(pieces: impl Iterator<Item = Bytes> + Send + 'static) -> ByteStream {
    Box::pin(futures::stream::iter(pieces.map(Ok)))
}

/// A body that yields `pieces` and then fails.
fn failing_body(
    pieces: impl Iterator<Item = Bytes> + Send + 'static,
    digest: Digest,
) -> ByteStream {
    let failure = Error::DigestMismatch {
        expected: digest,
        actual: Digest::sha256(b"something else"),
    };
    Box::pin(
        futures::stream::iter(pieces.map(Ok))
            .chain(futures::stream::once(async move { Err(failure) })),
    )
}

/// Counts rows of the chunk and pending tables, opening the file directly.
fn leftovers(path: &Path) -> (u64, u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let chunks = txn.open_table(BLOB_CHUNKS).unwrap().len().unwrap();
    let pending = txn.open_table(PENDING_UPLOADS).unwrap().len().unwrap();
    (chunks, pending)
}

/// Opens the database once every handle (including background cleanups)
/// has let go of it.
async fn reopen(path: &Path) -> RedbBackend {
    for _ in 0..500 {
        match RedbBackend::open(path).await {
            Ok(b) => return b,
            Err(Error::Locked { .. }) => {
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20)))
                    .await
                    .unwrap();
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    panic!("the database stayed locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_of_64_mib_streams_in_bounded_chunks() {
    const SIZES: &[usize] = &[100_003, 3 * MIB + MIB / 2, 17, MIB];
    const TOTAL: usize = 64 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    let digest = digest_of(generated(TOTAL, SIZES));

    let info = backend
        .put_blob(&digest, body_of(generated(TOTAL, SIZES)))
        .await
        .unwrap();
    assert_eq!(
        info,
        BlobInfo {
            digest,
            size: TOTAL as u64
        }
    );
    assert_eq!(backend.head_blob(&digest).await.unwrap(), info);

    let reader = backend.get_blob(&digest).await.unwrap();
    assert_eq!(reader.size, TOTAL as u64);
    let mut stream = reader.stream;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let (mut chunks, mut total) = (0, 0);
    while let Some(chunk) = stream.try_next().await.unwrap() {
        assert!(chunk.len() <= MIB, "a chunk of {} bytes", chunk.len());
        assert!(!chunk.is_empty());
        hasher.update(&chunk);
        chunks += 1;
        total += chunk.len();
    }
    assert_eq!(total, TOTAL);
    assert_eq!(chunks, TOTAL.div_ceil(CHUNK));
    assert_eq!(hasher.finish(), digest);
    drop(backend);

    // On disk: full chunks and the rest, nothing pending.
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(BLOB_CHUNKS).unwrap();
    let sizes: Vec<usize> = table
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value().len())
        .collect();
    let mut expected = vec![CHUNK; TOTAL / CHUNK];
    expected.push(TOTAL % CHUNK);
    assert_eq!(sizes, expected);
    assert_eq!(txn.open_table(PENDING_UPLOADS).unwrap().len().unwrap(), 0);
}

/// Files written when chunks were a full MiB read back whole.
#[tokio::test(flavor = "multi_thread")]
async fn blob_in_chunks_of_a_full_mib_reads_back() {
    const BLOBS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("blobs");
    const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    drop(RedbBackend::open(&path).await.unwrap());
    let data: Vec<u8> = generated(2 * MIB + MIB / 2, &[MIB]).flatten().collect();
    let digest = Digest::sha256(&data);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(BLOB_CHUNKS).unwrap();
            for (index, chunk) in (0u32..).zip(data.chunks(MIB)) {
                chunks.insert((7, index), chunk).unwrap();
            }
            let name = digest.to_string();
            let mut blobs = txn.open_table(BLOBS).unwrap();
            blobs.insert(name.as_str(), (7, data.len() as u64)).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("next_upload", 8)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let backend = RedbBackend::open(&path).await.unwrap();
    assert_eq!(backend.get_blob_bytes(&digest).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_stream_stores_nothing_and_leaves_no_chunks() {
    const SIZES: &[usize] = &[700_000];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    let digest = digest_of(generated(5 * MIB, SIZES));

    let err = backend
        .put_blob(&digest, failing_body(generated(5 * MIB, SIZES), digest))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if *expected == digest),
        "the body's own error comes back: {err:?}"
    );
    assert!(matches!(
        backend.head_blob(&digest).await.unwrap_err(),
        Error::NotFound { key: Key::Blob(d) } if d == digest
    ));
    assert!(backend.get_blob(&digest).await.unwrap_err().is_not_found());
    assert!(backend.list_blobs().await.unwrap().is_empty());

    // A later good put of the same digest works.
    backend
        .put_blob(&digest, body_of(generated(5 * MIB, SIZES)))
        .await
        .unwrap();
    backend.delete_blob(&digest).await.unwrap();
    drop(backend);
    assert_eq!(leftovers(&path), (0, 0));

    let backend = RedbBackend::open(&path).await.unwrap();
    assert!(backend.list_blobs().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_of_a_crashed_upload_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    let kept = Digest::sha256(b"kept");
    backend
        .put_blob_bytes(&kept, Bytes::from_static(b"kept"))
        .await
        .unwrap();
    drop(backend);

    // What a process killed mid-upload leaves: a pending upload and chunks.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(PENDING_UPLOADS)
            .unwrap()
            .insert(9_999, "sha256:whatever")
            .unwrap();
        let mut chunks = txn.open_table(BLOB_CHUNKS).unwrap();
        for i in 0..3 {
            chunks.insert((9_999, i), &[i as u8; 1000][..]).unwrap();
        }
        drop(chunks);
        txn.commit().unwrap();
    }
    assert_eq!(leftovers(&path), (4, 1));

    let backend = RedbBackend::open(&path).await.unwrap();
    assert_eq!(
        &backend.get_blob_bytes(&kept).await.unwrap()[..],
        b"kept",
        "published blobs survive the sweep"
    );
    drop(backend);
    assert_eq!(leftovers(&path), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    let digest = Digest::sha256(b"never finished");
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let body: ByteStream = Box::pin(
        futures::stream::iter(generated(3 * MIB, &[MIB]).map(Ok)).chain(futures::stream::once(
            async move {
                let _ = sent_tx.send(());
                futures::future::pending::<()>().await;
                Ok(Bytes::new())
            },
        )),
    );
    let task = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.put_blob(&digest, body).await })
    };
    sent_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(backend.head_blob(&digest).await.unwrap_err().is_not_found());
    drop(backend);

    let backend = reopen(&path).await;
    assert!(backend.list_blobs().await.unwrap().is_empty());
    drop(backend);
    assert_eq!(leftovers(&path), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn notes_follow_their_blob() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    let d = Digest::sha256(b"layer");
    let other = Digest::sha256(b"other layer");
    let k = MetadataKey::new("uncompressed").unwrap();
    let k2 = MetadataKey::new("media-type").unwrap();

    let err = backend
        .set_blob_note(&d, &k, Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key: Key::Blob(x) } if *x == d),
        "{err:?}"
    );

    backend
        .put_blob_bytes(&d, Bytes::from_static(b"layer"))
        .await
        .unwrap();
    backend
        .put_blob_bytes(&other, Bytes::from_static(b"other layer"))
        .await
        .unwrap();
    backend
        .set_blob_note(&d, &k, Bytes::from_static(b"sha256:1"))
        .await
        .unwrap();
    backend
        .set_blob_note(&d, &k2, Bytes::from_static(b"tar"))
        .await
        .unwrap();
    backend
        .set_blob_note(&other, &k, Bytes::from_static(b"sha256:2"))
        .await
        .unwrap();
    assert_eq!(
        &backend.get_blob_note(&d, &k).await.unwrap()[..],
        b"sha256:1"
    );
    assert_eq!(&backend.get_blob_note(&d, &k2).await.unwrap()[..], b"tar");
    let err = backend.get_blob_note(&other, &k2).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key: Key::BlobNote { digest, key } } if *digest == other && *key == k2),
        "{err:?}"
    );

    backend.delete_blob(&d).await.unwrap();
    backend.delete_blob(&d).await.unwrap();
    assert!(backend.head_blob(&d).await.unwrap_err().is_not_found());
    assert!(
        backend
            .get_blob_note(&d, &k)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // The other blob's note stays.
    assert_eq!(
        &backend.get_blob_note(&other, &k).await.unwrap()[..],
        b"sha256:2"
    );

    // Storing the blob again does not bring old notes back.
    backend
        .put_blob_bytes(&d, Bytes::from_static(b"layer"))
        .await
        .unwrap();
    assert!(
        backend
            .get_blob_note(&d, &k)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_reports_every_blob_sorted_with_size() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    let mut want = Vec::new();
    for data in [&b""[..], b"a", b"hello world"] {
        let d = Digest::sha256(data);
        backend
            .put_blob_bytes(&d, Bytes::copy_from_slice(data))
            .await
            .unwrap();
        want.push(BlobInfo {
            digest: d,
            size: data.len() as u64,
        });
    }
    let mut h = Hasher::new(Algorithm::Sha512);
    h.update(b"512");
    let d512 = h.finish();
    backend
        .put_blob_bytes(&d512, Bytes::from_static(b"512"))
        .await
        .unwrap();
    want.push(BlobInfo {
        digest: d512,
        size: 3,
    });
    want.sort();
    assert_eq!(backend.list_blobs().await.unwrap(), want);
    let empty = Digest::sha256(b"");
    assert!(backend.get_blob_bytes(&empty).await.unwrap().is_empty());
    assert_eq!(backend.get_blob(&empty).await.unwrap().size, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_puts_of_one_digest_leave_one_blob() {
    const SIZES: &[usize] = &[300_000];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    let digest = digest_of(generated(3 * MIB + 5, SIZES));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let backend = backend.clone();
            tokio::spawn(async move {
                backend
                    .put_blob(&digest, body_of(generated(3 * MIB + 5, SIZES)))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().size, 3 * MIB as u64 + 5);
    }
    assert_eq!(backend.list_blobs().await.unwrap().len(), 1);
    let data = backend.get_blob_bytes(&digest).await.unwrap();
    assert_eq!(digest_of(std::iter::once(data)), digest);
    drop(backend);
    // Only the winner's four chunks remain.
    assert_eq!(leftovers(&path), (4, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_digest_skips_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    let d = Digest::sha256(b"stored");
    backend
        .put_blob_bytes(&d, Bytes::from_static(b"stored"))
        .await
        .unwrap();
    // The body would fail if it were read; the stored blob answers instead.
    let info = backend
        .put_blob(&d, failing_body(std::iter::empty(), d))
        .await
        .unwrap();
    assert_eq!(info.size, 6);
    assert_eq!(&backend.get_blob_bytes(&d).await.unwrap()[..], b"stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_deleted_while_read_ends_truncated() {
    const SIZES: &[usize] = &[MIB];
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(dir.path().join("db.redb")).await.unwrap();
    let digest = digest_of(generated(6 * MIB, SIZES));
    backend
        .put_blob(&digest, body_of(generated(6 * MIB, SIZES)))
        .await
        .unwrap();
    let mut stream = backend.get_blob(&digest).await.unwrap().stream;
    let first = stream.try_next().await.unwrap().unwrap();
    backend.delete_blob(&digest).await.unwrap();
    let mut delivered = first.len();
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => delivered += chunk.len(),
            Some(Err(err)) => break err,
            None => panic!("the stream ended cleanly after {delivered} bytes"),
        }
    };
    assert!(
        matches!(&err, Error::Truncated { key: Key::Blob(d), expected, actual }
            if *d == digest && *expected == 6 * MIB as u64 && *actual == delivered as u64),
        "{err:?}"
    );
    assert!(delivered < 6 * MIB);
    assert!(stream.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_raw_blob_replaces_bytes_unverified() {
    // The raw write is the harness's damage hook.
    let harness = imagecache_backends::redb::RedbHarness::temporary();
    let fixture = harness.fixture().await;
    let backend = fixture.blobs().unwrap();
    let d = Digest::sha256(b"original");
    backend
        .put_blob_bytes(&d, Bytes::from_static(b"original"))
        .await
        .unwrap();
    let damaged = Bytes::from(vec![0xee; 2 * MIB + 1]);
    fixture.corrupt_blob(&d, damaged.clone()).await.unwrap();
    assert_eq!(
        backend.head_blob(&d).await.unwrap().size,
        damaged.len() as u64
    );
    assert_eq!(backend.get_blob_bytes(&d).await.unwrap(), damaged);
}
