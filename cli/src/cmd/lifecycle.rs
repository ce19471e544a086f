//! `prune`, `lease`, `df` and `compact`: the store's life cycle, run by
//! [`Lifecycle`] in the cache engine. This module parses, asks, prints.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use imagecache_core::{ImageId, LeaseId, LeaseResource, Timestamp};
use imagecache_engine::lifecycle::{
    DiskUsage, Filter, GcProgress, GcReport, Item, Lifecycle, LifecycleOptions, Plan, Policy,
    Reason,
};
use imagecache_store::{LeaseOptions, Store};
use serde::Serialize;

use super::{BlobOut, Ctx, print_json, print_lines, print_table};
use crate::cli::{LeaseCommand, PruneArgs};
use crate::error::{CliError, EXIT_OK, Result};
use crate::units::human_size;

/// The services over the command's store and blob cache.
pub(super) async fn lifecycle(ctx: &Ctx) -> Result<Lifecycle> {
    let store = ctx.store().await?;
    let blobs = ctx.blobs().await.ok();
    let mut options = LifecycleOptions::new();
    let local = imagecache_backends::local_path(&ctx.url);
    if let Some(dir) = local
        .as_ref()
        .and_then(imagecache_backends::LocalPath::directory)
    {
        options = options.with_free_space_path(dir);
    }
    Ok(Lifecycle::with_options(store, blobs, options))
}

/// The policy the flags describe.
fn policy(args: &PruneArgs) -> Result<Policy> {
    let mut policy = if args.all {
        Policy::all()
    } else {
        Policy::dangling()
    };
    for text in &args.filter {
        let filter = Filter::parse(text).map_err(|e| CliError::Usage {
            what: "--filter".into(),
            reason: match e {
                imagecache_engine::lifecycle::Error::InvalidFilter { filter, reason } => {
                    format!("{filter:?}: {reason}")
                }
                other => other.to_string(),
            },
        })?;
        policy = policy.with_filter(filter);
    }
    if let Some(until) = args.until {
        let now = Timestamp::now_utc();
        let ago = now.unix_nanos() - until.resolve(now).unix_nanos();
        let ago = Duration::from_nanos(u64::try_from(ago.max(0)).unwrap_or(u64::MAX));
        policy = policy.with_keep_duration(ago);
    }
    if let Some(size) = args.keep_storage {
        policy = policy.with_max_used_space(size.0);
    }
    if let Some(size) = args.min_free_space {
        policy = policy.with_min_free_space(size.0);
    }
    if let Some(size) = args.reserved_space {
        policy = policy.with_reserved_space(size.0);
    }
    Ok(policy)
}

/// One planned item, for JSON.
#[derive(Debug, Serialize)]
struct ItemOut {
    kind: &'static str,
    id: String,
    bytes: u64,
    remove: bool,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
}

/// What `prune` removed (or would remove, with `--dry-run`).
#[derive(Debug, Serialize)]
struct Pruned {
    dry_run: bool,
    images: Vec<ImageId>,
    blobs: Vec<BlobOut>,
    reclaimed: u64,
    size_before: u64,
    size_after: u64,
    limit: Option<u64>,
    skipped: Vec<String>,
    expired_leases: Vec<String>,
    temp_files_reclaimed: u32,
    /// The backend's file size before and after compaction, if it ran.
    compacted: Option<(u64, u64)>,
    items: Vec<ItemOut>,
}

fn item_out(item: &imagecache_engine::lifecycle::PlanItem) -> ItemOut {
    let (kind, id) = match item.item {
        Item::Image(id) => ("image", id.to_string()),
        Item::Blob(d) => ("blob", d.to_string()),
    };
    ItemOut {
        kind,
        id,
        bytes: item.bytes,
        remove: item.remove,
        reason: item.reason.name(),
        lease: match &item.reason {
            Reason::Held(lease) => Some(lease.to_string()),
            _ => None,
        },
    }
}

/// Asks on a terminal before removing anything, as `docker image prune`.
fn confirm(all: bool) -> Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(true);
    }
    let what = if all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush().map_err(CliError::Output)?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(CliError::Output)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// `prune`.
