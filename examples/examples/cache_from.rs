//! A cache shared by two machines, used with `--cache-from`.
//!
//! Machine A builds a Dockerfile into a shared store. Machine B opens its
//! own handle on the same location and builds again with
//! `--cache-from <A's image>`: every step is answered from A's images.
//! Machine C only has A's final image, pulled into a store of its own (no
//! parent links, nothing built locally); cache-from still answers every
//! step by matching the image's history, restoring the intermediate images
//! with exactly the bytes Docker would write.
//!
//! ```sh
//! cargo run --example cache_from                                  # a temp fs:// directory
//! cargo run --example cache_from -- 's3://bucket/prefix?endpoint=…'  # any store URL
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use imagecache_core::{DiffId, ImageId};
use imagecache_engine::builder::{Stage, Step};
use imagecache_engine::{CacheFrom, IdResolver, ImageCache, LocalCache};
use imagecache_examples::platform;
use imagecache_store::Store;

fn dockerfile() -> Vec<Step> {
    let layer = |n: u8| DiffId::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).ok();
    vec![
        Step::Env("LANG".into(), "C.UTF-8".into()),
        Step::Run {
            command: "apk add --no-cache git".into(),
            build_args: BTreeMap::new(),
            diff_id: layer(0xa1),
        },
        Step::Copy {
            source: format!("dir:{} in /src", "c0".repeat(32)),
            diff_id: layer(0xa2),
        },
        Step::Run {
            command: "make -C /src".into(),
            build_args: BTreeMap::new(),
            diff_id: layer(0xa3),
        },
    ]
}

async fn build(
    name: &str,
    store: &Store,
    cache: Arc<dyn ImageCache>,
    base: ImageId,
) -> anyhow::Result<ImageId> {
    let mut stage = Stage::from(store.clone(), cache, Some(base), platform()).await?;
    let mut hits = 0;
    let steps = dockerfile();
    let total = steps.len();
    for step in steps {
        let outcome = stage.step(step).await?;
        hits += usize::from(outcome.is_cached());
        println!(
            "  {name}: {} {}",
            if outcome.is_cached() {
                "Using cache ->"
            } else {
                "built       ->"
            },
            &outcome.id().hex()[..12]
        );
    }
    println!("  {name}: {hits}/{total} steps from cache");
    stage
        .image()
        .ok_or_else(|| anyhow::anyhow!("nothing built"))
}

const BASE: &[u8] = br#"{"architecture":"amd64","os":"linux","created":"2024-02-01T00:00:00Z","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"]},"history":[{"created":"2024-02-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:alpine in / "}]}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("fs://{}", tmp.path().join("shared").display()));
    println!("shared store: {url}");

    // Machine A: an ordinary build.
    let a = Store::open(imagecache_backends::open(&url).await?.images()).await?;
    let base = a.create(BASE).await?;
    println!("machine A builds:");
    let image = build("A", &a, Arc::new(LocalCache::new(a.clone())), base).await?;

    // Machine B: its own handle on the same location, with --cache-from.
    let b = Store::open(imagecache_backends::open(&url).await?.images()).await?;
    println!("machine B builds with --cache-from {}:", &image.hex()[..12]);
    let cf = CacheFrom::new(b.clone(), &[image.to_string()], &IdResolver).await?;
    let again = build("B", &b, Arc::new(cf), base).await?;
    assert_eq!(again, image);

    // Machine C: only the pulled final image, no parents, nothing built locally.
    let c = Store::open(imagecache_backends::open("memory://").await?.images()).await?;
    c.create(BASE).await?;
    let pulled = c.create(a.get(&image).await?.raw_json().clone()).await?;
    println!("machine C (only the final image, pulled) builds with --cache-from:");
    let cf = CacheFrom::new(c.clone(), &[pulled.to_string()], &IdResolver).await?;
    let same = build("C", &c, Arc::new(cf), base).await?;
    assert_eq!(same, image, "cache-from yields the very same image");
    println!(
        "machine C restored {} intermediate images with Docker's bytes",
        c.len() - 2
    );
    Ok(())
}
