//! Two processes, four tasks each, on one Docker-layout directory: creating
//! images, re-parenting them and deleting some, all at once. Afterwards a
//! fresh open must show every surviving image with exactly the parent its
//! writer set last, and children that agree with the parents.
//!
//! The test re-runs its own binary twice as the two writer processes; each
//! prints the images it kept and their parents, which the parent process
//! checks against the store.

// A panic is how a test (and its writer processes) fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::ImageId;
use imagecache_store::{CreateOptions, Store};

const ROLE: &str = "IMAGECACHE_TWO_PROCESS_ROLE";
const DIR: &str = "IMAGECACHE_TWO_PROCESS_DIR";

fn config(n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","comment":"image {n}","rootfs":{{"type":"layers","diff_ids":["sha256:{:064x}"]}}}}"#,
        n + 1
    ))
}

async fn open(dir: &str) -> Store {
    Store::open(Arc::new(FsBackend::open(dir).await.expect("open fs")))
        .await
        .expect("open store")
}

/// One writer process: four tasks; prints `id parent` for every image it kept.
async fn writer(dir: &str, process: usize) {
    let store = open(dir).await;
    let base = ImageId::of_config(&config(0));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut kept: BTreeMap<ImageId, Option<ImageId>> = BTreeMap::new();
            let mut chain: Vec<ImageId> = Vec::new();
            for i in 0..12 {
                let n = 1000 * (process + 1) + 100 * task + i;
                let parent = chain.last().copied().unwrap_or(base);
                let id = store
                    .create_with(config(n), CreateOptions::new().with_parent(parent))
                    .await
                    .expect("create");
                kept.insert(id, Some(parent));
                chain.push(id);
                if i % 3 == 2 {
                    store.set_parent(&id, &base).await.expect("re-parent");
                    kept.insert(id, Some(base));
                }
                if i % 4 == 3 {
                    // Delete the oldest image of the chain: its children
                    // (all this task's) lose their parent link.
                    let victim = chain.remove(0);
                    store.delete(&victim).await.expect("delete");
                    kept.remove(&victim);
                    for p in kept.values_mut() {
                        if *p == Some(victim) {
                            *p = None;
                        }
                    }
                }
            }
            kept
        }));
    }
    for t in tasks {
        for (id, parent) in t.await.expect("task") {
            let parent = parent.map_or_else(|| "-".to_owned(), |p| p.to_string());
            println!("KEPT {id} {parent}");
        }
    }
}

#[test]
fn writer_process() {
    // Only does something when started by `two_processes_lose_no_parent_link`.
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(writer(&dir, role.parse().expect("role")));
}

#[test]
fn two_processes_lose_no_parent_link() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let base = rt.block_on(async { open(&path).await.create(config(0)).await.expect("base") });

    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..2)
        .map(|role| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "writer_process",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(ROLE, role.to_string())
                .env(DIR, &path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    let mut expected: BTreeMap<ImageId, Option<ImageId>> = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().expect("writer");
        assert!(
            out.status.success(),
            "writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("KEPT ") {
                let (id, parent) = rest.split_once(' ').expect("two fields");
                let parent = (parent != "-").then(|| ImageId::parse(parent).expect("parent"));
                expected.insert(ImageId::parse(id).expect("id"), parent);
            }
        }
    }
    assert!(
        expected.len() > 40,
        "the writers kept {} images",
        expected.len()
    );

    rt.block_on(async {
        let store = open(&path).await;
        assert!(store.report().problems.is_empty(), "{:?}", store.report());
        for (id, parent) in &expected {
            assert!(store.contains(id), "{id} was lost");
            assert_eq!(store.parent(id).expect("parent"), *parent, "parent of {id}");
        }
        for id in store.ids() {
            if let Some(p) = store.parent(&id).expect("parent") {
                assert!(store.contains(&p), "{id} names a parent {p} that is gone");
                assert!(store.children(&p).contains(&id));
            }
            for c in store.children(&id) {
                assert_eq!(store.parent(&c).expect("parent"), Some(id));
            }
        }
        assert!(store.children(&base).len() >= 8);
    });
}
