//! Every command run as the built binary, with good and bad input.

// Helpers outside #[test] functions panic on failed setup, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use assert_cmd::Command;
use common::*;
use predicates::prelude::*;
use serde_json::json;

/// A store holding the two-image chain (base and app, both tagged).
fn with_chain() -> (Env, ArchiveImage, ArchiveImage) {
    let env = Env::fs();
    let (base, child) = chain(true);
    let archive = env.path("chain.tar");
    write(
        &archive,
        &docker_archive(&[base, child], ArchiveOptions::default()),
    );
    env.import(&archive);
    let (base, child) = chain(true);
    (env, base, child)
}

#[test]
fn unknown_store_scheme_is_a_one_line_error() {
    let env = Env::fs();
    let mut cmd = Command::cargo_bin("imagecache").unwrap();
    cmd.env("HOME", env.path("home"))
        .args(["--store", "ftp://x", "ls"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("unknown store URL scheme \"ftp\""))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
}

#[test]
fn usage_errors_exit_with_two() {
    let env = Env::fs();
    env.cmd(&["frobnicate"]).assert().code(2);
    env.cmd(&["inspect"]).assert().code(2);
    env.cmd(&["blob", "has", "sha256:abc"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid digest"));
    env.cmd(&["prune", "--until", "yesterday"]).assert().code(2);
    env.cmd(&["prune", "--keep-storage", "5 parsecs"])
        .assert()
        .code(2);
    env.cmd(&["search", ""]).assert().code(2);
    env.cmd(&["cache", "lookup", "--platform", "linux"])
        .assert()
        .code(2);
    for port in ["abc/xyz", "0", "70000", "80/http", "90-80", "80-", ""] {
        env.cmd(&["cache", "lookup", "--cmd", "x", "--expose", port])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--expose"));
    }
    // Good ports are a miss on an empty store, not an error.
    for port in ["80", "53/udp", "8000-8010/TCP", "9/sctp"] {
        env.cmd(&["cache", "lookup", "--cmd", "x", "--expose", port])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("cache miss"));
    }
}

#[test]
fn default_store_is_a_redb_file_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("imagecache")
        .unwrap()
        .env_clear()
        .env("HOME", dir.path().join("home"))
        .args(["info", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = dir.path().join("home/.local/share/imagecache/store.redb");
    assert_eq!(
        info["store"],
        json!(format!("redb://{}", expected.display()))
    );
    // Reading the default store before anything was written shows it
    // empty and creates nothing; the first command that writes creates it.
    assert_eq!(info["images"], json!(0));
    assert!(!expected.exists());
    let out = Command::cargo_bin("imagecache")
        .unwrap()
        .env_clear()
        .env("HOME", dir.path().join("home"))
        .args(["prune"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(expected.exists());

    let out = Command::cargo_bin("imagecache")
        .unwrap()
        .env_clear()
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .args(["info"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("xdg/imagecache/store.redb"));

    Command::cargo_bin("imagecache")
        .unwrap()
        .env_clear()
        .args(["ls"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no store given"));
}

#[test]
fn info_and_stats_count_images_and_blobs() {
    let (env, _, child) = with_chain();
    let info = env.json(&["info"]);
    assert_eq!(info["images"], json!(2));
    assert_eq!(info["blobs"], json!(2));
    assert_eq!(info["capabilities"]["blobs"], json!(true));
    assert_eq!(info["problems"], json!([]));
    let layer_bytes: usize = child.layers.iter().map(Vec::len).sum();
    assert_eq!(info["blob_bytes"], json!(layer_bytes));
    let stats = env.json(&["stats"]);
    assert_eq!(stats["images"], json!(2));
    assert_eq!(stats["heads"], json!(1));
    assert_eq!(stats["built_locally"], json!(0));
    assert_eq!(stats["blob_bytes"], json!(layer_bytes));
    env.cmd(&["info"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Images:        2"));
    env.cmd(&["stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Blobs:          2"));
}

#[test]
fn ls_lists_heads_or_everything() {
    let (env, base, child) = with_chain();
    let heads = env.json(&["ls"]);
    assert_eq!(heads.as_array().unwrap().len(), 1);
    assert_eq!(heads[0]["id"], json!(child.id()));
    assert_eq!(heads[0]["parent"], json!(base.id()));
    assert_eq!(heads[0]["layers"], json!(2));
    assert_eq!(heads[0]["platform"]["os"], json!("linux"));
    assert_eq!(heads[0]["platform"]["architecture"], json!("amd64"));
    assert_eq!(heads[0]["children"], json!([]));
    assert_eq!(heads[0]["built_locally"], json!(false));
    assert_eq!(env.json(&["ls", "-a"]).as_array().unwrap().len(), 2);
    env.cmd(&["ls", "-a"])
        .assert()
        .success()
        .stdout(predicate::str::contains("IMAGE ID"))
        .stdout(predicate::str::contains(&child.id()[7..19]))
        .stdout(predicate::str::contains(&base.id()[7..19]));
}

#[test]
fn inspect_shows_config_as_stored_and_reports_unknown_ids() {
    let (env, base, child) = with_chain();
    let out = env.json(&["inspect", &base.id()[7..15], &child.id()]);
    // Docker's field names, and what imagecache adds under `Imagecache`.
    assert_eq!(out[0]["Id"], json!(base.id()));
    assert_eq!(out[0]["RepoTags"], json!(["example/base:1"]));
    assert_eq!(out[0]["Parent"], json!(""));
    assert_eq!(out[1]["Parent"], json!(base.id()));
    assert_eq!(out[0]["Os"], json!("linux"));
    assert_eq!(out[0]["Architecture"], json!("amd64"));
    assert_eq!(out[0]["Config"], json!({"Cmd": ["/bin/sh"]}));
    assert_eq!(out[0]["RootFS"]["Type"], json!("layers"));
    assert_eq!(out[1]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert!(out[0]["Size"].as_u64().unwrap() > 0, "layers are cached");
    assert_ne!(
        out[0]["Metadata"]["LastTagTime"],
        json!("0001-01-01T00:00:00Z")
    );
    assert_eq!(out[0]["Imagecache"]["children"], json!([child.id()]));
    assert_eq!(
        out[1]["Imagecache"]["chain_id"].as_str().map(|s| s.len()),
        Some(71)
    );
    // --raw prints the exact stored bytes: they hash to the ID.
    let raw = env
        .cmd(&["inspect", "--raw", &child.id()])
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert_eq!(raw.stdout, child.config);
    assert_eq!(sha(&raw.stdout).to_string(), child.id());
    // The config is embedded byte for byte.
    let text = String::from_utf8(
        env.cmd(&["inspect", &child.id(), "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains(std::str::from_utf8(&child.config).unwrap()));

    let missing = "f".repeat(64);
    env.cmd(&["inspect", &missing])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "No such image: {missing}"
        )));
    // Known and unknown together: the known one is shown, the exit code says not found.
    env.cmd(&["inspect", &child.id(), "ffff"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(child.id()));
}

#[test]
fn ambiguous_prefixes_are_errors_naming_both_images() {
    let env = Env::fs();
    // Import configs until two IDs share their first hex digit.
    let mut ids: Vec<String> = Vec::new();
    let mut n = 0;
    let (a, b) = loop {
        let cfg = config(&[], &[], json!({"comment": format!("n{n}")}));
        let id = sha(&cfg).hex();
        let archive = env.path(&format!("{n}.tar"));
        write(
            &archive,
            &docker_archive(
                &[ArchiveImage {
                    config: cfg,
                    layers: vec![],
                    tags: vec![],
                    parent: None,
                }],
                ArchiveOptions::default(),
            ),
        );
        env.import(&archive);
        if let Some(other) = ids.iter().find(|o| o.as_bytes()[0] == id.as_bytes()[0]) {
            break (other.clone(), id);
        }
        ids.push(id);
        n += 1;
    };
    let prefix = &a[..1];
    env.cmd(&["inspect", prefix])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("ambiguous"));
    let found = env.json(&["search", prefix]);
    let found: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        found.contains(&format!("sha256:{a}").as_str())
            && found.contains(&format!("sha256:{b}").as_str())
    );
    env.cmd(&["search", &a[..12]])
        .assert()
        .success()
        .stdout(format!("sha256:{a}\n"));
}

#[test]
fn search_without_match_exits_one() {
    let (env, _, child) = with_chain();
    env.cmd(&["search", &child.id()[7..12]])
        .assert()
        .success()
        .stdout(format!("{}\n", child.id()));
    let absent = if child.id().as_bytes()[7] == b'0' {
        "1"
    } else {
        "0"
    };
    let absent = format!("{absent}{}", &child.id()[8..20]);
    env.cmd(&["search", &absent]).assert().code(1).stdout("");
    env.cmd(&["search", "xyz"]).assert().code(1);
}

#[test]
fn history_lists_entries_newest_first_with_layer_sizes() {
    let (env, _, child) = with_chain();
    let h = env.json(&["history", &child.id()]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["created_by"], json!("COPY app /app"));
    assert_eq!(h[0]["layer"], json!(sha(&child.layers[1]).to_string()));
    assert_eq!(h[0]["size"], json!(child.layers[1].len()));
    assert_eq!(h[1]["created_by"], json!("ADD rootfs /"));
    env.cmd(&["history", &child.id()[7..19]])
        .assert()
        .success()
        .stdout(predicate::str::contains("COPY app /app"));
    env.cmd(&["history", "abcdef0123"]).assert().code(1);
}

#[test]
fn rm_refuses_parents_unless_forced() {
    let (env, base, child) = with_chain();
    env.cmd(&["rm", &base.id()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "conflict: unable to delete {} - image has dependent child images: {}",
            &base.id()[7..19],
            &child.id()[7..19]
        )));
    assert_eq!(env.image_ids().len(), 2);

    let out = env.json(&["rm", "--force", &base.id()]);
    assert_eq!(out["removed"][0]["orphaned"], json!([child.id()]));
    // The base's only layer is still used by the child: it stays.
    assert_eq!(out["blobs_removed"], json!([]));
    assert_eq!(env.image_ids(), vec![child.id()]);
    assert_eq!(env.json(&["parent", &child.id()])["parent"], json!(null));

    // Removing the last image releases its blobs.
    let out = env.json(&["rm", &child.id()]);
    assert_eq!(out["blobs_removed"].as_array().unwrap().len(), 2);
    assert!(env.blob_digests().is_empty());
    env.cmd(&["rm", &child.id()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("No such image"));
}

#[test]
fn rm_ignores_a_tampered_note_naming_an_unrelated_blob() {
    let (env, _base, child) = with_chain();
    let unrelated = layer(&[("other", b"not part of any image")]);
    let file = env.path("unrelated.tar");
    write(&file, &unrelated);
    env.cmd(&["blob", "put", file.to_str().unwrap()])
        .assert()
        .success();
    let unrelated = sha(&unrelated).to_string();
    // The child's own layer now claims the unrelated blob as its compressed
    // copy, written below the cache as anyone with access to it could.
    let own = sha(&child.layers[1]).to_string();
    let notes = env
        .path("store/imagecache/blobs/notes/sha256")
        .join(own.trim_start_matches("sha256:"));
    std::fs::create_dir_all(&notes).unwrap();
    write(&notes.join("compressed"), unrelated.as_bytes());

    let out = env.json(&["rm", &child.id()]);
    assert_eq!(out["blobs_removed"].as_array().unwrap().len(), 1, "{out}");
    assert!(!env.blob_digests().contains(&own));
    assert!(env.blob_digests().contains(&unrelated));
}

#[test]
fn parent_shows_and_sets_links_and_refuses_cycles() {
    let (env, base, child) = with_chain();
    env.cmd(&["parent", &child.id()])
        .assert()
        .success()
        .stdout(format!("{}\n", base.id()));
    env.cmd(&["parent", &base.id()])
        .assert()
        .success()
        .stdout("");
    env.cmd(&["parent", &base.id(), "--set", &child.id()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cycle"));
    env.cmd(&["parent", &base.id(), "--set", "fffffffff"])
        .assert()
        .code(1);
    env.cmd(&["rm", "--force", &base.id()]).assert().success();
    assert_eq!(env.json(&["parent", &child.id()])["parent"], json!(null));
}

#[test]
fn prune_removes_untagged_chains_and_keeps_tagged_images() {
    let env = Env::redb();
    // An untagged chain (dangling once nothing names it) and a tagged image.
    let (mut base, mut child) = chain(true);
    base.tags.clear();
    child.tags.clear();
    let l = layer(&[("tagged", b"kept")]);
    let kept = ArchiveImage {
        config: config(&[sha(&l)], &["ADD tagged /"], json!({})),
        layers: vec![l],
        tags: vec!["kept:latest".into()],
        parent: None,
    };
    let kept_id = kept.id();
    let (base_id, child_id) = (base.id(), child.id());
    let archive = env.path("all.tar");
    write(
        &archive,
        &docker_archive(&[base, child, kept], ArchiveOptions::default()),
    );
    env.import(&archive);
    assert_eq!(env.blob_digests().len(), 3);

    let dry = env.json(&["prune", "--dry-run"]);
    assert_eq!(dry["images"], json!([child_id, base_id]));
    assert_eq!(dry["blobs"].as_array().unwrap().len(), 2);
    assert_eq!(env.image_ids().len(), 3, "a dry run removes nothing");

    // Nothing was created before 2024-01-01.
    let none = env.json(&["prune", "--until", "2023-12-31T00:00:00Z"]);
    assert_eq!(none["images"], json!([]));

    let done = env.json(&["prune"]);
    assert_eq!(done["images"], json!([child_id, base_id]));
    assert_eq!(env.image_ids(), vec![kept_id]);
    assert_eq!(env.blob_digests().len(), 1);
}

#[test]
fn prune_keep_storage_evicts_least_recently_used_heads() {
    let env = Env::fs();
    let mut images = Vec::new();
    for n in 0..3u8 {
        let l = layer(&[("data", &vec![n; 10_000])]);
        let cfg = config(
            &[sha(&l)],
            &[&format!("ADD {n} /")],
            json!({"created": format!("2024-02-0{}T00:00:00Z", n + 1)}),
        );
        images.push(ArchiveImage {
            config: cfg,
            layers: vec![l],
            tags: vec![],
            parent: None,
        });
    }
    let ids: Vec<String> = images.iter().map(ArchiveImage::id).collect();
    let archive = env.path("three.tar");
    write(
        &archive,
        &docker_archive(&images, ArchiveOptions::default()),
    );
    env.import(&archive);
    let before = env.json(&["info"]);
    let total = before["config_bytes"].as_u64().unwrap() + before["blob_bytes"].as_u64().unwrap();
    // Room for a bit more than two images: the oldest goes.
    let limit = total - 5_000;
    let out = env.json(&["prune", "--keep-storage", &limit.to_string()]);
    assert_eq!(out["images"], json!([ids[0]]));
    assert_eq!(out["blobs"].as_array().unwrap().len(), 1);
    assert!(out["size_after"].as_u64().unwrap() <= limit);
    let mut left = vec![ids[1].clone(), ids[2].clone()];
    left.sort();
    assert_eq!(env.image_ids(), left);
    // Zero keeps nothing.
    env.json(&["prune", "--keep-storage", "0"]);
    assert!(env.image_ids().is_empty());
    assert!(env.blob_digests().is_empty());
}

#[test]
fn cache_lookup_answers_misses_and_cache_from_hits() {
    let (env, base, child) = with_chain();
    // Imported images are never local cache hits (CVE-2024-24557).
    env.cmd(&[
        "cache",
        "lookup",
        "--parent",
        &base.id(),
        "--cmd",
        "COPY app /app",
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains("cache miss"));
    // With the child as a cache-from source, its history answers.
    let hit = env.json(&[
        "cache",
        "lookup",
        "--parent",
        &base.id(),
        "--cmd",
        "COPY app /app",
        "--cache-from",
        &child.id(),
    ]);
    assert_eq!(hit["hit"], json!(true));
    assert_eq!(hit["id"], json!(child.id()));
    // From scratch, the base's first step.
    let hit = env.json(&[
        "cache",
        "lookup",
        "--cmd",
        "ADD rootfs /",
        "--cache-from",
        &base.id(),
    ]);
    assert_eq!(hit["id"], json!(base.id()));
    // A source that does not exist is skipped, saying why.
    let out = env
        .cmd(&[
            "cache",
            "lookup",
            "--cmd",
            "nothing",
            "--cache-from",
            "fffffff",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped"][0]["reference"], json!("fffffff"));

    let probe = env.path("probe.json");
    write(&probe, br#"{"Cmd": ["ADD rootfs /"]}"#);
    let hit = env.json(&[
        "cache",
        "lookup",
        "--config",
        probe.to_str().unwrap(),
        "--cache-from",
        &base.id(),
    ]);
    assert_eq!(hit["id"], json!(base.id()));
}

#[test]
fn cache_lookup_refuses_bad_probes() {
    let (env, _, _) = with_chain();
    let probe = env.path("probe.json");
    write(&probe, b"{\"Cmd\": [\"unterminated");
    env.cmd(&["cache", "lookup", "--config", probe.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "probe.json: not a JSON container config (line 1",
        ));
    write(&probe, br#"{"Cmd": 5}"#);
    env.cmd(&["cache", "lookup", "--config", probe.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("invalid container config"));
    env.cmd(&[
        "cache",
        "lookup",
        "--config",
        env.path("absent.json").to_str().unwrap(),
    ])
    .assert()
    .code(3)
    .stderr(predicate::str::contains("absent.json"));
    env.cmd(&["cache", "lookup", "--parent", "ffffffff", "--cmd", "x"])
        .assert()
        .code(1);
    env.cmd(&["cache", "lookup", "--env", "NOEQUALS", "--cmd", "x"])
        .assert()
        .code(2);
}

#[test]
fn blob_put_get_has_ls_clear() {
    let env = Env::redb();
    let data = layer(&[("f", b"blob content")]);
    let file = env.path("blob.tar");
    write(&file, &data);
    let digest = sha(&data).to_string();
    env.cmd(&["blob", "has", &digest]).assert().code(1);
    let put = env.json(&["blob", "put", file.to_str().unwrap()]);
    assert_eq!(put["digest"], json!(digest));
    env.cmd(&["blob", "has", &digest])
        .assert()
        .success()
        .stdout(format!("{}\n", data.len()));
    // To stdout and to a file, byte for byte.
    env.cmd(&["blob", "get", &digest])
        .assert()
        .success()
        .stdout(predicate::eq(data.clone()));
    let out = env.path("out.tar");
    env.cmd(&["blob", "get", &digest, "-o", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    env.cmd(&[
        "blob",
        "get",
        &sha(b"nope").to_string(),
        "-o",
        env.path("none").to_str().unwrap(),
    ])
    .assert()
    .code(1);
    assert!(!env.path("none").exists());

    // A wrong --digest stores nothing.
    let wrong = sha(b"other").to_string();
    env.cmd(&["blob", "put", file.to_str().unwrap(), "--digest", &wrong])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "failed to verify blob {wrong}"
        )));
    env.cmd(&["blob", "has", &wrong]).assert().code(1);

    // A gzip layer keeps its decompressed copy too.
    let gz = env.path("layer.tar.gz");
    write(&gz, &gzip(&data));
    let put = env.json(&["blob", "put", gz.to_str().unwrap()]);
    assert_eq!(put["decompressed"], json!(digest));
    assert_eq!(put["compression"], json!("gzip"));
    let listed = env.json(&["blob", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    env.cmd(&["blob", "ls"])
        .assert()
        .success()
        .stdout(predicate::str::contains("gzip"));

    let cleared = env.json(&["blob", "clear"]);
    assert_eq!(cleared["blobs"], json!(2));
    assert!(env.blob_digests().is_empty());
}

#[test]
fn memory_store_has_nothing_across_runs() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        store: "memory://".into(),
    };
    let (base, child) = chain(true);
    let archive = env.path("chain.tar");
    write(
        &archive,
        &docker_archive(&[base, child], ArchiveOptions::default()),
    );
    // One run stores images and blobs…
    let first = env.import(&archive);
    assert_eq!(first["images"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["blobs_stored"].as_u64().unwrap() > 0, "{first}");
    // …which the next run does not see.
    assert_eq!(env.json(&["ls", "-a"]), json!([]));
    let info = env.json(&["info"]);
    assert_eq!(info["images"], json!(0));
    assert_eq!(info["blobs"], json!(0));
    // Importing again finds nothing already present.
    let again = env.import(&archive);
    let images = again["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{again}");
    assert!(
        images.iter().all(|i| i["created"] == json!(true)),
        "{again}"
    );
}

#[test]
fn conformance_on_fs_damages_through_hooks_and_cleans_up() {
    let env = Env::fs();
    let root = env.path("store");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("keep-me"), b"user data").unwrap();
    // The `docker` group damages stored files through the harness's hooks:
    // nothing may be skipped for want of them.
    let out = env.json(&["conformance", "--filter", "docker::"]);
    assert!(out["passed"].as_u64().unwrap() > 10, "{out}");
    assert_eq!(out["failed"], json!(0));
    assert_eq!(out["skipped"], json!(0), "{out}");
    // Only the user's file is left.
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("keep-me")]);
}

#[test]
fn conformance_runs_everything_on_redb_and_memory() {
    for env in [
        Env::redb(),
        Env {
            dir: tempfile::tempdir().unwrap(),
            store: "memory://".into(),
        },
    ] {
        let out = env.cmd(&["conformance"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {stdout}\n{}",
            env.store,
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = stdout.lines().last().unwrap();
        // Both offer every hook (a second handle is a clone), so nothing
        // may be skipped.
        assert!(
            summary.ends_with(" passed, 0 failed, 0 skipped"),
            "{summary}"
        );
        // Nothing is left beside the redb path.
        let left: Vec<_> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("conformance"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn conformance_filter_selecting_nothing_and_bad_urls() {
    let env = Env::fs();
    let out = env.json(&["conformance", "--filter", "no-such-case"]);
    assert_eq!(out["cases"], json!([]));
    let mut cmd = Command::cargo_bin("imagecache").unwrap();
    cmd.env("HOME", env.path("home"))
        .args(["--store", "ftp://x", "conformance"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("unknown store URL scheme \"ftp\""));
}

/// Against the S3 server named by `IMAGECACHE_TEST_S3_URL` (Garage, started
/// by `scripts/test.sh`), under a random prefix of the shared bucket.
#[cfg(feature = "s3")]
#[test]
fn conformance_on_s3_touches_only_its_prefix_and_removes_it() {
    let Some(store) = imagecache_conformance::s3_test_url("cli-test") else {
        eprintln!(
            "skipped: conformance_on_s3_touches_only_its_prefix_and_removes_it (IMAGECACHE_TEST_S3_URL not set)"
        );
        return;
    };
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        store,
    };
    let out = env.json(&["conformance", "--filter", "backend::"]);
    assert_eq!(out["failed"], json!(0), "{out}");
    assert!(out["passed"].as_u64().unwrap() > 10);
    // Nothing is left under the prefix: deleting everything under it finds
    // no object (the conformance run's namespaces live below it).
    let left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let config = imagecache_backends::s3::S3Config::from_url(&env.store).unwrap();
        let backend = imagecache_backends::s3::S3Backend::open(config)
            .await
            .unwrap();
        backend.delete_prefix().await.unwrap()
    });
    assert_eq!(left, 0, "objects left under {}", env.store);
}

#[test]
fn blob_get_writes_into_a_fifo_instead_of_replacing_it() {
    use std::os::unix::fs::FileTypeExt as _;
    let env = Env::redb();
    let data = layer(&[("f", b"blob content for a pipe")]);
    let file = env.path("blob.tar");
    write(&file, &data);
    let digest = sha(&data).to_string();
    env.cmd(&["blob", "put", file.to_str().unwrap()])
        .assert()
        .success();
    let fifo = env.path("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The reader is the other end of the pipe; it sees the blob's bytes if
    // the command writes into the FIFO.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    env.cmd(&["blob", "get", &digest, "-o", fifo.to_str().unwrap()])
        .assert()
        .success();
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced by {kind:?}");
    assert_eq!(reader.join().unwrap(), data);
}

#[test]
fn reading_commands_never_create_a_store() {
    for env in [Env::fs(), Env::redb()] {
        let missing = env.path(if env.store.starts_with("fs") {
            "store"
        } else {
            "store.redb"
        });
        for args in [
            &["ls"][..],
            &["ls", "-a"],
            &["inspect", "abc"],
            &["history", "abc"],
            &["info"],
            &["stats"],
            &["blob", "ls"],
            &["save", "-o", "/dev/null", "abc"],
            &["prune", "--dry-run"],
        ] {
            env.cmd(args)
                .assert()
                .code(1)
                .stderr(predicate::str::contains("a command that writes creates it"));
            assert!(!missing.exists(), "{args:?} created {}", missing.display());
        }
        // A typo in a directory that does not exist creates no directories.
        let deep = format!("redb://{}", env.path("no/such/dir/x.redb").display());
        Command::cargo_bin("imagecache")
            .unwrap()
            .args(["--store", &deep, "ls"])
            .assert()
            .code(1);
        assert!(!env.path("no").exists());
        // The first command that writes creates it; then readers read it.
        env.cmd(&["prune"]).assert().success();
        assert!(missing.exists());
        assert_eq!(env.json(&["ls"]), json!([]));
    }
}

#[test]
fn a_config_truncated_to_nothing_is_quarantined_and_reported_everywhere() {
    let (env, base, child) = with_chain();
    let content = env.path("store/content/sha256").join(&child.id()[7..]);
    std::fs::write(&content, b"").unwrap();
    // The first command that reads it finds the damage and sets it aside…
    env.cmd(&["inspect", &child.id()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("is corrupt"));
    // …and every command after agrees.
    let listed = env.json(&["ls", "-a"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], json!(base.id()));
    env.cmd(&["inspect", &child.id()]).assert().code(1);
    let info = env.json(&["info"]);
    let problems = info["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{info}");
    assert!(
        problems[0].as_str().unwrap().contains("quarantined"),
        "{info}"
    );
    assert!(
        env.path("store/imagecache/quarantine/sha256")
            .join(&child.id()[7..])
            .is_dir()
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    use std::io::Read as _;
    let env = Env::fs();
    let data: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let file = env.path("big.bin");
    write(&file, &data);
    let digest = sha(&data).to_string();
    env.cmd(&["blob", "put", file.to_str().unwrap()])
        .assert()
        .success();
    // More than a pipe holds, so the command is still writing when the
    // reader goes, as `imagecache blob get … | head -c 16` does.
    let mut child = env
        .std_cmd(&["blob", "get", &digest])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(head, data[..16]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn logs_are_off_by_default_and_on_with_verbose_or_rust_log() {
    let (env, _, _) = with_chain();
    let quiet = env.cmd(&["ls"]).output().unwrap();
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let text = env.cmd(&["-v", "ls"]).output().unwrap();
    let text = String::from_utf8(text.stderr).unwrap();
    assert!(
        text.contains("INFO")
            && text.contains("opened the image store")
            && text.contains("images=2"),
        "{text}"
    );
    let json = env
        .cmd(&["-v", "--log-format", "json", "ls"])
        .output()
        .unwrap();
    let line = String::from_utf8(json.stderr).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(event["fields"]["images"], json!(2));
    let by_env = env
        .cmd(&["ls"])
        .env("RUST_LOG", "imagecache_store=info")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(by_env.stderr)
            .unwrap()
            .contains("opened the image store")
    );
}

#[test]
fn rust_log_debug_shows_the_libraries_spans() {
    let (env, _, child) = with_chain();
    let quiet = env.cmd(&["ls"]).output().unwrap();
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let out = env
        .cmd(&["inspect", &child.id()])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    // The store's open span, with the backend as a field, around the
    // backend call that loads it; and a span per backend call.
    assert!(
        text.lines().any(|l| l.contains("open{backend=")
            && l.contains("backend{")
            && l.contains(r#"op="load""#)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(r#"op="get""#) && l.contains("backend call")),
        "{text}"
    );
}

#[test]
fn ls_shows_names_as_docker_images_does() {
    let (env, base, child) = with_chain();
    env.cmd(&["tag", &child.id(), "localhost:5000/app:v2"])
        .assert()
        .success();
    let out = env.cmd(&["ls", "-a"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("REPOSITORY") && header.contains("TAG") && header.contains("IMAGE ID"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("example/app ") && l.contains(" 1 ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("localhost:5000/app ") && l.contains(" v2 ")),
        "{text}"
    );
    let quiet = env
        .cmd(&["images", "-a", "-q", "--no-trunc"])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8(quiet.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    let mut expected = vec![base.id(), child.id()];
    expected.sort();
    assert_eq!(ids, expected);
    let listed = env.json(&["ls"]);
    assert_eq!(
        listed[0]["names"],
        json!(["example/app:1", "localhost:5000/app:v2"])
    );
}

/// Percent-decodes a query value of the test URL.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `env.cmd(args)` with the S3 settings of the test URL in the `AWS_*`
/// environment variables, and `secret` as the secret key.
fn with_env_of(
    env: &Env,
    args: &[&str],
    settings: &std::collections::HashMap<&str, String>,
    secret: &str,
) -> assert_cmd::Command {
    let mut cmd = env.cmd(args);
    cmd.env("AWS_ENDPOINT_URL", &settings["endpoint"])
        .env("AWS_REGION", &settings["region"])
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", &settings["access_key_id"])
        .env("AWS_SECRET_ACCESS_KEY", secret);
    cmd
}

#[test]
fn s3_settings_come_from_the_environment_as_object_store_reads_them() {
    let Some(url) = std::env::var("IMAGECACHE_TEST_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert_ne!(
            std::env::var("IMAGECACHE_REQUIRE_S3").as_deref(),
            Ok("1"),
            "IMAGECACHE_TEST_S3_URL is not set, and IMAGECACHE_REQUIRE_S3=1 requires the S3 tests"
        );
        eprintln!(
            "skipped: s3_settings_come_from_the_environment (IMAGECACHE_TEST_S3_URL not set)"
        );
        return;
    };
    let (location, query) = url.split_once('?').unwrap_or((&url, ""));
    let settings: std::collections::HashMap<&str, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k, decode(v)))
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("{}/cli-env-{nanos:x}", location.trim_end_matches('/'));
    // Only what object_store needs beyond the environment stays in the URL.
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        store: format!("{prefix}?pool_max_idle_per_host=0"),
    };
    let with_env = |args: &[&str], secret: &str| with_env_of(&env, args, &settings, secret);
    let secret = settings["secret_access_key"].clone();
    let (_, child) = chain(true);
    let archive = env.write_archive(
        "one.tar",
        std::slice::from_ref(&child),
        ArchiveOptions::default(),
    );
    with_env(&["load", archive.to_str().unwrap()], &secret)
        .assert()
        .success();
    with_env(&["ls", "-q", "--no-trunc"], &secret)
        .assert()
        .success()
        .stdout(format!("{}\n", child.id()));
    // The credentials really come from the environment: a wrong secret
    // there is refused ...
    with_env(&["ls"], "wrong")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("refused the credentials"));
    // ... and a setting in the URL wins over the environment's.
    let fixed = Env {
        dir: tempfile::tempdir().unwrap(),
        store: format!(
            "{prefix}?pool_max_idle_per_host=0&secret_access_key={}",
            settings["secret_access_key"]
        ),
    };
    with_env_of(&fixed, &["ls", "-q", "--no-trunc"], &settings, "wrong")
        .assert()
        .success()
        .stdout(format!("{}\n", child.id()));
    // Messages never show a secret given in the URL.
    let refused = Env {
        dir: tempfile::tempdir().unwrap(),
        store: format!("{prefix}?pool_max_idle_per_host=0&secret_access_key=not-the-secret"),
    };
    let out = with_env_of(&refused, &["ls"], &settings, &secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("secret_access_key=***"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    // A key object_store does not know is refused, naming it.
    let bad = Env {
        dir: tempfile::tempdir().unwrap(),
        store: format!("{prefix}?colour=red"),
    };
    bad.cmd(&["ls"]).assert().code(3).stderr(
        predicate::str::contains("colour").and(predicate::str::contains("AmazonS3ConfigKey")),
    );
    with_env(&["rm", "-f", &child.id()], &secret)
        .assert()
        .success();
}

#[test]
fn metrics_flag_and_stats_print_what_the_libraries_counted() {
    let (env, _, child) = with_chain();
    let out = env
        .cmd(&["--metrics", "inspect", &child.id()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"metric: imagecache_backend_calls_total{op="load"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("metric: imagecache_store_open_seconds count=1 sum="),
        "{text}"
    );
    // Without the flag, nothing is printed.
    let plain = env.cmd(&["inspect", &child.id()]).output().unwrap();
    assert!(plain.stderr.is_empty());
    let stats = env.json(&["stats"]);
    let metrics = stats["metrics"].as_array().unwrap();
    assert!(
        metrics.iter().any(|m| m["metric"]
            == json!(r#"imagecache_backend_calls_total{op="list_blobs"}"#)
            && m["count"] == json!(1)),
        "{stats}"
    );
}

#[test]
fn help_groups_options_and_shows_examples() {
    let env = Env::redb();
    let out = env.cmd(&["--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Global options:"), "{text}");
    assert!(
        text.contains("Commands by topic:") && text.contains("Lifecycle:  prune"),
        "{text}"
    );
    assert!(
        text.contains("Examples:\n  imagecache load image.tar"),
        "{text}"
    );
    for command in ["ls", "prune"] {
        let out = env.cmd(&[command, "--help"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("Examples:\n  imagecache {command}")),
            "{command}: {text}"
        );
        assert!(text.contains("Global options:"), "{command}: {text}");
    }
}
