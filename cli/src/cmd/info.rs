//! `info` and `stats`.

use serde::Serialize;

use super::{Ctx, print_json, print_lines};
use crate::error::{EXIT_OK, Result};
use crate::units::human_size;

/// What `info` reports.
#[derive(Debug, Serialize)]
struct Info {
    store: String,
    backend: String,
    capabilities: Caps,
    images: usize,
    config_bytes: u64,
    /// Configs read while opening (no summary was stored for them).
    configs_read: usize,
    blobs: Option<u64>,
    blob_bytes: Option<u64>,
    /// Unfinished blob writes whose writer is at work, and their bytes.
    temp_files: u32,
    temp_bytes: u64,
    /// Leftovers of writers that are gone, removed by this command.
    temp_reclaimed: u32,
    temp_reclaimed_bytes: u64,
    /// What opening the store found wrong.
    problems: Vec<String>,
    /// When the last full `check` ran, and the problems it found.
    last_check: Option<String>,
    last_check_problems: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Caps {
    persistent: bool,
    atomic_batch: bool,
    shared: bool,
    blobs: bool,
    conditional_writes: bool,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub(super) async fn info(ctx: &Ctx) -> Result<u8> {
    let backend = ctx.backend().await?;
    let store = ctx.store().await?;
    let caps = backend.images().capabilities();
    // Before anything lists the blobs (which reclaims leftovers too), so
    // that what is reclaimed is counted.
    let scratch = backend.blobs().scratch().await?;
    // Every backend a URL opens keeps blobs beside its images.
    let stats = ctx.blobs().await?.stats().await?;
    let (blobs, blob_bytes) = (Some(stats.blobs), Some(stats.bytes));
    let report = store.report();
    let last_check = imagecache_engine::lifecycle::Lifecycle::new(store.clone(), None)
        .last_check()
        .await?;
    let config_bytes = store
        .ids()
        .iter()
        .filter_map(|id| store.info(id))
        .map(|i| i.config_len)
        .sum();
    let info = Info {
        store: ctx.url.clone(),
        backend: backend.to_string(),
        capabilities: Caps {
            persistent: caps.persistent,
            atomic_batch: caps.atomic_batch,
            shared: caps.shared,
            blobs: true,
            conditional_writes: caps.conditional_writes,
        },
        images: store.len(),
        config_bytes,
        configs_read: report.configs_read,
        blobs,
        blob_bytes,
        temp_files: scratch.in_progress,
        temp_bytes: scratch.in_progress_bytes,
        temp_reclaimed: scratch.reclaimed,
        temp_reclaimed_bytes: scratch.reclaimed_bytes,
        problems: report.problems.iter().map(ToString::to_string).collect(),
        last_check: last_check.map(|(t, _)| t.to_string()),
        last_check_problems: last_check.map(|(_, n)| n),
    };
    if ctx.json() {
        return print_json(&info);
    }
    let c = &info.capabilities;
    let mut lines = vec![
        format!("Store:         {}", info.store),
        format!("Backend:       {}", info.backend),
        format!(
            "Capabilities:  persistent={} atomic_batch={} shared={} blobs={} conditional_writes={}",
            yes(c.persistent),
            yes(c.atomic_batch),
            yes(c.shared),
            yes(c.blobs),
            yes(c.conditional_writes)
        ),
        format!(
            "Images:        {} ({} of configs)",
            info.images,
            human_size(info.config_bytes)
        ),
        match (info.blobs, info.blob_bytes) {
            (Some(n), Some(b)) => format!("Blobs:         {n} ({})", human_size(b)),
            _ => "Blobs:         not supported by this backend".to_owned(),
        },
        format!(
            "Temp files:    {} being written ({}); {} left by writers that are gone removed ({})",
            info.temp_files,
            human_size(info.temp_bytes),
            info.temp_reclaimed,
            human_size(info.temp_reclaimed_bytes)
        ),
        format!("Problems:      {}", info.problems.len()),
    ];
    lines.insert(
        lines.len() - 1,
        match (&info.last_check, info.last_check_problems) {
            (Some(t), Some(n)) => format!("Last check:    {t}, {n} problem(s) (imagecache check)"),
            _ => "Last check:    never (run imagecache check to read and verify everything)".into(),
        },
    );
    lines.extend(info.problems.iter().map(|p| format!("  {p}")));
    print_lines(lines)?;
    Ok(EXIT_OK)
}

/// What `stats` reports.
#[derive(Debug, Serialize)]
struct Stats {
    images: usize,
    heads: usize,
    built_locally: usize,
    config_bytes: u64,
    blobs: Option<u64>,
    blob_bytes: Option<u64>,
    /// The blob cache's hit, miss and error counters. The library keeps
    /// them per process and does not persist them, so these count only
    /// this command's own lookups.
    hits: u64,
    misses: u64,
    errors: u64,
    /// What the libraries' metrics counted while this command ran.
    metrics: Vec<crate::recorder::Reading>,
}

pub(super) async fn stats(ctx: &Ctx) -> Result<u8> {
    let store = ctx.store().await?;
    let infos: Vec<_> = store.ids().iter().filter_map(|id| store.info(id)).collect();
    let cache = Some(ctx.blobs().await?);
    let blob_stats = match &cache {
        Some(c) => Some(c.stats().await?),
        None => None,
    };
    let stats = Stats {
        images: infos.len(),
        heads: store.heads().len(),
        built_locally: infos.iter().filter(|i| i.built_locally).count(),
        config_bytes: infos.iter().map(|i| i.config_len).sum(),
        blobs: blob_stats.as_ref().map(|s| s.blobs),
        blob_bytes: blob_stats.as_ref().map(|s| s.bytes),
        hits: blob_stats.as_ref().map_or(0, |s| s.hits),
        misses: blob_stats.as_ref().map_or(0, |s| s.misses),
        errors: blob_stats.as_ref().map_or(0, |s| s.errors),
        metrics: crate::recorder::install()
            .map(crate::recorder::Local::readings)
            .unwrap_or_default(),
    };
    if ctx.json() {
        return print_json(&stats);
    }
    print_lines([
        format!("Images:         {}", stats.images),
        format!("  without children: {}", stats.heads),
        format!("  built locally:    {}", stats.built_locally),
        format!("Config bytes:   {}", human_size(stats.config_bytes)),
        match (stats.blobs, stats.blob_bytes) {
            (Some(n), Some(b)) => format!("Blobs:          {n} ({})", human_size(b)),
            _ => "Blobs:          not supported by this backend".to_owned(),
        },
        format!(
            "Blob lookups:   {} hit(s), {} miss(es), {} error(s) (this process; the library does not persist counters)",
            stats.hits, stats.misses, stats.errors
        ),
        "Metrics of this command (--metrics prints them after any command):".to_owned(),
    ])?;
    print_lines(stats.metrics.iter().map(|r| match r.sum {
        Some(sum) => format!("  {} count={} sum={sum:.6}", r.metric, r.count),
        None => format!("  {} {}", r.metric, r.count),
    }))?;
    Ok(EXIT_OK)
}
