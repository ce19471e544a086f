//! Blob cache throughput and memory, against the machine's limits and a peer.
//!
//! `cargo bench -p imagecache-engine --bench blob` puts and gets one large
//! blob (1 GiB; `IMAGECACHE_BENCH_MIB=N` for another size) through the blob
//! cache over the directory backend in a temp dir, and prints:
//!
//! * single-core SHA-256 speed and disk write speed (write + fsync of the
//!   same size, same directory), measured in the same run;
//! * put + verify and get + verify speed, and put's share of
//!   min(SHA-256, disk), whose target is at least 90 %;
//! * the same blob through cacache's streaming writer and reader, and our
//!   speed as a multiple of cacache's (target at least 1.5×);
//! * peak resident memory of each phase (target at most 64 MiB for ours).
//!
//! The blob's bytes are generated as they are needed and never held whole:
//! one pseudo-random 1 MiB block, stamped with each chunk's index. Every
//! run (and every contestant) sees exactly the same bytes. The temp dir
//! comes from `IMAGECACHE_BENCH_DIR` or the system default, so everything
//! is written to the same disk. `IMAGECACHE_BENCH_RUNS=N` repeats each
//! timed phase and keeps the best run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{Algorithm, ByteStream, Digest, Hasher, StoreBackend};
use imagecache_engine::blob::{BlobCache, PutOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CHUNK: usize = 1 << 20;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The bytes of the blob, as a restartable generator.
#[derive(Clone)]
struct Source {
    block: Bytes,
    total: usize,
}

impl Source {
    fn new(total: usize) -> Self {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut block = Vec::with_capacity(CHUNK);
        while block.len() < CHUNK {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            block.extend_from_slice(&state.to_le_bytes());
        }
        Self {
            block: Bytes::from(block),
            total,
        }
    }

    fn chunks(&self) -> usize {
        self.total.div_ceil(CHUNK)
    }

    fn chunk(&self, i: usize) -> Bytes {
        let len = CHUNK.min(self.total - i * CHUNK);
        let mut out = self.block[..len].to_vec();
        let stamp = (i as u64).to_le_bytes();
        let n = stamp.len().min(len);
        out[..n].copy_from_slice(&stamp[..n]);
        Bytes::from(out)
    }

    fn stream(&self) -> ByteStream {
        let me = self.clone();
        Box::pin(futures::stream::iter(0..me.chunks()).map(move |i| Ok(me.chunk(i))))
    }

    fn digest(&self) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        for i in 0..self.chunks() {
            h.update(&self.chunk(i));
        }
        h.finish()
    }
}

fn reset_peak() {
    // Resets VmHWM to the current RSS, so each phase reports its own peak.
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("note: cannot reset peak RSS ({e}); peaks are cumulative");
    }
}

fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Runs a timed phase `runs` times; returns the best time, the peak RSS of
/// the runs and the last run's result.
async fn timed<F, Fut, T>(runs: usize, mut phase: F) -> BoxResult<(Duration, f64, T)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = BoxResult<T>>,
{
    let mut best = Duration::MAX;
    let mut peak = 0f64;
    let mut last = None;
    for run in 0..runs {
        reset_peak();
        let start = Instant::now();
        last = Some(phase(run).await?);
        best = best.min(start.elapsed());
        peak = peak.max(peak_mib());
    }
    let last = last.ok_or("no run")?;
    Ok((best, peak, last))
}

fn sha256_speed(src: &Source) -> Duration {
    // Hash the block repeatedly: pure hashing, no generation or I/O.
    let mut h = Hasher::new(Algorithm::Sha256);
    let start = Instant::now();
    for _ in 0..src.chunks() {
        h.update(&src.block);
    }
    let elapsed = start.elapsed();
    std::hint::black_box(h.finish());
    elapsed
}

fn disk_write(src: &Source, path: &Path) -> BoxResult<Duration> {
    use std::io::Write as _;
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    for i in 0..src.chunks() {
        f.write_all(&src.chunk(i))?;
    }
    f.sync_all()?;
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(elapsed)
}

