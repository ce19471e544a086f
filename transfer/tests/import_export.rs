//! Import and export through the library: the defects an import must not
//! have, every archive compression and input kind, and round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;

use common::*;
use imagecache_engine::blob::Compression;
use imagecache_transfer::{
    Cancel, Error, ExportFormat, ExportOptions, ExportTarget, ImportOptions, Input,
};

/// One image with two plain layers, as an OCI layout directory.
fn simple_layout(dir: &std::path::Path) -> Vec<u8> {
    let l1 = layer(&[("a", b"one")]);
    let l2 = layer(&[("b", b"two")]);
    let cfg = config(&[sha(&l1), sha(&l2)], &["ADD a /", "ADD b /"], "amd64");
    oci_layout(
        dir,
        &[OciImage {
            config: cfg.clone(),
            layers: vec![
                OciLayer {
                    bytes: gzip(&l1),
                    media_type: TAR_GZIP,
                },
                OciLayer {
                    bytes: l2,
                    media_type: TAR,
                },
            ],
            name: Some("example/app:1".to_owned()),
            platform: None,
        }],
    );
    cfg
}

#[tokio::test]
async fn honestly_empty_layers_import_and_truncated_ones_are_refused_by_name() {
    let s = stores("fs").await;
    let empty = Vec::new();
    let empty_gz = gzip(&[]);
    let cfg = config(&[sha(&empty), sha(&[])], &["RUN true", "RUN true"], "amd64");
    let dir = s.dir.path().join("empty");
    oci_layout(
        &dir,
        &[OciImage {
            config: cfg.clone(),
            layers: vec![
                OciLayer {
                    bytes: empty.clone(),
                    media_type: TAR,
                },
                OciLayer {
                    bytes: empty_gz.clone(),
                    media_type: TAR_GZIP,
                },
            ],
            name: None,
            platform: None,
        }],
    );
    let report = s
        .load_with(Input::path(&dir), &ImportOptions::new())
        .await
        .unwrap();
    assert_eq!(report.images[0].id.to_string(), sha(&cfg).to_string());

    // The same layout with its gzip layer truncated to zero bytes.
    let other = stores("redb").await;
    std::fs::write(dir.join("blobs/sha256").join(sha(&empty_gz).hex()), b"").unwrap();
    let err = other
        .load_with(Input::path(&dir), &ImportOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BlobSizeMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha(&empty_gz).hex()), "{err}");
    assert!(other.ids().is_empty());
    assert!(other.blob_digests().await.is_empty());
}

#[tokio::test]
async fn a_gzip_label_on_a_plain_tar_is_refused_in_any_order_of_imports() {
    let l = layer(&[("x", b"plain")]);
    let cfg = config(&[sha(&l)], &["ADD x /"], "amd64");
    let lying = |dir: &std::path::Path| {
        oci_layout(
            dir,
            &[OciImage {
                config: cfg.clone(),
                layers: vec![OciLayer {
                    bytes: l.clone(),
                    media_type: TAR_GZIP,
                }],
                name: None,
                platform: None,
            }],
        );
    };
    // On an empty store.
    let s = stores("fs").await;
    let dir = s.dir.path().join("lying");
    lying(&dir);
    let err = s
        .load_with(Input::path(&dir), &ImportOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MediaTypeMismatch { .. }), "{err:?}");
    assert!(s.blob_digests().await.is_empty());

    // After the same bytes came in honestly labelled.
    let honest = s.dir.path().join("honest");
    oci_layout(
        &honest,
        &[OciImage {
            config: cfg.clone(),
            layers: vec![OciLayer {
                bytes: l.clone(),
                media_type: TAR,
            }],
            name: None,
            platform: None,
        }],
    );
    s.load_with(Input::path(&honest), &ImportOptions::new())
        .await
        .unwrap();
    let before = s.blob_digests().await;
    let err = s
        .load_with(Input::path(&dir), &ImportOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MediaTypeMismatch { .. }), "{err:?}");
    assert_eq!(s.blob_digests().await, before);
    // No note points the blob at itself.
    for to in [Compression::None, Compression::Gzip] {
        let variant = s.blobs.variant(&sha(&l), to).await.unwrap();
        assert!(
            variant.is_none_or(|v| v.digest != sha(&l)),
            "{to}: {variant:?}"
        );
    }
}

