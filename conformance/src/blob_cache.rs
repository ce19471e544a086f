//! The `blob_cache` group: the verified blob cache
//! ([`imagecache_engine::blob::BlobCache`]) over any backend with blobs.
//!
//! Cases (each needs a blob backend, kind `blobs`, and is skipped without
//! one):
//!
//! * `blob_cache_put_then_get_roundtrips` — a streamed put reads back byte for byte through every read path, each counted as a hit.
//! * `blob_cache_missing_is_a_miss` — lookups of an unknown digest are `None`, counted as misses, never errors.
//! * `blob_cache_wrong_digest_stores_nothing` — a body that does not hash to its digest is `DigestMismatch`; nothing is stored.
//! * `blob_cache_short_or_failed_body_stores_nothing` — a body shorter or longer than announced, or one that fails, is refused with a typed error; nothing is stored.
//! * `blob_cache_bad_put_keeps_stored_blob` — wrong bytes offered under a cached digest never replace it.
//! * `blob_cache_corrupt_blob_is_an_evicted_miss` — (hook `corrupt_blob`) damaged bytes are a miss, an error count and an eviction; a streaming read ends with `Corrupt`.
//! * `blob_cache_truncated_blob_is_an_evicted_miss` — (hook `corrupt_blob`) a blob shorter than its recorded size is absent and evicted.
//! * `blob_cache_manifest_roundtrips` — a manifest reads back with its media type and a note marking its kind.
//! * `blob_cache_bad_manifest_stores_nothing` — empty, oversized and wrong-digest manifests are refused; nothing is stored.
//! * `blob_cache_gzip_layer_kept_in_both_forms` — a gzip layer is kept compressed and decompressed, each noted against the other, with or without a diff ID.
//! * `blob_cache_zstd_layer_kept_in_both_forms` — the same for a zstd layer.
//! * `blob_cache_bad_layer_stores_nothing` — wrong digest, wrong diff ID, damaged data and unsupported compression are refused; nothing is stored.
//! * `blob_cache_substitution_follows_mode` — layer lists switch to the cached variant on request, keep their layers when signed or preserved.
//! * `blob_cache_concurrent_puts_are_idempotent` — eight racing puts of one digest leave one whole blob; racing readers never see part of it.
//! * `blob_cache_second_handle_sees_blobs` — (`reopen`) blobs and their notes put through one handle are served by another.
//! * `blob_cache_stats_and_clear` — stats count blobs and bytes; clear removes them all and says how many.
//!
//! The layers are built here by hand (gzip with stored deflate blocks, zstd
//! with raw blocks), so the suite needs no compressor; the decoders still
//! parse every block and check every checksum.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{BlobBackend, BlobInfo, ByteStream, Digest};
use imagecache_engine::blob::{
    BlobCache, BlobCacheOptions, Compression, Error, LayerCompression, LayerInfo, LayerOptions,
    PutOptions, media_type,
};

use crate::check::{self, Must as _};
use crate::{Fixture, Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __blob_cache_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) blob_cache [
            blob_cache_put_then_get_roundtrips,
            blob_cache_missing_is_a_miss,
            blob_cache_wrong_digest_stores_nothing,
            blob_cache_short_or_failed_body_stores_nothing,
            blob_cache_bad_put_keeps_stored_blob,
            blob_cache_corrupt_blob_is_an_evicted_miss,
            blob_cache_truncated_blob_is_an_evicted_miss,
            blob_cache_manifest_roundtrips,
            blob_cache_bad_manifest_stores_nothing,
            blob_cache_gzip_layer_kept_in_both_forms,
            blob_cache_zstd_layer_kept_in_both_forms,
            blob_cache_bad_layer_stores_nothing,
            blob_cache_substitution_follows_mode,
            blob_cache_concurrent_puts_are_idempotent,
            blob_cache_second_handle_sees_blobs,
            blob_cache_stats_and_clear,
        ] }
    };
}

pub(crate) const CASES: &[crate::Case] = crate::__blob_cache_cases!(__case_registry!());

type Backend = Arc<dyn BlobBackend>;

