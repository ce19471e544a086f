//! Bounded pipes between the stages of a put, and the digest check that
//! runs as bytes pass.
//!
//! A put is a small pipeline: a *feeder* pulls the caller's body, hashes
//! it and pushes it into a bounded channel; the backend drains the other
//! end. Feeder and backend run concurrently (joined in one task), so while
//! the backend waits for a write to finish the feeder hashes the next
//! chunk. At most [`DEPTH`] chunks of at most [`CHUNK`] bytes are in flight
//! per pipe, which is what keeps memory flat however large the blob is.
//!
//! Every pipe ends with an explicit [`Msg::End`]. A receiver that sees its
//! channel close without one reports [`imagecache_core::Error::Cancelled`],
//! so a backend can never mistake a feeder that died for a body that ended
//! cleanly, and never publishes unverified bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use imagecache_core::{ByteStream, Digest, Hasher};
use tokio::sync::mpsc;

use super::error::Error;

/// Largest chunk handed to a backend or a decoder; larger chunks are split
/// (without copying).
pub(super) const CHUNK: usize = 1 << 20;

/// Chunks buffered per pipe and per read-ahead.
pub(super) const DEPTH: usize = 4;

/// One message on a pipe.
#[derive(Debug)]
pub(super) enum Msg {
    /// The next bytes.
    Chunk(Bytes),
    /// The end of the body: `Ok` when every check passed, otherwise the
    /// error the backend must see (it then stores nothing).
    End(std::result::Result<(), imagecache_core::Error>),
}

/// A bounded pipe.
pub(super) fn pipe() -> (mpsc::Sender<Msg>, mpsc::Receiver<Msg>) {
    mpsc::channel(DEPTH)
}

/// The receiving end of a pipe as a backend body.
pub(super) fn receiver_stream(rx: mpsc::Receiver<Msg>) -> ByteStream {
    let stream = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Chunk(bytes)) => Some((Ok(bytes), Some(rx))),
            Some(Msg::End(Ok(()))) => None,
            Some(Msg::End(Err(e))) => Some((Err(e), None)),
            None => Some((Err(imagecache_core::Error::Cancelled), None)),
        }
    });
    Box::pin(stream)
}

/// Splits a chunk into pieces of at most [`CHUNK`] bytes, sharing its memory.
pub(super) fn split(mut bytes: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            None
        } else {
            Some(bytes.split_to(bytes.len().min(CHUNK)))
        }
    })
}

/// Hashes and counts bytes as they pass, against an expected digest and
/// optionally an expected size.
#[derive(Debug)]
pub(super) struct Check {
    digest: Digest,
    hasher: Hasher,
    seen: u64,
    expected_size: Option<u64>,
}

impl Check {
    pub(super) fn new(digest: Digest, expected_size: Option<u64>) -> Self {
        Self {
            digest,
            hasher: digest.hasher(),
            seen: 0,
            expected_size,
        }
    }

    /// Feeds bytes; fails as soon as more bytes than announced arrive.
    pub(super) fn update(&mut self, data: &[u8]) -> Result<(), Error> {
        self.seen += data.len() as u64;
        if let Some(limit) = self.expected_size
            && self.seen > limit
        {
            return Err(Error::TooLarge {
                digest: self.digest,
                size: self.seen,
                limit,
            });
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Checks size and digest once the body has ended; returns the size.
    pub(super) fn finish(self) -> Result<u64, Error> {
        if let Some(expected) = self.expected_size
            && self.seen < expected
        {
            return Err(Error::Truncated {
                digest: self.digest,
                expected,
                actual: self.seen,
            });
        }
        let actual = self.hasher.finish();
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        Ok(self.seen)
    }
}

/// What the backend sees when a feeder stops on an error of ours.
pub(super) fn backend_view(err: &Error) -> imagecache_core::Error {
    match err {
        Error::DigestMismatch { expected, actual } => imagecache_core::Error::DigestMismatch {
            expected: *expected,
            actual: *actual,
        },
        Error::Truncated {
            digest,
            expected,
            actual,
        } => imagecache_core::Error::Truncated {
            key: imagecache_core::Key::Blob(*digest),
            expected: *expected,
            actual: *actual,
        },
        Error::TooLarge {
            digest,
            size,
            limit,
        } => imagecache_core::Error::TooLarge {
            key: imagecache_core::Key::Blob(*digest),
            size: *size,
            limit: *limit,
        },
        _ => imagecache_core::Error::Cancelled,
    }
}

/// How a feeder finished.
#[derive(Debug)]
pub(super) enum Fed {
    /// The whole body passed every check; its size.
    Verified(u64),
    /// Every receiver hung up before the end (a backend that already had
    /// the blob and skipped the body). Nothing more was read.
    Abandoned,
}

/// Where a feeder's body comes from, to name its failures correctly.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// The caller's stream: its errors are [`Error::Source`].
    Caller,
    /// A blob read back from the backend: its errors are [`Error::Read`].
    Stored,
}

impl Origin {
    pub(super) fn error(self, digest: Digest, source: imagecache_core::Error) -> Error {
        match self {
            Self::Caller => Error::Source { digest, source },
            Self::Stored => Error::Read { digest, source },
        }
    }
}

/// Pulls `body` through `check` into `tx`, ending the pipe with the verdict.
pub(super) async fn feed(
    mut body: ByteStream,
    mut check: Check,
    tx: mpsc::Sender<Msg>,
    origin: Origin,
    digest: Digest,
) -> Result<Fed, Error> {
    while let Some(item) = body.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(source) => {
                let _ = tx
                    .send(Msg::End(Err(imagecache_core::Error::Cancelled)))
                    .await;
                return Err(origin.error(digest, source));
            }
        };
        for piece in split(chunk) {
            if let Err(err) = check.update(&piece) {
                let _ = tx.send(Msg::End(Err(backend_view(&err)))).await;
                return Err(err);
            }
            if tx.send(Msg::Chunk(piece)).await.is_err() {
                return Ok(Fed::Abandoned);
            }
        }
    }
    match check.finish() {
        Ok(size) => {
            // A receiver that already hung up does not change the verdict.
            let _ = tx.send(Msg::End(Ok(()))).await;
            Ok(Fed::Verified(size))
        }
        Err(err) => {
            let _ = tx.send(Msg::End(Err(backend_view(&err)))).await;
            Err(err)
        }
    }
}

