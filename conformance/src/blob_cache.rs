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
//! * `blob_cache_truncated_blob_is_an_evicted_miss` — (hook `corrupt_blob`, and `corrupt_note` when offered) a blob whose size differs from its recorded size is absent and evicted, unless its bytes verify: then the size note was what was damaged, and it is set right.
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

mod damage;
mod handles;
mod layers;
mod manifests;
mod puts;

pub use damage::*;
pub use handles::*;
pub use layers::*;
pub use manifests::*;
pub use puts::*;

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

    /// Replaces one note of a stored blob; `false` when the fixture has no
    /// such hook. A hook that is offered but fails fails the case.
    async fn corrupt_note(&self, digest: &Digest, key: &str, data: Bytes) -> bool {
        if !self.fixture.damage().note {
            return false;
        }
        let key = check::key(key);
        self.fixture
            .corrupt_note(digest, &key, data)
            .await
            .must(format_args!("corrupt_note {key} of {digest}"));
        true
    }

    /// A second blob backend on the same namespace, if it can reopen.
    async fn reopen(&self) -> Option<Backend> {
        self.fixture.reopen().await?.blobs()
    }
}

/// A fresh blob backend and a cache over it (the runner skips this group
/// for harnesses without blobs).
async fn setup(h: &Arc<dyn Harness>, case: &str) -> (Subject, BlobCache) {
    let (fixture, blobs) = crate::blobs(h).await;
    match BlobCache::new(Arc::clone(&blobs)) {
        Ok(cache) => (Subject { fixture, blobs }, cache),
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
