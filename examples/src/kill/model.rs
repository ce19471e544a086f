//! What the acknowledged operations say the store holds, and what each
//! operation was allowed to remove.

use std::collections::{BTreeMap, BTreeSet};

use imagecache_core::{Digest, ImageId, LeaseId, LeaseResource};

use super::log::{Op, Outcome, Record};

/// An image as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Img {
    pub(crate) parent: Option<ImageId>,
    /// Its layers' diff IDs.
    pub(crate) layers: Vec<Digest>,
}

/// A lease as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelLease {
    /// Unix nanoseconds.
    pub(crate) expires: i128,
    pub(crate) resources: BTreeSet<LeaseResource>,
}

/// The acknowledged state of the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    pub(crate) images: BTreeMap<ImageId, Img>,
    pub(crate) names: BTreeMap<String, ImageId>,
    pub(crate) blobs: BTreeSet<Digest>,
    /// Decompressed copy to compressed copy, for layers whose put was
    /// acknowledged (so both copies are noted against each other).
    pub(crate) pairs: BTreeMap<Digest, Digest>,
    pub(crate) leases: BTreeMap<LeaseId, ModelLease>,
    /// Decompressed copy to compressed copy for every layer an operation
    /// set out to put, acknowledged or not: an interrupted put may have
    /// noted the copies against each other, and a removal then takes both.
    pub(crate) declared: BTreeMap<Digest, Digest>,
}

/// What an interrupted operation may or may not have changed: the store's
/// state of these is taken as it is found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loose {
    pub(crate) images: BTreeSet<ImageId>,
    /// Images whose parent link may have gone (children of a removal).
    pub(crate) parents: BTreeSet<ImageId>,
    pub(crate) names: BTreeSet<String>,
    pub(crate) blobs: BTreeSet<Digest>,
    pub(crate) leases: BTreeSet<LeaseId>,
}

/// The span of an operation, in Unix nanoseconds: a lease that expires
/// after `to` held its resources throughout; one that expired by `from`
/// held nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: i128,
    pub(crate) to: i128,
}

impl Model {
    /// The image and its ancestors.
    pub(crate) fn lineage(&self, id: &ImageId) -> Vec<ImageId> {
        let mut out = Vec::new();
        let mut next = Some(*id);
        while let Some(i) = next {
            if out.contains(&i) || !self.images.contains_key(&i) {
                break;
            }
            out.push(i);
            next = self.images.get(&i).and_then(|img| img.parent);
        }
        out
    }

    /// Images held by the leases `live` accepts, with their ancestors.
    fn held_images(&self, live: impl Fn(&ModelLease) -> bool) -> BTreeSet<ImageId> {
        let mut out = BTreeSet::new();
        for lease in self.leases.values().filter(|l| live(l)) {
            for r in &lease.resources {
                if let LeaseResource::Image(id) = r {
                    out.extend(self.lineage(id));
                }
            }
        }
        out
    }

    /// A layer's copies: the diff ID and, when its put was acknowledged,
    /// the compressed copy noted against it.
    fn copies(&self, diff: &Digest) -> Vec<Digest> {
        let mut out = vec![*diff];
        out.extend(self.pairs.get(diff));
        out.extend(
            self.pairs
                .iter()
                .filter(|(_, c)| *c == diff)
                .map(|(d, _)| *d),
        );
        out
    }

