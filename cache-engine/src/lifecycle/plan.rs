//! Planning a collection: every image and blob with whether it goes and
//! why, before anything is removed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use imagecache_core::{Image, ImageId, Lease, LeaseId, Timestamp};

use super::graph::{Graph, Item, held_items};
use super::policy::{Policy, older_than};
use super::{Lifecycle, Result};

/// Why an item goes or stays.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Goes: an image without names or children that a policy selected.
    Dangling,
    /// Goes: an unused image selected by a policy with `all`.
    Unused,
    /// Goes: among the least recently used, removed to meet a space target.
    LeastRecentlyUsed,
    /// Goes: a blob no kept image, manifest or lease refers to.
    Unreferenced,
    /// Stays: a live lease holds it (or an image that refers to it).
    Held(LeaseId),
    /// Stays: an image with a name, and no policy selects named images.
    Named,
    /// Stays: an image with a child that stays.
    HasChildren,
    /// Stays: used within a policy's keep duration.
    Recent,
    /// Stays: no policy's filters match it.
    Filtered,
    /// Stays: the space targets were met before it was reached.
    TargetMet,
    /// Stays: a blob a kept image, manifest or lease refers to.
    Referenced,
    /// Stays: a blob younger than the grace period.
    GracePeriod,
    /// Stays: a blob whose notes (or manifest body) could not be read, so
    /// what it is and what refers to it are unknown; a later collection
    /// decides.
    Unreadable,
}

impl Reason {
    /// A short snake-case name: `dangling`, `held`, `grace_period`, …
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dangling => "dangling",
            Self::Unused => "unused",
            Self::LeastRecentlyUsed => "least_recently_used",
            Self::Unreferenced => "unreferenced",
            Self::Held(_) => "held",
            Self::Named => "named",
            Self::HasChildren => "has_children",
            Self::Recent => "recent",
            Self::Filtered => "filtered",
            Self::TargetMet => "target_met",
            Self::Referenced => "referenced",
            Self::GracePeriod => "grace_period",
            Self::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held(lease) => write!(f, "held by lease {lease}"),
            other => f.write_str(&other.name().replace('_', " ")),
        }
    }
}

/// One image or blob of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanItem {
    /// The image or blob.
    pub item: Item,
    /// Its size: config bytes for an image, blob bytes for a blob.
    pub bytes: u64,
    /// Whether it goes.
    pub remove: bool,
    /// Why it goes or stays.
    pub reason: Reason,
}

/// A collection planned but not run: every image and blob with the
/// decision and its reason. [`Lifecycle::execute`] runs it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plan {
    /// Every image, then every blob, sorted.
    pub items: Vec<PlanItem>,
    /// Bytes of configs and blobs before the collection.
    pub used_bytes: u64,
    /// Bytes available on the store's filesystem, when measured.
    pub free_bytes: Option<u64>,
    /// When the plan was made.
    pub made: Timestamp,
    pub(super) policies: Vec<Policy>,
    pub(super) graph: Graph,
    /// Images selected by a policy with `all`, which may have names.
    pub(super) named_ok: HashSet<ImageId>,
}

impl Plan {
    /// The items that go.
    pub fn removals(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.remove)
    }

    /// Bytes the plan frees.
    pub fn bytes_to_free(&self) -> u64 {
        self.removals().map(|i| i.bytes).sum()
    }
}

/// When an image was last used: its last use recorded by the store (a
/// tag, a cache hit), else its creation time.
pub(super) fn last_used(lc: &Lifecycle, id: &ImageId) -> i128 {
    let info = lc.store.info(id);
    let updated = info.as_ref().and_then(|i| i.last_updated);
    let created = info.as_ref().and_then(|i| i.created);
    let used = lc.store.last_used(id);
    [updated, created, used]
        .into_iter()
        .flatten()
        .map(|t| t.unix_nanos())
        .max()
        .unwrap_or(i128::MIN)
}

