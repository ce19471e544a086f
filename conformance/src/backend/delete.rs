//! Cases about deletes.

use super::*;

/// Delete leaves no content, metadata or summary.
pub async fn delete_removes_content_and_metadata(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let c = content("doomed");
    let id = c.id();
    write(
        &b,
        vec![
            WriteOp::Put(c.clone()),
            set_meta(id, &MetadataKey::PARENT, parent_value(&id_of("p"))),
            set_meta(id, &MetadataKey::LAST_UPDATED, "2024-01-01T00:00:00Z"),
            set_summary(id, "summary"),
        ],
        "write of an image with metadata and summary",
    )
    .await;

    b.delete(&id).await.must("delete");
    let err = assert_err!(
        b.get(&id).await,
        Error::NotFound { key: Key::Image(k) } if *k == id,
        "get after delete"
    );
    assert_text(&err, "failed to get digest");
    assert_err!(
        b.get_metadata(&id, &MetadataKey::PARENT).await,
        Error::NotFound { .. },
        "get_metadata after delete"
    );
    let snapshot = load(&b, "after delete").await;
    assert!(
        snapshot.images.is_empty(),
        "load still reports a deleted image: {snapshot:?}"
    );

    // Storing the same bytes again must not resurrect the old metadata.
    write(&b, vec![WriteOp::Put(c)], "put of the same config again").await;
    assert_err!(
        b.get_metadata(&id, &MetadataKey::PARENT).await,
        Error::NotFound {
            key: Key::Metadata { .. }
        },
        "get_metadata of a re-stored image"
    );
    let snapshot = load(&b, "after re-storing").await;
    let e = entry(&snapshot, &id);
    assert_metadata(e, &BTreeMap::new());
    assert_eq!(e.summary, None, "a deleted summary came back");
    Outcome::Passed
}

/// Deleting an unknown image succeeds.
pub async fn delete_missing_is_ok(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let missing = id_of("absent");
    b.delete(&missing).await.must("delete on an empty store");

    let a = put_tag(&b, "a").await;
    b.delete(&missing).await.must("delete of an unknown image");
    write(
        &b,
        vec![
            WriteOp::Delete { id: missing },
            WriteOp::Delete { id: missing },
        ],
        "a batch deleting an unknown image twice",
    )
    .await;
    assert_eq!(b.get(&a).await.must("get of the kept image"), config("a"));

    b.delete(&a).await.must("delete");
    b.delete(&a).await.must("second delete of the same image");
    let snapshot = load(&b, "after deletes").await;
    assert!(snapshot.images.is_empty(), "images left: {snapshot:?}");
    Outcome::Passed
}

/// Deleting one image leaves the others intact.
pub async fn delete_leaves_others(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let tags = ["keep-1", "doomed", "keep-2"];
    let ids_by_tag: Vec<ImageId> = tags.iter().map(|t| id_of(t)).collect();
    let mut ops = Vec::new();
    for (tag, id) in tags.iter().zip(&ids_by_tag) {
        ops.push(WriteOp::Put(content(tag)));
        ops.push(set_meta(
            *id,
            &MetadataKey::PARENT,
            parent_value(&ids_by_tag[1]),
        ));
        ops.push(set_meta(*id, &key("tag"), Bytes::from(tag.to_string())));
        ops.push(set_summary(*id, format!("summary of {tag}")));
    }
    write(&b, ops, "write of three images").await;

    b.delete(&ids_by_tag[1])
        .await
        .must("delete of the middle image");
    let snapshot = load(&b, "after delete").await;
    let mut want = vec![ids_by_tag[0], ids_by_tag[2]];
    want.sort();
    assert_eq!(ids(&snapshot), want, "images left after deleting one");
    for i in [0, 2] {
        let id = ids_by_tag[i];
        assert_eq!(
            b.get(&id).await.must("get of a kept image"),
            config(tags[i])
        );
        // The backend does not orphan children: that is the store's job.
        assert_metadata(
            entry(&snapshot, &id),
            &BTreeMap::from([
                (MetadataKey::PARENT, parent_value(&ids_by_tag[1])),
                (key("tag"), Bytes::from(tags[i].to_string())),
            ]),
        );
        assert_eq!(
            entry(&snapshot, &id).summary,
            Some(Bytes::from(format!("summary of {}", tags[i]))),
            "summary of a kept image"
        );
    }
    Outcome::Passed
}
