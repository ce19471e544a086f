//! A small build-machine workload for the observability example and its
//! test: images committed by builds, the cache questions a rebuild asks,
//! one question nothing answers, and a layer stored and read back.

use bytes::Bytes;
use imagecache_core::{ContainerConfig, Digest};
use imagecache_engine::LocalCache;
use imagecache_engine::blob::BlobCache;
use imagecache_store::{CreateOptions, Store};

use crate::{platform, synthetic};

/// What [`run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    /// Images created.
    pub created: u64,
    /// Cache lookups that found their image.
    pub hits: u64,
    /// Cache lookups that found nothing.
    pub misses: u64,
    /// Blob bytes stored and read back.
    pub blob_bytes: u64,
}

/// Commits `images` synthetic build steps, asks the cache for each of
/// them again (hits) and for one step never built (a miss), then stores
/// and reads back one blob.
///
/// # Errors
/// Any failure of the store, the cache or the blob cache.
pub async fn run(store: &Store, blobs: &BlobCache, images: usize) -> anyhow::Result<Done> {
    let mut done = Done::default();
    let generated = synthetic(images, 11);
    for image in &generated {
        let options = CreateOptions::new().with_built_locally(true);
        let options = match image.parent {
            Some(parent) => options.with_parent(parent),
            None => options,
        };
        store.create_with(image.config.clone(), options).await?;
        done.created += 1;
    }
    let cache = LocalCache::new(store.clone());
    for image in generated.iter().filter(|i| i.parent.is_some()) {
        let found = cache
            .lookup(image.parent.as_ref(), Some(&image.probe), &platform())
            .await?;
        anyhow::ensure!(found == Some(image.id), "rebuild of {} missed", image.id);
        done.hits += 1;
    }
    let never = ContainerConfig {
        cmd: Some(vec!["never built".into()]),
        ..ContainerConfig::default()
    };
    let found = cache.lookup(None, Some(&never), &platform()).await?;
    anyhow::ensure!(found.is_none(), "a step never built was found");
    done.misses += 1;
    let data = Bytes::from(vec![7u8; 64 << 10]);
    let digest = Digest::sha256(&data);
    blobs.put_bytes(&digest, data.clone()).await?;
    let read = blobs
        .get_bytes(&digest)
        .await?
        .ok_or_else(|| anyhow::anyhow!("blob {digest} just stored is missing"))?;
    anyhow::ensure!(read == data, "blob {digest} read back differs");
    done.blob_bytes = data.len() as u64;
    Ok(done)
}
