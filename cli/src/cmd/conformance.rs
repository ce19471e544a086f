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
//! meet each other or anyone's data. The damage hooks write bytes under a
//! blob or config directly where the backend allows it (files for fs, the
//! raw insert methods of redb and memory); a second handle on a namespace is
//! a new backend on the same directory (fs) or prefix (s3), and a clone for
//! memory and redb (which share their state; redb allows one open per file
//! and process).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_backends::fs::FsBackend;
use imagecache_backends::redb::RedbBackend;
use imagecache_conformance::{CaseStatus, Harness, Progress, Report, RunOptions};
use imagecache_core::{Digest, ImageId, StoreBackend};
use serde::Serialize;

use super::{Ctx, print_json, print_lines, print_table};
use crate::cli::ConformanceArgs;
use crate::error::{CliError, EXIT_OK, Result};

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

    /// Where the run's data lives, for messages.
    fn location(&self) -> String {
        match self {
            Self::Fs { run_dir } | Self::Redb { run_dir } => run_dir.display().to_string(),
            Self::Memory => "memory".to_owned(),
            #[cfg(feature = "s3")]
            Self::S3 { run_url } => run_url.split('?').next().unwrap_or_default().to_owned(),
        }
    }
}

/// The concrete handle behind a backend the harness handed out.
#[derive(Debug, Clone)]
enum Handle {
    Fs(PathBuf),
    Redb(RedbBackend),
    Memory(MemoryBackend),
    #[cfg(feature = "s3")]
    S3(String),
}

/// Fresh namespaces for the suite; see the module docs.
struct CliHarness {
    kind: Kind,
    next: AtomicUsize,
    handed: Mutex<Vec<(Arc<dyn StoreBackend>, Handle)>>,
}

impl CliHarness {
    fn lock(&self) -> MutexGuard<'_, Vec<(Arc<dyn StoreBackend>, Handle)>> {
        // The list is only pushed to and searched; a panic elsewhere leaves
        // it whole.
        self.handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hand_out(&self, backend: Arc<dyn StoreBackend>, handle: Handle) -> Arc<dyn StoreBackend> {
        self.lock().push((Arc::clone(&backend), handle));
        backend
    }

    fn find(&self, backend: &Arc<dyn StoreBackend>) -> Option<Handle> {
        self.lock()
            .iter()
            .find(|(b, _)| std::ptr::addr_eq(Arc::as_ptr(b), Arc::as_ptr(backend)))
            .map(|(_, h)| h.clone())
    }

    async fn open(&self, handle: &Handle) -> imagecache_core::Result<Arc<dyn StoreBackend>> {
        Ok(match handle {
            Handle::Fs(dir) => Arc::new(FsBackend::open(dir.clone()).await?),
            Handle::Redb(r) => Arc::new(r.clone()),
            Handle::Memory(m) => Arc::new(m.clone()),
            #[cfg(feature = "s3")]
            Handle::S3(url) => Arc::new(
                imagecache_backends::s3::S3Backend::open(
                    imagecache_backends::s3::S3Config::from_url(url)?,
                )
                .await?,
            ),
        })
    }

    async fn fresh(&self) -> imagecache_core::Result<(Arc<dyn StoreBackend>, Handle)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let handle = match &self.kind {
            Kind::Fs { run_dir } => Handle::Fs(run_dir.join(n.to_string())),
            Kind::Redb { run_dir } => {
                Handle::Redb(RedbBackend::open(run_dir.join(format!("{n}.redb"))).await?)
            }
            Kind::Memory => Handle::Memory(MemoryBackend::new()),
            #[cfg(feature = "s3")]
            Kind::S3 { run_url } => Handle::S3(url_with_segment(run_url, &n.to_string())),
        };
        Ok((self.open(&handle).await?, handle))
    }
}

/// Overwrites a file of an fs namespace, as a failing disk would.
async fn overwrite(path: PathBuf, data: Bytes) -> bool {
    tokio::task::spawn_blocking(move || path.is_file() && std::fs::write(&path, &data).is_ok())
        .await
        .unwrap_or(false)
}

#[async_trait::async_trait]
impl Harness for CliHarness {
    async fn backend(&self) -> Arc<dyn StoreBackend> {
        match self.fresh().await {
            Ok((backend, handle)) => self.hand_out(backend, handle),
            // The suite's hooks cannot fail; a panic fails the case that
            // asked, with this reason, and the run goes on.
            Err(e) => panic!(
                "cannot open a fresh backend under {}: {}",
                self.kind.location(),
                crate::error::one_line(&e)
            ),
        }
    }

    async fn reopen(&self, backend: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
        let handle = self.find(backend)?;
        match &handle {
            // redb refuses a second open of a file in one process; another
            // handle on the same database is a clone, which shares it.
            Handle::Redb(r) => {
                let again: Arc<dyn StoreBackend> = Arc::new(r.clone());
                Some(self.hand_out(again, handle.clone()))
            }
            _ => match self.open(&handle).await {
                Ok(b) => Some(self.hand_out(b, handle)),
                Err(e) => panic!("cannot reopen a backend: {}", crate::error::one_line(&e)),
            },
        }
    }

    async fn corrupt_content(
        &self,
        backend: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool {
        match self.find(backend) {
            Some(Handle::Fs(dir)) => {
                overwrite(dir.join("content/sha256").join(id.hex()), data).await
            }
            Some(Handle::Redb(r)) => r.insert_raw_content(*id, data).await.is_ok(),
            Some(Handle::Memory(m)) => {
                m.insert_raw_content(*id, data);
                true
            }
            _ => false,
        }
    }

    async fn corrupt_blob(
        &self,
        backend: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool {
        match self.find(backend) {
            Some(Handle::Fs(dir)) => {
                let path = dir
                    .join("imagecache/blobs")
                    .join(digest.algorithm().as_str())
                    .join(digest.hex());
                overwrite(path, data).await
            }
            Some(Handle::Redb(r)) => r.insert_raw_blob(*digest, data).await.is_ok(),
            Some(Handle::Memory(m)) => {
                m.insert_raw_blob(*digest, data);
                true
            }
            _ => false,
        }
    }
}

/// Removes everything a run created.
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
    let harness = Arc::new(CliHarness {
        kind: kind.clone(),
        next: AtomicUsize::new(0),
        handed: Mutex::new(Vec::new()),
    });
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
    {
        let step = step.clone();
        let ui = ctx.ui;
        let json = ctx.json();
        options = options.with_progress(move |p| {
            if let Progress::Finished {
                result,
                index,
                total,
            } = p
            {
                step.inc(1);
                // In line mode the table comes at the end; failures are
                // worth seeing as they happen.
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
        });
    }
    let suite = imagecache_conformance::run_with(harness.clone() as Arc<dyn Harness>, &options);
    let cancel = Arc::clone(&ctx.cancel);
    let stopped = async move {
        while !cancel.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let report: Option<Report> = tokio::select! {
        r = suite => Some(r),
        () = stopped => None,
    };
    // Every handle goes before the namespaces are removed.
    harness.lock().clear();
    drop(harness);
    let cleaned = clean_up(&kind).await;
    let Some(report) = report else {
        step.abandon();
        cleaned?;
        return Err(CliError::Interrupted);
    };
    step.finish(&ctx.ui, report.summary_line());
    cleaned?;

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
    } else {
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
        print_lines([report.summary_line()])?;
    }
    if report.is_success() {
        Ok(EXIT_OK)
    } else {
        Err(CliError::ConformanceFailed {
            failed: report.failed(),
            store: store.to_owned(),
        })
    }
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
