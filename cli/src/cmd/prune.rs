//! `prune`: dangling images, or least recently used images down to a size.
//!
//! # Definitions
//!
//! This store has no tags, so it follows what Docker records when an image
//! is tagged: a `lastUpdated` value. An image is **in use** when it has
//! children or a `lastUpdated` record (set by `import` for images the
//! archive names, and by any program that tags through the store). A
//! **dangling** image is one not in use: no children and never tagged, like
//! Docker's `<none>:<none>` images. Removing a dangling image may leave its
//! parent dangling in turn; `prune` removes such chains too, as
//! `docker image prune` does with the untagged parents of what it deletes.
//! `--until` keeps images created at or after the given time.
//!
//! With `--keep-storage SIZE` the rule is Docker's for build caches instead:
//! the store's size (config bytes plus blob bytes) is brought down to SIZE
//! by removing, first, blobs no image refers to, then images without
//! children, least recently used first (`lastUpdated`, else `created`;
//! ties by ID) — whether tagged or not. Removing an image may leave its
//! parent without children; the parent then competes by its own time.
//! Images therefore leave from the top of a chain, and no image is ever
//! orphaned.
//!
//! In both modes the blobs that only removed images referred to (their
//! layers, compressed and decompressed) are removed with them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use imagecache_core::{DiffId, Digest, Image, ImageId, Timestamp};
use imagecache_engine::blob::{BlobCache, Compression};
use imagecache_store::{ImageInfo, Store};
use serde::Serialize;

use super::{BlobOut, Ctx, print_json, print_lines};
use crate::cli::PruneArgs;
use crate::error::{EXIT_OK, Result};
use crate::units::human_size;

/// What `prune` removed (or would remove, with `--dry-run`).
#[derive(Debug, Serialize)]
struct Pruned {
    dry_run: bool,
    images: Vec<ImageId>,
    blobs: Vec<BlobOut>,
    reclaimed: u64,
    /// With `--keep-storage`: the size before and after, and the limit.
    size_before: Option<u64>,
    size_after: Option<u64>,
    limit: Option<u64>,
}

/// The blobs an image refers to: its layers, and their compressed copies.
async fn blobs_of(cache: &BlobCache, image: &Image) -> Result<BTreeSet<Digest>> {
    let mut out = BTreeSet::new();
    for raw in &image.rootfs.raw_diff_ids {
        let Ok(diff) = DiffId::parse(raw) else {
            continue;
        };
        let diff = *diff.digest();
        if let Some(compressed) = cache.variant(&diff, Compression::Gzip).await? {
            out.insert(compressed.digest);
        }
        out.insert(diff);
    }
    Ok(out)
}

/// Removes (unless `dry_run`) the cached blobs that `removed` refer to and
/// no image left in the store does; returns them.
///
/// # Errors
/// Blob cache and store failures.
pub(super) async fn release_blobs(
    store: &Store,
    cache: &BlobCache,
    removed: &[Arc<Image>],
    dry_run: bool,
) -> Result<Vec<BlobOut>> {
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    let mut candidates = BTreeSet::new();
    for image in removed {
        candidates.extend(blobs_of(cache, image).await?);
    }
    let gone: BTreeSet<ImageId> = removed.iter().map(|i| i.id()).collect();
    for (id, image) in store.map().await? {
        if !gone.contains(&id) {
            for d in blobs_of(cache, &image).await? {
                candidates.remove(&d);
            }
        }
    }
    let mut out = Vec::new();
    for digest in candidates {
        if let Some(size) = cache.has(&digest).await? {
            if !dry_run {
                cache.delete(&digest).await?;
            }
            out.push(BlobOut { digest, size });
        }
    }
    Ok(out)
}

/// When an image was last used, for least-recently-used order.
fn last_used(info: &ImageInfo) -> i128 {
    info.last_updated
        .or(info.created)
        .map_or(i128::MIN, |t| t.unix_nanos())
}

