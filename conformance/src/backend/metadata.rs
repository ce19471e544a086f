//! Cases about metadata values beside configs.

use super::*;

/// Metadata values read back per (image, key), independently.
pub async fn metadata_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put_tag(&b, "meta-a").await;
    let c = put_tag(&b, "meta-b").await;
    let custom = key("custom-key_1.x");
    let binary = key("binary");

    let mut expected: BTreeMap<(ImageId, MetadataKey), Bytes> = BTreeMap::new();
    expected.insert((a, MetadataKey::PARENT), parent_value(&c));
    expected.insert(
        (a, MetadataKey::LAST_UPDATED),
        Bytes::from_static(b"2024-05-01T12:00:00.123456789+02:00"),
    );
    expected.insert((a, MetadataKey::BUILT_LOCALLY), Bytes::from_static(&[0x01]));
    expected.insert((a, binary.clone()), Bytes::from_static(&[0, 255, 10, 13]));
    expected.insert((c, MetadataKey::PARENT), parent_value(&id_of("other")));
    expected.insert((c, custom.clone()), Bytes::new());

    for ((id, k), v) in &expected {
        b.set_metadata(id, k, v.clone())
            .await
            .must(format_args!("set_metadata {k} of {id}"));
    }
    for ((id, k), v) in &expected {
        let got = b
            .get_metadata(id, k)
            .await
            .must(format_args!("get_metadata {k} of {id}"));
        assert_eq!(&got, v, "metadata {k} of {id}");
    }

    // Overwriting one value leaves every other (image, key) alone.
    let new_parent = parent_value(&id_of("new-parent"));
    b.set_metadata(&a, &MetadataKey::PARENT, new_parent.clone())
        .await
        .must("overwrite of a metadata value");
    expected.insert((a, MetadataKey::PARENT), new_parent);
    for ((id, k), v) in &expected {
        let got = b
            .get_metadata(id, k)
            .await
            .must(format_args!("get_metadata {k} of {id} after an overwrite"));
        assert_eq!(&got, v, "metadata {k} of {id} after an overwrite");
    }

    let snapshot = load(&b, "after metadata writes").await;
    for id in [a, c] {
        let want: BTreeMap<MetadataKey, Bytes> = expected
            .iter()
            .filter(|((i, _), _)| *i == id)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_metadata(entry(&snapshot, &id), &want);
    }
    Outcome::Passed
}

/// An unset key is `NotFound` naming image and key.
pub async fn metadata_missing_is_not_found(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put_tag(&b, "a").await;
    let other = put_tag(&b, "other").await;
    let only_on_other = key("only-on-other");
    b.set_metadata(&a, &MetadataKey::PARENT, parent_value(&other))
        .await
        .must("set_metadata parent");
    b.set_metadata(&other, &only_on_other, Bytes::from_static(b"v"))
        .await
        .must("set_metadata on the other image");

    for k in [MetadataKey::LAST_UPDATED, only_on_other] {
        let err = assert_err!(
            b.get_metadata(&a, &k).await,
            Error::NotFound { key: Key::Metadata { id, key } } if *id == a && *key == k,
            "get_metadata of unset key {k}"
        );
        assert_text(&err, "failed to read metadata");
    }

    b.delete_metadata(&a, &MetadataKey::PARENT)
        .await
        .must("delete_metadata parent");
    let err = assert_err!(
        b.get_metadata(&a, &MetadataKey::PARENT).await,
        Error::NotFound { key: Key::Metadata { id, key } }
            if *id == a && *key == MetadataKey::PARENT,
        "get_metadata of a removed key"
    );
    assert_text(&err, "failed to read metadata");
    Outcome::Passed
}

