//! Cases about manifests.

use super::*;

/// A manifest reads back with its media type and a note marking its kind.
pub async fn blob_cache_manifest_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_manifest_roundtrips";
    let (b, cache) = setup(&h, CASE).await;
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#);
    let digest = sha(&manifest);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    cache
        .put_manifest(&digest, manifest.clone(), Some(mt))
        .await
        .must("put_manifest");
    let got = cache
        .get_manifest(&digest)
        .await
        .must("get_manifest")
        .unwrap_or_else(|| panic!("{CASE}: get_manifest missed"));
    assert_eq!(got.data, manifest, "{CASE}: bytes");
    assert_eq!(got.media_type.as_deref(), Some(mt), "{CASE}: media type");
    assert_eq!(
        note(&b, &digest, "kind").await.as_deref(),
        Some("manifest"),
        "{CASE}: kind note"
    );
    assert_eq!(cache.counters().hits, 1, "{CASE}: one hit");
    Outcome::Passed
}

/// Empty, oversized and wrong-digest manifests are refused; nothing is stored.
pub async fn blob_cache_bad_manifest_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_manifest_stores_nothing";
    let (_fixture, backend) = crate::blobs(&h).await;
    let cache = BlobCache::with_options(
        Arc::clone(&backend),
        BlobCacheOptions::new().with_max_manifest_size(1024),
    )
    .must("BlobCache::with_options");
    let r = cache.put_manifest(&sha(b""), Bytes::new(), None).await;
    assert!(
        matches!(r, Err(Error::EmptyManifest { .. })),
        "{CASE}: empty, got {r:?}"
    );
    let r = cache.put_manifest(&sha(b"{}"), "{ }", None).await;
    assert!(
        matches!(r, Err(Error::DigestMismatch { .. })),
        "{CASE}: wrong digest, got {r:?}"
    );
    let big = noise(1025, 9);
    let r = cache.put_manifest(&sha(&big), big.clone(), None).await;
    assert!(
        matches!(r, Err(Error::TooLarge { limit: 1024, .. })),
        "{CASE}: too large, got {r:?}"
    );
    assert!(stored(&backend).await.is_empty(), "{CASE}: nothing stored");
    // A large blob is never handed out as a manifest.
    cache
        .put_bytes(&sha(&big), big.clone())
        .await
        .must("put of a large blob");
    assert_eq!(
        cache.get_manifest(&sha(&big)).await.must("get_manifest"),
        None,
        "{CASE}: large blob is no manifest"
    );
    Outcome::Passed
}
