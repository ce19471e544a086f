//! Behaviour of the blob cache over the in-memory and the directory backends.
//!
//! Each case is an `async fn(Fixture)`; the macro at the bottom runs every
//! case once per backend, so `cargo test corrupt` selects a case on both.

// A panic is how a test fails, so the helpers outside `#[test]` functions
// unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod blob_common;

use std::sync::Arc;

use blob_common::*;
use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{BlobBackend as _, Digest};
use imagecache_engine::blob::{
    BlobCache, BlobCacheOptions, Compression, Error, LayerCompression, LayerInfo, LayerOptions,
    PutOptions, media_type,
};

async fn put_stream_then_read_back(fx: Fixture) {
    let data = data(1, (3 << 20) + 17);
    let digest = sha(&data);
    let info = fx
        .cache
        .put(&digest, body(data.clone(), 64 << 10))
        .await
        .unwrap();
    assert_eq!((info.digest, info.size), (digest, data.len() as u64));
    assert_eq!(
        fx.cache.has(&digest).await.unwrap(),
        Some(data.len() as u64)
    );

    let reader = fx.cache.get(&digest).await.unwrap().expect("a hit");
    assert_eq!(reader.size(), data.len() as u64);
    let streamed: Vec<u8> = drain(reader)
        .await
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(streamed, data);

    assert_eq!(
        fx.cache.get_bytes(&digest).await.unwrap(),
        Some(data.clone())
    );
    let mut copied = Vec::new();
    let copy = fx.cache.copy_to(&digest, &mut copied).await.unwrap();
    assert_eq!(copy.map(|i| i.size), Some(data.len() as u64));
    assert_eq!(copied, data);

    let c = fx.cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (3, 0, 0));
    assert_eq!(fx.note(&digest, "size").await, Some(data.len().to_string()));
}

async fn empty_blob_roundtrips(fx: Fixture) {
    let digest = sha(b"");
    let info = fx.cache.put_bytes(&digest, Bytes::new()).await.unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(
        fx.cache.get_bytes(&digest).await.unwrap(),
        Some(Bytes::new())
    );
}

async fn missing_blob_is_a_miss(fx: Fixture) {
    let digest = sha(b"never stored");
    assert_eq!(fx.cache.has(&digest).await.unwrap(), None);
    assert!(fx.cache.get(&digest).await.unwrap().is_none());
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), None);
    assert_eq!(fx.cache.get_manifest(&digest).await.unwrap(), None);
    let mut sink = Vec::new();
    assert_eq!(fx.cache.copy_to(&digest, &mut sink).await.unwrap(), None);
    let c = fx.cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 4, 0));
}

async fn wrong_digest_stores_nothing(fx: Fixture) {
    let data = data(2, 200_000);
    let claimed = sha(b"something else");
    let err = fx
        .cache
        .put(&claimed, body(data.clone(), 8192))
        .await
        .unwrap_err();
    match err {
        Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, sha(&data));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(matches!(
        fx.cache.put_bytes(&claimed, data.clone()).await,
        Err(Error::DigestMismatch { .. })
    ));
    assert_eq!(fx.cache.has(&claimed).await.unwrap(), None);
    assert_eq!(fx.cache.has(&sha(&data)).await.unwrap(), None);
    assert!(fx.stored().await.is_empty());
}

async fn truncated_body_stores_nothing(fx: Fixture) {
    let data = data(3, 100_000);
    let digest = sha(&data);
    // The body is whole but the caller announced more: the transfer was cut.
    let err = fx
        .cache
        .put_opts(
            &digest,
            body(data.slice(..60_000), 4096),
            PutOptions::new().with_expected_size(100_000),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 100_000,
                actual: 60_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Longer than announced is refused as soon as the limit is crossed.
    let err = fx
        .cache
        .put_opts(
            &digest,
            body(data.clone(), 4096),
            PutOptions::new().with_expected_size(99_999),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 99_999, .. }),
        "{err:?}"
    );
    // A short body without an announced size fails on its digest instead.
    let err = fx
        .cache
        .put(&digest, body(data.slice(..60_000), 4096))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(fx.stored().await.is_empty());
}

