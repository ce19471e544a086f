//! `imagecache import`: docker-archive tarballs and OCI image layouts.
//!
//! # What an import does
//!
//! 1. **Plan** (per path, on a blocking thread): a tar is read once front to
//!    back, hashing every member and keeping the small JSON ones; then
//!    `manifest.json` (docker-archive) or `oci-layout` + `index.json` (OCI,
//!    nested indexes followed) name the configs and layers. Configs are
//!    parsed and checked against the digests their names or descriptors
//!    promise, blobs against their descriptors, uncompressed layers against
//!    the config's `rootfs.diff_ids`. See [`plan`].
//! 2. **Parents**, as `docker load` sets them: from `manifest.json`'s
//!    `Parent`, which must be in the import or the store and must be a valid
//!    parent (its history and layers a prefix of the image's, the build
//!    cache's `isValidParent`). In addition, an image without such a link is
//!    linked to the imported image whose non-empty history and diff IDs are
//!    the longest *strict* prefix of its own (ties go to the smallest ID);
//!    this is what lets a builder with `--cache-from` walk a loaded chain.
//!    An image the store already holds keeps the parent it has.
//! 3. **Layers** stream into the blob cache through its layer path: a tar
//!    is read a second time (layers only, in archive order) and each
//!    layer's chunks go through a bounded channel, so memory stays flat
//!    whatever the layer sizes. Compressed layers are stored with their
//!    decompressed copy, checked against the diff ID on the way.
//! 4. **Configs** are created in one [`Store::create_batch`], byte for byte,
//!    so the IDs are the ones the tools that wrote the archive report.
//!    Images are not marked built locally. Images the archive names
//!    (`RepoTags`, or an OCI name annotation) get a `lastUpdated` record, as
//!    Docker records when an image is tagged; `prune` treats that as "in use".
//!
//! Nothing partial is left behind: if anything fails or Ctrl-C is pressed
//! before step 4, the blobs this import added are removed again and no
//! config is stored.

mod archive;
mod error;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use imagecache_core::{ByteStream, Digest, Image, ImageConfig, ImageId, Timestamp};
use imagecache_engine::blob::{BlobCache, Compression, Error as BlobError, LayerOptions};
use imagecache_engine::classic::is_valid_parent;
use imagecache_store::{CreateOptions, Store};
use serde::Serialize;
use tokio::sync::mpsc;

use self::archive::{Outgoing, Pump};
pub(crate) use self::error::ImportError;
use self::error::Result;
use self::plan::{ArchivePlan, Location, Source};
use crate::progress::Ui;

/// What was imported.
#[derive(Debug, Serialize)]
pub(crate) struct ImportSummary {
    /// One entry per path.
    pub(crate) archives: Vec<ArchiveSummary>,
    /// Every image, parents first.
    pub(crate) images: Vec<ImportedImage>,
    /// Layers streamed into the blob cache (already cached ones included).
    pub(crate) layers: usize,
    /// Blobs the import added to the blob cache.
    pub(crate) blobs_added: usize,
}

/// One imported path.
#[derive(Debug, Serialize)]
pub(crate) struct ArchiveSummary {
    /// The path.
    pub(crate) path: PathBuf,
    /// `docker-archive`, `oci-archive` or `oci-layout`.
    pub(crate) format: &'static str,
    /// Images in it.
    pub(crate) images: usize,
    /// Distinct layers in it.
    pub(crate) layers: usize,
}

/// One imported image.
#[derive(Debug, Serialize)]
pub(crate) struct ImportedImage {
    /// Its ID.
    pub(crate) id: ImageId,
    /// The path it came from.
    pub(crate) archive: PathBuf,
    /// Its config's name in the archive.
    pub(crate) config: String,
    /// The names the archive gives it.
    pub(crate) tags: Vec<String>,
    /// The parent set by this import, if any.
    pub(crate) parent: Option<ImageId>,
    /// Where the parent came from: `manifest` or `history`.
    pub(crate) parent_from: Option<&'static str>,
    /// Its number of layers.
    pub(crate) layers: usize,
    /// Whether the store did not hold it before.
    pub(crate) new: bool,
}