/// What selection works from.
struct Selection<'a> {
    lc: &'a Lifecycle,
    images: &'a BTreeMap<ImageId, Arc<Image>>,
    graph: &'a Graph,
    pinned: &'a HashSet<Item>,
    now: i128,
    removed: HashMap<ImageId, Reason>,
    named_ok: HashSet<ImageId>,
    /// How many kept images refer to each blob directly.
    refs: HashMap<imagecache_core::Digest, usize>,
    used: u64,
    freed: u64,
}

impl Selection<'_> {
    fn eligible(&self, policy: &Policy, id: &ImageId) -> bool {
        if self.removed.contains_key(id) || self.pinned.contains(&Item::Image(*id)) {
            return false;
        }
        if !policy.all && !self.lc.store.names_of(id).is_empty() {
            return false;
        }
        let used = last_used(self.lc, id);
        if let Some(d) = policy.keep_duration
            && !older_than(used, self.now, d)
        {
            return false;
        }
        let Some(image) = self.images.get(id) else {
            return false;
        };
        policy
            .filters
            .iter()
            .all(|f| f.matches(image, used, self.now))
    }

    /// Whether every child of the image goes.
    fn leaf(&self, id: &ImageId) -> bool {
        self.lc
            .store
            .children(id)
            .iter()
            .all(|c| self.removed.contains_key(c))
    }

    /// Marks an image removed; returns the bytes that frees (its config and
    /// the layer copies no kept image refers to any more).
    fn remove(&mut self, policy: &Policy, id: ImageId, reason: Reason) -> u64 {
        self.removed.insert(id, reason);
        if policy.all {
            self.named_ok.insert(id);
        }
        let mut bytes = self
            .images
            .get(&id)
            .map_or(0, |i| i.raw_json().len() as u64);
        for blob in self.graph.blobs_of(&id) {
            let Some(n) = self.refs.get_mut(&blob) else {
                continue;
            };
            *n = n.saturating_sub(1);
            if *n == 0 && !self.pinned.contains(&Item::Blob(blob)) {
                bytes += self.graph.blobs.get(&blob).map_or(0, |b| b.size);
                for link in self.graph.links_of(&blob) {
                    if self.refs.get(&link).copied().unwrap_or(0) == 0 {
                        bytes += self.graph.blobs.get(&link).map_or(0, |b| b.size);
                    }
                }
            }
        }
        bytes
    }

    fn parent(&self, id: &ImageId) -> Option<ImageId> {
        self.lc.store.info(id).and_then(|i| i.parent)
    }

    /// A policy without space targets: every selected image, top down.
    fn select_all(&mut self, policy: &Policy) {
        let reason = if policy.all {
            Reason::Unused
        } else {
            Reason::Dangling
        };
        let mut work: Vec<ImageId> = self
            .images
            .keys()
            .filter(|id| self.leaf(id) && self.eligible(policy, id))
            .copied()
            .collect();
        while let Some(id) = work.pop() {
            if self.removed.contains_key(&id) {
                continue;
            }
            self.freed += self.remove(policy, id, reason.clone());
            if let Some(p) = self.parent(&id)
                && self.leaf(&p)
                && self.eligible(policy, &p)
            {
                work.push(p);
            }
        }
    }

    /// A policy with space targets: least recently used first, until met.
    fn select_lru(&mut self, policy: &Policy, free: Option<u64>) {
        let over = policy.max_used_space.map_or(0, |max| {
            self.used.saturating_sub(self.freed).saturating_sub(max)
        });
        let short = match (policy.min_free_space, free) {
            (Some(min), Some(free)) => min.saturating_sub(free.saturating_add(self.freed)),
            _ => 0,
        };
        let mut goal = over.max(short);
        let mut heap: BinaryHeap<Reverse<(i128, ImageId)>> = self
            .images
            .keys()
            .filter(|id| self.leaf(id) && self.eligible(policy, id))
            .map(|id| Reverse((last_used(self.lc, id), *id)))
            .collect();
        while goal > 0 {
            let Some(Reverse((_, id))) = heap.pop() else {
                break;
            };
            if self.removed.contains_key(&id) {
                continue;
            }
            if let Some(reserved) = policy.reserved_space {
                let size = self
                    .images
                    .get(&id)
                    .map_or(0, |i| i.raw_json().len() as u64);
                if self.used.saturating_sub(self.freed).saturating_sub(size) < reserved {
                    break;
                }
            }
            let bytes = self.remove(policy, id, Reason::LeastRecentlyUsed);
            self.freed += bytes;
            goal = goal.saturating_sub(bytes);
            if let Some(p) = self.parent(&id)
                && self.leaf(&p)
                && self.eligible(policy, &p)
            {
                heap.push(Reverse((last_used(self.lc, &p), p)));
            }
        }
    }
}