    /// Blobs the given images use, with their noted copies.
    fn blobs_of<'a>(&self, images: impl Iterator<Item = &'a ImageId>) -> BTreeSet<Digest> {
        images
            .filter_map(|id| self.images.get(id))
            .flat_map(|img| img.layers.iter())
            .flat_map(|d| self.copies(d))
            .collect()
    }

    /// Blobs the surely live leases hold, directly or through images.
    fn held_blobs(&self, w: Window) -> BTreeSet<Digest> {
        let mut out = self.blobs_of(self.held_images(|l| l.expires > w.to).iter());
        for lease in self.leases.values().filter(|l| l.expires > w.to) {
            for r in &lease.resources {
                if let LeaseResource::Blob(d) = r {
                    out.extend(self.copies(d));
                }
            }
        }
        out
    }

    /// Images a collection must keep: named ones (unless `all`) and those
    /// surely live leases hold, with their ancestors.
    fn kept_by_gc(&self, all: bool, w: Window) -> BTreeSet<ImageId> {
        let mut out = self.held_images(|l| l.expires > w.to);
        if !all {
            for id in self.names.values() {
                out.extend(self.lineage(id));
            }
        }
        out
    }

    /// Notes the layer an operation sets out to put, if any.
    pub(crate) fn declare(&mut self, op: &Op) {
        match op {
            Op::Create {
                fresh: Some((c, d)),
                ..
            }
            | Op::Blob {
                compressed: c,
                diff: d,
            } => {
                self.declared.insert(*d, *c);
            }
            _ => {}
        }
    }

    /// Applies an operation that ended; returns the ways it broke the
    /// library's promises.
    pub(crate) fn apply(&mut self, record: &Record, ended: i128, outcome: &Outcome) -> Vec<String> {
        let w = Window {
            from: record.begun,
            to: ended,
        };
        let mut breaks = Vec::new();
        match (&record.op, outcome) {
            (
                Op::Create {
                    id,
                    parent,
                    layers,
                    fresh,
                },
                Outcome::Done,
            ) => {
                if let Some((c, d)) = fresh {
                    self.put_layer(*c, *d);
                }
                let img = Img {
                    parent: *parent,
                    layers: layers.clone(),
                };
                self.images.insert(*id, img);
            }
            (Op::Blob { compressed, diff }, Outcome::Done) => self.put_layer(*compressed, *diff),
            (Op::SetParent { id, parent }, Outcome::Done) => {
                if let Some(img) = self.images.get_mut(id) {
                    img.parent = Some(*parent);
                }
            }
            (Op::Tag { name, id }, Outcome::Done) => {
                self.names.insert(name.clone(), *id);
            }
            (Op::Untag { name }, Outcome::Done) => {
                self.names.remove(name);
            }
            (Op::Delete { id }, Outcome::Removed(blobs)) => {
                if self.held_images(|l| l.expires > w.to).contains(id) {
                    breaks.push(format!("removing {id} succeeded while a lease held it"));
                }
                self.remove_image(id);
                self.remove_blobs(blobs, w, "an image removal", &mut breaks);
            }
            (Op::Delete { id }, Outcome::Held(lease)) => {
                let holds = self.leases.get(lease).is_some_and(|l| {
                    l.expires > w.from
                        && l.resources.iter().any(|r| match r {
                            LeaseResource::Image(x) => self.lineage(x).contains(id),
                            _ => false,
                        })
                });
                if !holds {
                    breaks.push(format!(
                        "removing {id} was refused for lease {lease}, which does not hold it"
                    ));
                }
            }
            (Op::Lease { id, resources }, Outcome::Expires(at)) => {
                let lease = ModelLease {
                    expires: *at,
                    resources: resources.iter().copied().collect(),
                };
                self.leases.insert(id.clone(), lease);
            }
            (Op::Renew { id }, Outcome::Expires(at)) => {
                if let Some(l) = self.leases.get_mut(id) {
                    l.expires = *at;
                }
            }
            (Op::Renew { id }, Outcome::Expired) => {
                if self.leases.get(id).is_some_and(|l| l.expires > w.to) {
                    breaks.push(format!("renewing lease {id} was refused while it was live"));
                }
            }
            (Op::Unlease { id }, Outcome::Done) => {
                self.leases.remove(id);
            }
            (
                Op::Gc { all },
                Outcome::Collected {
                    images,
                    blobs,
                    leases,
                },
            ) => {
                self.collected(*all, w, images, blobs, leases, &mut breaks);
            }
            (op, outcome) => breaks.push(format!("{op:?} ended as {outcome:?}, which it cannot")),
        }
        breaks
    }

    fn put_layer(&mut self, compressed: Digest, diff: Digest) {
        self.blobs.insert(compressed);
        self.blobs.insert(diff);
        if compressed != diff {
            self.pairs.insert(diff, compressed);
        }
    }

    /// Removes an image: its names go, its children are orphaned.
    fn remove_image(&mut self, id: &ImageId) {
        self.images.remove(id);
        self.names.retain(|_, target| target != id);
        for img in self.images.values_mut() {
            if img.parent.as_ref() == Some(id) {
                img.parent = None;
            }
        }
    }

    /// Removes blobs reported removed, each of which must be used by no
    /// image that stays and held by no live lease.
    fn remove_blobs(&mut self, blobs: &[Digest], w: Window, by: &str, breaks: &mut Vec<String>) {
        let used = self.blobs_of(self.images.keys());
        let held = self.held_blobs(w);
        for d in blobs {
            if used.contains(d) {
                breaks.push(format!(
                    "{by} removed blob {d}, which a remaining image uses"
                ));
            }
            if held.contains(d) {
                breaks.push(format!("{by} removed blob {d}, which a live lease holds"));
            }
            self.blobs.remove(d);
            self.pairs.remove(d);
            self.pairs.retain(|_, c| c != d);
        }
    }

    fn collected(
        &mut self,
        all: bool,
        w: Window,
        images: &[ImageId],
        blobs: &[Digest],
        leases: &[LeaseId],
        breaks: &mut Vec<String>,
    ) {
        let kept = self.kept_by_gc(all, w);
        for id in images {
            if kept.contains(id) {
                breaks.push(format!("a collection removed {id}, which it had to keep"));
            }
            let stays = self
                .images
                .iter()
                .any(|(c, img)| img.parent.as_ref() == Some(id) && !images.contains(c));
            if stays {
                breaks.push(format!("a collection removed {id}, whose child stays"));
            }
        }
        for id in images {
            self.remove_image(id);
        }
        self.remove_blobs(blobs, w, "a collection", breaks);
        for id in leases {
            if let Some(l) = self.leases.remove(id)
                && l.expires > w.to
            {
                breaks.push(format!("a collection removed lease {id} before it expired"));
            }
        }
    }

    /// What the interrupted operation `op` (begun at `w.from`, its process
    /// dead by `w.to`) may have changed.
    pub(crate) fn loose(&self, op: &Op, w: Window) -> Loose {
        let mut loose = Loose::default();
        match op {
            Op::Create { id, fresh, .. } => {
                loose.images.insert(*id);
                if let Some((c, d)) = fresh {
                    loose.blobs.extend([*c, *d]);
                }
            }
            Op::Blob { compressed, diff } => loose.blobs.extend([*compressed, *diff]),
            Op::SetParent { id, .. } => {
                loose.parents.insert(*id);
            }
            Op::Tag { name, .. } | Op::Untag { name } => {
                loose.names.insert(name.clone());
            }
            Op::Delete { id } => {
                loose.images.insert(*id);
                self.loosen_image(id, &mut loose);
                loose.blobs.extend(self.blobs_of(std::iter::once(id)));
                let layers = self
                    .images
                    .get(id)
                    .map(|i| i.layers.as_slice())
                    .unwrap_or_default();
                loose
                    .blobs
                    .extend(layers.iter().filter_map(|d| self.declared.get(d)));
            }
            Op::Lease { id, .. } | Op::Renew { id } | Op::Unlease { id } => {
                loose.leases.insert(id.clone());
            }
            Op::Gc { all } => self.loose_gc(*all, w, &mut loose),
        }
        loose
    }

    /// The names and children of an image that may have gone.
    fn loosen_image(&self, id: &ImageId, loose: &mut Loose) {
        for (name, target) in &self.names {
            if target == id {
                loose.names.insert(name.clone());
            }
        }
        for (child, img) in &self.images {
            if img.parent.as_ref() == Some(id) {
                loose.parents.insert(*child);
            }
        }
    }

    fn loose_gc(&self, all: bool, w: Window, loose: &mut Loose) {
        let kept = self.kept_by_gc(all, w);
        let mut keep_blobs = self.blobs_of(kept.iter());
        keep_blobs.extend(self.held_blobs(w));
        for id in self.images.keys().filter(|id| !kept.contains(id)) {
            loose.images.insert(*id);
            self.loosen_image(id, loose);
        }
        loose
            .blobs
            .extend(self.blobs.difference(&keep_blobs).copied());
        for (id, l) in &self.leases {
            if l.expires <= w.to {
                loose.leases.insert(id.clone());
            }
        }
    }
}
