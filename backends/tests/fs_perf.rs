//! Figures for the directory backend: durable create cost and load time.
//!
//! These are measurements, not tests of speed: they print numbers and only
//! assert that the results are right. Run them in release mode:
//!
//! ```text
//! cargo test -p imagecache-backends --release --test fs_perf -- --ignored --nocapture --test-threads 1
//! IMAGECACHE_PERF_IMAGES=10000 cargo test -p imagecache-backends --release --test fs_perf perf_load -- --ignored --nocapture
//! ```
//!
//! `IMAGECACHE_PERF_DIR` keeps the built store there (instead of a temp
//! directory); `perf_load_existing` then opens it in a fresh process.

#![cfg(feature = "fs")]
// Helpers of a test crate panic on any failure: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use imagecache_backends::fs::{FsBackend, FsConfig};
use imagecache_core::{Content, ImageId, MetadataKey, StoreBackend, WriteBatch};

fn config(n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"architecture":"amd64","config":{{"Cmd":["/bin/sh","-c","step {n}"]}},"created":"2024-05-01T12:00:00Z","history":[{{"created_by":"step {n}"}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{n:064x}"]}}}}"#
    ))
}

fn create_batch(n: u64, parent: Option<ImageId>) -> (ImageId, WriteBatch) {
    let mut batch = WriteBatch::new();
    let id = batch.put(Content::new(config(n)).unwrap());
    if let Some(p) = parent {
        batch.set_metadata(id, MetadataKey::PARENT, p.to_string());
    }
    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    batch.set_metadata(
        id,
        MetadataKey::LAST_UPDATED,
        Bytes::from_static(b"2024-05-01T12:00:00.123456789+02:00"),
    );
    // About the size of the image store's summary record.
    batch.set_summary(id, Bytes::from(vec![(n % 251) as u8; 110]));
    (id, batch)
}

/// The tree of the design's benchmark: 3 bases, chains of depth 10, fan-out 4.
fn parent_index(i: u64) -> Option<u64> {
    (i >= 3).then(|| (i - 3) / 4)
}

