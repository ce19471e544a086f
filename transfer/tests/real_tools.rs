//! Import of what skopeo and umoci write, and export read back by skopeo.
//!
//! The tools come from Debian (`scripts/test.sh` installs them). Without
//! them these tests say so and pass, unless `IMAGECACHE_REQUIRE_TOOLS=1`
//! (set by `scripts/test.sh`, and so in CI), where a missing tool fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use imagecache_core::Platform;
use imagecache_transfer::{
    ExportFormat, ExportOptions, ExportTarget, ImportOptions, Input, PlatformChoice,
};
use serde_json::{Value, json};

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("IMAGECACHE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{tool} is not installed, and IMAGECACHE_REQUIRE_TOOLS=1 requires it"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A two-layer image built with umoci in `dir/oci:app`.
fn build(dir: &Path) {
    run(dir, "umoci", &["init", "--layout", "oci"]);
    run(dir, "umoci", &["new", "--image", "oci:app"]);
    run(
        dir,
        "umoci",
        &["unpack", "--rootless", "--image", "oci:app", "bundle"],
    );
    std::fs::create_dir_all(dir.join("bundle/rootfs/etc")).unwrap();
    std::fs::write(dir.join("bundle/rootfs/etc/greeting"), b"hello\n").unwrap();
    run(
        dir,
        "umoci",
        &["repack", "--refresh-bundle", "--image", "oci:app", "bundle"],
    );
    std::fs::write(dir.join("bundle/rootfs/etc/second"), b"world\n").unwrap();
    run(dir, "umoci", &["repack", "--image", "oci:app", "bundle"]);
}

/// The SHA-256 of the config skopeo reads for `reference`.
fn skopeo_config(dir: &Path, reference: &str) -> String {
    let raw = run(dir, "skopeo", &["inspect", "--config", "--raw", reference]);
    sha(&raw).to_string()
}

#[tokio::test]
async fn what_skopeo_and_umoci_write_imports_with_their_ids_and_exports_read_back() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    build(dir);
    let id = skopeo_config(dir, "oci:oci:app");
    let copies: [(&str, &[&str]); 6] = [
        ("docker-archive:app.tar:example/app:1", &[]),
        ("oci-archive:app-oci.tar:app", &[]),
        ("oci:gzip:app", &["--dest-compress-format", "gzip"]),
        ("oci:zstd:app", &["--dest-compress-format", "zstd"]),
        (
            "oci:chunked:app",
            &["--dest-compress-format", "zstd:chunked"],
        ),
        ("docker-archive:app-gz.tar:example/app:1", &[]),
    ];
    for (dest, extra) in copies {
        let mut args = vec!["copy", "-q"];
        args.extend_from_slice(extra);
        args.extend(["oci:oci:app", dest]);
        run(dir, "skopeo", &args);
    }
    std::fs::write(
        dir.join("app-gz.tar.gz"),
        gzip(&std::fs::read(dir.join("app-gz.tar")).unwrap()),
    )
    .unwrap();
    for input in [
        "app.tar",
        "app-oci.tar",
        "gzip",
        "zstd",
        "chunked",
        "app-gz.tar.gz",
        "oci",
    ] {
        for kind in ["fs", "redb"] {
            let s = stores(kind).await;
            let report = s
                .load_with(Input::path(dir.join(input)), &ImportOptions::new())
                .await
                .unwrap_or_else(|e| {
                    panic!("{input} into {kind}: {}", imagecache_core::error_text(&e))
                });
            assert_eq!(report.images.len(), 1, "{input}");
            assert_eq!(report.images[0].id.to_string(), id, "{input} into {kind}");
        }
    }

    // Exports, read back by skopeo with the same config digest.
    let s = stores("redb").await;
    s.load_with(Input::path(dir.join("zstd")), &ImportOptions::new())
        .await
        .unwrap();
    for (format, file, transport) in [
        (
            ExportFormat::DockerArchive,
            "out-docker.tar",
            "docker-archive",
        ),
        (ExportFormat::Oci, "out-oci.tar", "oci-archive"),
    ] {
        let out = tokio::fs::File::create(dir.join(file)).await.unwrap();
        let target = ExportTarget::writer(file, out);
        let report = imagecache_transfer::export(
            &s.store,
            &s.blobs,
            &[&id],
            target,
            &ExportOptions::new().with_format(format),
        )
        .await
        .unwrap();
        // The store holds the zstd layers and their tars: an OCI layout
        // gets the zstd blobs, a docker-archive the tars.
        let expected = if format == ExportFormat::Oci { 2 } else { 0 };
        assert_eq!(report.substituted, expected, "{file}");
        let reference = format!("{transport}:{file}");
        assert_eq!(skopeo_config(dir, &reference), id, "{reference}");
        run(
            dir,
            "skopeo",
            &["copy", "-q", &reference, &format!("oci:copy-{file}:x")],
        );
        // Re-importing the export changes nothing.
        let (ids, blobs) = (s.ids(), s.blob_digests().await);
        let again = s
            .load_with(Input::path(dir.join(file)), &ImportOptions::new())
            .await
            .unwrap();
        assert_eq!(again.blobs_stored, 0, "{file}");
        assert_eq!((s.ids(), s.blob_digests().await), (ids, blobs), "{file}");
    }
    let out = dir.join("out-dir");
    imagecache_transfer::export(
        &s.store,
        &s.blobs,
        &[&id],
        ExportTarget::dir(&out),
        &ExportOptions::new().with_format(ExportFormat::Oci),
    )
    .await
    .unwrap();
    assert_eq!(skopeo_config(dir, "oci:out-dir"), id);
}

