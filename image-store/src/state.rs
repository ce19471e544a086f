//! The in-memory indexes of a store.
//!
//! Every query the store answers without I/O is answered here: the image
//! set in ID order (search, deterministic listings), parent and children
//! links, the heads, and the cache index from (stored parent, cache key) to
//! images. All of it is kept consistent by the few mutating methods below;
//! nothing else touches the maps.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use imagecache_core::{CacheKey, Image, ImageId, Timestamp};

use crate::names::Names;
use crate::summary::Summary;

/// The hash map of the indexes. Keys are digests, already uniform, so a
/// fast seeded hash is enough and saves most of the cost of loading.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything known about one image except its config.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) summary: Summary,
    /// The parent as stored in metadata. It may name an image that is not
    /// in the store (Docker leaves such links behind); it is then not
    /// linked, but it still makes the image "not parentless", as in Docker.
    pub(crate) parent: Option<ImageId>,
    pub(crate) built_locally: bool,
    pub(crate) last_updated: Option<Timestamp>,
    /// The last cache hit recorded in the backend.
    pub(crate) last_used: Option<Timestamp>,
    /// Children linked to this image, sorted.
    pub(crate) children: Vec<ImageId>,
    /// The parsed config, once read.
    pub(crate) image: Option<Arc<Image>>,
    /// Whether a layer reference is held for this image.
    pub(crate) holds_layer: bool,
}

impl Entry {
    pub(crate) fn new(summary: Summary) -> Self {
        Self {
            summary,
            parent: None,
            built_locally: false,
            last_updated: None,
            last_used: None,
            children: Vec::new(),
            image: None,
            holds_layer: false,
        }
    }
}

/// The indexes.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) entries: Map<ImageId, Entry>,
    /// All IDs in order: prefix search and deterministic listings.
    pub(crate) ids: BTreeSet<ImageId>,
    /// IDs with no linked children.
    pub(crate) heads: BTreeSet<ImageId>,
    /// (stored parent, cache key) → images, each list sorted.
    pub(crate) by_key: Map<KeyOf, SortedIds>,
    /// Parent → images whose stored parent is that ID but which could not
    /// be linked because it is not in the store (yet).
    pub(crate) waiting: Map<ImageId, Vec<ImageId>>,
    /// Names (`busybox:latest`) and their images; only of images held here.
    pub(crate) names: Names,
}

/// In the graph where node `i` points at `parent_of[i]`, the node of each
/// cycle with the greatest rank.
fn cycle_closers(parent_of: &[Option<usize>], rank: &[Option<usize>]) -> Vec<usize> {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut mark = vec![NEW; parent_of.len()];
    let mut path = Vec::new();
    let mut closers = Vec::new();
    for start in 0..parent_of.len() {
        let mut cur = Some(start);
        while let Some(i) = cur {
            match mark[i] {
                NEW => {
                    mark[i] = ON_PATH;
                    path.push(i);
                    cur = parent_of[i];
                }
                ON_PATH => {
                    // The walk came back to a node of its own path: the
                    // path from that node on is a cycle.
                    let from = path.iter().rposition(|&n| n == i).unwrap_or(0);
                    closers.extend(path[from..].iter().max_by_key(|&&n| rank[n]));
                    break;
                }
                _ => break,
            }
        }
        for n in path.drain(..) {
            mark[n] = DONE;
        }
    }
    closers
}

/// (stored parent, cache key): what the cache index is keyed by.
pub(crate) type KeyOf = (Option<ImageId>, CacheKey);

/// A sorted set of IDs that keeps a single one in place: most (parent,
/// cache key) pairs name one image, and a lookup then reads no other
/// memory than the map's own slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SortedIds {
    One(ImageId),
    /// Two or more, sorted.
    Many(Vec<ImageId>),
}

impl SortedIds {
    fn as_slice(&self) -> &[ImageId] {
        match self {
            Self::One(id) => std::slice::from_ref(id),
            Self::Many(ids) => ids,
        }
    }

    fn insert(&mut self, id: ImageId) {
        match self {
            Self::One(one) if *one == id => {}
            Self::One(one) => {
                let one = *one;
                *self = Self::Many(if one < id {
                    vec![one, id]
                } else {
                    vec![id, one]
                });
            }
            Self::Many(ids) => insert_sorted(ids, id),
        }
    }