/// A fresh fixture's blob backend, with the fixture's hooks at hand.
struct Subject {
    fixture: Box<dyn Fixture>,
    blobs: Backend,
}

impl std::ops::Deref for Subject {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.blobs
    }
}

impl Subject {
    /// Replaces a stored blob's bytes; `false` when the fixture has no
    /// such hook. A hook that is offered but fails fails the case.
    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> bool {
        if !self.fixture.damage().blob {
            return false;
        }
        self.fixture
            .corrupt_blob(digest, data)
            .await
            .must(format_args!("corrupt_blob of {digest}"));
        true
    }

    /// A second blob backend on the same namespace, if it can reopen.
    async fn reopen(&self) -> Option<Backend> {
        self.fixture.reopen().await?.blobs()
    }
}

/// A fresh blob backend and a cache over it. The runner skips this group
/// for harnesses without blobs, so the `Result` is always `Ok` there; it is
/// kept so that every case reads the same.
async fn setup(h: &Arc<dyn Harness>, case: &str) -> Result<(Subject, BlobCache), Outcome> {
    let (fixture, blobs) = crate::blobs(h).await;
    match BlobCache::new(Arc::clone(&blobs)) {
        Ok(cache) => Ok((Subject { fixture, blobs }, cache)),
        Err(e) => panic!("{case}: BlobCache::new over a blob backend: {e}"),
    }
}

/// Deterministic pseudo-random bytes, distinct per seed.
fn noise(len: usize, seed: u64) -> Bytes {
    Bytes::from(check::pseudo_random_bytes(len, seed))
}

fn sha(data: &[u8]) -> Digest {
    Digest::sha256(data)
}

/// A body in chunks of `size` bytes.
fn body(data: &Bytes, size: usize) -> ByteStream {
    check::body(check::chunks(data, size))
}

/// A body that yields `data` and then fails.
fn failing_body(data: &Bytes, size: usize) -> ByteStream {
    check::failing_body(check::chunks(data, size), imagecache_core::Error::Cancelled)
}

/// Every blob the backend holds.
async fn stored(b: &Backend) -> Vec<BlobInfo> {
    match b.list_blobs().await {
        Ok(list) => list,
        Err(e) => panic!("list_blobs: {e}"),
    }
}

/// A note as text, straight from the backend.
async fn note(b: &Backend, digest: &Digest, key: &str) -> Option<String> {
    let key = check::key(key);
    match b.get_blob_note(digest, &key).await {
        Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("get_blob_note {key} of {digest}: {e}"),
    }
}

/// The CRC-32 of gzip (IEEE, reflected).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks.
fn gzip(data: &[u8]) -> Bytes {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut pieces = data.chunks(65_535).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let len = piece.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Bytes::from(out)
}

/// A zstd frame holding `data` in raw blocks (128 KiB window, no checksum).
fn zstd(data: &[u8]) -> Bytes {
    const BLOCK: usize = 128 << 10;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let mut pieces = data.chunks(BLOCK).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(piece) = pieces.next() {
        let last = u32::from(pieces.peek().is_none());
        let header = ((piece.len() as u32) << 3) | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(piece);
    }
    Bytes::from(out)
}

/// Asserts the notes that tie a compressed layer to its decompressed copy.
async fn assert_linked(
    b: &Backend,
    compressed: &Digest,
    diff: &Digest,
    compression: &str,
    case: &str,
) {
    assert_eq!(
        note(b, compressed, "decompressed").await,
        Some(diff.to_string()),
        "{case}: the compressed layer must name its decompressed copy"
    );
    assert_eq!(
        note(b, diff, "compressed").await,
        Some(compressed.to_string()),
        "{case}: the decompressed copy must name its compressed layer"
    );
    assert_eq!(
        note(b, compressed, "compression").await.as_deref(),
        Some(compression),
        "{case}: the compressed layer must note its compression"
    );
}

