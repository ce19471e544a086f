//! Kill loop: a writer is SIGKILLed at random moments, again and again, and
//! after every kill the store is opened and checked whole.
//!
//! ```sh
//! cargo run --release -p imagecache-examples --example kill_loop -- fs 50
//! cargo run --release -p imagecache-examples --example kill_loop -- redb 50
//! ```
//!
//! The writer (this program started with `--writer URL SEED`) loops: it
//! puts a gzip-compressed layer of 1–4 MiB through the blob cache's layer
//! path (compressed copy, decompressed copy, notes), creates an image over
//! it whose parent is the previous image, and names it. The driver kills it
//! after 20–400 ms, then checks, in this process:
//!
//! * the store opens and reports no problem;
//! * every image's config reads back and verifies, its parent exists, and
//!   its layer is cached in both forms, each verifying to its digest;
//! * every name points at an image;
//! * unfinished writes of the killed writer are reclaimed (`scratch`).
//!
//! It prints one line per round and a summary, and exits 1 if any check
//! failed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{Digest, Reference};
use imagecache_engine::blob::{BlobCache, Compression, LayerOptions};
use imagecache_store::{CreateOptions, Store};

/// Pseudo-random bytes (xorshift), incompressible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)?;
    e.finish()
}

/// A one-file layer tar.
fn layer(data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..4].copy_from_slice(b"data");
    let size = format!("{:011o}\0", data.len());
    header[124..136].copy_from_slice(size.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[156] = b'0';
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

async fn open(url: &str) -> anyhow::Result<(Store, BlobCache)> {
    let backend = imagecache_backends::open(url).await?;
    let store = Store::open(backend.images()).await?;
    let blobs = BlobCache::new(backend.blobs())?;
    Ok((store, blobs))
}

/// The writer: never returns; the driver kills it.
async fn writer(url: &str, seed: u64) -> anyhow::Result<()> {
    let (store, blobs) = open(url).await?;
    let mut parent = store.heads().into_iter().max();
    println!("ready");
    for n in 0u64.. {
        let size =
            1 << 20 | (seed.wrapping_add(n).wrapping_mul(2_654_435_761) as usize % (3 << 20));
        let tar = layer(&noise(size, seed ^ n));
        let diff_id = Digest::sha256(&tar);
        let packed = gzip(&tar)?;
        let body: imagecache_core::ByteStream = Box::pin(futures::stream::iter(
            packed
                .chunks(256 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let options = LayerOptions::new()
            .with_compression(Compression::Gzip)
            .with_diff_id(diff_id);
        blobs
            .put_layer_opts(&Digest::sha256(&packed), body, options)
            .await?;
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"comment":"{seed}-{n}"}}"#
        );
        let mut options = CreateOptions::new();
        if let Some(p) = parent {
            options = options.with_parent(p);
        }
        let id = store.create_with(Bytes::from(config), options).await?;
        store
            .tag(&Reference::parse(&format!("kill/loop:{}", n % 8))?, &id)
            .await?;
        parent = Some(id);
    }
    Ok(())
}

/// What one check found.
#[derive(Debug, Default)]
struct Checked {
    images: usize,
    blobs: usize,
    bytes: u64,
    reclaimed: u32,
    reclaimed_bytes: u64,
    problems: Vec<String>,
}

async fn check(url: &str) -> anyhow::Result<Checked> {
    let backend = imagecache_backends::open(url).await?;
    let scratch = backend.blobs().scratch().await?;
    let store = Store::open(backend.images()).await?;
    let blobs = BlobCache::new(backend.blobs())?;
    let mut out = Checked {
        reclaimed: scratch.reclaimed,
        reclaimed_bytes: scratch.reclaimed_bytes,
        problems: store
            .report()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect(),
        ..Checked::default()
    };
    for id in store.ids() {
        out.images += 1;
        let image = match store.get(&id).await {
            Ok(image) => image,
            Err(e) => {
                out.problems.push(format!("image {id}: {e}"));
                continue;
            }
        };
        if let Ok(Some(parent)) = store.parent(&id)
            && !store.contains(&parent)
        {
            out.problems
                .push(format!("image {id}: parent {parent} missing"));
        }
        for raw in &image.rootfs.raw_diff_ids {
            let diff_id = Digest::parse(raw)?;
            let compressed = blobs.variant(&diff_id, Compression::Gzip).await?;
            for digest in std::iter::once(diff_id).chain(compressed.map(|c| c.digest)) {
                let Some(reader) = blobs.get(&digest).await? else {
                    out.problems
                        .push(format!("image {id}: blob {digest} missing"));
                    continue;
                };
                let mut stream = reader.into_byte_stream();
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => out.bytes += c.len() as u64,
                        Err(e) => {
                            out.problems.push(format!("blob {digest}: {e}"));
                            break;
                        }
                    }
                }
                out.blobs += 1;
            }
        }
    }
    for (name, id) in store.names() {
        if !store.contains(&id) {
            out.problems
                .push(format!("name {name} points at missing {id}"));
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        let (Some(url), Some(seed)) = (args.get(2), args.get(3)) else {
            bail!("usage: kill_loop --writer URL SEED");
        };
        return writer(url, seed.parse()?).await;
    }
    let scheme = args.get(1).map_or("redb", String::as_str);
    let rounds: u64 = args.get(2).map_or(Ok(20), |r| r.parse())?;
    let dir = tempfile::tempdir()?;
    let url = match scheme {
        "fs" => format!("fs://{}", dir.path().join("store").display()),
        "redb" => format!("redb://{}", dir.path().join("store.redb").display()),
        other => bail!("unknown backend {other}; use fs or redb"),
    };
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut failed = 0;
    let mut totals = Checked::default();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--writer", &url, &round.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the writer")?;
        // Wait until it has opened the store, then let it write a while.
        let mut ready = String::new();
        if let Some(out) = child.stdout.as_mut() {
            use std::io::BufRead as _;
            std::io::BufReader::new(out).read_line(&mut ready)?;
        }
        let pause = 20 + (round.wrapping_mul(2_654_435_761) % 380);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill()?;
        child.wait()?;
        let checking = Instant::now();
        let checked = check(&url).await?;
        slowest = slowest.max(checking.elapsed());
        println!(
            "round {round:>3}: killed after {pause:>3} ms; {} image(s), {} blob(s) verified, {} temp file(s) reclaimed, {} problem(s)",
            checked.images,
            checked.blobs,
            checked.reclaimed,
            checked.problems.len()
        );
        for p in &checked.problems {
            println!("    {p}");
        }
        if !checked.problems.is_empty() {
            failed += 1;
        }
        totals.images = checked.images;
        totals.blobs = checked.blobs;
        totals.bytes += checked.bytes;
        totals.reclaimed += checked.reclaimed;
        totals.reclaimed_bytes += checked.reclaimed_bytes;
    }
    println!(
        "\n{scheme}: {rounds} SIGKILLs in {:.1?}; {failed} round(s) with problems; {} images and {} blobs at the end; {:.0} MiB verified; {} temp file(s) of killed writers reclaimed ({:.1} MiB); slowest check {:.1?}",
        started.elapsed(),
        totals.images,
        totals.blobs,
        totals.bytes as f64 / f64::from(1 << 20),
        totals.reclaimed,
        totals.reclaimed_bytes as f64 / f64::from(1 << 20),
        slowest
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
