//! The directory backend against Docker's on-disk layout: what it writes,
//! what it reads when Docker (or anyone) wrote the files, and how a load
//! picks up changes made behind its back.

#![cfg(feature = "fs")]
// Helpers of a test crate panic on any failure: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use imagecache_backends::fs::{FsBackend, FsConfig};
use imagecache_core::{
    Content, Error, ImageId, Key, MetadataKey, Snapshot, StoreBackend, StoreBackendExt as _,
    WriteBatch,
};

fn config(n: u32) -> Bytes {
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"comment":"image {n}"}}"#
    ))
}

fn content(n: u32) -> Content {
    Content::new(config(n)).unwrap()
}

fn key(s: &str) -> MetadataKey {
    MetadataKey::new(s).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What is really in the Docker layout, read the way Docker reads it:
/// every valid content name, with every metadata file of its directory.
fn disk_truth(root: &Path) -> BTreeMap<ImageId, BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(root.join("content/sha256")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let Ok(id) = ImageId::parse(&format!("sha256:{name}")) else {
            continue;
        };
        let mut meta = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(root.join("metadata/sha256").join(&name)) {
            for m in rd {
                let m = m.unwrap();
                let k = m.file_name().into_string().unwrap();
                if k.starts_with(".tmp-") {
                    continue;
                }
                meta.insert(k, fs::read(m.path()).unwrap());
            }
        }
        out.insert(id, meta);
    }
    out
}

fn snapshot_view(s: &Snapshot) -> BTreeMap<ImageId, BTreeMap<String, Vec<u8>>> {
    s.images
        .iter()
        .map(|e| {
            (
                e.id,
                e.metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
            )
        })
        .collect()
}

async fn assert_load_matches_disk(b: &FsBackend, root: &Path) -> Snapshot {
    let s = b.load().await.unwrap();
    let ids: Vec<ImageId> = s.images.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "load must sort images by ID");
    assert_eq!(snapshot_view(&s), disk_truth(root));
    s
}

/// One durable create: config, parent, builtLocally and lastUpdated, summary.
fn create_batch(n: u32, parent: Option<ImageId>) -> (ImageId, WriteBatch) {
    let mut batch = WriteBatch::new();
    let id = batch.put(content(n));
    if let Some(p) = parent {
        batch.set_metadata(id, MetadataKey::PARENT, p.to_string());
    }
    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    batch.set_metadata(
        id,
        MetadataKey::LAST_UPDATED,
        Bytes::from_static(b"2024-05-01T12:00:00.123456789+02:00"),
    );
    batch.set_summary(id, format!("summary {n}"));
    (id, batch)
}

/// Writes a file the way Docker's atomic writer does: temp file, rename.
fn docker_write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    let tmp = dir.join(format!(".tmp-{name}12345"));
    fs::write(&tmp, data).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

fn content_dir(root: &Path) -> PathBuf {
    root.join("content/sha256")
}

fn meta_dir(root: &Path, id: &ImageId) -> PathBuf {
    root.join("metadata/sha256").join(id.hex())
}

