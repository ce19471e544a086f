//! Leases through the store: create, change, renew and delete them, hold
//! resources for the life of a task with [`LeaseGuard`], and tell what the
//! live leases hold ([`Held`]).
//!
//! # Leases and collections
//!
//! A lease is a record in the backend
//! ([`StoreBackend::leases`](imagecache_core::StoreBackend::leases) reads it
//! fresh), so it holds across handles, processes and, on shared backends,
//! machines. A garbage collection announces what it is about to remove
//! with a lease of its own, labelled
//! [`GC_LEASE_LABEL`](imagecache_core::GC_LEASE_LABEL), before it reads
//! the leases one last time. A holder does the mirror image: it writes its
//! lease, then reads the leases, and if a live collection lease names one
//! of its resources it waits until that collection is over. Each side
//! writes before it reads, so at least one of them sees the other: either
//! the collection sees the new lease and keeps what it holds, or the
//! holder sees the collection and waits for it to finish, after which it
//! finds the resources either still there (and now held) or gone. No
//! resource is removed while a holder believes it holds it.
//!
//! A lease belongs to one holder. Changes to one lease from two places at
//! once are read-modify-write, and the last write wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use imagecache_core::{
    ChainId, DiffId, Digest, ImageId, Lease, LeaseId, LeaseResource, StoreBackendExt as _,
    Timestamp,
};

use crate::{Error, Result, Store};

/// What a new lease is made of; see [`Store::create_lease`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// Its ID; a random one when `None`.
    pub id: Option<LeaseId>,
    /// How long it lives unless renewed ([`Lease::DEFAULT_EXPIRY`]).
    pub ttl: Duration,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it holds from the start.
    pub resources: BTreeSet<LeaseResource>,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            id: None,
            ttl: Lease::DEFAULT_EXPIRY,
            labels: BTreeMap::new(),
            resources: BTreeSet::new(),
        }
    }
}

impl LeaseOptions {
    /// A lease with a random ID, the default expiry, no labels and no
    /// resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the lease.
    #[must_use]
    pub fn with_id(mut self, id: LeaseId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets how long it lives unless renewed.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds a label.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a resource.
    #[must_use]
    pub fn with_resource(mut self, resource: LeaseResource) -> Self {
        self.resources.insert(resource);
        self
    }
}

/// What the live leases hold, each resource with one lease that holds it.
///
/// Images include the ancestors of every held image; blobs include the
/// layers (by diff ID) of every held image and of every held layer chain
/// that an image in the store ends with. Blob variants (compressed and
/// decompressed copies) are not expanded here: the blob cache knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Held images.
    pub images: HashMap<ImageId, LeaseId>,
    /// Held layer chains, as named by leases.
    pub layers: HashMap<ChainId, LeaseId>,
    /// Held blobs.
    pub blobs: HashMap<Digest, LeaseId>,
}

impl Held {
    /// The lease holding `resource`, if one does.
    pub fn holder(&self, resource: &LeaseResource) -> Option<&LeaseId> {
        match resource {
            LeaseResource::Image(id) => self.images.get(id),
            LeaseResource::Layer(id) => self.layers.get(id),
            LeaseResource::Blob(d) => self.blobs.get(d),
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.layers.is_empty() && self.blobs.is_empty()
    }
}

/// How long a holder waits for a collection that names its resources
/// before it gives up with [`Error::Collecting`]; a collection's lease
/// expires before that unless the collection is still at work.
const COLLECTION_WAIT: Duration = Duration::from_secs(15 * 60);

impl Store {
    /// Every stored lease, live or expired, sorted by ID, read fresh from
    /// the backend.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self.backend().leases().await?)
    }

    /// One lease, read fresh.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`]; backend failures.
    pub async fn lease(&self, id: &LeaseId) -> Result<Lease> {
        self.leases()
            .await?
            .into_iter()
            .find(|l| &l.id == id)
            .ok_or_else(|| Error::LeaseNotFound { id: id.clone() })
    }

    /// Creates a lease and returns it once it holds its resources: if a
    /// garbage collection is removing any of them, this waits until it is
    /// over (see the [module docs](crate::leases)), so afterwards each
    /// resource is either held or gone.
    ///
    /// # Errors
    /// [`Error::LeaseExists`] when the ID is taken; [`Error::Collecting`]
    /// when a collection holds a resource for longer than a holder waits;
    /// backend failures.
    pub async fn create_lease(&self, options: LeaseOptions) -> Result<Lease> {
        let _guard = self.inner.leases.lock().await;
        let id = options.id.unwrap_or_else(LeaseId::random);
        if self.leases().await?.iter().any(|l| l.id == id) {
            return Err(Error::LeaseExists { id });
        }
        let mut lease = Lease::new(id, options.ttl);
        lease.labels = options.labels;
        lease.resources = options.resources;
        self.write_lease(&lease).await?;
        self.await_collections(&lease.resources).await?;
        tracing::debug!(lease = %lease.id, resources = lease.resources.len(), "created a lease");
        Ok(lease)
    }

