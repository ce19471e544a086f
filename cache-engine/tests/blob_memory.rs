//! Memory stays flat while a large blob and a large layer pass through the
//! cache over the directory backend.
//!
//! The blob is 1 GiB (`IMAGECACHE_BLOB_TEST_MIB` sets another size in MiB;
//! anything over 64 still shows a cache that buffers blobs). The
//! workspace builds sha2 and miniz_oxide optimised even in debug builds,
//! which keeps this test to seconds. The bytes are generated as they are
//! needed and never held whole. The peak resident set size of the process
//! (`VmHWM`) is reset before each phase and must stay under 64 MiB.
//! Everything runs in one test so that no other test shares the process's
//! peak.

// A panic is how a test fails, so the helpers outside `#[test]` functions
// unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use imagecache_backends::fs::FsBackend;
use imagecache_core::{BlobBackend, ByteStream, Digest, Hasher};
use imagecache_engine::blob::{BlobCache, LayerOptions, PutOptions};

const LIMIT: u64 = 64 << 20;
const CHUNK: usize = 1 << 20;

fn size_from_env() -> usize {
    std::env::var("IMAGECACHE_BLOB_TEST_MIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20
}

/// Chunk `i` of a pseudo-random blob: one random 1 MiB block, stamped with
/// the chunk index so that no two chunks are equal.
fn chunk(block: &Bytes, i: usize, total: usize) -> Bytes {
    let len = CHUNK.min(total - i * CHUNK);
    let mut out = block[..len].to_vec();
    let stamp = (i as u64).to_le_bytes();
    let n = stamp.len().min(len);
    out[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(out)
}

fn random_block() -> Bytes {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

fn blob_stream(block: Bytes, total: usize) -> ByteStream {
    let chunks = total.div_ceil(CHUNK);
    Box::pin(futures::stream::iter(
        (0..chunks).map(move |i| Ok(chunk(&block, i, total))),
    ))
}

/// A gzip stream of the blob using stored (uncompressed) deflate blocks,
/// so producing it costs no compression time; the decoder still parses
/// every block, checks the CRC and the length.
fn gzip_stream(block: Bytes, total: usize) -> ByteStream {
    let chunks = total.div_ceil(CHUNK);
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut crc = flate2::Crc::new();
    let body = futures::stream::iter(0..chunks).map(move |i| {
        let data = chunk(&block, i, total);
        crc.update(&data);
        let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 32);
        for piece in data.chunks(65_535) {
            let len = piece.len() as u16;
            out.push(0);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(piece);
        }
        if i + 1 == chunks {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
            out.extend_from_slice(&crc.sum().to_le_bytes());
            out.extend_from_slice(&(total as u32).to_le_bytes());
        }
        Ok(Bytes::from(out))
    });
    use futures::StreamExt as _;
    Box::pin(futures::stream::once(async move { Ok(header) }).chain(body))
}

async fn digest_of(stream: ByteStream) -> (Digest, u64) {
    use futures::StreamExt as _;
    let mut h = Hasher::new(imagecache_core::Algorithm::Sha256);
    let mut size = 0u64;
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        h.update(&chunk);
    }
    (h.finish(), size)
}

/// Resets the peak resident set size to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("linux clear_refs");
}

/// Peak resident set size since the last reset, in bytes.
fn peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn check_peak(phase: &str) {
    let p = peak();
    eprintln!("{phase}: peak RSS {:.1} MiB", p as f64 / (1 << 20) as f64);
    assert!(
        p <= LIMIT,
        "{phase}: peak RSS {} MiB is over {} MiB",
        p >> 20,
        LIMIT >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blob_and_layer_stay_under_64_mib() {
    let total = size_from_env();
    let block = random_block();
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn BlobBackend> = Arc::new(FsBackend::open(dir.path()).await.unwrap());
    let cache = BlobCache::new(Arc::clone(&backend)).unwrap();

    let (digest, size) = digest_of(blob_stream(block.clone(), total)).await;
    assert_eq!(size, total as u64);

    reset_peak();
    let info = cache
        .put_opts(
            &digest,
            blob_stream(block.clone(), total),
            PutOptions::new().with_expected_size(size),
        )
        .await
        .unwrap();
    assert_eq!(info.size, size);
    check_peak("put");

    reset_peak();
    let copied = cache
        .copy_to(&digest, &mut tokio::io::sink())
        .await
        .unwrap();
    assert_eq!(copied.map(|i| i.size), Some(size));
    check_peak("get");

    // The blob is done with; free its disk space before the layer.
    cache.delete(&digest).await.unwrap();

    let (gz_digest, gz_size) = digest_of(gzip_stream(block.clone(), total)).await;
    reset_peak();
    let put = cache
        .put_layer_opts(
            &gz_digest,
            gzip_stream(block.clone(), total),
            LayerOptions::new().with_diff_id(digest),
        )
        .await
        .unwrap();
    check_peak("put_layer (gzip, decompressed on the way)");
    assert_eq!(put.compressed.map(|c| c.size), Some(gz_size));
    assert_eq!(
        (put.decompressed.digest, put.decompressed.size),
        (digest, size)
    );
    assert_eq!(cache.has(&digest).await.unwrap(), Some(size));

    // Without the diff ID the decompressed copy is made in a second pass
    // over the stored compressed blob; that pass must be as frugal.
    cache.clear().await.unwrap();
    reset_peak();
    let put = cache
        .put_layer(&gz_digest, gzip_stream(block.clone(), total))
        .await
        .unwrap();
    check_peak("put_layer (gzip, two passes)");
    assert_eq!(
        (put.decompressed.digest, put.decompressed.size),
        (digest, size)
    );
    assert_eq!(cache.has(&digest).await.unwrap(), Some(size));
    assert_eq!(cache.counters().errors, 0);
}

#[tokio::test]
async fn put_reader_stores_what_any_async_reader_gives() {
    let cache = imagecache_engine::blob::BlobCache::new(std::sync::Arc::new(
        imagecache_backends::MemoryBackend::new(),
    ))
    .expect("cache");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let digest = imagecache_core::Digest::sha256(&data);
    let info = cache
        .put_reader(
            &digest,
            std::io::Cursor::new(data.clone()),
            imagecache_engine::blob::PutOptions::default(),
        )
        .await
        .expect("put");
    assert_eq!(info.size, data.len() as u64);
    let back = cache
        .get_bytes(&digest)
        .await
        .expect("get")
        .expect("cached");
    assert_eq!(back, data);
    // A reader whose bytes do not match the digest stores nothing.
    let other = imagecache_core::Digest::sha256(b"something else");
    let refused = cache
        .put_reader(
            &other,
            std::io::Cursor::new(data),
            imagecache_engine::blob::PutOptions::default(),
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(cache.has(&other).await.expect("has"), None);
}
