//! Images written by real tools: umoci builds an OCI layout with a base
//! and an app image (two layers, with history), skopeo converts the app to
//! a docker-archive and an oci-archive, and `imagecache import` must give
//! exactly the config digests and history the tools report.
//!
//! Without umoci or skopeo the tests print `skipped: …` and pass, unless
//! `IMAGECACHE_REQUIRE_TOOLS=1` (CI) makes that a failure.

// Helpers outside #[test] functions panic on failed setup, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command as Process;

use common::*;
use serde_json::{Value, json};

/// Whether `tool` runs; panics when it does not and tools are required.
fn have(tool: &str, test: &str) -> bool {
    let found = Process::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("IMAGECACHE_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{tool} is not installed, and IMAGECACHE_REQUIRE_TOOLS=1 requires it");
        }
        eprintln!("skipped: {test} ({tool} not installed)");
    }
    found
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Process::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds `oci:base` (one layer) and `oci:app` (two layers) with umoci.
fn build_layout(dir: &Path) {
    run(dir, "umoci", &["init", "--layout", "oci"]);
    run(dir, "umoci", &["new", "--image", "oci:base"]);
    run(
        dir,
        "umoci",
        &["unpack", "--rootless", "--image", "oci:base", "bundle"],
    );
    std::fs::create_dir_all(dir.join("bundle/rootfs/etc")).unwrap();
    std::fs::write(dir.join("bundle/rootfs/etc/greeting"), b"hello\n").unwrap();
    run(
        dir,
        "umoci",
        &[
            "repack",
            "--refresh-bundle",
            "--image",
            "oci:base",
            "--history.created_by",
            "COPY greeting /etc/greeting",
            "--history.comment",
            "first layer",
            "bundle",
        ],
    );
    std::fs::write(dir.join("bundle/rootfs/etc/second"), b"world\n").unwrap();
    run(
        dir,
        "umoci",
        &[
            "repack",
            "--image",
            "oci:app",
            "--history.created_by",
            "RUN echo world > /etc/second",
            "--history.author",
            "tester",
            "bundle",
        ],
    );
}

/// The config digest skopeo reports for an image reference: the SHA-256
/// of the config bytes it reads.
fn skopeo_config(dir: &Path, reference: &str) -> (String, Value) {
    let raw = run(dir, "skopeo", &["inspect", "--config", "--raw", reference]);
    (sha(&raw).to_string(), serde_json::from_slice(&raw).unwrap())
}

/// The config digest the OCI layout's manifest names for `tag`.
fn manifest_config(dir: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci/index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == json!(tag))
        .unwrap();
    let hex = desc["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci/blobs/sha256").join(hex)).unwrap())
            .unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

/// The history as `imagecache history` prints it, oldest first, next to
/// the config's own.
fn assert_history_matches(env: &Env, id: &str, config: &Value) {
    let mut ours = env.json(&["history", id]).as_array().unwrap().clone();
    ours.reverse();
    let theirs = config["history"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o["created_by"], t["created_by"]);
        assert_eq!(
            o["comment"].as_str().unwrap_or(""),
            t["comment"].as_str().unwrap_or("")
        );
        assert_eq!(
            o["author"].as_str().unwrap_or(""),
            t["author"].as_str().unwrap_or("")
        );
        assert_eq!(o["created"], t["created"]);
    }
}

