//! Names in the `fs` backend are Docker's `repositories.json`: a file
//! Docker wrote is read, a file this backend writes is one Docker reads,
//! and a damaged file is reported and kept, never lost.
#![cfg(feature = "fs")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{ImageId, Reference, StoreBackend, StoreBackendExt as _, WriteBatch};

fn name(s: &str) -> Reference {
    s.parse().unwrap()
}

async fn put(b: &FsBackend, comment: &str) -> ImageId {
    b.put(Bytes::from(format!(
        r#"{{"rootfs":{{"type":"layers"}},"comment":"{comment}"}}"#
    )))
    .await
    .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A digest that names a manifest, not an image of the store.
fn manifest_digest() -> String {
    format!("sha256:{}", "d0".repeat(32))
}

/// `repositories.json` exactly as Docker writes it: Go's `json.Marshal` of
/// `map[string]map[string]digest.Digest`, compact, keys sorted.
fn docker_file(busybox: ImageId, app: ImageId, absent: ImageId) -> String {
    format!(
        concat!(
            r#"{{"Repositories":{{"#,
            r#""busybox":{{"busybox:latest":"{bb}","busybox@{d}":"{bb}"}},"#,
            r#""ghcr.io/org/app":{{"ghcr.io/org/app:v1":"{app}"}},"#,
            r#""gone":{{"gone:latest":"{absent}"}}"#,
            r#"}}}}"#
        ),
        bb = busybox,
        d = manifest_digest(),
        app = app,
        absent = absent,
    )
}

#[tokio::test]
async fn docker_names_are_read_and_kept_when_imagecache_tags() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("image/overlay2");
    let b = FsBackend::open(overlay.join("imagedb")).await.unwrap();
    let file = overlay.join("repositories.json");
    assert_eq!(b.names_file(), file);

    let busybox = put(&b, "busybox").await;
    let app = put(&b, "app").await;
    let absent = ImageId::of_config(b"an image this store does not hold");
    std::fs::write(&file, docker_file(busybox, app, absent)).unwrap();

    // Docker's names are read; the one whose image is absent is not listed.
    let snapshot = b.load().await.unwrap();
    let pinned = name(&format!("busybox@{}", manifest_digest()));
    let mut want = vec![
        (name("busybox:latest"), busybox),
        (pinned.clone(), busybox),
        (name("ghcr.io/org/app:v1"), app),
    ];
    want.sort();
    assert_eq!(snapshot.names, want);
    assert!(
        snapshot.quarantined.is_empty(),
        "{:?}",
        snapshot.quarantined
    );

    // A tag through imagecache keeps every other entry, the dangling one
    // included, in Docker's exact format.
    b.set_name(&name("alpine:3.20"), &app).await.unwrap();
    let expected = format!(
        concat!(
            r#"{{"Repositories":{{"#,
            r#""alpine":{{"alpine:3.20":"{app}"}},"#,
            r#""busybox":{{"busybox:latest":"{bb}","busybox@{d}":"{bb}"}},"#,
            r#""ghcr.io/org/app":{{"ghcr.io/org/app:v1":"{app}"}},"#,
            r#""gone":{{"gone:latest":"{absent}"}}"#,
            r#"}}}}"#
        ),
        bb = busybox,
        d = manifest_digest(),
        app = app,
        absent = absent,
    );
    assert_eq!(read(&file), expected);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "Docker writes repositories.json with mode 0600"
    );
    let parsed: serde_json::Value = serde_json::from_str(&read(&file)).unwrap();
    assert_eq!(
        parsed["Repositories"]["busybox"]["busybox:latest"],
        serde_json::Value::String(busybox.to_string())
    );

    // Moving a tag and deleting an image edit only their entries; a
    // repository left empty goes, as Docker removes it.
    b.set_name(&name("ghcr.io/org/app:v1"), &busybox)
        .await
        .unwrap();
    b.delete(&busybox).await.unwrap();
    let expected = format!(
        concat!(
            r#"{{"Repositories":{{"#,
            r#""alpine":{{"alpine:3.20":"{app}"}},"#,
            r#""gone":{{"gone:latest":"{absent}"}}"#,
            r#"}}}}"#
        ),
        app = app,
        absent = absent,
    );
    assert_eq!(read(&file), expected);
    assert_eq!(
        b.load().await.unwrap().names,
        vec![(name("alpine:3.20"), app)]
    );
}

#[tokio::test]
async fn names_file_is_inside_a_root_not_named_imagedb() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    assert_eq!(b.names_file(), dir.path().join("repositories.json"));
    let a = put(&b, "a").await;
    // Nothing is written until there is a name.
    b.delete_name(&name("x")).await.unwrap();
    assert!(!b.names_file().exists());
    b.set_name(&name("x:1"), &a).await.unwrap();
    assert_eq!(
        read(b.names_file()),
        format!(r#"{{"Repositories":{{"x":{{"x:1":"{a}"}}}}}}"#)
    );
}

