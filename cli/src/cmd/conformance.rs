//! `conformance`: the behaviour suite against a live backend.
//!
//! Every backend the suite asks for is a fresh namespace derived from the
//! store URL, never the store itself:
//!
//! | URL | one namespace | removed afterwards |
//! |---|---|---|
//! | `fs://DIR` | `DIR/.imagecache-conformance-<run>/<n>/` | that run directory |
//! | `redb://FILE` | `<dir of FILE>/.<name of FILE>.conformance-<run>/<n>.redb` | that run directory |
//! | `s3://BUCKET/PREFIX?…` | `PREFIX/imagecache-conformance-<run>/<n>/` | every object under the run prefix |
//! | `memory://` | a new in-memory backend | — |
//!
//! `<run>` is random, so runs against a shared bucket or directory never
//! meet each other or anyone's data. Each namespace comes from the harness
//! that the backend's own crate ships (`FsHarness`, `RedbHarness`,
//! `S3Harness`, `MemoryHarness`), with its damage hooks and its way of
//! opening a second handle; this command only picks the run's location and
//! removes it afterwards.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use imagecache_backends::fs::FsHarness;
use imagecache_backends::memory::MemoryHarness;
use imagecache_backends::redb::RedbHarness;
use imagecache_conformance::{CaseStatus, Harness, Progress, Report, RunOptions};
use serde::Serialize;

use super::{Ctx, print_json, print_lines, print_table};
use crate::cli::ConformanceArgs;
use crate::error::{CliError, EXIT_OK, Result};
use crate::progress::Step;

/// A random 16-hex-digit name for one run.
fn random_name() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// Adds `segment` to the path of an `s3://` URL, keeping its query.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
fn url_with_segment(url: &str, segment: &str) -> String {
    let (location, query) = url.split_once('?').unwrap_or((url, ""));
    let joined = format!("{}/{segment}", location.trim_end_matches('/'));
    if query.is_empty() {
        joined
    } else {
        format!("{joined}?{query}")
    }
}

/// Which kind of namespaces a run hands out, and where.
#[derive(Debug, Clone)]
enum Kind {
    Fs {
        run_dir: PathBuf,
    },
    Redb {
        run_dir: PathBuf,
    },
    Memory,
    #[cfg(feature = "s3")]
    S3 {
        run_url: String,
    },
}