/// Keeps up to [`DEPTH`] items of a stream ready ahead of the consumer.
///
/// Polling the inner stream until it is pending before handing out an item
/// means the backend's next read is already under way while the consumer
/// hashes the current chunk, so reading and hashing overlap.
pub(super) struct ReadAhead {
    inner: Option<ByteStream>,
    queue: VecDeque<imagecache_core::Result<Bytes>>,
}

impl ReadAhead {
    pub(super) fn new(inner: ByteStream) -> Self {
        Self {
            inner: Some(inner),
            queue: VecDeque::with_capacity(DEPTH),
        }
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("queued", &self.queue.len())
            .field("ended", &self.inner.is_none())
            .finish()
    }
}

impl Stream for ReadAhead {
    type Item = imagecache_core::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while this.queue.len() < DEPTH {
            let Some(inner) = this.inner.as_mut() else {
                break;
            };
            match inner.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => {
                    let failed = item.is_err();
                    this.queue.push_back(item);
                    if failed {
                        this.inner = None;
                    }
                }
                Poll::Ready(None) => this.inner = None,
                Poll::Pending => break,
            }
        }
        match this.queue.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if this.inner.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_and_bounds() {
        let data = Bytes::from(vec![7u8; CHUNK * 2 + 5]);
        let pieces: Vec<Bytes> = split(data.clone()).collect();
        assert_eq!(
            pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![CHUNK, CHUNK, 5]
        );
        assert_eq!(pieces.concat(), data.to_vec());
        assert_eq!(split(Bytes::new()).count(), 0);
    }

    #[test]
    fn check_reports_each_failure() {
        let d = Digest::sha256(b"hello");
        let mut c = Check::new(d, Some(5));
        c.update(b"hel").unwrap();
        assert!(matches!(
            c.finish(),
            Err(Error::Truncated {
                expected: 5,
                actual: 3,
                ..
            })
        ));
        let mut c = Check::new(d, Some(5));
        assert!(matches!(
            c.update(b"hello!"),
            Err(Error::TooLarge { limit: 5, .. })
        ));
        let mut c = Check::new(d, None);
        c.update(b"hellO").unwrap();
        assert!(matches!(c.finish(), Err(Error::DigestMismatch { .. })));
        let mut c = Check::new(d, None);
        c.update(b"he").unwrap();
        c.update(b"llo").unwrap();
        assert_eq!(c.finish().unwrap(), 5);
    }

    #[tokio::test]
    async fn receiver_without_end_is_an_error() {
        let (tx, rx) = pipe();
        tx.send(Msg::Chunk(Bytes::from_static(b"x"))).await.unwrap();
        drop(tx);
        let items: Vec<_> = receiver_stream(rx).collect().await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(imagecache_core::Error::Cancelled)));
    }

    #[tokio::test]
    async fn read_ahead_keeps_order() {
        let chunks: Vec<imagecache_core::Result<Bytes>> =
            (0..20u8).map(|i| Ok(Bytes::from(vec![i; 3]))).collect();
        let out: Vec<Bytes> = ReadAhead::new(Box::pin(futures::stream::iter(chunks)))
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(out.len(), 20);
        assert!(out.iter().enumerate().all(|(i, b)| b[0] == i as u8));
    }
}
