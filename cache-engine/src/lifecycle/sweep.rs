//! Running a collection: announce, re-check, sweep; the periodic collector;
//! the blob release that follows an image removal.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use imagecache_core::{
    Compaction, Digest, GC_LEASE_LABEL, Image, ImageId, Lease, LeaseId, LeaseResource,
    StoreBackendExt as _, Timestamp,
};

use super::graph::{Graph, Item, held_items};
use super::plan::{self, Plan};
use super::{Lifecycle, Policy, Result};

/// How far a collection has got, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcProgress {
    /// Items handled so far (removed or skipped).
    pub done: usize,
    /// Items the collection set out to remove.
    pub total: usize,
    /// Bytes freed so far.
    pub bytes_freed: u64,
}

/// A progress callback.
pub type ProgressFn = dyn Fn(&GcProgress) + Send + Sync;

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Images removed, with their config sizes.
    pub images: Vec<(ImageId, u64)>,
    /// Blobs removed, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Bytes freed: configs and blobs removed.
    pub bytes_freed: u64,
    /// Items the plan removed that stayed, and why: a lease taken, a child
    /// or name gained, a reference made while the collection ran.
    pub skipped: Vec<(Item, String)>,
    /// Expired lease records deleted.
    pub expired_leases: Vec<LeaseId>,
    /// Temp files of writers that are gone, reclaimed, and their bytes.
    pub temp_reclaimed: (u32, u64),
    /// The backend's compaction after the removals (a redb file's size
    /// before and after), when it has one and anything was removed.
    pub compaction: Option<Compaction>,
    /// How long the collection took.
    pub elapsed: Duration,
}

impl Lifecycle {
    /// Runs a planned collection (see the [module docs](super) for the
    /// steps that make it safe while builds run), reporting progress.
    ///
    /// # Errors
    /// Store, blob and backend failures; what was removed before the
    /// failure stays removed, and the collection's lease expires on its own
    /// if it cannot be deleted.
    pub async fn execute(&self, plan: &Plan, progress: Option<&ProgressFn>) -> Result<GcReport> {
        let span = tracing::info_span!(
            "gc",
            store = %self.store.backend(),
            candidates = plan.removals().count()
        );
        self.execute_inner(plan, progress).instrument(span).await
    }