/// Rewrites a skopeo OCI layout into a two-platform index: the image as
/// it is (amd64) and a copy whose config says arm64, each with its platform.
fn two_platforms(dir: &Path) -> (String, String) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(blob(&config_digest)).unwrap()).unwrap();
    config["architecture"] = json!("arm64");
    let arm_config = serde_json::to_vec(&config).unwrap();
    std::fs::write(blob(&sha(&arm_config).to_string()), &arm_config).unwrap();
    manifest["config"]["digest"] = json!(sha(&arm_config).to_string());
    manifest["config"]["size"] = json!(arm_config.len());
    let arm_manifest = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(blob(&sha(&arm_manifest).to_string()), &arm_manifest).unwrap();
    let amd = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": std::fs::metadata(blob(&manifest_digest)).unwrap().len(),
        "platform": {"os": "linux", "architecture": "amd64"},
    });
    let arm = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(&arm_manifest).to_string(),
        "size": arm_manifest.len(),
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [amd, arm]})).unwrap(),
    )
    .unwrap();
    (config_digest, sha(&arm_config).to_string())
}

#[tokio::test]
async fn multi_platform_and_sparse_indexes_import_the_platform_asked_for() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    build(dir);
    run(dir, "skopeo", &["copy", "-q", "oci:oci:app", "oci:multi"]);
    let layout = dir.join("multi");
    let (amd, arm) = two_platforms(&layout);
    let platform = |arch: &str| {
        PlatformChoice::Only(Platform {
            os: "linux".into(),
            architecture: arch.into(),
            ..Platform::default()
        })
    };
    for (choice, expected) in [
        (platform("amd64"), vec![amd.clone()]),
        (platform("arm64"), vec![arm.clone()]),
        (PlatformChoice::All, {
            let mut both = vec![amd.clone(), arm.clone()];
            both.sort();
            both
        }),
    ] {
        let s = stores("fs").await;
        let report = s
            .load_with(
                Input::path(&layout),
                &ImportOptions::new().with_platform(choice.clone()),
            )
            .await
            .unwrap();
        assert_eq!(s.ids(), expected, "{choice:?}");
        let skipped = report.archives[0].skipped.len();
        assert_eq!(skipped, 2 - expected.len(), "{choice:?}");
    }
    let s = stores("fs").await;
    let err = s
        .load_with(
            Input::path(&layout),
            &ImportOptions::new().with_platform(platform("s390x")),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("linux/amd64, linux/arm64/v8"),
        "{err}"
    );

    // Sparse: the arm64 manifest's blob is gone. The amd64 image still
    // imports, and with every platform asked for the absent one is named.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let arm_manifest = index["manifests"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    std::fs::remove_file(layout.join("blobs/sha256").join(&arm_manifest)).unwrap();
    let s = stores("redb").await;
    s.load_with(
        Input::path(&layout),
        &ImportOptions::new().with_platform(platform("amd64")),
    )
    .await
    .unwrap();
    assert_eq!(s.ids(), vec![amd.clone()]);
    let s = stores("redb").await;
    let report = s
        .load_with(
            Input::path(&layout),
            &ImportOptions::new().with_platform(PlatformChoice::All),
        )
        .await
        .unwrap();
    assert_eq!(s.ids(), vec![amd]);
    assert!(
        report.archives[0].skipped[0]
            .reason
            .contains("is not in the archive"),
        "{report:?}"
    );
}

