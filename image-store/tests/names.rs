//! Names in the store: tagging, untagging, resolving names and IDs, and
//! keeping names in step with deletes, other handles and the backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{
    Capabilities, ImageId, MetadataKey, Reference, Snapshot, StoreBackend, StoreBackendExt as _,
    WriteBatch, WriteOp,
};
use imagecache_store::{Error, Store};

/// A memory backend that records every batch it is given.
#[derive(Debug, Default)]
struct Recording {
    inner: MemoryBackend,
    batches: Mutex<Vec<Vec<WriteOp>>>,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "recording {}", self.inner)
    }
}

#[async_trait::async_trait]
impl StoreBackend for Recording {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn write(&self, batch: WriteBatch) -> imagecache_core::Result<()> {
        self.batches.lock().unwrap().push(batch.ops().to_vec());
        self.inner.write(batch).await
    }

    async fn get(&self, id: &ImageId) -> imagecache_core::Result<Bytes> {
        self.inner.get(id).await
    }

    async fn get_metadata(
        &self,
        id: &ImageId,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        self.inner.get_metadata(id, key).await
    }

    async fn load(&self) -> imagecache_core::Result<Snapshot> {
        self.inner.load().await
    }
}

fn config(comment: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers"}},"comment":"{comment}"}}"#
    ))
}

fn name(s: &str) -> Reference {
    s.parse().unwrap()
}

async fn memory_store() -> Store {
    Store::open(Arc::new(MemoryBackend::new())).await.unwrap()
}

#[tokio::test]
async fn tag_untag_and_list() {
    let store = memory_store().await;
    let a = store.create(config("a")).await.unwrap();
    let b = store.create(config("b")).await.unwrap();

    // A bare name gets `latest`.
    assert_eq!(store.tag(&name("app"), &a).await.unwrap(), None);
    assert_eq!(store.tag(&name("app:1.0"), &a).await.unwrap(), None);
    assert_eq!(
        store.tag(&name("ghcr.io/org/tool:v2"), &b).await.unwrap(),
        None
    );
    // Tagging again with the same image is no move.
    assert_eq!(store.tag(&name("app:latest"), &a).await.unwrap(), None);
    assert_eq!(
        store.names(),
        vec![
            (name("app:1.0"), a),
            (name("app:latest"), a),
            (name("ghcr.io/org/tool:v2"), b),
        ]
    );
    assert_eq!(
        store.names_of(&a),
        vec![name("app:1.0"), name("app:latest")]
    );
    assert_eq!(store.names_of(&b), vec![name("ghcr.io/org/tool:v2")]);

    // A moved tag reports where it was.
    assert_eq!(store.tag(&name("app"), &b).await.unwrap(), Some(a));
    assert_eq!(store.names_of(&a), vec![name("app:1.0")]);
    assert_eq!(
        store.names_of(&b),
        vec![name("app:latest"), name("ghcr.io/org/tool:v2")]
    );

    assert_eq!(store.untag(&name("app:1.0")).await.unwrap(), a);
    assert!(store.names_of(&a).is_empty());
    assert!(store.contains(&a), "untag leaves the image");
    // A bare name means `latest` here too.
    assert_eq!(store.untag(&name("app")).await.unwrap(), b);
    let err = store.untag(&name("app")).await.unwrap_err();
    assert!(
        matches!(&err, Error::NameNotFound { name: n } if *n == name("app:latest")),
        "{err:?}"
    );
    assert!(err.is_not_found());
    assert_eq!(err.to_string(), "No such image: app:latest");
    assert_eq!(store.report().names, 0, "the report is of the last open");
}

#[tokio::test]
async fn tag_refuses_unknown_images_and_moving_digests() {
    let store = memory_store().await;
    let a = store.create(config("a")).await.unwrap();
    let b = store.create(config("b")).await.unwrap();
    let unknown = ImageId::of_config(b"{}");
    let err = store.tag(&name("x"), &unknown).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { id } if id == unknown),
        "{err:?}"
    );
    assert!(store.names().is_empty());

    let pinned = name(&format!("app@{}", ImageId::of_config(b"manifest")));
    assert_eq!(store.tag(&pinned, &a).await.unwrap(), None);
    // The same image again is fine; another one is not.
    assert_eq!(store.tag(&pinned, &a).await.unwrap(), None);
    let err = store.tag(&pinned, &b).await.unwrap_err();
    assert!(
        matches!(&err, Error::DigestInUse { name: n, current } if *n == pinned && *current == a),
        "{err:?}"
    );
    assert_eq!(store.names(), vec![(pinned, a)]);
}

