//! Import: docker-archive tarballs and OCI image layouts into a [`Store`]
//! and a [`BlobCache`].
//!
//! # What an import does
//!
//! 0. **Inputs** that can be read only once (pipes, stdin, FIFOs, any
//!    [`AsyncRead`](tokio::io::AsyncRead)) are copied to a temporary file
//!    first, as `docker load` does; see [`Input`].
//! 1. **Plan** (per input, on a blocking thread): a tar is read once front to
//!    back, hashing every member and keeping the small JSON ones; then
//!    `manifest.json` (docker-archive, preferred when both are present as in
//!    Docker 25's output) or `oci-layout` + `index.json` (OCI, nested
//!    indexes followed, one platform chosen) name the configs and layers.
//!    Configs are parsed and checked against the digests their names or
//!    descriptors promise, blobs against their descriptors, layer bytes
//!    against their media type, uncompressed layers against the config's
//!    `rootfs.diff_ids`.
//! 2. **Parents**, as `docker load` sets them: from `manifest.json`'s
//!    `Parent`, when that image is part of the import or already in the
//!    store, and a valid parent (its history and layers a prefix of the
//!    image's, the build cache's `isValidParent`). Whether the parent came
//!    in the same archive, another archive of the same import or an earlier
//!    import makes no difference. A parent the import does not know is left
//!    unset and reported. An image the store already holds keeps the parent
//!    it has: a different one in the archive is reported as a conflict,
//!    never written.
//! 3. **Layers** stream into the blob cache through its layer path: a tar
//!    is read a second time (layers only, in archive order) and each
//!    layer's chunks go through a bounded channel, so memory stays flat
//!    whatever the layer sizes. Compressed layers are stored with their
//!    decompressed copy, checked against the diff ID on the way.
//! 4. **Configs** are created in one [`Store::create_batch`], byte for byte,
//!    so the IDs are the ones the tools that wrote the archive report.
//!    Images are not marked built locally.
//! 5. **Names** the archive gives (`RepoTags`; in an OCI index containerd's
//!    `io.containerd.image.name`, else `org.opencontainers.image.ref.name`)
//!    are recorded in the store's names, moving a name from the image that
//!    had it, as `docker load` does; tagging also records `lastUpdated`.
//!
//! Nothing partial is left behind: if anything fails, the import is
//! cancelled or its future is dropped before step 4, the blobs this import
//! added are removed again, no config is stored and temporary copies are
//! deleted.

mod archive;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument as _;

use imagecache_core::{ByteStream, Digest, Image, ImageConfig, ImageId};
use imagecache_engine::blob::{BlobCache, Compression, Error as BlobError, LayerOptions};
use imagecache_engine::classic::is_valid_parent;
use imagecache_store::{CreateOptions, Store};
use serde::Serialize;
use tokio::sync::mpsc;

use self::archive::{Outgoing, Pump};
use self::plan::{ArchivePlan, Location, Source};
pub use self::plan::{Format, Skipped};
use crate::error::{Error, Result};
use crate::options::{ImportOptions, PlatformChoice};
use crate::progress::{Cancel, Reporter};
use crate::source::{Input, Local};

/// What an import did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// One entry per input.
    pub archives: Vec<ArchiveReport>,
    /// Every image, parents first.
    pub images: Vec<ImportedImage>,
    /// Parents an archive names that the store already holds differently;
    /// the stored parent was kept.
    pub parent_conflicts: Vec<ParentConflict>,
    /// Names recorded, in order; a name another image had moved.
    pub names: Vec<NameRecord>,
    /// Names the archive gives that are not valid references, not recorded.
    pub invalid_names: Vec<String>,
    /// Layers streamed into the blob cache (already cached ones included).
    pub layers: usize,
    /// Blobs the import added to the blob cache (compressed and
    /// decompressed copies counted apart).
    pub blobs_stored: usize,
    /// Layers whose blobs the cache held already.
    pub blobs_present: usize,
    /// Bytes of layer data read from the archives.
    pub bytes: u64,
}

impl ImportReport {
    /// Images the store did not hold before.
    pub fn created(&self) -> impl Iterator<Item = &ImportedImage> {
        self.images.iter().filter(|i| i.created)
    }
}

/// One input of an import.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ArchiveReport {
    /// The path given, or the stream's name.
    pub path: PathBuf,
    /// What it held.
    pub format: Format,
    /// Images in it.
    pub images: usize,
    /// Distinct layers in it.
    pub layers: usize,
    /// Manifests of an index left out (other platforms, absent blobs).
    pub skipped: Vec<Skipped>,
}

