//! Manifests in the cache: verified on the way in, kept with their kind
//! and media type.

use bytes::Bytes;
use imagecache_core::{BlobInfo, BlobNotes, Digest};

use super::inner::{KIND_MANIFEST, chunked};
use super::pipe::Check;
use super::{BlobCache, Error, Manifest, Result};

impl BlobCache {
    /// Stores a manifest, verified, with notes marking its kind and media type.
    ///
    /// # Errors
    /// Nothing is stored on [`Error::EmptyManifest`], [`Error::TooLarge`]
    /// (over [`BlobCacheOptions::max_manifest_size`](super::BlobCacheOptions::max_manifest_size)) or
    /// [`Error::DigestMismatch`]. [`Error::Backend`] when the backend fails.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        data: impl Into<Bytes>,
        media_type: Option<&str>,
    ) -> Result<BlobInfo> {
        let inner = &self.inner;
        let data = data.into();
        let size = data.len() as u64;
        if data.is_empty() {
            return Err(Error::EmptyManifest { digest: *digest });
        }
        if size > inner.options.max_manifest_size {
            return Err(Error::TooLarge {
                digest: *digest,
                size,
                limit: inner.options.max_manifest_size,
            });
        }
        let mut check = Check::new(*digest, Some(size));
        check.update(&data)?;
        check.finish()?;
        let info = inner
            .backend
            .put_blob(digest, chunked(data))
            .await
            .map_err(|e| Error::backend("put_blob", Some(*digest), e))?;
        let mut notes: BlobNotes = vec![
            (inner.notes.size.clone(), Bytes::from(size.to_string())),
            (inner.notes.kind.clone(), Bytes::from_static(KIND_MANIFEST)),
        ];
        if let Some(media_type) = media_type {
            notes.push((
                inner.notes.media_type.clone(),
                Bytes::from(media_type.to_owned()),
            ));
        }
        inner.note(digest, notes).await;
        Ok(info)
    }

    /// Reads a cached manifest, fully verified, with its noted media type.
    ///
    /// A blob larger than [`BlobCacheOptions::max_manifest_size`](super::BlobCacheOptions::max_manifest_size) is not
    /// read and is a miss. Counts one hit or miss.
    ///
    /// # Errors
    /// Only in [strict](super::BlobCacheOptions::strict) mode: [`Error::Backend`], [`Error::Read`].
    pub async fn get_manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        let inner = &self.inner;
        let Some(data) = inner
            .fetch(digest, Some(inner.options.max_manifest_size))
            .await?
        else {
            return Ok(None);
        };
        let media_type = inner.note_text(digest, &inner.notes.media_type).await?;
        Ok(Some(Manifest {
            digest: *digest,
            data,
            media_type,
        }))
    }
}