    /// Removes `id`; returns whether the set is now empty.
    fn remove(&mut self, id: &ImageId) -> bool {
        match self {
            Self::One(one) => one == id,
            Self::Many(ids) => {
                remove_sorted(ids, id);
                if let [last] = ids[..] {
                    *self = Self::One(last);
                }
                false
            }
        }
    }
}

fn index_insert(index: &mut Map<KeyOf, SortedIds>, key: KeyOf, id: ImageId) {
    index
        .entry(key)
        .and_modify(|ids| ids.insert(id))
        .or_insert(SortedIds::One(id));
}

fn index_remove(index: &mut Map<KeyOf, SortedIds>, key: KeyOf, id: &ImageId) {
    if index.get_mut(&key).is_some_and(|ids| ids.remove(id)) {
        index.remove(&key);
    }
}

fn insert_sorted(v: &mut Vec<ImageId>, id: ImageId) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

fn remove_sorted(v: &mut Vec<ImageId>, id: &ImageId) {
    if let Ok(pos) = v.binary_search(id) {
        v.remove(pos);
    }
}

impl State {
    pub(crate) fn contains(&self, id: &ImageId) -> bool {
        self.entries.contains_key(id)
    }

    /// Whether `ancestor` is `id` or one of its linked ancestors.
    pub(crate) fn is_ancestor_or_self(&self, ancestor: &ImageId, id: &ImageId) -> bool {
        let mut cur = Some(*id);
        // Links never form a cycle (they are refused, and broken on load),
        // but bound the walk anyway: a bug must not become a hang.
        for _ in 0..=self.entries.len() {
            match cur {
                Some(c) if c == *ancestor => return true,
                Some(c) => cur = self.entries.get(&c).and_then(|e| e.parent),
                None => return false,
            }
        }
        true
    }

    /// Builds the indexes at once from entries whose `parent` holds the
    /// stored parent, in linear time after sorting. The result is what
    /// [`State::insert`] of every entry followed by [`State::set_parent`] in
    /// ID order would give, links that would close a cycle refused: of each
    /// stored cycle, the link of the member with the greatest ID is dropped
    /// (the last one such an order would add) and returned as
    /// `(child, parent)`. Of entries with the same ID, the first is kept.
    pub(crate) fn build(mut list: Vec<(ImageId, Entry)>) -> (Self, Vec<(ImageId, ImageId)>) {
        // Entries are large and stay where they are; their positions are
        // sorted by ID instead.
        let mut order: Vec<(ImageId, usize)> = list
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        order.sort_unstable();
        order.dedup_by(|later, earlier| later.0 == earlier.0);
        // Rank in ID order of each kept position.
        let mut rank = vec![None; list.len()];
        for (r, &(_, i)) in order.iter().enumerate() {
            rank[i] = Some(r);
        }
        let position: Map<ImageId, usize> = order.iter().copied().collect();
        let mut parent_of: Vec<Option<usize>> = list
            .iter()
            .zip(&rank)
            .map(|((_, e), r)| {
                r.as_ref()?;
                position.get(e.parent.as_ref()?).copied()
            })
            .collect();
        drop(position);
        let mut dropped = Vec::new();
        for i in cycle_closers(&parent_of, &rank) {
            if let Some(parent) = list[i].1.parent.take() {
                dropped.push((list[i].0, parent));
            }
            parent_of[i] = None;
        }
        dropped.sort();

        let mut state = Self {
            entries: Map::with_capacity_and_hasher(order.len(), Default::default()),
            by_key: Map::with_capacity_and_hasher(order.len(), Default::default()),
            ..Self::default()
        };
        // Many parents have a single child: size every list exactly rather
        // than let each start at a capacity of four.
        let mut child_count = vec![0usize; list.len()];
        for p in parent_of.iter().flatten() {
            child_count[*p] += 1;
        }
        for (i, (_, entry)) in list.iter_mut().enumerate() {
            entry.children = Vec::with_capacity(child_count[i]);
        }
        // Visited in ID order, every list below comes out sorted.
        for &(id, i) in &order {
            let entry = &list[i].1;
            index_insert(
                &mut state.by_key,
                (entry.parent, entry.summary.cache_key),
                id,
            );
            match (entry.parent, parent_of[i]) {
                (Some(_), Some(p)) => list[p].1.children.push(id),
                (Some(parent), None) => state.waiting.entry(parent).or_default().push(id),
                (None, _) => {}
            }
        }
        state.ids = order.iter().map(|(id, _)| *id).collect();
        state.heads = order
            .iter()
            .filter(|(_, i)| list[*i].1.children.is_empty())
            .map(|(id, _)| *id)
            .collect();
        state.entries.extend(
            list.into_iter()
                .zip(rank)
                .filter_map(|(item, rank)| rank.map(|_| item)),
        );
        (state, dropped)
    }

