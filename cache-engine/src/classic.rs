//! The classic builder cache: "was this step already built on this parent?"
//!
//! [`LocalCache`] answers from images built on this machine, following the
//! parent chain. [`CacheFrom`] answers from images named with `--cache-from`,
//! matching their history. Both are [`ImageCache`]s.
//!
//! # How a local lookup stays O(1)
//!
//! Docker scans every child of the parent (for `FROM scratch`: every image
//! in the store) and runs `compare()` on each. Here the store keeps an index
//! from (parent, cache key of `container_config`) to images, where the cache
//! key hashes every field `compare()` requires to be equal. Any image
//! `compare()` accepts has the probe's key, so looking the key up first and
//! running the exact `compare()` on what it returns gives the same answers
//! as the scan — the property tests check this on random stores — at a cost
//! that does not grow with the store.
//!
//! Each image's summary also holds the exact key of its `container_config`
//! (a SHA-256 over every field `compare()` reads, label values included).
//! A candidate whose exact key is the probe's is a match without reading
//! its config; `compare()` runs only where they differ, which for the usual
//! probe means only for label-value quirks.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

use imagecache_core::{
    ContainerConfig, History, Image, ImageConfig, ImageId, Platform, RootFs, compare,
    compare_platform,
};
use imagecache_store::{CreateOptions, Store};

use crate::error::{Error, Result};