/// Runs an import of `paths` into `store` and `cache`; see the module docs.
///
/// # Errors
/// The first [`ImportError`]; nothing was imported then.
pub(crate) async fn import(
    store: &Store,
    cache: &BlobCache,
    paths: &[PathBuf],
    cancel: Arc<AtomicBool>,
    ui: Ui,
) -> Result<ImportSummary> {
    let mut plans = Vec::with_capacity(paths.len());
    for path in paths {
        plans.push(read_plan(path.clone(), Arc::clone(&cancel), ui).await?);
    }
    let parents = link_parents(store, &plans).await?;

    let mut importer = Importer {
        cache,
        cancel: &cancel,
        ui,
        added: Vec::new(),
    };
    let created = async {
        let layers = importer.store_layers(&plans).await?;
        let images = importer.create(store, &plans, &parents).await?;
        Ok::<_, ImportError>((layers, images))
    }
    .await;
    match created {
        Ok((layers, images)) => Ok(ImportSummary {
            archives: plans
                .iter()
                .map(|p| ArchiveSummary {
                    path: p.path.clone(),
                    format: p.format.name(),
                    images: p.images.len(),
                    layers: p.jobs.len(),
                })
                .collect(),
            images,
            layers,
            blobs_added: importer.added.len(),
        }),
        Err(e) => {
            importer.remove_added().await;
            Err(e)
        }
    }
}

/// Step 1 on a blocking thread, with a progress step.
async fn read_plan(path: PathBuf, cancel: Arc<AtomicBool>, ui: Ui) -> Result<ArchivePlan> {
    let size = tokio::fs::metadata(&path)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let step = ui.step(format!("reading {}", path.display()), size, true);
    let bar = step.clone();
    let result =
        tokio::task::spawn_blocking(move || plan::plan(&path, &cancel, &move |read| bar.set(read)))
            .await
            .map_err(|source| ImportError::Join {
                task: "reading the archive",
                source,
            })?;
    match &result {
        Ok(plan) => step.finish(
            &ui,
            format!(
                "{}: {} with {} image(s), {} layer(s)",
                plan.path.display(),
                plan.format.name(),
                plan.images.len(),
                plan.jobs.len()
            ),
        ),
        Err(_) => step.abandon(),
    }
    result
}

/// The build cache's `isValidParent` ([`is_valid_parent`]): the parent's
/// history and layers are a prefix of the image's; or, unlike there,
/// neither has any history.
fn valid_parent(image: &ImageConfig, parent: &ImageConfig) -> bool {
    (image.history.is_empty() && parent.history.is_empty()) || is_valid_parent(image, Some(parent))
}

/// The parent each image gets, with where it came from; see the module docs.
async fn link_parents(
    store: &Store,
    plans: &[ArchivePlan],
) -> Result<BTreeMap<ImageId, (ImageId, &'static str)>> {
    let mut all: BTreeMap<ImageId, &Image> = BTreeMap::new();
    for plan in plans {
        for image in &plan.images {
            all.entry(image.image.id()).or_insert(&image.image);
        }
    }
    let mut parents = BTreeMap::new();
    for plan in plans {
        for item in &plan.images {
            let id = item.image.id();
            let Some(parent) = item.parent else {
                continue;
            };
            let parent_image = match all.get(&parent) {
                Some(image) => Some(Arc::new((*image).clone())),
                None if store.contains(&parent) => {
                    Some(store.get(&parent).await.map_err(ImportError::Store)?)
                }
                None => None,
            };
            let Some(parent_image) = parent_image else {
                return Err(ImportError::UnknownParent {
                    path: plan.path.clone(),
                    image: id,
                    parent,
                });
            };
            if parent == id || !valid_parent(&item.image, &parent_image) {
                return Err(ImportError::InvalidParent {
                    path: plan.path.clone(),
                    image: id,
                    parent,
                });
            }
            parents.insert(id, (parent, "manifest"));
        }
    }
    for (&id, image) in &all {
        if parents.contains_key(&id) || matches!(store.parent(&id), Ok(Some(_))) {
            continue;
        }
        let best = all
            .iter()
            .filter(|(other, candidate)| {
                **other != id && !candidate.history.is_empty() && valid_parent(image, candidate)
            })
            // Longest history first, then most layers, then the smallest ID.
            .max_by(|(a_id, a), (b_id, b)| {
                (a.history.len(), a.rootfs.raw_diff_ids.len())
                    .cmp(&(b.history.len(), b.rootfs.raw_diff_ids.len()))
                    .then_with(|| b_id.cmp(a_id))
            });
        if let Some((&parent, _)) = best {
            parents.insert(id, (parent, "history"));
        }
    }
    Ok(parents)
}