fn set_old(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[tokio::test]
async fn layout_is_byte_for_byte_dockers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (base, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    let (child, batch) = create_batch(2, Some(base));
    b.write(batch).await.unwrap();

    for d in ["content", "content/sha256", "metadata", "metadata/sha256"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }
    let cfile = content_dir(root).join(child.hex());
    assert_eq!(fs::read(&cfile).unwrap(), config(2));
    assert_eq!(mode(&cfile), 0o600);
    let mdir = meta_dir(root, &child);
    assert_eq!(mode(&mdir), 0o700);
    assert_eq!(
        fs::read(mdir.join("parent")).unwrap(),
        base.to_string().as_bytes()
    );
    assert_eq!(fs::read(mdir.join("builtLocally")).unwrap(), [1u8]);
    assert_eq!(
        fs::read(mdir.join("lastUpdated")).unwrap(),
        b"2024-05-01T12:00:00.123456789+02:00"
    );
    for f in ["parent", "builtLocally", "lastUpdated"] {
        assert_eq!(mode(&mdir.join(f)), 0o600, "{f}");
    }

    // Nothing of ours inside Docker's directories: no temp files, no index.
    let (b1, b2) = (base.hex(), child.hex());
    let mut expected_content = vec![
        "sha256/".to_owned(),
        format!("sha256/{b1}"),
        format!("sha256/{b2}"),
    ];
    expected_content.sort();
    assert_eq!(tree(&root.join("content")), expected_content);
    let mut expected_meta = vec!["sha256/".to_owned()];
    for (h, keys) in [
        (&b1, &["builtLocally", "lastUpdated"][..]),
        (&b2, &["builtLocally", "lastUpdated", "parent"][..]),
    ] {
        expected_meta.push(format!("sha256/{h}/"));
        for k in keys {
            expected_meta.push(format!("sha256/{h}/{k}"));
        }
    }
    expected_meta.sort();
    assert_eq!(tree(&root.join("metadata")), expected_meta);
    let top: Vec<String> = tree(root)
        .into_iter()
        .filter(|p| !p.contains('/') || p.matches('/').count() == 1 && p.ends_with('/'))
        .collect();
    assert_eq!(top, ["content/", "imagecache/", "metadata/"]);
}

#[tokio::test]
async fn opens_a_store_written_by_docker() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cdir = content_dir(root);
    let ids: Vec<ImageId> = (0..3).map(|n| content(n).id()).collect();
    for n in 0..3u32 {
        docker_write(&cdir, &ids[n as usize].hex(), &config(n));
    }
    docker_write(
        &meta_dir(root, &ids[1]),
        "parent",
        ids[0].to_string().as_bytes(),
    );
    docker_write(&meta_dir(root, &ids[1]), "builtLocally", &[1]);
    docker_write(
        &meta_dir(root, &ids[2]),
        "lastUpdated",
        b"2024-05-01T12:00:00.5+02:00",
    );
    // Strays Docker's Walk skips: a bad name, an uppercase name, a fresh and
    // an old temp file; an orphan metadata directory without content.
    fs::write(cdir.join("foobar"), b"x").unwrap();
    fs::write(cdir.join(ids[0].hex().to_uppercase()), b"x").unwrap();
    fs::write(cdir.join(".tmp-x"), b"partial").unwrap();
    fs::write(cdir.join(".tmp-old"), b"partial").unwrap();
    set_old(&cdir.join(".tmp-old"));
    let orphan = content(99).id();
    docker_write(
        &meta_dir(root, &orphan),
        "parent",
        ids[0].to_string().as_bytes(),
    );

    let b = FsBackend::open(root).await.unwrap();
    let s = b.load().await.unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(s.images.iter().map(|e| e.id).collect::<Vec<_>>(), sorted);
    assert!(s.quarantined.is_empty());
    let e1 = s.images.iter().find(|e| e.id == ids[1]).unwrap();
    assert_eq!(
        e1.metadata,
        vec![
            (MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1])),
            (MetadataKey::PARENT, Bytes::from(ids[0].to_string())),
        ]
    );
    assert!(e1.summary.is_none());
    let e2 = s.images.iter().find(|e| e.id == ids[2]).unwrap();
    assert_eq!(
        e2.metadata(&MetadataKey::LAST_UPDATED).unwrap(),
        &Bytes::from_static(b"2024-05-01T12:00:00.5+02:00")
    );
    assert_eq!(b.get(&ids[2]).await.unwrap(), config(2));
    assert_eq!(
        b.get_metadata(&ids[1], &MetadataKey::PARENT).await.unwrap(),
        Bytes::from(ids[0].to_string())
    );

    // Strays are left where they are, except the stale temp file.
    assert!(cdir.join("foobar").exists());
    assert!(
        cdir.join(".tmp-x").exists(),
        "a fresh temp file may be in use"
    );
    assert!(
        !cdir.join(".tmp-old").exists(),
        "a stale temp file is removed"
    );
    assert!(
        meta_dir(root, &orphan).join("parent").exists(),
        "Docker's data is left alone"
    );

    // A second load, now from the index, says the same.
    let again = FsBackend::open(root).await.unwrap().load().await.unwrap();
    assert_eq!(again, s);
}