/// Answers cache probes of a build.
#[async_trait::async_trait]
pub trait ImageCache: fmt::Debug + Send + Sync {
    /// The image that already holds the result of running a step with
    /// `config` on `parent` (`None`: `FROM scratch`) for `platform`, or
    /// `None` on a miss. A miss is not an error.
    ///
    /// # Errors
    /// Store failures, and the cache-from errors documented on [`CacheFrom`].
    async fn get_cache(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> Result<Option<ImageId>>;
}

/// The cache of images built on this machine.
///
/// A candidate must be a child of `parent` (for `FROM scratch`: have no
/// parent), be marked built locally (images pulled or loaded never count,
/// which closes CVE-2024-24557), declare a platform, match the builder's
/// platform, and have a `container_config` that
/// [`compare`] accepts. Among those the newest
/// `created` wins; equal times go to the smallest ID, so answers never
/// depend on map order.
#[derive(Debug, Clone)]
pub struct LocalCache {
    store: Store,
}

impl LocalCache {
    /// A local cache over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The local lookup; see [`LocalCache`].
    ///
    /// # Errors
    /// Backend failures while reading a candidate's config.
    pub async fn lookup(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> Result<Option<ImageId>> {
        let span = tracing::trace_span!("lookup", parent = ?parent);
        self.lookup_inner(parent, config, platform)
            .instrument(span)
            .await
    }

    async fn lookup_inner(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> Result<Option<ImageId>> {
        let Some(config) = config else {
            return Ok(None);
        };
        // The exact key is hashed only when there are candidates to confirm.
        let (key, exact) = config.cache_key_then_exact();
        let exact = std::cell::LazyCell::new(exact);
        let mut best: Option<(ImageId, imagecache_core::Timestamp)> = None;
        for cand in self.store.cache_candidates(parent, &key) {
            if !cand.built_locally {
                continue;
            }
            // Docker discards old images that never recorded a platform.
            if cand.platform.os.is_empty() && cand.platform.architecture.is_empty() {
                continue;
            }
            if !compare_platform(platform, &cand.platform) {
                continue;
            }
            // A candidate without a creation time can never be "newest".
            let Some(created) = cand.created else {
                continue;
            };
            if let Some((_, best_created)) = &best
                && created.cmp_instant(best_created) != std::cmp::Ordering::Greater
            {
                continue;
            }
            // Every field compare() reads is equal: a match, config unread.
            if *exact == cand.exact_key {
                best = Some((cand.id, created));
                continue;
            }
            let image = match self.store.get(&cand.id).await {
                Ok(image) => image,
                // Deleted meanwhile, or found corrupt and quarantined:
                // either way it is no longer a candidate.
                Err(e)
                    if e.is_not_found() || matches!(e, imagecache_store::Error::Corrupt { .. }) =>
                {
                    tracing::warn!(image = %cand.id, error = %e, "cache candidate unavailable");
                    continue;
                }
                Err(e) => {
                    return Err(Error::UnknownImage {
                        id: cand.id,
                        source: e,
                    });
                }
            };
            if compare(Some(&image.container_config), Some(config)) {
                best = Some((cand.id, created));
            }
        }
        let hit = best.map(|(id, _)| id);
        // Literal labels keep the metric's key static: no allocation on a
        // lookup that takes a microsecond or two.
        use crate::metric_names::CACHE_LOOKUPS;
        match (parent.is_some(), hit.is_some()) {
            (true, true) => metrics::counter!(CACHE_LOOKUPS, "kind" => "child", "result" => "hit"),
            (true, false) => {
                metrics::counter!(CACHE_LOOKUPS, "kind" => "child", "result" => "miss")
            }
            (false, true) => {
                metrics::counter!(CACHE_LOOKUPS, "kind" => "scratch", "result" => "hit")
            }
            (false, false) => {
                metrics::counter!(CACHE_LOOKUPS, "kind" => "scratch", "result" => "miss")
            }
        }
        .increment(1);
        if let Some(id) = &hit {
            // A hit is a use: collectors keep recently used images longest.
            self.store.record_use(id);
        }
        Ok(hit)
    }
}

#[async_trait::async_trait]
impl ImageCache for LocalCache {
    async fn get_cache(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> Result<Option<ImageId>> {
        self.lookup(parent, config, platform).await
    }
}

/// Docker's local lookup as Docker runs it: scan every child of `parent`
/// (for `FROM scratch`, every parentless image in the store) and keep the
/// newest match. It reads every candidate's config and costs time in
/// proportion to the store; it exists to check that [`LocalCache::lookup`],
/// which answers from an index, gives the same answers (the tie-break is
/// the same: equal times go to the smallest ID).
///
/// # Errors
/// Failures reading a candidate's config.
pub async fn linear_lookup(
    store: &Store,
    parent: Option<&ImageId>,
    config: Option<&ContainerConfig>,
    platform: &Platform,
) -> Result<Option<ImageId>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let candidates: Vec<ImageId> = match parent {
        Some(p) => store.children(p),
        None => store
            .ids()
            .into_iter()
            .filter(|id| matches!(store.parent(id), Ok(None)))
            .collect(),
    };
    let mut best: Option<(ImageId, imagecache_core::Timestamp)> = None;
    for id in candidates {
        if !store.is_built_locally(&id).unwrap_or(false) {
            continue;
        }
        let image = store.get(&id).await?;
        let p = image.platform();
        if p.os.is_empty() && p.architecture.is_empty() {
            continue;
        }
        if !compare_platform(platform, &p) || !compare(Some(&image.container_config), Some(config))
        {
            continue;
        }
        let Some(created) = image.created else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(_, t)| t.cmp_instant(&created) == std::cmp::Ordering::Less)
        {
            best = Some((id, created));
        }
    }
    Ok(best.map(|(id, _)| id))
}

/// Turns a `--cache-from` reference into an image of the store.
#[async_trait::async_trait]
pub trait SourceResolver: fmt::Debug + Send + Sync {
    /// The image `reference` names.
    ///
    /// # Errors
    /// Any error skips the source with a warning, except
    /// [`Error::Cancelled`], which aborts.
    async fn resolve(&self, store: &Store, reference: &str) -> Result<ImageId>;
}

/// Resolves references as image IDs or unique ID prefixes.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdResolver;

#[async_trait::async_trait]
impl SourceResolver for IdResolver {
    async fn resolve(&self, store: &Store, reference: &str) -> Result<ImageId> {
        Ok(store.search(reference)?)
    }
}

/// The cache of a build run with `--cache-from`: history-based matching
/// against the given source images.
///
/// A lookup first asks the [`LocalCache`], and keeps a local hit only if it
/// is a strict ancestor of one of the sources. Otherwise each source, in
/// order, matches when its history starts with the parent's history and
/// layers, and its next history entry was created by the probe's `Cmd`
/// (joined with spaces). If that entry is the source's last, the source
/// itself is the hit (and is linked under the parent); otherwise the
/// intermediate image is rebuilt — its config bytes exactly what Docker
/// would write — stored, and from then on only that source is used.
#[derive(Debug)]
pub struct CacheFrom {
    local: LocalCache,
    sources: Mutex<Vec<Arc<Image>>>,
    skipped: Vec<(String, String)>,
}

impl CacheFrom {
    /// Resolves `references` in order. Unknown ones are skipped with a
    /// warning (see [`CacheFrom::skipped`]).
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the resolver reports cancellation.
    pub async fn new(
        store: Store,
        references: &[String],
        resolver: &dyn SourceResolver,
    ) -> Result<Self> {
        let mut sources = Vec::new();
        let mut skipped = Vec::new();
        for reference in references {
            let found = match resolver.resolve(&store, reference).await {
                Ok(id) => store.get(&id).await.map_err(Error::from),
                Err(e) => Err(e),
            };
            match found {
                Ok(image) => sources.push(image),
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    tracing::warn!(reference = %reference, error = %e, "Could not look up cache source, skipping");
                    skipped.push((reference.clone(), e.to_string()));
                }
            }
        }
        Ok(Self {
            local: LocalCache::new(store),
            sources: Mutex::new(sources),
            skipped,
        })
    }