/// Plans a collection under `policies` with what `leases` hold.
pub(super) async fn plan(lc: &Lifecycle, policies: &[Policy], leases: &[Lease]) -> Result<Plan> {
    let state = State::read(lc, leases).await?;
    Ok(decide(lc, policies, &state))
}

/// What a plan decides from: read once, so that several policy lists can
/// be weighed against the same store (as disk usage does).
pub(super) struct State {
    made: Timestamp,
    images: BTreeMap<ImageId, Arc<Image>>,
    graph: Graph,
    holders: HashMap<Item, LeaseId>,
}

impl State {
    /// Reloads the store (images other handles and processes created or
    /// removed count: a child made elsewhere keeps its parent), reads every
    /// config and the blob catalog, and expands what `leases` hold.
    pub(super) async fn read(lc: &Lifecycle, leases: &[Lease]) -> Result<Self> {
        lc.store.refresh().await?;
        let made = Timestamp::now_utc();
        let images = lc.store.map().await?;
        let catalog = match &lc.blobs {
            Some(blobs) => blobs.catalog().await?,
            None => Vec::new(),
        };
        let held = lc.store.held(leases, made).await?;
        let graph = Graph::new(&lc.store, &images, &catalog);
        Ok(Self {
            made,
            images,
            graph,
            holders: held_items(&held),
        })
    }
}

/// Decides every image and blob under `policies`.
pub(super) fn decide(lc: &Lifecycle, policies: &[Policy], state: &State) -> Plan {
    let State {
        made,
        images,
        graph,
        holders,
    } = state;
    let (made, images, graph, holders) = (*made, images, graph, holders);
    let Marks {
        young,
        pinned,
        used,
        refs,
        loose,
    } = marks(lc, graph, images, holders, made);
    let free = lc.free_space();
    let mut sel = Selection {
        lc,
        images,
        graph,
        pinned: &pinned,
        now: made.unix_nanos(),
        removed: HashMap::new(),
        named_ok: HashSet::new(),
        refs,
        used,
        freed: loose,
    };
    for policy in policies {
        if policy.has_space_target() {
            sel.select_lru(policy, free);
        } else {
            sel.select_all(policy);
        }
    }
    let removed = std::mem::take(&mut sel.removed);
    let named_ok = std::mem::take(&mut sel.named_ok);
    let kept = graph.reach(
        images
            .keys()
            .filter(|id| !removed.contains_key(id))
            .map(|id| Item::Image(*id))
            .chain(pinned.iter().copied()),
    );
    let mut items = Vec::with_capacity(images.len() + graph.blobs.len());
    for (id, image) in images {
        let item = Item::Image(*id);
        let (remove, reason) = match removed.get(id) {
            Some(reason) if !kept.contains(&item) => (true, reason.clone()),
            _ => (
                false,
                keep_reason(lc, policies, holders, &removed, id, made),
            ),
        };
        let bytes = image.raw_json().len() as u64;
        items.push(PlanItem {
            item,
            bytes,
            remove,
            reason,
        });
    }
    items.extend(blob_items(graph, holders, &young, &kept));
    Plan {
        items,
        used_bytes: used,
        free_bytes: free,
        made,
        policies: policies.to_vec(),
        graph: graph.clone(),
        named_ok,
    }
}