#[tokio::test]
async fn load_picks_up_changes_made_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        let (id, batch) = create_batch(n, ids.last().copied());
        b.write(batch).await.unwrap();
        ids.push(id);
    }
    let first = assert_load_matches_disk(&b, root).await;
    assert!(first.images.iter().all(|e| e.summary.is_some()));

    // Another program adds an image, deletes one, re-parents one and drops
    // a value of another — each the way Docker would.
    let added = content(100);
    docker_write(&content_dir(root), &added.id().hex(), added.data());
    docker_write(
        &meta_dir(root, &added.id()),
        "parent",
        ids[0].to_string().as_bytes(),
    );
    fs::remove_dir_all(meta_dir(root, &ids[3])).unwrap();
    fs::remove_file(content_dir(root).join(ids[3].hex())).unwrap();
    docker_write(
        &meta_dir(root, &ids[5]),
        "parent",
        ids[1].to_string().as_bytes(),
    );
    fs::remove_file(meta_dir(root, &ids[2]).join("builtLocally")).unwrap();

    for handle in [b.clone(), FsBackend::open(root).await.unwrap()] {
        let s = assert_load_matches_disk(&handle, root).await;
        assert!(s.images.iter().all(|e| e.id != ids[3]));
        let re = s.images.iter().find(|e| e.id == ids[5]).unwrap();
        assert_eq!(
            re.metadata(&MetadataKey::PARENT).unwrap(),
            &Bytes::from(ids[1].to_string())
        );
        // A summary lives as long as its image, even when its metadata changed.
        assert_eq!(re.summary.as_deref(), Some(&b"summary 5"[..]));
        let new = s.images.iter().find(|e| e.id == added.id()).unwrap();
        assert!(new.summary.is_none());
    }
}

#[tokio::test]
async fn unchanged_metadata_directories_are_not_reread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (id, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    b.load().await.unwrap();

    // Overwrite a value in place, without a rename: the directory's times
    // do not change, so a load trusts its index and does not read the file.
    // (No writer does this; it is how the test observes the fast path.)
    let file = meta_dir(root, &id).join("lastUpdated");
    let dir_times = fs::metadata(meta_dir(root, &id))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(&file, b"2030-01-01T00:00:00Z").unwrap();
    assert_eq!(
        fs::metadata(meta_dir(root, &id))
            .unwrap()
            .modified()
            .unwrap(),
        dir_times
    );
    let s = b.load().await.unwrap();
    assert_eq!(
        s.images[0].metadata(&MetadataKey::LAST_UPDATED).unwrap(),
        &Bytes::from_static(b"2024-05-01T12:00:00.123456789+02:00")
    );

    // A rename in the directory, as every real writer does, is seen.
    docker_write(&meta_dir(root, &id), "lastUpdated", b"2031-01-01T00:00:00Z");
    let s = b.load().await.unwrap();
    assert_eq!(
        s.images[0].metadata(&MetadataKey::LAST_UPDATED).unwrap(),
        &Bytes::from_static(b"2031-01-01T00:00:00Z")
    );
}

