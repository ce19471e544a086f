//! The image store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{
    CacheKey, ChainId, ConfigError, Content, Error as CoreError, Image, ImageId, MetadataKey,
    Platform, Quarantined, Snapshot, SnapshotEntry, StoreBackend, Timestamp, WriteBatch,
};

use crate::error::{Error, Result};
use crate::layers::{LayerProvider, RefCountLayers};
use crate::search::search;
use crate::state::{Entry, State};
use crate::summary::{Interner, Summary};

/// Default limit on the size of one config: 8 MiB. Real configs are a few
/// KiB; even images with hundreds of history entries stay far below this.
pub const DEFAULT_MAX_CONFIG_SIZE: u64 = 8 << 20;

/// How a [`Store`] is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    layers: Option<Arc<dyn LayerProvider>>,
    max_config_size: u64,
    quarantine: bool,
    read_concurrency: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            layers: Some(Arc::new(RefCountLayers::new())),
            max_config_size: DEFAULT_MAX_CONFIG_SIZE,
            quarantine: true,
            read_concurrency: 16,
        }
    }
}

impl StoreOptions {
    /// Defaults: reference-counted layers, 8 MiB config limit, quarantine on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `provider` for layer references.
    pub fn with_layers(mut self, provider: Arc<dyn LayerProvider>) -> Self {
        self.layers = Some(provider);
        self
    }

    /// Takes no layer references at all. Diff IDs are then never
    /// interpreted, so configs with diff IDs that are not digests (which
    /// Docker accepts) can be stored.
    pub fn without_layers(mut self) -> Self {
        self.layers = None;
        self
    }

    /// Refuses configs larger than `bytes`.
    pub fn with_max_config_size(mut self, bytes: u64) -> Self {
        self.max_config_size = bytes;
        self
    }

    /// Whether configs found corrupt are moved aside in the backend (the
    /// default) or only reported and skipped.
    pub fn with_quarantine(mut self, quarantine: bool) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// How many configs are read at once when they must be read (summaries
    /// missing, [`Store::map`]).
    pub fn with_read_concurrency(mut self, n: usize) -> Self {
        self.read_concurrency = n.max(1);
        self
    }
}

/// What to record with a new image, in the same write as its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The parent image, which must be in the store.
    pub parent: Option<ImageId>,
    /// Mark the image as built on this machine (the classic builder cache
    /// only reuses such images).
    pub built_locally: bool,
    /// Record this time as the image's last update (what
    /// [`Store::set_last_updated`] records), in the same write as the config.
    pub last_updated: Option<Timestamp>,
}

impl CreateOptions {
    /// No parent, not built locally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parent.
    pub fn with_parent(mut self, parent: ImageId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Marks the image as built locally.
    pub fn with_built_locally(mut self, built_locally: bool) -> Self {
        self.built_locally = built_locally;
        self
    }

    /// Records `time` as the image's last update.
    pub fn with_last_updated(mut self, time: Timestamp) -> Self {
        self.last_updated = Some(time);
        self
    }
}

/// Something found wrong while opening or refreshing a store. The store
/// opened anyway; these entries are left out or set right in memory only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An image was set aside (quarantined) now or earlier.
    Quarantined(Quarantined),
    /// A config could not be read or parsed; with quarantine off it stays
    /// where it is and is left out of the store.
    Unreadable {
        /// The image.
        id: ImageId,
        /// Why.
        reason: String,
    },
    /// A metadata value could not be understood and is ignored.
    BadMetadata {
        /// The image.
        id: ImageId,
        /// The key.
        key: MetadataKey,
        /// Why.
        reason: String,
    },
    /// Stored parent links formed a cycle; this image's link is ignored in memory.
    ParentCycle {
        /// The image whose link was ignored.
        id: ImageId,
        /// The parent it named.
        parent: ImageId,
    },
    /// The layer provider refused the image's layers; the image is left out.
    MissingLayer {
        /// The image.
        id: ImageId,
        /// Its chain.
        chain_id: ChainId,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quarantined(q) => write!(f, "{} quarantined: {}", q.name, q.reason),
            Self::Unreadable { id, reason } => write!(f, "image {id} unreadable: {reason}"),
            Self::BadMetadata { id, key, reason } => {
                write!(f, "image {id} metadata {key:?} ignored: {reason}")
            }
            Self::ParentCycle { id, parent } => {
                write!(
                    f,
                    "image {id}: parent {parent} would close a cycle; link ignored"
                )
            }
            Self::MissingLayer {
                id,
                chain_id,
                reason,
            } => write!(f, "image {id} left out: layer {chain_id}: {reason}"),
        }
    }
}

