//! The kill harness at CI size: a few SIGKILLs of a random workload per
//! backend (fs, redb, and S3 when `IMAGECACHE_TEST_S3_URL` names a server),
//! each followed by a full check of the store against what the workload
//! acknowledged. `cargo run --release -p imagecache-examples --example
//! kill_loop -- <backend> 1000` runs the same harness at full size.
//!
//! The test binary is also the child: started with the harness's
//! environment, `kill_child` runs the workload until it is killed.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use imagecache_examples::kill::{self, KillOptions};

/// Kills per backend: enough to interrupt every kind of operation now and
/// then over many CI runs, few enough for a few seconds per backend (S3 the slowest).
const KILLS: u64 = 15;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn harness(backend: &str, url: String, seed: u64) {
    let mut options = KillOptions::new(backend, url, KILLS);
    options.seed = seed;
    options.max_layer = 32 << 10;
    options.max_run_ms = 300;
    let exe = std::env::current_exe().expect("test binary");
    let child = || {
        let mut c = Command::new(&exe);
        c.args([
            "--exact",
            "kill_child",
            "--nocapture",
            "--test-threads",
            "1",
        ]);
        c
    };
    let summary = runtime()
        .block_on(kill::run(&options, child))
        .expect("harness");
    summary.record();
    let t = &summary.tally;
    assert!(
        summary.passed(),
        "{}\n{:#?}",
        summary.evidence(),
        summary.problems
    );
    assert_eq!(t.kills, KILLS, "{}", summary.evidence());
    assert!(
        t.ops_acked > 0 && t.acked_checked > 0,
        "{}",
        summary.evidence()
    );
}

#[test]
fn kill_child() {
    // Only does something when started by the harness.
    let Some(args) = kill::child_from_env() else {
        return;
    };
    if let Err(e) = runtime().block_on(kill::run_child(args)) {
        panic!("the workload stopped: {e:#}");
    }
}

#[test]
fn fs_store_survives_kills() {
    if kill::child_from_env().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    harness(
        "fs",
        format!("fs://{}", dir.path().join("store").display()),
        11,
    );
}

#[test]
fn redb_store_survives_kills() {
    if kill::child_from_env().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redb://{}", dir.path().join("store.redb").display());
    harness("redb", url, 12);
}

#[test]
fn s3_store_survives_kills() {
    if kill::child_from_env().is_some() {
        return;
    }
    let Some(base) = std::env::var("IMAGECACHE_TEST_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert_ne!(
            std::env::var("IMAGECACHE_REQUIRE_S3").as_deref(),
            Ok("1"),
            "IMAGECACHE_TEST_S3_URL is not set, and IMAGECACHE_REQUIRE_S3=1 requires the S3 tests"
        );
        eprintln!("skipped: s3_store_survives_kills (IMAGECACHE_TEST_S3_URL not set)");
        return;
    };
    harness("s3", kill::fresh_s3_prefix(&base, "kill-test"), 13);
}
