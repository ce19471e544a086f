//! Fixtures shared by the blob cache tests: backends, data, streams, and a
//! fault-injecting wrapper backend.

// Not every test binary uses every helper, and a panic is how a test fails.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_backends::fs::FsHarness;
use imagecache_backends::memory::MemoryHarness;
use imagecache_conformance::Harness;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Digest, Error as CoreError,
    MetadataKey,
};
use imagecache_engine::blob::{BlobCache, BlobCacheOptions};

/// A backend under test, with a way to damage its blobs: a fixture of the
/// harness that the backend's crate ships.
pub struct Fixture {
    pub backend: Arc<dyn BlobBackend>,
    pub cache: BlobCache,
    fixture: Box<dyn imagecache_conformance::Fixture>,
    /// Keeps the fixture's namespace (a temporary directory) alive.
    _harness: Box<dyn Harness>,
}

impl Fixture {
    pub async fn memory() -> Self {
        Self::memory_with(BlobCacheOptions::default()).await
    }

    pub async fn memory_with(options: BlobCacheOptions) -> Self {
        Self::from_harness(Box::new(MemoryHarness), options).await
    }

    pub async fn fs() -> Self {
        Self::from_harness(
            Box::new(FsHarness::temporary()),
            BlobCacheOptions::default(),
        )
        .await
    }

    async fn from_harness(harness: Box<dyn Harness>, options: BlobCacheOptions) -> Self {
        let fixture = harness.fixture().await;
        let backend = fixture.blobs().expect("the harness offers blobs");
        Self {
            cache: BlobCache::with_options(Arc::clone(&backend), options).unwrap(),
            backend,
            fixture,
            _harness: harness,
        }
    }

    /// Replaces a stored blob's bytes without any check, as a failing disk would.
    pub async fn corrupt(&self, digest: &Digest, data: impl Into<Bytes>) {
        self.fixture
            .corrupt_blob(digest, data.into())
            .await
            .unwrap_or_else(|e| panic!("damaging blob {digest}: {e}"));
    }

    /// Every stored blob, straight from the backend.
    pub async fn stored(&self) -> Vec<BlobInfo> {
        self.backend.list_blobs().await.unwrap()
    }

    /// A note, straight from the backend, as text.
    pub async fn note(&self, digest: &Digest, key: &str) -> Option<String> {
        let key = MetadataKey::new(key).unwrap();
        match self.backend.get_blob_note(digest, &key).await {
            Ok(v) => Some(String::from_utf8(v.to_vec()).unwrap()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading note {key} of {digest}: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (splitmix64), distinct per seed.
pub fn data(seed: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Bytes that compress well, like a real tar: random blocks repeated.
pub fn tarish(seed: u64, len: usize) -> Bytes {
    let block = data(seed, 4096);
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&block);
        out.extend_from_slice(&i.to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    Bytes::from(enc.finish().unwrap())
}

pub fn zstd(data: &[u8]) -> Bytes {
    Bytes::from(ruzstd::encoding::compress_to_vec(
        data,
        ruzstd::encoding::CompressionLevel::Fastest,
    ))
}

pub fn sha(data: &[u8]) -> Digest {
    Digest::sha256(data)
}

/// A body in chunks of `chunk` bytes.
pub fn body(data: Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<imagecache_core::Result<Bytes>> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|i| Ok(data.slice(i..data.len().min(i + chunk))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// A body that yields `data` in chunks, then fails.
pub fn failing_body(data: Bytes, chunk: usize) -> ByteStream {
    Box::pin(body(data, chunk).chain(futures::stream::once(async {
        Err(CoreError::backend(
            "test-source",
            None,
            std::io::Error::other("connection reset"),
        ))
    })))
}

/// Collects a reader's items.
pub async fn drain<S, T, E>(stream: S) -> Vec<Result<T, E>>
where
    S: futures::Stream<Item = Result<T, E>>,
{
    stream.collect().await
}

/// A wrapper blob backend that can be told to fail blob lookups.
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn BlobBackend>,
    pub fail_lookups: AtomicBool,
}

impl Faulty {
    pub fn new(inner: Arc<dyn BlobBackend>) -> Self {
        Self {
            inner,
            fail_lookups: AtomicBool::new(false),
        }
    }

    fn check(&self) -> imagecache_core::Result<()> {
        if self.fail_lookups.load(Ordering::SeqCst) {
            Err(CoreError::Backend {
                backend: "faulty",
                key: None,
                retryable: true,
                source: Box::new(std::io::Error::other("injected fault")),
            })
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "faulty+{}", self.inner)
    }
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl BlobBackend for Faulty {
    fn is_instrumented(&self) -> bool {
        false
    }
    async fn put_blob(
        &self,
        digest: &Digest,
        body: ByteStream,
    ) -> imagecache_core::Result<BlobInfo> {
        self.inner.put_blob(digest, body).await
    }
    async fn get_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobReader> {
        self.check()?;
        self.inner.get_blob(digest).await
    }
    async fn head_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobInfo> {
        self.check()?;
        self.inner.head_blob(digest).await
    }
    async fn delete_blob(&self, digest: &Digest) -> imagecache_core::Result<()> {
        self.inner.delete_blob(digest).await
    }
    async fn list_blobs(&self) -> imagecache_core::Result<Vec<BlobInfo>> {
        self.inner.list_blobs().await
    }
    async fn set_blob_notes(
        &self,
        digest: &Digest,
        notes: BlobNotes,
    ) -> imagecache_core::Result<()> {
        self.inner.set_blob_notes(digest, notes).await
    }
    async fn get_blob_note(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        self.check()?;
        self.inner.get_blob_note(digest, key).await
    }
    async fn blob_notes(&self, digest: &Digest) -> imagecache_core::Result<BlobNotes> {
        self.check()?;
        self.inner.blob_notes(digest).await
    }

    async fn scratch(&self) -> imagecache_core::Result<imagecache_core::Scratch> {
        self.check()?;
        self.inner.scratch().await
    }

    async fn list_blob_times(
        &self,
    ) -> imagecache_core::Result<Vec<(BlobInfo, Option<imagecache_core::Timestamp>)>> {
        self.inner.list_blob_times().await
    }

    async fn blob_usage(&self) -> imagecache_core::Result<imagecache_core::Usage> {
        self.inner.blob_usage().await
    }
}

/// Runs each case, an `async fn(Fixture)`, on the memory and fs backends.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::memory().await).await;
                }
            )*
        }
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::fs().await).await;
                }
            )*
        }
    };
}