    /// Adds resources to a lease, with the same wait as
    /// [`Store::create_lease`] for the ones added.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Collecting`]; backend failures.
    pub async fn add_lease_resources(
        &self,
        id: &LeaseId,
        resources: impl IntoIterator<Item = LeaseResource>,
    ) -> Result<Lease> {
        let _guard = self.inner.leases.lock().await;
        let mut lease = self.lease(id).await?;
        let added: BTreeSet<LeaseResource> = resources
            .into_iter()
            .filter(|r| !lease.resources.contains(r))
            .collect();
        if added.is_empty() {
            return Ok(lease);
        }
        lease.resources.extend(added.iter().copied());
        self.write_lease(&lease).await?;
        self.await_collections(&added).await?;
        Ok(lease)
    }

    /// Removes resources from a lease; those it does not hold are ignored.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`]; backend failures.
    pub async fn remove_lease_resources(
        &self,
        id: &LeaseId,
        resources: impl IntoIterator<Item = LeaseResource>,
    ) -> Result<Lease> {
        let _guard = self.inner.leases.lock().await;
        let mut lease = self.lease(id).await?;
        let before = lease.resources.len();
        for r in resources {
            lease.resources.remove(&r);
        }
        if lease.resources.len() != before {
            self.write_lease(&lease).await?;
        }
        Ok(lease)
    }

    /// Moves a lease's expiry to `ttl` from now.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], also for a lease that has expired already
    /// (it held nothing since, so renewing it could not restore what it
    /// held); backend failures.
    pub async fn renew_lease(&self, id: &LeaseId, ttl: Duration) -> Result<Lease> {
        let _guard = self.inner.leases.lock().await;
        let mut lease = self.lease(id).await?;
        let now = Timestamp::now_utc();
        if !lease.is_live(now) {
            return Err(Error::LeaseNotFound { id: id.clone() });
        }
        lease.renew(now, ttl);
        self.write_lease(&lease).await?;
        Ok(lease)
    }

