//! Running cases outside `cargo test`: each in its own task, with a
//! timeout, collecting a [`Report`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinError;

use crate::{Case, CaseFn, Harness, Kinds, Outcome};

/// How long one case may run before it is reported as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What happened to one case.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaseStatus {
    /// Every assertion held.
    Passed,
    /// An assertion failed, the case panicked or it ran out of time.
    Failed {
        /// The panic message or the timeout.
        reason: String,
    },
    /// The case does not apply to this backend.
    Skipped {
        /// The missing capability or hook.
        reason: String,
    },
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("passed"),
            Self::Failed { reason } => write!(f, "FAILED: {reason}"),
            Self::Skipped { reason } => write!(f, "skipped ({reason})"),
        }
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// Its group.
    pub group: &'static str,
    /// What happened.
    pub status: CaseStatus,
    /// How long it ran.
    pub duration: Duration,
}

/// The results of a run, in the order the cases ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per case that was selected.
    pub results: Vec<CaseResult>,
}

impl Report {
    fn count(&self, pick: impl Fn(&CaseStatus) -> bool) -> usize {
        self.results.iter().filter(|r| pick(&r.status)).count()
    }

    /// Number of cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|s| matches!(s, CaseStatus::Passed))
    }

    /// Number of cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, CaseStatus::Failed { .. }))
    }

    /// Number of cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|s| matches!(s, CaseStatus::Skipped { .. }))
    }

    /// Whether no case failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// The failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, CaseStatus::Failed { .. }))
    }

    /// `N passed, N failed, N skipped`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

/// A step of a run, reported to [`RunOptions::with_progress`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// A case is about to start.
    Started {
        /// The case.
        case: &'a Case,
        /// Its position among the selected cases, from 0.
        index: usize,
        /// How many cases were selected.
        total: usize,
    },
    /// A case has finished.
    Finished {
        /// Its result.
        result: &'a CaseResult,
        /// Its position among the selected cases, from 0.
        index: usize,
        /// How many cases were selected.
        total: usize,
    },
}

type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Which cases to run and how.
#[derive(Clone)]
pub struct RunOptions {
    filter: Option<String>,
    timeout: Duration,
    progress: Option<ProgressFn>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            filter: None,
            timeout: DEFAULT_TIMEOUT,
            progress: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("filter", &self.filter)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl RunOptions {
    /// Every case, [`DEFAULT_TIMEOUT`] each, no progress reports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs only cases whose `group::name` contains `filter`
    /// (`"backend::"` selects a group, `"put_then"` a case).
    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// How long one case may run before it is reported as failed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `progress` before and after every case.
    pub fn with_progress(
        mut self,
        progress: impl Fn(&Progress<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Whether the filter selects `case`.
    pub fn selects(&self, case: &Case) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| case.full_name().contains(f))
    }

    fn report(&self, progress: &Progress<'_>) {
        if let Some(p) = &self.progress {
            p(progress);
        }
    }
}

/// Runs every case whose `group::name` contains `filter` (all when `None`)
/// against backends from `harness`.
///
/// Each case runs in its own task with [`DEFAULT_TIMEOUT`]; a panic or
/// timeout becomes a [`CaseStatus::Failed`] and the run goes on. Must be
/// called within a tokio runtime.
pub async fn run_all(harness: Arc<dyn Harness>, filter: Option<&str>) -> Report {
    let mut options = RunOptions::new();
    if let Some(f) = filter {
        options = options.with_filter(f);
    }
    run_with(harness, &options).await
}

/// Runs every case [`RunOptions`] selects; see [`run_all`].
pub async fn run_with(harness: Arc<dyn Harness>, options: &RunOptions) -> Report {
    run_cases(harness, &crate::cases(), options).await
}

/// Runs the given cases, in order, as far as [`RunOptions`] selects them.
pub async fn run_cases(harness: Arc<dyn Harness>, cases: &[Case], options: &RunOptions) -> Report {
    let selected: Vec<&Case> = cases.iter().filter(|c| options.selects(c)).collect();
    let total = selected.len();
    let mut results = Vec::with_capacity(total);
    for (index, case) in selected.into_iter().enumerate() {
        options.report(&Progress::Started { case, index, total });
        let result = run_one(case, Arc::clone(&harness), options.timeout).await;
        options.report(&Progress::Finished {
            result: &result,
            index,
            total,
        });
        results.push(result);
    }
    Report { results }
}

/// A case's task, aborted when the run that awaits it goes away.
struct AbortOnDrop(tokio::task::JoinHandle<Outcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one case in its own task, turning a panic or a timeout into a failure.
pub(crate) async fn run_one(
    case: &Case,
    harness: Arc<dyn Harness>,
    timeout: Duration,
) -> CaseResult {
    let start = Instant::now();
    if let Some(reason) = missing_kind(case, harness.kinds()) {
        crate::Outcome::skipped(case.name, reason);
        return CaseResult {
            name: case.name,
            group: case.group,
            status: CaseStatus::Skipped {
                reason: reason.to_owned(),
            },
            duration: start.elapsed(),
        };
    }
    let task = match case.run {
        CaseFn::Harness(run) => tokio::spawn(run(harness)),
        CaseFn::Pure(run) => tokio::task::spawn_blocking(run),
    };
    // Dropping this future (a run interrupted by Ctrl-C) stops the case's
    // task too, instead of leaving it running against the namespace.
    let mut task = AbortOnDrop(task);
    let status = match tokio::time::timeout(timeout, &mut task.0).await {
        Ok(Ok(Outcome::Passed)) => CaseStatus::Passed,
        Ok(Ok(Outcome::Skipped { reason })) => CaseStatus::Skipped { reason },
        Ok(Err(err)) => CaseStatus::Failed {
            reason: failure_reason(err),
        },
        Err(_) => {
            // A case on the blocking pool cannot be stopped; it finishes in
            // the background and its result is dropped.
            task.0.abort();
            CaseStatus::Failed {
                reason: format!("timed out after {timeout:?}"),
            }
        }
    };
    CaseResult {
        name: case.name,
        group: case.group,
        status,
        duration: start.elapsed(),
    }
}

/// Why a case cannot run over the harness's fixtures, if it cannot: the
/// blob groups need blobs, the other groups' backend cases need images.
fn missing_kind(case: &Case, kinds: Kinds) -> Option<&'static str> {
    if !case.needs_backend() {
        return None;
    }
    match case.group {
        "blobs" | "blob_cache" if !kinds.blobs => {
            Some("the harness offers no blob backend (kind `blobs`)")
        }
        "blobs" | "blob_cache" => None,
        _ if !kinds.images => Some("the harness offers no image backend (kind `images`)"),
        _ => None,
    }
}

fn failure_reason(err: JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => panic_message(payload.as_ref()),
        Err(err) => format!("the case's task was cancelled: {err}"),
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the case panicked with a non-string payload".to_owned()
    }
}
