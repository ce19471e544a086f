//! The whole suite over the in-memory backend, one test per case.
//!
//! The in-memory backend cannot be reopened the way a directory or a
//! database file can; its "other handle" is a clone, which shares the same
//! state, so [`MemoryHarness::reopen`] returns a clone and the cases that
//! need a second handle run too. The damage hooks use the backend's
//! `insert_raw_*` methods, which write bytes without any check.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_conformance::{CaseStatus, Harness, RunOptions};
use imagecache_core::{Digest, ImageId, StoreBackend};

/// Hands out fresh in-memory backends and remembers them, so the damage
/// hooks can reach the concrete backend behind an `Arc<dyn StoreBackend>`.
#[derive(Default)]
struct MemoryHarness {
    handed_out: Mutex<Vec<(Arc<dyn StoreBackend>, MemoryBackend)>>,
}

impl MemoryHarness {
    fn hand_out(&self, backend: MemoryBackend) -> Arc<dyn StoreBackend> {
        let shared: Arc<dyn StoreBackend> = Arc::new(backend.clone());
        self.lock().push((Arc::clone(&shared), backend));
        shared
    }

    fn find(&self, backend: &Arc<dyn StoreBackend>) -> Option<MemoryBackend> {
        self.lock()
            .iter()
            .find(|(handed, _)| std::ptr::addr_eq(Arc::as_ptr(handed), Arc::as_ptr(backend)))
            .map(|(_, concrete)| concrete.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<dyn StoreBackend>, MemoryBackend)>> {
        self.handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Harness for MemoryHarness {
    async fn backend(&self) -> Arc<dyn StoreBackend> {
        self.hand_out(MemoryBackend::new())
    }

    async fn reopen(&self, backend: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
        let concrete = self.find(backend)?;
        Some(self.hand_out(concrete))
    }

    async fn corrupt_content(
        &self,
        backend: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool {
        match self.find(backend) {
            Some(concrete) => {
                concrete.insert_raw_content(*id, data);
                true
            }
            None => false,
        }
    }

    async fn corrupt_blob(
        &self,
        backend: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool {
        match self.find(backend) {
            Some(concrete) => {
                concrete.insert_raw_blob(*digest, data);
                true
            }
            None => false,
        }
    }
}

imagecache_conformance::backend_tests!(MemoryHarness::default());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_every_case_over_memory() {
    let cases = imagecache_conformance::cases();
    let report = imagecache_conformance::run_all(Arc::new(MemoryHarness::default()), None).await;
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

    #[async_trait::async_trait]
    impl Harness for NoHooks {
        async fn backend(&self) -> Arc<dyn StoreBackend> {
            Arc::new(MemoryBackend::new())
        }
        async fn reopen(&self, _: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>> {
            None
        }
        async fn corrupt_content(&self, _: &Arc<dyn StoreBackend>, _: &ImageId, _: Bytes) -> bool {
            false
        }
        async fn corrupt_blob(&self, _: &Arc<dyn StoreBackend>, _: &Digest, _: Bytes) -> bool {
            false
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