#[tokio::test]
async fn a_damaged_file_is_reported_then_moved_aside_by_the_next_tag() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let a = put(&b, "a").await;
    let doomed = put(&b, "doomed").await;
    let file = b.names_file().to_path_buf();
    let damaged = r#"{"Repositories":{"busybox":{"busybox:latest":"sha256:"#;
    std::fs::write(&file, damaged).unwrap();

    // The open does not fail: no names, and the file is reported.
    let snapshot = b.load().await.unwrap();
    assert!(snapshot.names.is_empty());
    assert_eq!(snapshot.images.len(), 2);
    let report = snapshot
        .quarantined
        .iter()
        .find(|q| q.name == file.display().to_string())
        .expect("the damaged file is reported");
    assert!(report.reason.contains("repositories.json"), "{report:?}");

    // Removals leave it alone: there is nothing they could safely change.
    b.delete(&doomed).await.unwrap();
    b.delete_name(&name("busybox:latest")).await.unwrap();
    assert_eq!(read(&file), damaged);

    // A tag moves it aside, bytes intact, and starts a new file.
    b.set_name(&name("fresh:1"), &a).await.unwrap();
    assert_eq!(
        read(&file),
        format!(r#"{{"Repositories":{{"fresh":{{"fresh:1":"{a}"}}}}}}"#)
    );
    let aside_dir = dir.path().join("imagecache/quarantine/names");
    let entries: Vec<_> = std::fs::read_dir(&aside_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(read(&entries[0].join("repositories.json")), damaged);
    assert!(!read(&entries[0].join("reason")).is_empty());

    let snapshot = b.load().await.unwrap();
    assert_eq!(snapshot.names, vec![(name("fresh:1"), a)]);
    assert!(
        snapshot
            .quarantined
            .iter()
            .any(|q| q.name.ends_with("repositories.json") && q.reason.starts_with("set aside")),
        "{:?}",
        snapshot.quarantined
    );
}

#[tokio::test]
async fn files_docker_accepts_are_read_as_docker_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let a = put(&b, "a").await;
    let file = b.names_file().to_path_buf();
    for (text, names) in [
        // Go decodes these as no names at all.
        ("null", vec![]),
        ("{}", vec![]),
        (r#"{"Repositories":null}"#, vec![]),
        (r#"{"Repositories":{"x":null}}"#, vec![]),
        // Go matches the field name without regard to case.
        (
            &*format!(r#"{{"repositories":{{"x":{{"x:1":"{a}"}}}}}}"#),
            vec![(name("x:1"), a)],
        ),
        // Whitespace and a key spelled in full.
        (
            &*format!(
                "{{\n  \"Repositories\": {{ \"x\": {{ \"docker.io/library/x:2\": \"{a}\" }} }}\n}}"
            ),
            vec![(name("x:2"), a)],
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let snapshot = b.load().await.unwrap();
        assert_eq!(snapshot.names, names, "{text}");
        assert!(
            snapshot.quarantined.is_empty(),
            "{text}: {:?}",
            snapshot.quarantined
        );
    }

    // Entries that are not a reference and an image ID are kept, unlisted.
    std::fs::write(
        &file,
        format!(r#"{{"Repositories":{{"Bad Name":{{"Bad Name:1":"{a}"}},"x":{{"x:1":"sha256:short"}}}}}}"#),
    )
    .unwrap();
    assert!(b.load().await.unwrap().names.is_empty());
    // Removing a name removes an unreadable entry written where it goes;
    // setting it writes a good entry there.
    b.delete_name(&name("x:1")).await.unwrap();
    assert_eq!(
        read(&file),
        format!(r#"{{"Repositories":{{"Bad Name":{{"Bad Name:1":"{a}"}}}}}}"#)
    );
    b.set_name(&name("y:1"), &a).await.unwrap();
    assert_eq!(
        read(&file),
        format!(r#"{{"Repositories":{{"Bad Name":{{"Bad Name:1":"{a}"}},"y":{{"y:1":"{a}"}}}}}}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_handles_lose_no_name() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsBackend::open(dir.path()).await.unwrap();
    let second = FsBackend::open(dir.path()).await.unwrap();
    let a = put(&first, "a").await;
    let handles = [Arc::new(first), Arc::new(second)];
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let b = Arc::clone(&handles[i % 2]);
            tokio::spawn(async move {
                let mut batch = WriteBatch::new();
                batch.set_name(name(&format!("app:t{i}")), a);
                b.write(batch).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for b in &handles {
        let names = b.load().await.unwrap().names;
        assert_eq!(names.len(), 16, "{names:?}");
    }
}

#[tokio::test]
async fn an_image_a_load_sets_aside_takes_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let k = put(&b, "kept").await;
    // Another program left an empty config for an image, and names for it.
    let config = r#"{"rootfs":{"type":"layers"},"comment":"a"}"#;
    let a = ImageId::of_config(config.as_bytes());
    std::fs::write(dir.path().join("content/sha256").join(a.hex()), b"").unwrap();
    std::fs::write(
        b.names_file(),
        format!(r#"{{"Repositories":{{"a":{{"a:1":"{a}"}},"k":{{"k:1":"{k}"}}}}}}"#),
    )
    .unwrap();

    // The load sets the image aside, and its names go with it.
    let snapshot = b.load().await.unwrap();
    assert!(snapshot.quarantined.iter().any(|q| q.name == a.to_string()));
    assert_eq!(snapshot.names, vec![(name("k:1"), k)]);
    assert_eq!(
        read(b.names_file()),
        format!(r#"{{"Repositories":{{"k":{{"k:1":"{k}"}}}}}}"#)
    );
    b.put(Bytes::from_static(config.as_bytes())).await.unwrap();
    assert_eq!(b.load().await.unwrap().names, vec![(name("k:1"), k)]);
}
