//! Blobs, buffered whole, and their notes.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Digest, Error, Key, MetadataKey,
    Result, Timestamp, Usage, UsageKind,
};

use super::MemoryBackend;

#[async_trait]
impl BlobBackend for MemoryBackend {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        // Buffer outside the lock; publish only once the body has ended cleanly.
        let mut buf = BytesMut::new();
        let mut body = body;
        while let Some(chunk) = body.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        let data = buf.freeze();
        let size = data.len() as u64;
        let mut state = self.lock();
        let entry = state.blobs.entry(*digest).or_default();
        entry.data = data;
        entry.stored = Some(Timestamp::now_utc());
        Ok(BlobInfo {
            digest: *digest,
            size,
        })
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let data = self
            .lock()
            .blobs
            .get(digest)
            .map(|b| b.data.clone())
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })?;
        let size = data.len() as u64;
        // Hand the blob out in bounded chunks, as a streaming backend would.
        let chunks: Vec<Result<Bytes>> = (0..data.len())
            .step_by(1 << 20)
            .map(|start| Ok(data.slice(start..data.len().min(start + (1 << 20)))))
            .collect();
        Ok(BlobReader {
            size,
            stream: Box::pin(futures::stream::iter(chunks)),
        })
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        self.lock()
            .blobs
            .get(digest)
            .map(|b| BlobInfo {
                digest: *digest,
                size: b.data.len() as u64,
            })
            .ok_or(Error::NotFound {
                key: Key::Blob(*digest),
            })
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.lock().blobs.remove(digest);
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        Ok(self
            .lock()
            .blobs
            .iter()
            .map(|(d, b)| BlobInfo {
                digest: *d,
                size: b.data.len() as u64,
            })
            .collect())
    }

    async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        Ok(self
            .lock()
            .blobs
            .iter()
            .map(|(d, b)| {
                let info = BlobInfo {
                    digest: *d,
                    size: b.data.len() as u64,
                };
                (info, b.stored)
            })
            .collect())
    }

    async fn blob_usage(&self) -> Result<Usage> {
        let state = self.lock();
        let mut usage = Usage::default();
        for b in state.blobs.values() {
            usage.add(UsageKind::Blobs, 1, b.data.len() as u64);
            let notes: usize = b
                .notes
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum();
            usage.add(UsageKind::Notes, b.notes.len() as u64, notes as u64);
        }
        Ok(usage)
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        let blob = state.blobs.get_mut(digest).ok_or(Error::NotFound {
            key: Key::Blob(*digest),
        })?;
        blob.notes.extend(notes);
        Ok(())
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        Ok(self
            .lock()
            .blobs
            .get(digest)
            .map(|b| {
                b.notes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        self.lock()
            .blobs
            .get(digest)
            .and_then(|b| b.notes.get(key).cloned())
            .ok_or_else(|| Error::NotFound {
                key: Key::BlobNote {
                    digest: *digest,
                    key: key.clone(),
                },
            })
    }
}