pub(super) async fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<u8> {
    let store = ctx.store().await?;
    let cache = ctx.blobs().await.ok();
    let cutoff = args.until.map(|u| u.resolve(Timestamp::now_utc()));
    let infos: HashMap<ImageId, ImageInfo> = store
        .ids()
        .iter()
        .filter_map(|id| store.info(id).map(|i| (*id, i)))
        .collect();
    let old_enough = |info: &ImageInfo| match (&cutoff, &info.created) {
        (None, _) => true,
        (Some(c), Some(created)) => created.unix_nanos() < c.unix_nanos(),
        (Some(_), None) => true,
    };
    let mut children: HashMap<ImageId, usize> = infos
        .iter()
        .map(|(id, i)| (*id, i.children.len()))
        .collect();

    let step = ctx.ui.step("pruning", None, false);
    let mut pruned = Pruned {
        dry_run: args.dry_run,
        images: Vec::new(),
        blobs: Vec::new(),
        reclaimed: 0,
        size_before: None,
        size_after: None,
        limit: args.keep_storage.map(|s| s.0),
    };

    match args.keep_storage {
        None => {
            // Dangling heads, then the parents they leave dangling.
            let dangling = |i: &ImageInfo| i.last_updated.is_none() && old_enough(i);
            let mut work: Vec<ImageId> = infos
                .values()
                .filter(|i| i.children.is_empty() && dangling(i))
                .map(|i| i.id)
                .collect();
            work.sort_unstable_by(|a, b| b.cmp(a));
            while let Some(id) = work.pop() {
                pruned.images.push(id);
                if let Some(p) = release_parent(&infos, &mut children, id, &dangling) {
                    work.push(p.id);
                }
            }
            let removed = remove_images(ctx, &store, &pruned.images, args.dry_run, &step).await?;
            if let Some(cache) = &cache {
                pruned.blobs = release_blobs(&store, cache, &removed, args.dry_run).await?;
            }
            pruned.reclaimed = removed
                .iter()
                .map(|i| i.raw_json().len() as u64)
                .sum::<u64>()
                + pruned.blobs.iter().map(|b| b.size).sum::<u64>();
        }
        Some(limit) => {
            keep_storage(
                ctx,
                &store,
                cache.as_ref(),
                &infos,
                &mut children,
                &old_enough,
                limit.0,
                &mut pruned,
                &step,
            )
            .await?;
        }
    }
    step.finish(
        &ctx.ui,
        format!(
            "{} {} image(s) and {} blob(s), {}",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            pruned.images.len(),
            pruned.blobs.len(),
            human_size(pruned.reclaimed)
        ),
    );
    if ctx.json() {
        return print_json(&pruned);
    }
    let verb = if args.dry_run {
        "Would delete"
    } else {
        "Deleted"
    };
    let mut lines: Vec<String> = pruned
        .images
        .iter()
        .map(|id| format!("{verb}: {id}"))
        .collect();
    lines.extend(
        pruned
            .blobs
            .iter()
            .map(|b| format!("{verb} blob: {}", b.digest)),
    );
    lines.push(format!(
        "Total reclaimed space: {}{}",
        human_size(pruned.reclaimed),
        match (pruned.size_after, pruned.limit) {
            (Some(after), Some(limit)) => format!(
                " (store now {}, limit {})",
                human_size(after),
                human_size(limit)
            ),
            _ => String::new(),
        }
    ));
    print_lines(lines)?;
    Ok(EXIT_OK)
}

/// Counts one child of `child`'s parent as gone; returns the parent once it
/// has no children left and `ready` holds for it.
fn release_parent<'a>(
    infos: &'a HashMap<ImageId, ImageInfo>,
    children: &mut HashMap<ImageId, usize>,
    child: ImageId,
    ready: &dyn Fn(&ImageInfo) -> bool,
) -> Option<&'a ImageInfo> {
    let parent = infos.get(&child)?.parent?;
    let (n, p) = (children.get_mut(&parent)?, infos.get(&parent)?);
    *n = n.saturating_sub(1);
    (*n == 0 && ready(p)).then_some(p)
}

