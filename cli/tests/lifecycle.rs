//! `prune`, `lease`, `df` and `rm` with leases, run as the built binary on
//! fs and redb stores.

// Helpers outside #[test] functions panic on failed setup, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::{Value, json};

/// A store holding the tagged chain (base and app) and an untagged image
/// with its own layer.
fn store(env: &Env) -> (String, String, String) {
    let (base, child) = chain(true);
    let l = layer(&[("loose", b"an untagged image's layer")]);
    let loose = ArchiveImage {
        config: config(
            &[sha(&l)],
            &["ADD loose /"],
            json!({"config": {"Labels": {"team": "web"}}}),
        ),
        layers: vec![l],
        tags: vec![],
        parent: None,
    };
    let ids = (base.id(), child.id(), loose.id());
    let archive = env.write_archive("all.tar", &[base, child, loose], ArchiveOptions::default());
    env.import(&archive);
    ids
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_owned())
        .collect()
}

fn reason<'a>(plan: &'a Value, id: &str) -> &'a str {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap()["reason"]
        .as_str()
        .unwrap()
}

#[test]
fn leases_hold_images_against_rm_and_prune() {
    for env in [Env::fs(), Env::redb()] {
        let (base, app, loose) = store(&env);
        let created = env.json(&[
            "lease", "create", "--id", "build-7", "--label", "ci=1", &loose,
        ]);
        assert_eq!(created["id"], "build-7");
        assert_eq!(created["resources"], json!([format!("image:{loose}")]));
        let listed = env.json(&["lease", "ls"]);
        assert_eq!(listed.as_array().unwrap().len(), 1);
        assert_eq!(listed[0]["live"], true);
        assert_eq!(listed[0]["labels"], json!({"ci": "1"}));

        // rm refuses a held image, naming the lease; -f removes it anyway.
        env.cmd(&["rm", &loose])
            .assert()
            .failure()
            .stderr(predicate::str::contains("lease build-7"));
        assert!(env.image_ids().contains(&loose));

        // prune keeps it and says why.
        let plan = env.json(&["prune", "-a", "--dry-run"]);
        assert_eq!(reason(&plan, &loose), "held");
        assert_eq!(reason(&plan, &app), "unused");
        let done = env.json(&["prune", "-a", "-f"]);
        assert_eq!(ids(&done["images"]), [app.clone(), base.clone()]);
        assert_eq!(env.image_ids(), vec![loose.clone()]);
        assert_eq!(env.blob_digests().len(), 1, "the held image's layer stays");

        env.cmd(&["lease", "rm", "build-7"]).assert().success();
        env.cmd(&["lease", "rm", "build-7"]).assert().code(1);
        assert_eq!(env.json(&["lease", "ls"]), json!([]));
        env.json(&["prune", "-f"]);
        assert!(env.image_ids().is_empty());
        assert!(env.blob_digests().is_empty());
    }
}

#[test]
fn prune_filters_and_bad_input() {
    let env = Env::fs();
    let (_, _, loose) = store(&env);
    let none = env.json(&["prune", "-a", "--filter", "label=team=db", "--dry-run"]);
    assert!(ids(&none["images"]).is_empty());
    assert_eq!(reason(&none, &loose), "filtered");
    let web = env.json(&["prune", "--filter", "label=team=web", "--dry-run"]);
    assert_eq!(ids(&web["images"]), vec![loose.clone()]);
    let kept = env.json(&["prune", "--filter", "label!=team", "--dry-run"]);
    assert!(ids(&kept["images"]).is_empty());

    for (args, needle) in [
        (&["prune", "--filter", "dangling=maybe"][..], "--filter"),
        (&["prune", "--filter", "until=soon"], "until"),
        (&["lease", "create", "--ttl", "0s"], "duration"),
        (&["lease", "create", "--id", "../x"], "lease ID"),
        (&["lease", "create", "volume:x"], "No such image"),
    ] {
        env.cmd(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(needle));
    }
    assert_eq!(env.image_ids().len(), 3, "bad input changes nothing");
    assert_eq!(env.json(&["lease", "ls"]), json!([]));
}

