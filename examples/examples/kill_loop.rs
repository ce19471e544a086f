//! The kill harness: a child process runs a random workload over the
//! library (images with parents, names, layers through the blob cache,
//! removals, leases, garbage collection) and is SIGKILLed at random
//! moments; after every kill the store is opened and checked against what
//! the child acknowledged. See `imagecache_examples::kill` for what is
//! checked.
//!
//! ```sh
//! cargo run --release -p imagecache-examples --example kill_loop -- fs 1000
//! cargo run --release -p imagecache-examples --example kill_loop -- redb 1000
//! # S3: a Garage server from scripts/garage-start.sh, a fresh prefix per run
//! cargo run --release -p imagecache-examples --features s3 --example kill_loop -- s3 1000
//! ```
//!
//! Arguments: backend (`fs`, `redb` or `s3`), kills (default 20), seed
//! (default 1), largest layer in KiB (default 256). Prints a line per round,
//! every problem, and the evidence line; exits 1 if anything was lost,
//! served corrupt or broken.

use anyhow::bail;
use imagecache_examples::kill::{self, KillOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(args) = kill::child_from_env() {
        return kill::run_child(args).await;
    }
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("redb", String::as_str);
    let kills: u64 = args.get(2).map_or(Ok(20), |r| r.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(1), |r| r.parse())?;
    let layer_kib: usize = args.get(4).map_or(Ok(256), |r| r.parse())?;
    let dir = tempfile::tempdir()?;
    let url = match backend {
        "fs" => format!("fs://{}", dir.path().join("store").display()),
        "redb" => format!("redb://{}", dir.path().join("store.redb").display()),
        "s3" => match std::env::var("IMAGECACHE_TEST_S3_URL") {
            Ok(base) if !base.is_empty() => kill::fresh_s3_prefix(&base, "kill"),
            _ => bail!("set IMAGECACHE_TEST_S3_URL (scripts/garage-start.sh) for the s3 backend"),
        },
        other => bail!("unknown backend {other}; use fs, redb or s3"),
    };
    let mut options = KillOptions::new(backend, url, kills);
    options.seed = seed;
    options.max_layer = layer_kib << 10;
    options.verbose = true;
    let exe = std::env::current_exe()?;
    let summary = kill::run(&options, || std::process::Command::new(&exe)).await?;
    summary.record();
    if !summary.passed() {
        std::process::exit(1);
    }
    Ok(())
}