    /// Adds an image with no parent set. Any images waiting for it as their
    /// parent are linked to it.
    pub(crate) fn insert(&mut self, id: ImageId, entry: Entry) {
        debug_assert!(entry.parent.is_none() && entry.children.is_empty());
        let key = entry.summary.cache_key;
        self.entries.insert(id, entry);
        self.ids.insert(id);
        self.heads.insert(id);
        index_insert(&mut self.by_key, (None, key), id);
        if let Some(waiting) = self.waiting.remove(&id) {
            for child in waiting {
                self.link(child, id);
            }
        }
    }

    /// Links `child` under `parent` (both present).
    fn link(&mut self, child: ImageId, parent: ImageId) {
        if let Some(p) = self.entries.get_mut(&parent) {
            insert_sorted(&mut p.children, child);
            self.heads.remove(&parent);
        }
    }

    /// Removes the link of `child` to its parent, if linked.
    fn unlink(&mut self, child: &ImageId, parent: &ImageId) {
        if let Some(p) = self.entries.get_mut(parent) {
            remove_sorted(&mut p.children, child);
            if p.children.is_empty() {
                self.heads.insert(*parent);
            }
        } else if let Some(w) = self.waiting.get_mut(parent) {
            remove_sorted(w, child);
            if w.is_empty() {
                self.waiting.remove(parent);
            }
        }
    }

    /// Sets (or clears) the stored parent of `id`, keeping every index in step.
    pub(crate) fn set_parent(&mut self, id: &ImageId, parent: Option<ImageId>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let old = entry.parent;
        if old == parent {
            return;
        }
        entry.parent = parent;
        let key = entry.summary.cache_key;
        if let Some(old) = old {
            self.unlink(id, &old);
        }
        index_remove(&mut self.by_key, (old, key), id);
        index_insert(&mut self.by_key, (parent, key), *id);
        if let Some(p) = parent {
            if self.entries.contains_key(&p) {
                self.link(*id, p);
            } else {
                insert_sorted(self.waiting.entry(p).or_default(), *id);
            }
        }
    }

    /// Removes an image; its children lose their parent. Returns the entry.
    pub(crate) fn remove(&mut self, id: &ImageId) -> Option<Entry> {
        let children = self.entries.get(id)?.children.clone();
        for child in &children {
            self.set_parent(child, None);
        }
        self.set_parent(id, None);
        let entry = self.entries.remove(id)?;
        self.ids.remove(id);
        self.heads.remove(id);
        // The backend removes an image's names with it.
        self.names.drop_image(id);
        index_remove(&mut self.by_key, (None, entry.summary.cache_key), id);
        Some(entry)
    }