impl Kind {
    fn from_url(url: &str, run: &str) -> Result<Self> {
        let usage = |reason: String| CliError::OpenStore {
            url: url.to_owned(),
            source: imagecache_core::Error::Config {
                backend: "imagecache",
                reason,
                source: None,
            },
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| usage("write SCHEME://LOCATION".to_owned()))?;
        match scheme {
            "fs" if !rest.is_empty() => Ok(Self::Fs {
                run_dir: Path::new(rest).join(format!(".imagecache-conformance-{run}")),
            }),
            "redb" if !rest.is_empty() => {
                let file = Path::new(rest);
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "store.redb".to_owned());
                let dir = file.parent().unwrap_or_else(|| Path::new("."));
                Ok(Self::Redb {
                    run_dir: dir.join(format!(".{name}.conformance-{run}")),
                })
            }
            "memory" => Ok(Self::Memory),
            #[cfg(feature = "s3")]
            "s3" => Ok(Self::S3 {
                run_url: url_with_segment(url, &format!("imagecache-conformance-{run}")),
            }),
            "fs" | "redb" => Err(usage(format!("{scheme}:// needs a path"))),
            other => Err(usage(format!(
                "unknown store URL scheme {other:?} in {url:?}; use one of {}",
                imagecache_backends::schemes()
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

impl Kind {
    /// The harness of the backend's own crate, with every namespace below
    /// this run's directory or prefix.
    fn harness(&self) -> Result<Arc<dyn Harness>> {
        Ok(match self {
            Self::Fs { run_dir } => Arc::new(FsHarness::under(run_dir)),
            Self::Redb { run_dir } => Arc::new(RedbHarness::under(run_dir)),
            Self::Memory => Arc::new(MemoryHarness),
            #[cfg(feature = "s3")]
            Self::S3 { run_url } => Arc::new(imagecache_backends::s3::S3Harness::under(
                imagecache_backends::s3::S3Config::from_url(run_url)?,
            )),
        })
    }
}

async fn clean_up(kind: &Kind) -> Result<()> {
    match kind {
        Kind::Fs { run_dir } | Kind::Redb { run_dir } => {
            match tokio::fs::remove_dir_all(run_dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Io {
                    path: run_dir.clone(),
                    action: "removing the conformance run",
                    source: e,
                }),
                _ => Ok(()),
            }
        }
        Kind::Memory => Ok(()),
        #[cfg(feature = "s3")]
        Kind::S3 { run_url } => {
            let config = imagecache_backends::s3::S3Config::from_url(run_url)?;
            let backend = imagecache_backends::s3::S3Backend::open(config).await?;
            backend.delete_prefix().await?;
            Ok(())
        }
    }
}

/// One case in the JSON report.
#[derive(Debug, Serialize)]
struct CaseOut<'a> {
    case: String,
    status: &'static str,
    reason: Option<&'a str>,
    millis: u128,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct ReportOut<'a> {
    store: &'a str,
    cases: Vec<CaseOut<'a>>,
    passed: usize,
    failed: usize,
    skipped: usize,
}

pub(super) async fn run(ctx: &Ctx, args: &ConformanceArgs) -> Result<u8> {
    let run_name = random_name();
    // The store URL as reports show it: without its query.
    let store = ctx.url.split('?').next().unwrap_or_default();
    let kind = Kind::from_url(&ctx.url, &run_name)?;
    let harness = kind.harness()?;
    let mut options = RunOptions::new().with_timeout(Duration::from_secs(args.timeout.max(1)));
    if let Some(filter) = &args.filter {
        options = options.with_filter(filter.clone());
    }
    let step = ctx.ui.step(
        format!("conformance against {store} (run {run_name})"),
        Some(
            imagecache_conformance::cases()
                .iter()
                .filter(|c| options.selects(c))
                .count() as u64,
        ),
        false,
    );
    options = with_progress(ctx, &step, options);
    let report = run_until_cancelled(ctx, Arc::clone(&harness), &options).await;
    // Every handle goes before the namespaces are removed.
    drop(harness);
    let cleaned = clean_up(&kind).await;
    let Some(report) = report else {
        step.abandon();
        cleaned?;
        return Err(CliError::Interrupted);
    };
    step.finish(&ctx.ui, report.summary_line());
    cleaned?;
    print_report(ctx, store, &report)?;
    if report.is_success() {
        Ok(EXIT_OK)
    } else {
        Err(CliError::ConformanceFailed {
            failed: report.failed(),
            store: store.to_owned(),
        })
    }
}

/// Advances the progress step per case; in line mode failures are shown
/// as they happen (the table comes at the end).
fn with_progress(ctx: &Ctx, step: &Step, options: RunOptions) -> RunOptions {
    let step = step.clone();
    let ui = ctx.ui;
    let json = ctx.json();
    options.with_progress(move |p| {
        if let Progress::Finished {
            result,
            index,
            total,
        } = p
        {
            step.inc(1);
            if !json && matches!(result.status, CaseStatus::Failed { .. }) {
                ui.line(format!(
                    "[{}/{total}] {}::{} {}",
                    index + 1,
                    result.group,
                    result.name,
                    result.status
                ));
            }
        }
    })
}

/// Runs the suite; `None` when the user interrupted it.
async fn run_until_cancelled(
    ctx: &Ctx,
    harness: Arc<dyn Harness>,
    options: &RunOptions,
) -> Option<Report> {
    let suite = imagecache_conformance::run_with(harness, options);
    let cancel = Arc::clone(&ctx.cancel);
    let stopped = async move {
        while !cancel.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = suite => Some(r),
        () = stopped => None,
    }
}

/// The report as JSON, or as a table and a summary line.
fn print_report(ctx: &Ctx, store: &str, report: &Report) -> Result<()> {
    if ctx.json() {
        print_json(&ReportOut {
            store,
            cases: report
                .results
                .iter()
                .map(|r| {
                    let (status, reason) = match &r.status {
                        CaseStatus::Passed => ("pass", None),
                        CaseStatus::Failed { reason } => ("FAIL", Some(reason.as_str())),
                        CaseStatus::Skipped { reason } => ("skipped", Some(reason.as_str())),
                        _ => ("unknown", None),
                    };
                    CaseOut {
                        case: format!("{}::{}", r.group, r.name),
                        status,
                        reason,
                        millis: r.duration.as_millis(),
                    }
                })
                .collect(),
            passed: report.passed(),
            failed: report.failed(),
            skipped: report.skipped(),
        })?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            let status = match &r.status {
                CaseStatus::Passed => "pass".to_owned(),
                CaseStatus::Failed { reason } => format!("FAIL: {}", reason.replace('\n', " ")),
                CaseStatus::Skipped { reason } => format!("skipped ({reason})"),
                _ => "unknown".to_owned(),
            };
            vec![
                format!("{}::{}", r.group, r.name),
                status,
                format!("{} ms", r.duration.as_millis()),
            ]
        })
        .collect();
    print_table(&["CASE", "RESULT", "TIME"], &rows)?;
    print_lines([report.summary_line()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_stay_inside_the_url() {
        let Kind::Fs { run_dir } = Kind::from_url("fs:///data/store", "abc").unwrap() else {
            panic!("not fs");
        };
        assert_eq!(
            run_dir,
            Path::new("/data/store/.imagecache-conformance-abc")
        );
        let Kind::Redb { run_dir } = Kind::from_url("redb:///data/x.redb", "abc").unwrap() else {
            panic!("not redb");
        };
        assert_eq!(run_dir, Path::new("/data/.x.redb.conformance-abc"));
        assert_eq!(
            url_with_segment("s3://b/p/?endpoint=http://h:1&x=y", "r"),
            "s3://b/p/r?endpoint=http://h:1&x=y"
        );
        assert_eq!(url_with_segment("s3://b", "r"), "s3://b/r");
        assert!(Kind::from_url("ftp://x", "abc").is_err());
        assert!(Kind::from_url("fs://", "abc").is_err());
    }

    #[test]
    fn run_names_differ() {
        assert_ne!(random_name(), random_name());
    }
}
