//! Space used: the sizes of the objects under the prefix, by the directory
//! they are in.
//!
//! S3 bills object sizes, so those are the bytes reported. What object_store
//! cannot list is left out: the parts of multipart uploads that were
//! started and never completed or aborted (a process killed mid-upload)
//! stay on the server, billed, until a bucket lifecycle rule removes them,
//! and no call here sees them.

use futures::TryStreamExt as _;
use imagecache_core::{ImageId, Key, Timestamp, Usage, UsageKind};
use object_store::ObjectMeta;

use super::error::Error;
use super::{S3Backend, blobs, leases};

/// Directories measured by `blob_usage` rather than `usage`.
const BLOB_DIRS: [&str; 2] = ["blobs", "blobnotes"];

/// Where the objects of a top-level directory of the image half go.
/// Unknown directories (a later version's) count as the index.
fn kind_of(dir: &str) -> UsageKind {
    match dir {
        "quarantine" => UsageKind::Overhead,
        leases::DIR => UsageKind::Leases,
        // A conditional-write probe lives only while a handle opens.
        "probe" => UsageKind::Temp,
        // `log`, `index`, the compaction lease, and anything else.
        _ => UsageKind::Index,
    }
}

/// An object's last-modified time as a timestamp.
pub(super) fn modified(meta: &ObjectMeta) -> Option<Timestamp> {
    let time = meta.last_modified;
    Timestamp::from_parts(time.timestamp(), time.timestamp_subsec_nanos(), 0)
}

impl S3Backend {
    /// The top-level directories and objects under the prefix.
    async fn top_level(&self) -> Result<(Vec<String>, Vec<ObjectMeta>), Error> {
        let root = &self.inner.root;
        let listed = self
            .inner
            .store
            .list_with_delimiter(Some(root))
            .await
            .map_err(|e| Error::store("list", Key::Other(root.to_string()), e))?;
        let dirs = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        Ok((dirs, listed.objects))
    }

    /// Every object under `PREFIX/<dir>/`.
    async fn objects_in(&self, dir: &str) -> Result<Vec<ObjectMeta>, Error> {
        let path = self.path(&[dir]);
        self.inner
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", Key::Other(path.to_string()), e))
    }

    /// See the `usage` of [`S3Backend`]'s [`StoreBackend`] impl.
    ///
    /// [`StoreBackend`]: imagecache_core::StoreBackend
    pub(super) async fn measure_images(&self) -> Result<Usage, Error> {
        // The log first: which configs belong to existing images.
        self.refresh().await?;
        let (dirs, top) = self.top_level().await?;
        let mut usage = Usage::default();
        for meta in &top {
            usage.add(UsageKind::Index, 1, meta.size);
        }
        for dir in dirs {
            if BLOB_DIRS.contains(&dir.as_str()) {
                continue;
            }
            let objects = self.objects_in(&dir).await?;
            if dir == "content" {
                self.add_configs(&mut usage, &objects);
                continue;
            }
            let kind = kind_of(&dir);
            for meta in &objects {
                usage.add(kind, 1, meta.size);
            }
        }
        Ok(usage)
    }

    /// Config objects: those of existing images as configs, the others
    /// (deleted or quarantined images, strays) as overhead until
    /// [`S3Backend::collect_garbage`] removes them.
    fn add_configs(&self, usage: &mut Usage, objects: &[ObjectMeta]) {
        let view = self.view();
        for meta in objects {
            let live = meta
                .location
                .filename()
                .and_then(|hex| ImageId::parse(&format!("sha256:{hex}")).ok())
                .is_some_and(|id| view.state.exists(&id));
            let kind = if live {
                UsageKind::Configs
            } else {
                UsageKind::Overhead
            };
            usage.add(kind, 1, meta.size);
        }
    }

    /// Blob and note objects.
    pub(super) async fn measure_blobs(&self) -> Result<Usage, Error> {
        let dir = self.path(&["blobs"]);
        let (stored, notes) =
            futures::try_join!(self.objects_in("blobs"), self.objects_in("blobnotes"))?;
        let mut usage = Usage::default();
        for meta in &stored {
            let count = u64::from(blobs::digest_of(&dir, meta).is_some());
            usage.add(UsageKind::Blobs, count, meta.size);
        }
        for meta in &notes {
            usage.add(UsageKind::Notes, 1, meta.size);
        }
        Ok(usage)
    }
}