/// A streamed put reads back byte for byte through every read path, each counted as a hit.
pub async fn blob_cache_put_then_get_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_put_then_get_roundtrips";
    let (_b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise((2 << 20) + 11, 1);
    let digest = sha(&data);
    let info = cache.put(&digest, body(&data, 48 << 10)).await.must("put");
    assert_eq!(
        (info.digest, info.size),
        (digest, data.len() as u64),
        "{CASE}: put info"
    );
    assert_eq!(
        cache.has(&digest).await.must("has"),
        Some(data.len() as u64),
        "{CASE}: has"
    );

    let reader = cache
        .get(&digest)
        .await
        .must("get")
        .unwrap_or_else(|| panic!("{CASE}: get missed"));
    let mut streamed = Vec::new();
    let mut reader = reader;
    while let Some(chunk) = reader.next().await {
        streamed.extend_from_slice(&chunk.must("reading the verified stream"));
    }
    assert!(streamed == data, "{CASE}: streamed bytes differ");
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        Some(data.clone()),
        "{CASE}: get_bytes"
    );
    let mut copied: Vec<u8> = Vec::new();
    let copy = cache.copy_to(&digest, &mut copied).await.must("copy_to");
    assert_eq!(
        copy.map(|i| i.size),
        Some(data.len() as u64),
        "{CASE}: copy_to info"
    );
    assert!(copied == data, "{CASE}: copied bytes differ");
    let c = cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (3, 0, 0), "{CASE}: counters");
    Outcome::Passed
}

/// Lookups of an unknown digest are `None`, counted as misses, never errors.
pub async fn blob_cache_missing_is_a_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_missing_is_a_miss";
    let (_b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let digest = sha(b"never cached");
    assert_eq!(cache.has(&digest).await.must("has"), None, "{CASE}: has");
    assert!(
        cache.get(&digest).await.must("get").is_none(),
        "{CASE}: get"
    );
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: get_bytes"
    );
    assert_eq!(
        cache.get_manifest(&digest).await.must("get_manifest"),
        None,
        "{CASE}: get_manifest"
    );
    let mut sink: Vec<u8> = Vec::new();
    assert_eq!(
        cache.copy_to(&digest, &mut sink).await.must("copy_to"),
        None,
        "{CASE}: copy_to"
    );
    let c = cache.counters();
    assert_eq!((c.hits, c.misses, c.errors), (0, 4, 0), "{CASE}: counters");
    Outcome::Passed
}

/// A body that does not hash to its digest is `DigestMismatch`; nothing is stored.
pub async fn blob_cache_wrong_digest_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_wrong_digest_stores_nothing";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise(300_000, 2);
    let claimed = sha(b"another blob");
    match cache.put(&claimed, body(&data, 10_000)).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(
                (expected, actual),
                (claimed, sha(&data)),
                "{CASE}: digests in the error"
            );
        }
        other => panic!("{CASE}: expected DigestMismatch, got {other:?}"),
    }
    assert!(
        matches!(
            cache.put_bytes(&claimed, data.clone()).await,
            Err(Error::DigestMismatch { .. })
        ),
        "{CASE}: put_bytes must verify too"
    );
    assert_eq!(
        cache.has(&claimed).await.must("has"),
        None,
        "{CASE}: nothing under the claimed digest"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored at all");
    Outcome::Passed
}

/// A body shorter or longer than announced, or one that fails, is refused with a typed error; nothing is stored.
pub async fn blob_cache_short_or_failed_body_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_short_or_failed_body_stores_nothing";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise(120_000, 3);
    let digest = sha(&data);
    let short = data.slice(..50_000);
    let r = cache
        .put_opts(
            &digest,
            body(&short, 4096),
            PutOptions::new().with_expected_size(120_000),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Truncated {
                expected: 120_000,
                actual: 50_000,
                ..
            })
        ),
        "{CASE}: a cut transfer must be Truncated, got {r:?}"
    );
    let r = cache
        .put_opts(
            &digest,
            body(&data, 4096),
            PutOptions::new().with_expected_size(119_999),
        )
        .await;
    assert!(
        matches!(r, Err(Error::TooLarge { .. })),
        "{CASE}: an overlong body must be TooLarge, got {r:?}"
    );
    let r = cache.put(&digest, failing_body(&short, 4096)).await;
    assert!(
        matches!(r, Err(Error::Source { .. })),
        "{CASE}: a failing body must be Source, got {r:?}"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored");
    Outcome::Passed
}

