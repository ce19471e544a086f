//! The model: what the store, the blob cache and the life cycle hold, as
//! plain sets and maps, and what each operation does to it and returns.
//!
//! It is written from the documented behaviour, not from the code: a
//! delete refuses what a live lease holds (with the image's ancestors), a
//! collection keeps what leases, names (unless `all`) and kept children
//! keep, and everything a kept item refers to (its parent, its layers, a
//! layer's other copy when either copy's notes name the other).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use imagecache_core::{Digest, ImageId, LeaseId, LeaseResource, Reference};

use super::pools::{DIGESTS, IMAGES, LAYERS, LEASES, NAMES, PLAIN, Pools};

/// One operation, naming what it works on by index into the pools.
#[derive(Debug, Clone)]
pub enum Op {
    /// `Store::create_with`, with a parent or not.
    Create { image: usize, parent: Option<usize> },
    /// `Store::set_parent`.
    SetParent { image: usize, parent: usize },
    /// `Store::delete`.
    Delete { image: usize },
    /// `Lifecycle::remove_image` (not forced): the image and the blobs only
    /// it referred to.
    Remove { image: usize },
    /// `Store::tag`.
    Tag { name: usize, image: usize },
    /// `Store::untag`.
    Untag { name: usize },
    /// `BlobCache::put_bytes` of a plain blob.
    PutBlob { blob: usize },
    /// `BlobCache::put_layer` of a layer, gzip-compressed or not.
    PutLayer { layer: usize, gzip: bool },
    /// `BlobCache::get_bytes` of any blob digest.
    GetBlob { digest: usize },
    /// `Store::create_lease` holding images and blobs.
    Hold { lease: usize, resources: Vec<Res> },
    /// `Store::delete_lease`.
    Release { lease: usize },
    /// `Lifecycle::collect` under `Policy::all()` or `Policy::dangling()`.
    Collect { all: bool },
    /// Drop every handle and open the backend, store and cache again.
    Reopen,
}

/// A lease resource by index.
#[derive(Debug, Clone, Copy)]
pub enum Res {
    Image(usize),
    Blob(usize),
}

/// What the model holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Images with their parent.
    pub images: BTreeMap<ImageId, Option<ImageId>>,
    pub names: BTreeMap<Reference, ImageId>,
    /// Leases (not a collection's) with what they hold.
    pub leases: BTreeMap<LeaseId, BTreeSet<LeaseResource>>,
    pub blobs: BTreeSet<Digest>,
}

/// What an operation returns, as far as the model can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    Unit,
    Id(ImageId),
    /// `tag`: where the name pointed before, when it moved.
    Moved(Option<ImageId>),
    /// `delete_lease`: whether the lease was stored.
    Existed(bool),
    Blob(Option<Bytes>),
    /// A removal or collection: what it reports removed.
    Removed {
        images: BTreeSet<ImageId>,
        blobs: BTreeSet<Digest>,
    },
}

/// How far a failed operation may have got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One backend write: the state is the one before or the one after.
    Atomic,
    /// Several writes: every item is as before or as after.
    Between,
    /// A read: nothing changes, but a blob that reads short is evicted.
    Read,
}

/// The model's answer for one operation.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The result, or the name of the error variant.
    pub expect: Result<Ret, &'static str>,
    pub after: State,
    pub rule: Rule,
}

/// Which layer copies name each other in their notes, read from the
/// backend (notes are advisory, so the model cannot know them otherwise).
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Blob → the blobs its notes name.
    pub named: BTreeMap<Digest, BTreeSet<Digest>>,
}

impl Links {
    /// Linked on either's word: what keeps a copy with the other.
    fn either(&self, a: &Digest) -> BTreeSet<Digest> {
        let mut out = self.named.get(a).cloned().unwrap_or_default();
        for (b, named) in &self.named {
            if named.contains(a) {
                out.insert(*b);
            }
        }
        out
    }