#[test]
fn df_reports_usage_and_what_prune_frees() {
    for env in [Env::fs(), Env::redb()] {
        store(&env);
        let df = env.json(&["df"]);
        assert_eq!(df["images"], 3);
        assert_eq!(df["names"], 2);
        let blob_bytes: u64 = df["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["bytes"].as_u64().unwrap())
            .sum();
        assert!(blob_bytes > 0);
        let dry = env.json(&["prune", "--dry-run"]);
        assert_eq!(df["reclaimable"], dry["reclaimed"]);
        assert!(df["reclaimable_all"].as_u64() > df["reclaimable"].as_u64());
        assert!(
            df["free_bytes"].as_u64().is_some(),
            "a local store measures free space"
        );
        env.cmd(&["df", "-v"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Blobs by kind"))
            .stdout(predicate::str::contains("RECLAIMABLE"));
    }
}

#[test]
fn read_only_lease_listing_creates_no_store() {
    let env = Env::redb();
    env.cmd(&["lease", "ls"]).assert().code(1);
    env.cmd(&["df"]).assert().code(1);
    assert!(!env.path("store.redb").exists());
}

#[test]
fn compact_gives_back_a_redb_files_free_pages() {
    let env = Env::redb();
    store(&env);
    let pruned = env.json(&["prune", "-a", "-f"]);
    let (before, after) = (
        pruned["compacted"][0].as_u64(),
        pruned["compacted"][1].as_u64(),
    );
    assert!(after.is_some() && after <= before, "{pruned}");
    let out = env.json(&["compact"]);
    assert_eq!(out["compacted"], true);
    assert!(out["after"].as_u64() <= out["before"].as_u64(), "{out}");
    let fs = Env::fs();
    store(&fs);
    fs.cmd(&["compact"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Nothing to compact"));
}

/// `prune` on a terminal asks first, as `docker image prune` does: run under
/// a pseudo-terminal (`script`), "n" keeps everything and "y" prunes.
#[test]
fn prune_asks_on_a_terminal() {
    let env = Env::fs();
    let (_, _, loose) = store(&env);
    let bin = assert_cmd::cargo::cargo_bin("imagecache");
    let run = |answer: &str| {
        let command = format!("{} --store {} prune", bin.display(), env.store);
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("HOME", env.path("home"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux runs the CLI under a pseudo-terminal");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let declined = run("n\n");
    assert!(
        declined.contains("Are you sure you want to continue? [y/N]"),
        "{declined}"
    );
    assert!(
        env.image_ids().contains(&loose),
        "answering no removes nothing"
    );
    let accepted = run("y\n");
    assert!(accepted.contains("Deleted: "), "{accepted}");
    assert!(!env.image_ids().contains(&loose));
}

/// `check` reads and verifies everything, reports damage with its key and
/// exits 1, evicts damaged blobs, and `info` says when it last ran.
#[test]
fn check_finds_damage_that_nothing_has_read_yet() {
    let env = Env::fs();
    let (_, app, loose) = store(&env);
    env.cmd(&["info"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Last check:    never"));
    let clean = env.json(&["check"]);
    assert_eq!(clean["problems"], json!([]));
    assert_eq!(clean["images"], 3);
    assert_eq!(clean["blobs"], 3);

    // A config's bytes flipped on disk, same length: nothing notices until
    // it is read.
    let content = env.path("store/content/sha256").join(&loose[7..]);
    let mut bytes = std::fs::read(&content).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&content, bytes).unwrap();
    // A layer damaged the same way.
    let digests = env.blob_digests();
    let blob = env
        .path("store/imagecache/blobs/sha256")
        .join(&digests[0][7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let out = env.cmd(&["check", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&format!("image {loose}").as_str()),
        "{report}"
    );
    assert!(
        keys.contains(&format!("blob {}", digests[0]).as_str()),
        "{report}"
    );
    assert!(!keys.iter().any(|k| k.contains(&app)), "{report}");
    assert!(
        !env.blob_digests().contains(&digests[0]),
        "the damaged blob is evicted"
    );
    env.cmd(&["info"])
        .assert()
        .success()
        .stdout(predicate::str::contains("problem(s) (imagecache check)"));
}