/// Wrong bytes offered under a cached digest never replace it.
pub async fn blob_cache_bad_put_keeps_stored_blob(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_put_keeps_stored_blob";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let good = noise(64_000, 4);
    let digest = sha(&good);
    cache.put_bytes(&digest, good.clone()).await.must("put");
    let _ = cache.put(&digest, body(&noise(64_000, 5), 4096)).await;
    let _ = cache.put_bytes(&digest, noise(10, 6)).await;
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        Some(good),
        "{CASE}: stored bytes"
    );
    assert_eq!(stored(&b).await.len(), 1, "{CASE}: one blob");
    Outcome::Passed
}

/// Damaged bytes are a miss, an error count and an eviction; a streaming read ends with `Corrupt`.
pub async fn blob_cache_corrupt_blob_is_an_evicted_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_corrupt_blob_is_an_evicted_miss";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise(200_000, 7);
    let digest = sha(&data);
    cache.put_bytes(&digest, data.clone()).await.must("put");
    let mut damaged = data.to_vec();
    damaged[123_456] ^= 0x20;
    if !b.corrupt_blob(&digest, Bytes::from(damaged.clone())).await {
        return Outcome::skipped(CASE, "hook corrupt_blob");
    }
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: corrupt is a miss"
    );
    let c = cache.counters();
    assert_eq!(
        (c.hits, c.misses, c.errors),
        (0, 1, 1),
        "{CASE}: counters after get_bytes"
    );
    assert_eq!(
        cache.has(&digest).await.must("has"),
        None,
        "{CASE}: evicted"
    );

    // Again, read as a stream: the verdict is the stream's last item.
    cache
        .put_bytes(&digest, data.clone())
        .await
        .must("put again");
    assert!(
        b.corrupt_blob(&digest, Bytes::from(damaged)).await,
        "{CASE}: hook"
    );
    let mut reader = cache
        .get(&digest)
        .await
        .must("get")
        .unwrap_or_else(|| panic!("{CASE}: get missed"));
    let mut last = None;
    while let Some(item) = reader.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(Error::Corrupt { digest: d, .. })) if d == digest),
        "{CASE}: the stream must end with Corrupt, got {last:?}"
    );
    assert_eq!(
        cache.counters().errors,
        2,
        "{CASE}: errors after the stream"
    );
    assert!(stored(&b).await.is_empty(), "{CASE}: evicted again");
    Outcome::Passed
}

/// A blob shorter than its recorded size is absent and evicted.
pub async fn blob_cache_truncated_blob_is_an_evicted_miss(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_truncated_blob_is_an_evicted_miss";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise(90_000, 8);
    let digest = sha(&data);
    cache.put_bytes(&digest, data.clone()).await.must("put");
    if !b.corrupt_blob(&digest, data.slice(..40_000)).await {
        return Outcome::skipped(CASE, "hook corrupt_blob");
    }
    assert_eq!(
        cache.has(&digest).await.must("has"),
        None,
        "{CASE}: truncated is absent"
    );
    assert_eq!(cache.counters().errors, 1, "{CASE}: counted");
    assert!(stored(&b).await.is_empty(), "{CASE}: evicted");
    assert_eq!(
        cache.get_bytes(&digest).await.must("get_bytes"),
        None,
        "{CASE}: a miss"
    );
    Outcome::Passed
}

/// A manifest reads back with its media type and a note marking its kind.
pub async fn blob_cache_manifest_roundtrips(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_manifest_roundtrips";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#);
    let digest = sha(&manifest);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    cache
        .put_manifest(&digest, manifest.clone(), Some(mt))
        .await
        .must("put_manifest");
    let got = cache
        .get_manifest(&digest)
        .await
        .must("get_manifest")
        .unwrap_or_else(|| panic!("{CASE}: get_manifest missed"));
    assert_eq!(got.data, manifest, "{CASE}: bytes");
    assert_eq!(got.media_type.as_deref(), Some(mt), "{CASE}: media type");
    assert_eq!(
        note(&b, &digest, "kind").await.as_deref(),
        Some("manifest"),
        "{CASE}: kind note"
    );
    assert_eq!(cache.counters().hits, 1, "{CASE}: one hit");
    Outcome::Passed
}

