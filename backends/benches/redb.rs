//! Throughput of the redb backend: batched creates, opening a large store,
//! single durable creates, reads, and streaming a large blob.
//!
//! ```text
//! cargo bench -p imagecache-backends --bench redb --features redb            # 100k and 1M images
//! cargo bench -p imagecache-backends --bench redb --features redb -- 100000   # chosen sizes
//! cargo bench -p imagecache-backends --bench redb --features redb -- 0        # the blob only
//! ```
//!
//! Environment: `REDB_BENCH_CACHE_MIB` sets redb's cache (default: the
//! backend's default), `REDB_BENCH_BLOB_MIB` the blob size (default 1024,
//! 0 skips it), `REDB_BENCH_DIR` where the stores go (default: a temp dir),
//! `REDB_BENCH_KEEP=1` keeps the stores there and, on the next run, only
//! measures opening them (from a fresh process, then), `REDB_BENCH_BATCH`
//! sets the images per batch (default 10000), `REDB_BENCH_GETS` how many
//! configs are read after each `load()` (default 300).
//!
//! Wall-clock figures depend on what else the machine runs, so the CPU time
//! of writing and of `load()` is printed too: on a shared machine, compare
//! those.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt as _;
use imagecache_backends::redb::{RedbBackend, RedbConfig};
use imagecache_core::{
    Algorithm, BlobBackend as _, ByteStream, Content, Digest, Hasher, ImageId, MetadataKey,
    StoreBackend, WriteBatch, hex_encode,
};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const CHAIN_DEPTH: usize = 10;

