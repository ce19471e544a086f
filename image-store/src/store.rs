//! The image store.

mod create;
mod load;
mod uses;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tracing::Instrument as _;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{
    CacheKey, ChainId, Error as CoreError, Image, ImageId, MetadataKey, Reference, StoreBackend,
    Timestamp, WriteBatch,
};

use crate::error::{Error, Result};
use crate::options::StoreOptions;
use crate::report::{Candidate, ImageInfo, OpenReport, Problem};
use crate::search::search;
use crate::state::{Entry, State};

pub(crate) struct Inner {
    backend: Arc<dyn StoreBackend>,
    options: StoreOptions,
    state: RwLock<State>,
    /// Orders changes so that the backend and the indexes change in the
    /// same order. Creates of new images share it (they cannot conflict:
    /// no cycle can pass through an image that does not exist yet, and no
    /// parent can be deleted while they run); deletes, re-parenting,
    /// metadata changes and refreshes take it alone. Reads never take it.
    mutation: tokio::sync::RwLock<()>,
    /// Creates sharing `mutation` that touch the same image are serialised
    /// by these, picked by the image ID, so the backend and the indexes see
    /// their writes in the same order.
    stripes: Vec<tokio::sync::Mutex<()>>,
    report: RwLock<OpenReport>,
    /// Serialises this handle's read-modify-write changes to leases.
    pub(crate) leases: tokio::sync::Mutex<()>,
    /// Uses recorded and not yet written.
    uses: uses::PendingUses,
    /// A write failed, so the backend may hold more of it than memory
    /// does (a backend may apply a write and still report an error); the
    /// next change reloads first.
    stale: std::sync::atomic::AtomicBool,
}

/// A content-addressable image store over any [`StoreBackend`].
///
/// Configs are read and verified once, then served from memory. Opening
/// reads no config the backend has a summary for, so it costs a listing
/// plus the configs that are new. Parent links, children, heads and a cache
/// index are kept in memory and answered without I/O. Clones share the store.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use imagecache_backends::MemoryBackend;
/// use imagecache_store::{CreateOptions, Store};
///
/// let store = Store::open(Arc::new(MemoryBackend::new())).await?;
/// let base = store.create(&br#"{"rootfs":{"type":"layers"},"comment":"base"}"#[..]).await?;
/// let child = store
///     .create_with(
///         &br#"{"rootfs":{"type":"layers"},"comment":"child"}"#[..],
///         CreateOptions::new().with_parent(base).with_built_locally(true),
///     )
///     .await?;
/// assert_eq!(store.children(&base), vec![child]);
/// assert_eq!(store.search(&child.hex()[..12])?, child);
/// assert_eq!(store.get(&child).await?.comment, "child");
/// # Ok::<(), imagecache_store::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.to_string())
            .field("images", &self.len())
            .finish_non_exhaustive()
    }
}

/// Number of per-image locks that serialise concurrent creates of one image.
const STRIPES: usize = 64;

fn stripe_of(id: &ImageId) -> usize {
    usize::from(id.to_bytes()[0]) % STRIPES
}

fn not_found(id: &ImageId) -> Error {
    Error::NotFound { id: *id }
}

impl Store {
    /// Opens a store with default options.
    ///
    /// # Errors
    /// Backend failures while loading. Damaged entries do not fail the
    /// open; they are reported in [`Store::report`].
    pub async fn open(backend: Arc<dyn StoreBackend>) -> Result<Self> {
        Self::open_with(backend, StoreOptions::default()).await
    }

