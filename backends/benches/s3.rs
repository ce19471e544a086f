//! Opening a 10k-image S3 store.
//!
//! ```text
//! eval "$(scripts/garage-start.sh)"
//! cargo bench -p imagecache-backends --bench s3 --features s3
//! scripts/garage-stop.sh
//! ```
//!
//! Builds 10,000 images (configs of about 1.5 KiB, a parent link, a
//! `lastUpdated` value and a 100-byte summary each) under a fresh prefix of
//! the bucket named by `IMAGECACHE_TEST_S3_URL`, in batches of 1,000, then
//! times `load()` of a fresh handle before and after compaction. Without the
//! variable it measures the same over `object_store`'s `InMemory`, which
//! shows the backend's own cost without a network. `IMAGECACHE_BENCH_IMAGES`
//! changes the image count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use imagecache_backends::s3::{S3Backend, S3Config};
use imagecache_core::{Content, MetadataKey, StoreBackend, WriteBatch};
use object_store::ObjectStore;
use object_store::memory::InMemory;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BATCH: usize = 1_000;
const RUNS: usize = 5;

fn synthetic_config(n: usize) -> Bytes {
    // About 1.5 KiB, like a small real config: env, labels, history.
    let history: String = (0..6)
        .map(|h| {
            format!(
                r#"{{"created":"2024-01-0{}T00:00:00Z","created_by":"/bin/sh -c step {n}-{h} && echo {}"}}"#,
                h + 1,
                "z".repeat(120)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","N={n}"],"Labels":{{"bench":"s3"}}}},"created":"2024-01-01T00:00:00Z","history":[{history}],"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    ))
}

enum Target {
    Url(String),
    Memory(Arc<InMemory>),
}

impl Target {
    async fn open(&self, prefix: &str) -> BenchResult<S3Backend> {
        Ok(match self {
            Self::Url(url) => {
                let (location, query) = url.split_once('?').unwrap_or((url, ""));
                let url = format!("{}/{prefix}?{query}", location.trim_end_matches('/'));
                S3Backend::open(S3Config::from_url(&url)?.with_compact_after(usize::MAX)).await?
            }
            Self::Memory(store) => {
                let store: Arc<dyn ObjectStore> = store.clone();
                let config = S3Config::new("memory", prefix)?.with_compact_after(usize::MAX);
                S3Backend::with_store_config(store, config).await?
            }
        })
    }
}

async fn build(backend: &S3Backend, images: usize) -> BenchResult<()> {
    let mut previous = None;
    let mut n = 0;
    while n < images {
        let mut batch = WriteBatch::new();
        for _ in 0..BATCH.min(images - n) {
            let id = batch.put(Content::new(synthetic_config(n))?);
            // Chains of ten, as a builder leaves them.
            if let Some(parent) = previous.filter(|_| n % 10 != 0) {
                batch.set_metadata(id, MetadataKey::PARENT, Bytes::from(format!("{parent}")));
            }
            batch.set_metadata(
                id,
                MetadataKey::LAST_UPDATED,
                Bytes::from_static(b"2024-01-01T00:00:00.000000000Z"),
            );
            batch.set_summary(id, Bytes::from(vec![b's'; 100]));
            previous = Some(id);
            n += 1;
        }
        backend.write(batch).await?;
    }
    Ok(())
}

async fn time_load(target: &Target, prefix: &str, images: usize) -> BenchResult<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let fresh = target.open(prefix).await?;
        let start = Instant::now();
        let snapshot = fresh.load().await?;
        times.push(start.elapsed());
        if snapshot.images.len() != images {
            return Err(format!(
                "load returned {} images, expected {images}",
                snapshot.images.len()
            )
            .into());
        }
    }
    times.sort();
    Ok(times)
}

fn show(label: &str, times: &[Duration]) {
    let median = times[times.len() / 2];
    let best = times[0];
    println!(
        "{label:<44} median {:>8.1} ms   best {:>8.1} ms   ({} runs)",
        median.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        times.len()
    );
}

async fn bench() -> BenchResult<()> {
    let images: usize = std::env::var("IMAGECACHE_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (target, name) = match std::env::var("IMAGECACHE_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => (Target::Url(url), "s3 server"),
        _ => {
            println!("IMAGECACHE_TEST_S3_URL not set: measuring over InMemory instead of a server");
            (Target::Memory(Arc::new(InMemory::new())), "InMemory")
        }
    };
    let prefix = format!("bench{:016x}", rand::random::<u64>());
    let writer = target.open(&prefix).await?;
    let start = Instant::now();
    build(&writer, images).await?;
    let built = start.elapsed();
    println!(
        "built {images} images on {name} in {:.2} s ({:.0} images/s, batches of {BATCH})",
        built.as_secs_f64(),
        images as f64 / built.as_secs_f64()
    );

    let times = time_load(&target, &prefix, images).await?;
    show(
        &format!("load {images} images, {} records", images.div_ceil(BATCH)),
        &times,
    );

    let start = Instant::now();
    let report = writer.compact().await?;
    println!(
        "compaction: {:.0} ms, merged {} records",
        start.elapsed().as_secs_f64() * 1e3,
        report.merged_records
    );
    let times = time_load(&target, &prefix, images).await?;
    show(&format!("load {images} images, compacted index"), &times);
    let target_ok = times[times.len() / 2] <= Duration::from_secs(2);
    println!(
        "target (open 10k images on local Garage <= 2 s): {}",
        if target_ok { "met" } else { "NOT met" }
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}