async fn failing_body_stores_nothing(fx: Fixture) {
    let data = data(4, 300_000);
    let digest = sha(&data);
    let err = fx
        .cache
        .put(&digest, failing_body(data.slice(..100_000), 10_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Source { digest: d, .. } if d == digest),
        "{err:?}"
    );
    assert!(err.is_bad_input());
    assert!(std::error::Error::source(&err).is_some());
    assert!(fx.stored().await.is_empty());
}

async fn bad_put_leaves_stored_blob_unchanged(fx: Fixture) {
    let good = data(5, 50_000);
    let digest = sha(&good);
    fx.cache.put_bytes(&digest, good.clone()).await.unwrap();
    // Wrong bytes offered under a digest already cached never replace it.
    let wrong = data(6, 50_000);
    let _ = fx.cache.put(&digest, body(wrong, 4096)).await;
    let other = data(7, 10);
    assert!(fx.cache.put_bytes(&sha(b"x"), other).await.is_err());
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(good));
    assert_eq!(fx.stored().await.len(), 1);
}

async fn corrupt_blob_is_a_counted_miss_and_evicted(fx: Fixture) {
    let data = data(8, 70_000);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    // Same size, different bytes: only visible once the bytes are read.
    let mut damaged = data.to_vec();
    damaged[35_000] ^= 0x40;
    fx.corrupt(&digest, damaged).await;
    assert_eq!(fx.cache.has(&digest).await.unwrap(), Some(70_000));

    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), None);
    let c = fx.cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 1, 1));
    assert_eq!(fx.cache.has(&digest).await.unwrap(), None, "evicted");
    assert!(fx.stored().await.is_empty());
    // The cache heals: the same blob can be cached again.
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(data));
}

async fn corrupt_blob_ends_the_stream_with_an_error(fx: Fixture) {
    let data = data(9, (2 << 20) + 5);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    let mut damaged = data.to_vec();
    damaged[10] ^= 1;
    fx.corrupt(&digest, damaged).await;

    let reader = fx.cache.get(&digest).await.unwrap().expect("opens");
    let items = drain(reader).await;
    let (last, rest) = items.split_last().unwrap();
    assert!(rest.iter().all(Result::is_ok));
    match last {
        Err(Error::Corrupt { digest: d, reason }) => {
            assert_eq!(*d, digest);
            assert!(reason.contains("hash"), "{reason}");
        }
        other => panic!("expected Corrupt at the end, got {other:?}"),
    }
    let c = fx.cache.counters();
    assert_eq!((c.hits, c.errors), (1, 1));
    assert_eq!(fx.cache.has(&digest).await.unwrap(), None, "evicted");
}

async fn corrupt_blob_copy_is_a_miss(fx: Fixture) {
    let data = data(10, 90_000);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    fx.corrupt(&digest, blob_common::data(11, 90_000)).await;
    let mut dest = Vec::new();
    assert_eq!(fx.cache.copy_to(&digest, &mut dest).await.unwrap(), None);
    let c = fx.cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 1, 1));
    assert!(fx.stored().await.is_empty());
}

async fn truncated_cached_blob_is_a_miss(fx: Fixture) {
    let data = data(12, 80_000);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    fx.corrupt(&digest, data.slice(..30_000)).await;
    // The size noted at put time gives it away; the bytes confirm it.
    assert_eq!(fx.cache.has(&digest).await.unwrap(), None);
    assert_eq!(fx.cache.counters().errors, 1);
    assert!(fx.stored().await.is_empty(), "evicted");
    assert!(fx.cache.get(&digest).await.unwrap().is_none());
}

async fn wrong_size_note_keeps_a_whole_blob(fx: Fixture) {
    let data = data(14, 80_000);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    // The note is what was damaged: the blob is whole and must stay.
    let key = imagecache_core::MetadataKey::new("size").unwrap();
    fx.backend
        .set_blob_notes(&digest, vec![(key, Bytes::from_static(b"39"))])
        .await
        .unwrap();
    assert_eq!(fx.cache.has(&digest).await.unwrap(), Some(80_000));
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(data));
    assert_eq!(fx.stored().await.len(), 1, "not evicted");
    assert_eq!(fx.note(&digest, "size").await.as_deref(), Some("80000"));
}

