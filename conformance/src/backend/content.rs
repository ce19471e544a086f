//! Cases about configs: put, get, refusal of damaged or empty content.

use super::*;

/// A stored config reads back byte for byte under its ID.
pub async fn put_then_get_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let samples: Vec<(&str, Bytes)> = vec![
        ("a JSON config", config("roundtrip")),
        ("a single byte", Bytes::from_static(b"x")),
        (
            "bytes that are not UTF-8",
            Bytes::from_static(&[0xff, 0x00, 0xfe, 0x80, b'\n', 0x00, 0xc3]),
        ),
        (
            "256 KiB of random bytes",
            Bytes::from(pseudo_random_bytes(256 << 10, fresh_seed())),
        ),
    ];
    let mut stored = Vec::new();
    for (what, data) in &samples {
        let id = b.put(data.clone()).await.must(format_args!("put {what}"));
        assert_eq!(
            id.hex(),
            independent_sha256_hex(data),
            "the ID of {what} must be the SHA-256 of its bytes"
        );
        let got = b.get(&id).await.must(format_args!("get {what}"));
        assert!(
            got == *data,
            "get of {what} returned {} bytes that differ from the {} stored",
            got.len(),
            data.len()
        );
        stored.push((*what, id, data.clone()));
    }

    // Several configs in one batch read back as well.
    let batch = [content("batch-1"), content("batch-2"), content("batch-3")];
    write(
        &b,
        batch.iter().cloned().map(WriteOp::Put).collect(),
        "write of three configs in one batch",
    )
    .await;
    for c in &batch {
        let got = b
            .get(&c.id())
            .await
            .must("get of a config stored in a batch");
        assert_eq!(&got, c.data(), "config {} stored in a batch", c.id());
    }

    // Later writes do not disturb earlier ones.
    for (what, id, data) in &stored {
        let got = b.get(id).await.must(format_args!("second get of {what}"));
        assert!(got == *data, "{what} changed after other writes");
    }
    Outcome::Passed
}

/// Storing the same bytes twice keeps one copy and changes nothing.
pub async fn put_existing_is_noop(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let c = content("existing");
    let id = c.id();
    let parent = parent_value(&id_of("some-parent"));
    write(
        &b,
        vec![
            WriteOp::Put(c.clone()),
            set_meta(id, &MetadataKey::PARENT, parent.clone()),
            set_summary(id, "summary-1"),
        ],
        "first write",
    )
    .await;

    write(
        &b,
        vec![WriteOp::Put(c.clone())],
        "second put of the same config",
    )
    .await;
    write(
        &b,
        vec![WriteOp::Put(c.clone()), WriteOp::Put(c.clone())],
        "a batch putting the same config twice",
    )
    .await;
    let again = b
        .put(c.data().clone())
        .await
        .must("put of existing bytes through put()");
    assert_eq!(again, id, "re-storing bytes must return the same ID");

    let got = b.get(&id).await.must("get after re-puts");
    assert_eq!(&got, c.data(), "bytes after re-puts");
    let snapshot = load(&b, "after re-puts").await;
    assert_eq!(
        ids(&snapshot),
        vec![id],
        "re-storing a config must keep exactly one image"
    );
    let e = entry(&snapshot, &id);
    assert_metadata(e, &BTreeMap::from([(MetadataKey::PARENT, parent.clone())]));
    // The summary is derived data a backend may drop, but never replace.
    assert!(
        e.summary.is_none() || e.summary.as_deref() == Some(&b"summary-1"[..]),
        "re-storing a config changed its summary to {:?}",
        e.summary
    );
    let meta = b
        .get_metadata(&id, &MetadataKey::PARENT)
        .await
        .must("get_metadata after re-puts");
    assert_eq!(meta, parent, "metadata must survive re-storing the config");
    Outcome::Passed
}

/// Reading an unknown ID is `NotFound` naming the image.
pub async fn get_missing_is_not_found(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let missing = id_of("never-stored");

    let err = assert_err!(
        b.get(&missing).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "get of {missing} on an empty store"
    );
    assert_text(&err, "failed to get digest");

    put_tag(&b, "present").await;
    let err = assert_err!(
        b.get(&missing).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "get of {missing} beside another image"
    );
    assert_text(&err, "failed to get digest");
    assert_err!(
        b.get_metadata(&missing, &MetadataKey::PARENT).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "get_metadata of an image with no content"
    );
    Outcome::Passed
}

/// Bytes damaged in storage are `Corrupt`, never returned.
pub async fn get_corrupt_is_corrupt(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "get_corrupt_is_corrupt";
    let (f, b) = crate::images(&h).await;
    let intact = put_tag(&b, "intact").await;
    let original = config("damaged");
    let damages: Vec<(&str, Bytes)> = vec![
        ("replaced by other bytes", config("something-else")),
        ("truncated", original.slice(..original.len() / 2)),
        ("emptied", Bytes::new()),
    ];
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        let id = put_tag(&b, &format!("damaged-{i}")).await;
        if !crate::corrupt_config(&*f, &id, damage).await {
            return Outcome::skipped(CASE, "the fixture has no corrupt_config hook");
        }
        let err = assert_err!(
            b.get(&id).await,
            Error::Corrupt { key: Key::Image(k), .. } if *k == id,
            "get of a config whose stored bytes were {what}"
        );
        assert_text(&err, "failed to verify");
    }
    let got = b.get(&intact).await.must("get of the undamaged image");
    assert_eq!(got, config("intact"), "the undamaged image");
    Outcome::Passed
}

/// Empty data is refused before reaching the backend.
pub async fn empty_content_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let kept = put_tag(&b, "kept").await;
    for (what, data) in [
        ("Bytes::new()", Bytes::new()),
        ("an empty Vec", Bytes::from(Vec::new())),
    ] {
        let err = assert_err!(
            Content::new(data.clone()),
            Error::EmptyData { .. },
            "Content::new of {what}"
        );
        assert_text(&err, "invalid empty data");
        let err = assert_err!(b.put(data).await, Error::EmptyData { .. }, "put of {what}");
        assert_text(&err, "invalid empty data");
    }
    let snapshot = load(&b, "after refused puts").await;
    assert_eq!(
        ids(&snapshot),
        vec![kept],
        "refused puts must store nothing"
    );
    Outcome::Passed
}