/// Deletes `ids` in order (each delete is atomic; Ctrl-C stops between
/// them) and returns their configs.
async fn remove_images(
    ctx: &Ctx,
    store: &Store,
    ids: &[ImageId],
    dry_run: bool,
    step: &crate::progress::Step,
) -> Result<Vec<Arc<Image>>> {
    let mut removed = Vec::with_capacity(ids.len());
    for id in ids {
        ctx.check_cancel()?;
        let image = store.get(id).await?;
        if !dry_run {
            store.delete(id).await?;
        }
        step.inc(1);
        removed.push(image);
    }
    Ok(removed)
}

/// `--keep-storage`: see the module docs.
#[allow(clippy::too_many_arguments)]
async fn keep_storage(
    ctx: &Ctx,
    store: &Store,
    cache: Option<&BlobCache>,
    infos: &HashMap<ImageId, ImageInfo>,
    children: &mut HashMap<ImageId, usize>,
    old_enough: &dyn Fn(&ImageInfo) -> bool,
    limit: u64,
    pruned: &mut Pruned,
    step: &crate::progress::Step,
) -> Result<()> {
    // Which blobs each image refers to, and how many images refer to each.
    let mut uses: HashMap<ImageId, BTreeSet<Digest>> = HashMap::new();
    let mut refs: BTreeMap<Digest, usize> = BTreeMap::new();
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    if let Some(cache) = cache {
        for info in cache.backend().list_blobs().await? {
            sizes.insert(info.digest, info.size);
            refs.insert(info.digest, 0);
        }
        for (id, image) in store.map().await? {
            let blobs = blobs_of(cache, &image).await?;
            for d in &blobs {
                if let Some(n) = refs.get_mut(d) {
                    *n += 1;
                }
            }
            uses.insert(id, blobs);
        }
    }
    let mut total: u64 =
        infos.values().map(|i| i.config_len).sum::<u64>() + sizes.values().sum::<u64>();
    pruned.size_before = Some(total);

    let mut doomed_blobs: Vec<Digest> = Vec::new();
    // Blobs no image refers to go first.
    for (digest, n) in &refs {
        if total <= limit {
            break;
        }
        if *n == 0 {
            doomed_blobs.push(*digest);
            total = total.saturating_sub(sizes.get(digest).copied().unwrap_or(0));
        }
    }
    // Then images without children, least recently used first.
    let mut heap: BinaryHeap<Reverse<(i128, ImageId)>> = infos
        .values()
        .filter(|i| i.children.is_empty() && old_enough(i))
        .map(|i| Reverse((last_used(i), i.id)))
        .collect();
    while total > limit {
        let Some(Reverse((_, id))) = heap.pop() else {
            break;
        };
        let Some(info) = infos.get(&id) else {
            continue;
        };
        pruned.images.push(id);
        total = total.saturating_sub(info.config_len);
        for d in uses.get(&id).into_iter().flatten() {
            if let Some(n) = refs.get_mut(d) {
                *n = n.saturating_sub(1);
                if *n == 0
                    && let Some(size) = sizes.get(d)
                {
                    doomed_blobs.push(*d);
                    total = total.saturating_sub(*size);
                }
            }
        }
        if let Some(p) = release_parent(infos, children, id, old_enough) {
            heap.push(Reverse((last_used(p), p.id)));
        }
    }
    pruned.size_after = Some(total);

    let removed = remove_images(ctx, store, &pruned.images, pruned.dry_run, step).await?;
    let mut reclaimed: u64 = removed.iter().map(|i| i.raw_json().len() as u64).sum();
    if let Some(cache) = cache {
        for digest in doomed_blobs {
            ctx.check_cancel()?;
            let size = sizes.get(&digest).copied().unwrap_or(0);
            if !pruned.dry_run {
                cache.delete(&digest).await?;
            }
            reclaimed += size;
            pruned.blobs.push(BlobOut { digest, size });
        }
    }
    pruned.reclaimed = reclaimed;
    Ok(())
}
