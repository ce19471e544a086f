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
//!   speed as a multiple of cacache's (target at least 1.5×). cacache never
//!   fsyncs, so our put is also measured with the backend's fsync off;
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
use imagecache_backends::fs::{FsBackend, FsConfig};
use imagecache_core::{Algorithm, BlobBackend, ByteStream, Digest, Hasher};
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

/// Writes back all dirty pages of the system (`sync`), outside any timing.
async fn flush_page_cache() {
    let _ = tokio::process::Command::new("sync").status().await;
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

/// CPU time (user + system) this process has used so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // Linux reports these in clock ticks of 1/100 s on every common configuration.
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// The best time, its CPU time and the highest peak RSS seen for one phase
/// over the rounds.
#[derive(Clone, Copy)]
struct Phase {
    best: Duration,
    cpu: f64,
    peak: f64,
}

impl Phase {
    fn new() -> Self {
        Self {
            best: Duration::MAX,
            cpu: f64::NAN,
            peak: 0.0,
        }
    }

    /// Times one run of `work`, with the peak RSS reset before it. Dirty
    /// pages left by earlier phases are flushed first (untimed), so that no
    /// phase pays for another's writeback.
    async fn run<T>(
        &mut self,
        work: impl std::future::Future<Output = BoxResult<T>>,
    ) -> BoxResult<T> {
        flush_page_cache().await;
        reset_peak();
        let cpu = cpu_seconds();
        let start = Instant::now();
        let out = work.await?;
        let elapsed = start.elapsed();
        if elapsed < self.best {
            self.best = elapsed;
            self.cpu = cpu_seconds() - cpu;
        }
        self.peak = self.peak.max(peak_mib());
        Ok(out)
    }

    /// Records a time measured by the work itself.
    fn record(&mut self, elapsed: Duration) {
        self.best = self.best.min(elapsed);
    }

    fn mbps(&self, bytes: usize) -> f64 {
        mbps(bytes, self.best)
    }
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

async fn ours_put(root: &Path, fsync: bool, src: &Source, digest: Digest) -> BoxResult<()> {
    let config = FsConfig::new(root).with_fsync(fsync);
    let backend: Arc<dyn BlobBackend> = Arc::new(FsBackend::open_with(config).await?);
    let cache = BlobCache::new(backend)?;
    let opts = PutOptions::new().with_expected_size(src.total as u64);
    let info = cache.put_opts(&digest, src.stream(), opts).await?;
    assert_eq!(info.size, src.total as u64);
    Ok(())
}

async fn ours_get(root: &Path, src: &Source, digest: Digest) -> BoxResult<()> {
    let backend: Arc<dyn BlobBackend> = Arc::new(FsBackend::open(root).await?);
    let cache = BlobCache::new(backend)?;
    let copied = cache.copy_to(&digest, &mut tokio::io::sink()).await?;
    assert_eq!(
        copied.map(|i| i.size),
        Some(src.total as u64),
        "verified read"
    );
    Ok(())
}

async fn cacache_put(root: &Path, src: &Source) -> BoxResult<cacache::Integrity> {
    let mut w = cacache::WriteOpts::new()
        .algorithm(cacache::Algorithm::Sha256)
        .size(src.total)
        .open_hash(root)
        .await?;
    let mut stream = src.stream();
    while let Some(chunk) = stream.next().await {
        w.write_all(&chunk?).await?;
    }
    Ok(w.commit().await?)
}

async fn cacache_get(root: &Path, src: &Source, sri: cacache::Integrity) -> BoxResult<()> {
    let mut r = cacache::Reader::open_hash(root, sri).await?;
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
    assert_eq!(n, src.total);
    Ok(())
}

async fn run() -> BoxResult<()> {
    let mib: usize = std::env::var("IMAGECACHE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = std::env::var("IMAGECACHE_BENCH_RUNS")
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
        "blob cache benchmark: {mib} MiB blob, best of {rounds} round(s), in {}",
        dir.path().display()
    );

    let (mut sha, mut disk) = (Phase::new(), Phase::new());
    let (mut put, mut nosync, mut get) = (Phase::new(), Phase::new(), Phase::new());
    let (mut cput, mut cget) = (Phase::new(), Phase::new());
    // Every round measures every contestant once, so that changes in the
    // machine's load during the run touch all of them alike.
    for round in 0..rounds {
        let s = src.clone();
        sha.record(tokio::task::spawn_blocking(move || sha256_speed(&s)).await?);
        let s = src.clone();
        let path = dir.path().join("disk");
        disk.record(tokio::task::spawn_blocking(move || disk_write(&s, &path)).await??);

        let root = dir.path().join(format!("ours-{round}"));
        put.run(ours_put(&root, true, &src, digest)).await?;
        get.run(ours_get(&root, &src, digest)).await?;
        tokio::fs::remove_dir_all(&root).await?;
        let root = dir.path().join(format!("nosync-{round}"));
        nosync.run(ours_put(&root, false, &src, digest)).await?;
        tokio::fs::remove_dir_all(&root).await?;

        let root = dir.path().join(format!("cacache-{round}"));
        let sri = cput.run(cacache_put(&root, &src)).await?;
        cget.run(cacache_get(&root, &src, sri)).await?;
        tokio::fs::remove_dir_all(&root).await?;
    }

    let sha_mbps = sha.mbps(total);
    let disk_mbps = disk.mbps(total);
    let bound = sha_mbps.min(disk_mbps);
    let (put_mbps, nosync_mbps, get_mbps) = (put.mbps(total), nosync.mbps(total), get.mbps(total));
    let (cput_mbps, cget_mbps) = (cput.mbps(total), cget.mbps(total));
    let ours_peak = put.peak.max(nosync.peak).max(get.peak);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {} (other work on the machine slows the pipelines, which need two cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("sha256, one core            {sha_mbps:8.0} MB/s");
    println!("disk write + fsync          {disk_mbps:8.0} MB/s");
    println!(
        "put + verify (ours, fs)     {put_mbps:8.0} MB/s  {:5.1} % of min(sha256, disk) = {bound:.0} MB/s (target >= 90 %)",
        put_mbps / bound * 100.0
    );
    println!("put + verify, no fsync      {nosync_mbps:8.0} MB/s");
    println!("get + verify (ours, fs)     {get_mbps:8.0} MB/s");
    println!(
        "CPU seconds of the best run: ours put {:.2}, no-fsync put {:.2}, get {:.2}; cacache put {:.2}, get {:.2}",
        put.cpu, nosync.cpu, get.cpu, cput.cpu, cget.cpu
    );
    println!(
        "put (cacache, no fsync)     {cput_mbps:8.0} MB/s  ours/cacache {:.2}x with fsync, {:.2}x without (target >= 1.5x)",
        put_mbps / cput_mbps,
        nosync_mbps / cput_mbps
    );
    println!(
        "get (cacache)               {cget_mbps:8.0} MB/s  ours/cacache {:.2}x (target >= 1.5x)",
        get_mbps / cget_mbps
    );
    println!(
        "peak RSS: ours put {:.1} MiB, no-fsync put {:.1} MiB, get {:.1} MiB (target <= 64 MiB: {}); cacache put {:.1} MiB, get {:.1} MiB",
        put.peak,
        nosync.peak,
        get.peak,
        if ours_peak <= 64.0 { "met" } else { "MISSED" },
        cput.peak,
        cget.peak,
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