async fn run() -> BoxResult<()> {
    let mib: usize = std::env::var("IMAGECACHE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("IMAGECACHE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = mib << 20;
    let dir = match std::env::var_os("IMAGECACHE_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let src = Source::new(total);
    let digest = src.digest();
    println!(
        "blob cache benchmark: {mib} MiB blob, {runs} run(s) per phase, in {}",
        dir.path().display()
    );

    // The limits of this machine, measured now.
    let sha = {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            best = best.min(sha256_speed(&src));
        }
        mbps(total, best)
    };
    let disk = {
        let mut best = Duration::MAX;
        for run in 0..runs {
            let src = src.clone();
            let path = dir.path().join(format!("disk-{run}"));
            let d = tokio::task::spawn_blocking(move || disk_write(&src, &path)).await??;
            best = best.min(d);
        }
        mbps(total, best)
    };
    let bound = sha.min(disk);

    // Ours: put + verify, then get + verify, over the directory backend.
    let (put_time, put_peak, ()) = timed(runs, |run| {
        let src = src.clone();
        let root = dir.path().join(format!("ours-{run}"));
        async move {
            let backend: Arc<dyn StoreBackend> = Arc::new(FsBackend::open(&root).await?);
            let cache = BlobCache::new(backend)?;
            let info = cache
                .put_opts(
                    &digest,
                    src.stream(),
                    PutOptions::new().with_expected_size(total as u64),
                )
                .await?;
            assert_eq!(info.size, total as u64);
            Ok(())
        }
    })
    .await?;
    let (get_time, get_peak, ()) = timed(runs, |_| {
        let root = dir.path().join("ours-0");
        async move {
            let backend: Arc<dyn StoreBackend> = Arc::new(FsBackend::open(&root).await?);
            let cache = BlobCache::new(backend)?;
            let copied = cache.copy_to(&digest, &mut tokio::io::sink()).await?;
            assert_eq!(copied.map(|i| i.size), Some(total as u64), "verified read");
            Ok(())
        }
    })
    .await?;
    for run in 0..runs {
        tokio::fs::remove_dir_all(dir.path().join(format!("ours-{run}"))).await?;
    }
    let ours_peak = put_peak.max(get_peak);

    // cacache: its streaming writer and reader, same bytes, same disk.
    let cacache_dir = dir.path().join("cacache");
    let (cput_time, cput_peak, (root, sri)) = timed(runs, |run| {
        let src = src.clone();
        let root = cacache_dir.join(run.to_string());
        async move {
            let mut w = cacache::WriteOpts::new()
                .algorithm(cacache::Algorithm::Sha256)
                .size(total)
                .open_hash(&root)
                .await?;
            let mut stream = src.stream();
            while let Some(chunk) = stream.next().await {
                w.write_all(&chunk?).await?;
            }
            let sri = w.commit().await?;
            Ok((root, sri))
        }
    })
    .await?;
    let (cget_time, cget_peak, ()) = timed(runs, |_| {
        let root = root.clone();
        let sri = sri.clone();
        async move {
            let mut r = cacache::Reader::open_hash(&root, sri).await?;
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0usize;
            loop {
                let got = r.read(&mut buf).await?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            r.check()?;
            assert_eq!(n, total);
            Ok(())
        }
    })
    .await?;

    let put = mbps(total, put_time);
    let get = mbps(total, get_time);
    let cput = mbps(total, cput_time);
    let cget = mbps(total, cget_time);
    println!("sha256, one core            {sha:8.0} MB/s");
    println!("disk write + fsync          {disk:8.0} MB/s");
    println!(
        "put + verify (ours, fs)     {put:8.0} MB/s  {:5.1} % of min(sha256, disk) = {bound:.0} MB/s (target >= 90 %)",
        put / bound * 100.0
    );
    println!("get + verify (ours, fs)     {get:8.0} MB/s");
    println!(
        "put (cacache)               {cput:8.0} MB/s  ours/cacache {:.2}x (target >= 1.5x)",
        put / cput
    );
    println!(
        "get (cacache)               {cget:8.0} MB/s  ours/cacache {:.2}x (target >= 1.5x)",
        get / cget
    );
    println!(
        "peak RSS: ours put {put_peak:.1} MiB, get {get_peak:.1} MiB (target <= 64 MiB: {}); cacache put {cput_peak:.1} MiB, get {cget_peak:.1} MiB",
        if ours_peak <= 64.0 { "met" } else { "MISSED" }
    );
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; this program has no options of its own.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