    /// The references that were skipped, with the reason.
    pub fn skipped(&self) -> &[(String, String)] {
        &self.skipped
    }

    /// The sources still in use, in order.
    pub fn sources(&self) -> Vec<ImageId> {
        self.lock_sources().iter().map(|i| i.id()).collect()
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Image>>> {
        // The list is only ever replaced whole; a poisoned lock still holds
        // a valid list.
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `ancestor` is a strict ancestor of `id`, walking stored parents.
    fn is_strict_ancestor(&self, ancestor: &ImageId, id: &ImageId) -> bool {
        let store = self.local.store();
        let mut seen = HashSet::new();
        let mut cur = store.parent(id).ok().flatten();
        while let Some(c) = cur {
            if c == *ancestor {
                return true;
            }
            if !seen.insert(c) {
                return false;
            }
            cur = store.parent(&c).ok().flatten();
        }
        false
    }
}

/// Docker's `isValidParent` (its classic build cache): whether `parent`
/// (`None` for no parent) can be the parent of `target`, that is whether
/// `target`'s history and layers start with the parent's. A `target`
/// without history never has a valid parent.
pub fn is_valid_parent(target: &ImageConfig, parent: Option<&ImageConfig>) -> bool {
    if target.history.is_empty() {
        return false;
    }
    let Some(parent) = parent else {
        return true;
    };
    if parent.history.is_empty() && parent.rootfs.raw_diff_ids.is_empty() {
        return true;
    }
    if parent.history.len() >= target.history.len() {
        return false;
    }
    // `>` and not `>=`: a step may add no layer (Docker fixed this in 2017).
    if parent.rootfs.raw_diff_ids.len() > target.rootfs.raw_diff_ids.len() {
        return false;
    }
    parent
        .history
        .iter()
        .zip(&target.history)
        .all(|(a, b)| a == b)
        && parent
            .rootfs
            .raw_diff_ids
            .iter()
            .zip(&target.rootfs.raw_diff_ids)
            .all(|(a, b)| a == b)
}

/// Docker's `isValidConfig`: the history entry was created by this `Cmd`.
fn is_valid_config(config: &ContainerConfig, history: &History) -> bool {
    config.cmd.as_deref().unwrap_or_default().join(" ") == history.created_by
}

/// The diff ID a history entry added, bounds-checked (Docker indexes blindly).
fn layer_for_history_index(image: &Image, index: usize) -> Result<Option<String>> {
    let entry = image.history.get(index).ok_or(Error::MalformedHistory {
        id: image.id(),
        index,
        layer: 0,
        diff_ids: image.rootfs.raw_diff_ids.len(),
    })?;
    if entry.empty_layer {
        return Ok(None);
    }
    let layer = image.history[..index]
        .iter()
        .filter(|h| !h.empty_layer)
        .count();
    image
        .rootfs
        .raw_diff_ids
        .get(layer)
        .cloned()
        .map(Some)
        .ok_or(Error::MalformedHistory {
            id: image.id(),
            index,
            layer,
            diff_ids: image.rootfs.raw_diff_ids.len(),
        })
}

/// The config of the intermediate image a cache-from hit stands for,
/// serialised as Docker's graphdriver cache does (Go struct order).
pub fn restored_config(
    parent: Option<&ImageConfig>,
    target: &Image,
    config: &ContainerConfig,
) -> Result<Vec<u8>> {
    let len_history = parent.map_or(0, |p| p.history.len());
    let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
    let entry = target
        .history
        .get(len_history)
        .cloned()
        .ok_or(Error::MalformedHistory {
            id: target.id(),
            index: len_history,
            layer: 0,
            diff_ids: target.rootfs.raw_diff_ids.len(),
        })?;
    history.push(entry);
    // A copy: Docker appends to the parent's own rootfs here.
    let mut rootfs = parent.map(|p| p.rootfs.clone()).unwrap_or_else(|| RootFs {
        fs_type: "layers".to_owned(),
        raw_diff_ids: Vec::new(),
    });
    if let Some(layer) = layer_for_history_index(target, len_history)? {
        rootfs.raw_diff_ids.push(layer);
    }
    let image = ImageConfig {
        config: Some(config.clone()),
        architecture: target.architecture.clone(),
        os: target.os.clone(),
        author: target.author.clone(),
        created: history.last().and_then(|h| h.created),
        os_features: target.os_features.clone(),
        os_version: target.os_version.clone(),
        rootfs,
        history,
        ..ImageConfig::default()
    };
    Ok(image.to_json_struct_order())
}

#[async_trait::async_trait]
impl ImageCache for CacheFrom {
    async fn get_cache(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> Result<Option<ImageId>> {
        let Some(config) = config else {
            return Ok(None);
        };
        let store = self.local.store();
        if let Some(hit) = self.local.lookup(parent, Some(config), platform).await? {
            let sources = self.sources();
            if sources.iter().any(|s| self.is_strict_ancestor(&hit, s)) {
                return Ok(Some(hit));
            }
        }
        let parent_image = match parent {
            Some(p) => Some(
                store
                    .get(p)
                    .await
                    .map_err(|source| Error::UnknownImage { id: *p, source })?,
            ),
            None => None,
        };
        let len_history = parent_image.as_ref().map_or(0, |p| p.history.len());
        let sources: Vec<Arc<Image>> = self.lock_sources().clone();
        for target in sources {
            if !is_valid_parent(&target, parent_image.as_deref().map(|i| &**i)) {
                continue;
            }
            let Some(entry) = target.history.get(len_history) else {
                continue;
            };
            if !is_valid_config(config, entry) {
                continue;
            }
            if target.history.len() - 1 == len_history {
                if let Some(p) = parent {
                    store
                        .set_parent(&target.id(), p)
                        .await
                        .map_err(|source| Error::SetParent {
                            target: target.id(),
                            parent: *p,
                            source,
                        })?;
                }
                return Ok(Some(target.id()));
            }
            let restore = async {
                let bytes =
                    restored_config(parent_image.as_deref().map(|i| &**i), &target, config)?;
                let mut options = CreateOptions::new();
                if let Some(p) = parent {
                    options = options.with_parent(*p);
                }
                Ok::<_, Error>(store.create_with(bytes, options).await?)
            };
            let id = restore.await.map_err(|source| Error::Restore {
                parent: parent.copied(),
                target: target.id(),
                source: Box::new(source),
            })?;
            // Stay on this source for the rest of the stage, as Docker does.
            *self.lock_sources() = vec![target];
            return Ok(Some(id));
        }
        Ok(None)
    }
}