    /// Deletes a lease; returns whether it was stored.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn delete_lease(&self, id: &LeaseId) -> Result<bool> {
        let _guard = self.inner.leases.lock().await;
        let existed = self.leases().await?.iter().any(|l| &l.id == id);
        self.backend().delete_lease(id).await?;
        Ok(existed)
    }

    /// Deletes the lease records that have expired (they hold nothing
    /// already); returns their IDs.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn remove_expired_leases(&self) -> Result<Vec<LeaseId>> {
        let now = Timestamp::now_utc();
        let mut gone = Vec::new();
        for lease in self.leases().await? {
            if !lease.is_live(now) {
                self.backend().delete_lease(&lease.id).await?;
                gone.push(lease.id);
            }
        }
        Ok(gone)
    }

    /// Creates a lease held for the life of the returned guard, renewed in
    /// the background and deleted when the guard is dropped or
    /// [released](LeaseGuard::release).
    ///
    /// # Errors
    /// As [`Store::create_lease`].
    pub async fn hold(&self, options: LeaseOptions) -> Result<LeaseGuard> {
        let ttl = options.ttl;
        let lease = self.create_lease(options).await?;
        Ok(LeaseGuard::start(self.clone(), lease.id, ttl))
    }

    /// What the given leases hold at `now` (expired leases and collection
    /// leases hold nothing), expanded as [`Held`] describes. Reads the
    /// configs of held images (once each, as [`Store::get`] does).
    ///
    /// # Errors
    /// Backend failures reading a held image's config.
    pub async fn held(&self, leases: &[Lease], now: Timestamp) -> Result<Held> {
        let mut held = Held::default();
        for lease in leases {
            if !lease.is_live(now) || lease.is_collection() {
                continue;
            }
            for r in &lease.resources {
                self.hold_resource(&mut held, &lease.id, r).await?;
            }
        }
        Ok(held)
    }

    async fn hold_resource(&self, held: &mut Held, by: &LeaseId, r: &LeaseResource) -> Result<()> {
        match r {
            LeaseResource::Blob(d) => {
                held.blobs.entry(*d).or_insert_with(|| by.clone());
            }
            LeaseResource::Layer(chain) => {
                held.layers.entry(*chain).or_insert_with(|| by.clone());
                let owner = self
                    .ids()
                    .into_iter()
                    .find(|id| self.info(id).and_then(|i| i.chain_id).as_ref() == Some(chain));
                if let Some(owner) = owner {
                    self.hold_layers_of(held, by, &owner).await?;
                }
            }
            LeaseResource::Image(id) => {
                let mut next = Some(*id);
                while let Some(image) = next {
                    if held.images.contains_key(&image) && image != *id {
                        break;
                    }
                    held.images.entry(image).or_insert_with(|| by.clone());
                    self.hold_layers_of(held, by, &image).await?;
                    next = self.info(&image).and_then(|i| i.parent);
                }
            }
        }
        Ok(())
    }

    async fn hold_layers_of(&self, held: &mut Held, by: &LeaseId, id: &ImageId) -> Result<()> {
        let image = match self.get(id).await {
            Ok(image) => image,
            // An image not stored (yet) holds no layers; a corrupt one has
            // been set aside.
            Err(Error::NotFound { .. } | Error::Corrupt { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        for raw in &image.rootfs.raw_diff_ids {
            if let Ok(diff) = DiffId::parse(raw) {
                held.blobs
                    .entry(*diff.digest())
                    .or_insert_with(|| by.clone());
            }
        }
        Ok(())
    }

    /// The live lease (not a collection's) that holds `id`, directly or as
    /// an ancestor of an image it holds, read fresh; `None` when none does.
    ///
    /// # Errors
    /// Backend failures.
    pub async fn image_holder(&self, id: &ImageId) -> Result<Option<LeaseId>> {
        let leases = self.leases().await?;
        let now = Timestamp::now_utc();
        let live: Vec<Lease> = leases
            .into_iter()
            .filter(|l| l.is_live(now) && !l.is_collection())
            .collect();
        if live.is_empty() {
            return Ok(None);
        }
        let held = self.held(&live, now).await?;
        Ok(held.images.get(id).cloned())
    }

    /// Stores `lease`, refusing one whose record is larger than a backend
    /// reads back ([`MAX_LEASE_RECORD`](imagecache_core::MAX_LEASE_RECORD)):
    /// stored, it would make listing leases fail until it was removed.
    async fn write_lease(&self, lease: &Lease) -> Result<()> {
        let size = lease.encode().len();
        if size > imagecache_core::MAX_LEASE_RECORD {
            return Err(Error::Backend(imagecache_core::Error::TooLarge {
                key: imagecache_core::Key::Other(format!("lease {}", lease.id)),
                size: size as u64,
                limit: imagecache_core::MAX_LEASE_RECORD as u64,
            }));
        }
        self.backend().set_lease(lease.clone()).await?;
        Ok(())
    }

    /// Waits while a live collection lease names one of `resources`.
    async fn await_collections(&self, resources: &BTreeSet<LeaseResource>) -> Result<()> {
        if resources.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let now = Timestamp::now_utc();
            let blocking = self.leases().await?.into_iter().find_map(|l| {
                let hit = l.is_live(now)
                    && l.is_collection()
                    && l.resources.iter().any(|r| resources.contains(r));
                hit.then_some(l.id)
            });
            let Some(collection) = blocking else {
                return Ok(());
            };
            if started.elapsed() >= COLLECTION_WAIT {
                return Err(Error::Collecting { lease: collection });
            }
            tracing::debug!(%collection, "waiting for a garbage collection to finish");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// A lease held for the life of a task: renewed in the background, deleted
/// when dropped.
///
/// Dropping the guard inside a Tokio runtime deletes the lease in a
/// spawned task; outside one, the lease is left to expire.
pub struct LeaseGuard {
    store: Store,
    id: LeaseId,
    renewer: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    fn start(store: Store, id: LeaseId, ttl: Duration) -> Self {
        let renewer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let store = store.clone();
            let id = id.clone();
            let every = (ttl / 3).max(Duration::from_millis(100));
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = store.renew_lease(&id, ttl).await {
                        tracing::warn!(lease = %id, error = %e, "cannot renew a held lease");
                        if matches!(e, Error::LeaseNotFound { .. }) {
                            return;
                        }
                    }
                }
            })
        });
        Self {
            store,
            id,
            renewer,
            released: false,
        }
    }

    /// The lease's ID.
    pub fn id(&self) -> &LeaseId {
        &self.id
    }

    /// Adds resources to the lease; see [`Store::add_lease_resources`].
    ///
    /// # Errors
    /// As [`Store::add_lease_resources`].
    pub async fn add(&self, resources: impl IntoIterator<Item = LeaseResource>) -> Result<Lease> {
        self.store.add_lease_resources(&self.id, resources).await
    }

    /// Removes resources from the lease.
    ///
    /// # Errors
    /// As [`Store::remove_lease_resources`].
    pub async fn remove(
        &self,
        resources: impl IntoIterator<Item = LeaseResource>,
    ) -> Result<Lease> {
        self.store.remove_lease_resources(&self.id, resources).await
    }

    /// Stops renewing and deletes the lease now.
    ///
    /// # Errors
    /// Backend failures; the lease then expires on its own.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
        self.store.delete_lease(&self.id).await.map(drop)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let id = self.id.clone();
            rt.spawn(async move {
                if let Err(e) = store.delete_lease(&id).await {
                    tracing::warn!(lease = %id, error = %e, "cannot delete a dropped lease");
                }
            });
        }
    }
}
