//! The `blobs` group: the [`BlobBackend`] contract, one case per bullet of
//! its `# Behavior` list.
//!
//! Every case takes a fresh fixture from the [`Harness`]; the runner skips
//! the group for harnesses whose fixtures keep no blobs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{
    BlobBackend, BlobBackendExt as _, BlobInfo, Digest, Error, Key, MetadataKey,
};

use crate::check::{
    Must as _, assert_err, body, chunks, failing_body, fresh_seed, key, pseudo_random_bytes,
    slow_body,
};
use crate::{Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __blobs_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) blobs [
            blob_put_get_roundtrips,
            blob_failed_stream_stores_nothing,
            blob_missing_is_not_found,
            blob_delete_is_idempotent,
            blob_notes_roundtrip,
            blob_notes_in_one_call,
            blob_list_reports_sizes,
            blob_concurrent_puts_are_idempotent,
        ] }
    };
}

/// Every case of the group, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__blobs_cases!(__case_registry!());

type Backend = Arc<dyn BlobBackend>;

async fn read_blob(b: &Backend, digest: &Digest, what: &str) -> (u64, Bytes) {
    let size = b
        .get_blob(digest)
        .await
        .must(format_args!("get_blob {what}"))
        .size;
    let data = b
        .get_blob_bytes(digest)
        .await
        .must(format_args!("reading blob {what}"));
    (size, data)
}

/// A blob streams back byte for byte with its size.
pub async fn blob_put_get_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let seed = fresh_seed();
    let samples: Vec<(&str, Bytes, usize)> = vec![
        ("an empty blob", Bytes::new(), 1),
        ("a one-byte blob", Bytes::from_static(b"\x00"), 1),
        (
            "a 32-byte blob",
            Bytes::from(pseudo_random_bytes(32, seed)),
            7,
        ),
        (
            "a 1 MiB + 3 byte blob in 64 KiB chunks",
            Bytes::from(pseudo_random_bytes((1 << 20) + 3, seed ^ 1)),
            64 << 10,
        ),
    ];
    for (what, data, chunk) in &samples {
        let digest = Digest::sha256(data);
        let info = b
            .put_blob(&digest, body(chunks(data, *chunk)))
            .await
            .must(format_args!("put_blob of {what}"));
        let want = BlobInfo {
            digest,
            size: data.len() as u64,
        };
        assert_eq!(info, want, "put_blob of {what} must report digest and size");
        assert_eq!(
            b.head_blob(&digest)
                .await
                .must(format_args!("head_blob of {what}")),
            want,
            "head_blob of {what}"
        );
        let (size, got) = read_blob(&b, &digest, what).await;
        assert_eq!(
            size,
            data.len() as u64,
            "size announced by get_blob of {what}"
        );
        assert!(
            got == *data,
            "get_blob of {what} returned {} bytes that differ from the {} stored",
            got.len(),
            data.len()
        );
    }

    // The in-memory convenience path stores the same way.
    let data = Bytes::from_static(b"stored through put_blob_bytes");
    let digest = Digest::sha256(&data);
    b.put_blob_bytes(&digest, data.clone())
        .await
        .must("put_blob_bytes");
    assert_eq!(read_blob(&b, &digest, "from put_blob_bytes").await.1, data);
    Outcome::Passed
}