    async fn execute_inner(&self, plan: &Plan, progress: Option<&ProgressFn>) -> Result<GcReport> {
        let started = Instant::now();
        let removals: HashSet<Item> = plan.removals().map(|i| i.item).collect();
        let mut report = GcReport::default();
        if !removals.is_empty() {
            let gc = self.announce(&removals).await?;
            let swept = self.sweep(plan, removals, progress, &mut report).await;
            if let Err(e) = self.store.backend().delete_lease(&gc).await {
                tracing::warn!(lease = %gc, error = %e, "cannot delete a collection's lease");
            }
            swept?;
        }
        report.expired_leases = self.store.remove_expired_leases().await?;
        if !report.images.is_empty() || !report.blobs.is_empty() {
            match self.store.backend().compact().await {
                Ok(c) => report.compaction = c,
                // Space is given back by the next collection instead.
                Err(e) => tracing::warn!(error = %e, "cannot compact after a collection"),
            }
        }
        if let Some(blobs) = &self.blobs {
            match blobs.backend().scratch().await {
                Ok(s) => report.temp_reclaimed = (s.reclaimed, s.reclaimed_bytes),
                Err(e) => tracing::warn!(error = %e, "cannot reclaim temp files"),
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            images = report.images.len(),
            blobs = report.blobs.len(),
            bytes_freed = report.bytes_freed,
            skipped = report.skipped.len(),
            elapsed_ms = report.elapsed.as_millis(),
            "garbage collection finished"
        );
        Ok(report)
    }

    /// Plans and runs a collection under `policies`.
    ///
    /// # Errors
    /// As [`Lifecycle::plan`] and [`Lifecycle::execute`].
    pub async fn collect(
        &self,
        policies: &[Policy],
        progress: Option<&ProgressFn>,
    ) -> Result<GcReport> {
        let plan = self.plan(policies).await?;
        self.execute(&plan, progress).await
    }

    /// Starts a task that collects under `policies` now and then every
    /// `every`, for a long-running builder; it stops when the returned
    /// [`Collector`] is dropped. Needs a Tokio runtime.
    pub fn spawn_collector(&self, policies: Vec<Policy>, every: Duration) -> Collector {
        let last: Arc<Mutex<Option<std::result::Result<GcReport, String>>>> = Arc::default();
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let this = self.clone();
        let (last_w, runs_w) = (Arc::clone(&last), Arc::clone(&runs));
        let task = tokio::spawn(async move {
            loop {
                let outcome = this.collect(&policies, None).await.map_err(|e| {
                    tracing::warn!(error = %e, "periodic garbage collection failed");
                    e.to_string()
                });
                *lock(&last_w) = Some(outcome);
                runs_w.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
        });
        Collector { task, last, runs }
    }

    /// Writes the collection's lease naming everything about to go.
    async fn announce(&self, removals: &HashSet<Item>) -> Result<LeaseId> {
        let random = LeaseId::random();
        let suffix = random.as_str().trim_start_matches("lease-");
        let id = LeaseId::new(format!("gc-{suffix}"))?;
        let mut lease = Lease::new(id.clone(), self.options.collection_ttl);
        lease
            .labels
            .insert(GC_LEASE_LABEL.to_owned(), "1".to_owned());
        lease.resources = removals
            .iter()
            .map(|i| match i {
                Item::Image(id) => LeaseResource::Image(*id),
                Item::Blob(d) => LeaseResource::Blob(*d),
            })
            .collect();
        self.store.backend().set_lease(lease).await?;
        Ok(id)
    }

    /// Re-checks against fresh leases, then removes images and blobs.
    async fn sweep(
        &self,
        plan: &Plan,
        mut removals: HashSet<Item>,
        progress: Option<&ProgressFn>,
        report: &mut GcReport,
    ) -> Result<()> {
        let leases = self.store.leases().await?;
        let again = plan::plan(self, &plan.policies, &leases).await?;
        let second: HashSet<Item> = again.removals().map(|i| i.item).collect();
        for item in removals.iter().filter(|i| !second.contains(i)) {
            report.skipped.push((
                *item,
                "kept on the re-check (a lease, a child or a name)".into(),
            ));
        }
        removals.retain(|i| second.contains(i));
        let total = removals.len();
        let sizes: HashMap<Item, u64> = again.items.iter().map(|i| (i.item, i.bytes)).collect();
        let mut step = Step {
            progress,
            done: 0,
            total,
        };
        let images = self.children_first(removals.iter().filter_map(|i| match i {
            Item::Image(id) => Some(*id),
            Item::Blob(_) => None,
        }));
        for id in images {
            match self
                .store
                .delete_unused(&id, again.named_ok.contains(&id))
                .await?
            {
                Some(_) => {
                    let bytes = sizes.get(&Item::Image(id)).copied().unwrap_or(0);
                    report.images.push((id, bytes));
                    report.bytes_freed += bytes;
                }
                None => report
                    .skipped
                    .push((Item::Image(id), "gained a child or a name".into())),
            }
            step.tick(report.bytes_freed);
        }
        let blobs: Vec<Digest> = removals
            .iter()
            .filter_map(|i| match i {
                Item::Blob(d) => Some(*d),
                Item::Image(_) => None,
            })
            .collect();
        self.sweep_blobs(&again, blobs, &sizes, &mut step, report)
            .await
    }

    /// `images` ordered so that children come before their parents (deepest
    /// in their chain first, then by ID): the order they can be removed in
    /// without orphaning any, and the order `docker image prune` prints.
    pub fn children_first(&self, images: impl IntoIterator<Item = ImageId>) -> Vec<ImageId> {
        let mut images: Vec<(std::cmp::Reverse<usize>, ImageId)> = images
            .into_iter()
            .map(|id| (std::cmp::Reverse(self.depth(&id)), id))
            .collect();
        images.sort_unstable();
        images.into_iter().map(|(_, id)| id).collect()
    }

    /// How many ancestors an image has in the store.
    fn depth(&self, id: &ImageId) -> usize {
        let mut depth = 0;
        let mut next = self.store.info(id).and_then(|i| i.parent);
        while let Some(p) = next {
            depth += 1;
            if depth > 100_000 {
                break;
            }
            next = self.store.info(&p).and_then(|i| i.parent);
        }
        depth
    }

    /// Removes the blobs nothing still stored refers to, counting images
    /// created while the collection ran.
    async fn sweep_blobs(
        &self,
        again: &Plan,
        candidates: Vec<Digest>,
        sizes: &HashMap<Item, u64>,
        step: &mut Step<'_>,
        report: &mut GcReport,
    ) -> Result<()> {
        let Some(cache) = &self.blobs else {
            return Ok(());
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let candidate_set: HashSet<Item> = candidates.iter().map(|d| Item::Blob(*d)).collect();
        let mut graph = again.graph.clone();
        let planned: HashSet<Item> = again.items.iter().map(|i| i.item).collect();
        for id in self.store.ids() {
            if !planned.contains(&Item::Image(id))
                && let Ok(image) = self.store.get(&id).await
            {
                graph.add_image(&self.store, &id, &image);
            }
        }
        let roots = self.store.ids().into_iter().map(Item::Image).chain(
            again
                .items
                .iter()
                .map(|i| i.item)
                .filter(|i| matches!(i, Item::Blob(_)) && !candidate_set.contains(i)),
        );
        let still = graph.reach(roots);
        for digest in candidates {
            let item = Item::Blob(digest);
            if still.contains(&item) {
                report
                    .skipped
                    .push((item, "referenced by an image stored meanwhile".into()));
            } else {
                cache.delete(&digest).await?;
                let bytes = sizes.get(&item).copied().unwrap_or(0);
                report.blobs.push((digest, bytes));
                report.bytes_freed += bytes;
            }
            step.tick(report.bytes_freed);
        }
        Ok(())
    }
}

struct Step<'a> {
    progress: Option<&'a ProgressFn>,
    done: usize,
    total: usize,
}

impl Step<'_> {
    fn tick(&mut self, bytes_freed: u64) {
        self.done += 1;
        if let Some(f) = self.progress {
            f(&GcProgress {
                done: self.done,
                total: self.total,
                bytes_freed,
            });
        }
    }
}

/// The blobs removed images referred to that nothing kept refers to now.
pub(super) async fn release_blobs(
    lc: &Lifecycle,
    removed: &[Arc<Image>],
) -> Result<Vec<(Digest, u64)>> {
    let Some(cache) = &lc.blobs else {
        return Ok(Vec::new());
    };
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    let images = lc.store.map().await?;
    let catalog = cache.catalog().await?;
    let mut graph = Graph::new(&lc.store, &images, &catalog);
    for image in removed {
        graph.add_image(&lc.store, &image.id(), image);
    }
    let leases = lc.store.leases().await?;
    let held = lc.store.held(&leases, Timestamp::now_utc()).await?;
    let kept = graph.reach(
        images
            .keys()
            .map(|id| Item::Image(*id))
            .chain(held_items(&held).into_keys())
            .chain(graph.unread()),
    );
    let ids: Vec<ImageId> = removed.iter().map(|i| i.id()).collect();
    let mut out = Vec::new();
    for digest in graph.released_by(&ids) {
        if kept.contains(&Item::Blob(digest)) {
            continue;
        }
        if let Some(node) = graph.blobs.get(&digest) {
            cache.delete(&digest).await?;
            out.push((digest, node.size));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A periodic collection started by [`Lifecycle::spawn_collector`]; stops
/// when dropped.
#[derive(Debug)]
pub struct Collector {
    task: tokio::task::JoinHandle<()>,
    last: Arc<Mutex<Option<std::result::Result<GcReport, String>>>>,
    runs: Arc<std::sync::atomic::AtomicU64>,
}

impl Collector {
    /// The outcome of the last run: its report, or the error's text.
    pub fn last(&self) -> Option<std::result::Result<GcReport, String>> {
        lock(&self.last).clone()
    }

    /// How many runs have finished.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the collector (a run in progress is cancelled; its lease
    /// expires on its own).
    pub fn stop(self) {}
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