/// Docker's create on the same disk, for comparison: config, parent and
/// builtLocally each written by temp file, fsync, rename, with no
/// directory fsync.
fn docker_style_create(root: &Path, n: u64, parent: &str) {
    fn atomic(dir: &Path, name: &str, data: &[u8]) {
        let tmp = dir.join(format!(".tmp-{name}1"));
        let mut f = fs::File::create(&tmp).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let data = config(n);
    let id = ImageId::of_config(&data);
    let cdir = root.join("content/sha256");
    atomic(&cdir, &id.hex(), &data);
    let mdir = root.join("metadata/sha256").join(id.hex());
    fs::create_dir_all(&mdir).unwrap();
    atomic(&mdir, "parent", parent.as_bytes());
    atomic(&mdir, "builtLocally", &[1]);
}

fn per(d: Duration, n: u64) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6 / n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn perf_create_durable() {
    let n: u64 = std::env::var("IMAGECACHE_PERF_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for round in 0..2 {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let b = FsBackend::open(dir.path()).await.unwrap();
        let mut parent = None;
        let t = Instant::now();
        for i in 0..n {
            let (id, batch) = create_batch(round * 1_000_000 + i, parent);
            b.write(batch).await.unwrap();
            parent = Some(id);
        }
        let sequential = t.elapsed();

        let docker_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        fs::create_dir_all(docker_dir.path().join("content/sha256")).unwrap();
        let p = ImageId::of_config(b"x").to_string();
        let t = Instant::now();
        for i in 0..n {
            docker_style_create(docker_dir.path(), round * 1_000_000 + i, &p);
        }
        let docker = t.elapsed();

        let tasks = 8u64;
        let t = Instant::now();
        let mut handles = Vec::new();
        for task in 0..tasks {
            let b = b.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..n / tasks {
                    let (_, batch) =
                        create_batch(round * 1_000_000 + 500_000 + task * 10_000 + i, None);
                    b.write(batch).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let concurrent = t.elapsed();

        let batch_size = 50u64;
        let t = Instant::now();
        for chunk in 0..n / batch_size {
            let mut batch = WriteBatch::new();
            for i in 0..batch_size {
                let (_, b1) =
                    create_batch(round * 1_000_000 + 700_000 + chunk * batch_size + i, None);
                batch.extend(b1.into_ops());
            }
            b.write(batch).await.unwrap();
        }
        let batched = t.elapsed();

        let s = b.load().await.unwrap();
        assert_eq!(
            s.images.len() as u64,
            n + n / tasks * tasks + n / batch_size * batch_size
        );

        // The same creates without fsync: what the backend itself costs.
        let quick_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let quick = FsBackend::open_with(FsConfig::new(quick_dir.path()).with_fsync(false))
            .await
            .unwrap();
        let t = Instant::now();
        for i in 0..n {
            let (_, batch) = create_batch(round * 1_000_000 + 900_000 + i, None);
            quick.write(batch).await.unwrap();
        }
        let no_fsync = t.elapsed();
        println!(
            "round {round}: durable create, one at a time: {} per image (Docker-style 3 fsyncs, same disk: {}); \
             {tasks} concurrent writers: {} per image; batches of {batch_size}: {} per image; \
             one at a time without fsync: {} per image",
            per(sequential, n),
            per(docker, n),
            per(concurrent, n / tasks * tasks),
            per(batched, n / batch_size * batch_size),
            per(no_fsync, n),
        );
    }
}

fn perf_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("IMAGECACHE_PERF_DIR") {
        Some(d) => (None, PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

async fn timed_load(root: &Path) -> (Duration, usize) {
    let t = Instant::now();
    let b = FsBackend::open(root).await.unwrap();
    let s = b.load().await.unwrap();
    (t.elapsed(), s.images.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn perf_load() {
    let n: u64 = std::env::var("IMAGECACHE_PERF_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (_keep, root) = perf_dir();
    let builder = FsBackend::open_with(FsConfig::new(&root).with_fsync(false))
        .await
        .unwrap();
    let t = Instant::now();
    let mut ids: Vec<ImageId> = Vec::with_capacity(n as usize);
    let mut batch = WriteBatch::new();
    for i in 0..n {
        let parent = parent_index(i).map(|p| ids[p as usize]);
        let (id, b1) = create_batch(i, parent);
        ids.push(id);
        batch.extend(b1.into_ops());
        if batch.len() >= 4000 {
            builder.write(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    builder.write(batch).await.unwrap();
    println!(
        "built {n} images (fsync off) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (first, count) = timed_load(&root).await;
    assert_eq!(count as u64, n);
    let (second, _) = timed_load(&root).await;
    let (third, _) = timed_load(&root).await;
    println!(
        "load of {n} images: first (replays the journal of the build and writes the snapshot) {:.3} s; \
         then {:.3} s, {:.3} s",
        first.as_secs_f64(),
        second.as_secs_f64(),
        third.as_secs_f64()
    );

    // A few images changed behind the index's back, as Docker would.
    for id in ids.iter().step_by((n as usize / 10).max(1)) {
        let dir = root.join("metadata/sha256").join(id.hex());
        fs::write(dir.join(".tmp-parent9"), ids[0].to_string()).unwrap();
        fs::rename(dir.join(".tmp-parent9"), dir.join("parent")).unwrap();
    }
    let (changed, _) = timed_load(&root).await;
    println!(
        "load after 10 images changed externally: {:.3} s",
        changed.as_secs_f64()
    );

    // The same store as Docker leaves it: no index at all.
    fs::remove_file(root.join("imagecache/index")).unwrap();
    fs::remove_file(root.join("imagecache/journal")).unwrap();
    let (docker, count) = timed_load(&root).await;
    assert_eq!(count as u64, n);
    let (after, _) = timed_load(&root).await;
    println!(
        "load without an index (a Docker-written store, reads every metadata file): {:.3} s; next load {:.3} s",
        docker.as_secs_f64(),
        after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement of an existing store in IMAGECACHE_PERF_DIR"]
async fn perf_load_existing() {
    let Some(root) = std::env::var_os("IMAGECACHE_PERF_DIR") else {
        eprintln!("skipped: perf_load_existing (IMAGECACHE_PERF_DIR not set)");
        return;
    };
    let (d, count) = timed_load(Path::new(&root)).await;
    println!(
        "load of {count} images in a fresh process: {:.3} s",
        d.as_secs_f64()
    );
}