    /// Linked on both words: what a removal releases with a copy.
    fn confirmed(&self, a: &Digest) -> BTreeSet<Digest> {
        self.named
            .get(a)
            .into_iter()
            .flatten()
            .filter(|b| self.named.get(b).is_some_and(|n| n.contains(a)))
            .copied()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Image(ImageId),
    Blob(Digest),
}

fn ok(ret: Ret, after: State, rule: Rule) -> Prediction {
    Prediction {
        expect: Ok(ret),
        after,
        rule,
    }
}

fn refused(before: &State, error: &'static str) -> Prediction {
    Prediction {
        expect: Err(error),
        after: before.clone(),
        rule: Rule::Atomic,
    }
}

impl State {
    fn children(&self, id: &ImageId) -> Vec<ImageId> {
        self.images
            .iter()
            .filter(|(_, p)| **p == Some(*id))
            .map(|(c, _)| *c)
            .collect()
    }

    /// Whether `ancestor` is `id` or one of its ancestors.
    fn is_ancestor_or_self(&self, ancestor: &ImageId, id: &ImageId) -> bool {
        let mut cur = Some(*id);
        for _ in 0..=self.images.len() {
            match cur {
                Some(c) if c == *ancestor => return true,
                Some(c) => cur = self.images.get(&c).copied().flatten(),
                None => return false,
            }
        }
        true
    }

    /// Removes an image with its names; its children lose their parent.
    fn remove_image(&mut self, id: &ImageId) {
        self.images.remove(id);
        for parent in self.images.values_mut() {
            if *parent == Some(*id) {
                *parent = None;
            }
        }
        self.names.retain(|_, target| target != id);
    }

    /// What the live leases hold: images with their ancestors, and blobs
    /// with the layers of every held image.
    fn held(&self, pools: &Pools) -> (BTreeSet<ImageId>, BTreeSet<Digest>) {
        let mut images = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for r in self.leases.values().flatten() {
            match r {
                LeaseResource::Image(id) => {
                    let mut next = Some(*id);
                    while let Some(image) = next {
                        if !images.insert(image) && image != *id {
                            break;
                        }
                        if self.images.contains_key(&image) {
                            blobs.extend(pools.diffs(&image));
                        }
                        next = self.images.get(&image).copied().flatten();
                    }
                }
                LeaseResource::Blob(d) => {
                    blobs.insert(*d);
                }
                LeaseResource::Layer(_) => {}
            }
        }
        (images, blobs)
    }

