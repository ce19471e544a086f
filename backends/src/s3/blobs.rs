//! Blobs in `PREFIX/blobs/<alg>/<hex>`, with notes in
//! `PREFIX/blobnotes/<alg>/<hex>/<key>`, one object per note.
//!
//! Uploads stream: one PUT for small blobs, a multipart upload in
//! fixed-size parts for large ones, and nothing visible unless the body ends
//! cleanly.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Digest, Key, MetadataKey, Timestamp,
    Usage, normalize_notes,
};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload};

use super::error::Error;
use super::usage::modified;
use super::{S3Backend, is_not_found};

#[async_trait]
impl BlobBackend for S3Backend {
    async fn put_blob(
        &self,
        digest: &Digest,
        body: ByteStream,
    ) -> imagecache_core::Result<BlobInfo> {
        let path = self.blob_path(digest);
        let key = Key::Blob(*digest);
        // An existing blob has the same bytes (the digest says so); keep it.
        match self.inner.store.head(&path).await {
            Ok(meta) => {
                return Ok(BlobInfo {
                    digest: *digest,
                    size: meta.size,
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store("head", key, e).into()),
        }
        let size = put(
            &self.inner.store,
            &path,
            &key,
            body,
            self.inner.tuning.multipart_threshold,
            self.inner.tuning.part_size,
        )
        .await?;
        Ok(BlobInfo {
            digest: *digest,
            size,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobReader> {
        let key = Key::Blob(*digest);
        let result = self
            .inner
            .store
            .get(&self.blob_path(digest))
            .await
            .map_err(|e| Error::store("get", key.clone(), e))?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(move |e| Error::store("read", key.clone(), e).into())
            .boxed();
        Ok(BlobReader { size, stream })
    }

    async fn head_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobInfo> {
        let meta = self
            .inner
            .store
            .head(&self.blob_path(digest))
            .await
            .map_err(|e| Error::store("head", Key::Blob(*digest), e))?;
        Ok(BlobInfo {
            digest: *digest,
            size: meta.size,
        })
    }

    async fn delete_blob(&self, digest: &Digest) -> imagecache_core::Result<()> {
        let key = Key::Blob(*digest);
        match self.inner.store.delete(&self.blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store("delete", key, e).into()),
        }
        let notes = self.path(&["blobnotes", digest.algorithm().as_str(), &digest.hex()]);
        self.delete_under(&notes, "delete notes of", key).await?;
        Ok(())
    }

    async fn list_blobs(&self) -> imagecache_core::Result<Vec<BlobInfo>> {
        let listed = self.list_blobs_with_times().await?;
        Ok(listed.into_iter().map(|(info, _)| info).collect())
    }

    /// Each blob with its object's last-modified time: when its upload
    /// completed, since a blob object is never written again.
    async fn list_blob_times(&self) -> imagecache_core::Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        Ok(self.list_blobs_with_times().await?)
    }

    /// The sizes of the objects under `blobs/` ([`UsageKind::Blobs`], one
    /// item per blob) and `blobnotes/` ([`UsageKind::Notes`], one item per
    /// note). No [`UsageKind::Temp`]: the parts of multipart uploads never
    /// completed are not listed through object_store, so they are left out
    /// (a bucket lifecycle rule that aborts incomplete uploads removes
    /// them). No total.
    ///
    /// [`UsageKind::Blobs`]: imagecache_core::UsageKind::Blobs
    /// [`UsageKind::Notes`]: imagecache_core::UsageKind::Notes
    /// [`UsageKind::Temp`]: imagecache_core::UsageKind::Temp
    async fn blob_usage(&self) -> imagecache_core::Result<Usage> {
        Ok(self.measure_blobs().await?)
    }

    async fn set_blob_notes(
        &self,
        digest: &Digest,
        notes: BlobNotes,
    ) -> imagecache_core::Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        self.head_blob(digest).await?;
        // One object per note, all written at once: a note is one small
        // PUT, and the round trips overlap instead of adding up.
        let puts = normalize_notes(notes).into_iter().map(|(key, value)| {
            let path = self.note_path(digest, &key);
            async move {
                self.inner
                    .store
                    .put(&path, PutPayload::from(value))
                    .await
                    .map_err(|e| {
                        Error::store(
                            "put",
                            Key::BlobNote {
                                digest: *digest,
                                key,
                            },
                            e,
                        )
                    })
            }
        });
        futures::future::try_join_all(puts).await?;
        Ok(())
    }

    async fn blob_notes(&self, digest: &Digest) -> imagecache_core::Result<BlobNotes> {
        let dir = self.path(&["blobnotes", digest.algorithm().as_str(), &digest.hex()]);
        let objects = self.list_objects(&dir, Key::Blob(*digest)).await?;
        let reads = objects.into_iter().filter_map(|meta| {
            let key = {
                let mut parts = meta.location.prefix_match(&dir)?;
                let key = MetadataKey::new(parts.next()?.as_ref()).ok()?;
                if parts.next().is_some() {
                    return None;
                }
                key
            };
            let note_key = Key::BlobNote {
                digest: *digest,
                key: key.clone(),
            };
            Some(async move {
                match self.get_bytes(&meta.location, note_key).await {
                    Ok(value) => Ok(Some((key, value))),
                    // Deleted between the listing and the read.
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        });
        let mut notes: BlobNotes = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        notes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(notes)
    }

    async fn get_blob_note(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        let note_key = Key::BlobNote {
            digest: *digest,
            key: key.clone(),
        };
        Ok(self
            .get_bytes(&self.note_path(digest, key), note_key)
            .await?)
    }
}

/// The digest of an object under `blobs/` (`dir`), if it is a blob's.
pub(super) fn digest_of(dir: &Path, meta: &ObjectMeta) -> Option<Digest> {
    let parts: Vec<String> = meta
        .location
        .prefix_match(dir)?
        .map(|p| p.as_ref().to_owned())
        .collect();
    let [alg, hex] = parts.as_slice() else {
        return None;
    };
    match Digest::parse(&format!("{alg}:{hex}")) {
        Ok(digest) => Some(digest),
        Err(e) => {
            tracing::warn!(object = %meta.location, error = %e, "ignoring a stray object under blobs/");
            None
        }
    }
}

impl S3Backend {
    /// Every blob with its object's last-modified time, sorted by digest.
    async fn list_blobs_with_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>, Error> {
        let dir = self.path(&["blobs"]);
        let objects = self.list_objects(&dir, Key::Other(dir.to_string())).await?;
        let mut blobs: Vec<(BlobInfo, Option<Timestamp>)> = objects
            .iter()
            .filter_map(|meta| {
                let digest = digest_of(&dir, meta)?;
                let info = BlobInfo {
                    digest,
                    size: meta.size,
                };
                Some((info, modified(meta)))
            })
            .collect();
        blobs.sort_by_key(|a| a.0);
        Ok(blobs)
    }
}

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
async fn put(
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