async fn truncation_without_size_note_is_caught_when_read(fx: Fixture) {
    let data = data(13, 80_000);
    let digest = sha(&data);
    // Stored by another tool: no size note.
    let chunk = futures::stream::iter([Ok(data.clone())]);
    fx.backend.put_blob(&digest, Box::pin(chunk)).await.unwrap();
    fx.corrupt(&digest, data.slice(..30_000)).await;
    assert_eq!(fx.cache.has(&digest).await.unwrap(), Some(30_000));
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), None);
    assert_eq!(fx.cache.counters().errors, 1);
    assert!(fx.stored().await.is_empty(), "evicted");
}

async fn manifest_roundtrips_with_kind_and_media_type(fx: Fixture) {
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"layers":[]}"#);
    let digest = sha(&manifest);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    fx.cache
        .put_manifest(&digest, manifest.clone(), Some(mt))
        .await
        .unwrap();
    let got = fx.cache.get_manifest(&digest).await.unwrap().unwrap();
    assert_eq!(got.data, manifest);
    assert_eq!(got.media_type.as_deref(), Some(mt));
    assert_eq!(got.digest, digest);
    assert_eq!(fx.note(&digest, "kind").await.as_deref(), Some("manifest"));
    assert_eq!(fx.cache.counters().hits, 1);

    let plain = Bytes::from_static(br#"{"schemaVersion":2}"#);
    fx.cache
        .put_manifest(&sha(&plain), plain.clone(), None)
        .await
        .unwrap();
    let got = fx.cache.get_manifest(&sha(&plain)).await.unwrap().unwrap();
    assert_eq!((got.data, got.media_type), (plain, None));
}

async fn bad_manifests_store_nothing(fx: Fixture) {
    let err = fx
        .cache
        .put_manifest(&sha(b""), Bytes::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EmptyManifest { .. }), "{err:?}");
    let err = fx
        .cache
        .put_manifest(&sha(b"{}"), "{ }", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let big = data(14, (4 << 20) + 1);
    let err = fx
        .cache
        .put_manifest(&sha(&big), big.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 4 << 20),
        "{err:?}"
    );
    assert!(fx.stored().await.is_empty());
    // A large blob is not returned as a manifest, but stays a blob.
    fx.cache.put_bytes(&sha(&big), big.clone()).await.unwrap();
    assert_eq!(fx.cache.get_manifest(&sha(&big)).await.unwrap(), None);
    assert_eq!(fx.cache.get_bytes(&sha(&big)).await.unwrap(), Some(big));
}

async fn assert_layer_notes(fx: &Fixture, compressed: &Digest, diff: &Digest, compression: &str) {
    assert_eq!(
        fx.note(compressed, "decompressed").await,
        Some(diff.to_string())
    );
    assert_eq!(
        fx.note(diff, "compressed").await,
        Some(compressed.to_string())
    );
    assert_eq!(
        fx.note(compressed, "compression").await.as_deref(),
        Some(compression)
    );
    assert_eq!(fx.note(compressed, "kind").await.as_deref(), Some("layer"));
    assert_eq!(fx.note(diff, "kind").await.as_deref(), Some("layer"));
}

async fn gzip_layer_is_kept_in_both_forms(fx: Fixture) {
    let tar = tarish(20, (3 << 20) + 999);
    let gz = gzip(&tar);
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = fx
        .cache
        .put_layer_opts(
            &digest,
            body(gz.clone(), 100_000),
            LayerOptions::new()
                .with_media_type(media_type::OCI_LAYER_GZIP)
                .with_diff_id(diff),
        )
        .await
        .unwrap();
    assert_eq!(put.compression, Compression::Gzip);
    assert_eq!(
        put.compressed.map(|c| (c.digest, c.size)),
        Some((digest, gz.len() as u64))
    );
    assert_eq!(
        (put.decompressed.digest, put.decompressed.size),
        (diff, tar.len() as u64)
    );
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(gz));
    assert_eq!(fx.cache.get_bytes(&diff).await.unwrap(), Some(tar));
    assert_layer_notes(&fx, &digest, &diff, "gzip").await;
    assert_eq!(
        fx.note(&digest, "media-type").await.as_deref(),
        Some(media_type::OCI_LAYER_GZIP)
    );
    let v = fx.cache.variant(&digest, Compression::None).await.unwrap();
    assert_eq!(v.map(|i| i.digest), Some(diff));
    let v = fx.cache.variant(&diff, Compression::Gzip).await.unwrap();
    assert_eq!(v.map(|i| i.digest), Some(digest));
}