/// Metadata for an image with no content is `NotFound` and writes nothing.
pub async fn metadata_requires_content(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put_tag(&b, "present").await;
    let missing = id_of("absent");

    let err = assert_err!(
        b.set_metadata(&missing, &MetadataKey::PARENT, parent_value(&a)).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "set_metadata for an image with no content"
    );
    assert_text(&err, "failed to get digest");
    assert_err!(
        b.write(WriteBatch::from(vec![set_summary(missing, "s")])).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "set_summary for an image with no content"
    );
    assert_err!(
        b.get_metadata(&missing, &MetadataKey::PARENT).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "get_metadata after a refused set_metadata"
    );
    let snapshot = load(&b, "after refused metadata writes").await;
    assert_eq!(
        ids(&snapshot),
        vec![a],
        "refused writes must create no image"
    );
    assert_metadata(entry(&snapshot, &a), &BTreeMap::new());

    // Once the content is gone, metadata is refused again.
    b.delete(&a).await.must("delete");
    assert_err!(
        b.set_metadata(&a, &MetadataKey::PARENT, parent_value(&missing)).await,
        Error::NotFound { key: Key::Image(k) } if *k == a,
        "set_metadata for a deleted image"
    );
    let snapshot = load(&b, "after a refused write on a deleted image").await;
    assert!(
        snapshot.images.is_empty(),
        "a refused write brought a deleted image back: {snapshot:?}"
    );
    Outcome::Passed
}

/// Content and its metadata may arrive in one batch.
pub async fn metadata_in_same_batch_as_content(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let parent = content("batch-parent");
    let child = content("batch-child");
    let (p, c) = (parent.id(), child.id());
    write(
        &b,
        vec![
            WriteOp::Put(parent),
            WriteOp::Put(child),
            set_meta(c, &MetadataKey::PARENT, parent_value(&p)),
            set_meta(p, &MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1])),
            set_summary(c, "child-summary"),
        ],
        "one batch with two configs, their metadata and a summary",
    )
    .await;

    assert_eq!(b.get(&p).await.must("get parent"), config("batch-parent"));
    assert_eq!(b.get(&c).await.must("get child"), config("batch-child"));
    assert_eq!(
        b.get_metadata(&c, &MetadataKey::PARENT)
            .await
            .must("get_metadata parent"),
        parent_value(&p)
    );
    let snapshot = load(&b, "after the batch").await;
    let mut want = vec![p, c];
    want.sort();
    assert_eq!(ids(&snapshot), want, "images after the batch");
    assert_metadata(
        entry(&snapshot, &p),
        &BTreeMap::from([(MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]))]),
    );
    assert_eq!(
        entry(&snapshot, &c).summary.as_deref(),
        Some(&b"child-summary"[..]),
        "summary written in the same batch as its content"
    );
    Outcome::Passed
}

/// Removing an unset key succeeds.
pub async fn delete_metadata_missing_is_ok(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put_tag(&b, "a").await;
    let parent = parent_value(&id_of("p"));
    b.set_metadata(&a, &MetadataKey::PARENT, parent.clone())
        .await
        .must("set_metadata parent");

    b.delete_metadata(&a, &MetadataKey::LAST_UPDATED)
        .await
        .must("delete_metadata of a key never set");
    assert_eq!(
        b.get_metadata(&a, &MetadataKey::PARENT)
            .await
            .must("get_metadata of the key left alone"),
        parent,
        "removing one key must leave the others"
    );

    b.delete_metadata(&a, &MetadataKey::PARENT)
        .await
        .must("delete_metadata of a set key");
    b.delete_metadata(&a, &MetadataKey::PARENT)
        .await
        .must("delete_metadata of the same key again");

    let missing = id_of("absent");
    b.delete_metadata(&missing, &MetadataKey::PARENT)
        .await
        .must("delete_metadata on an image with no content");
    let snapshot = load(&b, "after removals").await;
    assert_eq!(ids(&snapshot), vec![a], "removals must create no image");
    assert_metadata(entry(&snapshot, &a), &BTreeMap::new());
    Outcome::Passed
}