    /// Images whose stored parent is `parent` (`None`: parentless) and
    /// whose container config has `key`.
    pub(crate) fn with_key(&self, parent: Option<&ImageId>, key: &CacheKey) -> &[ImageId] {
        self.by_key
            .get(&(parent.copied(), *key))
            .map_or(&[], SortedIds::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagecache_core::Platform;

    fn entry(key: u8) -> Entry {
        Entry::new(Summary {
            config_len: 1,
            created: None,
            platform: Arc::new(Platform::default()),
            history_len: 0,
            diff_ids_len: 0,
            cache_key: CacheKey([key; 16]),
            exact_key: imagecache_core::ExactKey([key; 32]),
            chain_id: None,
        })
    }

    fn id(n: u8) -> ImageId {
        ImageId::of_config(&[n])
    }

    /// Recomputes every index from the entries' stored parents and checks
    /// that the incrementally maintained ones agree.
    fn check(s: &State) {
        let mut children: HashMap<ImageId, Vec<ImageId>> = HashMap::new();
        let mut by_key: Map<KeyOf, Vec<ImageId>> = Map::default();
        for (id, e) in &s.entries {
            if let Some(p) = e.parent
                && s.entries.contains_key(&p)
            {
                children.entry(p).or_default().push(*id);
            }
            by_key
                .entry((e.parent, e.summary.cache_key))
                .or_default()
                .push(*id);
        }
        for (id, e) in &s.entries {
            let mut want = children.remove(id).unwrap_or_default();
            want.sort();
            assert_eq!(e.children, want, "children of {id}");
            assert_eq!(s.heads.contains(id), want.is_empty(), "head {id}");
        }
        for v in by_key.values_mut() {
            v.sort();
        }
        let index: Map<KeyOf, Vec<ImageId>> = s
            .by_key
            .iter()
            .map(|(k, ids)| (*k, ids.as_slice().to_vec()))
            .collect();
        assert_eq!(index, by_key);
        assert!(
            s.by_key
                .values()
                .all(|ids| matches!(ids, SortedIds::One(_)) || ids.as_slice().len() > 1),
            "a single ID is kept in place"
        );
        assert_eq!(s.ids.len(), s.entries.len());
    }

    #[test]
    fn links_follow_parent_changes_and_removal() {
        let mut s = State::default();
        for n in 0..4 {
            s.insert(id(n), entry(n % 2));
        }
        s.set_parent(&id(1), Some(id(0)));
        s.set_parent(&id(2), Some(id(0)));
        s.set_parent(&id(3), Some(id(1)));
        check(&s);
        assert_eq!(s.with_key(Some(&id(0)), &CacheKey([1; 16])), &[id(1)]);
        s.set_parent(&id(2), Some(id(1)));
        check(&s);
        s.remove(&id(1));
        check(&s);
        assert_eq!(s.entries[&id(3)].parent, None);
        assert!(s.is_ancestor_or_self(&id(0), &id(0)));
        assert!(!s.is_ancestor_or_self(&id(0), &id(3)));
    }

    /// The incremental path `build` must agree with: insert everything,
    /// then add the stored links in ID order, refusing any that would close
    /// a cycle.
    fn incremental(list: &[(ImageId, Entry)]) -> (State, Vec<(ImageId, ImageId)>) {
        let mut s = State::default();
        for (id, e) in list {
            let mut e = e.clone();
            e.parent = None;
            s.insert(*id, e);
        }
        let mut sorted: Vec<_> = list.iter().collect();
        sorted.sort_by_key(|(id, _)| *id);
        let mut refused = Vec::new();
        for (id, e) in sorted {
            let Some(parent) = e.parent else { continue };
            if s.contains(&parent) && s.is_ancestor_or_self(id, &parent) {
                refused.push((*id, parent));
                continue;
            }
            s.set_parent(id, Some(parent));
        }
        refused.sort();
        (s, refused)
    }

    #[test]
    fn build_agrees_with_incremental_links_on_random_graphs() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut cycles_seen = 0;
        for round in 0..400 {
            let n = 1 + next(12) as u8;
            let list: Vec<(ImageId, Entry)> = (0..n)
                .map(|i| {
                    let mut e = entry(next(3) as u8);
                    // Parents among the images, absent ones, or none; self
                    // links are refused before they get here.
                    e.parent = match next(4) {
                        0 => None,
                        1 => Some(id(100 + next(3) as u8)),
                        _ => Some(id(next(u64::from(n)) as u8)).filter(|p| *p != id(i)),
                    };
                    (id(i), e)
                })
                .collect();
            let (built, dropped) = State::build(list.clone());
            let (want, refused) = incremental(&list);
            check(&built);
            cycles_seen += dropped.len();
            assert_eq!(dropped, refused, "round {round}");
            assert_eq!(built.ids, want.ids, "round {round}");
            assert_eq!(built.heads, want.heads, "round {round}");
            assert_eq!(built.by_key, want.by_key, "round {round}");
            assert_eq!(built.waiting, want.waiting, "round {round}");
            for (id, e) in &want.entries {
                let b = &built.entries[id];
                assert_eq!(
                    (b.parent, &b.children),
                    (e.parent, &e.children),
                    "round {round}"
                );
            }
        }
        assert!(cycles_seen > 0, "the generator must produce cycles");
    }

    #[test]
    fn dangling_parent_links_when_parent_arrives() {
        let mut s = State::default();
        s.insert(id(1), entry(0));
        s.set_parent(&id(1), Some(id(9)));
        check(&s);
        assert_eq!(s.with_key(None, &CacheKey([0; 16])), &[] as &[ImageId]);
        s.insert(id(9), entry(0));
        check(&s);
        assert_eq!(s.entries[&id(9)].children, vec![id(1)]);
    }
}
