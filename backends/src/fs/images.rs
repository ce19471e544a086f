//! Images: configs under `content/sha256`, metadata under
//! `metadata/sha256`, and the [`StoreBackend`] calls that read and write
//! them through the batch writer and the scanner (leases through
//! `leases.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use imagecache_core::{
    Capabilities, Content, Error as CoreError, ImageId, Key, Lease, MetadataKey, Result, Snapshot,
    StoreBackend, Usage, WriteBatch,
};

use super::files::{Opened, open_regular, read_regular, read_to_end};
use super::{Error, FsBackend, batch, blocking, content_present, leases, scan, usage};

#[async_trait]
impl StoreBackend for FsBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_persistent(true).with_shared(true)
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || batch::write(&inner, batch)).await
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        let id = *id;
        let path = self.inner.layout.content_path(&id);
        let data = blocking(move || match open_regular(&path)? {
            Opened::File(f, len) => read_to_end(f, len, &path),
            Opened::Missing => Err(CoreError::NotFound {
                key: Key::Image(id),
            }
            .into()),
            Opened::NotRegular(kind) => Err(CoreError::Corrupt {
                key: Key::Image(id),
                reason: format!("a {kind} occupies {}", path.display()),
                source: None,
            }
            .into()),
        })
        .await?;
        Ok(Content::verify(id, Bytes::from(data))?.into_data())
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        let id = *id;
        let key = key.clone();
        let content = self.inner.layout.content_path(&id);
        let path = self.inner.layout.metadata_dir(&id).join(key.as_str());
        blocking(move || {
            // Docker re-reads and re-hashes the config here; existence is
            // all that matters for a metadata read.
            if !content_present(&content)? {
                return Err(CoreError::NotFound {
                    key: Key::Image(id),
                }
                .into());
            }
            match read_regular(&path)? {
                Some(Ok(data)) => Ok(Bytes::from(data)),
                None => Err(CoreError::NotFound {
                    key: Key::Metadata { id, key },
                }
                .into()),
                Some(Err(found)) => Err(Error::destination(path, found, Key::Metadata { id, key })),
            }
        })
        .await
    }

    async fn load(&self) -> Result<Snapshot> {
        let inner = Arc::clone(&self.inner);
        blocking(move || scan::load(&inner)).await
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        let inner = Arc::clone(&self.inner);
        blocking(move || Ok(leases::read(&inner)?.into_leases()?)).await
    }

    /// The allocated blocks of `content/` ([`UsageKind::Configs`], one item
    /// per config file), `metadata/` ([`UsageKind::Metadata`], one item
    /// per value file), `repositories.json` ([`UsageKind::Names`], one item
    /// per name), the index, journal and lock in `imagecache/`
    /// ([`UsageKind::Index`], with the root's own directory blocks), lease
    /// records under `imagecache/leases/` ([`UsageKind::Leases`]) and what
    /// `imagecache/quarantine/` holds ([`UsageKind::Overhead`]); temp files
    /// anywhere among them are [`UsageKind::Temp`]. Every directory's own
    /// blocks are counted with what it holds. Blobs are measured by
    /// `blob_usage`, and nothing is counted twice between the two. No
    /// total: the parts are the whole.
    ///
    /// Measuring costs one stat per file and directory, and removes
    /// nothing.
    ///
    /// [`UsageKind::Configs`]: imagecache_core::UsageKind::Configs
    /// [`UsageKind::Metadata`]: imagecache_core::UsageKind::Metadata
    /// [`UsageKind::Names`]: imagecache_core::UsageKind::Names
    /// [`UsageKind::Index`]: imagecache_core::UsageKind::Index
    /// [`UsageKind::Leases`]: imagecache_core::UsageKind::Leases
    /// [`UsageKind::Overhead`]: imagecache_core::UsageKind::Overhead
    /// [`UsageKind::Temp`]: imagecache_core::UsageKind::Temp
    async fn usage(&self) -> Result<Usage> {
        let inner = Arc::clone(&self.inner);
        blocking(move || usage::images(&inner)).await
    }
}
