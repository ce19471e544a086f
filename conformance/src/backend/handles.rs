//! Cases about second handles and concurrent writers.

use super::*;

/// (`shared` or `persistent`) A new handle on the same location sees earlier writes.
pub async fn second_handle_sees_writes(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "second_handle_sees_writes";
    let (fixture, first) = crate::images(&h).await;
    let first_blobs = fixture.blobs();
    let caps = first.capabilities();
    let c = content("shared");
    let id = c.id();
    write(
        &first,
        vec![
            WriteOp::Put(c),
            set_meta(id, &MetadataKey::PARENT, parent_value(&id_of("p"))),
            set_summary(id, "summary"),
        ],
        "write through the first handle",
    )
    .await;
    let blob = Bytes::from_static(b"a blob both handles see");
    let blob_digest = Digest::sha256(&blob);
    if let Some(first_blobs) = &first_blobs {
        first_blobs
            .put_blob_bytes(&blob_digest, blob.clone())
            .await
            .must("put_blob through the first handle");
    }

    let second_fixture = fixture.reopen().await;
    let Some(second) = second_fixture.as_ref().and_then(|f| f.store()) else {
        let reason = if caps.shared || caps.persistent {
            "the harness cannot open a second handle, although the backend is shared or persistent"
        } else {
            "capability `shared` or `persistent` is not set and the harness cannot reopen"
        };
        return Outcome::skipped(CASE, reason);
    };

    assert_eq!(
        second.get(&id).await.must("get through the second handle"),
        config("shared")
    );
    assert_eq!(
        second
            .get_metadata(&id, &MetadataKey::PARENT)
            .await
            .must("get_metadata through the second handle"),
        parent_value(&id_of("p"))
    );
    let one = load(&first, "through the first handle").await;
    let two = load(&second, "through the second handle").await;
    assert_eq!(one, two, "both handles must load the same store");
    assert_eq!(ids(&two), vec![id], "the second handle's images");
    if first_blobs.is_some() {
        let second_blobs = second_fixture
            .as_ref()
            .and_then(|f| f.blobs())
            .must("the reopened fixture's blob backend");
        assert_eq!(
            second_blobs
                .get_blob_bytes(&blob_digest)
                .await
                .must("get_blob through the second handle"),
            blob
        );
    }
    writes_go_both_ways(&first, &second, id).await;
    Outcome::Passed
}

/// Tasks writing metadata at once, through one handle and through two
/// when the harness can reopen, lose no write.
pub async fn concurrent_writers_keep_every_write(h: Arc<dyn Harness>) -> Outcome {
    const WRITERS: usize = 8;
    let (fixture, first) = crate::images(&h).await;
    let base = put_tag(&first, "base").await;
    let mut handles = vec![Arc::clone(&first)];
    if let Some(second) = crate::reopen_images(&*fixture).await {
        handles.push(second);
    }

    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let b = Arc::clone(&handles[i % handles.len()]);
            tokio::spawn(async move { write_as_writer(&b, i, base).await })
        })
        .collect();
    let mut written = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        written.push(task.await.must(format_args!("writer {i}")));
    }

    for (n, b) in handles.iter().enumerate() {
        check_every_write(b, n, &written, base, WRITERS).await;
    }
    Outcome::Passed
}

/// A write through the second handle is seen by the first.
async fn writes_go_both_ways(first: &Backend, second: &Backend, id: ImageId) {
    // Writes go both ways.
    let back = put_tag(second, "from-second").await;
    let one = load(first, "after a write through the second handle").await;
    let mut want = vec![id, back];
    want.sort();
    assert_eq!(
        ids(&one),
        want,
        "the first handle must see what the second wrote"
    );
    assert_eq!(
        first
            .get(&back)
            .await
            .must("get through the first handle of what the second wrote"),
        config("from-second")
    );
}

/// Writer `i` stores its image and its metadata one write at a time, and
/// adds its own key to the shared image `base`.
async fn write_as_writer(b: &Backend, i: usize, base: ImageId) -> ImageId {
    let tag = format!("writer-{i}");
    let id = b
        .put(config(&tag))
        .await
        .must(format_args!("put by writer {i}"));
    let writes = [
        set_meta(id, &MetadataKey::PARENT, parent_value(&base)),
        set_meta(
            id,
            &MetadataKey::LAST_UPDATED,
            format!("2024-01-01T00:00:{i:02}Z"),
        ),
        set_meta(id, &key("writer"), tag.clone()),
        // Every writer also adds its own key to one shared image,
        // which is where a read-modify-write backend loses updates.
        set_meta(base, &key(&format!("seen-by-{i}")), tag.clone()),
        set_summary(id, tag.clone()),
    ];
    for op in writes {
        b.write(WriteBatch::from(vec![op]))
            .await
            .must(format_args!("write by writer {i}"));
    }
    id
}

/// Handle `n` sees every image and every metadata value the writers wrote.
async fn check_every_write(
    b: &Backend,
    n: usize,
    written: &[ImageId],
    base: ImageId,
    writers: usize,
) {
    let snapshot = load(b, "after concurrent writers").await;
    let mut want = written.to_vec();
    want.push(base);
    want.sort();
    assert_eq!(
        ids(&snapshot),
        want,
        "handle {n} must see every image the writers stored"
    );
    for (i, id) in written.iter().enumerate() {
        let tag = format!("writer-{i}");
        let e = entry(&snapshot, id);
        assert_metadata(
            e,
            &BTreeMap::from([
                (MetadataKey::PARENT, parent_value(&base)),
                (
                    MetadataKey::LAST_UPDATED,
                    Bytes::from(format!("2024-01-01T00:00:{i:02}Z")),
                ),
                (key("writer"), Bytes::from(tag.clone())),
            ]),
        );
        // A summary is derived data a backend may drop, but a value
        // other than the one written would be a mixed-up write.
        assert!(
            e.summary.is_none() || e.summary == Some(Bytes::from(tag)),
            "summary written by writer {i} reads back as {:?} (handle {n})",
            e.summary
        );
    }
    let shared: BTreeMap<MetadataKey, Bytes> = (0..writers)
        .map(|i| {
            (
                key(&format!("seen-by-{i}")),
                Bytes::from(format!("writer-{i}")),
            )
        })
        .collect();
    assert_metadata(entry(&snapshot, &base), &shared);
}
