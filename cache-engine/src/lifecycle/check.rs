//! A full check (fsck): every config, metadata record, lease, blob and note
//! read and verified, every problem reported with its key.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use imagecache_core::{Lease, LeaseId, StoreBackendExt as _, Timestamp};

use super::{Lifecycle, Result};

/// One problem a check found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CheckProblem {
    /// What it is about: `image sha256:…`, `blob sha256:…`, a lease, a file.
    pub key: String,
    /// What is wrong, and what was done about it.
    pub problem: String,
}

/// What [`Lifecycle::check`] verified and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// Configs read and verified.
    pub images: u64,
    /// Blobs read and verified.
    pub blobs: u64,
    /// Bytes of blobs read.
    pub blob_bytes: u64,
    /// Lease records read.
    pub leases: u64,
    /// Every problem, with its key.
    pub problems: Vec<CheckProblem>,
    /// When the check started.
    pub started: Option<Timestamp>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The lease that records the last full check. It holds nothing; its
/// labels say when the check ran and how many problems it found.
pub const LAST_CHECK_LEASE: &str = "imagecache.last-check";

/// The label of [`LAST_CHECK_LEASE`] holding the check's start time.
const CHECKED_AT: &str = "imagecache.checked-at";
/// The label holding the number of problems found.
const PROBLEMS: &str = "imagecache.problems";

impl Lifecycle {
    /// Reads and verifies everything the store and its blob cache hold, as
    /// `cacache verify` does: every config against its ID (from the
    /// backend, not from memory), every metadata record, names and lease
    /// records, every blob's bytes against its digest (a damaged blob is
    /// evicted, as every read does), and every note that names another
    /// blob. Reports every problem with its key and records when it ran
    /// ([`Lifecycle::last_check`]).
    ///
    /// # Errors
    /// Backend failures that stop the check itself (a listing that
    /// fails); damage is reported, not returned.
    pub async fn check(&self) -> Result<CheckReport> {
        let started = Instant::now();
        let mut report = CheckReport {
            started: Some(Timestamp::now_utc()),
            ..CheckReport::default()
        };
        let open = self.store.refresh().await?;
        for p in open.problems {
            report.problems.push(CheckProblem {
                key: "store".into(),
                problem: p.to_string(),
            });
        }
        for id in self.store.ids() {
            report.images += 1;
            if let Err(e) = self.store.backend().get(&id).await {
                report.problems.push(CheckProblem {
                    key: format!("image {id}"),
                    problem: imagecache_core::error_text(&e),
                });
            }
        }
        match self.store.leases().await {
            Ok(leases) => report.leases = leases.len() as u64,
            Err(e) => report.problems.push(CheckProblem {
                key: "leases".into(),
                problem: imagecache_core::error_text(&e),
            }),
        }
        self.check_blobs(&mut report).await?;
        report.elapsed = started.elapsed();
        self.record_check(&report).await;
        Ok(report)
    }

    async fn check_blobs(&self, report: &mut CheckReport) -> Result<()> {
        let Some(cache) = &self.blobs else {
            return Ok(());
        };
        let catalog = cache.catalog().await?;
        let cached: HashSet<_> = catalog.iter().map(|e| e.info.digest).collect();
        for entry in &catalog {
            let digest = entry.info.digest;
            report.blobs += 1;
            report.blob_bytes += entry.info.size;
            let mut sink = tokio::io::sink();
            match cache.copy_to(&digest, &mut sink).await {
                Ok(Some(_)) => {}
                Ok(None) => report.problems.push(CheckProblem {
                    key: format!("blob {digest}"),
                    problem: "its bytes do not match its digest or size; evicted".into(),
                }),
                Err(e) => report.problems.push(CheckProblem {
                    key: format!("blob {digest}"),
                    problem: e.to_string(),
                }),
            }
            for link in &entry.links {
                if !cached.contains(link) {
                    report.problems.push(CheckProblem {
                        key: format!("blob {digest}"),
                        problem: format!(
                            "a note names {link} as its other copy, which is not cached"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records the check as [`LAST_CHECK_LEASE`]; a failure to record is
    /// logged, since the check itself is done.
    async fn record_check(&self, report: &CheckReport) {
        let Ok(id) = LeaseId::new(LAST_CHECK_LEASE) else {
            return;
        };
        // Holds nothing, so it never keeps anything from a collection; it
        // lives long enough never to be collected as expired.
        let mut lease = Lease::new(id, Duration::from_secs(100 * 365 * 24 * 3600));
        let at = report.started.unwrap_or_else(Timestamp::now_utc);
        lease.labels.insert(CHECKED_AT.into(), at.to_string());
        lease
            .labels
            .insert(PROBLEMS.into(), report.problems.len().to_string());
        if let Err(e) = self.store.backend().set_lease(lease).await {
            tracing::warn!(error = %e, "cannot record the check");
        }
    }

    /// When the last full [check](Lifecycle::check) ran and how many
    /// problems it found, if one ran.
    ///
    /// # Errors
    /// Backend failures reading the leases.
    pub async fn last_check(&self) -> Result<Option<(Timestamp, usize)>> {
        let leases = self.store.leases().await?;
        Ok(leases
            .iter()
            .find(|l| l.id.as_str() == LAST_CHECK_LEASE)
            .and_then(|l| {
                let at = Timestamp::parse_rfc3339(l.labels.get(CHECKED_AT)?).ok()?;
                let problems = l.labels.get(PROBLEMS)?.parse().ok()?;
                Some((at, problems))
            }))
    }
}
