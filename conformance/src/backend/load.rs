//! Cases about loading, failed batches, summaries and quarantine.

use super::*;

/// Load reports every image with its metadata and summary, sorted by ID.
pub async fn load_lists_everything(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let mut expected = Vec::new();
    for i in 0..6u8 {
        let tag = format!("image-{i}");
        let c = content(&tag);
        let id = c.id();
        let mut ops = vec![WriteOp::Put(c)];
        let mut metadata = BTreeMap::new();
        if i % 2 == 0 {
            metadata.insert(MetadataKey::PARENT, parent_value(&id_of("base")));
        }
        if i % 3 == 0 {
            metadata.insert(MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
        }
        metadata.insert(key("index"), Bytes::from(vec![i]));
        for (k, v) in &metadata {
            ops.push(set_meta(id, k, v.clone()));
        }
        let summary = (i % 2 == 1).then(|| Bytes::from(format!("summary-{i}")));
        if let Some(s) = &summary {
            ops.push(set_summary(id, s.clone()));
        }
        write(&b, ops, "write of one image").await;
        expected.push(SnapshotEntry {
            id,
            metadata: metadata.into_iter().collect(),
            summary,
        });
    }
    expected.sort_by_key(|e| e.id);

    let snapshot = load(&b, "of six images").await;
    assert_eq!(
        snapshot.images, expected,
        "load must report every image, sorted by ID, with its metadata and summary"
    );
    assert!(
        snapshot.quarantined.is_empty(),
        "nothing was quarantined, yet load reports {:?}",
        snapshot.quarantined
    );
    Outcome::Passed
}

/// A new store loads as empty.
pub async fn load_on_empty_store(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, b) = crate::images(&h).await;
    let snapshot = load(&b, "of a new store").await;
    assert_eq!(snapshot, Snapshot::default(), "a new store must be empty");
    if let Some(blobs) = fixture.blobs() {
        let listed = blobs.list_blobs().await.must("list_blobs of a new store");
        assert!(listed.is_empty(), "a new store lists blobs: {listed:?}");
    }
    Outcome::Passed
}

/// Batches that must be refused whole, with the image each is refused
/// for: `a_id` is stored, `newcomer` is not.
fn refused_batches(
    a_id: ImageId,
    newcomer: &Content,
) -> Vec<(&'static str, Vec<WriteOp>, ImageId)> {
    let n_id = newcomer.id();
    let missing = id_of("missing");
    vec![
        (
            "writes followed by metadata for an image with no content",
            vec![
                WriteOp::Put(newcomer.clone()),
                set_meta(a_id, &MetadataKey::PARENT, "changed"),
                set_summary(a_id, "changed"),
                set_meta(n_id, &MetadataKey::PARENT, parent_value(&a_id)),
                set_meta(missing, &MetadataKey::PARENT, parent_value(&a_id)),
            ],
            missing,
        ),
        (
            "metadata placed before the content it needs",
            vec![
                set_meta(n_id, &MetadataKey::PARENT, parent_value(&a_id)),
                WriteOp::Put(newcomer.clone()),
            ],
            n_id,
        ),
        (
            "metadata for an image deleted earlier in the batch",
            vec![
                WriteOp::Delete { id: a_id },
                set_meta(a_id, &MetadataKey::LAST_UPDATED, "2024-01-01T00:00:00Z"),
            ],
            a_id,
        ),
        (
            "a put followed by a quarantine of an image with no content",
            vec![
                WriteOp::Put(newcomer.clone()),
                WriteOp::Quarantine {
                    id: missing,
                    reason: "test".into(),
                },
            ],
            missing,
        ),
    ]
}