/// Empty, oversized and wrong-digest manifests are refused; nothing is stored.
pub async fn blob_cache_bad_manifest_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_manifest_stores_nothing";
    let (_fixture, backend) = crate::blobs(&h).await;
    let cache = BlobCache::with_options(
        Arc::clone(&backend),
        BlobCacheOptions::new().with_max_manifest_size(1024),
    )
    .must("BlobCache::with_options");
    let r = cache.put_manifest(&sha(b""), Bytes::new(), None).await;
    assert!(
        matches!(r, Err(Error::EmptyManifest { .. })),
        "{CASE}: empty, got {r:?}"
    );
    let r = cache.put_manifest(&sha(b"{}"), "{ }", None).await;
    assert!(
        matches!(r, Err(Error::DigestMismatch { .. })),
        "{CASE}: wrong digest, got {r:?}"
    );
    let big = noise(1025, 9);
    let r = cache.put_manifest(&sha(&big), big.clone(), None).await;
    assert!(
        matches!(r, Err(Error::TooLarge { limit: 1024, .. })),
        "{CASE}: too large, got {r:?}"
    );
    assert!(stored(&backend).await.is_empty(), "{CASE}: nothing stored");
    // A large blob is never handed out as a manifest.
    cache
        .put_bytes(&sha(&big), big.clone())
        .await
        .must("put of a large blob");
    assert_eq!(
        cache.get_manifest(&sha(&big)).await.must("get_manifest"),
        None,
        "{CASE}: large blob is no manifest"
    );
    Outcome::Passed
}

/// A gzip layer is kept compressed and decompressed, each noted against the other, with or without a diff ID.
pub async fn blob_cache_gzip_layer_kept_in_both_forms(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_gzip_layer_kept_in_both_forms";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    // With a diff ID and a media type: one pass.
    let tar = noise(400_000, 10);
    let gz = gzip(&tar);
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = cache
        .put_layer_opts(
            &digest,
            body(&gz, 30_000),
            LayerOptions::new()
                .with_media_type(media_type::OCI_LAYER_GZIP)
                .with_diff_id(diff),
        )
        .await
        .must("put_layer with a diff ID");
    assert_eq!(put.compression, Compression::Gzip, "{CASE}: compression");
    assert_eq!(
        put.compressed.map(|c| c.digest),
        Some(digest),
        "{CASE}: compressed digest"
    );
    assert_eq!(
        (put.decompressed.digest, put.decompressed.size),
        (diff, tar.len() as u64),
        "{CASE}: decompressed"
    );
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: decompressed bytes"
    );
    assert_eq!(
        cache.get_bytes(&digest).await.must("get compressed"),
        Some(gz),
        "{CASE}: compressed bytes"
    );
    assert_linked(&b, &digest, &diff, "gzip", CASE).await;

    // Without either: recognised by its magic, decompressed in a second pass.
    let tar = noise(250_000, 11);
    let gz = gzip(&tar);
    let (digest, diff) = (sha(&gz), sha(&tar));
    let put = cache
        .put_layer(&digest, body(&gz, 7000))
        .await
        .must("put_layer without a diff ID");
    assert_eq!(put.decompressed.digest, diff, "{CASE}: learned diff ID");
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: decompressed bytes"
    );
    assert_linked(&b, &digest, &diff, "gzip", CASE).await;
    assert_eq!(
        stored(&b).await.len(),
        4,
        "{CASE}: two layers, two forms each"
    );
    Outcome::Passed
}

