//! Docker's `daemon/internal/image/fs_test.go`, ported to the
//! [`StoreBackend`] contract (part of the `docker` group).
//!
//! Docker's eleven tests exercise its directory backend. Where a test is
//! about behaviour every backend shares, the port asserts the same thing,
//! including Docker's error text. Where it is about the directory layout
//! itself (a directory in place of a file, a root that is a regular file, a
//! stray file name), the port asserts the generic rule behind it, and the
//! directory backend's own tests cover the layout. Each case's first doc line
//! says what it ports.

use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{
    Content, DigestErrorKind, Error, ImageId, Key, MetadataKey, Snapshot, StoreBackend,
    StoreBackendExt as _, WriteBatch, WriteOp,
};

use crate::check::{
    Must as _, assert_err, assert_text, fresh_seed, independent_sha256_hex, key,
    pseudo_random_bytes,
};
use crate::{Harness, Outcome};

/// Every case of this module, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__case_registry! { () docker [
    fs_get_invalid_data,
    fs_invalid_set,
    fs_invalid_root,
    fs_metadata_get_set,
    fs_invalid_walker,
    fs_get_set,
    fs_get_unset_key,
    fs_get_empty_data,
    fs_delete,
    fs_walker,
    fs_walker_stop_on_error,
] };

type Backend = Arc<dyn StoreBackend>;

async fn set(b: &Backend, data: &'static [u8]) -> ImageId {
    b.put(Bytes::from_static(data))
        .await
        .must(format_args!("Set({:?})", String::from_utf8_lossy(data)))
}

async fn walk(b: &Backend) -> Snapshot {
    b.load().await.must("load")
}

fn walked_ids(s: &Snapshot) -> Vec<ImageId> {
    s.images.iter().map(|e| e.id).collect()
}

/// Ports `TestFSGetInvalidData`: bytes changed under an ID fail to read with `failed to verify`.
pub async fn fs_get_invalid_data(h: Arc<dyn Harness>) -> Outcome {
    let (f, b) = crate::images(&h).await;
    let id = set(&b, b"foobar").await;
    if !crate::corrupt_config(&*f, &id, Bytes::from_static(b"foobar2")).await {
        return Outcome::skipped(
            "fs_get_invalid_data",
            "the harness cannot damage stored content",
        );
    }
    let err = assert_err!(
        b.get(&id).await,
        Error::Corrupt { key: Key::Image(k), .. } if *k == id,
        "Get of content overwritten with other bytes"
    );
    assert_text(&err, "failed to verify");
    Outcome::Passed
}

/// Ports `TestFSInvalidSet`: a Set that cannot be carried out fails and stores nothing
/// (the fs backend's own tests put a directory in the content file's place).
pub async fn fs_invalid_set(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let id = set(&b, b"foobar").await;

    // Bytes that do not hash to the ID they claim cannot even be handed to
    // a backend: `Content` refuses them with Docker's verify text.
    let err = assert_err!(
        Content::verify(id, Bytes::from_static(b"foobar2")),
        Error::Corrupt { key: Key::Image(k), .. } if *k == id,
        "Content::verify of bytes that hash to another ID"
    );
    assert_text(&err, "failed to verify");
    assert_err!(
        Content::verify(id, Bytes::new()),
        Error::Corrupt { .. },
        "Content::verify of empty bytes"
    );

    // A write the backend refuses leaves nothing of itself behind.
    let refused = Content::new(Bytes::from_static(b"refused")).must("Content::new");
    let orphan = ImageId::of_config(b"no such content");
    assert_err!(
        b.write(WriteBatch::from(vec![
            WriteOp::Put(refused.clone()),
            WriteOp::SetMetadata {
                id: orphan,
                key: MetadataKey::PARENT,
                value: Bytes::from(id.to_string()),
            },
        ]))
        .await,
        Error::NotFound { key: Key::Image(k) } if *k == orphan,
        "a write that cannot be carried out"
    );
    let err = assert_err!(
        b.get(&refused.id()).await,
        Error::NotFound { .. },
        "Get of content from a refused write"
    );
    assert_text(&err, "failed to get digest");
    assert_eq!(
        walked_ids(&walk(&b).await),
        vec![id],
        "a refused write must leave only what was there"
    );
    Outcome::Passed
}

