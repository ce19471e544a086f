//! What refers to what: images to their parents, layers, config blobs and
//! manifests; blobs to their other copies; manifests to their config,
//! layers and listed manifests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use imagecache_core::{DiffId, Digest, Image, ImageId, Timestamp};
use imagecache_store::{Held, Store};

use crate::blob::{BlobKind, CatalogEntry, Compression};

/// A node of the graph: an image or a blob.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Item {
    /// An image config in the store.
    Image(ImageId),
    /// A blob in the cache.
    Blob(Digest),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Image(id) => write!(f, "image {id}"),
            Self::Blob(d) => write!(f, "blob {d}"),
        }
    }
}

/// What is known of a cached blob.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlobNode {
    pub(super) size: u64,
    pub(super) stored: Option<Timestamp>,
    pub(super) kind: BlobKind,
    pub(super) compression: Option<Compression>,
    /// Whether its notes (and a manifest's body) were read.
    pub(super) complete: bool,
}

/// The reference graph of a store and its blob cache.
#[derive(Debug, Default, Clone)]
pub(super) struct Graph {
    edges: HashMap<Item, Vec<Item>>,
    pub(super) blobs: BTreeMap<Digest, BlobNode>,
    /// The copies each blob's own notes name.
    links: HashMap<Digest, Vec<Digest>>,
}

impl Graph {
    /// Builds the graph from every image (configs read once) and the
    /// cache's catalog.
    pub(super) fn new(
        store: &Store,
        images: &BTreeMap<ImageId, Arc<Image>>,
        catalog: &[CatalogEntry],
    ) -> Self {
        let mut graph = Self::default();
        for (id, image) in images {
            graph.add_image(store, id, image);
        }
        for entry in catalog {
            graph.add_blob(entry);
        }
        graph
    }

    /// Adds an image's references: its parent, its layers and its config
    /// stored as a blob.
    pub(super) fn add_image(&mut self, store: &Store, id: &ImageId, image: &Image) {
        let from = Item::Image(*id);
        if let Some(parent) = store.info(id).and_then(|i| i.parent) {
            self.edge(from, Item::Image(parent));
        }
        for raw in &image.rootfs.raw_diff_ids {
            if let Ok(diff) = DiffId::parse(raw) {
                self.edge(from, Item::Blob(*diff.digest()));
            }
        }
        self.edge(from, Item::Blob(*id.digest()));
    }

    fn add_blob(&mut self, entry: &CatalogEntry) {
        let digest = entry.info.digest;
        self.blobs.insert(
            digest,
            BlobNode {
                size: entry.info.size,
                stored: entry.stored,
                kind: entry.kind,
                compression: entry.compression,
                complete: entry.complete,
            },
        );
        let from = Item::Blob(digest);
        if !entry.links.is_empty() {
            self.links.insert(digest, entry.links.clone());
        }
        // The two copies of a layer keep each other, on either's word.
        for link in &entry.links {
            self.edge(from, Item::Blob(*link));
            self.edge(Item::Blob(*link), from);
        }
        for target in &entry.refers_to {
            self.edge(from, Item::Blob(*target));
        }
        if entry.kind == BlobKind::Manifest {
            // An image keeps the manifests that describe it; a manifest
            // listed by an index keeps the index.
            if let Some(config) = entry
                .config
                .and_then(|c| ImageId::parse(&c.to_string()).ok())
            {
                self.edge(Item::Image(config), from);
            }
            for target in &entry.refers_to {
                self.edge(Item::Blob(*target), from);
            }
        }
    }

    fn edge(&mut self, from: Item, to: Item) {
        self.edges.entry(from).or_default().push(to);
    }

    /// The blobs whose notes or manifest body could not be read: kept,
    /// since what they are and what they refer to are unknown.
    pub(super) fn unread(&self) -> impl Iterator<Item = Item> + '_ {
        self.blobs
            .iter()
            .filter(|(_, b)| !b.complete)
            .map(|(d, _)| Item::Blob(*d))
    }

    /// Everything reachable from `roots`, the roots included.
    pub(super) fn reach(&self, roots: impl IntoIterator<Item = Item>) -> HashSet<Item> {
        let mut seen = HashSet::new();
        let mut work: Vec<Item> = roots.into_iter().collect();
        while let Some(item) = work.pop() {
            if !seen.insert(item) {
                continue;
            }
            if let Some(next) = self.edges.get(&item) {
                work.extend(next.iter().filter(|n| !seen.contains(n)));
            }
        }
        seen
    }

    /// What removing these images may release: their layers and config
    /// blobs, the manifests that describe them and what those list, and the
    /// copies of each layer that confirm the link (both blobs' notes name
    /// each other), so a tampered note cannot make an unrelated blob a
    /// candidate.
    pub(super) fn released_by(&self, removed: &[ImageId]) -> HashSet<Digest> {
        let mut out = HashSet::new();
        let mut work: Vec<Item> = removed.iter().map(|id| Item::Image(*id)).collect();
        let mut seen: HashSet<Item> = HashSet::new();
        while let Some(item) = work.pop() {
            if !seen.insert(item) {
                continue;
            }
            let next = self.edges.get(&item).into_iter().flatten();
            match item {
                Item::Image(_) => work.extend(next.filter(|n| matches!(n, Item::Blob(_)))),
                Item::Blob(d) => {
                    out.insert(d);
                    if self
                        .blobs
                        .get(&d)
                        .is_some_and(|b| b.kind == BlobKind::Manifest)
                    {
                        work.extend(self.edges.get(&item).into_iter().flatten().copied());
                    }
                    work.extend(self.confirmed_copies(&d).map(Item::Blob));
                }
            }
        }
        out
    }

    /// The copies of a blob whose notes and its own name each other.
    fn confirmed_copies(&self, d: &Digest) -> impl Iterator<Item = Digest> + '_ {
        let own = *d;
        self.links
            .get(d)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |other| {
                self.links
                    .get(other)
                    .is_some_and(|back| back.contains(&own))
            })
    }

    /// The blobs an image refers to directly.
    pub(super) fn blobs_of(&self, id: &ImageId) -> impl Iterator<Item = Digest> + '_ {
        self.edges
            .get(&Item::Image(*id))
            .into_iter()
            .flatten()
            .filter_map(|i| match i {
                Item::Blob(d) => Some(*d),
                Item::Image(_) => None,
            })
    }

    /// The other copies of a blob, as noted.
    pub(super) fn links_of(&self, digest: &Digest) -> impl Iterator<Item = Digest> + '_ {
        self.edges
            .get(&Item::Blob(*digest))
            .into_iter()
            .flatten()
            .filter_map(|i| match i {
                Item::Blob(d)
                    if self
                        .blobs
                        .get(d)
                        .is_some_and(|n| n.kind != BlobKind::Manifest) =>
                {
                    Some(*d)
                }
                _ => None,
            })
    }
}

/// What the leases hold, as graph nodes with the lease holding each.
pub(super) fn held_items(held: &Held) -> HashMap<Item, imagecache_core::LeaseId> {
    let mut out = HashMap::new();
    for (id, lease) in &held.images {
        out.insert(Item::Image(*id), lease.clone());
    }
    for (d, lease) in &held.blobs {
        out.insert(Item::Blob(*d), lease.clone());
    }
    out
}