/// A batch with an invalid operation is refused whole.
pub async fn failed_batch_changes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = content("a");
    let a_id = a.id();
    let parent = parent_value(&id_of("p"));
    write(
        &b,
        vec![
            WriteOp::Put(a),
            set_meta(a_id, &MetadataKey::PARENT, parent.clone()),
            set_summary(a_id, "summary-a"),
        ],
        "setup",
    )
    .await;
    let before = load(&b, "before the refused batches").await;

    let newcomer = content("newcomer");
    let n_id = newcomer.id();
    for (what, ops, culprit) in refused_batches(a_id, &newcomer) {
        assert_err!(
            b.write(WriteBatch::from(ops)).await,
            Error::NotFound { key: Key::Image(k) } if *k == culprit,
            "a batch with {what}"
        );
        let after = load(&b, "after a refused batch").await;
        assert_eq!(after, before, "a refused batch ({what}) changed the store");
        assert_err!(
            b.get(&n_id).await,
            Error::NotFound { .. },
            "get of content from a refused batch ({what})"
        );
        assert_eq!(
            b.get_metadata(&a_id, &MetadataKey::PARENT)
                .await
                .must("get_metadata after a refused batch"),
            parent,
            "a refused batch ({what}) changed metadata"
        );
    }
    Outcome::Passed
}

/// The last summary written is returned; delete drops it.
pub async fn summary_is_returned_by_load(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put_tag(&b, "a").await;
    let plain = put_tag(&b, "plain").await;
    write(&b, vec![set_summary(a, "first")], "first summary").await;
    write(&b, vec![set_summary(a, "second")], "second summary").await;

    let snapshot = load(&b, "after two summaries").await;
    assert_eq!(
        entry(&snapshot, &a).summary.as_deref(),
        Some(&b"second"[..]),
        "load must return the last summary written"
    );
    assert_eq!(
        entry(&snapshot, &plain).summary,
        None,
        "an image never given a summary"
    );

    let missing = id_of("missing");
    assert_err!(
        b.write(WriteBatch::from(vec![set_summary(missing, "x")])).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "a summary for an image with no content"
    );

    b.delete(&a).await.must("delete");
    let snapshot = load(&b, "after delete").await;
    assert_eq!(ids(&snapshot), vec![plain], "images after delete");
    b.put(config("a"))
        .await
        .must("put of the deleted config again");
    let snapshot = load(&b, "after re-storing").await;
    assert_eq!(
        entry(&snapshot, &a).summary,
        None,
        "delete must drop the summary for good"
    );
    Outcome::Passed
}

/// A quarantined image leaves `load().images` and appears in `quarantined`.
pub async fn quarantine_sets_aside(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let bad = put_tag(&b, "bad").await;
    let good = put_tag(&b, "good").await;
    b.set_metadata(&good, &MetadataKey::PARENT, parent_value(&bad))
        .await
        .must("set_metadata");
    let reason = "stored bytes hash to something else";
    write(
        &b,
        vec![WriteOp::Quarantine {
            id: bad,
            reason: reason.into(),
        }],
        "quarantine",
    )
    .await;

    for round in ["first", "second"] {
        let snapshot = load(&b, "after quarantine").await;
        assert_eq!(
            ids(&snapshot),
            vec![good],
            "{round} load after quarantine must list only the good image"
        );
        assert_metadata(
            entry(&snapshot, &good),
            &BTreeMap::from([(MetadataKey::PARENT, parent_value(&bad))]),
        );
        let hex = bad.hex();
        let found = snapshot
            .quarantined
            .iter()
            .find(|q| q.name.contains(&hex))
            .must(format_args!(
                "{round} load must report {bad} as quarantined, got {:?}",
                snapshot.quarantined
            ));
        assert!(
            found.reason.contains(reason),
            "the quarantine reason {:?} should contain {reason:?}",
            found.reason
        );
    }

    let missing = id_of("missing");
    assert_err!(
        b.write(WriteBatch::from(vec![WriteOp::Quarantine {
            id: missing,
            reason: "x".into()
        }]))
        .await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "quarantine of an image with no content"
    );
    Outcome::Passed
}