/// Ports `TestFSInvalidRoot`: a backend is confined to its own location, so two fresh
/// backends are independent and each opens empty (an unusable root is fs-specific).
pub async fn fs_invalid_root(h: Arc<dyn Harness>) -> Outcome {
    let (_one_fixture, one) = crate::images(&h).await;
    let (_two_fixture, two) = crate::images(&h).await;
    assert_eq!(walk(&one).await, Snapshot::default(), "a fresh backend");
    assert_eq!(
        walk(&two).await,
        Snapshot::default(),
        "a second fresh backend"
    );

    let id = set(&one, b"foo").await;
    one.set_metadata(&id, &key("tkey"), Bytes::from_static(b"tval"))
        .await
        .must("SetMetadata");
    assert!(
        walk(&two).await.images.is_empty(),
        "a write to one fresh backend is visible in another"
    );
    assert_err!(
        two.get(&id).await,
        Error::NotFound { .. },
        "Get, in another fresh backend, of content stored in the first"
    );
    let other = set(&two, b"bar").await;
    assert_eq!(
        walked_ids(&walk(&one).await),
        vec![id],
        "the first backend after a write to the second"
    );
    assert_eq!(walked_ids(&walk(&two).await), vec![other]);
    Outcome::Passed
}

/// Ports `TestFSMetadataGetSet`: metadata round-trips per (ID, key); unset keys and
/// IDs without content fail with Docker's texts.
pub async fn fs_metadata_get_set(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let id1 = set(&b, b"foo").await;
    let id2 = set(&b, b"bar").await;
    let table: [(ImageId, &str, &[u8]); 3] = [
        (id1, "tkey", b"tval1"),
        (id1, "tkey2", b"tval2"),
        (id2, "tkey", b"tval3"),
    ];
    for (id, k, v) in table {
        b.set_metadata(&id, &key(k), Bytes::from_static(v))
            .await
            .must(format_args!("SetMetadata({id}, {k})"));
    }
    for (id, k, v) in table {
        let got = b
            .get_metadata(&id, &key(k))
            .await
            .must(format_args!("GetMetadata({id}, {k})"));
        assert_eq!(&got[..], v, "GetMetadata({id}, {k})");
    }

    let err = assert_err!(
        b.get_metadata(&id2, &key("tkey2")).await,
        Error::NotFound { key: Key::Metadata { id, .. } } if *id == id2,
        "GetMetadata of a key set only on another ID"
    );
    assert_text(&err, "failed to read metadata");

    let id3 = ImageId::of_config(b"baz");
    let err = assert_err!(
        b.set_metadata(&id3, &key("tkey"), Bytes::from_static(b"tval")).await,
        Error::NotFound { key: Key::Image(k) } if *k == id3,
        "SetMetadata for an ID with no content"
    );
    assert_text(&err, "failed to get digest");
    let err = assert_err!(
        b.get_metadata(&id3, &key("tkey")).await,
        Error::NotFound { key: Key::Image(k) } if *k == id3,
        "GetMetadata for an ID with no content"
    );
    assert_text(&err, "failed to get digest");
    Outcome::Passed
}

/// Ports `TestFSInvalidWalker`: names that are not canonical digests never become IDs
/// or keys, and load lists only real IDs (a stray file is covered by the fs backend's tests).
pub async fn fs_invalid_walker(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let id = set(&b, b"foo").await;
    let hex = id.hex();

    // What a directory walk may meet next to real entries, and why each is refused.
    let upper = hex.to_uppercase();
    let strays: Vec<(String, DigestErrorKind)> = vec![
        ("foobar".into(), DigestErrorKind::InvalidHex { position: 1 }),
        ("../x".into(), DigestErrorKind::InvalidHex { position: 0 }),
        (
            "abc".into(),
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 3,
            },
        ),
        (
            format!("{hex}a"),
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 65,
            },
        ),
        (
            upper.clone(),
            DigestErrorKind::InvalidHex {
                position: upper
                    .bytes()
                    .position(|c| c.is_ascii_uppercase())
                    .unwrap_or(0),
            },
        ),
        (
            format!(".tmp-{hex}123"),
            DigestErrorKind::InvalidHex { position: 0 },
        ),
    ];
    for (name, kind) in strays {
        let input = format!("sha256:{name}");
        match ImageId::parse(&input) {
            Ok(parsed) => panic!("{input:?} must not parse as an image ID, got {parsed}"),
            Err(err) => assert_eq!(err.kind, kind, "why {input:?} is not an image ID"),
        }
    }
    for name in ["../x", "", ".tmp-parent", "a/b", "tkey\n"] {
        assert_err!(
            MetadataKey::new(name),
            Error::InvalidKey { .. },
            "metadata key {name:?}"
        );
    }

    assert_eq!(
        walked_ids(&walk(&b).await),
        vec![id],
        "load must list exactly the one stored ID"
    );
    Outcome::Passed
}

/// Ports `TestFSGetSet`: `Set("foobar")` is `sha256:c3ab8ff1…c4f2`, random data gets
/// its independently computed SHA-256, and Get returns the same bytes.
pub async fn fs_get_set(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let random = Bytes::from(pseudo_random_bytes(8 << 10, fresh_seed()));
    let cases: Vec<(Bytes, String)> = vec![
        (
            Bytes::from_static(b"foobar"),
            "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2".into(),
        ),
        (
            random.clone(),
            format!("sha256:{}", independent_sha256_hex(&random)),
        ),
    ];
    for (data, expected) in &cases {
        let id = b.put(data.clone()).await.must("Set");
        assert_eq!(&id.to_string(), expected, "ID of {} bytes", data.len());
    }
    for (data, expected) in &cases {
        let id = ImageId::parse(expected).must("parse of the expected ID");
        let got = b.get(&id).await.must(format_args!("Get({expected})"));
        assert!(got == *data, "Get({expected}) returned other bytes");
    }
    Outcome::Passed
}

