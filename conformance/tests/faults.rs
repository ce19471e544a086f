//! The suite catches broken backends: a wrapper around the in-memory backend
//! breaks one rule of the contract at a time, and the cases about that rule
//! must fail while the run goes on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use imagecache_backends::MemoryBackend;
use imagecache_conformance::{CaseStatus, Fixture, Harness, Kinds, Report, RunOptions};
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Digest, Error, ImageId,
    Key, LeaseResource, MetadataKey, Reference, Result, Snapshot, StoreBackend, WriteBatch,
    WriteOp,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `Delete` operations are silently dropped.
    DropsDeletes,
    /// Batches are applied one operation at a time, so a late failure
    /// leaves the earlier operations applied.
    NotAtomic,
    /// `load` lists images in reverse order.
    UnsortedLoad,
    /// A blob body that fails still leaves what was received stored.
    KeepsFailedBlobs,
    /// Re-storing a config wipes its metadata.
    WipesOnReput,
    /// A missing image is reported without naming it.
    VagueNotFound,
    /// The backend keeps no blobs at all: it offers no blob backend.
    NoBlobs,
    /// Deleting an image leaves its names behind; they are listed again
    /// once the image is stored again.
    KeepsNamesOfDeleted,
    /// `load` lists names in reverse order.
    UnsortedNames,
    /// `SetLease` operations are silently dropped.
    DropsLeases,
    /// Leases are listed in reverse order, by `load` and by `leases`.
    UnsortedLeases,
    /// Deleting an image removes the leases that hold it.
    DeletesHoldingLeases,
}

#[derive(Debug, Clone)]
struct Faulty {
    inner: MemoryBackend,
    fault: Fault,
    /// Names a delete should have removed, for `KeepsNamesOfDeleted`.
    stale_names: Arc<Mutex<BTreeMap<Reference, ImageId>>>,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty({:?})", self.fault)
    }
}

#[async_trait]
impl StoreBackend for Faulty {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        match self.fault {
            Fault::DropsDeletes => {
                let ops: Vec<WriteOp> = batch
                    .into_ops()
                    .into_iter()
                    .filter(|op| !matches!(op, WriteOp::Delete { .. }))
                    .collect();
                self.inner.write(WriteBatch::from(ops)).await
            }
            Fault::NotAtomic => {
                for op in batch.into_ops() {
                    self.inner.write(WriteBatch::from(vec![op])).await?;
                }
                Ok(())
            }
            Fault::KeepsNamesOfDeleted => {
                let deleted: Vec<ImageId> = batch
                    .ops()
                    .iter()
                    .filter_map(|op| match op {
                        WriteOp::Delete { id } => Some(*id),
                        _ => None,
                    })
                    .collect();
                if !deleted.is_empty() {
                    let names = self.inner.load().await?.names;
                    let mut stale = self.stale_names.lock().unwrap_or_else(|e| e.into_inner());
                    stale.extend(names.into_iter().filter(|(_, id)| deleted.contains(id)));
                }
                self.inner.write(batch).await
            }
            Fault::DropsLeases => {
                let ops: Vec<WriteOp> = batch
                    .into_ops()
                    .into_iter()
                    .filter(|op| !matches!(op, WriteOp::SetLease(_)))
                    .collect();
                self.inner.write(WriteBatch::from(ops)).await
            }
            Fault::DeletesHoldingLeases => {
                let leases = self.inner.leases().await?;
                let mut ops = Vec::new();
                for op in batch.into_ops() {
                    if let WriteOp::Delete { id } = &op {
                        let held = LeaseResource::Image(*id);
                        ops.extend(
                            leases
                                .iter()
                                .filter(|l| l.resources.contains(&held))
                                .map(|l| WriteOp::DeleteLease { id: l.id.clone() }),
                        );
                    }
                    ops.push(op);
                }
                self.inner.write(WriteBatch::from(ops)).await
            }
            Fault::WipesOnReput => {
                let mut ops = Vec::new();
                for op in batch.into_ops() {
                    if let WriteOp::Put(c) = &op
                        && self.inner.get(&c.id()).await.is_ok()
                    {
                        ops.push(WriteOp::Delete { id: c.id() });
                    }
                    ops.push(op);
                }
                self.inner.write(WriteBatch::from(ops)).await
            }
            _ => self.inner.write(batch).await,
        }
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        match self.inner.get(id).await {
            Err(Error::NotFound { .. }) if self.fault == Fault::VagueNotFound => {
                Err(Error::NotFound {
                    key: Key::Other("something".into()),
                })
            }
            other => other,
        }
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        self.inner.get_metadata(id, key).await
    }

    async fn load(&self) -> Result<Snapshot> {
        let mut snapshot = self.inner.load().await?;
        match self.fault {
            Fault::UnsortedLoad => snapshot.images.reverse(),
            Fault::UnsortedNames => snapshot.names.reverse(),
            Fault::UnsortedLeases => snapshot.leases.reverse(),
            Fault::KeepsNamesOfDeleted => {
                let stale = self.stale_names.lock().unwrap_or_else(|e| e.into_inner());
                for (name, id) in stale.iter() {
                    let present = snapshot.images.iter().any(|e| e.id == *id);
                    if present && snapshot.name(name).is_none() {
                        snapshot.names.push((name.clone(), *id));
                    }
                }
                snapshot.names.sort();
            }
            _ => {}
        }
        Ok(snapshot)
    }
}

