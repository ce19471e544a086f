//! Streaming blob uploads: one PUT for small blobs, a multipart upload in
//! fixed-size parts for large ones, and nothing visible unless the body ends
//! cleanly.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{ByteStream, Key};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt as _, PutPayload};

use super::error::Error;

/// Parts uploaded at once; together with the part being filled this bounds
/// the memory of one upload to about three parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Bytes gathered from the body, kept as the chunks they arrived in.
#[derive(Default)]
struct Pending {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Takes exactly `size` bytes (or everything, if less is pending).
    fn take(&mut self, size: usize) -> PutPayload {
        let mut taken = Vec::new();
        let mut need = size.min(self.len);
        self.len -= need;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        while need > 0 {
            let Some(mut chunk) = rest.next() else { break };
            if chunk.len() > need {
                let tail = chunk.split_off(need);
                self.chunks.push(tail);
            }
            need -= chunk.len();
            taken.push(chunk);
        }
        self.chunks.extend(rest);
        taken.into_iter().collect()
    }
}

/// A multipart upload that is aborted if it is dropped before it completes,
/// so that an upload abandoned by a cancelled task leaves no parts behind.
struct Upload {
    inner: Option<Box<dyn MultipartUpload>>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(mut upload) = self.inner.take() {
            // Dropped mid-way (the caller's future was cancelled): the object
            // never became visible, but the server still holds the parts.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %e, "could not abort an abandoned multipart upload");
                    }
                });
            }
        }
    }
}

/// Stores `body` at `path`; returns the number of bytes stored.
pub(super) async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    key: &Key,
    mut body: ByteStream,
    threshold: usize,
    part_size: usize,
) -> Result<u64, Error> {
    let mut pending = Pending::default();
    // Gather up to the threshold: a smaller blob goes up in one request.
    while pending.len < threshold {
        match body.try_next().await.map_err(Error::Body)? {
            Some(chunk) => pending.push(chunk),
            None => {
                let size = pending.len as u64;
                let payload = pending.take(pending.len);
                store
                    .put(path, payload)
                    .await
                    .map_err(|e| Error::store("put", key.clone(), e))?;
                return Ok(size);
            }
        }
    }

    let upload = store
        .put_multipart(path)
        .await
        .map_err(|e| Error::store("start upload of", key.clone(), e))?;
    let mut upload = Upload {
        inner: Some(upload),
    };
    let streamed = stream_parts(&mut upload, pending, body, key, part_size).await;
    let Some(mut inner) = upload.inner.take() else {
        return streamed;
    };
    let result = match streamed {
        Ok(size) => inner
            .complete()
            .await
            .map(|_| size)
            .map_err(|e| Error::store("complete upload of", key.clone(), e)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Nothing became visible; free the parts the server holds.
        if let Err(e) = inner.abort().await {
            let abort = Error::store("abort upload of", key.clone(), e);
            tracing::warn!(error = %abort, "could not abort a failed multipart upload");
        }
    }
    result
}

async fn stream_parts(
    upload: &mut Upload,
    mut pending: Pending,
    mut body: ByteStream,
    key: &Key,
    part_size: usize,
) -> Result<u64, Error> {
    let mut in_flight: FuturesUnordered<object_store::UploadPart> = FuturesUnordered::new();
    let mut size = pending.len as u64;
    let mut done = false;
    loop {
        // Send every full part (and, at the end, the remainder).
        while pending.len >= part_size || (done && pending.len > 0) {
            while in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(r) = in_flight.next().await {
                    r.map_err(|e| Error::store("upload part of", key.clone(), e))?;
                }
            }
            let payload = pending.take(part_size);
            let Some(u) = upload.inner.as_mut() else {
                break;
            };
            in_flight.push(u.put_part(payload));
        }
        if done {
            break;
        }
        match body.try_next().await.map_err(Error::Body)? {
            Some(chunk) => {
                size += chunk.len() as u64;
                pending.push(chunk);
            }
            None => done = true,
        }
    }
    while let Some(r) = in_flight.next().await {
        r.map_err(|e| Error::store("upload part of", key.clone(), e))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_takes_exact_sizes_across_chunks() {
        let mut p = Pending::default();
        p.push(Bytes::from_static(b"abc"));
        p.push(Bytes::from_static(b"defg"));
        p.push(Bytes::from_static(b"h"));
        let first: Bytes = p.take(5).into();
        assert_eq!(&first[..], b"abcde");
        assert_eq!(p.len, 3);
        let rest: Bytes = p.take(10).into();
        assert_eq!(&rest[..], b"fgh");
        assert_eq!(p.len, 0);
    }
}
