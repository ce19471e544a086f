//! `imagecache import` of synthetic archives made of real tars: every
//! format, parent links, and refusals that leave the store unchanged.

// Helpers outside #[test] functions panic on failed setup, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::json;

fn assert_imported_chain(env: &Env, base: &ArchiveImage, child: &ArchiveImage) {
    let mut expected = vec![base.id(), child.id()];
    expected.sort();
    assert_eq!(env.image_ids(), expected);
    // The IDs are the SHA-256 of the exact config bytes.
    let inspected = env.json(&["inspect", &child.id()]);
    let raw = serde_json::to_vec(&inspected[0]["Imagecache"]["config"]).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&child.config).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
        stored
    );
    assert_eq!(inspected[0]["Parent"], json!(base.id()));
    assert_eq!(inspected[0]["Imagecache"]["built_locally"], json!(false));
    // Tagged images record when they were named.
    assert!(inspected[0]["Imagecache"]["last_updated"].is_string());
}

#[test]
fn docker_archive_with_manifest_parent_imports_byte_for_byte() {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.write_archive(
        "chain.tar",
        &[base.clone(), child.clone()],
        ArchiveOptions::default(),
    );
    let summary = env.import(&archive);
    assert_eq!(summary["images"].as_array().unwrap().len(), 2);
    let child_entry = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(child.id()))
        .unwrap();
    assert_eq!(child_entry["parent"], json!(base.id()));
    assert_imported_chain(&env, &base, &child);
    // Uncompressed layers are stored as they are, under their diff IDs.
    let mut layers: Vec<String> = child.layers.iter().map(|l| sha(l).to_string()).collect();
    layers.sort();
    assert_eq!(env.blob_digests(), layers);
}

#[test]
fn parents_come_from_manifest_parent_fields_whatever_the_grouping() {
    // Without Parent fields, `docker load` links nothing, and neither does
    // an import, even when one image's history is a prefix of the other's.
    let env = Env::redb();
    let (base, child) = chain(false);
    let archive = env.write_archive(
        "chain.tar",
        &[child.clone(), base.clone()],
        ArchiveOptions::default(),
    );
    let summary = env.import(&archive);
    assert!(
        summary["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["parent"].is_null())
    );

    // With a Parent field, the link is the same whether the parent came in
    // the same archive or in an earlier import.
    let (base, child) = chain(true);
    let together = Env::fs();
    let archive = together.write_archive(
        "both.tar",
        &[base.clone(), child.clone()],
        ArchiveOptions::default(),
    );
    together.import(&archive);
    let apart = Env::fs();
    let first = apart.write_archive(
        "base.tar",
        std::slice::from_ref(&base),
        ArchiveOptions::default(),
    );
    let second = apart.write_archive(
        "child.tar",
        std::slice::from_ref(&child),
        ArchiveOptions::default(),
    );
    apart.import(&first);
    let summary = apart.import(&second);
    assert_eq!(summary["images"][0]["parent"], json!(base.id()));
    assert_imported_chain(&together, &base, &child);
    assert_imported_chain(&apart, &base, &child);

    // A Parent the import does not know is left unset and reported, as
    // `docker load` ignores it.
    let alone = Env::fs();
    let summary = alone.import(&second);
    assert!(summary["images"][0]["parent"].is_null());
    assert_eq!(summary["images"][0]["unknown_parent"], json!(base.id()));
}

#[test]
fn an_import_never_rewrites_a_stored_parent() {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.write_archive(
        "chain.tar",
        &[base.clone(), child.clone()],
        ArchiveOptions::default(),
    );
    env.import(&archive);
    // Another valid parent for the child: an image with no history of its own.
    let other = ArchiveImage {
        config: config(&[], &[], json!({})),
        layers: vec![],
        tags: vec![],
        parent: None,
    };
    let mut relinked = child.clone();
    relinked.parent = Some(other.id());
    let second = env.write_archive(
        "relinked.tar",
        &[other.clone(), relinked],
        ArchiveOptions::default(),
    );
    let summary = env.import(&second);
    assert_eq!(
        summary["parent_conflicts"],
        json!([{"image": child.id(), "stored": base.id(), "archive": other.id()}])
    );
    let inspected = env.json(&["inspect", &child.id()]);
    assert_eq!(inspected[0]["Parent"], json!(base.id()));
}

#[test]
fn gzip_archive_with_gzip_layers_keeps_both_copies() {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.write_archive(
        "chain.tar.gz",
        &[base.clone(), child.clone()],
        ArchiveOptions {
            gzip_layers: true,
            gzip_archive: true,
            blobs_layout: true,
        },
    );
    env.import(&archive);
    assert_imported_chain(&env, &base, &child);
    let blobs = env.json(&["blob", "ls"]);
    let blobs = blobs.as_array().unwrap();
    assert_eq!(
        blobs.len(),
        4,
        "two layers, each compressed and decompressed: {blobs:?}"
    );
    for l in &child.layers {
        let diff = sha(l).to_string();
        let entry = blobs.iter().find(|b| b["digest"] == json!(diff)).unwrap();
        let compressed = entry["compressed"].as_str().unwrap();
        let other = blobs
            .iter()
            .find(|b| b["digest"] == json!(compressed))
            .unwrap();
        assert_eq!(other["decompressed"], json!(diff));
        assert_eq!(other["compression"], json!("gzip"));
    }
}

#[test]
fn oci_layout_directory_and_archive_import_the_same_image() {
    let env = Env::fs();
    let l1 = layer(&[("a", b"one")]);
    let l2 = layer(&[("b", b"two")]);
    let cfg = config(&[sha(&l1), sha(&l2)], &["ADD a /", "ADD b /"], json!({}));
    let dir = env.path("layout");
    oci_layout(&dir, &cfg, &[l1.clone(), l2.clone()], true, "v1");
    let summary = env.import(&dir);
    assert_eq!(summary["archives"][0]["format"], json!("oci-layout"));
    assert_eq!(summary["images"][0]["id"], json!(sha(&cfg).to_string()));
    assert_eq!(summary["images"][0]["names"], json!(["v1"]));

    let other = Env::redb();
    let packed = other.path("layout.tar");
    write(&packed, &tar_dir(&dir));
    let summary = other.import(&packed);
    assert_eq!(summary["archives"][0]["format"], json!("oci-archive"));
    assert_eq!(other.image_ids(), env.image_ids());
    assert_eq!(other.blob_digests(), env.blob_digests());
    // History is the config's, newest first.
    let history = other.json(&["history", &sha(&cfg).hex()[..12]]);
    let by: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["ADD b /", "ADD a /"]);
    assert_eq!(history[0]["layer"], json!(sha(&l2).to_string()));
}

