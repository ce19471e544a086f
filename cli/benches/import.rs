//! Imports a ~1 GiB layered docker-archive with the real binary, exports it
//! again (`save`), and reports the wall time and peak resident memory of
//! each.
//!
//! ```sh
//! cargo bench -p imagecache-cli --bench import
//! IMAGECACHE_BENCH_LAYERS=4 IMAGECACHE_BENCH_LAYER_MIB=256 cargo bench -p imagecache-cli --bench import
//! IMAGECACHE_BENCH_LAYER_COMPRESSION=zstd IMAGECACHE_BENCH_SCHEME=fs cargo bench -p imagecache-cli --bench import
//! ```
//!
//! Layers are plain tars by default; `IMAGECACHE_BENCH_LAYER_COMPRESSION`
//! set to `gzip` or `zstd` compresses them (the data is incompressible, so
//! the sizes stay about the same, and the import stores both copies).
//!
//! The archive (4 layers of 256 MiB of pseudo-random data by default) is
//! streamed to disk, never held in memory, in a temporary directory beside
//! the store (`IMAGECACHE_BENCH_DIR`, default the system temp dir). The
//! import runs as a child process into a fresh redb store (or
//! `IMAGECACHE_BENCH_SCHEME=fs`), and its peak RSS is read with
//! `getrusage(RUSAGE_CHILDREN)` once it has exited. The export runs from a
//! second copy of this program, so that its figure is its own. The target
//! is 64 MiB for both.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use imagecache_core::{Algorithm, Digest, Hasher};

/// Peak RSS an import or an export may use.
const TARGET_MIB: f64 = 64.0;

/// Pseudo-random bytes (xorshift): incompressible and cheap to make.
struct Noise(u64);

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// How the bench's layers are stored in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    Plain,
    Gzip,
    Zstd,
}

/// Compresses `body` into a file beside the archive; returns the file.
fn compress(body: &mut dyn Read, packing: Packing, path: &Path) -> io::Result<File> {
    let out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let out = match packing {
        Packing::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            io::copy(body, &mut encoder)?;
            encoder.finish()?
        }
        Packing::Zstd => {
            let mut out = out;
            ruzstd::encoding::compress(body, &mut out, ruzstd::encoding::CompressionLevel::Fastest);
            out
        }
        Packing::Plain => unreachable!("plain layers are not compressed"),
    };
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    File::open(path)
}

/// Writes the archive; returns its size in bytes and the image ID.
fn write_archive(
    path: &Path,
    layers: u64,
    layer_bytes: u64,
    packing: Packing,
) -> io::Result<(u64, Digest)> {
    let mut out = tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
    let mut diff_ids = Vec::new();
    for n in 0..layers {
        // A layer is itself a tar with one file: its header, the data, the
        // padding to 512 bytes, and the two zero blocks that end a tar.
        let mut inner = tar::Header::new_gnu();
        inner.set_path("data.bin")?;
        inner.set_size(layer_bytes);
        inner.set_mode(0o644);
        inner.set_mtime(1_700_000_000);
        inner.set_cksum();
        let pad = (512 - layer_bytes % 512) % 512;
        let inner_size = 512 + layer_bytes + pad + 1024;
        let body = io::Cursor::new(inner.as_bytes().to_vec())
            .chain(Noise(0x9e37_79b9_7f4a_7c15 ^ (n + 1)).take(layer_bytes))
            .chain(io::repeat(0).take(pad + 1024));
        let mut hashing = Hashing {
            inner: body,
            hasher: Hasher::new(Algorithm::Sha256),
        };
        if packing == Packing::Plain {
            out.append_data(
                &mut header(inner_size),
                format!("layer{n}/layer.tar"),
                &mut hashing,
            )?;
        } else {
            let packed = path.with_extension(format!("layer{n}"));
            let mut file = compress(&mut hashing, packing, &packed)?;
            let size = file.metadata()?.len();
            out.append_data(&mut header(size), format!("layer{n}/layer.tar"), &mut file)?;
            std::fs::remove_file(&packed)?;
        }
        diff_ids.push(hashing.hasher.finish());
    }
    let history: Vec<serde_json::Value> = (0..layers)
        .map(|n| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("ADD layer{n} /")}))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        "history": history,
    }))?;
    let id = Digest::sha256(&config);
    let config_name = format!("{}.json", id.hex());
    out.append_data(
        &mut header(config.len() as u64),
        &config_name,
        config.as_slice(),
    )?;
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["bench:latest"],
        "Layers": (0..layers).map(|n| format!("layer{n}/layer.tar")).collect::<Vec<_>>(),
    }]))?;
    out.append_data(
        &mut header(manifest.len() as u64),
        "manifest.json",
        manifest.as_slice(),
    )?;
    let mut file = out.into_inner()?;
    file.flush()?;
    let size = file.get_ref().metadata()?.len();
    Ok((size, id))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak RSS of the children this process waited for, in MiB.