/// A body that errors leaves no blob visible.
pub async fn blob_failed_stream_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let data = Bytes::from(pseudo_random_bytes(200 << 10, fresh_seed()));
    let digest = Digest::sha256(&data);
    let wrong = Digest::sha256(b"what the bytes really hash to");
    let parts = chunks(&data, 32 << 10);

    let failures: Vec<(&str, Vec<Bytes>)> = vec![
        ("a body that fails before any byte", Vec::new()),
        ("a body that fails after some bytes", parts[..3].to_vec()),
        ("a body that fails after all its bytes", parts.clone()),
    ];
    for (what, sent) in failures {
        let err = Error::DigestMismatch {
            expected: digest,
            actual: wrong,
        };
        assert_err!(
            b.put_blob(&digest, failing_body(sent, err)).await,
            Error::DigestMismatch { expected, actual } if *expected == digest && *actual == wrong,
            "put_blob with {what} must return the body's error"
        );
        assert_err!(
            b.head_blob(&digest).await,
            Error::NotFound { key: Key::Blob(d) } if *d == digest,
            "head_blob after {what}"
        );
        assert_err!(
            b.get_blob(&digest).await,
            Error::NotFound { key: Key::Blob(d) } if *d == digest,
            "get_blob after {what}"
        );
        let listed = b.list_blobs().await.must("list_blobs");
        assert!(
            listed.is_empty(),
            "after {what}, list_blobs shows {listed:?}"
        );
    }

    // Bytes that do not match their digest never reach the backend.
    assert_err!(
        b.put_blob_bytes(&digest, Bytes::from_static(b"other bytes"))
            .await,
        Error::DigestMismatch { .. },
        "put_blob_bytes of bytes that do not match the digest"
    );
    let listed = b.list_blobs().await.must("list_blobs");
    assert!(listed.is_empty(), "a refused blob is listed: {listed:?}");

    // The digest is still free for a correct body.
    b.put_blob(&digest, body(parts))
        .await
        .must("put_blob after failed attempts");
    assert_eq!(
        read_blob(&b, &digest, "after failed attempts").await.1,
        data
    );
    Outcome::Passed
}

/// Head/get of an unknown blob is `NotFound`.
pub async fn blob_missing_is_not_found(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let present = Bytes::from_static(b"present");
    b.put_blob_bytes(&Digest::sha256(&present), present)
        .await
        .must("put_blob");
    let missing = Digest::sha256(b"never stored");
    assert_err!(
        b.head_blob(&missing).await,
        Error::NotFound { key: Key::Blob(d) } if *d == missing,
        "head_blob of an unknown blob"
    );
    assert_err!(
        b.get_blob(&missing).await,
        Error::NotFound { key: Key::Blob(d) } if *d == missing,
        "get_blob of an unknown blob"
    );
    assert_err!(
        b.get_blob_note(&missing, &key("uncompressed")).await,
        Error::NotFound { .. },
        "get_blob_note of an unknown blob"
    );
    assert_err!(
        b.set_blob_note(&missing, &key("uncompressed"), Bytes::from_static(b"x")).await,
        Error::NotFound { key: Key::Blob(d) } if *d == missing,
        "set_blob_note on an unknown blob"
    );
    let listed = b.list_blobs().await.must("list_blobs");
    assert!(
        listed.iter().all(|i| i.digest != missing),
        "a refused note created blob {missing}: {listed:?}"
    );
    Outcome::Passed
}

/// Deleting twice succeeds; notes go with the blob.
pub async fn blob_delete_is_idempotent(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let data = Bytes::from_static(b"short-lived blob");
    let digest = Digest::sha256(&data);
    let kept = Bytes::from_static(b"kept blob");
    let kept_digest = Digest::sha256(&kept);
    let note = key("uncompressed");
    b.put_blob_bytes(&digest, data.clone())
        .await
        .must("put_blob");
    b.put_blob_bytes(&kept_digest, kept.clone())
        .await
        .must("put_blob");
    b.set_blob_note(&digest, &note, Bytes::from_static(b"sha256:x"))
        .await
        .must("set_blob_note");

    b.delete_blob(&digest).await.must("delete_blob");
    b.delete_blob(&digest).await.must("second delete_blob");
    b.delete_blob(&Digest::sha256(b"never stored"))
        .await
        .must("delete_blob of an unknown blob");
    assert_err!(
        b.head_blob(&digest).await,
        Error::NotFound { .. },
        "head_blob after delete"
    );
    assert_err!(
        b.get_blob_note(&digest, &note).await,
        Error::NotFound { .. },
        "get_blob_note after delete"
    );
    assert_eq!(
        b.list_blobs().await.must("list_blobs"),
        vec![BlobInfo {
            digest: kept_digest,
            size: kept.len() as u64
        }],
        "blobs left after delete"
    );

    // Storing the blob again must not bring its old notes back.
    b.put_blob_bytes(&digest, data).await.must("put_blob again");
    assert_err!(
        b.get_blob_note(&digest, &note).await,
        Error::NotFound { .. },
        "a note of a deleted blob came back"
    );
    Outcome::Passed
}