/// Turns a channel of chunks into a body for the blob cache.
fn body_stream(rx: mpsc::Receiver<archive::Chunk>) -> ByteStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

struct Importer<'a> {
    cache: &'a BlobCache,
    cancel: &'a Arc<AtomicBool>,
    ui: Ui,
    /// Blobs that were not cached before this import; removed on failure.
    added: Vec<Digest>,
}

impl Importer<'_> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(ImportError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Step 3 for every archive; returns the number of layers stored.
    async fn store_layers(&mut self, plans: &[ArchivePlan]) -> Result<usize> {
        let mut count = 0;
        for plan in plans {
            self.check_cancel()?;
            count += self.store_archive_layers(plan).await?;
        }
        Ok(count)
    }

    async fn store_archive_layers(&mut self, plan: &ArchivePlan) -> Result<usize> {
        if plan.jobs.is_empty() {
            return Ok(0);
        }
        let total: u64 = plan.jobs.iter().map(|j| j.size).sum();
        let step = self.ui.step(
            format!(
                "storing {} layer(s) of {}",
                plan.jobs.len(),
                plan.path.display()
            ),
            Some(total),
            true,
        );
        let (tx, mut rx) = mpsc::channel::<Outgoing>(1);
        let producer = {
            let cancel = Arc::clone(self.cancel);
            let bar = step.clone();
            let path = plan.path.clone();
            let work = match &plan.source {
                Source::Tar(index) => {
                    let wanted: HashMap<usize, usize> = plan
                        .jobs
                        .iter()
                        .enumerate()
                        .filter_map(|(job, j)| match j.location {
                            Location::Entry(position) => Some((position, job)),
                            Location::File(_) => None,
                        })
                        .collect();
                    // The index is needed on the blocking thread; it is
                    // small (names and digests), so a copy is cheap.
                    Work::Tar(index.clone(), wanted)
                }
                Source::Dir(_) => Work::Files(
                    plan.jobs
                        .iter()
                        .enumerate()
                        .filter_map(|(job, j)| match &j.location {
                            Location::File(file) => Some((job, file.clone(), j.entry.clone())),
                            Location::Entry(_) => None,
                        })
                        .collect(),
                ),
            };
            tokio::task::spawn_blocking(move || {
                let progress = move |n: u64| bar.inc(n);
                let pump = Pump {
                    path: &path,
                    cancel: &cancel,
                    progress: &progress,
                };
                match work {
                    Work::Tar(index, wanted) => archive::stream(&index, &wanted, &pump, &tx),
                    Work::Files(files) => archive::stream_files(&files, &pump, &tx),
                }
            })
        };

        let mut stored = 0;
        let mut failure = None;
        while let Some(out) = rx.recv().await {
            let Some(job) = plan.jobs.get(out.job) else {
                continue;
            };
            if let Err(e) = self.check_cancel() {
                failure = Some(e);
                break;
            }
            match self.put(plan, job, body_stream(out.body)).await {
                Ok(()) => stored += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(rx);
        let produced = producer.await.map_err(|source| ImportError::Join {
            task: "reading the archive",
            source,
        })?;
        // When both sides failed, the reading side knows why: the blob
        // cache only saw the body end with an error.
        let result = match (produced, failure) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(stored),
        };
        match &result {
            Ok(n) => step.finish(
                &self.ui,
                format!("stored {n} layer(s) of {}", plan.path.display()),
            ),
            Err(_) => step.abandon(),
        }
        result
    }

    /// Stores one layer, noting what it adds so that a failure can undo it.
    async fn put(
        &mut self,
        plan: &ArchivePlan,
        job: &plan::LayerJob,
        body: ByteStream,
    ) -> Result<()> {
        let cache = self.cache;
        let had = |d: Digest| async move { cache.has(&d).await.map(|s| s.is_some()) };
        let compressed = job.compression != Compression::None;
        let layer_error = |source: BlobError| ImportError::Layer {
            path: plan.path.clone(),
            entry: job.entry.clone(),
            source,
        };
        // Recorded before the put, so that whatever a failed put may have
        // left is removed too.
        if !had(job.digest).await.map_err(layer_error)? {
            self.added.push(job.digest);
        }
        if compressed && !had(job.diff_id).await.map_err(layer_error)? {
            self.added.push(job.diff_id);
        }
        let mut options = LayerOptions::new()
            .with_compression(job.compression)
            .with_expected_size(job.size);
        if compressed {
            options = options.with_diff_id(job.diff_id);
        }
        if let Some(media_type) = &job.media_type {
            options = options.with_media_type(media_type.clone());
        }
        // No diff ID check is needed after the put: the blob cache checks a
        // compressed layer against the diff ID it is given, and the plan
        // already required an uncompressed layer's digest to be its diff ID.
        cache
            .put_layer_opts(&job.digest, body, options)
            .await
            .map_err(|e| match e {
                BlobError::DigestMismatch { expected, actual } => ImportError::BlobDigestMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    expected,
                    actual,
                },
                BlobError::DecompressedMismatch {
                    expected, actual, ..
                } => ImportError::DiffIdMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    image: job.image,
                    index: job.index,
                    expected,
                    actual,
                },
                BlobError::Truncated {
                    expected, actual, ..
                } => ImportError::BlobSizeMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    expected,
                    actual,
                },
                BlobError::TooLarge { size, limit, .. } => ImportError::BlobSizeMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    expected: limit,
                    actual: size,
                },
                other => layer_error(other),
            })?;
        Ok(())
    }

    /// Step 4: every config in one batch, parents first.
    async fn create(
        &self,
        store: &Store,
        plans: &[ArchivePlan],
        parents: &BTreeMap<ImageId, (ImageId, &'static str)>,
    ) -> Result<Vec<ImportedImage>> {
        self.check_cancel()?;
        let now = Timestamp::now_utc();
        let mut pending: BTreeMap<ImageId, (&PathBuf, &plan::ImagePlan)> = BTreeMap::new();
        for plan in plans {
            for image in &plan.images {
                pending
                    .entry(image.image.id())
                    .or_insert((&plan.path, image));
            }
        }
        // Parents first: the batch may only name parents stored before.
        let mut order = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready: Vec<ImageId> = pending
                .keys()
                .filter(|id| {
                    parents
                        .get(id)
                        .is_none_or(|(parent, _)| !pending.contains_key(parent))
                })
                .copied()
                .collect();
            // A cycle among manifest parents leaves nothing ready; let the
            // store refuse it with its own error.
            let ready = if ready.is_empty() {
                pending.keys().copied().collect()
            } else {
                ready
            };
            for id in ready {
                if let Some(item) = pending.remove(&id) {
                    order.push(item);
                }
            }
        }
        let mut items = Vec::with_capacity(order.len());
        let mut summary = Vec::with_capacity(order.len());
        for (path, plan) in order {
            let id = plan.image.id();
            let mut options = CreateOptions::new();
            let parent = parents.get(&id).copied();
            if let Some((p, _)) = parent {
                options = options.with_parent(p);
            }
            if !plan.tags.is_empty() {
                options = options.with_last_updated(now);
            }
            items.push((plan.image.raw_json().clone(), options));
            summary.push(ImportedImage {
                id,
                archive: path.clone(),
                config: plan.entry.clone(),
                tags: plan.tags.clone(),
                parent: parent.map(|(p, _)| p),
                parent_from: parent.map(|(_, from)| from),
                layers: plan.layers.len(),
                new: !store.contains(&id),
            });
        }
        store
            .create_batch(items)
            .await
            .map_err(ImportError::Store)?;
        Ok(summary)
    }

    /// Removes the blobs this import added, after a failure.
    async fn remove_added(&mut self) {
        for digest in self.added.drain(..) {
            if let Err(e) = self.cache.delete(&digest).await {
                self.ui.line(format!(
                    "warning: could not remove blob {digest} added by the failed import: {}",
                    crate::text::one_line(&e)
                ));
            }
        }
    }
}

/// What the reading thread of step 3 works on.
enum Work {
    Tar(archive::TarIndex, HashMap<usize, usize>),
    Files(Vec<(usize, PathBuf, String)>),
}