fn children_peak_mib() -> Result<f64, Box<dyn std::error::Error>> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // Linux reports ru_maxrss in KiB.
    Ok(usage.max_rss() as f64 / 1024.0)
}

fn verdict(peak_mib: f64) -> &'static str {
    if peak_mib <= TARGET_MIB {
        "ok"
    } else {
        "OVER TARGET"
    }
}

/// The export step, run as `IMAGECACHE_BENCH_EXPORT=STORE|ID|OUT`.
fn export(spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut parts = spec.splitn(3, '|');
    let (Some(store), Some(id), Some(out)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad IMAGECACHE_BENCH_EXPORT {spec:?}").into());
    };
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_imagecache"))
        .args([
            "--store", store, "--quiet", "--format", "json", "save", "-o", out, id,
        ])
        .output()?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(format!("save failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let size = std::fs::metadata(out)?.len();
    let peak_mib = children_peak_mib()?;
    println!(
        "export: {:.2?} wall, {:.0} MiB/s, {:.1} MiB written",
        wall,
        size as f64 / f64::from(1 << 20) / wall.as_secs_f64(),
        size as f64 / f64::from(1 << 20)
    );
    println!(
        "export peak RSS: {peak_mib:.1} MiB (target <= {TARGET_MIB:.0} MiB): {}",
        verdict(peak_mib)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(spec) = std::env::var("IMAGECACHE_BENCH_EXPORT") {
        return export(&spec);
    }
    let layers = env_u64("IMAGECACHE_BENCH_LAYERS", 4);
    let layer_mib = env_u64("IMAGECACHE_BENCH_LAYER_MIB", 256);
    let scheme = std::env::var("IMAGECACHE_BENCH_SCHEME").unwrap_or_else(|_| "redb".to_owned());
    let packing = match std::env::var("IMAGECACHE_BENCH_LAYER_COMPRESSION").as_deref() {
        Ok("gzip") => Packing::Gzip,
        Ok("zstd") => Packing::Zstd,
        Ok("none") | Err(_) => Packing::Plain,
        Ok(other) => {
            return Err(format!(
                "IMAGECACHE_BENCH_LAYER_COMPRESSION={other}: expected none, gzip or zstd"
            )
            .into());
        }
    };
    let base = std::env::var_os("IMAGECACHE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base)?;
    let archive = dir.path().join("layered.tar");

    let started = Instant::now();
    let (size, id) = write_archive(&archive, layers, layer_mib << 20, packing)?;
    println!(
        "archive: {layers} {packing:?} layers x {layer_mib} MiB = {:.1} MiB, written in {:.1?}",
        size as f64 / f64::from(1 << 20),
        started.elapsed()
    );

    let store = match scheme.as_str() {
        "fs" => format!("fs://{}", dir.path().join("store").display()),
        _ => format!("redb://{}", dir.path().join("store.redb").display()),
    };
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_imagecache"))
        .env("HOME", dir.path())
        .args(["--store", &store, "--quiet", "--format", "json", "import"])
        .arg(&archive)
        .output()?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "import failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    if summary["images"][0]["id"] != serde_json::json!(id.to_string()) {
        return Err(format!("imported {} instead of {id}", summary["images"][0]["id"]).into());
    }
    // The only child this process waited for is the import.
    let peak_mib = children_peak_mib()?;
    let mib_per_s = size as f64 / f64::from(1 << 20) / wall.as_secs_f64();
    println!(
        "import into {scheme}: {:.2?} wall, {mib_per_s:.0} MiB/s, {} blobs stored",
        wall, summary["blobs_stored"]
    );
    println!(
        "import peak RSS: {peak_mib:.1} MiB (target <= {TARGET_MIB:.0} MiB): {}",
        verdict(peak_mib)
    );
    let out = dir.path().join("saved.tar");
    let status = Command::new(std::env::current_exe()?)
        .env(
            "IMAGECACHE_BENCH_EXPORT",
            format!("{store}|{id}|{}", out.display()),
        )
        .status()?;
    if !status.success() {
        return Err(format!("the export step failed ({status})").into());
    }
    Ok(())
}