/// One imported image.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ImportedImage {
    /// Its ID.
    pub id: ImageId,
    /// The input it came from.
    pub archive: PathBuf,
    /// Its config's name in the archive.
    pub config: String,
    /// The names the archive gives it.
    pub names: Vec<String>,
    /// Its parent after the import (set now or before), if any.
    pub parent: Option<ImageId>,
    /// A parent `manifest.json` names that the import does not hold, left
    /// unset (`docker load` ignores it too).
    pub unknown_parent: Option<ImageId>,
    /// Its number of layers.
    pub layers: usize,
    /// Whether the store did not hold it before.
    pub created: bool,
}

/// A name an import recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameRecord {
    /// The name, in Docker's short form (`busybox:latest`).
    pub name: String,
    /// The image it names now.
    pub image: ImageId,
    /// The image it named before, when the name moved.
    pub previous: Option<ImageId>,
}

/// Records the names the archives give, as `docker load` tags images,
/// moving a name from the image that had it.
async fn record_names(
    store: &Store,
    images: &[ImportedImage],
) -> Result<(Vec<NameRecord>, Vec<String>)> {
    let mut records = Vec::new();
    let mut invalid = Vec::new();
    for image in images {
        let (names, bad) = crate::names::parse_all(&image.names);
        invalid.extend(bad);
        for name in names {
            let previous = store.tag(&name, &image.id).await.map_err(Error::Store)?;
            records.push(NameRecord {
                name: name.familiar().to_owned(),
                image: image.id,
                previous,
            });
        }
    }
    Ok((records, invalid))
}

/// An archive names another parent than the one the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentConflict {
    /// The image.
    pub image: ImageId,
    /// Its parent in the store, kept.
    pub stored: Option<ImageId>,
    /// The parent the archive names.
    pub archive: ImageId,
}

/// Imports `inputs` into `store` and `blobs`; see the [module docs](self).
///
/// # Errors
/// The first [`Error`]; nothing was imported then.
///
/// # Cancel safety
/// Dropping the future stops the import: blobs it added are removed by a
/// task spawned on the current runtime, and no config is stored.
pub async fn import(
    store: &Store,
    blobs: &BlobCache,
    inputs: impl IntoIterator<Item = Input>,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let span = tracing::info_span!("import", store = %store.backend(), blobs = %blobs.backend());
    import_inner(store, blobs, inputs, options)
        .instrument(span)
        .await
}

async fn import_inner(
    store: &Store,
    blobs: &BlobCache,
    inputs: impl IntoIterator<Item = Input>,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let progress = Reporter::new(options.progress.clone());
    let cancel = options.cancel.clone();
    let spool_dir = options.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut locals = Vec::new();
    let mut plans = Vec::new();
    for input in inputs {
        let local = Local::prepare(input, &spool_dir, &cancel, &progress).await?;
        plans.push(read_plan(&local, &options.platform, &cancel, &progress).await?);
        locals.push(local);
    }
    let parents = link_parents(store, &plans).await?;
    let mut importer = Importer {
        cache: blobs,
        cancel: &cancel,
        progress: &progress,
        undo: Undo {
            cache: blobs.clone(),
            added: Vec::new(),
            progress: progress.clone(),
        },
        present: 0,
        bytes: 0,
    };
    let stored = async {
        let layers = importer.store_layers(&plans).await?;
        let images = importer.create(store, &plans, &parents).await?;
        Ok::<_, Error>((layers, images))
    }
    .await;
    let (layers, images) = match stored {
        Ok(done) => done,
        Err(e) => {
            importer.undo.run().await;
            return Err(e);
        }
    };
    let blobs_stored = importer.undo.added.len();
    // Stored: nothing to undo any more.
    importer.undo.added.clear();
    drop(locals);
    let (names, invalid_names) = record_names(store, &images).await?;
    Ok(ImportReport {
        archives: plans
            .iter()
            .map(|p| ArchiveReport {
                path: p.path.clone(),
                format: p.format,
                images: p.images.len(),
                layers: p.jobs.len(),
                skipped: p.skipped.clone(),
            })
            .collect(),
        images,
        parent_conflicts: parents.conflicts,
        names,
        invalid_names,
        layers,
        blobs_stored,
        blobs_present: importer.present,
        bytes: importer.bytes,
    })
}

