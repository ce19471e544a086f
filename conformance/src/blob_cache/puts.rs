//! Cases about putting and reading blobs.

use super::*;

/// A streamed put reads back byte for byte through every read path, each counted as a hit.
pub async fn blob_cache_put_then_get_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_put_then_get_roundtrips";
    let (_b, cache) = setup(&h, CASE).await;
    let data = noise((2 << 20) + 11, 1);
    let digest = sha(&data);
    let info = cache.put(&digest, body(&data, 48 << 10)).await.must("put");
    assert_eq!(
        (info.digest, info.size),
        (digest, data.len() as u64),
        "{CASE}: put info"
    );
    assert_eq!(
        cache.has(&digest).await.must("has"),
        Some(data.len() as u64),
        "{CASE}: has"
    );

    let reader = cache
        .get(&digest)
        .await
        .must("get")
        .unwrap_or_else(|| panic!("{CASE}: get missed"));
    let mut streamed = Vec::new();
    let mut reader = reader;
    while let Some(chunk) = reader.next().await {
        streamed.extend_from_slice(&chunk.must("reading the verified stream"));
    }
    assert!(streamed == data, "{CASE}: streamed bytes differ");
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        Some(data.clone()),
        "{CASE}: get_bytes"
    );
    let mut copied: Vec<u8> = Vec::new();
    let copy = cache.copy_to(&digest, &mut copied).await.must("copy_to");
    assert_eq!(
        copy.map(|i| i.size),
        Some(data.len() as u64),
        "{CASE}: copy_to info"
    );
    assert!(copied == data, "{CASE}: copied bytes differ");
    let c = cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (3, 0, 0), "{CASE}: counters");
    Outcome::Passed
}

/// Lookups of an unknown digest are `None`, counted as misses, never errors.
pub async fn blob_cache_missing_is_a_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_missing_is_a_miss";
    let (_b, cache) = setup(&h, CASE).await;
    let digest = sha(b"never cached");
    assert_eq!(cache.has(&digest).await.must("has"), None, "{CASE}: has");
    assert!(
        cache.get(&digest).await.must("get").is_none(),
        "{CASE}: get"
    );
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: get_bytes"
    );
    assert_eq!(
        cache.get_manifest(&digest).await.must("get_manifest"),
        None,
        "{CASE}: get_manifest"
    );
    let mut sink: Vec<u8> = Vec::new();
    assert_eq!(
        cache.copy_to(&digest, &mut sink).await.must("copy_to"),
        None,
        "{CASE}: copy_to"
    );
    let c = cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 4, 0), "{CASE}: counters");
    Outcome::Passed
}

/// A body that does not hash to its digest is `DigestMismatch`; nothing is stored.
pub async fn blob_cache_wrong_digest_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_wrong_digest_stores_nothing";
    let (b, cache) = setup(&h, CASE).await;
    let data = noise(300_000, 2);
    let claimed = sha(b"another blob");
    match cache.put(&claimed, body(&data, 10_000)).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(
                (expected, actual),
                (claimed, sha(&data)),
                "{CASE}: digests in the error"
            );
        }
        other => panic!("{CASE}: expected DigestMismatch, got {other:?}"),
    }
    assert!(
        matches!(
            cache.put_bytes(&claimed, data.clone()).await,
            Err(Error::DigestMismatch { .. })
        ),
        "{CASE}: put_bytes must verify too"
    );
    assert_eq!(
        cache.has(&claimed).await.must("has"),
        None,
        "{CASE}: nothing under the claimed digest"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored at all");
    Outcome::Passed
}

/// A body shorter or longer than announced, or one that fails, is refused with a typed error; nothing is stored.
pub async fn blob_cache_short_or_failed_body_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_short_or_failed_body_stores_nothing";
    let (b, cache) = setup(&h, CASE).await;
    let data = noise(120_000, 3);
    let digest = sha(&data);
    let short = data.slice(..50_000);
    let r = cache
        .put_opts(
            &digest,
            body(&short, 4096),
            PutOptions::new().with_expected_size(120_000),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Truncated {
                expected: 120_000,
                actual: 50_000,
                ..
            })
        ),
        "{CASE}: a cut transfer must be Truncated, got {r:?}"
    );
    let r = cache
        .put_opts(
            &digest,
            body(&data, 4096),
            PutOptions::new().with_expected_size(119_999),
        )
        .await;
    assert!(
        matches!(r, Err(Error::TooLarge { .. })),
        "{CASE}: an overlong body must be TooLarge, got {r:?}"
    );
    let r = cache.put(&digest, failing_body(&short, 4096)).await;
    assert!(
        matches!(r, Err(Error::Source { .. })),
        "{CASE}: a failing body must be Source, got {r:?}"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored");
    Outcome::Passed
}

/// Wrong bytes offered under a cached digest never replace it.
pub async fn blob_cache_bad_put_keeps_stored_blob(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_put_keeps_stored_blob";
    let (b, cache) = setup(&h, CASE).await;
    let good = noise(64_000, 4);
    let digest = sha(&good);
    cache.put_bytes(&digest, good.clone()).await.must("put");
    let _ = cache.put(&digest, body(&noise(64_000, 5), 4096)).await;
    let _ = cache.put_bytes(&digest, noise(10, 6)).await;
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        Some(good),
        "{CASE}: stored bytes"
    );
    assert_eq!(stored(&b).await.len(), 1, "{CASE}: one blob");
    Outcome::Passed
}
