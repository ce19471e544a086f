//! The blob cache: put a gzip layer once, get both its compressed and its
//! decompressed form back, rewrite a manifest's layer list to either, and
//! watch the counters.
//!
//! ```sh
//! cargo run --example blob_cache
//! ```

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_backends::redb::RedbBackend;
use imagecache_core::Digest;
use imagecache_engine::blob::{BlobCache, LayerCompression, LayerInfo, media_type};

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("blobs.redb");
    let cache = BlobCache::new(Arc::new(RedbBackend::open(&path).await?))?;
    println!("blob cache on redb://{}", path.display());

    // A layer as a registry serves it: a gzip-compressed tar.
    let tar: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let compressed = Bytes::from(gzip(&tar)?);
    let digest = Digest::sha256(&compressed);
    let body = Box::pin(futures::stream::iter([Ok(compressed.clone())]));
    let put = cache.put_layer(&digest, body).await?;
    let decompressed = put.decompressed.digest;
    println!(
        "put gzip layer {} ({} bytes) -> also kept decompressed as {} ({} bytes)",
        &digest.hex()[..12],
        compressed.len(),
        &decompressed.hex()[..12],
        put.decompressed.size
    );
    assert_eq!(
        decompressed,
        Digest::sha256(&tar),
        "the diff ID of the layer"
    );

    // Both variants are there, verified on the way out.
    assert_eq!(cache.get_bytes(&digest).await?, Some(compressed.clone()));
    assert_eq!(
        cache.get_bytes(&decompressed).await?.map(|b| b.len()),
        Some(tar.len())
    );

    // Rewrite a manifest's layer list.
    let layers = vec![LayerInfo {
        digest,
        size: compressed.len() as u64,
        media_type: media_type::OCI_LAYER_GZIP.to_owned(),
    }];
    for mode in [
        LayerCompression::Decompress,
        LayerCompression::Compress,
        LayerCompression::Preserve,
    ] {
        let out = cache.substitute(&layers, mode, false).await?;
        println!(
            "substitute {mode:?}: {} {}",
            &out[0].digest.hex()[..12],
            out[0].media_type
        );
    }
    let signed = cache
        .substitute(&layers, LayerCompression::Decompress, true)
        .await?;
    assert_eq!(
        signed, layers,
        "a signed image's layers are never rewritten"
    );
    println!("substitute on a signed image: unchanged");

    // A body that does not match its digest is refused, and nothing is stored.
    let wrong = Digest::sha256(b"not these bytes");
    match cache
        .put_bytes(&wrong, Bytes::from_static(b"other bytes"))
        .await
    {
        Err(err) => println!("wrong digest refused: {err}"),
        Ok(_) => anyhow::bail!("a wrong digest was accepted"),
    }
    assert_eq!(cache.has(&wrong).await?, None);

    // A miss is not an error.
    assert_eq!(
        cache.get_bytes(&Digest::sha256(b"never stored")).await?,
        None
    );

    let stats = cache.stats().await?;
    println!(
        "counters: {} hits, {} misses, {} errors; {} blobs, {} bytes",
        stats.hits, stats.misses, stats.errors, stats.blobs, stats.bytes
    );
    let cleared = cache.clear().await?;
    println!("cleared {} blobs ({} bytes)", cleared.blobs, cleared.bytes);
    Ok(())
}