#[tokio::test]
async fn tag_records_last_updated_in_the_same_batch() {
    let backend = Arc::new(Recording::default());
    let store = Store::open(backend.clone()).await.unwrap();
    let a = store.create(config("a")).await.unwrap();
    assert_eq!(store.last_updated(&a).unwrap(), None);
    backend.batches.lock().unwrap().clear();

    store.tag(&name("app:1"), &a).await.unwrap();
    let batches = backend.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "one batch: {batches:?}");
    assert!(matches!(
        &batches[0][..],
        [
            WriteOp::SetName { name: n, id },
            WriteOp::SetMetadata { id: m, key, .. },
        ] if *n == name("app:1") && *id == a && *m == a && *key == MetadataKey::LAST_UPDATED
    ));
    let when = store
        .last_updated(&a)
        .unwrap()
        .expect("tag sets lastUpdated");
    let stored = backend
        .get_metadata(&a, &MetadataKey::LAST_UPDATED)
        .await
        .unwrap();
    assert_eq!(stored, Bytes::from(when.to_string()));
}

#[tokio::test]
async fn resolve_reads_ids_names_and_prefixes_as_docker_does() {
    let store = memory_store().await;
    let a = store.create(config("a")).await.unwrap();
    let b = store.create(config("b")).await.unwrap();
    store.tag(&name("busybox:1.36"), &a).await.unwrap();
    store.tag(&name("busybox"), &a).await.unwrap();

    assert_eq!(store.resolve(&a.to_string()).unwrap(), a);
    assert_eq!(store.resolve(&a.hex()).unwrap(), a);
    assert_eq!(store.resolve("busybox").unwrap(), a);
    assert_eq!(store.resolve("busybox:latest").unwrap(), a);
    assert_eq!(store.resolve("docker.io/library/busybox:1.36").unwrap(), a);
    assert_eq!(store.resolve(&b.hex()[..12]).unwrap(), b);
    assert_eq!(
        store
            .resolve(&format!("sha256:{}", &b.hex()[..12]))
            .unwrap(),
        b
    );

    // A name wins over an ID prefix that reads the same.
    let prefix = &b.hex()[..12];
    store.tag(&name(prefix), &a).await.unwrap();
    assert_eq!(store.resolve(prefix).unwrap(), a);
    assert_eq!(store.resolve(&format!("sha256:{prefix}")).unwrap(), b);

    for missing in [
        "busybox:9",
        "nothing",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "Not A Name",
    ] {
        let err = store.resolve(missing).unwrap_err();
        assert!(
            matches!(&err, Error::NoSuchImage { term } if term == missing),
            "{missing}: {err:?}"
        );
    }
    assert!(matches!(store.resolve(""), Err(Error::EmptySearch)));
}

#[tokio::test]
async fn delete_removes_names_in_memory_and_in_the_backend() {
    let backend = Arc::new(MemoryBackend::new());
    let store = Store::open(backend.clone()).await.unwrap();
    let a = store.create(config("a")).await.unwrap();
    let b = store.create(config("b")).await.unwrap();
    store.tag(&name("a:1"), &a).await.unwrap();
    store.tag(&name("a:2"), &a).await.unwrap();
    store.tag(&name("b:1"), &b).await.unwrap();

    store.delete(&a).await.unwrap();
    assert_eq!(store.names(), vec![(name("b:1"), b)]);
    assert!(store.names_of(&a).is_empty());
    assert_eq!(backend.load().await.unwrap().names, vec![(name("b:1"), b)]);
    assert!(matches!(
        store.resolve("a:1"),
        Err(Error::NoSuchImage { .. })
    ));
    // Storing the image again does not bring its names back.
    let again = store.create(config("a")).await.unwrap();
    assert_eq!(again, a);
    assert!(store.names_of(&a).is_empty());
}

#[tokio::test]
async fn open_and_refresh_pick_up_names_of_other_handles() {
    let dir = tempfile::tempdir().unwrap();
    let one = Store::open(Arc::new(FsBackend::open(dir.path()).await.unwrap()))
        .await
        .unwrap();
    let a = one.create(config("a")).await.unwrap();
    one.tag(&name("shared:one"), &a).await.unwrap();

    let two = Store::open(Arc::new(FsBackend::open(dir.path()).await.unwrap()))
        .await
        .unwrap();
    assert_eq!(two.names(), vec![(name("shared:one"), a)]);
    assert_eq!(two.report().names, 1);

    let b = two.create(config("b")).await.unwrap();
    two.tag(&name("shared:two"), &b).await.unwrap();
    two.untag(&name("shared:one")).await.unwrap();
    // Not seen until a refresh.
    assert_eq!(one.names(), vec![(name("shared:one"), a)]);
    let report = one.refresh().await.unwrap();
    assert_eq!(report.names, 1);
    assert_eq!(one.names(), vec![(name("shared:two"), b)]);
    assert_eq!(one.resolve("shared:two").unwrap(), b);

    // Names the backend holds for images the store leaves out are not
    // listed; a name set straight on the backend is picked up.
    let backend = one.backend().clone();
    backend.set_name(&name("direct:x"), &a).await.unwrap();
    one.refresh().await.unwrap();
    assert_eq!(one.resolve("direct:x").unwrap(), a);
}