#[async_trait]
impl BlobBackend for Faulty {
    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        if self.fault != Fault::KeepsFailedBlobs {
            return self.inner.put_blob(digest, body).await;
        }
        let mut received = BytesMut::new();
        let mut body = body;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) => {
                    let partial = received.freeze();
                    let stream: ByteStream =
                        Box::pin(futures::stream::once(async move { Ok(partial) }));
                    self.inner.put_blob(digest, stream).await?;
                    return Err(err);
                }
            }
        }
        let whole = received.freeze();
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(whole) }));
        self.inner.put_blob(digest, stream).await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        self.inner.get_blob(digest).await
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        self.inner.head_blob(digest).await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.inner.delete_blob(digest).await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.inner.list_blobs().await
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        self.inner.set_blob_notes(digest, notes).await
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        self.inner.blob_notes(digest).await
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        self.inner.get_blob_note(digest, key).await
    }
}

struct FaultyHarness(Fault);

#[async_trait]
impl Harness for FaultyHarness {
    fn kinds(&self) -> Kinds {
        if self.0 == Fault::NoBlobs {
            Kinds::IMAGES
        } else {
            Kinds::BOTH
        }
    }

    async fn fixture(&self) -> Box<dyn Fixture> {
        Box::new(Faulty {
            inner: MemoryBackend::new(),
            fault: self.0,
            stale_names: Arc::default(),
        })
    }
}

/// The faulty backend is its own fixture: no second handle, no damage hooks.
#[async_trait]
impl Fixture for Faulty {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.clone()))
    }

    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        (self.fault != Fault::NoBlobs).then(|| Arc::new(self.clone()) as Arc<dyn BlobBackend>)
    }

    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        None
    }
}

async fn run(fault: Fault) -> Report {
    imagecache_conformance::run_with(Arc::new(FaultyHarness(fault)), &RunOptions::new()).await
}

fn failed(report: &Report) -> Vec<&'static str> {
    let mut names: Vec<&str> = report.failures().map(|r| r.name).collect();
    names.sort_unstable();
    names
}

