//! Cases about blobs damaged in storage.

use super::*;

/// Damaged bytes are a miss, an error count and an eviction; a streaming read ends with `Corrupt`.
pub async fn blob_cache_corrupt_blob_is_an_evicted_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_corrupt_blob_is_an_evicted_miss";
    let (b, cache) = setup(&h, CASE).await;
    let data = noise(200_000, 7);
    let digest = sha(&data);
    cache.put_bytes(&digest, data.clone()).await.must("put");
    let mut damaged = data.to_vec();
    damaged[123_456] ^= 0x20;
    if !b.corrupt_blob(&digest, Bytes::from(damaged.clone())).await {
        return Outcome::skipped(CASE, "hook corrupt_blob");
    }
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: corrupt is a miss"
    );
    let c = cache.counters();
    assert_eq!(
        (c.hits, c.misses, c.errors),
        (0, 1, 1),
        "{CASE}: counters after get_bytes"
    );
    assert_eq!(
        cache.has(&digest).await.must("has"),
        None,
        "{CASE}: evicted"
    );

    // Again, read as a stream: the verdict is the stream's last item.
    cache
        .put_bytes(&digest, data.clone())
        .await
        .must("put again");
    assert!(
        b.corrupt_blob(&digest, Bytes::from(damaged)).await,
        "{CASE}: hook"
    );
    let mut reader = cache
        .get(&digest)
        .await
        .must("get")
        .unwrap_or_else(|| panic!("{CASE}: get missed"));
    let mut last = None;
    while let Some(item) = reader.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(Error::Corrupt { digest: d, .. })) if d == digest),
        "{CASE}: the stream must end with Corrupt, got {last:?}"
    );
    assert_eq!(
        cache.counters().errors,
        2,
        "{CASE}: errors after the stream"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: evicted again");
    Outcome::Passed
}

/// A blob shorter than its recorded size is absent and evicted.
pub async fn blob_cache_truncated_blob_is_an_evicted_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_truncated_blob_is_an_evicted_miss";
    let (b, cache) = setup(&h, CASE).await;
    let data = noise(90_000, 8);
    let digest = sha(&data);
    cache.put_bytes(&digest, data.clone()).await.must("put");
    if !b.corrupt_blob(&digest, data.slice(..40_000)).await {
        return Outcome::skipped(CASE, "hook corrupt_blob");
    }
    assert_eq!(
        cache.has(&digest).await.must("has"),
        None,
        "{CASE}: truncated is absent"
    );
    assert_eq!(cache.counters().errors, 1, "{CASE}: counted");
    assert!(stored(&b).await.is_empty(), "{CASE}: evicted");
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: a miss"
    );

    // Whole bytes whose size note was damaged instead: the bytes decide,
    // so the blob stays and its note is set right.
    cache
        .put_bytes(&digest, data.clone())
        .await
        .must("put again");
    if !b
        .corrupt_note(&digest, "size", Bytes::from_static(b"40000"))
        .await
    {
        return Outcome::Passed;
    }
    assert_eq!(
        cache.has(&digest).await.must("has"),
        Some(data.len() as u64),
        "{CASE}: a whole blob with a damaged size note is present"
    );
    assert_eq!(
        stored(&b).await.len(),
        1,
        "{CASE}: not evicted for a bad note"
    );
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        Some(data),
        "{CASE}: and reads back whole"
    );
    Outcome::Passed
}