/// What opening (or refreshing) a store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Images in the store.
    pub images: usize,
    /// Configs that had to be read because no summary was stored for them
    /// (new since the last open, or written by another program).
    pub configs_read: usize,
    /// Everything that was wrong.
    pub problems: Vec<Problem>,
}

/// A snapshot of what the store knows about an image, without its config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageInfo {
    /// The image.
    pub id: ImageId,
    /// Its stored parent.
    pub parent: Option<ImageId>,
    /// Its children, sorted.
    pub children: Vec<ImageId>,
    /// Whether it was built locally.
    pub built_locally: bool,
    /// When it was last tagged or touched.
    pub last_updated: Option<Timestamp>,
    /// Its config's `created` time.
    pub created: Option<Timestamp>,
    /// Its platform.
    pub platform: Arc<Platform>,
    /// Size of its config in bytes.
    pub config_len: u64,
    /// Number of history entries.
    pub history_len: u32,
    /// Number of layers.
    pub layers: u32,
    /// Its layer chain, if any.
    pub chain_id: Option<ChainId>,
}

/// An image that may answer a classic builder cache probe: see
/// [`Store::cache_candidates`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Candidate {
    /// The image.
    pub id: ImageId,
    /// Whether it was built locally.
    pub built_locally: bool,
    /// Its `created` time.
    pub created: Option<Timestamp>,
    /// Its platform.
    pub platform: Arc<Platform>,
    /// The [`ExactKey`](imagecache_core::ExactKey) of its container config:
    /// equal to the probe's, it settles `compare` without the config.
    pub exact_key: imagecache_core::ExactKey,
}

