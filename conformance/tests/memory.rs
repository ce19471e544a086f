//! The whole suite over the in-memory backend, one test per case, through
//! the harness the backend crate ships (`MemoryHarness`).
//!
//! The in-memory backend cannot be reopened the way a directory or a
//! database file can; its "other handle" is a clone, which shares the same
//! state, so the cases that need a second handle run too. The damage hooks
//! write bytes below the backend's checks.

use std::sync::Arc;

use imagecache_backends::MemoryBackend;
use imagecache_backends::memory::MemoryHarness;
use imagecache_conformance::{CaseStatus, Fixture, Harness, Kinds, RunOptions};
use imagecache_core::{BlobBackend, StoreBackend};

imagecache_conformance::backend_tests!(MemoryHarness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_every_case_over_memory() {
    let cases = imagecache_conformance::cases();
    let report = imagecache_conformance::run_all(Arc::new(MemoryHarness), None).await;
    assert_eq!(report.results.len(), cases.len(), "every case ran once");
    for result in &report.results {
        assert_eq!(
            result.status,
            CaseStatus::Passed,
            "{}::{} over memory",
            result.group,
            result.name
        );
    }
    assert_eq!(
        report.summary_line(),
        format!("{} passed, 0 failed, 0 skipped", cases.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hooks_the_cases_that_need_them_are_skipped() {
    // A harness with no damage hooks and no reopen must see those cases
    // skipped, with a reason, never passed.
    struct NoHooks;
    struct Plain(MemoryBackend);

    #[async_trait::async_trait]
    impl Harness for NoHooks {
        async fn fixture(&self) -> Box<dyn Fixture> {
            Box::new(Plain(MemoryBackend::new()))
        }
    }

    #[async_trait::async_trait]
    impl Fixture for Plain {
        fn store(&self) -> Option<Arc<dyn StoreBackend>> {
            Some(Arc::new(self.0.clone()))
        }
        fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
            Some(Arc::new(self.0.clone()))
        }
        async fn reopen(&self) -> Option<Box<dyn Fixture>> {
            None
        }
    }

    let report = imagecache_conformance::run_with(Arc::new(NoHooks), &RunOptions::new()).await;
    let mut skipped: Vec<&str> = report
        .results
        .iter()
        .filter(|r| matches!(r.status, CaseStatus::Skipped { .. }))
        .map(|r| r.name)
        .collect();
    skipped.sort_unstable();
    assert_eq!(
        skipped,
        vec![
            "blob_cache_corrupt_blob_is_an_evicted_miss",
            "blob_cache_second_handle_sees_blobs",
            "blob_cache_truncated_blob_is_an_evicted_miss",
            "fs_get_invalid_data",
            "fs_walker_stop_on_error",
            "get_corrupt_is_corrupt",
            "leases_second_handle_sees_them",
            "names_second_handle_sees_them",
            "second_handle_sees_writes",
            "store_concurrent_handles_stay_consistent",
            "store_corrupt_config_is_quarantined",
            "store_foreign_entries_are_summarised_once",
            "store_open_reads_no_config",
            "store_reopen_keeps_everything",
        ]
    );
    assert_eq!(
        report.failed(),
        0,
        "{:?}",
        report.failures().collect::<Vec<_>>()
    );
}

/// A harness that offers only one kind of storage gets the other kind's
/// groups skipped, each saying why, and passes the rest.
async fn run_with_kinds(kinds: Kinds) -> imagecache_conformance::Report {
    struct OneKind(Kinds);
    struct Half(MemoryBackend, Kinds);

    #[async_trait::async_trait]
    impl Harness for OneKind {
        fn kinds(&self) -> Kinds {
            self.0
        }
        async fn fixture(&self) -> Box<dyn Fixture> {
            Box::new(Half(MemoryBackend::new(), self.0))
        }
    }

    #[async_trait::async_trait]
    impl Fixture for Half {
        fn store(&self) -> Option<Arc<dyn StoreBackend>> {
            self.1
                .images
                .then(|| Arc::new(self.0.clone()) as Arc<dyn StoreBackend>)
        }
        fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
            self.1
                .blobs
                .then(|| Arc::new(self.0.clone()) as Arc<dyn BlobBackend>)
        }
        async fn reopen(&self) -> Option<Box<dyn Fixture>> {
            Some(Box::new(Self(self.0.clone(), self.1)))
        }
    }

    imagecache_conformance::run_with(Arc::new(OneKind(kinds)), &RunOptions::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_of_one_kind_gets_the_other_kinds_groups_skipped() {
    for (kinds, skipped_groups) in [
        (Kinds::IMAGES, vec!["blob_cache", "blobs"]),
        (
            Kinds::BLOBS,
            vec!["backend", "cache", "docker", "leases", "names", "store"],
        ),
    ] {
        let report = run_with_kinds(kinds).await;
        assert_eq!(
            report.failed(),
            0,
            "{kinds:?}: {:?}",
            report.failures().collect::<Vec<_>>()
        );
        let mut groups: Vec<&str> = report
            .results
            .iter()
            .filter(|r| {
                // Damage cases skip too, for want of hooks; only the
                // skips for the missing kind count here.
                matches!(&r.status, CaseStatus::Skipped { reason } if reason.contains("(kind `"))
            })
            .map(|r| r.group)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        assert_eq!(groups, skipped_groups, "{kinds:?}: groups skipped");
        let ran = report
            .results
            .iter()
            .filter(|r| r.status == CaseStatus::Passed)
            .count();
        assert!(ran > 0, "{kinds:?}: some cases must still run");
    }
}