#[tokio::test]
async fn damaged_index_falls_back_to_reading_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let (id, batch) = create_batch(n, ids.last().copied());
        b.write(batch).await.unwrap();
        ids.push(id);
    }
    b.load().await.unwrap();
    // Journal records written after the snapshot.
    b.set_metadata(&ids[0], &key("note"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let own = root.join("imagecache");
    let index = own.join("index");
    let journal = own.join("journal");

    type Harm<'a> = Box<dyn Fn() + 'a>;
    let damage: Vec<(&str, Harm<'_>)> = vec![
        (
            "flipped snapshot byte",
            Box::new(|| {
                let mut s = fs::read(&index).unwrap();
                let mid = s.len() / 2;
                s[mid] ^= 0x55;
                fs::write(&index, s).unwrap();
            }),
        ),
        (
            "truncated snapshot",
            Box::new(|| {
                let s = fs::read(&index).unwrap();
                fs::write(&index, &s[..s.len() / 3]).unwrap();
            }),
        ),
        (
            "garbage journal",
            Box::new(|| {
                let mut j = fs::read(&journal).unwrap();
                j.extend_from_slice(b"\x31\x43\x45\x52 garbage that is not a record");
                let mid = j.len() / 2;
                j[mid] ^= 0xff;
                fs::write(&journal, j).unwrap();
            }),
        ),
        (
            "journal with a bad header",
            Box::new(|| {
                fs::write(&journal, b"not a journal at all").unwrap();
            }),
        ),
        (
            "index files removed",
            Box::new(|| {
                let _ = fs::remove_file(&index);
                let _ = fs::remove_file(&journal);
            }),
        ),
        (
            "empty index files",
            Box::new(|| {
                fs::write(&index, b"").unwrap();
                fs::write(&journal, b"").unwrap();
            }),
        ),
    ];
    for (what, harm) in damage {
        // Make a change that only the layout knows about, then damage.
        docker_write(
            &meta_dir(root, &ids[4]),
            "parent",
            ids[0].to_string().as_bytes(),
        );
        harm();
        let fresh = FsBackend::open(root).await.unwrap();
        let s = fresh.load().await.unwrap();
        assert_eq!(snapshot_view(&s), disk_truth(root), "after {what}");
        b.set_metadata(&ids[1], &key("note"), Bytes::from(what.to_owned()))
            .await
            .unwrap();
        assert_load_matches_disk(&fresh, root).await;
        docker_write(
            &meta_dir(root, &ids[4]),
            "parent",
            ids[3].to_string().as_bytes(),
        );
    }
}

#[tokio::test]
async fn a_journal_older_than_the_snapshot_is_ignored() {
    // A compaction that renamed the new snapshot but crashed before
    // replacing the journal leaves the old journal behind.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (id, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    let journal = root.join("imagecache/journal");
    let old_journal = fs::read(&journal).unwrap();
    b.write({
        let mut w = WriteBatch::new();
        w.set_summary(id, "newer summary");
        w
    })
    .await
    .unwrap();
    b.delete_metadata(&id, &MetadataKey::BUILT_LOCALLY)
        .await
        .unwrap();
    let s = b.load().await.unwrap();
    fs::write(&journal, &old_journal).unwrap();
    let again = FsBackend::open(root).await.unwrap().load().await.unwrap();
    assert_eq!(again, s);
    assert_eq!(
        again.images[0].summary.as_deref(),
        Some(&b"newer summary"[..])
    );
    assert!(
        again.images[0]
            .metadata(&MetadataKey::BUILT_LOCALLY)
            .is_none()
    );
}

#[tokio::test]
async fn stale_temp_files_in_metadata_directories_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (id, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    let mdir = meta_dir(root, &id);
    fs::write(mdir.join(".tmp-parent1"), b"half").unwrap();
    set_old(&mdir.join(".tmp-parent1"));
    fs::write(mdir.join(".tmp-parent2"), b"half").unwrap();
    let s = b.load().await.unwrap();
    assert!(s.images[0].metadata(&MetadataKey::PARENT).is_none());
    assert!(!mdir.join(".tmp-parent1").exists());
    assert!(mdir.join(".tmp-parent2").exists());
}

#[tokio::test]
async fn broken_content_paths_are_quarantined_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (good, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    let as_dir = content(2).id();
    fs::create_dir(content_dir(root).join(as_dir.hex())).unwrap();
    docker_write(&meta_dir(root, &as_dir), "builtLocally", &[1]);
    let empty = content(3).id();
    fs::write(content_dir(root).join(empty.hex()), b"").unwrap();

    let s = b.load().await.unwrap();
    assert_eq!(
        s.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![good]
    );
    let mut names: Vec<&str> = s.quarantined.iter().map(|q| q.name.as_str()).collect();
    names.sort_unstable();
    let mut expected = vec![as_dir.to_string(), empty.to_string()];
    expected.sort();
    assert_eq!(names, expected);
    let dir_q = s
        .quarantined
        .iter()
        .find(|q| q.name == as_dir.to_string())
        .unwrap();
    assert!(dir_q.reason.contains("directory"), "{}", dir_q.reason);
    let empty_q = s
        .quarantined
        .iter()
        .find(|q| q.name == empty.to_string())
        .unwrap();
    assert!(empty_q.reason.contains("empty"), "{}", empty_q.reason);

    // Moved aside, metadata too, so neither Docker nor a later put sees them.
    assert!(!content_dir(root).join(as_dir.hex()).exists());
    assert!(!meta_dir(root, &as_dir).exists());
    let q = root.join("imagecache/quarantine/sha256").join(as_dir.hex());
    assert!(q.join("content").is_dir());
    assert_eq!(fs::read(q.join("metadata/builtLocally")).unwrap(), [1u8]);
    // Reported again by later loads.
    let again = b.load().await.unwrap();
    assert_eq!(again.quarantined, s.quarantined);
}

#[tokio::test]
async fn quarantine_and_delete_move_and_remove_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (a, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    let (c, batch) = create_batch(2, Some(a));
    b.write(batch).await.unwrap();

    let mut q = WriteBatch::new();
    q.quarantine(a, "failed to verify");
    b.write(q).await.unwrap();
    let qdir = root.join("imagecache/quarantine/sha256").join(a.hex());
    assert_eq!(fs::read(qdir.join("content")).unwrap(), config(1));
    assert_eq!(fs::read(qdir.join("reason")).unwrap(), b"failed to verify");
    assert!(qdir.join("metadata/builtLocally").exists());
    assert!(!content_dir(root).join(a.hex()).exists());
    assert!(!meta_dir(root, &a).exists());

    // The same image stored and quarantined again gets a second directory.
    b.put(config(1)).await.unwrap();
    let mut q = WriteBatch::new();
    q.quarantine(a, "again");
    b.write(q).await.unwrap();
    let s = assert_load_matches_disk(&b, root).await;
    assert_eq!(s.quarantined.len(), 2);
    assert!(s.quarantined.iter().all(|x| x.name == a.to_string()));

    b.delete(&c).await.unwrap();
    assert!(!content_dir(root).join(c.hex()).exists());
    assert!(!meta_dir(root, &c).exists());
    b.delete(&c).await.unwrap();
    assert!(assert_load_matches_disk(&b, root).await.images.is_empty());
}

#[tokio::test]
async fn root_that_is_a_file_is_refused() {
    for occupied in ["", "content", "metadata"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        if occupied.is_empty() {
            fs::write(&root, b"x").unwrap();
        } else {
            fs::create_dir(&root).unwrap();
            fs::write(root.join(occupied), b"x").unwrap();
        }
        let err = FsBackend::open(&root).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{occupied}: {err:?}");
        assert!(
            err.to_string().contains("failed to create storage backend"),
            "{occupied}: {err}"
        );
    }
}

#[tokio::test]
async fn writes_refuse_a_directory_in_place_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let c = content(1);
    fs::create_dir(content_dir(root).join(c.id().hex())).unwrap();
    let err = b.put(c.data().clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("failed to write digest data"),
        "{err}"
    );
    assert!(
        matches!(
            err,
            Error::Backend {
                key: Some(Key::Image(_)),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(tree(&content_dir(root)), vec![format!("{}/", c.id().hex())]);

    let id = b.put(config(2)).await.unwrap();
    fs::create_dir_all(meta_dir(root, &id).join("parent")).unwrap();
    let mut batch = WriteBatch::new();
    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    batch.set_metadata(id, MetadataKey::PARENT, Bytes::from_static(b"sha256:x"));
    let err = b.write(batch).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    // The refused value left no temp file, and the other value of the same
    // run was not renamed into place either.
    assert_eq!(tree(&meta_dir(root, &id)), vec!["parent/".to_owned()]);
}

#[tokio::test]
async fn refused_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let before = tree(root);
    let mut batch = WriteBatch::new();
    let id = batch.put(content(1));
    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    let missing = content(2).id();
    batch.set_metadata(missing, MetadataKey::PARENT, Bytes::from(id.to_string()));
    let err = b.write(batch).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { key: Key::Image(k) } if k == missing),
        "{err:?}"
    );
    assert_eq!(tree(root), before);

    let mut batch = WriteBatch::new();
    batch.put(content(3));
    batch.quarantine(missing, "x");
    assert!(b.write(batch).await.unwrap_err().is_not_found());
    assert_eq!(tree(root), before);
}

