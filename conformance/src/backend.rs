//! The `backend` group: the [`StoreBackend`] contract, one case per bullet
//! of its `# Behavior` list, plus a concurrency case.
//!
//! Every case takes a fresh backend from the [`Harness`], so cases never
//! share keys and never need to wipe anything. Optional behaviour is gated by
//! [`StoreBackend::capabilities`] or by the harness hooks, and a case that
//! does not apply says so through [`Outcome::skipped`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{
    BlobBackendExt as _, Content, Digest, Error, ImageId, Key, MetadataKey, Snapshot,
    SnapshotEntry, StoreBackend, StoreBackendExt as _, WriteBatch, WriteOp,
};

use crate::check::{
    Must as _, assert_err, assert_text, config, content, fresh_seed, id_of, independent_sha256_hex,
    key, pseudo_random_bytes,
};
use crate::{Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) backend [
            put_then_get_roundtrips,
            put_existing_is_noop,
            get_missing_is_not_found,
            get_corrupt_is_corrupt,
            empty_content_is_refused,
            metadata_roundtrips,
            metadata_missing_is_not_found,
            metadata_requires_content,
            metadata_in_same_batch_as_content,
            delete_metadata_missing_is_ok,
            delete_removes_content_and_metadata,
            delete_missing_is_ok,
            delete_leaves_others,
            load_lists_everything,
            load_on_empty_store,
            failed_batch_changes_nothing,
            summary_is_returned_by_load,
            quarantine_sets_aside,
            second_handle_sees_writes,
            concurrent_writers_keep_every_write,
        ] }
    };
}

/// Every case of the group, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__backend_cases!(__case_registry!());

type Backend = Arc<dyn StoreBackend>;

/// Applies a batch the case expects to succeed.
async fn write(b: &Backend, ops: Vec<WriteOp>, what: &str) {
    b.write(WriteBatch::from(ops)).await.must(what);
}

/// Stores `config(tag)` and returns its ID.
async fn put_tag(b: &Backend, tag: &str) -> ImageId {
    let id = b
        .put(config(tag))
        .await
        .must(format_args!("put of config {tag:?}"));
    assert_eq!(
        id,
        id_of(tag),
        "put of config {tag:?} returned the wrong ID"
    );
    id
}

fn set_meta(id: ImageId, k: &MetadataKey, value: impl Into<Bytes>) -> WriteOp {
    WriteOp::SetMetadata {
        id,
        key: k.clone(),
        value: value.into(),
    }
}

fn set_summary(id: ImageId, summary: impl Into<Bytes>) -> WriteOp {
    WriteOp::SetSummary {
        id,
        summary: summary.into(),
    }
}

async fn load(b: &Backend, what: &str) -> Snapshot {
    b.load().await.must(format_args!("load {what}"))
}

fn ids(snapshot: &Snapshot) -> Vec<ImageId> {
    snapshot.images.iter().map(|e| e.id).collect()
}

fn entry<'a>(snapshot: &'a Snapshot, id: &ImageId) -> &'a SnapshotEntry {
    snapshot
        .images
        .iter()
        .find(|e| e.id == *id)
        .must(format_args!("load should report image {id}"))
}

/// Fails unless the image's metadata is exactly `expected`, sorted by key.
#[track_caller]
fn assert_metadata(entry: &SnapshotEntry, expected: &BTreeMap<MetadataKey, Bytes>) {
    let expected: Vec<(MetadataKey, Bytes)> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        entry.metadata, expected,
        "metadata of image {} as reported by load",
        entry.id
    );
}

fn parent_value(id: &ImageId) -> Bytes {
    Bytes::from(id.to_string())
}

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
        if !f.damage().config {
            return Outcome::skipped(CASE, "the fixture has no corrupt_config hook");
        }
        f.corrupt_config(&id, damage)
            .await
            .must(format_args!("corrupt_config ({what})"));
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
    let missing = id_of("missing");
    let batches: Vec<(&str, Vec<WriteOp>, ImageId)> = vec![
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
    ];
    for (what, ops, culprit) in batches {
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

    // Writes go both ways.
    let back = put_tag(&second, "from-second").await;
    let one = load(&first, "after a write through the second handle").await;
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
            tokio::spawn(async move {
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
            })
        })
        .collect();
    let mut written = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        written.push(task.await.must(format_args!("writer {i}")));
    }

    for (n, b) in handles.iter().enumerate() {
        let snapshot = load(b, "after concurrent writers").await;
        let mut want = written.clone();
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
        let shared: BTreeMap<MetadataKey, Bytes> = (0..WRITERS)
            .map(|i| {
                (
                    key(&format!("seen-by-{i}")),
                    Bytes::from(format!("writer-{i}")),
                )
            })
            .collect();
        assert_metadata(entry(&snapshot, &base), &shared);
    }
    Outcome::Passed
}