fn main() -> BoxResult<()> {
    // Store sizes from the command line; `0` alone runs only the blob bench.
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![100_000, 1_000_000];
    }
    sizes.retain(|&n| n > 0);
    let mut config = RedbConfig::new();
    if let Some(mib) = env_usize("REDB_BENCH_CACHE_MIB") {
        config = config.with_cache_size(mib << 20);
    }
    let blob_mib = env_usize("REDB_BENCH_BLOB_MIB").unwrap_or(1024);
    let batch = env_usize("REDB_BENCH_BATCH").unwrap_or(10_000).max(1);
    let keep = std::env::var_os("REDB_BENCH_KEEP").is_some();
    let temp = match std::env::var_os("REDB_BENCH_DIR") {
        Some(dir) if !keep => Some(tempfile::tempdir_in(dir)?),
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let base = match (&temp, std::env::var_os("REDB_BENCH_DIR")) {
        (Some(t), _) => t.path().to_path_buf(),
        (None, Some(dir)) => dir.into(),
        (None, None) => unreachable!("a temp dir is made when no directory is given"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().build()?;
    rt.block_on(async {
        println!(
            "redb backend, cache {} MiB, batches of {batch} images",
            config.cache_size() >> 20
        );
        if blob_mib > 0 {
            bench_blob(&base, &config, blob_mib).await?;
        }
        for n in sizes {
            bench_store(&base, &config, n, batch, keep).await?;
        }
        Ok(())
    })
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// A deterministic pseudo-random sequence (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hex(&mut self, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(bytes)
            .collect();
        hex_encode(&raw)
    }
}

/// A config of about 1.5 KiB, shaped like a real one and different for every `i`.
fn image_config(i: usize, parent: Option<ImageId>) -> Content {
    let mut mix = Mix(i as u64);
    let diff_ids: Vec<String> = (0..9)
        .map(|_| format!("\"sha256:{}\"", mix.hex(32)))
        .collect();
    let parent = parent.map(|p| p.to_string()).unwrap_or_default();
    let json = format!(
        concat!(
            r#"{{"architecture":"amd64","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","#,
            r#""APP_BUILD={i}"],"Cmd":["/bin/sh","-c","make -j4 target-{i}"],"WorkingDir":"/src","#,
            r#""Labels":{{"org.example.parent":"{parent}"}}}},"created":"2026-01-01T00:{m:02}:{s:02}.{i:09}Z","#,
            r#""history":[{{"created":"2026-01-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:{h1} in / "}},"#,
            r#"{{"created":"2026-01-01T00:00:01Z","created_by":"/bin/sh -c apt-get update && apt-get install -y build-essential"}},"#,
            r#"{{"created":"2026-01-01T00:00:02Z","created_by":"/bin/sh -c make -j4 target-{i}"}}],"#,
            r#""os":"linux","rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}}}}"#
        ),
        i = i,
        m = (i / 60) % 60,
        s = i % 60,
        parent = parent,
        h1 = mix.hex(32),
        diff_ids = diff_ids.join(","),
    );
    Content::new(json).unwrap_or_else(|_| unreachable!("the config is never empty"))
}

fn summary(i: usize) -> Vec<u8> {
    let mut mix = Mix(!(i as u64));
    (0..13)
        .flat_map(|_| mix.next().to_le_bytes())
        .take(100)
        .collect()
}

async fn bench_store(
    base: &Path,
    config: &RedbConfig,
    n: usize,
    batch_size: usize,
    keep: bool,
) -> BoxResult<()> {
    let path = base.join(format!("store-{n}.redb"));
    let singles = 200;
    if keep && path.exists() {
        println!();
        println!("== {n} images, kept from an earlier run");
        return bench_open(&path, config, n + singles).await;
    }
    let backend = RedbBackend::open_with(&path, config.clone()).await?;
    let mut in_write = Duration::ZERO;
    // Writes run on the blocking pool while this thread waits, so what the
    // process uses beyond this thread is what writing costs.
    let (process_cpu, own_cpu) = (cpu_time(), thread_cpu_time());
    let mut config_bytes = 0usize;
    let start = Instant::now();
    let mut prev: Option<ImageId> = None;
    let mut sample: Vec<ImageId> = Vec::new();
    let sample_every = (n / 1000).max(1);
    let mut i = 0;
    while i < n {
        let mut batch = WriteBatch::new();
        for _ in 0..batch_size.min(n - i) {
            let parent = (i % CHAIN_DEPTH != 0).then_some(prev).flatten();
            let content = image_config(i, parent);
            config_bytes += content.data().len();
            let id = batch.put(content);
            if let Some(p) = parent {
                batch.set_metadata(id, MetadataKey::PARENT, p.to_string());
            }
            batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
            batch.set_summary(id, summary(i));
            if i % sample_every == 0 {
                sample.push(id);
            }
            prev = Some(id);
            i += 1;
        }
        let t = Instant::now();
        backend.write(batch).await?;
        in_write += t.elapsed();
    }
    let total = start.elapsed();
    let write_cpu = cpu_time()
        .saturating_sub(process_cpu)
        .saturating_sub(thread_cpu_time().saturating_sub(own_cpu));
    println!();
    println!("== {n} images (configs average {} bytes)", config_bytes / n);
    println!(
        "batched creates: {:>9.0} images/s in write(), {:>9.0} images/s including building and hashing configs",
        n as f64 / in_write.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "write() CPU: {:>9.0} images per CPU-second ({:.1} µs per image; wall figures depend on what else runs)",
        n as f64 / write_cpu.as_secs_f64(),
        write_cpu.as_secs_f64() * 1e6 / n as f64
    );

    // One image per durable batch, as a builder commits a step.
    let t = Instant::now();
    for j in 0..singles {
        let k = n + j;
        let mut batch = WriteBatch::new();
        let id = batch.put(image_config(k, prev));
        batch.set_metadata(
            id,
            MetadataKey::PARENT,
            prev.map(|p| p.to_string()).unwrap_or_default(),
        );
        batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
        batch.set_summary(id, summary(k));
        backend.write(batch).await?;
    }
    println!(
        "single durable create: {:>7.0} µs each",
        t.elapsed().as_secs_f64() * 1e6 / singles as f64
    );

    // Config reads spread over the store, verified.
    let t = Instant::now();
    for id in &sample {
        backend.get(id).await?;
    }
    println!(
        "get (verified): {:>7.1} µs each",
        t.elapsed().as_secs_f64() * 1e6 / sample.len() as f64
    );
    drop(backend);
    println!(
        "file size: {:.1} MiB ({:.0} bytes per image)",
        file_len(&path) as f64 / (1 << 20) as f64,
        file_len(&path) as f64 / (n + singles) as f64
    );

    bench_open(&path, config, n + singles).await?;
    if !keep {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Opens the store with fresh handles and loads it, three times.
async fn bench_open(path: &Path, config: &RedbConfig, images: usize) -> BoxResult<()> {
    for round in 1..=3 {
        let t = Instant::now();
        let backend = RedbBackend::open_with(path, config.clone()).await?;
        let opened = t.elapsed();
        let cpu = cpu_time();
        let t = Instant::now();
        let snapshot = backend.load().await?;
        let loaded = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu);
        assert_eq!(snapshot.images.len(), images);
        // Then configs spread over the store, as a store reads them on
        // first use: most are not cached yet.
        let gets = env_usize("REDB_BENCH_GETS").unwrap_or(300).max(1);
        let step = (images / gets).max(1);
        let sample: Vec<ImageId> = snapshot.images.iter().step_by(step).map(|e| e.id).collect();
        let (t, get_cpu) = (Instant::now(), threads_cpu_time());
        for id in &sample {
            backend.get(id).await?;
        }
        let got = t.elapsed();
        let get_cpu = threads_cpu_time().saturating_sub(get_cpu);
        println!(
            "fresh handle #{round}: open {:>6.1} ms, load() {:>6.1} ms (CPU {:>6.1} ms), total {:>6.1} ms; then get (verified) {:>5.1} µs each (CPU {:>5.1} µs)",
            ms(opened),
            ms(loaded),
            ms(cpu),
            ms(opened + loaded),
            got.as_secs_f64() * 1e6 / sample.len() as f64,
            get_cpu.as_secs_f64() * 1e6 / sample.len() as f64
        );
        drop(snapshot);
        drop(backend);
    }
    Ok(())
}

async fn bench_blob(base: &Path, config: &RedbConfig, mib: usize) -> BoxResult<()> {
    let path = base.join("blobs.redb");
    let backend = RedbBackend::open_with(&path, config.clone()).await?;
    let size = mib << 20;
    let piece = 256 << 10;
    // Sixteen distinct pieces, cycled, so that producing the body costs
    // nothing next to storing it; the digest is computed beforehand.
    let mut mix = Mix(42);
    let patterns: Vec<Bytes> = (0..16)
        .map(|_| {
            let raw: Vec<u8> = (0..piece / 8)
                .flat_map(|_| mix.next().to_le_bytes())
                .collect();
            Bytes::from(raw)
        })
        .collect();
    let pieces = move || {
        let patterns = patterns.clone();
        (0..size / piece).map(move |i| patterns[i % patterns.len()].clone())
    };
    let mut h = Hasher::new(Algorithm::Sha256);
    pieces().for_each(|p| h.update(&p));
    let digest: Digest = h.finish();

    reset_peak_rss();
    let rss_before = peak_rss_kib();
    let body: ByteStream = Box::pin(futures::stream::iter(pieces().map(Ok)));
    let t = Instant::now();
    backend.put_blob(&digest, body).await?;
    let put = t.elapsed();
    let rss_put = peak_rss_kib();

    reset_peak_rss();
    let t = Instant::now();
    let mut stream = backend.get_blob(&digest).await?.stream;
    let mut h = Hasher::new(Algorithm::Sha256);
    while let Some(chunk) = stream.try_next().await? {
        h.update(&chunk);
    }
    let get = t.elapsed();
    assert_eq!(h.finish(), digest);
    let rss_get = peak_rss_kib();
    backend.delete_blob(&digest).await?;
    drop(backend);
    std::fs::remove_file(&path)?;

    println!();
    println!("== blob of {mib} MiB (body streamed in 256 KiB pieces)");
    println!(
        "put_blob: {:>7.0} MiB/s, peak RSS {} MiB (was {} MiB before)",
        mib as f64 / put.as_secs_f64(),
        rss_put / 1024,
        rss_before / 1024
    );
    println!(
        "get_blob + sha256: {:>7.0} MiB/s, peak RSS {} MiB",
        mib as f64 / get.as_secs_f64(),
        rss_get / 1024
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time this process has used (user and system), from /proc (Linux):
/// on a busy machine it shows what the work costs apart from waiting.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<u64> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // The kernel reports clock ticks of 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

/// CPU time the calling thread has used, from /proc (Linux), to the
/// nanosecond.
fn thread_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// CPU time the threads of this process now running have used, from /proc
/// (Linux), to the nanosecond: finer than [`cpu_time`], but blind to
/// threads that have ended.
fn threads_cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Resets the kernel's peak RSS counter (Linux), so the next reading covers
/// only what follows.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