#[test]
fn importing_twice_changes_nothing() {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.write_archive("chain.tar", &[base, child], ArchiveOptions::default());
    env.import(&archive);
    let (ids, blobs) = (env.image_ids(), env.blob_digests());
    let again = env.import(&archive);
    assert!(
        again["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["created"] == json!(false))
    );
    assert_eq!(again["blobs_stored"], json!(0));
    assert_eq!((env.image_ids(), env.blob_digests()), (ids, blobs));
}

/// Runs an import that must fail with exit code 3 and leave the store as it was.
fn refused(env: &Env, archive: &std::path::Path, message: &str) {
    let before = (env.image_ids(), env.blob_digests());
    // With --quiet, stderr holds only the error: one line.
    env.cmd(&["import", "--quiet", archive.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::starts_with("error: "))
        .stderr(predicate::str::contains(message))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    assert_eq!((env.image_ids(), env.blob_digests()), before);
}

/// A store that already holds something, so "unchanged" means something.
fn seeded() -> Env {
    let env = Env::fs();
    let l = layer(&[("seed", b"seed")]);
    let cfg = config(&[sha(&l)], &["ADD seed /"], json!({"comment": "seed"}));
    let archive = env.path("seed.tar");
    write(
        &archive,
        &docker_archive(
            &[ArchiveImage {
                config: cfg,
                layers: vec![l],
                tags: vec![],
                parent: None,
            }],
            ArchiveOptions::default(),
        ),
    );
    env.import(&archive);
    env
}

#[test]
fn truncated_archive_is_refused_naming_the_entry() {
    let env = seeded();
    let (base, child) = chain(true);
    let mut child = child;
    child.layers[1] = layer(&[("big", &vec![7u8; 200_000])]);
    child.config = config(
        &[sha(&child.layers[0]), sha(&child.layers[1])],
        &["ADD rootfs /", "COPY app /app"],
        json!({}),
    );
    let bytes = docker_archive(&[base, child], ArchiveOptions::default());
    // Cut in the middle of the big layer.
    let cut = bytes.windows(4).position(|w| w == [7, 7, 7, 7]).unwrap() + 100_000;
    let archive = env.path("cut.tar");
    write(&archive, &bytes[..cut]);
    refused(&env, &archive, "is truncated");

    let gz = env.path("cut.tar.gz");
    let zipped = gzip(&bytes);
    write(&gz, &zipped[..zipped.len() / 2]);
    refused(&env, &gz, "cut.tar.gz: reading");
}

#[test]
fn tampered_layer_is_refused_with_both_digests() {
    let env = seeded();
    let (base, child) = chain(true);
    let expected = sha(&child.layers[1]).to_string();
    let mut bytes = docker_archive(&[base, child], ArchiveOptions::default());
    let at = bytes
        .windows(15)
        .position(|w| w == b"the application")
        .unwrap();
    bytes[at] ^= 0x20;
    let archive = env.path("tampered.tar");
    write(&archive, &bytes);
    refused(&env, &archive, &format!("expected diff ID {expected}"));
}

#[test]
fn tampered_gzip_layer_is_refused_and_its_blobs_removed() {
    let env = seeded();
    let (base, mut child) = chain(true);
    // The second layer's content changes, its config does not: the layer
    // decompresses to something other than the config's diff ID, which is
    // only found while it is stored.
    let expected = sha(&child.layers[1]).to_string();
    child.layers[1] = layer(&[("app/bin", b"THE application")]);
    let bytes = docker_archive(
        &[base, child],
        ArchiveOptions {
            gzip_layers: true,
            ..ArchiveOptions::default()
        },
    );
    let archive = env.path("tampered.tar");
    write(&archive, &bytes);
    refused(&env, &archive, &format!("expected diff ID {expected}"));
}

#[test]
fn tampered_config_is_refused() {
    let env = seeded();
    let (base, child) = chain(true);
    let name = format!("{}.json", sha(&child.config).hex());
    let mut bytes = docker_archive(&[base, child], ArchiveOptions::default());
    let at = bytes
        .windows(13)
        .position(|w| w == b"COPY app /app")
        .unwrap();
    bytes[at] = b'K';
    let archive = env.path("tampered.tar");
    write(&archive, &bytes);
    refused(
        &env,
        &archive,
        &format!("image config {name} was tampered with"),
    );
}

#[test]
fn tampered_oci_blob_is_refused() {
    let env = seeded();
    let l = layer(&[("x", b"content of x")]);
    let cfg = config(&[sha(&l)], &["ADD x /"], json!({}));
    let dir = env.path("layout");
    oci_layout(&dir, &cfg, std::slice::from_ref(&l), false, "t");
    let blob = dir.join("blobs/sha256").join(sha(&l).hex());
    let mut data = std::fs::read(&blob).unwrap();
    let at = data.windows(12).position(|w| w == b"content of x").unwrap();
    data[at] = b'C';
    write(&blob, &data);
    // A directory layout is verified while the blob is stored.
    refused(&env, &dir, &format!("expected digest {}", sha(&l)));
    // A packed one is verified while it is read, before anything is stored.
    let packed = env.path("layout.tar");
    write(&packed, &tar_dir(&dir));
    refused(&env, &packed, &format!("expected digest {}", sha(&l)));
}

#[test]
fn wrong_layer_count_missing_entries_and_bad_parents_are_refused() {
    let env = seeded();
    let (base, mut child) = chain(false);
    child.layers.pop();
    let archive = env.path("count.tar");
    write(
        &archive,
        &docker_archive(&[base, child], ArchiveOptions::default()),
    );
    refused(
        &env,
        &archive,
        "lists 1 layer(s) in manifest.json but its config has 2 diff ID(s)",
    );

    // A parent whose history is not a prefix (Docker: not a valid parent).
    let (base, mut child) = chain(false);
    let mut fake = base;
    fake.config = config(&[sha(&fake.layers[0])], &["something else"], json!({}));
    child.parent = Some(fake.id());
    let archive = env.path("invalid-parent.tar");
    write(
        &archive,
        &docker_archive(&[fake, child], ArchiveOptions::default()),
    );
    refused(&env, &archive, "is not a valid parent for");

    let archive = env.path("empty.tar");
    write(
        &archive,
        &tar::Builder::new(Vec::new()).into_inner().unwrap(),
    );
    refused(&env, &archive, "not an image archive");

    let bytes = {
        let (base, child) = chain(true);
        let mut bytes = docker_archive(&[base, child], ArchiveOptions::default());
        // Rename the child's config entry so manifest.json points nowhere.
        let (_, child) = chain(true);
        let name = format!("{}.json", sha(&child.config).hex());
        let at = bytes
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        // The header checksum no longer matches: fix it.
        let header = at - at % 512;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes()
            .copy_from_slice(&bytes[header..header + 512]);
        h.set_cksum();
        bytes[header..header + 512].copy_from_slice(h.as_bytes());
        bytes
    };
    let archive = env.path("missing.tar");
    write(&archive, &bytes);
    refused(&env, &archive, "is not in the archive");

    env.cmd(&["import", env.path("no-such-file.tar").to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot open"));
}

#[test]
fn ctrl_c_stops_an_import_and_leaves_the_store_unchanged() {
    use std::io::BufRead as _;
    let env = seeded();
    let layers: Vec<Vec<u8>> = (0..4).map(|n| noise_layer(n + 1, 48 << 20)).collect();
    let diff_ids: Vec<_> = layers.iter().map(|l| sha(l)).collect();
    let image = ArchiveImage {
        config: config(
            &diff_ids,
            &["ADD a /", "ADD b /", "ADD c /", "ADD d /"],
            json!({}),
        ),
        layers,
        tags: vec!["big:1".into()],
        parent: None,
    };
    let archive = env.path("big.tar");
    write(
        &archive,
        &docker_archive(&[image], ArchiveOptions::default()),
    );
    let before = (env.image_ids(), env.blob_digests());

    let mut child = env
        .std_cmd(&["import", archive.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    // Interrupt once the layers are being stored: the most work to undo.
    for line in lines.by_ref() {
        if line.unwrap().starts_with("storing") {
            break;
        }
    }
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("nothing was imported")),
        "{rest:?}"
    );
    assert_eq!((env.image_ids(), env.blob_digests()), before);
}

#[test]
fn one_blob_with_two_diff_ids_is_refused() {
    let env = seeded();
    let l = layer(&[("shared", b"shared layer")]);
    let a = ArchiveImage {
        config: config(&[sha(&l)], &["ADD shared /"], json!({})),
        layers: vec![l.clone()],
        tags: vec![],
        parent: None,
    };
    // The same (gzip) blob, claimed to decompress to something else.
    let b = ArchiveImage {
        config: config(&[sha(b"not the layer")], &["ADD other /"], json!({})),
        layers: vec![l],
        tags: vec![],
        parent: None,
    };
    let archive = env.path("conflict.tar");
    write(
        &archive,
        &docker_archive(
            &[a, b],
            ArchiveOptions {
                gzip_layers: true,
                ..ArchiveOptions::default()
            },
        ),
    );
    refused(&env, &archive, "is listed with diff ID");
}

#[test]
fn names_from_an_archive_resolve_move_and_untag_the_way_docker_does() {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.write_archive(
        "chain.tar",
        &[base.clone(), child.clone()],
        ArchiveOptions::default(),
    );
    env.import(&archive);
    // RepoTags became names; a name works wherever an ID does.
    assert_eq!(
        env.json(&["inspect", "example/app:1"])[0]["Id"],
        json!(child.id())
    );
    env.cmd(&["tag", "example/base:1", "example/app:1"])
        .assert()
        .success();
    assert_eq!(
        env.json(&["inspect", "example/app:1"])[0]["Id"],
        json!(base.id())
    );
    env.cmd(&["tag", "example/app:1", "extra"])
        .assert()
        .success();
    // rm NAME untags first; the image stays while another name holds it.
    let out = env.json(&["rm", "extra"]);
    assert_eq!(out["removed"][0]["deleted"], json!(false));
    assert!(env.image_ids().contains(&base.id()));
    env.cmd(&["untag", "example/app:1"]).assert().success();
    env.cmd(&["inspect", "example/app:1"]).assert().code(1);
    env.cmd(&["tag", "example/base:1", "Bad Name"])
        .assert()
        .code(2);
}