async fn gzip_layer_without_diff_id_is_recognised_and_kept(fx: Fixture) {
    // Several gzip members back to back, as parallel compressors write them.
    let (a, b) = (tarish(21, 700_000), tarish(22, 500_000));
    let gz: Bytes = [gzip(&a), gzip(&b)].concat().into();
    let tar: Bytes = [a, b].concat().into();
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = fx
        .cache
        .put_layer(&digest, body(gz.clone(), 3000))
        .await
        .unwrap();
    assert_eq!(put.compression, Compression::Gzip);
    assert_eq!(put.decompressed.digest, diff);
    assert_eq!(fx.cache.get_bytes(&diff).await.unwrap(), Some(tar));
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(gz.clone()));
    assert_layer_notes(&fx, &digest, &diff, "gzip").await;

    // Putting it again finds both forms cached and reads nothing.
    let again = fx
        .cache
        .put_layer(&digest, failing_body(gz.slice(..10), 10))
        .await
        .unwrap();
    assert_eq!(again, put);
    assert_eq!(fx.stored().await.len(), 2);
}

async fn zstd_layer_is_kept_in_both_forms(fx: Fixture) {
    let tar = tarish(23, 1_500_000);
    let zst = zstd(&tar);
    let (digest, diff) = (sha(&zst), sha(&tar));
    let put = fx
        .cache
        .put_layer_opts(
            &digest,
            body(zst.clone(), 65_536),
            LayerOptions::new().with_media_type(media_type::OCI_LAYER_ZSTD),
        )
        .await
        .unwrap();
    assert_eq!(put.compression, Compression::Zstd);
    assert_eq!(put.decompressed.digest, diff);
    assert_eq!(fx.cache.get_bytes(&diff).await.unwrap(), Some(tar));
    assert_layer_notes(&fx, &digest, &diff, "zstd").await;
}

async fn uncompressed_layer_is_stored_as_is(fx: Fixture) {
    let tar = tarish(24, 300_000);
    let digest = sha(&tar);
    let put = fx
        .cache
        .put_layer(&digest, body(tar.clone(), 65_536))
        .await
        .unwrap();
    assert_eq!(put.compression, Compression::None);
    assert_eq!(put.compressed, None);
    assert_eq!(put.decompressed.digest, digest);
    assert_eq!(fx.stored().await.len(), 1);
    assert_eq!(fx.note(&digest, "kind").await.as_deref(), Some("layer"));
    assert_eq!(fx.note(&digest, "decompressed").await, None);
}

async fn layer_with_wrong_digest_stores_nothing(fx: Fixture) {
    let tar = tarish(25, 400_000);
    let gz = gzip(&tar);
    let claimed = sha(b"not this layer");
    let err = fx
        .cache
        .put_layer_opts(
            &claimed,
            body(gz.clone(), 8192),
            LayerOptions::new().with_diff_id(sha(&tar)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { expected, .. } if expected == claimed),
        "{err:?}"
    );
    // Without a diff ID too (the first pass hashes only).
    let err = fx
        .cache
        .put_layer(&claimed, body(gz, 8192))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(fx.stored().await.is_empty());
}

async fn layer_with_wrong_diff_id_stores_nothing(fx: Fixture) {
    let tar = tarish(26, 400_000);
    let gz = gzip(&tar);
    let wrong_diff = sha(b"another tar");
    let err = fx
        .cache
        .put_layer_opts(
            &sha(&gz),
            body(gz.clone(), 8192),
            LayerOptions::new().with_diff_id(wrong_diff),
        )
        .await
        .unwrap_err();
    match err {
        Error::DecompressedMismatch {
            compressed,
            expected,
            actual,
        } => {
            assert_eq!(
                (compressed, expected, actual),
                (sha(&gz), wrong_diff, sha(&tar))
            );
        }
        other => panic!("expected DecompressedMismatch, got {other:?}"),
    }
    assert!(fx.stored().await.is_empty());
}

