//! A redb blob put that runs out of space (here: the file size limit of
//! the process, which fails writes as a full disk does) frees what it
//! wrote and leaves the store usable in the same process: redb refuses
//! every transaction of a handle after an I/O failure, so the backend
//! reopens the file.
#![cfg(feature = "redb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use bytes::Bytes;
use imagecache_backends::redb::RedbBackend;
use imagecache_core::{BlobBackend, Digest};

const CHILD: &str = "IMAGECACHE_REDB_FULL_CHILD";

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn put(backend: &RedbBackend, data: Vec<u8>) -> imagecache_core::Result<()> {
    let digest = Digest::sha256(&data);
    let body: imagecache_core::ByteStream = Box::pin(futures::stream::iter(
        data.chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    backend.put_blob(&digest, body).await.map(|_| ())
}

#[test]
fn a_put_that_runs_out_of_space_leaves_the_store_usable() {
    if std::env::var_os(CHILD).is_none() {
        // The limit applies to the child only; a write past it fails with
        // EFBIG instead of killing the process (SIGXFSZ ignored).
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("sh")
            .args([
                "-c",
                "ulimit -S -f 20000 && trap '' XFSZ && exec \"$0\" --exact a_put_that_runs_out_of_space_leaves_the_store_usable --nocapture",
            ])
            .arg(exe)
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(status.success(), "the child run failed: {status}");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let backend = RedbBackend::open(&path).await.unwrap();
        put(&backend, noise(3 << 20, 1)).await.unwrap();
        let first = Digest::sha256(&noise(3 << 20, 1));
        let err = put(&backend, noise(40 << 20, 2)).await.unwrap_err();
        assert!(
            imagecache_core::error_text(&err).contains("File too large"),
            "{}",
            imagecache_core::error_text(&err)
        );
        // The same handle still reads: the blob stored before, and not the
        // one that failed.
        let listed = backend.list_blobs().await.unwrap();
        assert_eq!(listed.iter().map(|b| b.digest).collect::<Vec<_>>(), [first]);
        let mut read = Vec::new();
        let mut reader = backend.get_blob(&first).await.unwrap();
        while let Some(chunk) = futures::StreamExt::next(&mut reader.stream).await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, noise(3 << 20, 1));
        // Once there is room again, it writes too.
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE).unwrap();
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, hard, hard)
            .unwrap();
        put(&backend, noise(40 << 20, 2)).await.unwrap();
        assert_eq!(backend.list_blobs().await.unwrap().len(), 2);
    });
}