struct Inner {
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
    inner: Arc<Inner>,
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
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                options,
                state: RwLock::new(State::default()),
                mutation: tokio::sync::RwLock::new(()),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                report: RwLock::new(OpenReport::default()),
            }),
        };
        store.refresh().await?;
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
        let snapshot = self.inner.backend.load().await?;
        let report = self.rebuild(snapshot).await?;
        *write(&self.inner.report) = report.clone();
        Ok(report)
    }

    async fn rebuild(&self, snapshot: Snapshot) -> Result<OpenReport> {
        let mut report = OpenReport {
            problems: snapshot
                .quarantined
                .into_iter()
                .map(Problem::Quarantined)
                .collect(),
            ..OpenReport::default()
        };
        let mut interner = Interner::default();
        // Reuse what memory already has: configs read before stay read.
        let known: HashMap<ImageId, (Summary, Option<Arc<Image>>, bool)> = {
            let state = self.state();
            state
                .entries
                .iter()
                .map(|(id, e)| (*id, (e.summary.clone(), e.image.clone(), e.holds_layer)))
                .collect()
        };

        // Entries are made as summaries become known: at once for those
        // the backend kept, after reading the config for the others.
        let layers = self.inner.options.layers.as_ref();
        if let Some(layers) = layers {
            // Images already held keep their reference.
            layers.reserve(snapshot.images.len().saturating_sub(known.len()));
        }
        let mut list = Vec::with_capacity(snapshot.images.len());
        let mut make_entry = |snap: &SnapshotEntry,
                              summary: Summary,
                              image: Option<Arc<Image>>,
                              report: &mut OpenReport| {
            let id = snap.id;
            let mut entry = Entry::new(summary);
            entry.image = image;
            entry.holds_layer = known.get(&id).is_some_and(|k| k.2);
            if let (Some(layers), Some(chain), false) =
                (layers, entry.summary.chain_id, entry.holds_layer)
            {
                match layers.get(&chain) {
                    Ok(()) => entry.holds_layer = true,
                    Err(e) => {
                        tracing::warn!(image = %id, chain = %chain, error = %e, "not restoring image");
                        report.problems.push(Problem::MissingLayer {
                            id,
                            chain_id: chain,
                            reason: e.to_string(),
                        });
                        return;
                    }
                }
            }
            decode_metadata(snap, &mut entry, report);
            list.push((id, entry));
        };
        let mut missing = Vec::new();
        for snap in snapshot.images {
            let (summary, image) = match known.get(&snap.id) {
                Some((s, img, _)) => (Some(s.clone()), img.clone()),
                None => (
                    snap.summary
                        .as_deref()
                        .and_then(|b| Summary::decode(b, &mut interner)),
                    None,
                ),
            };
            match summary {
                Some(summary) => make_entry(&snap, summary, image, &mut report),
                None => missing.push(snap),
            }
        }

        // Read the configs no summary vouches for, verify and summarise them,
        // and store the summaries so the next open need not read them.
        let reads: Vec<_> = missing
            .into_iter()
            .map(|snap| {
                let backend = self.inner.backend.clone();
                async move {
                    let result = backend.get(&snap.id).await;
                    (snap, result)
                }
            })
            .collect();
        let reads = futures::stream::iter(reads)
            .buffer_unordered(self.inner.options.read_concurrency)
            .collect::<Vec<_>>()
            .await;
        report.configs_read = reads.len();
        let mut write_back = WriteBatch::new();
        let mut quarantine = WriteBatch::new();
        for (snap, result) in reads {
            let id = snap.id;
            let parsed = result
                .map_err(Error::from)
                .and_then(|bytes| Image::from_bytes(bytes).map_err(Error::from));
            match parsed {
                Ok(image) => {
                    let summary = Summary::of(&image, &mut interner);
                    write_back.set_summary(id, summary.encode());
                    make_entry(&snap, summary, Some(Arc::new(image)), &mut report);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(image = %id, error = %reason, "invalid image");
                    if self.inner.options.quarantine {
                        quarantine.quarantine(id, reason.clone());
                        report.problems.push(Problem::Quarantined(Quarantined {
                            name: id.to_string(),
                            reason,
                        }));
                    } else {
                        report.problems.push(Problem::Unreadable { id, reason });
                    }
                }
            }
        }
        // Summaries are derived data: failing to store them only costs a
        // re-read next time, so it must not fail the open.
        if !write_back.is_empty()
            && let Err(e) = self.inner.backend.write(write_back).await
        {
            tracing::warn!(error = %e, "could not store image summaries");
        }
        if !quarantine.is_empty() {
            self.inner.backend.write(quarantine).await?;
        }
        // Which link of a stored cycle is ignored depends on nothing but
        // the data: the one of the member with the greatest ID.
        let (state, cycles) = State::build(list);
        report.problems.extend(
            cycles
                .into_iter()
                .map(|(id, parent)| Problem::ParentCycle { id, parent }),
        );
        // Images that left the backend give their layer references back.
        if let Some(layers) = layers {
            for (id, (summary, _, held)) in &known {
                if *held
                    && !state.contains(id)
                    && let Some(chain) = summary.chain_id
                {
                    let _ = layers.release(&chain);
                }
            }
        }
        report.images = state.entries.len();
        *self.state_mut() = state;
        Ok(report)
    }

    fn check_size(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(ConfigError::Empty.into());
        }
        let limit = self.inner.options.max_config_size;
        if len as u64 > limit {
            return Err(ConfigError::TooLarge {
                size: len as u64,
                limit,
            }
            .into());
        }
        Ok(())
    }

    fn parse(&self, config: Bytes) -> Result<(Image, Option<ChainId>)> {
        self.check_size(config.len())?;
        let image = Image::from_bytes(config)?;
        let chain = match self.inner.options.layers {
            Some(_) => image
                .rootfs
                .chain_id()
                .map_err(|e| ConfigError::InvalidField {
                    field: "rootfs.diff_ids".into(),
                    reason: e.to_string(),
                })?,
            None => None,
        };
        Ok((image, chain))
    }

    /// Stores a config; returns its ID, the SHA-256 of its exact bytes.
    /// Storing a config that is already there returns its ID and changes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for empty, oversized or malformed configs,
    /// a missing `rootfs`, or more non-empty history entries than layers;
    /// [`Error::Layer`] when the layer provider refuses the layers. Nothing
    /// is stored then.
    pub async fn create(&self, config: impl Into<Bytes>) -> Result<ImageId> {
        self.create_with(config, CreateOptions::default()).await
    }

    /// Stores a config and, in the same write, its parent link and
    /// built-locally mark. For a config already stored, only the options
    /// are applied.
    ///
    /// # Errors
    /// As [`Store::create`], plus [`Error::UnknownParent`] and
    /// [`Error::ParentCycle`].
    pub async fn create_with(
        &self,
        config: impl Into<Bytes>,
        options: CreateOptions,
    ) -> Result<ImageId> {
        let mut ids = self.create_batch(vec![(config.into(), options)]).await?;
        ids.pop().ok_or_else(unreachable_batch)
    }

    /// Stores many configs in one backend write: all or nothing on backends
    /// with atomic batches, and much faster than one write each. A parent
    /// may be an image earlier in the same batch.
    ///
    /// # Errors
    /// As [`Store::create_with`]; the first refused item fails the whole
    /// batch, and nothing is stored.
    pub async fn create_batch(&self, items: Vec<(Bytes, CreateOptions)>) -> Result<Vec<ImageId>> {
        let mut parsed = Vec::with_capacity(items.len());
        for (config, options) in items {
            let (image, chain) = self.parse(config)?;
            parsed.push((image, chain, options));
        }
        let mut interner = Interner::default();
        // Re-creating an image that exists with a parent can close a cycle,
        // so it needs the store alone; anything else shares it.
        let exclusive = {
            let state = self.state();
            parsed
                .iter()
                .any(|(image, _, o)| o.parent.is_some() && state.contains(&image.id()))
        };
        let (_exclusive, _shared) = if exclusive {
            (Some(self.inner.mutation.write().await), None)
        } else {
            (None, Some(self.inner.mutation.read().await))
        };
        let mut stripes: Vec<usize> = parsed
            .iter()
            .map(|(image, _, _)| stripe_of(&image.id()))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut _stripe_guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            _stripe_guards.push(self.inner.stripes[i].lock().await);
        }

        // Validate against memory plus what this batch adds, in order.
        let mut batch = WriteBatch::new();
        let mut acquired: Vec<ChainId> = Vec::new();
        let mut plan = Vec::with_capacity(parsed.len());
        {
            let state = self.state();
            let mut added: BTreeMap<ImageId, Option<ImageId>> = BTreeMap::new();
            let parent_of = |id: &ImageId, added: &BTreeMap<ImageId, Option<ImageId>>| {
                added
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| state.entries.get(id).and_then(|e| e.parent))
            };
            for (image, chain, options) in parsed {
                let id = image.id();
                let exists = state.contains(&id) || added.contains_key(&id);
                if let Some(parent) = options.parent {
                    if !(state.contains(&parent) || added.contains_key(&parent)) {
                        release_all(&self.inner.options.layers, &acquired);
                        return Err(Error::UnknownParent { parent });
                    }
                    // Walk up from the parent; meeting `id` means a cycle.
                    let mut cur = Some(parent);
                    let mut steps = 0usize;
                    while let Some(c) = cur {
                        if c == id || steps > state.entries.len() + added.len() {
                            release_all(&self.inner.options.layers, &acquired);
                            return Err(Error::ParentCycle { id, parent });
                        }
                        cur = parent_of(&c, &added);
                        steps += 1;
                    }
                }
                let mut new_summary = None;
                if !exists {
                    if let (Some(layers), Some(chain)) = (&self.inner.options.layers, chain) {
                        if let Err(e) = layers.get(&chain) {
                            release_all(&self.inner.options.layers, &acquired);
                            return Err(Error::Layer {
                                chain_id: chain,
                                source: Box::new(e),
                            });
                        }
                        acquired.push(chain);
                    }
                    let summary = Summary::of(&image, &mut interner);
                    let content = Content::verify(id, image.raw_json().clone())?;
                    batch.put(content);
                    batch.set_summary(id, summary.encode());
                    new_summary = Some(summary);
                }
                let parent = options.parent.or_else(|| parent_of(&id, &added));
                added.insert(id, parent);
                if let Some(parent) = options.parent {
                    batch.set_metadata(id, MetadataKey::PARENT, parent.to_string());
                }
                if options.built_locally {
                    batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
                }
                if let Some(time) = options.last_updated {
                    batch.set_metadata(id, MetadataKey::LAST_UPDATED, time.to_string());
                }
                plan.push((image, new_summary, options, chain.is_some()));
            }
        }

        if let Err(e) = self.inner.backend.write(batch).await {
            release_all(&self.inner.options.layers, &acquired);
            return Err(e.into());
        }

        let mut state = self.state_mut();
        let mut ids = Vec::with_capacity(plan.len());
        for (image, new_summary, options, has_chain) in plan {
            let id = image.id();
            if let Some(summary) = new_summary {
                if state.contains(&id) {
                    // Another create stored the same image while this one
                    // ran; its entry holds the layer reference, so give
                    // back the one taken here.
                    if let (true, Some(chain)) = (has_chain, summary.chain_id) {
                        release_all(&self.inner.options.layers, &[chain]);
                    }
                } else {
                    let mut entry = Entry::new(summary);
                    entry.image = Some(Arc::new(image));
                    entry.holds_layer = has_chain && self.inner.options.layers.is_some();
                    state.insert(id, entry);
                }
            }
            if let Some(parent) = options.parent {
                state.set_parent(&id, Some(parent));
            }
            if options.built_locally
                && let Some(e) = state.entries.get_mut(&id)
            {
                e.built_locally = true;
            }
            if let Some(time) = options.last_updated
                && let Some(e) = state.entries.get_mut(&id)
            {
                e.last_updated = Some(time);
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// The image with this ID, its config read and verified once and then
    /// served from memory.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown ID; [`Error::Corrupt`] when the
    /// stored config no longer verifies (it is then quarantined and leaves
    /// the store).
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
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(image = %id, error = %reason, "stored config is corrupt");
                let _guard = self.inner.mutation.write().await;
                if self.inner.options.quarantine {
                    let mut batch = WriteBatch::new();
                    batch.quarantine(*id, reason.clone());
                    self.inner.backend.write(batch).await?;
                }
                let removed = self.state_mut().remove(id);
                self.release_layer(removed.as_ref());
                write(&self.inner.report)
                    .problems
                    .push(Problem::Unreadable {
                        id: *id,
                        reason: reason.clone(),
                    });
                Err(Error::Corrupt { id: *id, reason })
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

    /// Removes an image. Its children are orphaned (their parent link is
    /// removed), never deleted. Returns the layer chains no image references
    /// any more.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] for an unknown ID; backend failures, in
    /// which case nothing changed.
    pub async fn delete(&self, id: &ImageId) -> Result<Vec<ChainId>> {
        let _guard = self.inner.mutation.write().await;
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
        self.inner.backend.write(batch).await?;
        let removed = self.state_mut().remove(id);
        Ok(self.release_layer(removed.as_ref()))
    }

    fn release_layer(&self, entry: Option<&Entry>) -> Vec<ChainId> {
        let (Some(layers), Some(entry)) = (&self.inner.options.layers, entry) else {
            return Vec::new();
        };
        match (entry.holds_layer, entry.summary.chain_id) {
            (true, Some(chain)) => layers.release(&chain).unwrap_or_else(|e| {
                tracing::warn!(chain = %chain, error = %e, "releasing layer failed");
                Vec::new()
            }),
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

    /// Sets the parent of an image, replacing any earlier one.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image, [`Error::UnknownParent`],
    /// [`Error::ParentCycle`] when `parent` is the image or descends from it.
    pub async fn set_parent(&self, id: &ImageId, parent: &ImageId) -> Result<()> {
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
        self.inner.backend.write(batch).await?;
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
        let _guard = self.inner.mutation.write().await;
        if !self.contains(id) {
            return Err(not_found(id));
        }
        let mut batch = WriteBatch::new();
        batch.set_metadata(*id, key, value);
        self.inner.backend.write(batch).await?;
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

fn release_all(layers: &Option<Arc<dyn LayerProvider>>, chains: &[ChainId]) {
    if let Some(layers) = layers {
        for c in chains {
            let _ = layers.release(c);
        }
    }
}

fn decode_metadata(snap: &SnapshotEntry, entry: &mut Entry, report: &mut OpenReport) {
    let id = snap.id;
    let mut bad = |key: &MetadataKey, reason: String| {
        tracing::warn!(image = %id, key = %key, %reason, "ignoring metadata");
        report.problems.push(Problem::BadMetadata {
            id,
            key: key.clone(),
            reason,
        });
    };
    for (key, value) in &snap.metadata {
        if *key == MetadataKey::PARENT {
            match std::str::from_utf8(value)
                .map_err(|e| e.to_string())
                .and_then(|s| ImageId::parse(s).map_err(|e| e.to_string()))
            {
                Ok(parent) if parent == id => bad(key, "an image cannot be its own parent".into()),
                Ok(parent) => entry.parent = Some(parent),
                Err(reason) => bad(key, reason),
            }
        } else if *key == MetadataKey::BUILT_LOCALLY {
            entry.built_locally = value.first() == Some(&1);
        } else if *key == MetadataKey::LAST_UPDATED {
            if value.is_empty() {
                continue;
            }
            match std::str::from_utf8(value)
                .map_err(|e| e.to_string())
                .and_then(|s| Timestamp::parse_rfc3339(s.trim()).map_err(|e| e.to_string()))
            {
                Ok(t) => entry.last_updated = Some(t),
                Err(reason) => bad(key, reason),
            }
        }
    }
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