async fn invalid_compressed_data_stores_nothing(fx: Fixture) {
    let tar = tarish(27, 400_000);
    let mut gz = gzip(&tar).to_vec();
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    gz[n / 2 + 1] ^= 0xff;
    let gz = Bytes::from(gz);
    let err = fx
        .cache
        .put_layer(&sha(&gz), body(gz.clone(), 8192))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decompress {
                compression: Compression::Gzip,
                ..
            }
        ),
        "{err:?}"
    );
    // Declared gzip, but the bytes are a plain tar.
    let err = fx
        .cache
        .put_layer_opts(
            &sha(&tar),
            body(tar.clone(), 8192),
            LayerOptions::new().with_media_type(media_type::DOCKER_LAYER_GZIP),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
    // Valid gzip with bytes after its end.
    let trailing: Bytes = [gzip(&tar), Bytes::from_static(b"trailing")]
        .concat()
        .into();
    let err = fx
        .cache
        .put_layer(&sha(&trailing), body(trailing.clone(), 8192))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
    assert!(fx.stored().await.is_empty());
}

async fn unsupported_compression_stores_nothing(fx: Fixture) {
    let data = data(28, 10_000);
    let err = fx
        .cache
        .put_layer_opts(
            &sha(&data),
            body(data.clone(), 4096),
            LayerOptions::new().with_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedCompression { compression, .. } if compression == "bzip2"),
        "{err:?}"
    );
    let xz: Bytes = [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &data[..]]
        .concat()
        .into();
    let err = fx
        .cache
        .put_layer(&sha(&xz), body(xz.clone(), 3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedCompression { compression, .. } if compression == "xz"),
        "{err:?}"
    );
    assert!(fx.stored().await.is_empty());
}

fn layer(digest: Digest, size: usize, mt: &str) -> LayerInfo {
    LayerInfo {
        digest,
        size: size as u64,
        media_type: mt.to_owned(),
    }
}

async fn substitution_follows_the_mode(fx: Fixture) {
    let (tar1, tar2) = (tarish(30, 200_000), tarish(31, 150_000));
    let (gz1, gz2) = (gzip(&tar1), gzip(&tar2));
    fx.cache
        .put_layer(&sha(&gz1), body(gz1.clone(), 50_000))
        .await
        .unwrap();
    fx.cache
        .put_layer(&sha(&gz2), body(gz2.clone(), 50_000))
        .await
        .unwrap();
    let uncached = layer(sha(b"elsewhere"), 10, media_type::OCI_LAYER_GZIP);
    let compressed = vec![
        layer(sha(&gz1), gz1.len(), media_type::OCI_LAYER_GZIP),
        layer(sha(&gz2), gz2.len(), media_type::DOCKER_LAYER_GZIP),
        uncached.clone(),
    ];
    let decompressed = vec![
        layer(sha(&tar1), tar1.len(), media_type::OCI_LAYER),
        layer(sha(&tar2), tar2.len(), media_type::DOCKER_LAYER),
        uncached.clone(),
    ];
    let c = &fx.cache;
    assert_eq!(
        c.substitute(&compressed, LayerCompression::Decompress, false)
            .await
            .unwrap(),
        decompressed
    );
    assert_eq!(
        c.substitute(&decompressed, LayerCompression::Compress, false)
            .await
            .unwrap(),
        compressed
    );
    // Asking for what a layer already is changes nothing.
    assert_eq!(
        c.substitute(&compressed, LayerCompression::Compress, false)
            .await
            .unwrap(),
        compressed
    );
    assert_eq!(
        c.substitute(&compressed, LayerCompression::Preserve, false)
            .await
            .unwrap(),
        compressed
    );
    // A signed image keeps its exact layers.
    assert_eq!(
        c.substitute(&compressed, LayerCompression::Decompress, true)
            .await
            .unwrap(),
        compressed
    );
    // A media type outside the known families cannot be relabelled.
    let odd = vec![layer(sha(&gz1), gz1.len(), "application/octet-stream")];
    assert_eq!(
        c.substitute(&odd, LayerCompression::Decompress, false)
            .await
            .unwrap(),
        odd
    );
    // A variant that is gone is not offered.
    c.delete(&sha(&tar1)).await.unwrap();
    let out = c
        .substitute(&compressed, LayerCompression::Decompress, false)
        .await
        .unwrap();
    assert_eq!(out[0], compressed[0]);
    assert_eq!(out[1], decompressed[1]);
}

