//! The `backend` group: the [`StoreBackend`] contract, one case per bullet
//! of its `# Behavior` list, plus a concurrency case.
//!
//! Every case takes a fresh backend from the [`Harness`], so cases never
//! share keys and never need to wipe anything. Optional behaviour is gated by
//! [`StoreBackend::capabilities`] or by the harness hooks, and a case that
//! does not apply says so through [`Outcome::skipped`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{
    BlobBackendExt as _, Content, Digest, Error, ImageId, Key, MetadataKey, Snapshot,
    SnapshotEntry, StoreBackend, StoreBackendExt as _, WriteBatch, WriteOp,
};

use crate::check::{
    Must as _, assert_err, assert_text, config, content, fresh_seed, id_of, independent_sha256_hex,
    key, pseudo_random_bytes,
};
use crate::{Harness, Outcome};

mod content;
mod delete;
mod handles;
mod load;
mod metadata;

pub use content::*;
pub use delete::*;
pub use handles::*;
pub use load::*;
pub use metadata::*;

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) backend [
            put_then_get_roundtrips,
            put_existing_is_noop,
            get_missing_is_not_found,
            get_corrupt_is_corrupt,
            empty_content_is_refused,
            metadata_roundtrips,
            metadata_missing_is_not_found,
            metadata_requires_content,
            metadata_in_same_batch_as_content,
            delete_metadata_missing_is_ok,
            delete_removes_content_and_metadata,
            delete_missing_is_ok,
            delete_leaves_others,
            load_lists_everything,
            load_on_empty_store,
            failed_batch_changes_nothing,
            summary_is_returned_by_load,
            quarantine_sets_aside,
            second_handle_sees_writes,
            concurrent_writers_keep_every_write,
        ] }
    };
}

/// Every case of the group, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__backend_cases!(__case_registry!());

type Backend = Arc<dyn StoreBackend>;

/// Applies a batch the case expects to succeed.
async fn write(b: &Backend, ops: Vec<WriteOp>, what: &str) {
    b.write(WriteBatch::from(ops)).await.must(what);
}

/// Stores `config(tag)` and returns its ID.
async fn put_tag(b: &Backend, tag: &str) -> ImageId {
    let id = b
        .put(config(tag))
        .await
        .must(format_args!("put of config {tag:?}"));
    assert_eq!(
        id,
        id_of(tag),
        "put of config {tag:?} returned the wrong ID"
    );
    id
}

fn set_meta(id: ImageId, k: &MetadataKey, value: impl Into<Bytes>) -> WriteOp {
    WriteOp::SetMetadata {
        id,
        key: k.clone(),
        value: value.into(),
    }
}

fn set_summary(id: ImageId, summary: impl Into<Bytes>) -> WriteOp {
    WriteOp::SetSummary {
        id,
        summary: summary.into(),
    }
}

async fn load(b: &Backend, what: &str) -> Snapshot {
    b.load().await.must(format_args!("load {what}"))
}

fn ids(snapshot: &Snapshot) -> Vec<ImageId> {
    snapshot.images.iter().map(|e| e.id).collect()
}

fn entry<'a>(snapshot: &'a Snapshot, id: &ImageId) -> &'a SnapshotEntry {
    snapshot
        .images
        .iter()
        .find(|e| e.id == *id)
        .must(format_args!("load should report image {id}"))
}

/// Fails unless the image's metadata is exactly `expected`, sorted by key.
#[track_caller]
fn assert_metadata(entry: &SnapshotEntry, expected: &BTreeMap<MetadataKey, Bytes>) {
    let expected: Vec<(MetadataKey, Bytes)> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        entry.metadata, expected,
        "metadata of image {} as reported by load",
        entry.id
    );
}

fn parent_value(id: &ImageId) -> Bytes {
    Bytes::from(id.to_string())
}
