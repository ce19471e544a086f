//! Reading cached blobs back, verifying them as they stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use imagecache_core::{ByteStream, Digest};

use super::Inner;
use super::error::Error;
use super::pipe::{Check, ReadAhead};

/// A cached blob being read: a stream of its bytes that checks them against
/// the digest as they pass.
///
/// The bytes cannot be known good until the last one has been hashed, so
/// the verdict comes at the end: a clean end of the stream means every byte
/// matched the digest and the size. When they do not, the last item is
/// [`Error::Corrupt`]; by the time it is yielded the blob has been evicted
/// from the cache and counted in [`Counters::errors`](super::Counters), so
/// the next lookup is a clean miss. A consumer that must not act on bad
/// bytes either buffers until the end ([`VerifiedReader::bytes`],
/// [`BlobCache::get_bytes`](super::BlobCache::get_bytes)) or writes to a
/// place it can discard ([`BlobCache::copy_to`](super::BlobCache::copy_to)).
///
/// A backend failure while reading is yielded as [`Error::Read`] and does
/// not evict the blob, since the bytes may be fine.
pub struct VerifiedReader {
    digest: Digest,
    size: u64,
    stream: BoxStream<'static, Result<Bytes, Error>>,
}

impl std::fmt::Debug for VerifiedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

struct ReadState {
    inner: Arc<Inner>,
    digest: Digest,
    body: ReadAhead,
    check: Option<Check>,
}

impl VerifiedReader {
    pub(super) fn new(inner: Arc<Inner>, digest: Digest, size: u64, body: ByteStream) -> Self {
        let state = ReadState {
            inner,
            digest,
            body: ReadAhead::new(body),
            check: Some(Check::new(digest, Some(size))),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            let mut check = st.check.take()?;
            match st.body.next().await {
                Some(Ok(chunk)) => match check.update(&chunk) {
                    Ok(()) => {
                        metrics::counter!(crate::metric_names::BLOB_BYTES_READ)
                            .increment(chunk.len() as u64);
                        st.check = Some(check);
                        Some((Ok(chunk), st))
                    }
                    Err(err) => {
                        let err = st.inner.corrupt(st.digest, describe(&err)).await;
                        Some((Err(err), st))
                    }
                },
                Some(Err(source)) => {
                    let err = st.inner.read_failed(st.digest, source);
                    Some((Err(err), st))
                }
                None => match check.finish() {
                    Ok(_) => None,
                    Err(err) => {
                        let err = st.inner.corrupt(st.digest, describe(&err)).await;
                        Some((Err(err), st))
                    }
                },
            }
        });
        Self {
            digest,
            size,
            stream: Box::pin(stream),
        }
    }

    /// The digest being read.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size the backend reports; a stream of another length is corrupt.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the whole blob into memory, returning it only if it verified.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (the blob was evicted) or [`Error::Read`].
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        // The size was checked against the stream as it passed, so it is a
        // safe capacity only up to a bound; beyond it, let the buffer grow.
        let capacity = usize::try_from(self.size.min(64 << 20)).unwrap_or(0);
        let mut out = Vec::with_capacity(capacity);
        while let Some(chunk) = self.stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }

    /// The stream with contract errors, ready to be handed to another
    /// backend's [`put_blob`](imagecache_core::BlobBackend::put_blob): a
    /// corrupt blob then ends the body with an error and is not published
    /// there either.
    pub fn into_byte_stream(self) -> ByteStream {
        Box::pin(
            self.stream
                .map(|item| item.map_err(imagecache_core::Error::from)),
        )
    }
}

/// Turns a failed size or digest check of stored bytes into a reason.
fn describe(err: &Error) -> String {
    match err {
        Error::DigestMismatch { actual, .. } => format!("the stored bytes hash to {actual}"),
        Error::Truncated {
            expected, actual, ..
        } => format!("the stored blob ended after {actual} of {expected} bytes"),
        Error::TooLarge { size, limit, .. } => {
            format!("the stored blob has at least {size} bytes, more than the {limit} reported")
        }
        other => other.to_string(),
    }
}

impl Stream for VerifiedReader {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}