/// Notes read back per (blob, key).
pub async fn blob_notes_roundtrip(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let one = Bytes::from_static(b"compressed layer");
    let two = Bytes::from_static(b"uncompressed layer");
    let (d1, d2) = (Digest::sha256(&one), Digest::sha256(&two));
    b.put_blob_bytes(&d1, one).await.must("put_blob");
    b.put_blob_bytes(&d2, two).await.must("put_blob");
    let (k1, k2) = (key("uncompressed"), key("media-type"));

    let mut expected = BTreeMap::from([
        ((d1, k1.clone()), Bytes::from(d2.to_string())),
        ((d1, k2.clone()), Bytes::from_static(b"application/gzip")),
        ((d2, k1.clone()), Bytes::from(d2.to_string())),
        ((d2, k2.clone()), Bytes::from_static(b"application/x-tar")),
    ]);
    for ((d, k), v) in &expected {
        b.set_blob_note(d, k, v.clone())
            .await
            .must(format_args!("set_blob_note {k} on {d}"));
    }
    b.set_blob_note(&d1, &k2, Bytes::from_static(b"application/zstd"))
        .await
        .must("overwrite of a note");
    expected.insert((d1, k2.clone()), Bytes::from_static(b"application/zstd"));
    for ((d, k), v) in &expected {
        let got = b
            .get_blob_note(d, k)
            .await
            .must(format_args!("get_blob_note {k} of {d}"));
        assert_eq!(&got, v, "note {k} of blob {d}");
    }
    let unset = key("never-set");
    assert_err!(
        b.get_blob_note(&d1, &unset).await,
        Error::NotFound { key: Key::BlobNote { digest, key } } if *digest == d1 && *key == unset,
        "get_blob_note of an unset key"
    );
    Outcome::Passed
}

/// Listing reports every blob with its size.
pub async fn blob_list_reports_sizes(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let listed = b.list_blobs().await.must("list_blobs of a new store");
    assert!(listed.is_empty(), "a new store lists {listed:?}");

    let seed = fresh_seed();
    let mut want = Vec::new();
    for (i, len) in [0usize, 1, 4096, 70_000].into_iter().enumerate() {
        let data = Bytes::from(pseudo_random_bytes(len, seed.wrapping_add(i as u64)));
        let digest = Digest::sha256(&data);
        b.put_blob_bytes(&digest, data).await.must("put_blob");
        want.push(BlobInfo {
            digest,
            size: len as u64,
        });
    }
    want.sort();
    assert_eq!(
        b.list_blobs().await.must("list_blobs"),
        want,
        "list_blobs must report every blob with its size, sorted by digest"
    );

    let gone = want.remove(1);
    b.delete_blob(&gone.digest).await.must("delete_blob");
    assert_eq!(
        b.list_blobs().await.must("list_blobs after delete"),
        want,
        "list_blobs after deleting {}",
        gone.digest
    );
    Outcome::Passed
}