/// Step 1 on a blocking thread, with a progress step.
async fn read_plan(
    local: &Local,
    platform: &PlatformChoice,
    cancel: &Cancel,
    progress: &Reporter,
) -> Result<ArchivePlan> {
    let size = tokio::fs::metadata(&local.path)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    progress.begin(format!("reading {}", local.name.display()), size);
    let (file, name) = (local.path.clone(), local.name.clone());
    let (platform, cancel, bar) = (platform.clone(), cancel.clone(), progress.clone());
    let result = tokio::task::spawn_blocking(move || {
        plan::plan(&file, &name, &platform, cancel.flag(), &move |read| {
            bar.set(read);
        })
    })
    .await
    .map_err(|source| Error::Join {
        task: "reading the archive",
        source,
    })
    .and_then(|r| r);
    progress.finish(&result, |plan| {
        format!(
            "{}: {} with {} image(s), {} layer(s)",
            plan.path.display(),
            plan.format.name(),
            plan.images.len(),
            plan.jobs.len()
        )
    });
    result
}

/// The build cache's `isValidParent` ([`is_valid_parent`]): the parent's
/// history and layers are a prefix of the image's; or, unlike there,
/// neither has any history.
fn valid_parent(image: &ImageConfig, parent: &ImageConfig) -> bool {
    (image.history.is_empty() && parent.history.is_empty()) || is_valid_parent(image, Some(parent))
}

/// The parents an import sets, and what it leaves alone.
#[derive(Debug, Default)]
struct Parents {
    /// Image → parent to set (images new to the store, or without a parent).
    set: BTreeMap<ImageId, ImageId>,
    /// Image → parent named but not known, left unset.
    unknown: BTreeMap<ImageId, ImageId>,
    /// Parents named differently from the store's.
    conflicts: Vec<ParentConflict>,
}

/// The parent each image gets; see the module docs.
async fn link_parents(store: &Store, plans: &[ArchivePlan]) -> Result<Parents> {
    let mut all: BTreeMap<ImageId, &Image> = BTreeMap::new();
    for plan in plans {
        for image in &plan.images {
            all.entry(image.image.id()).or_insert(&image.image);
        }
    }
    let mut parents = Parents::default();
    for plan in plans {
        for item in &plan.images {
            let id = item.image.id();
            let Some(parent) = item.parent else {
                continue;
            };
            let parent_image = match all.get(&parent) {
                Some(image) => Arc::new((*image).clone()),
                None if store.contains(&parent) => {
                    store.get(&parent).await.map_err(Error::Store)?
                }
                None => {
                    parents.unknown.insert(id, parent);
                    continue;
                }
            };
            if parent == id || !valid_parent(&item.image, &parent_image) {
                return Err(Error::InvalidParent {
                    path: plan.path.clone(),
                    image: id,
                    parent,
                });
            }
            match store.parent(&id) {
                Ok(Some(stored)) if stored == parent => {}
                Ok(Some(stored)) => parents.conflicts.push(ParentConflict {
                    image: id,
                    stored: Some(stored),
                    archive: parent,
                }),
                _ => {
                    parents.set.insert(id, parent);
                }
            }
        }
    }
    parents.conflicts.sort_by_key(|c| c.image);
    parents.conflicts.dedup();
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
    cancel: &'a Cancel,
    progress: &'a Reporter,
    /// Blobs that were not cached before this import; removed on failure.
    undo: Undo,
    /// Layers whose blob was cached before.
    present: usize,
    /// Layer bytes read.
    bytes: u64,
}

/// Removes the blobs an import added unless the import completed: on an
/// error, a cancellation or a dropped future alike.
struct Undo {
    cache: BlobCache,
    added: Vec<Digest>,
    progress: Reporter,
}

impl Undo {
    /// Removes the blobs now.
    async fn run(&mut self) {
        let (cache, added, progress) = self.take();
        remove_blobs(cache, added, progress).await;
    }

    fn take(&mut self) -> (BlobCache, Vec<Digest>, Reporter) {
        (
            self.cache.clone(),
            std::mem::take(&mut self.added),
            self.progress.clone(),
        )
    }
}

/// Removes the blobs a failed import added, warning about those that stay.
async fn remove_blobs(cache: BlobCache, added: Vec<Digest>, progress: Reporter) {
    for digest in added {
        if let Err(e) = cache.delete(&digest).await {
            progress.warn(format!(
                "could not remove blob {digest} added by the failed import: {}",
                imagecache_core::error_text(&e)
            ));
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.added.is_empty() {
            return;
        }
        let (cache, added, progress) = self.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(remove_blobs(cache, added, progress));
            }
            // Without a runtime nothing can be awaited; the blobs stay
            // unreferenced until a garbage collection removes them.
            Err(_) => progress.warn("no runtime to remove the blobs of a failed import".to_owned()),
        }
    }
}

