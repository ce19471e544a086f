//! Cases about concurrent puts, second handles and stats.

use super::*;

/// Eight racing puts of one digest leave one whole blob; racing readers never see part of it.
pub async fn blob_cache_concurrent_puts_are_idempotent(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_concurrent_puts_are_idempotent";
    let (b, cache) = setup(&h, CASE).await;
    let data = noise((1 << 20) + 77, 16);
    let digest = sha(&data);
    let puts: Vec<_> = (0..8)
        .map(|i| {
            let (cache, data) = (cache.clone(), data.clone());
            tokio::spawn(async move { cache.put(&digest, body(&data, 8192 + i * 4096)).await })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, data) = (cache.clone(), data.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    if let Some(got) = cache.get_bytes(&digest).await.must("get_bytes") {
                        assert!(got == data, "{CASE}: a reader saw a partial or wrong blob");
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for p in puts {
        let info = p.await.must("put task").must("concurrent put");
        assert_eq!(
            info.size,
            data.len() as u64,
            "{CASE}: every put reports the size"
        );
    }
    for r in readers {
        r.await.must("reader task");
    }
    assert_eq!(
        stored(&b).await,
        vec![BlobInfo {
            digest,
            size: data.len() as u64
        }],
        "{CASE}: one whole blob"
    );
    assert_eq!(cache.counters().errors, 0, "{CASE}: no errors");
    Outcome::Passed
}

/// Blobs and their notes put through one handle are served by another.
pub async fn blob_cache_second_handle_sees_blobs(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_second_handle_sees_blobs";
    let (b, cache) = setup(&h, CASE).await;
    let Some(other) = b.reopen().await else {
        return Outcome::skipped(CASE, "hook reopen");
    };
    let tar = noise(150_000, 17);
    let tar_digest = sha(&tar);
    let gz = gzip(&tar);
    cache
        .put_layer(&sha(&gz), body(&gz, 10_000))
        .await
        .must("put_layer");
    let second = BlobCache::new(other).must("BlobCache over the second handle");
    assert_eq!(
        second.get_bytes(&tar_digest).await.must("get_bytes"),
        Some(tar),
        "{CASE}: decompressed copy"
    );
    let variant = second
        .variant(&sha(&gz), Compression::None)
        .await
        .must("variant");
    assert_eq!(
        variant.map(|v| v.digest),
        Some(tar_digest),
        "{CASE}: note seen by the second handle"
    );
    Outcome::Passed
}

/// Stats count blobs and bytes; clear removes them all and says how many.
pub async fn blob_cache_stats_and_clear(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_stats_and_clear";
    let (b, cache) = setup(&h, CASE).await;
    let sizes = [1000usize, 2000, 3000];
    for (i, size) in sizes.iter().enumerate() {
        let data = noise(*size, 20 + i as u64);
        cache.put_bytes(&sha(&data), data).await.must("put");
    }
    let stats = cache.stats().await.must("stats");
    assert_eq!((stats.blobs, stats.bytes), (3, 6000), "{CASE}: stats");
    let cleared = cache.clear().await.must("clear");
    assert_eq!((cleared.blobs, cleared.bytes), (3, 6000), "{CASE}: cleared");
    assert!(stored(&b).await.is_empty(), "{CASE}: empty after clear");
    let stats = cache.stats().await.must("stats after clear");
    assert_eq!(
        (stats.blobs, stats.bytes),
        (0, 0),
        "{CASE}: stats after clear"
    );
    Outcome::Passed
}
