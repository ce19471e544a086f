//! The catalog: every cached blob with its age, its kind and what it says
//! it refers to, for a collector deciding what can go.

use std::collections::BTreeSet;

use imagecache_core::{BlobInfo, BlobNotes, Digest, MetadataKey, Timestamp};
use serde::Deserialize;

use super::inner::{KIND_LAYER, KIND_MANIFEST};
use super::{BlobCache, Compression, Error, Result};

/// What a cached blob is, as its notes say.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum BlobKind {
    /// A layer, compressed or not.
    Layer,
    /// An image manifest or index.
    Manifest,
    /// Anything else (a config, or a blob put without notes).
    Other,
}

impl BlobKind {
    /// A short lowercase name: `layer`, `manifest`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Layer => "layer",
            Self::Manifest => "manifest",
            Self::Other => "other",
        }
    }
}

/// One blob of the [catalog](BlobCache::catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatalogEntry {
    /// Digest and size.
    pub info: BlobInfo,
    /// When the backend stored it, if it knows.
    pub stored: Option<Timestamp>,
    /// What its notes say it is.
    pub kind: BlobKind,
    /// A layer's compression, as noted when it was put.
    pub compression: Option<Compression>,
    /// The other copies of a layer its notes name (the compressed or the
    /// decompressed copy). Notes are not trusted here either: a collector
    /// uses them only to keep more, never to remove anything.
    pub links: Vec<Digest>,
    /// What a manifest refers to: its config, its layers, and the
    /// manifests an index lists. Empty for other kinds and for a manifest
    /// that cannot be read.
    pub refers_to: Vec<Digest>,
    /// A manifest's config digest (the image ID of the image it describes).
    pub config: Option<Digest>,
    /// Whether its notes, and a manifest's body, could be read. When they
    /// could not, what the blob is and what it refers to are unknown, and a
    /// collector keeps it until a later catalog reads them.
    pub complete: bool,
}

#[derive(Deserialize)]
struct Described {
    digest: String,
}

#[derive(Deserialize)]
struct ManifestRefs {
    #[serde(default)]
    config: Option<Described>,
    #[serde(default)]
    layers: Vec<Described>,
    #[serde(default)]
    manifests: Vec<Described>,
}

impl BlobCache {
    /// Every cached blob with its age, kind, noted links and (for
    /// manifests) references, read from the backend's listing and notes
    /// and from each manifest's body. Costs one listing, one notes read
    /// per blob and one read per manifest; no layer is read.
    ///
    /// # Errors
    /// [`Error::Backend`] when the listing fails. A blob whose notes or
    /// manifest body cannot be read is listed with what could be read and
    /// [`CatalogEntry::complete`] false.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let inner = &self.inner;
        let listed = inner
            .backend
            .list_blob_times()
            .await
            .map_err(|e| Error::backend("list_blobs", None, e))?;
        let mut out = Vec::with_capacity(listed.len());
        for (info, stored) in listed {
            out.push(self.catalog_entry(info, stored).await);
        }
        Ok(out)
    }

    /// The other copies of one blob that its notes name (its compressed or
    /// decompressed copy), unchecked.
    ///
    /// # Errors
    /// [`Error::Backend`] when its notes cannot be read.
    pub async fn catalog_links(&self, digest: &Digest) -> Result<Vec<Digest>> {
        let inner = &self.inner;
        let notes = inner
            .backend
            .blob_notes(digest)
            .await
            .map_err(|e| Error::backend("blob_notes", Some(*digest), e))?;
        Ok(links(
            &notes,
            [&inner.notes.compressed, &inner.notes.decompressed],
            digest,
        ))
    }

    async fn catalog_entry(&self, info: BlobInfo, stored: Option<Timestamp>) -> CatalogEntry {
        let inner = &self.inner;
        let (notes, complete) = match inner.backend.blob_notes(&info.digest).await {
            Ok(notes) => (notes, true),
            Err(e) => {
                tracing::warn!(digest = %info.digest, error = %e, "cannot read the notes of a blob");
                (Vec::new(), false)
            }
        };
        let note = |key| notes.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let kind = match note(&inner.notes.kind).map(|v| &v[..]) {
            Some(k) if k == KIND_LAYER => BlobKind::Layer,
            Some(k) if k == KIND_MANIFEST => BlobKind::Manifest,
            _ => BlobKind::Other,
        };
        let compression = note(&inner.notes.compression).and_then(|v| match &v[..] {
            b"none" => Some(Compression::None),
            b"gzip" => Some(Compression::Gzip),
            b"zstd" => Some(Compression::Zstd),
            _ => None,
        });
        let links = links(
            &notes,
            [&inner.notes.compressed, &inner.notes.decompressed],
            &info.digest,
        );
        let mut entry = CatalogEntry {
            info,
            stored,
            kind,
            compression,
            links,
            refers_to: Vec::new(),
            config: None,
            complete,
        };
        if kind == BlobKind::Manifest {
            entry.complete = self.read_references(&mut entry).await;
        }
        entry
    }

    /// Reads what a manifest refers to; returns whether its body could be
    /// read (a body that is not a manifest refers to nothing, and counts
    /// as read).
    async fn read_references(&self, entry: &mut CatalogEntry) -> bool {
        let manifest = match self.get_manifest(&entry.info.digest).await {
            Ok(Some(m)) => m,
            // Absent, damaged or unreadable just now: a miss says no more.
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(digest = %entry.info.digest, error = %e, "cannot read a manifest");
                return false;
            }
        };
        let Ok(refs) = serde_json::from_slice::<ManifestRefs>(&manifest.data) else {
            return true;
        };
        let parse = |d: &Described| Digest::parse(&d.digest).ok();
        entry.config = refs.config.as_ref().and_then(parse);
        let mut all: BTreeSet<Digest> = entry.config.into_iter().collect();
        all.extend(refs.layers.iter().filter_map(parse));
        all.extend(refs.manifests.iter().filter_map(parse));
        all.remove(&entry.info.digest);
        entry.refers_to = all.into_iter().collect();
        true
    }
}

/// The digests the `keys` notes name, other than `own`, sorted.
fn links(notes: &BlobNotes, keys: [&MetadataKey; 2], own: &Digest) -> Vec<Digest> {
    let found: BTreeSet<Digest> = keys
        .into_iter()
        .filter_map(|k| notes.iter().find(|(key, _)| key == k).map(|(_, v)| v))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter_map(|s| Digest::parse(s.trim()).ok())
        .filter(|d| d != own)
        .collect();
    found.into_iter().collect()
}