async fn zstd_variant_is_not_offered_to_docker_layers(fx: Fixture) {
    let tar = tarish(32, 100_000);
    let zst = zstd(&tar);
    fx.cache
        .put_layer(&sha(&zst), body(zst.clone(), 10_000))
        .await
        .unwrap();
    let docker = vec![layer(sha(&tar), tar.len(), media_type::DOCKER_LAYER)];
    assert_eq!(
        fx.cache
            .substitute(&docker, LayerCompression::Compress, false)
            .await
            .unwrap(),
        docker
    );
    let oci = vec![layer(sha(&tar), tar.len(), media_type::OCI_LAYER)];
    assert_eq!(
        fx.cache
            .substitute(&oci, LayerCompression::Compress, false)
            .await
            .unwrap(),
        vec![layer(sha(&zst), zst.len(), media_type::OCI_LAYER_ZSTD)]
    );
}

async fn concurrent_puts_of_one_digest_are_idempotent(fx: Fixture) {
    let data = data(40, (2 << 20) + 3);
    let digest = sha(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let cache = fx.cache.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            cache.put(&digest, body(data, 16_384 + i * 1000)).await
        }));
    }
    // Readers racing the writers see either no blob or all of it.
    let mut readers = Vec::new();
    for _ in 0..4 {
        let cache = fx.cache.clone();
        let data = data.clone();
        readers.push(tokio::spawn(async move {
            for _ in 0..50 {
                if let Some(got) = cache.get_bytes(&digest).await.unwrap() {
                    assert_eq!(got, data, "a reader saw a partial or wrong blob");
                    return true;
                }
                tokio::task::yield_now().await;
            }
            false
        }));
    }
    for t in tasks {
        let info = t.await.unwrap().unwrap();
        assert_eq!((info.digest, info.size), (digest, data.len() as u64));
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        fx.stored().await,
        vec![imagecache_core::BlobInfo {
            digest,
            size: data.len() as u64
        }]
    );
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(data));
    assert_eq!(fx.cache.counters().errors, 0);
}

async fn concurrent_layer_puts_are_idempotent(fx: Fixture) {
    let tar = tarish(41, 1_000_000);
    let gz = gzip(&tar);
    let digest = sha(&gz);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cache = fx.cache.clone();
        let gz = gz.clone();
        tasks.push(tokio::spawn(async move {
            cache.put_layer(&digest, body(gz, 20_000)).await
        }));
    }
    for t in tasks {
        let put = t.await.unwrap().unwrap();
        assert_eq!(put.decompressed.digest, sha(&tar));
    }
    assert_eq!(fx.stored().await.len(), 2);
    assert_eq!(fx.cache.get_bytes(&sha(&tar)).await.unwrap(), Some(tar));
}

