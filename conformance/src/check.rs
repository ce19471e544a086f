//! Small assertion helpers shared by the cases.
//!
//! Cases fail by panicking with a message that says what was expected and
//! what was found; these helpers keep those messages uniform and point the
//! panic location at the line of the case that failed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{ByteStream, Content, Error, ImageId, MetadataKey};

/// Unwraps a result the case needs, failing the case with `what` otherwise.
pub(crate) trait Must<T> {
    /// The value, or a panic naming `what` and the error.
    fn must(self, what: impl fmt::Display) -> T;
}

impl<T, E: fmt::Display + fmt::Debug> Must<T> for Result<T, E> {
    #[track_caller]
    fn must(self, what: impl fmt::Display) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
        }
    }
}

impl<T> Must<T> for Option<T> {
    #[track_caller]
    fn must(self, what: impl fmt::Display) -> T {
        match self {
            Some(v) => v,
            None => panic!("{what}: expected a value, found none"),
        }
    }
}

/// Unwraps the error of a result that must fail, failing the case with
/// `what` when it succeeded.
pub(crate) trait MustFail<E> {
    /// The error, or a panic naming `what` and the value.
    fn must_fail(self, what: impl fmt::Display) -> E;
}

impl<T: fmt::Debug, E> MustFail<E> for Result<T, E> {
    #[track_caller]
    fn must_fail(self, what: impl fmt::Display) -> E {
        match self {
            Ok(v) => panic!("{what}: expected an error, got {v:?}"),
            Err(e) => e,
        }
    }
}

/// Fails the case unless `result` is an error matching the pattern; returns
/// the error so the case can look at its text.
macro_rules! assert_err {
    ($result:expr, $pat:pat $(if $guard:expr)?, $($what:tt)+) => {{
        match $result {
            Ok(value) => panic!(
                "{}: expected an error matching `{}`, got Ok({:?})",
                format_args!($($what)+),
                stringify!($pat $(if $guard)?),
                value,
            ),
            Err(err) => {
                if !matches!(&err, $pat $(if $guard)?) {
                    panic!(
                        "{}: expected an error matching `{}`, got {:?} (\"{}\")",
                        format_args!($($what)+),
                        stringify!($pat $(if $guard)?),
                        err,
                        err,
                    );
                }
                err
            }
        }
    }};
}
pub(crate) use assert_err;

/// Fails the case unless the error's text contains `needle` (Docker's
/// well-known error texts must survive in ours).
#[track_caller]
pub(crate) fn assert_text(err: &Error, needle: &str) {
    let text = err.to_string();
    assert!(
        text.contains(needle),
        "error text {text:?} should contain {needle:?}"
    );
}

/// A metadata key the case knows to be valid.
#[track_caller]
pub(crate) fn key(name: &str) -> MetadataKey {
    MetadataKey::new(name).must(format_args!("metadata key {name:?}"))
}

/// A small image config unique to `tag`, shaped like a real one.
pub(crate) fn config(tag: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","comment":"{tag}","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    ))
}

/// The [`Content`] of [`config`]`(tag)`.
#[track_caller]
pub(crate) fn content(tag: &str) -> Content {
    Content::new(config(tag)).must(format_args!("content {tag:?}"))
}

/// The ID of [`config`]`(tag)`, computed without going through a backend.
pub(crate) fn id_of(tag: &str) -> ImageId {
    ImageId::of_config(&config(tag))
}

/// Lowercase hex of SHA-256 over `data`, computed here rather than by the
/// code under test, so a wrong digest in the core cannot hide itself.
pub(crate) fn independent_sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hash: [u8; 32] = sha2::Sha256::digest(data).into();
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (SplitMix64) from `seed`.
pub(crate) fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A seed that differs from run to run, so random data really varies.
pub(crate) fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Only the low bits vary between runs; folding keeps them.
    (nanos as u64) ^ ((nanos >> 64) as u64) ^ u64::from(std::process::id())
}

/// A blob body that yields `chunks` and ends cleanly.
pub(crate) fn body(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// A blob body that yields `chunks`, letting other tasks run between
/// them, so that racing writers interleave.
pub(crate) fn slow_body(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks).then(|chunk| async move {
        tokio::task::yield_now().await;
        Ok(chunk)
    }))
}

/// A blob body that yields `chunks` and then fails with `err`.
pub(crate) fn failing_body(chunks: Vec<Bytes>, err: Error) -> ByteStream {
    let items = chunks.into_iter().map(Ok).chain(std::iter::once(Err(err)));
    Box::pin(futures::stream::iter(items))
}

/// Splits `data` into chunks of at most `size` bytes.
pub(crate) fn chunks(data: &Bytes, size: usize) -> Vec<Bytes> {
    (0..data.len())
        .step_by(size.max(1))
        .map(|start| data.slice(start..data.len().min(start + size.max(1))))
        .collect()
}