    /// Opens a store.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_with(backend: Arc<dyn StoreBackend>, options: StoreOptions) -> Result<Self> {
        let backend = imagecache_core::instrument::instrument_store(backend);
        let span = tracing::debug_span!("open", backend = %backend);
        Self::open_instrumented(backend, options)
            .instrument(span)
            .await
    }

    async fn open_instrumented(
        backend: Arc<dyn StoreBackend>,
        options: StoreOptions,
    ) -> Result<Self> {
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                options,
                state: RwLock::new(State::default()),
                mutation: tokio::sync::RwLock::new(()),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                report: RwLock::new(OpenReport::default()),
                leases: tokio::sync::Mutex::new(()),
                uses: uses::PendingUses::default(),
                stale: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let started = std::time::Instant::now();
        let report = store.refresh().await?;
        metrics::histogram!(crate::metric_names::STORE_OPEN_SECONDS)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            backend = %store.inner.backend,
            images = store.len(),
            configs_read = report.configs_read,
            problems = report.problems.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "opened the image store"
        );
        Ok(store)
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.inner.backend
    }

    /// What the last open or [`Store::refresh`] found.
    pub fn report(&self) -> OpenReport {
        read(&self.inner.report).clone()
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        read(&self.inner.state)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        write(&self.inner.state)
    }

    /// Reloads from the backend, picking up images added, removed or
    /// re-parented by other handles or programs since the last load.
    ///
    /// # Errors
    /// Backend failures while loading.
    pub async fn refresh(&self) -> Result<OpenReport> {
        let _guard = self.inner.mutation.write().await;
        self.inner
            .stale
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let snapshot = self.inner.backend.load().await?;
        let report = self.rebuild(snapshot).await?;
        *write(&self.inner.report) = report.clone();
        Ok(report)
    }

    /// The image with this ID, its config read and verified once and then
    /// served from memory.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown ID; [`Error::Corrupt`] when the
    /// stored config no longer verifies or parses (it is then quarantined
    /// and leaves the store); [`Error::Backend`] when the backend cannot
    /// read it, in which case nothing changes.
    pub async fn get(&self, id: &ImageId) -> Result<Arc<Image>> {
        {
            let state = self.state();
            match state.entries.get(id) {
                None => return Err(not_found(id)),
                Some(Entry {
                    image: Some(image), ..
                }) => return Ok(image.clone()),
                Some(_) => {}
            }
        }
        let loaded = self
            .inner
            .backend
            .get(id)
            .await
            .map_err(Error::from)
            .and_then(|bytes| Image::from_bytes(bytes).map_err(Error::from));
        match loaded {
            Ok(image) => {
                let image = Arc::new(image);
                let mut state = self.state_mut();
                match state.entries.get_mut(id) {
                    Some(entry) => Ok(entry.image.get_or_insert(image).clone()),
                    None => Err(not_found(id)),
                }
            }
            Err(e) if e.is_not_found() => Err(not_found(id)),
            // The backend could not read the config; it may well be fine,
            // so nothing is set aside and the caller may retry.
            Err(e) if !e.is_damage() => Err(e),
            Err(e) => {
                let reason = imagecache_core::error_text(&e);
                tracing::error!(image = %id, error = %reason, "stored config is corrupt");
                let _guard = self.inner.mutation.write().await;
                if self.inner.options.quarantine {
                    let mut batch = WriteBatch::new();
                    batch.quarantine(*id, reason.clone());
                    // A backend that no longer sees the content (an empty
                    // file counts as none on `fs://`) has nothing to set
                    // aside; the image still leaves the store and is
                    // reported.
                    if let Err(e) = self.inner.backend.write(batch).await {
                        tracing::warn!(image = %id, error = %imagecache_core::error_text(&e), "cannot quarantine a corrupt config");
                    }
                }
                let removed = self.state_mut().remove(id);
                self.release_layer(removed.as_ref());
                write(&self.inner.report)
                    .problems
                    .push(Problem::Unreadable { id: *id, reason });
                Err(Error::Corrupt {
                    id: *id,
                    source: Box::new(e),
                })
            }
        }
    }

    /// The image if its config has been read already; never does I/O.
    pub fn get_cached(&self, id: &ImageId) -> Option<Arc<Image>> {
        self.state().entries.get(id).and_then(|e| e.image.clone())
    }

    /// What the store knows about an image without reading its config.
    pub fn info(&self, id: &ImageId) -> Option<ImageInfo> {
        let state = self.state();
        let e = state.entries.get(id)?;
        Some(ImageInfo {
            id: *id,
            parent: e.parent,
            children: e.children.clone(),
            built_locally: e.built_locally,
            last_updated: e.last_updated,
            created: e.summary.created,
            platform: e.summary.platform.clone(),
            config_len: e.summary.config_len,
            history_len: e.summary.history_len,
            layers: e.summary.diff_ids_len,
            chain_id: e.summary.chain_id,
        })
    }

    /// Whether the image is in the store.
    pub fn contains(&self, id: &ImageId) -> bool {
        self.state().contains(id)
    }

    /// Removes an image and its names. Its children are orphaned (their
    /// parent link is removed), never deleted. Returns the layer chains no
    /// image references any more.
    ///
    /// A live lease that holds the image (or an image descending from it)
    /// refuses the removal; [`Store::delete_forced`] removes it anyway.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] for an unknown ID; [`Error::Held`] naming the
    /// lease; backend failures, in which case nothing changed.
    pub async fn delete(&self, id: &ImageId) -> Result<Vec<ChainId>> {
        self.ensure_fresh().await?;
        if !self.contains(id) {
            return Err(Error::UnknownImage { id: *id });
        }
        if let Some(lease) = self.image_holder(id).await? {
            return Err(Error::Held {
                resource: imagecache_core::LeaseResource::Image(*id),
                lease,
            });
        }
        self.delete_forced(id).await
    }

    /// Removes an image as [`Store::delete`] does, whatever leases hold it.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] for an unknown ID; backend failures, in
    /// which case nothing changed.
    pub async fn delete_forced(&self, id: &ImageId) -> Result<Vec<ChainId>> {
        self.ensure_fresh().await?;
        let _guard = self.inner.mutation.write().await;
        self.delete_locked(id).await
    }

    /// Removes an image only if it is still unused when the store's lock
    /// is taken: it has no children and, unless `names_ok`, no names.
    /// Returns `None` (and changes nothing) when it is in use or gone, else
    /// the layer chains released. This is the removal a garbage collector
    /// makes after planning, so that an image that gained a child or a
    /// name in the meantime stays.
    ///
    /// # Errors
    /// Backend failures, in which case nothing changed.
    pub async fn delete_unused(
        &self,
        id: &ImageId,
        names_ok: bool,
    ) -> Result<Option<Vec<ChainId>>> {
        self.ensure_fresh().await?;
        let _guard = self.inner.mutation.write().await;
        let in_use = {
            let state = self.state();
            match state.entries.get(id) {
                None => true,
                Some(entry) => {
                    !entry.children.is_empty() || (!names_ok && !state.names.of(id).is_empty())
                }
            }
        };
        if in_use {
            return Ok(None);
        }
        self.delete_locked(id).await.map(Some)
    }

    async fn delete_locked(&self, id: &ImageId) -> Result<Vec<ChainId>> {
        let mut batch = WriteBatch::new();
        {
            let state = self.state();
            let entry = state
                .entries
                .get(id)
                .ok_or(Error::UnknownImage { id: *id })?;
            for child in &entry.children {
                batch.delete_metadata(*child, MetadataKey::PARENT);
            }
        }
        batch.delete(*id);
        self.write_batch(batch).await?;
        let removed = self.state_mut().remove(id);
        metrics::counter!(crate::metric_names::IMAGES_DELETED).increment(1);
        Ok(self.release_layer(removed.as_ref()))
    }

    /// Writes a batch; on failure marks memory as possibly behind the
    /// backend, so that the next change reloads first.
    pub(crate) async fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        let result = self.inner.backend.write(batch).await;
        if result.is_err() {
            self.inner
                .stale
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(result?)
    }

    /// Reloads when a failed write may have left memory behind the
    /// backend; changes call this before they look at memory.
    pub(crate) async fn ensure_fresh(&self) -> Result<()> {
        if self.inner.stale.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("reloading the image store after a failed write");
            self.refresh().await?;
        }
        Ok(())
    }

    fn release_layer(&self, entry: Option<&Entry>) -> Vec<ChainId> {
        let (Some(layers), Some(entry)) = (&self.inner.options.layers, entry) else {
            return Vec::new();
        };
        match (entry.holds_layer, entry.summary.chain_id) {
            (true, Some(chain)) => crate::layers::release(Some(layers.as_ref()), &chain),
            _ => Vec::new(),
        }
    }

    /// Finds the image whose ID starts with `term`: a hex prefix, with or
    /// without `sha256:`, as Docker's truncated IDs.
    ///
    /// # Errors
    /// [`Error::EmptySearch`], [`Error::NoSuchImage`] (Docker: `No such
    /// image: <term>`) or [`Error::Ambiguous`].
    pub fn search(&self, term: &str) -> Result<ImageId> {
        search(&self.state().ids, term)
    }

    /// Points a name at an image, as `docker tag` does, and records the
    /// time as the image's [last update](Store::last_updated), in one
    /// batch. A name without tag or digest gets the tag `latest`.
    ///
    /// Returns the image the name pointed at before, when it moved;
    /// `None` when it is new or pointed at `id` already.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image; [`Error::DigestInUse`]
    /// when `name` has a digest and names another image (a digest
    /// reference never moves); backend failures, in which case nothing
    /// changed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use imagecache_backends::MemoryBackend;
    /// use imagecache_core::Reference;
    /// use imagecache_store::Store;
    ///
    /// let store = Store::open(Arc::new(MemoryBackend::new())).await?;
    /// let old = store.create(&br#"{"rootfs":{"type":"layers"},"comment":"old"}"#[..]).await?;
    /// let new = store.create(&br#"{"rootfs":{"type":"layers"},"comment":"new"}"#[..]).await?;
    /// let app: Reference = "app".parse()?;
    /// assert_eq!(store.tag(&app, &old).await?, None);
    /// assert_eq!(store.tag(&app, &new).await?, Some(old));
    /// assert_eq!(store.resolve("app:latest")?, new);
    /// assert_eq!(store.names_of(&new), vec!["app:latest".parse::<Reference>()?]);
    /// assert!(store.last_updated(&new)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn tag(&self, name: &Reference, id: &ImageId) -> Result<Option<ImageId>> {
        self.ensure_fresh().await?;
        let name = name.clone().with_default_tag();
        let _guard = self.inner.mutation.write().await;
        let previous = {
            let state = self.state();
            if !state.contains(id) {
                return Err(not_found(id));
            }
            state.names.get(&name)
        };
        if name.digest().is_some()
            && let Some(current) = previous.filter(|p| p != id)
        {
            return Err(Error::DigestInUse { name, current });
        }
        let now = Timestamp::now_utc();
        let mut batch = WriteBatch::new();
        batch.set_name(name.clone(), *id);
        batch.set_metadata(*id, MetadataKey::LAST_UPDATED, now.to_string());
        self.write_batch(batch).await?;
        let mut state = self.state_mut();
        state.names.set(name, *id);
        if let Some(e) = state.entries.get_mut(id) {
            e.last_updated = Some(now);
        }
        Ok(previous.filter(|p| p != id))
    }

    /// Removes a name, as `docker rmi <name>` does before deciding about
    /// the image; the image stays. A name without tag or digest is taken
    /// with the tag `latest`. Returns the image the name pointed at.
    ///
    /// # Errors
    /// [`Error::NameNotFound`] when no image has the name; backend
    /// failures, in which case nothing changed.
    pub async fn untag(&self, name: &Reference) -> Result<ImageId> {
        self.ensure_fresh().await?;
        let name = name.clone().with_default_tag();
        let _guard = self.inner.mutation.write().await;
        let Some(id) = self.state().names.get(&name) else {
            return Err(Error::NameNotFound { name });
        };
        let mut batch = WriteBatch::new();
        batch.delete_name(name.clone());
        self.write_batch(batch).await?;
        self.state_mut().names.remove(&name);
        Ok(id)
    }

    /// Finds the image a user means, the way Docker reads an image
    /// argument: a full ID (`sha256:<hex>` or 64 hex digits), then a name
    /// (`busybox`, `busybox:1.36`, `ghcr.io/org/app@sha256:…`; no tag means
    /// `latest`), then an ID prefix as [`Store::search`] takes it.
    ///
    /// # Errors
    /// [`Error::NoSuchImage`] when nothing matches; [`Error::Ambiguous`]
    /// or [`Error::EmptySearch`] as [`Store::search`] reports them.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageId> {
        let state = self.state();
        let full_id = ImageId::parse(name_or_id).ok().or_else(|| {
            (name_or_id.len() == 64)
                .then(|| ImageId::parse(&format!("sha256:{name_or_id}")).ok())
                .flatten()
        });
        if let Some(id) = full_id {
            return if state.contains(&id) {
                Ok(id)
            } else {
                Err(Error::NoSuchImage {
                    term: name_or_id.to_owned(),
                })
            };
        }
        if let Ok(name) = Reference::parse(name_or_id)
            && let Some(id) = state.names.get(&name.with_default_tag())
        {
            return Ok(id);
        }
        search(&state.ids, name_or_id)
    }

    /// Every name with its image, sorted by name.
    pub fn names(&self) -> Vec<(Reference, ImageId)> {
        self.state().names.all()
    }

    /// The names of an image, sorted; empty for an unknown image.
    pub fn names_of(&self, id: &ImageId) -> Vec<Reference> {
        self.state().names.of(id)
    }

    /// Sets the parent of an image, replacing any earlier one.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image, [`Error::UnknownParent`],
    /// [`Error::ParentCycle`] when `parent` is the image or descends from it.
    pub async fn set_parent(&self, id: &ImageId, parent: &ImageId) -> Result<()> {
        self.ensure_fresh().await?;
        let _guard = self.inner.mutation.write().await;
        {
            let state = self.state();
            if !state.contains(id) {
                return Err(not_found(id));
            }
            if !state.contains(parent) {
                return Err(Error::UnknownParent { parent: *parent });
            }
            if state.is_ancestor_or_self(id, parent) {
                return Err(Error::ParentCycle {
                    id: *id,
                    parent: *parent,
                });
            }
        }
        let mut batch = WriteBatch::new();
        batch.set_metadata(*id, MetadataKey::PARENT, parent.to_string());
        self.write_batch(batch).await?;
        self.state_mut().set_parent(id, Some(*parent));
        Ok(())
    }

    /// The stored parent of an image (`None`: no parent).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image.
    pub fn parent(&self, id: &ImageId) -> Result<Option<ImageId>> {
        self.state()
            .entries
            .get(id)
            .map(|e| e.parent)
            .ok_or_else(|| not_found(id))
    }

    /// Records the current time as the image's last update (Docker sets it
    /// when an image is tagged).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image.
    pub async fn set_last_updated(&self, id: &ImageId) -> Result<Timestamp> {
        let now = Timestamp::now_utc();
        self.set_metadata_value(id, MetadataKey::LAST_UPDATED, now.to_string().into(), |e| {
            e.last_updated = Some(now);
        })
        .await?;
        Ok(now)
    }

    /// When the image was last updated, if ever.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image.
    pub fn last_updated(&self, id: &ImageId) -> Result<Option<Timestamp>> {
        self.state()
            .entries
            .get(id)
            .map(|e| e.last_updated)
            .ok_or_else(|| not_found(id))
    }

    /// Marks the image as built on this machine.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image.
    pub async fn set_built_locally(&self, id: &ImageId) -> Result<()> {
        self.set_metadata_value(
            id,
            MetadataKey::BUILT_LOCALLY,
            Bytes::from_static(&[1]),
            |e| e.built_locally = true,
        )
        .await
    }

    /// Whether the image was built on this machine.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image.
    pub fn is_built_locally(&self, id: &ImageId) -> Result<bool> {
        self.state()
            .entries
            .get(id)
            .map(|e| e.built_locally)
            .ok_or_else(|| not_found(id))
    }

    async fn set_metadata_value(
        &self,
        id: &ImageId,
        key: MetadataKey,
        value: Bytes,
        apply: impl FnOnce(&mut Entry),
    ) -> Result<()> {
        self.ensure_fresh().await?;
        let _guard = self.inner.mutation.write().await;
        if !self.contains(id) {
            return Err(not_found(id));
        }
        let mut batch = WriteBatch::new();
        batch.set_metadata(*id, key, value);
        self.write_batch(batch).await?;
        if let Some(e) = self.state_mut().entries.get_mut(id) {
            apply(e);
        }
        Ok(())
    }

    /// The images whose parent is `id`, sorted; empty for unknown IDs.
    pub fn children(&self, id: &ImageId) -> Vec<ImageId> {
        self.state()
            .entries
            .get(id)
            .map(|e| e.children.clone())
            .unwrap_or_default()
    }

    /// The images that have no children, sorted.
    pub fn heads(&self) -> Vec<ImageId> {
        self.state().heads.iter().copied().collect()
    }

    /// Every image ID, sorted.
    pub fn ids(&self) -> Vec<ImageId> {
        self.state().ids.iter().copied().collect()
    }

    /// Every image with its config; configs not read yet are read now, once.
    ///
    /// # Errors
    /// Backend failures. Corrupt configs are quarantined and left out.
    pub async fn map(&self) -> Result<BTreeMap<ImageId, Arc<Image>>> {
        self.images(self.ids()).await
    }

    /// [`Store::heads`] with their configs.
    ///
    /// # Errors
    /// As [`Store::map`].
    pub async fn heads_map(&self) -> Result<BTreeMap<ImageId, Arc<Image>>> {
        self.images(self.heads()).await
    }

    async fn images(&self, ids: Vec<ImageId>) -> Result<BTreeMap<ImageId, Arc<Image>>> {
        futures::stream::iter(ids.into_iter().map(|id| async move {
            match self.get(&id).await {
                Ok(img) => Ok(Some((id, img))),
                // Images deleted meanwhile or found corrupt are left out,
                // as Docker does; corrupt ones are in the report.
                Err(e) if e.is_not_found() || matches!(e, Error::Corrupt { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .buffer_unordered(self.inner.options.read_concurrency)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether the store holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The images whose stored parent is `parent` (`None`: parentless) and
    /// whose `container_config` has cache key `key`, in ID order.
    ///
    /// This is the narrowing step of a classic builder cache lookup: every
    /// image that [`compare`](imagecache_core::compare) could accept for a
    /// probe config has the probe's cache key, so the exact comparison only
    /// runs on these. Cost is independent of the store size. A `parent`
    /// that is not in the store has no candidates, as in Docker, even when
    /// images still name it.
    pub fn cache_candidates(&self, parent: Option<&ImageId>, key: &CacheKey) -> Vec<Candidate> {
        let state = self.state();
        let ids = state.with_key(parent, key);
        if ids.is_empty() || parent.is_some_and(|p| !state.contains(p)) {
            return Vec::new();
        }
        ids.iter()
            .filter_map(|id| {
                let e = state.entries.get(id)?;
                Some(Candidate {
                    id: *id,
                    built_locally: e.built_locally,
                    created: e.summary.created,
                    platform: e.summary.platform.clone(),
                    exact_key: e.summary.exact_key,
                })
            })
            .collect()
    }
}

fn unreachable_batch() -> Error {
    Error::Backend(CoreError::Backend {
        backend: "store",
        key: None,
        retryable: false,
        source: "a batch of one produced no ID".into(),
    })
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Every write to the state is a sequence of map operations that cannot
    // panic half-way in a way that breaks invariants checked by readers;
    // keep serving after a panic elsewhere rather than failing every call.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