async fn cancelled_put_stores_nothing(fx: Fixture) {
    let data = data(42, 500_000);
    let digest = sha(&data);
    let stalled: imagecache_core::ByteStream =
        Box::pin(body(data.slice(..100_000), 10_000).chain(futures::stream::pending()));
    {
        let put = fx.cache.put(&digest, stalled);
        tokio::pin!(put);
        for _ in 0..20 {
            assert!(futures::poll!(&mut put).is_pending());
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(fx.cache.has(&digest).await.unwrap(), None);
    assert!(fx.stored().await.is_empty());
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    assert_eq!(fx.cache.get_bytes(&digest).await.unwrap(), Some(data));
}

async fn stats_and_clear_report_contents(fx: Fixture) {
    let blobs: Vec<Bytes> = (0..3)
        .map(|i| data(50 + i, 1000 * (i as usize + 1)))
        .collect();
    for b in &blobs {
        fx.cache.put_bytes(&sha(b), b.clone()).await.unwrap();
    }
    fx.cache.get_bytes(&sha(&blobs[0])).await.unwrap();
    fx.cache.get_bytes(&sha(b"absent")).await.unwrap();
    let stats = fx.cache.stats().await.unwrap();
    assert_eq!((stats.blobs, stats.bytes), (3, 6000));
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 1, 0));
    let cleared = fx.cache.clear().await.unwrap();
    assert_eq!((cleared.blobs, cleared.bytes), (3, 6000));
    let stats = fx.cache.stats().await.unwrap();
    assert_eq!((stats.blobs, stats.bytes), (0, 0));
    assert_eq!(fx.cache.get_bytes(&sha(&blobs[1])).await.unwrap(), None);
    assert_eq!(fx.cache.clear().await.unwrap().blobs, 0);
}

async fn verified_reader_feeds_another_backend(fx: Fixture) {
    let data = data(60, 1_234_567);
    let digest = sha(&data);
    fx.cache.put_bytes(&digest, data.clone()).await.unwrap();
    let other = BlobCache::new(Arc::new(imagecache_backends::MemoryBackend::new())).unwrap();
    let reader = fx.cache.get(&digest).await.unwrap().unwrap();
    other.put(&digest, reader.into_byte_stream()).await.unwrap();
    assert_eq!(other.get_bytes(&digest).await.unwrap(), Some(data.clone()));

    // A corrupt source ends the body with an error, so the copy is refused.
    let mut damaged = data.to_vec();
    damaged[1_000_000] ^= 2;
    fx.corrupt(&digest, damaged).await;
    let third = BlobCache::new(Arc::new(imagecache_backends::MemoryBackend::new())).unwrap();
    let reader = fx.cache.get(&digest).await.unwrap().unwrap();
    assert!(third.put(&digest, reader.into_byte_stream()).await.is_err());
    assert_eq!(third.has(&digest).await.unwrap(), None);
}

on_every_backend!(
    put_stream_then_read_back,
    empty_blob_roundtrips,
    missing_blob_is_a_miss,
    wrong_digest_stores_nothing,
    truncated_body_stores_nothing,
    failing_body_stores_nothing,
    bad_put_leaves_stored_blob_unchanged,
    corrupt_blob_is_a_counted_miss_and_evicted,
    corrupt_blob_ends_the_stream_with_an_error,
    corrupt_blob_copy_is_a_miss,
    truncated_cached_blob_is_a_miss,
    wrong_size_note_keeps_a_whole_blob,
    truncation_without_size_note_is_caught_when_read,
    manifest_roundtrips_with_kind_and_media_type,
    bad_manifests_store_nothing,
    gzip_layer_is_kept_in_both_forms,
    gzip_layer_without_diff_id_is_recognised_and_kept,
    zstd_layer_is_kept_in_both_forms,
    uncompressed_layer_is_stored_as_is,
    layer_with_wrong_digest_stores_nothing,
    layer_with_wrong_diff_id_stores_nothing,
    invalid_compressed_data_stores_nothing,
    unsupported_compression_stores_nothing,
    substitution_follows_the_mode,
    zstd_variant_is_not_offered_to_docker_layers,
    concurrent_puts_of_one_digest_are_idempotent,
    concurrent_layer_puts_are_idempotent,
    cancelled_put_stores_nothing,
    stats_and_clear_report_contents,
    verified_reader_feeds_another_backend,
);

// Cases that need a wrapper backend run over memory only.

