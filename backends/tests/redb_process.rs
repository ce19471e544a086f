//! The redb backend against other processes: locking and crashes.
//!
//! Each test runs this test binary again as the other process, selecting
//! itself by name and saying what to do through an environment variable.
#![cfg(feature = "redb")]
// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagecache_backends::redb::RedbBackend;
use imagecache_core::{Content, Error, MetadataKey, StoreBackend, StoreBackendExt, WriteBatch};

/// Set in the child: what it should do, and on which file.
const ROLE: &str = "IMAGECACHE_REDB_TEST_ROLE";
const PATH: &str = "IMAGECACHE_REDB_TEST_PATH";

/// How long a child may take before the test calls it hung. This is a guard
/// against a hang only; the tests assert on what the child reports.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

fn spawn_child(test: &str, role: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PATH, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for the child, killing it if it overruns the deadline; returns the
/// lines it printed with the `CHILD:` prefix.
fn child_report(mut child: Child) -> Vec<String> {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > CHILD_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the child process did not finish within {CHILD_DEADLINE:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = out
        .lines()
        .map_while(Result::ok)
        // The test harness may have started the line with its own text.
        .filter_map(|l| l.split_once("CHILD:").map(|(_, rest)| rest.to_owned()))
        .collect();
    assert!(
        status.success(),
        "child failed ({status}); it said {lines:?}"
    );
    lines
}

fn child_role() -> Option<(String, String)> {
    Some((std::env::var(ROLE).ok()?, std::env::var(PATH).ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn second_process_gets_locked_naming_file_and_holder() {
    const TEST: &str = "second_process_gets_locked_naming_file_and_holder";
    if let Some((role, path)) = child_role() {
        match (role.as_str(), RedbBackend::open(&path).await) {
            (
                "refused",
                Err(Error::Locked {
                    backend,
                    resource,
                    holder,
                }),
            ) => {
                println!("CHILD:locked");
                println!("CHILD:{backend}");
                println!("CHILD:{resource}");
                println!("CHILD:{holder}");
            }
            ("opens", Ok(backend)) => {
                let n = backend.load().await.unwrap().images.len();
                println!("CHILD:opened {n}");
            }
            (_, other) => println!("CHILD:unexpected {other:?}"),
        }
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.redb");
    let backend = RedbBackend::open(&path).await.unwrap();
    backend
        .put(Content::new("{\"rootfs\":{}}").unwrap().into_data())
        .await
        .unwrap();

    let child = spawn_child(TEST, "refused", &path);
    let report = tokio::task::spawn_blocking(move || child_report(child))
        .await
        .unwrap();
    assert_eq!(report.len(), 4, "{report:?}");
    assert_eq!(report[0], "locked", "{report:?}");
    assert_eq!(report[1], "redb");
    assert_eq!(report[2], path.display().to_string());
    let holder = &report[3];
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "holder {holder:?} does not name this process"
    );

    // Once this process lets go, the other one opens the file and sees what
    // was written.
    drop(backend);
    let child = spawn_child(TEST, "opens", &path);
    let report = tokio::task::spawn_blocking(move || child_report(child))
        .await
        .unwrap();
    assert_eq!(report, ["opened 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_process_second_open_is_locked_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let first = RedbBackend::open(&path).await.unwrap();
    let err = RedbBackend::open(&path).await.unwrap_err();
    match &err {
        Error::Locked {
            backend,
            resource,
            holder,
        } => {
            assert_eq!(*backend, "redb");
            assert_eq!(*resource, path.display().to_string());
            assert!(holder.contains("this process"), "{holder}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("db.redb"), "{err}");
    // The refused open left the holder's database and sidecar alone.
    assert!(first.load().await.unwrap().images.is_empty());
    let sidecar = dir.path().join("db.redb.lock-info");
    assert!(sidecar.exists());
    drop(first);
    assert!(!sidecar.exists());
    RedbBackend::open(&path).await.unwrap();
}

/// Batches committed by a process killed mid-write are whole or absent.
#[tokio::test(flavor = "multi_thread")]
async fn killed_writer_leaves_whole_batches_only() {
    const TEST: &str = "killed_writer_leaves_whole_batches_only";
    const PER_BATCH: usize = 500;
    let batch_key = MetadataKey::new("batch").unwrap();
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "writer");
        let backend = RedbBackend::open(&path).await.unwrap();
        let mut batch_no = 0u32;
        loop {
            let mut batch = WriteBatch::new();
            for i in 0..PER_BATCH {
                let c = Content::new(format!(
                    "{{\"rootfs\":{{}},\"batch\":{batch_no},\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(1000)
                ))
                .unwrap();
                let id = batch.put(c);
                batch.set_metadata(id, batch_key.clone(), batch_no.to_string());
                batch.set_summary(id, vec![7u8; 100]);
            }
            backend.write(batch).await.unwrap();
            println!("CHILD:committed {batch_no}");
            batch_no += 1;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = spawn_child(TEST, "writer", &path);
    let stdout = child.stdout.take().unwrap();
    let committed = tokio::task::spawn_blocking(move || {
        // Kill it while it is in the middle of writing further batches.
        let mut committed = 0;
        for line in BufReader::new(stdout).lines() {
            if line.unwrap().contains("CHILD:committed") {
                committed += 1;
                if committed == 3 {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        committed
    })
    .await
    .unwrap();
    assert_eq!(committed, 3, "the writer stopped early");

    let backend = RedbBackend::open(&path).await.unwrap();
    let snap = backend.load().await.unwrap();
    let mut per_batch = std::collections::BTreeMap::<String, usize>::new();
    for e in &snap.images {
        let b = e.metadata(&batch_key).expect("every image has its batch");
        *per_batch
            .entry(String::from_utf8(b.to_vec()).unwrap())
            .or_default() += 1;
        assert!(e.summary.is_some());
    }
    assert!(per_batch.len() >= 3, "{per_batch:?}");
    for (batch_no, n) in &per_batch {
        assert_eq!(*n, PER_BATCH, "batch {batch_no} is partial");
    }
    // Content is there for every listed image.
    for e in snap.images.iter().take(50) {
        backend.get(&e.id).await.unwrap();
    }
}
