use std::sync::Arc;
use std::time::Instant;
use bytes::Bytes;
use futures::StreamExt;
use imagecache_backends::fs::{FsBackend, FsConfig};
use imagecache_core::{ByteStream, Digest, Hasher, Algorithm, StoreBackend};
use imagecache_engine::blob::{BlobCache, PutOptions};

const CHUNK: usize = 1 << 20;
fn stream(block: Bytes, n: usize) -> ByteStream {
    Box::pin(futures::stream::iter(0..n).map(move |i| { let mut v = block.to_vec(); v[..8].copy_from_slice(&(i as u64).to_le_bytes()); Ok(Bytes::from(v)) }))
}
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = 1024;
    let block = Bytes::from(vec![7u8; CHUNK]);
    let mut h = Hasher::new(Algorithm::Sha256);
    let mut s = stream(block.clone(), n);
    let t = Instant::now();
    while let Some(c) = s.next().await { h.update(&c.unwrap()); }
    let digest: Digest = h.finish();
    println!("C gen+hash: {:?}", t.elapsed());
    let mode = std::env::args().nth(1).unwrap_or_default();
    let fsync = mode.contains("sync");
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let be: Arc<dyn StoreBackend> = Arc::new(FsBackend::open_with(FsConfig::new(dir.path()).with_fsync(fsync)).await.unwrap());
        std::process::Command::new("sync").status().unwrap();
        let t = Instant::now();
        be.put_blob(&digest, stream(block.clone(), n)).await.unwrap();
        println!("B backend only (fsync {fsync}) r{round}: {:?}", t.elapsed());
        let dir = tempfile::tempdir().unwrap();
        let be: Arc<dyn StoreBackend> = Arc::new(FsBackend::open_with(FsConfig::new(dir.path()).with_fsync(fsync)).await.unwrap());
        let cache = BlobCache::new(be).unwrap();
        std::process::Command::new("sync").status().unwrap();
        let t = Instant::now();
        cache.put_opts(&digest, stream(block.clone(), n), PutOptions::new().with_expected_size((n*CHUNK) as u64)).await.unwrap();
        println!("A cache put (fsync {fsync}) r{round}: {:?}", t.elapsed());
        let t = Instant::now();
        cache.copy_to(&digest, &mut tokio::io::sink()).await.unwrap().unwrap();
        println!("G cache get r{round}: {:?}", t.elapsed());
    }
}
