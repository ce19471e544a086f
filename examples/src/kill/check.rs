//! The parent's check after a kill: the store opens, the library's own
//! check finds nothing, every acknowledged write is there and verifies,
//! nothing else is, and the invariants hold. What the interrupted operation
//! may or may not have done is then taken as found.

use std::collections::{BTreeMap, BTreeSet};

use imagecache_core::{Digest, GC_LEASE_LABEL, ImageId, LeaseId};
use imagecache_engine::blob::BlobCache;
use imagecache_engine::lifecycle::{LAST_CHECK_LEASE, Lifecycle};
use imagecache_store::Store;

use super::model::{Img, Loose, Model, ModelLease};

/// Running counts over all rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    /// Children killed.
    pub kills: u64,
    /// Acknowledged items (images, names, blobs, leases) found and verified.
    pub acked_checked: u64,
    /// Acknowledged items missing, or found damaged.
    pub lost: u64,
    /// Reads the library returned as good whose bytes do not match.
    pub corrupt_served: u64,
    /// Broken promises: open or check problems, items nobody wrote, broken
    /// links, removals of what had to stay.
    pub invariant_breaks: u64,
    /// Notes naming a layer's other copy that is gone, as the library's
    /// check reports them: an interrupted collection or image removal
    /// deletes one copy of a layer before the other. Counted apart from
    /// the invariant breaks, since the copy was removed on purpose (a
    /// removed copy that was acknowledged counts as lost) and the next
    /// collection removes the other.
    pub dangling_notes: u64,
    /// Operations acknowledged.
    pub ops_acked: u64,
    /// Operations a kill interrupted, whose outcome was taken as found.
    pub in_flight: u64,
    /// Children that stopped on an error of their own before the kill.
    pub child_errors: u64,
}

/// How the library's check ends the problem of a note naming a copy that
/// is gone.
const DANGLING_NOTE: &str = "as its other copy, which is not cached";

/// What the store holds, as read back.
struct Found {
    store: Store,
    blobs: BlobCache,
    catalog: BTreeSet<Digest>,
    leases: BTreeMap<LeaseId, ModelLease>,
}

/// Checks the store at `url` against `model`, counting into `tally` and
/// describing every problem into `problems`; then takes the state of the
/// `loose` items as found.
///
/// # Errors
/// The backend does not open or cannot be listed.
pub(crate) async fn check(
    url: &str,
    model: &mut Model,
    loose: &Loose,
    tally: &mut Tally,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let found = open(url, tally, problems).await?;
    let mut c = Counter { tally, problems };
    check_images(&found, model, loose, &mut c).await;
    check_names(&found, model, loose, &mut c);
    check_blobs(&found, model, loose, &mut c).await;
    check_leases(&found, model, loose, &mut c);
    check_links(&found, model, &mut c).await;
    adopt(&found, model, loose).await;
    Ok(())
}

struct Counter<'a> {
    tally: &'a mut Tally,
    problems: &'a mut Vec<String>,
}

impl Counter<'_> {
    fn lost(&mut self, what: String) {
        self.tally.lost += 1;
        self.problems.push(format!("lost: {what}"));
    }

    fn corrupt(&mut self, what: String) {
        self.tally.corrupt_served += 1;
        self.problems.push(format!("corrupt served: {what}"));
    }

    fn broken(&mut self, what: String) {
        self.tally.invariant_breaks += 1;
        self.problems.push(format!("invariant: {what}"));
    }
}

/// Opens the store and runs the library's own check.
async fn open(url: &str, tally: &mut Tally, problems: &mut Vec<String>) -> anyhow::Result<Found> {
    let backend = imagecache_backends::open(url).await?;
    let store = Store::open(backend.images()).await?;
    let blobs = BlobCache::new(backend.blobs())?;
    let mut c = Counter { tally, problems };
    for p in store.report().problems {
        c.broken(format!("opening the store: {p}"));
    }
    let lc = Lifecycle::new(store.clone(), Some(blobs.clone()));
    let checked = lc.check().await?.problems;
    for p in checked {
        if p.problem.ends_with(DANGLING_NOTE) {
            c.tally.dangling_notes += 1;
        } else {
            c.broken(format!("check: {}: {}", p.key, p.problem));
        }
    }
    let catalog = blobs
        .catalog()
        .await?
        .iter()
        .map(|e| e.info.digest)
        .collect();
    let leases = store
        .leases()
        .await?
        .into_iter()
        .filter(|l| !l.labels.contains_key(GC_LEASE_LABEL) && l.id.as_str() != LAST_CHECK_LEASE)
        .map(|l| {
            let lease = ModelLease {
                expires: l.expires.unix_nanos(),
                resources: l.resources,
            };
            (l.id, lease)
        })
        .collect();
    Ok(Found {
        store,
        blobs,
        catalog,
        leases,
    })
}

/// An image as the store has it, its config read through the library and
/// verified here too.
async fn read_image(found: &Found, id: &ImageId, c: &mut Counter<'_>) -> Option<Img> {
    let image = match found.store.get(id).await {
        Ok(image) => image,
        Err(e) => {
            c.lost(format!("image {id}: {e}"));
            return None;
        }
    };
    match found.store.backend().get(id).await {
        Ok(bytes) if ImageId::of_config(&bytes) != *id => {
            c.corrupt(format!(
                "image {id}: the config read does not hash to its ID"
            ));
        }
        Ok(_) => {}
        Err(e) => c.lost(format!("image {id}: {e}")),
    }
    let layers = image
        .rootfs
        .raw_diff_ids
        .iter()
        .filter_map(|d| Digest::parse(d).ok())
        .collect();
    Some(Img {
        parent: found.store.parent(id).ok().flatten(),
        layers,
    })
}

