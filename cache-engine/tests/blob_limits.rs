//! Decompression of layers is bounded: a small compressed layer that
//! expands past the cache's size or ratio limit is refused part way, and
//! nothing of it is left stored, not even a temp file.

// A panic is how a test fails, so the helpers outside `#[test]` functions
// unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blob_common;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use blob_common::*;
use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::BlobBackend;
use imagecache_engine::blob::{
    BlobCache, BlobCacheOptions, DecompressionLimit, Error, LayerOptions, media_type,
};

/// `len` zeros, gzipped a MiB at a time: a small gzip bomb (about 1000:1).
fn gzip_bomb(len: usize) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        enc.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    Bytes::from(enc.finish().unwrap())
}

/// Limits low enough for a 16 MiB bomb to trip them at once.
fn small_limits() -> BlobCacheOptions {
    BlobCacheOptions::new()
        .with_decompression_ratio_floor(1 << 20)
        .with_max_decompression_ratio(100)
}

/// A cache over a directory backend in a fresh temporary directory.
async fn fs_cache(
    options: BlobCacheOptions,
) -> (tempfile::TempDir, Arc<dyn BlobBackend>, BlobCache) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn BlobBackend> = Arc::new(FsBackend::open(dir.path()).await.unwrap());
    let cache = BlobCache::with_options(Arc::clone(&backend), options).unwrap();
    (dir, backend, cache)
}

/// Every file in the blob area of the directory store at `root`: blobs,
/// notes and temp files alike (the store's lock file lives outside it).
fn files_below(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let blobs = root.join("imagecache").join("blobs");
    let mut todo: Vec<_> = blobs.exists().then_some(blobs).into_iter().collect();
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_over_the_ratio_is_refused_and_nothing_is_stored() {
    let bomb = gzip_bomb(16 << 20);
    let (digest, diff) = (sha(&bomb), sha(&vec![0u8; 16 << 20]));
    let (dir, backend, cache) = fs_cache(small_limits()).await;
    let started = Instant::now();
    // With the diff ID both copies are written in one pass; without it the
    // compressed copy is written while the decompressed digest is learned.
    for opts in [
        LayerOptions::new()
            .with_media_type(media_type::OCI_LAYER_GZIP)
            .with_diff_id(diff),
        LayerOptions::new(),
    ] {
        let err = cache
            .put_layer_opts(&digest, body(bomb.clone(), 64 << 10), opts)
            .await
            .unwrap_err();
        match &err {
            Error::DecompressionBomb {
                digest: d,
                compressed,
                decompressed,
                limit: DecompressionLimit::Ratio(100),
            } => {
                assert_eq!(*d, digest);
                assert!(*decompressed > 1 << 20, "{err}");
                assert!(*decompressed > compressed * 100, "{err}");
                // Stopped near the limit, not after expanding everything.
                assert!(*decompressed < 8 << 20, "{err}");
            }
            other => panic!("expected a ratio bomb, got {other:?}"),
        }
        assert!(err.is_bad_input());
        assert!(backend.list_blobs().await.unwrap().is_empty());
        assert_eq!(files_below(dir.path()), Vec::<std::path::PathBuf>::new());
    }
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_bomb_over_the_ratio_is_refused() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = zstd(&zeros);
    let fx = Fixture::memory_with(small_limits()).await;
    let err = fx
        .cache
        .put_layer_opts(
            &sha(&bomb),
            body(bomb.clone(), 64 << 10),
            LayerOptions::new().with_diff_id(sha(&zeros)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DecompressionBomb {
                limit: DecompressionLimit::Ratio(100),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(fx.stored().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_over_the_size_limit_is_refused() {
    // Random data hardly compresses, so only the absolute cap can stop it.
    let tar = data(1, 3 << 20);
    let gz = gzip(&tar);
    let options = BlobCacheOptions::new().with_max_decompressed_size(2 << 20);
    let (dir, backend, cache) = fs_cache(options).await;
    let err = cache
        .put_layer(&sha(&gz), body(gz.clone(), 64 << 10))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DecompressionBomb {
                limit: DecompressionLimit::Size(2097152),
                decompressed,
                ..
            } if decompressed > 2 << 20 && decompressed <= 3 << 20
        ),
        "{err:?}"
    );
    assert!(backend.list_blobs().await.unwrap().is_empty());
    assert_eq!(files_below(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_compressing_layer_under_the_limits_is_stored() {
    // Mostly zeros with a random byte every 24: compresses well (as a
    // text-heavy layer does) but well under 100:1.
    let noise = data(2, 1 << 20);
    let tar: Bytes = (0..(4usize << 20))
        .map(|i| {
            if i % 24 == 0 {
                noise[i % noise.len()]
            } else {
                0
            }
        })
        .collect::<Vec<u8>>()
        .into();
    let gz = gzip(&tar);
    let ratio = tar.len() / gz.len();
    assert!((5..100).contains(&ratio), "ratio {ratio}:1");
    let (digest, diff) = (sha(&gz), sha(&tar));
    for options in [small_limits(), BlobCacheOptions::default()] {
        let (_dir, _backend, cache) = fs_cache(options).await;
        let put = cache
            .put_layer(&digest, body(gz.clone(), 64 << 10))
            .await
            .unwrap();
        assert_eq!(put.decompressed.digest, diff);
        assert_eq!(cache.get_bytes(&diff).await.unwrap(), Some(tar.clone()));
    }
    // The defaults never refuse a small layer by ratio, bomb or not.
    let defaults = BlobCacheOptions::default();
    assert_eq!(defaults.max_decompressed_size, 64 << 30);
    assert_eq!(defaults.max_decompression_ratio, 100);
    assert_eq!(defaults.decompression_ratio_floor, 64 << 20);
    let bomb = gzip_bomb(8 << 20);
    let (_dir, _backend, cache) = fs_cache(defaults).await;
    cache
        .put_layer(&sha(&bomb), body(bomb, 64 << 10))
        .await
        .unwrap();
}