/// The same for a zstd layer.
pub async fn blob_cache_zstd_layer_kept_in_both_forms(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_zstd_layer_kept_in_both_forms";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let tar = noise(300_000, 12);
    let zst = zstd(&tar);
    let (digest, diff) = (sha(&zst), sha(&tar));
    let put = cache
        .put_layer_opts(
            &digest,
            body(&zst, 20_000),
            LayerOptions::new().with_media_type(media_type::OCI_LAYER_ZSTD),
        )
        .await
        .must("put_layer");
    assert_eq!(put.compression, Compression::Zstd, "{CASE}: compression");
    assert_eq!(put.decompressed.digest, diff, "{CASE}: decompressed digest");
    assert_eq!(
        cache.get_bytes(&diff).await.must("get decompressed"),
        Some(tar),
        "{CASE}: bytes"
    );
    assert_linked(&b, &digest, &diff, "zstd", CASE).await;
    Outcome::Passed
}

/// Wrong digest, wrong diff ID, damaged data and unsupported compression are refused; nothing is stored.
pub async fn blob_cache_bad_layer_stores_nothing(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_bad_layer_stores_nothing";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let tar = noise(200_000, 13);
    let gz = gzip(&tar);

    let r = cache
        .put_layer(&sha(b"not this layer"), body(&gz, 8192))
        .await;
    assert!(
        matches!(r, Err(Error::DigestMismatch { .. })),
        "{CASE}: wrong digest, got {r:?}"
    );

    let wrong_diff = sha(b"another tar");
    let r = cache
        .put_layer_opts(
            &sha(&gz),
            body(&gz, 8192),
            LayerOptions::new().with_diff_id(wrong_diff),
        )
        .await;
    assert!(
        matches!(r, Err(Error::DecompressedMismatch { expected, .. }) if expected == wrong_diff),
        "{CASE}: wrong diff ID, got {r:?}"
    );

    let mut damaged = gz.to_vec();
    let n = damaged.len();
    damaged[n - 8] ^= 0xff; // the CRC-32 in the trailer
    let damaged = Bytes::from(damaged);
    let r = cache.put_layer(&sha(&damaged), body(&damaged, 8192)).await;
    assert!(
        matches!(r, Err(Error::Decompress { .. })),
        "{CASE}: bad checksum, got {r:?}"
    );

    let r = cache
        .put_layer_opts(
            &sha(&tar),
            body(&tar, 8192),
            LayerOptions::new().with_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
        )
        .await;
    assert!(
        matches!(r, Err(Error::UnsupportedCompression { .. })),
        "{CASE}: bzip2, got {r:?}"
    );
    let xz: Bytes = [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &tar[..1000]]
        .concat()
        .into();
    let r = cache.put_layer(&sha(&xz), body(&xz, 100)).await;
    assert!(
        matches!(r, Err(Error::UnsupportedCompression { .. })),
        "{CASE}: xz, got {r:?}"
    );

    assert!(stored(&b).await.is_empty(), "{CASE}: nothing stored");
    Outcome::Passed
}

fn layer(digest: Digest, size: usize, media_type: &str) -> LayerInfo {
    LayerInfo {
        digest,
        size: size as u64,
        media_type: media_type.to_owned(),
    }
}

/// Layer lists switch to the cached variant on request, keep their layers when signed or preserved.
pub async fn blob_cache_substitution_follows_mode(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_substitution_follows_mode";
    let (_b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let (tar1, tar2) = (noise(100_000, 14), noise(80_000, 15));
    let (gz1, gz2) = (gzip(&tar1), gzip(&tar2));
    cache
        .put_layer(&sha(&gz1), body(&gz1, 16_384))
        .await
        .must("put_layer 1");
    cache
        .put_layer(&sha(&gz2), body(&gz2, 16_384))
        .await
        .must("put_layer 2");
    let elsewhere = layer(sha(b"not cached"), 3, media_type::OCI_LAYER_GZIP);
    let compressed = vec![
        layer(sha(&gz1), gz1.len(), media_type::OCI_LAYER_GZIP),
        layer(sha(&gz2), gz2.len(), media_type::DOCKER_LAYER_GZIP),
        elsewhere.clone(),
    ];
    let decompressed = vec![
        layer(sha(&tar1), tar1.len(), media_type::OCI_LAYER),
        layer(sha(&tar2), tar2.len(), media_type::DOCKER_LAYER),
        elsewhere,
    ];
    let sub = |layers: Vec<LayerInfo>, mode, signed| {
        let cache = cache.clone();
        async move {
            cache
                .substitute(&layers, mode, signed)
                .await
                .must("substitute")
        }
    };
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Decompress, false).await,
        decompressed,
        "{CASE}: decompress"
    );
    assert_eq!(
        sub(decompressed.clone(), LayerCompression::Compress, false).await,
        compressed,
        "{CASE}: compress"
    );
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Preserve, false).await,
        compressed,
        "{CASE}: preserve"
    );
    assert_eq!(
        sub(compressed.clone(), LayerCompression::Decompress, true).await,
        compressed,
        "{CASE}: signed"
    );
    assert_eq!(
        sub(decompressed.clone(), LayerCompression::Compress, true).await,
        decompressed,
        "{CASE}: signed"
    );
    Outcome::Passed
}