async fn check_images(found: &Found, model: &Model, loose: &Loose, c: &mut Counter<'_>) {
    for (id, want) in &model.images {
        if loose.images.contains(id) {
            continue;
        }
        if !found.store.contains(id) {
            c.lost(format!("image {id}"));
            continue;
        }
        let Some(got) = read_image(found, id, c).await else {
            continue;
        };
        c.tally.acked_checked += 1;
        if got.layers != want.layers {
            c.corrupt(format!(
                "image {id}: layers {:?}, not {:?}",
                got.layers, want.layers
            ));
        }
        if got.parent != want.parent && !loose.parents.contains(id) {
            c.lost(format!(
                "image {id}: parent {:?}, not {:?}",
                got.parent, want.parent
            ));
        }
    }
    for id in found.store.ids() {
        if !model.images.contains_key(&id) && !loose.images.contains(&id) {
            c.broken(format!("image {id} is stored, but no operation wrote it"));
        }
    }
}

fn check_names(found: &Found, model: &Model, loose: &Loose, c: &mut Counter<'_>) {
    let names: BTreeMap<String, ImageId> = found
        .store
        .names()
        .into_iter()
        .map(|(n, id)| (n.to_string(), id))
        .collect();
    for (name, want) in &model.names {
        if loose.names.contains(name) {
            continue;
        }
        match names.get(name) {
            Some(got) if got == want => c.tally.acked_checked += 1,
            got => c.lost(format!("name {name}: points at {got:?}, not {want}")),
        }
    }
    for (name, id) in &names {
        if !model.names.contains_key(name) && !loose.names.contains(name) {
            c.broken(format!(
                "name {name} points at {id}, but no operation set it"
            ));
        }
    }
}

async fn check_blobs(found: &Found, model: &Model, loose: &Loose, c: &mut Counter<'_>) {
    for d in &model.blobs {
        if loose.blobs.contains(d) {
            continue;
        }
        match found.blobs.get(d).await {
            Ok(Some(reader)) => match reader.bytes().await {
                Ok(bytes) if Digest::sha256(&bytes) == *d => c.tally.acked_checked += 1,
                Ok(_) => c.corrupt(format!("blob {d}: the bytes read do not hash to it")),
                Err(e) => c.lost(format!("blob {d}: {e}")),
            },
            Ok(None) => c.lost(format!("blob {d}")),
            Err(e) => c.lost(format!("blob {d}: {e}")),
        }
    }
    for d in &found.catalog {
        if !model.blobs.contains(d) && !loose.blobs.contains(d) {
            c.broken(format!("blob {d} is cached, but no operation put it"));
        }
    }
}

fn check_leases(found: &Found, model: &Model, loose: &Loose, c: &mut Counter<'_>) {
    for (id, want) in &model.leases {
        if loose.leases.contains(id) {
            continue;
        }
        match found.leases.get(id) {
            Some(got) if got == want => c.tally.acked_checked += 1,
            got => c.lost(format!("lease {id}: {got:?}, not {want:?}")),
        }
    }
    for id in found.leases.keys() {
        if !model.leases.contains_key(id) && !loose.leases.contains(id) {
            c.broken(format!("lease {id} is stored, but no operation wrote it"));
        }
    }
}

/// Parents and children agree, names point at images, every image's
/// layers are cached.
async fn check_links(found: &Found, model: &Model, c: &mut Counter<'_>) {
    let store = &found.store;
    for id in store.ids() {
        if let Ok(Some(p)) = store.parent(&id) {
            if !store.contains(&p) {
                c.broken(format!("image {id}: parent {p} is not stored"));
            } else if !store.children(&p).contains(&id) {
                c.broken(format!(
                    "image {id}: not among the children of its parent {p}"
                ));
            }
        }
        for child in store.children(&id) {
            if store.parent(&child).ok().flatten() != Some(id) {
                c.broken(format!("image {id}: child {child} names another parent"));
            }
        }
        let layers = model
            .images
            .get(&id)
            .map(|i| i.layers.clone())
            .unwrap_or_default();
        for d in layers {
            if !found.catalog.contains(&d) {
                c.broken(format!("image {id}: layer {d} is not cached"));
            }
        }
    }
    for (name, id) in store.names() {
        if !store.contains(&id) {
            c.broken(format!("name {name} points at {id}, which is not stored"));
        }
    }
}

/// Takes what the interrupted operation may have changed as found.
async fn adopt(found: &Found, model: &mut Model, loose: &Loose) {
    for id in loose.images.iter().chain(&loose.parents) {
        if !found.store.contains(id) {
            model.images.remove(id);
            continue;
        }
        let parent = found.store.parent(id).ok().flatten();
        let layers = match found.store.get(id).await {
            Ok(image) => image
                .rootfs
                .raw_diff_ids
                .iter()
                .filter_map(|d| Digest::parse(d).ok())
                .collect(),
            Err(_) => continue,
        };
        model.images.insert(*id, Img { parent, layers });
    }
    let names: BTreeMap<String, ImageId> = found
        .store
        .names()
        .into_iter()
        .map(|(n, id)| (n.to_string(), id))
        .collect();
    for name in &loose.names {
        match names.get(name) {
            Some(id) => model.names.insert(name.clone(), *id),
            None => model.names.remove(name),
        };
    }
    for d in &loose.blobs {
        if found.catalog.contains(d) {
            model.blobs.insert(*d);
        } else {
            model.blobs.remove(d);
            model.pairs.remove(d);
            model.pairs.retain(|_, c| c != d);
        }
    }
    for id in &loose.leases {
        match found.leases.get(id) {
            Some(l) => model.leases.insert(id.clone(), l.clone()),
            None => model.leases.remove(id),
        };
    }
}