/// What planning starts from.
struct Marks {
    /// Blobs nothing refers to yet, inside the grace period.
    young: HashSet<Item>,
    /// What stays whatever the policies say: held items, young blobs,
    /// blobs that could not be read, and everything they refer to.
    pinned: HashSet<Item>,
    /// Bytes of configs and blobs.
    used: u64,
    /// How many images refer to each blob directly.
    refs: HashMap<imagecache_core::Digest, usize>,
    /// Bytes of blobs nothing refers to, which every policy frees.
    loose: u64,
}

fn marks(
    lc: &Lifecycle,
    graph: &Graph,
    images: &BTreeMap<ImageId, Arc<Image>>,
    holders: &HashMap<Item, LeaseId>,
    made: Timestamp,
) -> Marks {
    // Everything some image refers to now. The grace period protects
    // blobs nothing refers to yet (put just before their image or
    // manifest); a blob an image refers to goes or stays with the image.
    let referenced = graph.reach(images.keys().map(|id| Item::Image(*id)));
    let grace_cut = made.unix_nanos() - nanos(lc.options.blob_grace);
    let young: HashSet<Item> = graph
        .blobs
        .iter()
        .filter(|(d, b)| {
            !referenced.contains(&Item::Blob(**d))
                && b.stored.is_some_and(|t| t.unix_nanos() > grace_cut)
        })
        .map(|(d, _)| Item::Blob(*d))
        .collect();
    let pinned = graph.reach(
        holders
            .keys()
            .copied()
            .chain(young.iter().copied())
            .chain(graph.unread()),
    );
    let used = images
        .values()
        .map(|i| i.raw_json().len() as u64)
        .sum::<u64>()
        + graph.blobs.values().map(|b| b.size).sum::<u64>();
    let mut refs: HashMap<imagecache_core::Digest, usize> = HashMap::new();
    for id in images.keys() {
        for blob in graph.blobs_of(id) {
            *refs.entry(blob).or_default() += 1;
        }
    }
    let loose = graph
        .blobs
        .iter()
        .filter(|(d, _)| {
            let item = Item::Blob(**d);
            !referenced.contains(&item) && !pinned.contains(&item)
        })
        .map(|(_, b)| b.size)
        .sum();
    Marks {
        young,
        pinned,
        used,
        refs,
        loose,
    }
}

/// Every blob with whether it goes and why.
fn blob_items<'a>(
    graph: &'a Graph,
    holders: &'a HashMap<Item, LeaseId>,
    young: &'a HashSet<Item>,
    kept: &'a HashSet<Item>,
) -> impl Iterator<Item = PlanItem> + 'a {
    graph.blobs.iter().map(|(digest, node)| {
        let item = Item::Blob(*digest);
        let (remove, reason) = if let Some(lease) = holders.get(&item) {
            (false, Reason::Held(lease.clone()))
        } else if young.contains(&item) {
            (false, Reason::GracePeriod)
        } else if !node.complete {
            (false, Reason::Unreadable)
        } else if kept.contains(&item) {
            (false, Reason::Referenced)
        } else {
            (true, Reason::Unreferenced)
        };
        PlanItem {
            item,
            bytes: node.size,
            remove,
            reason,
        }
    })
}

/// Why a kept image stays.
fn keep_reason(
    lc: &Lifecycle,
    policies: &[Policy],
    holders: &HashMap<Item, LeaseId>,
    removed: &HashMap<ImageId, Reason>,
    id: &ImageId,
    now: Timestamp,
) -> Reason {
    if let Some(lease) = holders.get(&Item::Image(*id)) {
        return Reason::Held(lease.clone());
    }
    if lc
        .store
        .children(id)
        .iter()
        .any(|c| !removed.contains_key(c))
    {
        return Reason::HasChildren;
    }
    if !policies.iter().any(|p| p.all) && !lc.store.names_of(id).is_empty() {
        return Reason::Named;
    }
    let used = last_used(lc, id);
    if !policies.is_empty()
        && policies.iter().all(|p| {
            p.keep_duration
                .is_some_and(|d| !older_than(used, now.unix_nanos(), d))
        })
    {
        return Reason::Recent;
    }
    if policies.iter().any(Policy::has_space_target) {
        return Reason::TargetMet;
    }
    Reason::Filtered
}

pub(super) fn nanos(d: std::time::Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}
