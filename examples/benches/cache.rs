//! Classic builder cache lookups on a large store.
//!
//! ```sh
//! cargo bench -p imagecache-examples --bench cache
//! IMAGECACHE_BENCH_SIZES=10000 cargo bench -p imagecache-examples --bench cache
//! ```
//!
//! Builds a store of 100k images (3 bases, fan-out 4, depth 10, all built
//! locally) on the embedded default backend (redb) in a temporary file,
//! reopens it, and times lookups: a child hit (a random image's step), a
//! rebuild hit (the steps of random chains in build order, each asked on
//! the image the step before found), a child miss, a FROM-scratch hit and a
//! FROM-scratch miss. Each probe is brought into the CPU cache before its
//! lookup is timed, as a builder has just made it; the store's data is not.
//!
//! `IMAGECACHE_BENCH_STORE=URL` builds the store at any other location
//! instead, for example a fresh prefix on S3, where the open time is the
//! interesting figure (lookups never touch the network):
//!
//! ```sh
//! eval "$(scripts/garage-start.sh)"
//! IMAGECACHE_BENCH_SIZES=10000 \
//! IMAGECACHE_BENCH_STORE="${IMAGECACHE_TEST_S3_URL/\/\?/\/bench-$RANDOM?}" \
//!   cargo bench -p imagecache-examples --features s3 --bench cache
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagecache_backends::redb::RedbBackend;
use imagecache_core::{ContainerConfig, ImageId, Platform, StoreBackend};
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
        "{:>8} {:>8} {:>14} {:>15} {:>15} {:>16} {:>17}",
        "images",
        "open s",
        "child hit us",
        "rebuild hit us",
        "child miss us",
        "scratch hit us",
        "scratch miss us"
    );
    for n in sizes {
        rt.block_on(run(n))?;
    }
    println!(
        "child hit: a random image's step; rebuild hit: the steps of random chains in build order"
    );
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
            Some(url) => imagecache_backends::open(url).await?.images(),
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
    // Rebuilds: the steps of random chains, base first, each asked on the
    // image the step before it found, as a builder walks a Dockerfile.
    let position: std::collections::HashMap<_, _> = images
        .iter()
        .enumerate()
        .map(|(i, img)| (img.id, i))
        .collect();
    let mut rebuild_steps = Vec::new();
    while rebuild_steps.len() < 20_000 {
        let mut chain = vec![rng.below(images.len())];
        while let Some(parent) = images[chain[chain.len() - 1]].parent {
            chain.push(position[&parent]);
        }
        chain.pop(); // the base: the build starts FROM it
        rebuild_steps.extend(chain.into_iter().rev());
    }

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
    // A builder asks with a probe it has just made, so each probe is
    // brought into the CPU cache before its lookup is timed (the store's
    // own data stays where the other lookups left it). The clock's own
    // cost, measured on an empty interval, is taken off.
    let rounds: usize = std::env::var("IMAGECACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200_000);
    let timer = Timer::new(rounds);
    let child_hit = timer
        .lookups(&cache, &p, |r| {
            let img = &images[children[r % children.len()]];
            (img.parent.as_ref(), &img.probe, Some(Some(img.id)))
        })
        .await?;
    let rebuild_hit = timer
        .lookups(&cache, &p, |r| {
            let img = &images[rebuild_steps[r % rebuild_steps.len()]];
            (img.parent.as_ref(), &img.probe, Some(Some(img.id)))
        })
        .await?;
    let child_miss = timer
        .lookups(&cache, &p, |r| {
            let img = &images[children[r % children.len()]];
            let other = &images[children[(r + 1) % children.len()]];
            // Siblings may share a step; other parents never do.
            let expect = (other.parent != img.parent).then_some(None);
            (img.parent.as_ref(), &other.probe, expect)
        })
        .await?;
    let scratch_hit = timer
        .lookups(&cache, &p, |r| {
            let base = &images[bases[r % bases.len()]];
            (None, &base.probe, Some(Some(base.id)))
        })
        .await?;
    let scratch_miss = timer
        .lookups(&cache, &p, |r| {
            let img = &images[children[r % children.len()]];
            (None, &img.probe, Some(None))
        })
        .await?;

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
        "{:>8} {:>8.3} {:>14.3} {:>15.3} {:>15.3} {:>16.3} {:>17.3}",
        images.len(),
        open_secs,
        child_hit,
        rebuild_hit,
        child_miss,
        scratch_hit,
        scratch_miss
    );
    Ok(())
}

/// Times rounds of lookups.
struct Timer {
    rounds: usize,
    /// What reading the clock twice costs over all rounds.
    clock: Duration,
}

impl Timer {
    fn new(rounds: usize) -> Self {
        let mut clock = Duration::ZERO;
        for _ in 0..rounds {
            let t = Instant::now();
            clock += black_box(t).elapsed();
        }
        Self { rounds, clock }
    }

    /// Microseconds per lookup, the `r`th asking `ask(r)`: a parent, a
    /// probe, and the answer it must get, where known. A builder asks with a
    /// probe it has just made, so each probe is brought into the CPU cache
    /// before its lookup is timed (the store's data is not); the clock's own
    /// cost is taken off.
    async fn lookups<'a>(
        &self,
        cache: &LocalCache,
        platform: &Platform,
        ask: impl Fn(
            usize,
        ) -> (
            Option<&'a ImageId>,
            &'a ContainerConfig,
            Option<Option<ImageId>>,
        ),
    ) -> anyhow::Result<f64> {
        let mut spent = Duration::ZERO;
        for r in 0..self.rounds {
            let (parent, probe, expect) = ask(r);
            black_box(probe.cache_key());
            let t = Instant::now();
            let answer = cache.lookup(parent, Some(probe), platform).await?;
            spent += t.elapsed();
            if let Some(expect) = expect {
                anyhow::ensure!(answer == expect, "lookup {r}: {answer:?}, not {expect:?}");
            }
        }
        Ok(spent.saturating_sub(self.clock).as_secs_f64() * 1e6 / self.rounds as f64)
    }
}
