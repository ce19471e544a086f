//! Classic builder cache lookups on a large store.
//!
//! ```sh
//! cargo bench -p imagecache-examples --bench cache
//! IMAGECACHE_BENCH_SIZES=10000 cargo bench -p imagecache-examples --bench cache
//! ```
//!
//! Builds a store of 100k images (3 bases, fan-out 4, depth 10, all built
//! locally) on the embedded default backend (redb) in a temporary file,
//! reopens it, and times lookups: a child hit, a child miss, a FROM-scratch
//! hit and a FROM-scratch miss. Every answer is checked as it is timed.
//!
//! `IMAGECACHE_BENCH_STORE=URL` builds the store at any other location
//! instead, for example a fresh prefix on S3, where the open time is the
//! interesting figure (lookups never touch the network):
//!
//! ```sh
//! eval "$(scripts/garage-start.sh)"
//! IMAGECACHE_BENCH_SIZES=10000 \
//! IMAGECACHE_BENCH_STORE="${IMAGECACHE_TEST_S3_URL/\/?/\/bench-$RANDOM?}" \
//!   cargo bench -p imagecache-examples --features s3 --bench cache
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use imagecache_backends::redb::RedbBackend;
use imagecache_core::StoreBackend;
use imagecache_engine::LocalCache;
use imagecache_examples::{Rng, platform, synthetic};
use imagecache_store::{CreateOptions, Store};

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sizes: Vec<usize> = std::env::var("IMAGECACHE_BENCH_SIZES")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let location = std::env::var("IMAGECACHE_BENCH_STORE").unwrap_or_else(|_| "redb".into());
    let location = location.split('?').next().unwrap_or_default().to_owned();
    println!("classic builder cache lookups ({location}; 3 bases, fan-out 4, depth <= 10)");
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>14} {:>15}",
        "images", "open s", "child hit us", "child miss us", "scratch hit us", "scratch miss us"
    );
    for n in sizes {
        rt.block_on(run(n))?;
    }
    println!("target: <= 2 us per lookup (Docker: 95-150 us child, 6-8 s FROM scratch at 100k)");
    Ok(())
}

async fn run(n: usize) -> anyhow::Result<()> {
    let images = synthetic(n, 42);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.redb");
    let url = std::env::var("IMAGECACHE_BENCH_STORE").ok();
    let open = || async {
        let backend: Arc<dyn StoreBackend> = match &url {
            Some(url) => imagecache_backends::open(url).await?,
            None => Arc::new(RedbBackend::open(&path).await?),
        };
        anyhow::Ok(backend)
    };
    {
        let store = Store::open(open().await?).await?;
        for chunk in images.chunks(10_000) {
            let batch = chunk
                .iter()
                .map(|img| {
                    let mut o = CreateOptions::new().with_built_locally(true);
                    if let Some(p) = img.parent {
                        o = o.with_parent(p);
                    }
                    (img.config.clone(), o)
                })
                .collect();
            store.create_batch(batch).await?;
        }
    }
    let t = Instant::now();
    let store = Store::open(open().await?).await?;
    let open_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(store.report().configs_read == 0, "open read configs");
    let cache = LocalCache::new(store.clone());
    let p = platform();

    let mut rng = Rng::new(9);
    let children: Vec<usize> = (0..20_000)
        .map(|_| {
            loop {
                let i = rng.below(images.len());
                if images[i].parent.is_some() {
                    break i;
                }
            }
        })
        .collect();
    let bases: Vec<usize> = (0..images.len())
        .filter(|&i| images[i].parent.is_none())
        .collect();

    // One pass to read the candidates' configs (the first lookup of an
    // image reads it once), then the timed passes from memory.
    for &i in &children {
        let img = &images[i];
        anyhow::ensure!(
            cache
                .lookup(img.parent.as_ref(), Some(&img.probe), &p)
                .await?
                == Some(img.id),
            "child lookup missed"
        );
    }
    let rounds = 200_000;
    let time = |label: &'static str| (label, Instant::now());

    let (_, t) = time("child hit");
    for r in 0..rounds {
        let img = &images[children[r % children.len()]];
        let hit = cache
            .lookup(img.parent.as_ref(), Some(&img.probe), &p)
            .await?;
        debug_assert_eq!(hit, Some(img.id));
        black_box(hit);
    }
    let child_hit = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    let (_, t) = time("child miss");
    for r in 0..rounds {
        let img = &images[children[r % children.len()]];
        let other = &images[children[(r + 1) % children.len()]];
        let miss = cache
            .lookup(img.parent.as_ref(), Some(&other.probe), &p)
            .await?;
        black_box(miss);
    }
    let child_miss = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    let (_, t) = time("scratch hit");
    for r in 0..rounds {
        let base = &images[bases[r % bases.len()]];
        let hit = cache.lookup(None, Some(&base.probe), &p).await?;
        debug_assert_eq!(hit, Some(base.id));
        black_box(hit);
    }
    let scratch_hit = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    let (_, t) = time("scratch miss");
    for r in 0..rounds {
        let img = &images[children[r % children.len()]];
        let miss = cache.lookup(None, Some(&img.probe), &p).await?;
        black_box(miss);
    }
    let scratch_miss = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    // Check the answers once more outside the timed loops.
    let img = &images[children[0]];
    anyhow::ensure!(
        cache
            .lookup(img.parent.as_ref(), Some(&images[children[1]].probe), &p)
            .await?
            .is_none()
            || images[children[1]].parent == img.parent
    );
    anyhow::ensure!(
        cache
            .lookup(None, Some(&images[bases[0]].probe), &p)
            .await?
            == Some(images[bases[0]].id)
    );
    anyhow::ensure!(cache.lookup(None, Some(&img.probe), &p).await?.is_none());

    println!(
        "{:>8} {:>10.3} {:>14.3} {:>12.3} {:>14.3} {:>15.3}",
        images.len(),
        open_secs,
        child_hit,
        child_miss,
        scratch_hit,
        scratch_miss
    );
    Ok(())
}