/// Racing puts of one digest leave one whole blob.
pub async fn blob_concurrent_puts_are_idempotent(h: Arc<dyn Harness>) -> Outcome {
    const WRITERS: usize = 8;
    let (_fixture, b) = crate::blobs(&h).await;
    let data = Bytes::from(pseudo_random_bytes(512 << 10, fresh_seed()));
    let digest = Digest::sha256(&data);
    let want = BlobInfo {
        digest,
        size: data.len() as u64,
    };

    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let b = Arc::clone(&b);
            let parts = chunks(&data, 16 << 10);
            tokio::spawn(async move { b.put_blob(&digest, slow_body(parts)).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let info = task
            .await
            .must(format_args!("writer {i}"))
            .must(format_args!("racing put_blob {i}"));
        assert_eq!(info, want, "racing put_blob {i} must report the blob");
    }

    assert_eq!(
        b.list_blobs().await.must("list_blobs after the race"),
        vec![want],
        "racing puts must leave exactly one blob"
    );
    let (size, got) = read_blob(&b, &digest, "after the race").await;
    assert_eq!(size, want.size, "size after the race");
    assert!(
        got == data,
        "the blob read after the race differs from what was written"
    );
    Outcome::Passed
}

/// Every note of a put is written by one call and listed back sorted.
pub async fn blob_notes_in_one_call(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::blobs(&h).await;
    let data = Bytes::from_static(b"a layer with notes");
    let digest = Digest::sha256(&data);
    let other = Bytes::from_static(b"a blob without notes");
    let other_digest = Digest::sha256(&other);
    b.put_blob_bytes(&digest, data).await.must("put_blob");
    b.put_blob_bytes(&other_digest, other)
        .await
        .must("put_blob");

    let notes: Vec<(MetadataKey, Bytes)> = vec![
        (key("size"), Bytes::from_static(b"18")),
        (key("kind"), Bytes::from_static(b"layer")),
        (key("compression"), Bytes::from_static(b"gzip")),
        // A key given twice keeps the last value, as two writes would.
        (key("kind"), Bytes::from_static(b"manifest")),
    ];
    b.set_blob_notes(&digest, notes)
        .await
        .must("set_blob_notes with several notes");
    b.set_blob_notes(&digest, Vec::new())
        .await
        .must("set_blob_notes with no note");
    let want = vec![
        (key("compression"), Bytes::from_static(b"gzip")),
        (key("kind"), Bytes::from_static(b"manifest")),
        (key("size"), Bytes::from_static(b"18")),
    ];
    assert_eq!(
        b.blob_notes(&digest).await.must("blob_notes"),
        want,
        "blob_notes must list every note once, sorted by key, last value winning"
    );
    for (k, v) in &want {
        assert_eq!(
            &b.get_blob_note(&digest, k).await.must("get_blob_note"),
            v,
            "note {k} read alone"
        );
    }

    // A second call replaces the keys it names and keeps the rest.
    b.set_blob_notes(&digest, vec![(key("size"), Bytes::from_static(b"19"))])
        .await
        .must("set_blob_notes again");
    let listed = b.blob_notes(&digest).await.must("blob_notes");
    assert_eq!(listed.len(), 3, "notes after a second call: {listed:?}");
    assert_eq!(
        b.get_blob_note(&digest, &key("size"))
            .await
            .must("get_blob_note"),
        Bytes::from_static(b"19"),
        "a note replaced by a later call"
    );
    assert_eq!(
        b.blob_notes(&other_digest)
            .await
            .must("blob_notes of a blob without notes"),
        Vec::new(),
        "a blob that never had notes lists none"
    );

    notes_need_their_blob(&b, &digest).await;
    Outcome::Passed
}

/// Notes need their blob, and go with it: `digest` is stored, with notes.
async fn notes_need_their_blob(b: &Backend, digest: &Digest) {
    let absent = Digest::sha256(b"never stored");
    b.set_blob_notes(&absent, Vec::new())
        .await
        .must("set_blob_notes with no note on an absent blob writes nothing");
    assert_err!(
        b.set_blob_notes(&absent, vec![(key("size"), Bytes::from_static(b"1"))]).await,
        Error::NotFound { key: Key::Blob(d) } if *d == absent,
        "set_blob_notes on an absent blob"
    );
    assert_eq!(
        b.blob_notes(&absent)
            .await
            .must("blob_notes of an absent blob"),
        Vec::new(),
        "an absent blob lists no notes"
    );
    b.delete_blob(digest).await.must("delete_blob");
    assert_eq!(
        b.blob_notes(digest).await.must("blob_notes after delete"),
        Vec::new(),
        "notes must go with their blob"
    );
}