#[track_caller]
fn assert_caught(report: &Report, cases: &[&str]) {
    let failed = failed(report);
    for case in cases {
        assert!(
            failed.contains(case),
            "{case} should catch the fault; failed: {failed:?}"
        );
    }
    assert_eq!(
        report.results.len(),
        imagecache_conformance::cases().len(),
        "the run must go on after failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_deletes_are_caught() {
    let report = run(Fault::DropsDeletes).await;
    assert_caught(
        &report,
        &[
            "delete_removes_content_and_metadata",
            "delete_leaves_others",
            "summary_is_returned_by_load",
            "fs_delete",
            "names_go_with_their_image",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_atomic_batches_are_caught() {
    let report = run(Fault::NotAtomic).await;
    assert_caught(
        &report,
        &[
            "failed_batch_changes_nothing",
            "fs_invalid_set",
            "names_require_content",
            "leases_with_images_in_one_batch",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_load_is_caught() {
    let report = run(Fault::UnsortedLoad).await;
    assert_caught(&report, &["load_lists_everything", "fs_walker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_kept_after_delete_are_caught() {
    let report = run(Fault::KeepsNamesOfDeleted).await;
    assert_caught(&report, &["names_go_with_their_image"]);
    assert!(
        failed(&report).iter().all(|c| c.starts_with("names_")),
        "{:?}",
        failed(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_names_are_caught() {
    let report = run(Fault::UnsortedNames).await;
    assert_caught(
        &report,
        &["names_are_sorted", "names_set_then_load_lists_it"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_leases_are_caught() {
    let report = run(Fault::DropsLeases).await;
    assert_caught(
        &report,
        &[
            "leases_set_then_list",
            "leases_set_existing_replaces",
            "leases_expired_are_listed",
            "leases_with_images_in_one_batch",
            "leases_are_sorted",
        ],
    );
    assert!(
        failed(&report).iter().all(|c| c.starts_with("leases_")),
        "{:?}",
        failed(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_leases_are_caught() {
    let report = run(Fault::UnsortedLeases).await;
    assert_caught(&report, &["leases_are_sorted", "leases_set_then_list"]);
    assert!(
        failed(&report).iter().all(|c| c.starts_with("leases_")),
        "{:?}",
        failed(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_removed_with_their_image_are_caught() {
    let report = run(Fault::DeletesHoldingLeases).await;
    assert_eq!(
        failed(&report),
        vec!["leases_need_no_content"],
        "only the case about deletes of held images may notice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_blobs_are_caught() {
    let report = run(Fault::KeepsFailedBlobs).await;
    assert_caught(&report, &["blob_failed_stream_stores_nothing"]);
    // Only blob cases may notice: image and store cases never touch blobs.
    assert!(
        failed(&report).iter().all(|c| c.starts_with("blob_")),
        "{:?}",
        failed(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lost_on_reput_is_caught() {
    let report = run(Fault::WipesOnReput).await;
    assert_caught(&report, &["put_existing_is_noop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_without_the_key_is_caught() {
    let report = run(Fault::VagueNotFound).await;
    assert_caught(
        &report,
        &["get_missing_is_not_found", "fs_get_unset_key", "fs_delete"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_cases_are_skipped_without_the_capability() {
    let report = run(Fault::NoBlobs).await;
    let skipped: Vec<(&str, &str)> = report
        .results
        .iter()
        .filter_map(|r| match &r.status {
            CaseStatus::Skipped { reason } => Some((r.name, reason.as_str())),
            _ => None,
        })
        .collect();
    for (name, reason) in &skipped {
        assert!(
            name.starts_with("blob_")
                || [
                    "get_corrupt_is_corrupt",
                    "second_handle_sees_writes",
                    "names_second_handle_sees_them",
                    "leases_second_handle_sees_them",
                ]
                .contains(name)
                || name.starts_with("fs_")
                || reason.starts_with("harness cannot"),
            "{name} skipped unexpectedly ({reason})"
        );
    }
    let blob_skips: Vec<&str> = skipped
        .iter()
        .filter(|(n, _)| n.starts_with("blob_"))
        .map(|(n, r)| {
            assert!(
                r.contains("blobs"),
                "{n}: the reason must name the capability: {r}"
            );
            *n
        })
        .collect();
    let expected = imagecache_conformance::cases()
        .iter()
        .filter(|c| c.name.starts_with("blob_"))
        .count();
    assert_eq!(blob_skips.len(), expected, "{blob_skips:?}");
    assert_eq!(report.failed(), 0, "{:?}", failed(&report));
}