#[tokio::test]
async fn extracted_docker_archives_and_docker_25_directories_import() {
    let s = stores("fs").await;
    let dir = s.dir.path().join("oci");
    let cfg = simple_layout(&dir);
    s.load_with(Input::path(&dir), &ImportOptions::new())
        .await
        .unwrap();
    // A docker-archive export holds manifest.json, oci-layout and
    // index.json, as Docker 25 writes; extracted into a directory, it
    // imports through manifest.json.
    let out = s.dir.path().join("extracted");
    let id = sha(&cfg).to_string();
    imagecache_transfer::export(
        &s.store,
        &s.blobs,
        &[&id],
        ExportTarget::dir(&out),
        &ExportOptions::new(),
    )
    .await
    .unwrap();
    assert!(out.join("manifest.json").is_file() && out.join("oci-layout").is_file());
    let fresh = stores("redb").await;
    let report = fresh
        .load_with(Input::path(&out), &ImportOptions::new())
        .await
        .unwrap();
    assert_eq!(
        report.archives[0].format,
        imagecache_transfer::Format::DockerArchive
    );
    assert_eq!(fresh.ids(), vec![id]);
}

#[tokio::test]
async fn archives_compressed_every_way_docker_load_accepts_import_from_streams() {
    let s = stores("fs").await;
    let dir = s.dir.path().join("oci");
    let cfg = simple_layout(&dir);
    let plain = tar_dir(&dir);
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&plain).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&plain).unwrap();
    let zst =
        ruzstd::encoding::compress_to_vec(&plain[..], ruzstd::encoding::CompressionLevel::Fastest);
    let packed = [
        ("tar", plain.clone()),
        ("gzip", gzip(&plain)),
        ("bzip2", bz.finish().unwrap()),
        ("xz", xz.finish().unwrap()),
        ("zstd", zst),
    ];
    for (how, bytes) in packed {
        let fresh = stores("redb").await;
        let spool = tempfile::tempdir().unwrap();
        let options = ImportOptions::new().with_spool_dir(spool.path());
        let input = Input::reader(how, std::io::Cursor::new(bytes));
        let report = fresh
            .load_with(input, &options)
            .await
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(
            report.images[0].id.to_string(),
            sha(&cfg).to_string(),
            "{how}"
        );
        assert_eq!(
            std::fs::read_dir(spool.path()).unwrap().count(),
            0,
            "{how}: spool left behind"
        );
    }
    // Garbage is refused with a message free of its bytes.
    let fresh = stores("fs").await;
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let err = fresh
        .load_with(
            Input::reader("garbage", std::io::Cursor::new(garbage)),
            &ImportOptions::new(),
        )
        .await
        .unwrap_err();
    let text = imagecache_core::error_text(&err);
    assert!(text.contains("not a tar archive"), "{text}");
    assert!(
        text.chars()
            .all(|c| !c.is_control() && (c.is_ascii() || c.is_alphanumeric() || "—…".contains(c))),
        "{text:?}"
    );
}

#[tokio::test]
async fn a_cancelled_import_leaves_nothing() {
    let s = stores("fs").await;
    let dir = s.dir.path().join("oci");
    simple_layout(&dir);
    let cancel = Cancel::new();
    cancel.cancel();
    let spool = tempfile::tempdir().unwrap();
    let options = ImportOptions::new()
        .with_cancel(cancel)
        .with_spool_dir(spool.path());
    let input = Input::reader("stream", std::io::Cursor::new(tar_dir(&dir)));
    let err = s.load_with(input, &options).await.unwrap_err();
    assert!(err.is_interrupted(), "{err:?}");
    assert!(s.ids().is_empty());
    assert!(s.blob_digests().await.is_empty());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn exports_reimport_to_the_same_images_on_every_backend() {
    for format in [ExportFormat::DockerArchive, ExportFormat::Oci] {
        let s = stores("fs").await;
        let dir = s.dir.path().join("oci");
        let cfg = simple_layout(&dir);
        s.load_with(Input::path(&dir), &ImportOptions::new())
            .await
            .unwrap();
        let id = sha(&cfg).to_string();
        assert_eq!(
            s.store
                .names_of(&imagecache_core::ImageId::parse(&id).unwrap())[0]
                .familiar(),
            "example/app:1"
        );
        let first = s.export_bytes(std::slice::from_ref(&id), format).await;
        let second = s.export_bytes(&[id[7..19].to_owned()], format).await;
        assert_eq!(first, second, "{format:?}: exports are reproducible");
        // Re-importing into the source changes nothing.
        let (ids, blobs) = (s.ids(), s.blob_digests().await);
        let again = s
            .load_with(
                Input::reader("export", std::io::Cursor::new(first.clone())),
                &ImportOptions::new(),
            )
            .await
            .unwrap();
        assert_eq!(again.blobs_stored, 0);
        assert!(again.images.iter().all(|i| !i.created));
        assert_eq!((s.ids(), s.blob_digests().await), (ids.clone(), blobs));
        for kind in ["fs", "redb"] {
            let fresh = stores(kind).await;
            fresh
                .load_with(
                    Input::reader("export", std::io::Cursor::new(first.clone())),
                    &ImportOptions::new(),
                )
                .await
                .unwrap();
            assert_eq!(fresh.ids(), ids, "{format:?} into {kind}");
            let got = fresh
                .store
                .get(&imagecache_core::ImageId::parse(&id).unwrap())
                .await
                .unwrap();
            assert_eq!(got.raw_json().as_ref(), &cfg[..]);
        }
    }
}

#[tokio::test]
async fn exporting_nothing_or_an_unknown_image_is_a_typed_error() {
    let s = stores("fs").await;
    let none: [&str; 0] = [];
    let target = || ExportTarget::writer("sink", tokio::io::sink());
    let err =
        imagecache_transfer::export(&s.store, &s.blobs, &none, target(), &ExportOptions::new())
            .await
            .unwrap_err();
    assert!(matches!(err, Error::NothingToExport));
    let err = imagecache_transfer::export(
        &s.store,
        &s.blobs,
        &["deadbeef"],
        target(),
        &ExportOptions::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NoSuchImage { .. }), "{err:?}");
}