#[tokio::test]
async fn lookup_failures_are_misses_unless_strict() {
    let faulty = Arc::new(Faulty::new(Arc::new(
        imagecache_backends::MemoryBackend::new(),
    )));
    let lenient = BlobCache::new(faulty.clone()).unwrap();
    let strict =
        BlobCache::with_options(faulty.clone(), BlobCacheOptions::new().with_strict(true)).unwrap();
    let data = data(70, 5000);
    let digest = sha(&data);
    lenient.put_bytes(&digest, data.clone()).await.unwrap();

    faulty
        .fail_lookups
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(lenient.get_bytes(&digest).await.unwrap(), None);
    assert!(lenient.get(&digest).await.unwrap().is_none());
    let c = lenient.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 2, 2));

    let err = strict.get_bytes(&digest).await.unwrap_err();
    assert!(
        matches!(err, Error::Backend { operation: "head_blob", digest: Some(d), .. } if d == digest),
        "{err:?}"
    );
    assert_eq!(strict.counters().errors, 1);

    faulty
        .fail_lookups
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(strict.get_bytes(&digest).await.unwrap(), Some(data));
}

#[tokio::test]
async fn manifest_limit_is_configurable() {
    let fx = Fixture::memory_with(BlobCacheOptions::new().with_max_manifest_size(16)).await;
    let small = Bytes::from_static(b"{\"a\":1}");
    fx.cache
        .put_manifest(&sha(&small), small.clone(), None)
        .await
        .unwrap();
    let big = Bytes::from_static(b"{\"aaaaaaaaaaaaaaaa\":1}");
    let err = fx
        .cache
        .put_manifest(&sha(&big), big, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 16, .. }), "{err:?}");
    assert_eq!(fx.stored().await.len(), 1);
}

#[test]
fn layer_puts_need_a_runtime_only_for_compressed_layers() {
    // Outside Tokio, a compressed layer is refused with a typed error
    // instead of a panic.
    let backend = Arc::new(imagecache_backends::MemoryBackend::new());
    let cache = BlobCache::new(backend).unwrap();
    let tar = tarish(71, 10_000);
    let gz = gzip(&tar);
    let result = futures::executor::block_on(cache.put_layer(&sha(&gz), body(gz.clone(), 1000)));
    assert!(matches!(result, Err(Error::NoRuntime { .. })), "{result:?}");
    let plain = futures::executor::block_on(cache.put_layer(&sha(&tar), body(tar.clone(), 1000)));
    assert_eq!(plain.unwrap().decompressed.digest, sha(&tar));
}

/// A body like a file reader's: an `unfold` stream, which panics if it is
/// polled again after it has ended.
fn once_body(data: Bytes, chunk: usize) -> imagecache_core::ByteStream {
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|i| data.slice(i..data.len().min(i + chunk)))
        .collect();
    Box::pin(futures::stream::unfold(
        chunks.into_iter(),
        |mut rest| async move { rest.next().map(|c| (Ok(c), rest)) },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_magic_only_layers_are_refused_or_stored_never_a_panic() {
    let fx = Fixture::memory().await;
    // A compression's magic bytes and nothing else: refused, nothing stored.
    for (magic, compression) in [
        (&[0x1f, 0x8b][..], Compression::Gzip),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], Compression::Zstd),
    ] {
        let data = Bytes::copy_from_slice(magic);
        let err = fx
            .cache
            .put_layer(&sha(&data), once_body(data.clone(), 1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Decompress { compression: c, .. } if c == compression),
            "{compression}: {err:?}"
        );
    }
    // An empty body declared gzip: refused as well.
    let empty = Bytes::new();
    let err = fx
        .cache
        .put_layer_opts(
            &sha(&empty),
            once_body(empty.clone(), 1),
            LayerOptions::new().with_media_type(media_type::OCI_LAYER_GZIP),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
    assert!(fx.stored().await.is_empty());

    // Bodies shorter than the bytes the compression is read from: stored.
    for data in [Bytes::new(), Bytes::from_static(b"abc")] {
        let put = fx
            .cache
            .put_layer(&sha(&data), once_body(data.clone(), 1))
            .await
            .unwrap();
        assert_eq!(put.compression, Compression::None);
        assert_eq!(fx.cache.get_bytes(&sha(&data)).await.unwrap(), Some(data));
    }
    // A whole gzip layer through the same kind of body.
    let tar = tarish(72, 20_000);
    let gz = gzip(&tar);
    let put = fx
        .cache
        .put_layer(&sha(&gz), once_body(gz.clone(), 4096))
        .await
        .unwrap();
    assert_eq!(put.decompressed.digest, sha(&tar));
}