/// buildah and podman, each with its own storage in `dir` (vfs, no daemon).
fn buildah(dir: &Path, args: &[&str]) -> Vec<u8> {
    let root = dir.join("buildah-root");
    let run_root = dir.join("buildah-run");
    let mut all = vec![
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        run_root.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    all.extend_from_slice(args);
    run(dir, "buildah", &all)
}

/// podman with the storage named `store` in `dir`.
fn podman(dir: &Path, store: &str, args: &[&str]) -> Vec<u8> {
    // podman refuses a runroot path longer than 50 characters.
    let root = dir.join(format!("podman-{store}"));
    let run_root = dir.join(format!("pr-{store}"));
    let mut all = vec![
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        run_root.to_str().unwrap(),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ];
    all.extend_from_slice(args);
    run(dir, "podman", &all)
}

#[tokio::test]
async fn buildah_and_podman_archives_import_and_podman_loads_our_exports() {
    if !have("buildah") || !have("podman") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(dir.join("greeting"), b"hello\n").unwrap();
    let container = String::from_utf8(buildah(dir, &["from", "scratch"])).unwrap();
    let container = container.trim();
    buildah(dir, &["copy", container, "greeting", "/etc/greeting"]);
    buildah(dir, &["config", "--cmd", "/bin/true", container]);
    buildah(
        dir,
        &["commit", "-q", container, "localhost/made-by-buildah:1"],
    );
    for dest in [
        "oci-archive:b-oci.tar",
        "docker-archive:b-docker.tar:localhost/made-by-buildah:1",
        "oci:b-dir",
    ] {
        buildah(dir, &["push", "-q", "localhost/made-by-buildah:1", dest]);
    }
    let id = skopeo_config(dir, "oci-archive:b-oci.tar");
    podman(dir, "main", &["load", "-q", "-i", "b-oci.tar"]);
    let short = &id["sha256:".len().."sha256:".len() + 12];
    podman(
        dir,
        "main",
        &[
            "save",
            "-q",
            "--format",
            "docker-archive",
            "-o",
            "p-docker.tar",
            short,
        ],
    );
    podman(
        dir,
        "main",
        &[
            "save",
            "-q",
            "--format",
            "oci-archive",
            "-o",
            "p-oci.tar",
            short,
        ],
    );
    for (n, input) in [
        "b-oci.tar",
        "b-docker.tar",
        "b-dir",
        "p-docker.tar",
        "p-oci.tar",
    ]
    .into_iter()
    .enumerate()
    {
        let s = stores("redb").await;
        let report = s
            .load(Input::path(dir.join(input)))
            .await
            .unwrap_or_else(|e| panic!("{input}: {}", imagecache_core::error_text(&e)));
        assert_eq!(report.images[0].id.to_string(), id, "{input}");
        // podman loads what we export into an empty storage, with the same
        // image ID.
        for (m, (format, file)) in [
            (ExportFormat::DockerArchive, "ours-docker.tar"),
            (ExportFormat::Oci, "ours-oci.tar"),
        ]
        .into_iter()
        .enumerate()
        {
            let out = tokio::fs::File::create(dir.join(file)).await.unwrap();
            let options = ExportOptions::new().with_format(format);
            imagecache_transfer::export(
                &s.store,
                &s.blobs,
                &[&id],
                ExportTarget::writer(file, out),
                &options,
            )
            .await
            .unwrap();
            let store = format!("{n}{m}");
            podman(dir, &store, &["load", "-q", "-i", file]);
            let ids = podman(dir, &store, &["images", "-q", "--no-trunc"]);
            let ids = String::from_utf8(ids).unwrap();
            assert_eq!(ids.trim(), id, "{input} → {file}");
        }
    }
}