#[tokio::test]
async fn reads_verify_content_but_metadata_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (id, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    fs::write(content_dir(root).join(id.hex()), b"{\"other\":1}").unwrap();
    let err = b.get(&id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("failed to verify"), "{err}");
    assert_eq!(
        b.get_metadata(&id, &MetadataKey::BUILT_LOCALLY)
            .await
            .unwrap(),
        Bytes::from_static(&[1])
    );
    let err = b.get_metadata(&id, &MetadataKey::PARENT).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                key: Key::Metadata { .. }
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("failed to read metadata"), "{err}");

    let missing = content(2).id();
    let err = b.get(&missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { key: Key::Image(k) } if k == missing));
    assert!(err.to_string().contains("failed to get digest"), "{err}");
    let err = b
        .get_metadata(&missing, &MetadataKey::PARENT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { key: Key::Image(_) }),
        "{err:?}"
    );
}

#[tokio::test]
async fn two_handles_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let a = FsBackend::open(root).await.unwrap();
    let b = FsBackend::open(root).await.unwrap();
    a.load().await.unwrap();
    b.load().await.unwrap();
    let (x, batch) = create_batch(1, None);
    a.write(batch).await.unwrap();
    let s = assert_load_matches_disk(&b, root).await;
    assert_eq!(s.images[0].summary.as_deref(), Some(&b"summary 1"[..]));

    let (y, batch) = create_batch(2, Some(x));
    b.write(batch).await.unwrap();
    b.set_metadata(&x, &key("label"), Bytes::from_static(b"from b"))
        .await
        .unwrap();
    a.delete_metadata(&y, &MetadataKey::BUILT_LOCALLY)
        .await
        .unwrap();
    for h in [&a, &b] {
        let s = assert_load_matches_disk(h, root).await;
        assert_eq!(s.images.len(), 2);
        assert!(s.images.iter().all(|e| e.summary.is_some()));
    }
    a.delete(&x).await.unwrap();
    let s = assert_load_matches_disk(&b, root).await;
    assert_eq!(s.images.iter().map(|e| e.id).collect::<Vec<_>>(), vec![y]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_image_never_mislead_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let first = FsBackend::open_with(FsConfig::new(&root).with_fsync(false))
        .await
        .unwrap();
    let id = first.put(config(1)).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let handle = FsBackend::open_with(FsConfig::new(&root).with_fsync(false))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                let k = MetadataKey::new(format!("k{}", i % 5)).unwrap();
                if (i + w) % 7 == 0 {
                    handle.delete_metadata(&id, &k).await.unwrap();
                } else {
                    handle
                        .set_metadata(&id, &k, Bytes::from(format!("w{w} i{i}")))
                        .await
                        .unwrap();
                }
                if i % 13 == 0 {
                    handle.load().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_load_matches_disk(&first, &root).await;
    let fresh = FsBackend::open(&root).await.unwrap();
    assert_load_matches_disk(&fresh, &root).await;
}

#[tokio::test]
async fn batches_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = FsBackend::open(root).await.unwrap();
    let (id, batch) = create_batch(1, None);
    b.write(batch).await.unwrap();
    // Delete then re-create in one batch: the image comes back without its
    // old metadata or summary.
    let mut batch = WriteBatch::new();
    batch.set_metadata(id, key("gone"), Bytes::from_static(b"1"));
    batch.delete(id);
    batch.put(content(1));
    batch.set_metadata(id, key("kept"), Bytes::from_static(b"2"));
    batch.set_metadata(id, key("kept"), Bytes::from_static(b"3"));
    b.write(batch).await.unwrap();
    let s = assert_load_matches_disk(&b, root).await;
    assert_eq!(
        s.images[0].metadata,
        vec![(key("kept"), Bytes::from_static(b"3"))]
    );
    assert!(s.images[0].summary.is_none());
}
