//! Notes linking the two copies of a layer are honoured only when both
//! copies confirm them: a note changed below the cache must not make one
//! blob pass for a copy of an unrelated one.

// A panic is how a test fails, so the helpers outside `#[test]` functions
// unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod blob_common;

use blob_common::*;
use bytes::Bytes;
use imagecache_core::{BlobBackend as _, Digest, MetadataKey};
use imagecache_engine::blob::{Compression, LayerCompression, LayerInfo, media_type};

/// One gzip layer stored through the cache: (compressed, decompressed).
struct Stored {
    gz: Digest,
    tar: Digest,
    gz_len: u64,
    tar_len: u64,
}

async fn store_layer(fx: &Fixture, seed: u64) -> Stored {
    let tar = tarish(seed, 300_000);
    let gz = gzip(&tar);
    fx.cache
        .put_layer(&sha(&gz), body(gz.clone(), 50_000))
        .await
        .unwrap();
    Stored {
        gz: sha(&gz),
        tar: sha(&tar),
        gz_len: gz.len() as u64,
        tar_len: tar.len() as u64,
    }
}

/// Writes one note straight into the backend, as someone with access to the
/// cache's storage could.
async fn tamper(fx: &Fixture, digest: &Digest, key: &str, value: &Digest) {
    fx.backend
        .set_blob_notes(
            digest,
            vec![(
                MetadataKey::new(key).unwrap(),
                Bytes::from(value.to_string()),
            )],
        )
        .await
        .unwrap();
}

fn layer(digest: Digest, size: u64, media_type: &str) -> LayerInfo {
    LayerInfo {
        digest,
        size,
        media_type: media_type.to_owned(),
    }
}

async fn variant_ignores_a_note_its_target_does_not_confirm(fx: Fixture) {
    let (a, b) = (store_layer(&fx, 1).await, store_layer(&fx, 2).await);
    // The honest links work in both directions.
    let v = fx.cache.variant(&a.tar, Compression::Gzip).await.unwrap();
    assert_eq!(v.map(|i| i.digest), Some(a.gz));

    // A's decompressed copy now claims B's compressed blob, and A's
    // compressed blob claims B's decompressed one; B's notes still name B.
    tamper(&fx, &a.tar, "compressed", &b.gz).await;
    tamper(&fx, &a.gz, "decompressed", &b.tar).await;
    assert_eq!(
        fx.cache.variant(&a.tar, Compression::Gzip).await.unwrap(),
        None
    );
    assert_eq!(
        fx.cache.variant(&a.gz, Compression::None).await.unwrap(),
        None
    );
    // B is untouched and still linked.
    let v = fx.cache.variant(&b.tar, Compression::Gzip).await.unwrap();
    assert_eq!(v.map(|i| i.digest), Some(b.gz));
    let v = fx.cache.variant(&b.gz, Compression::None).await.unwrap();
    assert_eq!(v.map(|i| i.digest), Some(b.tar));
}

async fn substitute_ignores_a_note_its_target_does_not_confirm(fx: Fixture) {
    let (a, b) = (store_layer(&fx, 3).await, store_layer(&fx, 4).await);
    tamper(&fx, &a.tar, "compressed", &b.gz).await;
    tamper(&fx, &a.gz, "decompressed", &b.tar).await;
    let compressed = vec![layer(a.gz, a.gz_len, media_type::OCI_LAYER_GZIP)];
    let decompressed = vec![layer(a.tar, a.tar_len, media_type::OCI_LAYER)];
    let c = &fx.cache;
    assert_eq!(
        c.substitute(&compressed, LayerCompression::Decompress, false)
            .await
            .unwrap(),
        compressed
    );
    assert_eq!(
        c.substitute(&decompressed, LayerCompression::Compress, false)
            .await
            .unwrap(),
        decompressed
    );
    // B's own, consistent links are still followed.
    let b_decompressed = vec![layer(b.tar, b.tar_len, media_type::OCI_LAYER)];
    assert_eq!(
        c.substitute(&b_decompressed, LayerCompression::Compress, false)
            .await
            .unwrap(),
        vec![layer(b.gz, b.gz_len, media_type::OCI_LAYER_GZIP)]
    );
}

async fn a_note_naming_its_own_blob_is_ignored(fx: Fixture) {
    let a = store_layer(&fx, 5).await;
    // Pointing a blob at itself satisfies "the target names it back", so
    // it must be refused on its own.
    tamper(&fx, &a.tar, "compressed", &a.tar).await;
    tamper(&fx, &a.tar, "decompressed", &a.tar).await;
    assert_eq!(
        fx.cache.variant(&a.tar, Compression::Gzip).await.unwrap(),
        None
    );
    assert_eq!(
        fx.cache.variant(&a.tar, Compression::None).await.unwrap(),
        None
    );
    let plain = vec![layer(a.tar, a.tar_len, media_type::OCI_LAYER)];
    assert_eq!(
        fx.cache
            .substitute(&plain, LayerCompression::Compress, false)
            .await
            .unwrap(),
        plain
    );
}

async fn put_layer_does_not_adopt_an_unconfirmed_decompressed_copy(fx: Fixture) {
    let (a, b) = (store_layer(&fx, 6).await, store_layer(&fx, 7).await);
    tamper(&fx, &a.gz, "decompressed", &b.tar).await;
    // Putting A again without a diff ID must learn A's real decompressed
    // copy instead of taking B's from the note, and must not relink B.
    let gz = gzip(&tarish(6, 300_000));
    let put = fx.cache.put_layer(&a.gz, body(gz, 50_000)).await.unwrap();
    assert_eq!(put.decompressed.digest, a.tar);
    assert_eq!(
        fx.note(&a.gz, "decompressed").await,
        Some(a.tar.to_string())
    );
    assert_eq!(fx.note(&b.tar, "compressed").await, Some(b.gz.to_string()));
}

on_every_backend!(
    variant_ignores_a_note_its_target_does_not_confirm,
    substitute_ignores_a_note_its_target_does_not_confirm,
    a_note_naming_its_own_blob_is_ignored,
    put_layer_does_not_adopt_an_unconfirmed_decompressed_copy,
);