/// Eight racing puts of one digest leave one whole blob; racing readers never see part of it.
pub async fn blob_cache_concurrent_puts_are_idempotent(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_concurrent_puts_are_idempotent";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let data = noise((1 << 20) + 77, 16);
    let digest = sha(&data);
    let puts: Vec<_> = (0..8)
        .map(|i| {
            let (cache, data) = (cache.clone(), data.clone());
            tokio::spawn(async move { cache.put(&digest, body(&data, 8192 + i * 4096)).await })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, data) = (cache.clone(), data.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    if let Some(got) = cache.get_bytes(&digest).await.must("get_bytes") {
                        assert!(got == data, "{CASE}: a reader saw a partial or wrong blob");
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for p in puts {
        let info = p.await.must("put task").must("concurrent put");
        assert_eq!(
            info.size,
            data.len() as u64,
            "{CASE}: every put reports the size"
        );
    }
    for r in readers {
        r.await.must("reader task");
    }
    assert_eq!(
        stored(&b).await,
        vec![BlobInfo {
            digest,
            size: data.len() as u64
        }],
        "{CASE}: one whole blob"
    );
    assert_eq!(cache.counters().errors, 0, "{CASE}: no errors");
    Outcome::Passed
}

/// Blobs and their notes put through one handle are served by another.
pub async fn blob_cache_second_handle_sees_blobs(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_second_handle_sees_blobs";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let Some(other) = b.reopen().await else {
        return Outcome::skipped(CASE, "hook reopen");
    };
    let tar = noise(150_000, 17);
    let tar_digest = sha(&tar);
    let gz = gzip(&tar);
    cache
        .put_layer(&sha(&gz), body(&gz, 10_000))
        .await
        .must("put_layer");
    let second = BlobCache::new(other).must("BlobCache over the second handle");
    assert_eq!(
        second.get_bytes(&tar_digest).await.must("get_bytes"),
        Some(tar),
        "{CASE}: decompressed copy"
    );
    let variant = second
        .variant(&sha(&gz), Compression::None)
        .await
        .must("variant");
    assert_eq!(
        variant.map(|v| v.digest),
        Some(tar_digest),
        "{CASE}: note seen by the second handle"
    );
    Outcome::Passed
}

/// Stats count blobs and bytes; clear removes them all and says how many.
pub async fn blob_cache_stats_and_clear(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "blob_cache_stats_and_clear";
    let (b, cache) = match setup(&h, CASE).await {
        Ok(s) => s,
        Err(skip) => return skip,
    };
    let sizes = [1000usize, 2000, 3000];
    for (i, size) in sizes.iter().enumerate() {
        let data = noise(*size, 20 + i as u64);
        cache.put_bytes(&sha(&data), data).await.must("put");
    }
    let stats = cache.stats().await.must("stats");
    assert_eq!((stats.blobs, stats.bytes), (3, 6000), "{CASE}: stats");
    let cleared = cache.clear().await.must("clear");
    assert_eq!((cleared.blobs, cleared.bytes), (3, 6000), "{CASE}: cleared");
    assert!(stored(&b).await.is_empty(), "{CASE}: empty after clear");
    let stats = cache.stats().await.must("stats after clear");
    assert_eq!(
        (stats.blobs, stats.bytes),
        (0, 0),
        "{CASE}: stats after clear"
    );
    Outcome::Passed
}