/// Ports `TestFSGetUnsetKey`: malformed IDs are refused at parse time, and a valid but
/// unset ID fails with `failed to get digest`.
pub async fn fs_get_unset_key(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let malformed: [(&str, DigestErrorKind); 3] = [
        (
            "foobar:abc",
            DigestErrorKind::UnsupportedAlgorithm("foobar".into()),
        ),
        (
            "sha256:abc",
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 3,
            },
        ),
        (
            "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2a",
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 65,
            },
        ),
    ];
    for (input, kind) in malformed {
        match ImageId::parse(input) {
            Ok(id) => panic!("{input:?} must not parse as an image ID, got {id}"),
            Err(err) => assert_eq!(err.kind, kind, "why {input:?} is refused"),
        }
    }
    let unset =
        ImageId::parse("sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2")
            .must("parse of a valid ID");
    let err = assert_err!(
        b.get(&unset).await,
        Error::NotFound { key: Key::Image(k) } if *k == unset,
        "Get of a valid ID never set"
    );
    assert_text(&err, "failed to get digest");
    Outcome::Passed
}

/// Ports `TestFSGetEmptyData`: empty data (Go's nil and `[]byte{}`) is refused with
/// `invalid empty data`.
pub async fn fs_get_empty_data(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    for (what, data) in [("nil", Bytes::new()), ("[]byte{}", Bytes::from(Vec::new()))] {
        let err = assert_err!(b.put(data).await, Error::EmptyData { .. }, "Set({what})");
        assert_text(&err, "invalid empty data");
    }
    assert!(
        walk(&b).await.images.is_empty(),
        "refused empty data must store nothing"
    );
    Outcome::Passed
}

/// Ports `TestFSDelete`: Delete removes one item and leaves the other (deleting a
/// missing item is `Ok` here, where Docker errors).
pub async fn fs_delete(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let id = set(&b, b"foo").await;
    let id2 = set(&b, b"bar").await;

    b.delete(&id).await.must("Delete");
    let err = assert_err!(
        b.get(&id).await,
        Error::NotFound { key: Key::Image(k) } if *k == id,
        "Get after Delete"
    );
    assert_text(&err, "failed to get digest");
    assert_eq!(&b.get(&id2).await.must("Get of the other item")[..], b"bar");

    b.delete(&id2).await.must("Delete of the other item");
    let err = assert_err!(
        b.get(&id2).await,
        Error::NotFound { key: Key::Image(k) } if *k == id2,
        "Get after the second Delete"
    );
    assert_text(&err, "failed to get digest");
    Outcome::Passed
}

/// Ports `TestFSWalker`: load lists exactly the stored IDs.
pub async fn fs_walker(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let mut want = vec![set(&b, b"foo").await, set(&b, b"bar").await];
    want.sort();
    assert_eq!(
        walked_ids(&walk(&b).await),
        want,
        "load must list exactly the two stored IDs"
    );
    Outcome::Passed
}

/// Ports the intent of `TestFSWalkerStopOnError` (load is a snapshot, not a callback
/// walk): a damaged entry neither hides the others nor vanishes silently.
pub async fn fs_walker_stop_on_error(h: Arc<dyn Harness>) -> Outcome {
    let (f, b) = crate::images(&h).await;
    let damaged = set(&b, b"foo").await;
    let intact = [set(&b, b"bar").await, set(&b, b"baz").await];
    if !crate::corrupt_config(&*f, &damaged, Bytes::from_static(b"what")).await {
        return Outcome::skipped(
            "fs_walker_stop_on_error",
            "the harness cannot damage stored content",
        );
    }
    let snapshot = walk(&b).await;
    let listed = walked_ids(&snapshot);
    for id in &intact {
        assert!(
            listed.contains(id),
            "load must still list {id} beside a damaged entry, got {listed:?}"
        );
        b.get(id).await.must("Get of an intact entry");
    }
    let hex = damaged.hex();
    let quarantined = snapshot.quarantined.iter().any(|q| q.name.contains(&hex));
    assert!(
        listed.contains(&damaged) || quarantined,
        "the damaged entry {damaged} vanished from load: {snapshot:?}"
    );
    if listed.contains(&damaged) {
        let err = assert_err!(
            b.get(&damaged).await,
            Error::Corrupt { .. },
            "Get of the damaged entry"
        );
        assert_text(&err, "failed to verify");
    }
    Outcome::Passed
}
