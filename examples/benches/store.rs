//! Image store benchmark on the Docker-compatible `fs` backend.
//!
//! ```sh
//! cargo bench -p imagecache-examples --bench store
//! IMAGECACHE_BENCH_SIZES=10000 cargo bench -p imagecache-examples --bench store
//! ```
//!
//! For each size (default 10k and 100k images: 3 bases, fan-out 4, depth
//! 10) it builds a store with one durable create per image (config, parent,
//! built-locally mark and summary, fsynced), then opens it in a new process
//! (cold process, warm page cache), then times get, children, heads and
//! search on the opened store. `IMAGECACHE_BENCH_DIR` chooses where the
//! stores are built (default: the temporary directory) and
//! `IMAGECACHE_BENCH_KEEP=1` leaves them there.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_backends::fs::FsBackend;
use imagecache_examples::{Rng, SyntheticImage, synthetic};
use imagecache_store::{CreateOptions, Store};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The child process of the "open" measurement.
    if let Some(pos) = args.iter().position(|a| a == "--open-only") {
        let dir = args
            .get(pos + 1)
            .ok_or_else(|| anyhow::anyhow!("--open-only DIR"))?;
        let secs = rt.block_on(open_once(Path::new(dir)))?;
        println!("{secs}");
        return Ok(());
    }
    let sizes: Vec<usize> = std::env::var("IMAGECACHE_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("image store on fs (3 bases, fan-out 4, depth <= 10)");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>11} {:>9} {:>9}",
        "images",
        "create us",
        "8-way us",
        "batch us",
        "open 1st s",
        "open s",
        "get 1st us",
        "get us",
        "children us",
        "heads us",
        "search us"
    );
    for n in sizes {
        rt.block_on(run(n))?;
    }
    println!(
        "create: durable (fsynced) create of config + parent + builtLocally + summary; one at a time,"
    );
    println!(
        "        8 in flight, and in batches of 64 (create_batch); sample of up to 3000 images for the first and last"
    );
    println!("open:   a new process each time; \"open 1st\" is the first open after the writes");
    println!(
        "targets: create <= 400 us, open 100k <= 0.5 s (cold process), get <= 1 us from memory"
    );
    Ok(())
}

async fn open_once(dir: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let store = Store::open(Arc::new(FsBackend::open(dir).await?)).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(store.report().configs_read == 0, "open read configs");
    black_box(store.len());
    Ok(secs)
}

/// Opens the store in a new process and returns the seconds it took.
fn open_in_child(dir: &Path) -> anyhow::Result<f64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--open-only")
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "open process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn options(img: &SyntheticImage) -> CreateOptions {
    let o = CreateOptions::new().with_built_locally(true);
    match img.parent {
        Some(p) => o.with_parent(p),
        None => o,
    }
}

async fn create(store: &Store, img: &SyntheticImage) -> anyhow::Result<()> {
    store.create_with(img.config.clone(), options(img)).await?;
    Ok(())
}

fn per_op(total: Duration, ops: usize) -> f64 {
    total.as_secs_f64() * 1e6 / ops as f64
}

async fn run(n: usize) -> anyhow::Result<()> {
    let images = synthetic(n, 42);
    let keep = std::env::var_os("IMAGECACHE_BENCH_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("imagecache-bench-store-")
        .disable_cleanup(keep)
        .tempdir_in(
            std::env::var("IMAGECACHE_BENCH_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        )?;
    // The store is built with 8 creates in flight, wave by wave (every
    // image's parent is in an earlier wave), as busy build hosts do.
    let store = Store::open(Arc::new(FsBackend::open(dir.path()).await?)).await?;
    let t = Instant::now();
    let max_depth = images.iter().map(|i| i.depth).max().unwrap_or(0);
    for depth in 0..=max_depth {
        let wave: Vec<_> = images
            .iter()
            .filter(|i| i.depth == depth)
            .cloned()
            .collect();
        futures::stream::iter(wave.into_iter().map(|img| {
            let store = store.clone();
            async move { create(&store, &img).await }
        }))
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    }
    let create_concurrent = per_op(t.elapsed(), images.len());
    drop(store);

    // One at a time, and in batches of 64, on smaller stores of the same shape.
    let sample = &images[..images.len().min(3000)];
    let serial_dir = tempfile::tempdir_in(dir.path())?;
    let serial = Store::open(Arc::new(FsBackend::open(serial_dir.path()).await?)).await?;
    let t = Instant::now();
    for img in sample {
        create(&serial, img).await?;
    }
    let create_serial = per_op(t.elapsed(), sample.len());
    let batch_dir = tempfile::tempdir_in(dir.path())?;
    let batched = Store::open(Arc::new(FsBackend::open(batch_dir.path()).await?)).await?;
    let t = Instant::now();
    for chunk in sample.chunks(64) {
        batched
            .create_batch(
                chunk
                    .iter()
                    .map(|img| (img.config.clone(), options(img)))
                    .collect(),
            )
            .await?;
    }
    let create_batched = per_op(t.elapsed(), sample.len());
    drop((serial, batched, serial_dir, batch_dir));

    // The first open after the writes folds their journal records into the
    // index snapshot; later opens read the snapshot alone.
    let open_first = open_in_child(dir.path())?;
    let open_secs = open_in_child(dir.path())?;
    if keep {
        eprintln!("kept the {n}-image store in {}", dir.path().display());
    }

    let store = Store::open(Arc::new(FsBackend::open(dir.path()).await?)).await?;
    let ids = store.ids();
    let mut rng = Rng::new(7);
    let sample: Vec<_> = (0..10_000.min(ids.len()))
        .map(|_| ids[rng.below(ids.len())])
        .collect();

    // First read of a config: from disk, verified, parsed, then kept.
    let t = Instant::now();
    for id in &sample {
        black_box(store.get(id).await?);
    }
    let get_first = per_op(t.elapsed(), sample.len());

    let rounds = 200_000;
    let t = Instant::now();
    for i in 0..rounds {
        black_box(store.get(&sample[i % sample.len()]).await?);
    }
    let get = per_op(t.elapsed(), rounds);

    let t = Instant::now();
    for i in 0..rounds {
        black_box(store.children(&ids[(i * 7919) % ids.len()]));
    }
    let children = per_op(t.elapsed(), rounds);

    let heads_rounds = 50;
    let t = Instant::now();
    for _ in 0..heads_rounds {
        black_box(store.heads());
    }
    let heads = per_op(t.elapsed(), heads_rounds);

    let terms: Vec<String> = sample.iter().map(|id| id.hex()[..12].to_owned()).collect();
    let t = Instant::now();
    for i in 0..rounds {
        black_box(store.search(&terms[i % terms.len()])?);
    }
    let search = per_op(t.elapsed(), rounds);

    println!(
        "{:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.3} {:>8.3} {:>10.2} {:>8.3} {:>11.3} {:>9.1} {:>9.3}",
        images.len(),
        create_serial,
        create_concurrent,
        create_batched,
        open_first,
        open_secs,
        get_first,
        get,
        children,
        heads,
        search
    );
    Ok(())
}