    /// Everything reachable from `roots` through parents, layers, config
    /// blobs and layer copies.
    fn reach(&self, pools: &Pools, links: &Links, roots: Vec<Item>) -> BTreeSet<Item> {
        let mut seen = BTreeSet::new();
        let mut work = roots;
        while let Some(item) = work.pop() {
            if !seen.insert(item) {
                continue;
            }
            match item {
                Item::Image(id) if self.images.contains_key(&id) => {
                    if let Some(Some(p)) = self.images.get(&id) {
                        work.push(Item::Image(*p));
                    }
                    work.extend(pools.diffs(&id).into_iter().map(Item::Blob));
                    work.push(Item::Blob(*id.digest()));
                }
                Item::Image(_) => {}
                Item::Blob(d) => work.extend(links.either(&d).into_iter().map(Item::Blob)),
            }
        }
        seen
    }
}

/// Predicts `op` from `before`.
pub fn predict(op: &Op, before: &State, pools: &Pools, links: &Links) -> Prediction {
    let image = |i: usize| pools.images[i % IMAGES].id;
    match op {
        Op::Create { image: i, parent } => create(before, image(*i), parent.map(image)),
        Op::SetParent { image: i, parent } => set_parent(before, image(*i), image(*parent)),
        Op::Delete { image: i } => delete(before, pools, image(*i)),
        Op::Remove { image: i } => remove(before, pools, links, image(*i)),
        Op::Tag { name, image: i } => tag(before, pools.names[name % NAMES].clone(), image(*i)),
        Op::Untag { name } => {
            let name = &pools.names[name % NAMES];
            match before.names.get(name) {
                None => refused(before, "NameNotFound"),
                Some(id) => {
                    let mut after = before.clone();
                    after.names.remove(name);
                    ok(Ret::Id(*id), after, Rule::Atomic)
                }
            }
        }
        Op::PutBlob { blob } => {
            let mut after = before.clone();
            after.blobs.insert(pools.plain[blob % PLAIN].1);
            ok(Ret::Unit, after, Rule::Atomic)
        }
        Op::PutLayer { layer, gzip } => {
            let layer = &pools.layers[layer % LAYERS];
            let mut after = before.clone();
            after.blobs.insert(layer.diff);
            if *gzip {
                after.blobs.insert(layer.compressed);
            }
            ok(Ret::Unit, after, Rule::Between)
        }
        Op::GetBlob { digest } => {
            let digest = pools.digest(digest % DIGESTS);
            let data = before
                .blobs
                .contains(&digest)
                .then(|| pools.data(&digest).cloned())
                .flatten();
            ok(Ret::Blob(data), before.clone(), Rule::Read)
        }
        Op::Hold { lease, resources } => {
            hold(before, pools, &pools.leases[lease % LEASES], resources)
        }
        Op::Release { lease } => {
            let id = &pools.leases[lease % LEASES];
            let mut after = before.clone();
            let existed = after.leases.remove(id).is_some();
            ok(Ret::Existed(existed), after, Rule::Atomic)
        }
        Op::Collect { all } => collect(before, pools, links, *all),
        Op::Reopen => ok(Ret::Unit, before.clone(), Rule::Atomic),
    }
}

fn create(before: &State, id: ImageId, parent: Option<ImageId>) -> Prediction {
    let mut after = before.clone();
    if let Some(p) = parent {
        if !before.images.contains_key(&p) {
            return refused(before, "UnknownParent");
        }
        if before.images.contains_key(&id) && before.is_ancestor_or_self(&id, &p) {
            return refused(before, "ParentCycle");
        }
        after.images.insert(id, Some(p));
    } else {
        after.images.entry(id).or_insert(None);
    }
    ok(Ret::Id(id), after, Rule::Atomic)
}

fn set_parent(before: &State, id: ImageId, parent: ImageId) -> Prediction {
    if !before.images.contains_key(&id) {
        return refused(before, "NotFound");
    }
    if !before.images.contains_key(&parent) {
        return refused(before, "UnknownParent");
    }
    if before.is_ancestor_or_self(&id, &parent) {
        return refused(before, "ParentCycle");
    }
    let mut after = before.clone();
    after.images.insert(id, Some(parent));
    ok(Ret::Unit, after, Rule::Atomic)
}

fn delete(before: &State, pools: &Pools, id: ImageId) -> Prediction {
    if !before.images.contains_key(&id) {
        return refused(before, "UnknownImage");
    }
    if before.held(pools).0.contains(&id) {
        return refused(before, "Held");
    }
    let mut after = before.clone();
    after.remove_image(&id);
    ok(Ret::Unit, after, Rule::Atomic)
}

fn remove(before: &State, pools: &Pools, links: &Links, id: ImageId) -> Prediction {
    if !before.images.contains_key(&id) {
        return refused(before, "NotFound");
    }
    if before.held(pools).0.contains(&id) {
        return refused(before, "Held");
    }
    let mut after = before.clone();
    after.remove_image(&id);
    // What the image may release: its layers and config blob, and the
    // copies of each that both notes confirm.
    let mut candidates = BTreeSet::new();
    let mut work: Vec<Digest> = pools.diffs(&id);
    work.push(*id.digest());
    while let Some(d) = work.pop() {
        if candidates.insert(d) {
            work.extend(links.confirmed(&d));
        }
    }
    let (held_images, held_blobs) = after.held(pools);
    let roots = after
        .images
        .keys()
        .chain(&held_images)
        .map(|i| Item::Image(*i))
        .chain(held_blobs.iter().map(|d| Item::Blob(*d)))
        .collect();
    let kept = after.reach(pools, links, roots);
    let gone: BTreeSet<Digest> = candidates
        .into_iter()
        .filter(|d| after.blobs.contains(d) && !kept.contains(&Item::Blob(*d)))
        .collect();
    after.blobs.retain(|d| !gone.contains(d));
    let ret = Ret::Removed {
        images: BTreeSet::from([id]),
        blobs: gone,
    };
    ok(ret, after, Rule::Between)
}

fn tag(before: &State, name: Reference, id: ImageId) -> Prediction {
    if !before.images.contains_key(&id) {
        return refused(before, "NotFound");
    }
    let mut after = before.clone();
    let previous = after.names.insert(name, id).filter(|p| *p != id);
    ok(Ret::Moved(previous), after, Rule::Atomic)
}

fn hold(before: &State, pools: &Pools, id: &LeaseId, resources: &[Res]) -> Prediction {
    if before.leases.contains_key(id) {
        return refused(before, "LeaseExists");
    }
    let resources = resources
        .iter()
        .map(|r| match r {
            Res::Image(i) => LeaseResource::Image(pools.images[i % IMAGES].id),
            Res::Blob(d) => LeaseResource::Blob(pools.digest(d % DIGESTS)),
        })
        .collect();
    let mut after = before.clone();
    after.leases.insert(id.clone(), resources);
    ok(Ret::Unit, after, Rule::Atomic)
}

/// A collection under one policy: `all`, or dangling images only.
fn collect(before: &State, pools: &Pools, links: &Links, all: bool) -> Prediction {
    let (held_images, held_blobs) = before.held(pools);
    let roots = held_images
        .iter()
        .map(|i| Item::Image(*i))
        .chain(held_blobs.iter().map(|d| Item::Blob(*d)))
        .collect();
    let pinned = before.reach(pools, links, roots);
    let named: BTreeSet<ImageId> = before.names.values().copied().collect();
    let mut removed: BTreeSet<ImageId> = BTreeSet::new();
    let eligible = |id: &ImageId, removed: &BTreeSet<ImageId>| {
        !removed.contains(id)
            && !pinned.contains(&Item::Image(*id))
            && (all || !named.contains(id))
            && before.children(id).iter().all(|c| removed.contains(c))
    };
    let mut work: Vec<ImageId> = before
        .images
        .keys()
        .filter(|id| eligible(id, &removed))
        .copied()
        .collect();
    while let Some(id) = work.pop() {
        if !removed.insert(id) {
            continue;
        }
        if let Some(Some(p)) = before.images.get(&id)
            && eligible(p, &removed)
        {
            work.push(*p);
        }
    }
    let roots = before
        .images
        .keys()
        .filter(|id| !removed.contains(id))
        .map(|id| Item::Image(*id))
        .chain(pinned.iter().copied())
        .collect();
    let kept = before.reach(pools, links, roots);
    let mut after = before.clone();
    let images: BTreeSet<ImageId> = removed
        .into_iter()
        .filter(|id| !kept.contains(&Item::Image(*id)))
        .collect();
    for id in &images {
        after.remove_image(id);
    }
    let blobs: BTreeSet<Digest> = before
        .blobs
        .iter()
        .filter(|d| !kept.contains(&Item::Blob(**d)))
        .copied()
        .collect();
    after.blobs.retain(|d| !blobs.contains(d));
    ok(Ret::Removed { images, blobs }, after, Rule::Between)
}

/// Whether `obs` lies between `before` and `after`: every image (with its
/// parent), name, lease and blob is as before or as after. With
/// `blobs_may_go`, blobs may also be missing (a short read evicts).
pub fn between(
    before: &State,
    after: &State,
    obs: &State,
    blobs_may_go: bool,
) -> Result<(), String> {
    fn check<T: Ord + Clone + std::fmt::Debug>(
        what: &str,
        before: BTreeSet<T>,
        after: BTreeSet<T>,
        obs: BTreeSet<T>,
        lower: bool,
    ) -> Result<(), String> {
        let must: BTreeSet<T> = before.intersection(&after).cloned().collect();
        let may: BTreeSet<T> = before.union(&after).cloned().collect();
        let missing: Vec<&T> = must.difference(&obs).collect();
        let extra: Vec<&T> = obs.difference(&may).collect();
        if (lower && !missing.is_empty()) || !extra.is_empty() {
            return Err(format!(
                "{what}: missing {missing:?} that both states have, extra {extra:?} that neither has"
            ));
        }
        Ok(())
    }
    let pairs = |s: &State| -> BTreeSet<(ImageId, Option<ImageId>)> {
        s.images.iter().map(|(a, b)| (*a, *b)).collect()
    };
    let names = |s: &State| -> BTreeSet<(Reference, ImageId)> {
        s.names.iter().map(|(a, b)| (a.clone(), *b)).collect()
    };
    let leases = |s: &State| -> BTreeSet<(LeaseId, BTreeSet<LeaseResource>)> {
        s.leases
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect()
    };
    check("images", pairs(before), pairs(after), pairs(obs), true)?;
    check("names", names(before), names(after), names(obs), true)?;
    check("leases", leases(before), leases(after), leases(obs), true)?;
    let blobs = |s: &State| s.blobs.clone();
    check(
        "blobs",
        blobs(before),
        blobs(after),
        blobs(obs),
        !blobs_may_go,
    )
}