pub(super) async fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<u8> {
    let policy = policy(args)?;
    if !args.dry_run && !args.force && !confirm(args.all)? {
        return Ok(EXIT_OK);
    }
    let lc = lifecycle(ctx).await?;
    let plan = lc.plan(std::slice::from_ref(&policy)).await?;
    let total = plan.removals().count() as u64;
    let report = if args.dry_run {
        None
    } else {
        let step = ctx.ui.step("pruning", Some(total), false);
        let bar = step.clone();
        let progress = move |p: &GcProgress| bar.set(p.done as u64);
        let report = lc.execute(&plan, Some(&progress)).await;
        if report.is_err() {
            step.abandon();
        }
        let report = report?;
        step.finish(
            &ctx.ui,
            format!(
                "removed {} image(s) and {} blob(s), {}",
                report.images.len(),
                report.blobs.len(),
                human_size(report.bytes_freed)
            ),
        );
        Some(report)
    };
    let pruned = pruned(
        &lc,
        &plan,
        report.as_ref(),
        args.dry_run,
        policy.max_used_space,
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
    lines.extend(pruned.skipped.iter().map(|s| format!("Kept: {s}")));
    lines.push(format!(
        "Total reclaimed space: {}{}",
        human_size(pruned.reclaimed),
        match pruned.limit {
            Some(limit) => format!(
                " (store now {}, limit {})",
                human_size(pruned.size_after),
                human_size(limit)
            ),
            None => String::new(),
        }
    ));
    print_lines(lines)?;
    Ok(EXIT_OK)
}

/// The report of a run, or of a plan on a dry run.
fn pruned(
    lc: &Lifecycle,
    plan: &Plan,
    report: Option<&GcReport>,
    dry_run: bool,
    limit: Option<u64>,
) -> Pruned {
    let (images, blobs, reclaimed): (Vec<ImageId>, Vec<BlobOut>, u64) = match report {
        Some(r) => (
            r.images.iter().map(|(id, _)| *id).collect(),
            r.blobs
                .iter()
                .map(|(digest, size)| BlobOut {
                    digest: *digest,
                    size: *size,
                })
                .collect(),
            r.bytes_freed,
        ),
        None => {
            let mut images = Vec::new();
            let mut blobs = Vec::new();
            for i in plan.removals() {
                match i.item {
                    Item::Image(id) => images.push(id),
                    Item::Blob(digest) => blobs.push(BlobOut {
                        digest,
                        size: i.bytes,
                    }),
                }
            }
            (images, blobs, plan.bytes_to_free())
        }
    };
    let images = lc.children_first(images);
    Pruned {
        dry_run,
        images,
        blobs,
        reclaimed,
        size_before: plan.used_bytes,
        size_after: plan.used_bytes.saturating_sub(reclaimed),
        limit,
        skipped: report
            .map(|r| {
                r.skipped
                    .iter()
                    .map(|(item, why)| format!("{item}: {why}"))
                    .collect()
            })
            .unwrap_or_default(),
        expired_leases: report
            .map(|r| r.expired_leases.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        temp_files_reclaimed: report.map_or(0, |r| r.temp_reclaimed.0),
        compacted: report
            .and_then(|r| r.compaction)
            .map(|c| (c.before, c.after)),
        items: plan.items.iter().map(item_out).collect(),
    }
}

/// A lease, for output.
#[derive(Debug, Serialize)]
struct LeaseOut {
    id: String,
    created: String,
    expires: String,
    live: bool,
    labels: std::collections::BTreeMap<String, String>,
    resources: Vec<String>,
}

fn lease_out(lease: &imagecache_core::Lease, now: Timestamp) -> LeaseOut {
    LeaseOut {
        id: lease.id.to_string(),
        created: lease.created.to_string(),
        expires: lease.expires.to_string(),
        live: lease.is_live(now),
        labels: lease.labels.clone(),
        resources: lease.resources.iter().map(ToString::to_string).collect(),
    }
}

/// A resource given on the command line: `image:…`, `layer:…`, `blob:…`,
/// or an image ID, unique prefix or name.
/// Splits a lease label, `KEY=VALUE` or `KEY` (an empty value), refusing
/// an empty key and control characters, which `lease ls` would print.
fn lease_label(text: &str) -> Result<(&str, &str)> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    let reason = if key.is_empty() {
        "the key is empty; write KEY=VALUE"
    } else if text.chars().any(char::is_control) {
        "labels may not hold control characters"
    } else {
        return Ok((key, value));
    };
    Err(CliError::Usage {
        what: format!("--label {text:?}"),
        reason: reason.to_owned(),
    })
}

fn resource(store: &Store, text: &str) -> Result<LeaseResource> {
    if let Ok(r) = LeaseResource::parse(text) {
        return Ok(r);
    }
    Ok(LeaseResource::Image(store.resolve(text)?))
}

fn lease_id(text: &str) -> Result<LeaseId> {
    LeaseId::new(text).map_err(|e| CliError::Usage {
        what: "lease ID".into(),
        reason: e.to_string(),
    })
}

/// `lease …`.
pub(super) async fn lease(ctx: &Ctx, command: &LeaseCommand) -> Result<u8> {
    let store = ctx.store().await?;
    let now = Timestamp::now_utc();
    match command {
        LeaseCommand::Ls => {
            let leases = store.leases().await?;
            if ctx.json() {
                let out: Vec<LeaseOut> = leases.iter().map(|l| lease_out(l, now)).collect();
                return print_json(&out);
            }
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        l.expires.to_string(),
                        if l.is_live(now) { "live" } else { "expired" }.to_owned(),
                        l.resources.len().to_string(),
                        l.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            print_table(&["LEASE", "EXPIRES", "STATE", "RESOURCES", "LABELS"], &rows)?;
        }
        LeaseCommand::Create {
            id,
            ttl,
            labels,
            resources,
        } => {
            let mut options = LeaseOptions::new().with_ttl(ttl.0);
            if let Some(id) = id {
                options = options.with_id(lease_id(id)?);
            }
            for label in labels {
                let (k, v) = lease_label(label)?;
                options = options.with_label(k, v);
            }
            for r in resources {
                options = options.with_resource(resource(&store, r)?);
            }
            let lease = store.create_lease(options).await?;
            if ctx.json() {
                return print_json(&lease_out(&lease, now));
            }
            print_lines([lease.id.as_str()])?;
        }
        LeaseCommand::Rm { ids } => {
            let mut code = EXIT_OK;
            for id in ids {
                let id = lease_id(id)?;
                if store.delete_lease(&id).await? {
                    print_lines([id.as_str()])?;
                } else {
                    eprintln!("error: lease {id} not found");
                    code = crate::error::EXIT_NOT_FOUND;
                }
            }
            return Ok(code);
        }
    }
    Ok(EXIT_OK)
}

/// `df`.
pub(super) async fn df(ctx: &Ctx, verbose: bool) -> Result<u8> {
    let lc = lifecycle(ctx).await?;
    let du = lc.disk_usage().await?;
    if ctx.json() {
        return print_json(&df_json(&du));
    }
    let blob_bytes: u64 = du.blobs.iter().map(|b| b.bytes).sum();
    let blob_count: u64 = du.blobs.iter().map(|b| b.count).sum();
    let rows = vec![
        vec![
            "Images".to_owned(),
            du.images.to_string(),
            human_size(du.config_bytes),
            format!(
                "{} ({} with -a)",
                human_size(du.reclaimable),
                human_size(du.reclaimable_all)
            ),
        ],
        vec![
            "Blobs".to_owned(),
            blob_count.to_string(),
            human_size(blob_bytes),
            String::new(),
        ],
        vec![
            "Leases".to_owned(),
            format!("{} live, {} expired", du.live_leases, du.expired_leases),
            String::new(),
            String::new(),
        ],
    ];
    print_table(&["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"], &rows)?;
    if !verbose {
        return Ok(EXIT_OK);
    }
    let mut lines = vec![String::new(), "Blobs by kind:".to_owned()];
    for b in &du.blobs {
        lines.push(format!(
            "  {:<9} {:<5} {:>6} {:>12}",
            b.kind.name(),
            b.compression.map_or("-", |c| c.as_str()),
            b.count,
            human_size(b.bytes)
        ));
    }
    for (title, usage) in [
        ("Image backend", &du.store),
        ("Blob backend", &du.blob_store),
    ] {
        lines.push(String::new());
        match usage {
            Some(u) => {
                lines.push(format!("{title} on disk: {}", human_size(u.bytes())));
                for p in &u.parts {
                    lines.push(format!(
                        "  {:<9} {:>8} {:>12}",
                        p.kind.name(),
                        p.count,
                        human_size(p.bytes)
                    ));
                }
            }
            None => lines.push(format!("{title}: cannot measure its disk usage")),
        }
    }
    if let Some(free) = du.free_bytes {
        lines.push(String::new());
        lines.push(format!(
            "Free on the store's filesystem: {}",
            human_size(free)
        ));
    }
    print_lines(lines)?;
    Ok(EXIT_OK)
}

fn df_json(du: &DiskUsage) -> serde_json::Value {
    let usage = |u: &Option<imagecache_core::Usage>| {
        u.as_ref().map(|u| {
            serde_json::json!({
                "bytes": u.bytes(),
                "total": u.total,
                "parts": u.parts.iter().map(|p| serde_json::json!({
                    "kind": p.kind.name(), "count": p.count, "bytes": p.bytes,
                })).collect::<Vec<_>>(),
            })
        })
    };
    serde_json::json!({
        "images": du.images,
        "config_bytes": du.config_bytes,
        "names": du.names,
        "live_leases": du.live_leases,
        "expired_leases": du.expired_leases,
        "blobs": du.blobs.iter().map(|b| serde_json::json!({
            "kind": b.kind.name(),
            "compression": b.compression.map(|c| c.as_str()),
            "count": b.count,
            "bytes": b.bytes,
        })).collect::<Vec<_>>(),
        "reclaimable": du.reclaimable,
        "reclaimable_all": du.reclaimable_all,
        "free_bytes": du.free_bytes,
        "image_backend": usage(&du.store),
        "blob_backend": usage(&du.blob_store),
    })
}

/// `check`.
pub(super) async fn check(ctx: &Ctx) -> Result<u8> {
    let lc = lifecycle(ctx).await?;
    let step = ctx.ui.step("checking", None, false);
    let report = lc.check().await;
    if report.is_err() {
        step.abandon();
    }
    let report = report?;
    step.finish(
        &ctx.ui,
        format!(
            "checked {} image(s), {} lease(s), {} blob(s) ({}) in {:.1?}",
            report.images,
            report.leases,
            report.blobs,
            human_size(report.blob_bytes),
            report.elapsed
        ),
    );
    let code = if report.problems.is_empty() {
        EXIT_OK
    } else {
        crate::error::EXIT_NOT_FOUND
    };
    if ctx.json() {
        print_json(&serde_json::json!({
            "images": report.images,
            "leases": report.leases,
            "blobs": report.blobs,
            "blob_bytes": report.blob_bytes,
            "elapsed_ms": report.elapsed.as_millis(),
            "problems": report.problems.iter().map(|p| serde_json::json!({
                "key": p.key, "problem": p.problem,
            })).collect::<Vec<_>>(),
        }))?;
        return Ok(code);
    }
    let mut lines: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.problem))
        .collect();
    lines.push(format!("Problems: {}", report.problems.len()));
    print_lines(lines)?;
    Ok(code)
}

/// `compact`.
pub(super) async fn compact(ctx: &Ctx) -> Result<u8> {
    let lc = lifecycle(ctx).await?;
    let done = lc.compact().await?;
    if ctx.json() {
        return print_json(&serde_json::json!({
            "compacted": done.is_some(),
            "before": done.map(|c| c.before),
            "after": done.map(|c| c.after),
        }));
    }
    match done {
        Some(c) => print_lines([format!(
            "Compacted: {} -> {} ({} given back)",
            human_size(c.before),
            human_size(c.after),
            human_size(c.before.saturating_sub(c.after))
        )])?,
        None => print_lines(["Nothing to compact: this backend gives space back as it deletes"])?,
    }
    Ok(EXIT_OK)
}

/// `rm`'s blob release: what the removed images alone referred to.
pub(super) async fn release_blobs(
    ctx: &Ctx,
    removed: &[std::sync::Arc<imagecache_core::Image>],
) -> Result<Vec<BlobOut>> {
    let lc = lifecycle(ctx).await?;
    Ok(lc
        .release_blobs(removed)
        .await?
        .into_iter()
        .map(|(digest, size)| BlobOut { digest, size })
        .collect())
}
