//! A collector process and a builder process on one store (an fs
//! directory, or an S3 prefix shared by two clients): the collector removes
//! dangling images again and again while the builder takes leases on base
//! images, checks them, and builds children with new layers on them. No
//! image or blob a builder held or built on may be removed.
//!
//! The test re-runs its own binary as the two processes.

// A panic is how a test (and its processes) fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use imagecache_core::{Digest, ImageId, LeaseResource};
use imagecache_engine::blob::BlobCache;
use imagecache_engine::lifecycle::{Lifecycle, LifecycleOptions, Policy};
use imagecache_store::{CreateOptions, LeaseOptions, Store};

const ROLE: &str = "IMAGECACHE_GC_ROLE";
const URL: &str = "IMAGECACHE_GC_URL";
const BASES: u64 = 8;

fn layer(n: u64) -> Bytes {
    Bytes::from(format!("layer {n} ").repeat(200 + n as usize))
}

fn config(name: &str, diffs: &[Digest]) -> Bytes {
    let diffs: Vec<String> = diffs.iter().map(|d| format!("\"{d}\"")).collect();
    Bytes::from(format!(
        r#"{{"created":"2024-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":[{}]}},"comment":"{name}"}}"#,
        diffs.join(",")
    ))
}

async fn open(url: &str) -> Lifecycle {
    let backend = imagecache_backends::open(url).await.expect("open backend");
    let store = Store::open(backend.images()).await.expect("open store");
    let blobs = BlobCache::new(backend.blobs()).expect("blob cache");
    Lifecycle::with_options(
        store,
        Some(blobs),
        LifecycleOptions::new().with_blob_grace(Duration::ZERO),
    )
}

/// Bases with a layer each; the even ones named, so they survive for sure.
async fn seed(lc: &Lifecycle) -> Vec<(ImageId, Digest)> {
    let mut out = Vec::new();
    for n in 0..BASES {
        let data = layer(n);
        let d = Digest::sha256(&data);
        lc.blobs().unwrap().put_bytes(&d, data).await.unwrap();
        let id = lc
            .store()
            .create(config(&format!("base{n}"), &[d]))
            .await
            .unwrap();
        if n % 2 == 0 {
            let name = format!("base:{n}").parse().unwrap();
            lc.store().tag(&name, &id).await.unwrap();
        }
        out.push((id, d));
    }
    out
}

async fn collector(url: &str) {
    let lc = open(url).await;
    let started = std::time::Instant::now();
    let mut runs = 0;
    while started.elapsed() < Duration::from_secs(4) {
        lc.collect(&[Policy::dangling()], None)
            .await
            .expect("collect");
        runs += 1;
    }
    println!("RUNS {runs}");
}

async fn builder(url: &str) {
    let lc = open(url).await;
    let mut held = Vec::new();
    for n in 0..BASES {
        let base = ImageId::of_config(&config(&format!("base{n}"), &[Digest::sha256(&layer(n))]));
        let base_layer = Digest::sha256(&layer(n));
        let data = layer(1000 + n);
        let l = Digest::sha256(&data);
        let bytes = config(&format!("child{n}"), &[base_layer, l]);
        let child = ImageId::of_config(&bytes);
        let guard = lc
            .store()
            .hold(
                LeaseOptions::new()
                    .with_resource(LeaseResource::Image(base))
                    .with_resource(LeaseResource::Image(child))
                    .with_resource(LeaseResource::Blob(l)),
            )
            .await
            .expect("lease");
        // What another process did shows after a reload.
        lc.store().refresh().await.expect("refresh");
        if !lc.store().contains(&base) {
            println!("GONE {base}");
            continue;
        }
        lc.blobs().unwrap().put_bytes(&l, data).await.expect("put");
        lc.store()
            .create_with(bytes, CreateOptions::new().with_parent(base))
            .await
            .expect("create");
        println!("BUILT {base}");
        held.push((guard, base, base_layer, child, l));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the collector run over everything built.
    tokio::time::sleep(Duration::from_secs(2)).await;
    lc.store().refresh().await.expect("refresh");
    for (guard, base, base_layer, child, l) in held {
        for id in [base, child] {
            assert!(lc.store().contains(&id), "held image {id} was removed");
        }
        for d in [base_layer, l] {
            let has = lc.blobs().unwrap().has(&d).await.expect("has");
            assert!(has.is_some(), "held blob {d} was removed");
        }
        println!("OK {child}");
        guard.release().await.expect("release");
    }
}

#[test]
fn gc_process() {
    // Only does something when started by a test below.
    let (Ok(role), Ok(url)) = (std::env::var(ROLE), std::env::var(URL)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match role.as_str() {
        "collector" => rt.block_on(collector(&url)),
        _ => rt.block_on(builder(&url)),
    }
}

fn run_pair(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lc = rt.block_on(open(url));
    rt.block_on(seed(&lc));
    let exe = std::env::current_exe().expect("test binary");
    let spawn = |role: &str| {
        Command::new(&exe)
            .args([
                "--exact",
                "gc_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ROLE, role)
            .env(URL, url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (collector, builder) = (spawn("collector"), spawn("builder"));
    let mut outputs = Vec::new();
    for child in [collector, builder] {
        let out = child.wait_with_output().expect("process");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(stdout);
    }
    let runs: u64 = outputs[0]
        .lines()
        .find_map(|l| l.split("RUNS ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("collector printed no run count: {}", outputs[0]));
    assert!(runs >= 2, "the collector ran {runs} times");
    // The harness prints its own words before the first line.
    let count = |tag: &str| outputs[1].matches(tag).count();
    let (built, ok) = (count("BUILT "), count("OK "));
    assert!(built as u64 >= BASES / 2, "{}", outputs[1]);
    assert_eq!(ok, built, "{}", outputs[1]);
    // Once the builder is gone, its children are dangling and go.
    rt.block_on(async {
        lc.collect(&[Policy::dangling()], None).await.unwrap();
        assert_eq!(
            lc.store().len() as u64,
            BASES / 2,
            "only the named bases stay"
        );
    });
}

#[test]
fn fs_collector_and_builder_processes() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_pair(&format!("fs://{}", dir.path().display()));
}

#[test]
fn s3_collector_and_builder_clients() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let Some(prefixed) = imagecache_conformance::s3_test_url("gc-test") else {
        eprintln!("skipped: s3_collector_and_builder_clients (IMAGECACHE_TEST_S3_URL not set)");
        return;
    };
    run_pair(&prefixed);
}