/// A layout of a small layer and a large one, so that an import can be
/// caught after the first is stored and while the second streams in.
fn big_layout(dir: &std::path::Path) {
    // xorshift: incompressible, so compressed sizes stay known.
    let noise = |n: usize, seed: u64| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(n);
        out
    };
    let small = layer(&[("small", &noise(4 << 20, 1))]);
    let big = layer(&[("big", &noise(24 << 20, 2))]);
    let cfg = config(
        &[sha(&small), sha(&big)],
        &["ADD small /", "ADD big /"],
        "amd64",
    );
    oci_layout(
        dir,
        &[OciImage {
            config: cfg,
            layers: vec![
                OciLayer {
                    bytes: gzip(&small),
                    media_type: TAR_GZIP,
                },
                OciLayer {
                    bytes: gzip(&big),
                    media_type: TAR_GZIP,
                },
            ],
            name: None,
            platform: None,
        }],
    );
}

#[tokio::test]
async fn cancelling_or_dropping_an_import_while_layers_are_stored_leaves_nothing() {
    let s = stores("fs").await;
    let dir = s.dir.path().join("big");
    big_layout(&dir);
    // Cancelled through the flag once storing has started.
    let cancel = Cancel::new();
    let flag = cancel.clone();
    let progress: imagecache_transfer::ProgressFn = std::sync::Arc::new(move |p| {
        if matches!(p, imagecache_transfer::Progress::Position { .. }) && flag.is_cancelled() {
            return;
        }
        if let imagecache_transfer::Progress::Begin { label, .. } = p
            && label.starts_with("storing")
        {
            flag.cancel();
        }
    });
    let options = ImportOptions::new()
        .with_cancel(cancel)
        .with_progress(progress);
    let err = s.load_with(Input::path(&dir), &options).await.unwrap_err();
    assert!(err.is_interrupted(), "{err:?}");
    assert!(s.ids().is_empty());
    assert!(s.blob_digests().await.is_empty());

    // The future dropped while a layer streams in: the blobs it added go
    // too, removed by a task on the runtime.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let storing = std::sync::atomic::AtomicBool::new(false);
    let progress: imagecache_transfer::ProgressFn = std::sync::Arc::new(move |p| match p {
        imagecache_transfer::Progress::Begin { label, .. } => {
            storing.store(
                label.starts_with("storing"),
                std::sync::atomic::Ordering::SeqCst,
            );
        }
        // Past the small layer by more than the chunks in flight: the
        // small layer's blobs are stored.
        imagecache_transfer::Progress::Position { done }
            if *done > 16 << 20 && storing.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
        _ => {}
    });
    let options = ImportOptions::new().with_progress(progress);
    let spool = tempfile::tempdir().unwrap();
    let options = options.with_spool_dir(spool.path());
    let bytes = tar_dir(&dir);
    let import = s.load_with(
        Input::reader("stream", std::io::Cursor::new(bytes)),
        &options,
    );
    tokio::select! {
        done = import => panic!("the import ended before it could be dropped: {done:?}"),
        _ = rx => {}
    }
    let mut left = s.blob_digests().await;
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = s.blob_digests().await;
    }
    assert!(left.is_empty(), "blobs left behind: {left:?}");
    assert!(s.ids().is_empty());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
    let temps = temp_files(&s.dir.path().join("fs"));
    assert!(temps.is_empty(), "temp files left behind: {temps:?}");
}

/// Files below `dir` named as writers name their temporary files.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(".tmp") {
                out.push(path);
            }
        }
    }
    out
}