#[test]
fn umoci_layout_and_skopeo_archives_import_with_the_tools_ids() {
    let test = "umoci_layout_and_skopeo_archives_import_with_the_tools_ids";
    if !(have("umoci", test) && have("skopeo", test)) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    build_layout(dir);
    let app_tar = dir.join("app.tar");
    let app_oci_tar = dir.join("app-oci.tar");
    run(
        dir,
        "skopeo",
        &[
            "copy",
            "oci:oci:app",
            &format!("docker-archive:{}", app_tar.display()),
        ],
    );
    run(
        dir,
        "skopeo",
        &[
            "copy",
            "oci:oci:app",
            &format!("oci-archive:{}", app_oci_tar.display()),
        ],
    );

    let base_id = manifest_config(dir, "base");
    let app_id = manifest_config(dir, "app");
    let (skopeo_app, app_config) =
        skopeo_config(dir, &format!("docker-archive:{}", app_tar.display()));
    assert_eq!(skopeo_app, app_id, "skopeo keeps the config bytes");
    let (skopeo_base, base_config) = skopeo_config(dir, "oci:oci:base");
    assert_eq!(skopeo_base, base_id);
    assert_eq!(
        app_config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        2
    );

    // The OCI layout: both images, the app linked to the base by history.
    let env = Env::fs();
    let summary = env.import(&dir.join("oci"));
    assert_eq!(summary["archives"][0]["format"], json!("oci-layout"));
    let mut expected = vec![base_id.clone(), app_id.clone()];
    expected.sort();
    assert_eq!(env.image_ids(), expected);
    // An OCI layout names no parents, and an import sets none (docker load's rule).
    assert_eq!(env.json(&["parent", &app_id])["parent"], json!(null));
    assert_history_matches(&env, &app_id, &app_config);
    assert_history_matches(&env, &base_id, &base_config);
    let tags: Vec<Value> = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["names"].clone())
        .collect();
    assert!(
        tags.contains(&json!(["app"])) && tags.contains(&json!(["base"])),
        "{tags:?}"
    );

    // The docker-archive (uncompressed layers behind symlinks) and the
    // oci-archive, each into a fresh store: the same ID and layers.
    for (archive, format) in [(&app_tar, "docker-archive"), (&app_oci_tar, "oci-archive")] {
        let other = Env::redb();
        let summary = other.import(archive);
        assert_eq!(summary["archives"][0]["format"], json!(format));
        assert_eq!(other.image_ids(), vec![app_id.clone()]);
        assert_history_matches(&other, &app_id, &app_config);
        let diff_ids: Vec<String> = app_config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect();
        let blobs = other.blob_digests();
        for d in &diff_ids {
            assert!(blobs.contains(d), "{format}: layer {d} not in {blobs:?}");
        }
        let inspected = other.json(&["inspect", &app_id]);
        assert_eq!(inspected[0]["Imagecache"]["config"], app_config);
        assert_eq!(inspected[0]["Imagecache"]["built_locally"], json!(false));
    }
}

#[test]
fn damaged_real_archives_leave_the_store_unchanged() {
    let test = "damaged_real_archives_leave_the_store_unchanged";
    if !(have("umoci", test) && have("skopeo", test)) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    build_layout(dir);
    let app_tar = dir.join("app.tar");
    run(
        dir,
        "skopeo",
        &[
            "copy",
            "oci:oci:app",
            &format!("docker-archive:{}", app_tar.display()),
        ],
    );
    let bytes = std::fs::read(&app_tar).unwrap();

    let env = Env::fs();
    env.import(&dir.join("oci"));
    let before = (env.image_ids(), env.blob_digests());
    // Remove everything so that the damaged archives would add something.
    let fresh = Env::fs();

    // Cut in the middle of the first layer entry (right after its header).
    let cut = dir.join("cut.tar");
    write(&cut, &bytes[..512 + 700]);
    for e in [&env, &fresh] {
        e.cmd(&["import", "-q", cut.to_str().unwrap()])
            .assert()
            .code(3)
            .stderr(predicates::str::contains("is truncated"));
    }
    // A byte flipped inside a layer's file content.
    let mut flipped = bytes.clone();
    let at = flipped.windows(6).position(|w| w == b"world\n").unwrap();
    flipped[at] = b'W';
    let bad = dir.join("flipped.tar");
    write(&bad, &flipped);
    for e in [&env, &fresh] {
        e.cmd(&["import", "-q", bad.to_str().unwrap()])
            .assert()
            .code(3)
            .stderr(predicates::str::contains(
                "does not match the config: expected diff ID",
            ));
    }
    assert_eq!((env.image_ids(), env.blob_digests()), before);
    assert!(fresh.image_ids().is_empty() && fresh.blob_digests().is_empty());
}
