//! Cases about compressed layers and their variants.

use super::*;

/// A gzip layer is kept compressed and decompressed, each noted against the other, with or without a diff ID.
pub async fn blob_cache_gzip_layer_kept_in_both_forms(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_gzip_layer_kept_in_both_forms";
    let (b, cache) = setup(&h, CASE).await;
    // With a diff ID and a media type: one pass.
    let tar = noise(400_000, 10);
    let gz = gzip(&tar);
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = cache
        .put_layer_opts(
            &digest,
            body(&gz, 30_000),
            LayerOptions::new()
                .with_media_type(media_type::OCI_LAYER_GZIP)
                .with_diff_id(diff),
        )
        .await
        .must("put_layer with a diff ID");
    assert_eq!(put.compression, Compression::Gzip, "{CASE}: compression");
    assert_eq!(
        put.compressed.map(|c| c.digest),
        Some(digest),
        "{CASE}: compressed digest"
    );
    assert_eq!(
        (put.decompressed.digest, put.decompressed.size),
        (diff, tar.len() as u64),
        "{CASE}: decompressed"
    );
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: decompressed bytes"
    );
    assert_eq!(
        cache.get_bytes(&digest).await.must("get compressed"),
        Some(gz),
        "{CASE}: compressed bytes"
    );
    assert_linked(&b, &digest, &diff, "gzip", CASE).await;

    // Without either: recognised by its magic, decompressed in a second pass.
    let tar = noise(250_000, 11);
    let gz = gzip(&tar);
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = cache
        .put_layer(&digest, body(&gz, 7000))
        .await
        .must("put_layer without a diff ID");
    assert_eq!(put.decompressed.digest, diff, "{CASE}: learned diff ID");
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: decompressed bytes"
    );
    assert_linked(&b, &digest, &diff, "gzip", CASE).await;
    assert_eq!(
        stored(&b).await.len(),
        4,
        "{CASE}: two layers, two forms each"
    );
    Outcome::Passed
}

/// The same for a zstd layer.
pub async fn blob_cache_zstd_layer_kept_in_both_forms(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_zstd_layer_kept_in_both_forms";
    let (b, cache) = setup(&h, CASE).await;
    let tar = noise(300_000, 12);
    let zst = zstd(&tar);
    let (digest, diff) = (sha(&zst), sha(&tar));
    let put = cache
        .put_layer_opts(
            &digest,
            body(&zst, 20_000),
            LayerOptions::new().with_media_type(media_type::OCI_LAYER_ZSTD),
        )
        .await
        .must("put_layer");
    assert_eq!(put.compression, Compression::Zstd, "{CASE}: compression");
    assert_eq!(put.decompressed.digest, diff, "{CASE}: decompressed digest");
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: bytes"
    );
    assert_linked(&b, &digest, &diff, "zstd", CASE).await;
    Outcome::Passed
}

/// Wrong digest, wrong diff ID, damaged data and unsupported compression are refused; nothing is stored.
pub async fn blob_cache_bad_layer_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_layer_stores_nothing";
    let (b, cache) = setup(&h, CASE).await;
    let tar = noise(200_000, 13);
    let gz = gzip(&tar);

    let r = cache
        .put_layer(&sha(b"not this layer"), body(&gz, 8192))
        .await;
    assert!(
        matches!(r, Err(Error::DigestMismatch { .. })),
        "{CASE}: wrong digest, got {r:?}"
    );

    let wrong_diff = sha(b"another tar");
    let r = cache
        .put_layer_opts(
            &sha(&gz),
            body(&gz, 8192),
            LayerOptions::new().with_diff_id(wrong_diff),
        )
        .await;
    assert!(
        matches!(r, Err(Error::DecompressedMismatch { expected, .. }) if expected == wrong_diff),
        "{CASE}: wrong diff ID, got {r:?}"
    );

    let mut damaged = gz.to_vec();
    let n = damaged.len();
    damaged[n - 8] ^= 0xff; // the CRC-32 in the trailer
    let damaged = Bytes::from(damaged);
    let r = cache.put_layer(&sha(&damaged), body(&damaged, 8192)).await;
    assert!(
        matches!(r, Err(Error::Decompress { .. })),
        "{CASE}: bad checksum, got {r:?}"
    );

    let r = cache
        .put_layer_opts(
            &sha(&tar),
            body(&tar, 8192),
            LayerOptions::new().with_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
        )
        .await;
    assert!(
        matches!(r, Err(Error::UnsupportedCompression { .. })),
        "{CASE}: bzip2, got {r:?}"
    );
    let xz: Bytes = [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &tar[..1000]]
        .concat()
        .into();
    let r = cache.put_layer(&sha(&xz), body(&xz, 100)).await;
    assert!(
        matches!(r, Err(Error::UnsupportedCompression { .. })),
        "{CASE}: xz, got {r:?}"
    );

    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored");
    Outcome::Passed
}

fn layer(digest: Digest, size: usize, media_type: &str) -> LayerInfo {
    LayerInfo {
        digest,
        size: size as u64,
        media_type: media_type.to_owned(),
    }
}

/// Layer lists switch to the cached variant on request, keep their layers when signed or preserved.
pub async fn blob_cache_substitution_follows_mode(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_substitution_follows_mode";
    let (_b, cache) = setup(&h, CASE).await;
    let (tar1, tar2) = (noise(100_000, 14), noise(80_000, 15));
    let (gz1, gz2) = (gzip(&tar1), gzip(&tar2));
    cache
        .put_layer(&sha(&gz1), body(&gz1, 16_384))
        .await
        .must("put_layer 1");
    cache
        .put_layer(&sha(&gz2), body(&gz2, 16_384))
        .await
        .must("put_layer 2");
    let elsewhere = layer(sha(b"not cached"), 3, media_type::OCI_LAYER_GZIP);
    let compressed = vec![
        layer(sha(&gz1), gz1.len(), media_type::OCI_LAYER_GZIP),
        layer(sha(&gz2), gz2.len(), media_type::DOCKER_LAYER_GZIP),
        elsewhere.clone(),
    ];
    let decompressed = vec![
        layer(sha(&tar1), tar1.len(), media_type::OCI_LAYER),
        layer(sha(&tar2), tar2.len(), media_type::DOCKER_LAYER),
        elsewhere,
    ];
    let sub = |layers: Vec<LayerInfo>, mode, signed| {
        let cache = cache.clone();
        async move {
            cache
                .substitute(&layers, mode, signed)
                .await
                .must("substitute")
        }
    };
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Decompress, false).await,
        decompressed,
        "{CASE}: decompress"
    );
    assert_eq!(
        sub(decompressed.clone(), LayerCompression::Compress, false).await,
        compressed,
        "{CASE}: compress"
    );
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Preserve, false).await,
        compressed,
        "{CASE}: preserve"
    );
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Decompress, true).await,
        compressed,
        "{CASE}: signed"
    );
    assert_eq!(
        sub(decompressed.clone(), LayerCompression::Compress, true).await,
        decompressed,
        "{CASE}: signed"
    );
    Outcome::Passed
}