impl Importer<'_> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Interrupted)
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
        self.progress.begin(
            format!(
                "storing {} layer(s) of {}",
                plan.jobs.len(),
                plan.path.display()
            ),
            Some(total),
        );
        let (tx, mut rx) = mpsc::channel::<Outgoing>(1);
        let producer = {
            let cancel = self.cancel.clone();
            let bar = self.progress.clone();
            let path = plan.path.clone();
            let work = Work::of(plan);
            tokio::task::spawn_blocking(move || {
                let progress = move |n: u64| bar.add(n);
                let pump = Pump {
                    path: &path,
                    cancel: cancel.flag(),
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
        let produced = producer.await.map_err(|source| Error::Join {
            task: "reading the archive",
            source,
        })?;
        // When both sides failed, the reading side knows why: the blob
        // cache only saw the body end with an error.
        let result = match (produced, failure) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(stored),
        };
        self.progress.finish(&result, |n| {
            format!("stored {n} layer(s) of {}", plan.path.display())
        });
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
        let layer_error = |source: BlobError| Error::Layer {
            path: plan.path.clone(),
            entry: job.entry.clone(),
            source,
        };
        // Recorded before the put, so that whatever a failed put may have
        // left is removed too.
        if had(job.digest).await.map_err(layer_error)? {
            self.present += 1;
        } else {
            self.undo.added.push(job.digest);
        }
        if compressed && !had(job.diff_id).await.map_err(layer_error)? {
            self.undo.added.push(job.diff_id);
        }
        self.bytes += job.size;
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
                BlobError::DigestMismatch { expected, actual } => Error::BlobDigestMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    expected,
                    actual,
                },
                BlobError::DecompressedMismatch {
                    expected, actual, ..
                } => Error::DiffIdMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    image: job.image,
                    index: job.index,
                    expected,
                    actual,
                },
                BlobError::Truncated {
                    expected, actual, ..
                } => Error::BlobSizeMismatch {
                    path: plan.path.clone(),
                    entry: job.entry.clone(),
                    expected,
                    actual,
                },
                BlobError::TooLarge { size, limit, .. } => Error::BlobSizeMismatch {
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
        parents: &Parents,
    ) -> Result<Vec<ImportedImage>> {
        self.check_cancel()?;
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
                        .set
                        .get(id)
                        .is_none_or(|parent| !pending.contains_key(parent))
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
        let mut report = Vec::with_capacity(order.len());
        for (path, plan) in order {
            let id = plan.image.id();
            let mut options = CreateOptions::new();
            let set = parents.set.get(&id).copied();
            if let Some(parent) = set {
                options = options.with_parent(parent);
            }
            items.push((plan.image.raw_json().clone(), options));
            report.push(ImportedImage {
                id,
                archive: path.clone(),
                config: plan.entry.clone(),
                names: plan.tags.clone(),
                parent: set.or_else(|| store.parent(&id).ok().flatten()),
                unknown_parent: parents.unknown.get(&id).copied(),
                layers: plan.layers.len(),
                created: !store.contains(&id),
            });
        }
        store.create_batch(items).await.map_err(Error::Store)?;
        Ok(report)
    }
}

/// What the reading thread of step 3 works on.
enum Work {
    /// The archive's index, and archive position → job.
    Tar(archive::TarIndex, HashMap<usize, usize>),
    /// Job, file and entry name of each layer file.
    Files(Vec<(usize, PathBuf, String)>),
}

impl Work {
    fn of(plan: &ArchivePlan) -> Self {
        match &plan.source {
            Source::Tar(index) => {
                let wanted = plan
                    .jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(job, j)| match j.location {
                        Location::Entry(position) => Some((position, job)),
                        Location::File(_) => None,
                    })
                    .collect();
                // The index is needed on the blocking thread; it is small
                // (names and digests), so a copy is cheap.
                Self::Tar(index.clone(), wanted)
            }
            Source::Dir(_) => Self::Files(
                plan.jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(job, j)| match &j.location {
                        Location::File(file) => Some((job, file.clone(), j.entry.clone())),
                        Location::Entry(_) => None,
                    })
                    .collect(),
            ),
        }
    }
}
