//! The storage contract every backend implements.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::digest::ImageId;
use crate::error::{Error, Key, MetadataKey, Result};
use crate::lease::{Lease, LeaseId};
use crate::reference::Reference;
use crate::usage::Usage;

/// An image config ready to store: non-empty bytes and the ID they hash to.
///
/// The only way to build one is to hash the bytes ([`Content::new`]) or to
/// check them against an ID ([`Content::verify`]), so a backend can trust
/// that `id` is right.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    id: ImageId,
    data: Bytes,
}

impl Content {
    /// Hashes `data`.
    ///
    /// # Errors
    /// [`Error::EmptyData`] for empty data (Docker: `invalid empty data`).
    pub fn new(data: impl Into<Bytes>) -> Result<Self> {
        let data = data.into();
        if data.is_empty() {
            return Err(Error::EmptyData {
                key: Key::Other("image content".into()),
            });
        }
        Ok(Self {
            id: ImageId::of_config(&data),
            data,
        })
    }

    /// Checks that `data` hashes to `id`; backends use this on every read.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it does not (Docker: `failed to verify`).
    pub fn verify(id: ImageId, data: Bytes) -> Result<Self> {
        let actual = ImageId::of_config(&data);
        if actual != id || data.is_empty() {
            return Err(Error::Corrupt {
                key: Key::Image(id),
                reason: format!("{} stored bytes hash to {actual}", data.len()),
                source: None,
            });
        }
        Ok(Self { id, data })
    }

    /// The image ID.
    pub fn id(&self) -> ImageId {
        self.id
    }

    /// The exact bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The exact bytes, by value.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("id", &self.id)
            .field("len", &self.data.len())
            .finish()
    }
}

/// One change in a [`WriteBatch`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WriteOp {
    /// Store a config under its ID. Storing existing content is a no-op.
    Put(Content),
    /// Set one metadata value. The image's content must exist (stored
    /// before, or earlier in the same batch).
    SetMetadata {
        /// The image.
        id: ImageId,
        /// The key.
        key: MetadataKey,
        /// The value; may be empty.
        value: Bytes,
    },
    /// Remove one metadata value; removing a missing value is not an error.
    DeleteMetadata {
        /// The image.
        id: ImageId,
        /// The key.
        key: MetadataKey,
    },
    /// Keep a derived index record for an image, returned by
    /// [`StoreBackend::load`]. The content must exist. The record is derived
    /// data: a backend may drop it at any time, and readers rebuild it.
    SetSummary {
        /// The image.
        id: ImageId,
        /// An opaque record written by the image store.
        summary: Bytes,
    },
    /// Remove an image: its content, all its metadata, its summary and the
    /// names pointing at it. Removing a missing image is not an error.
    Delete {
        /// The image.
        id: ImageId,
    },
    /// Move an image that failed verification out of the way, keeping its
    /// bytes for inspection, and record why. It then no longer appears in
    /// [`StoreBackend::load`] except in [`Snapshot::quarantined`], and the
    /// names pointing at it are removed.
    Quarantine {
        /// The image.
        id: ImageId,
        /// Why it was set aside.
        reason: String,
    },
    /// Point a name (`busybox:latest`, `app@sha256:…`) at an image,
    /// replacing where it pointed before. The image's content must exist
    /// (stored before, or earlier in the same batch). The name is stored
    /// exactly as given; callers that want Docker's default tag apply
    /// [`Reference::with_default_tag`] first.
    SetName {
        /// The name.
        name: Reference,
        /// The image it points at.
        id: ImageId,
    },
    /// Remove a name; removing a name that is not set is not an error.
    DeleteName {
        /// The name.
        name: Reference,
    },
    /// Store a lease, replacing any lease with the same ID whole. A lease
    /// needs no image to exist: it may hold what is not stored yet.
    SetLease(Lease),
    /// Remove a lease; removing a lease that is not stored is not an error.
    DeleteLease {
        /// The lease.
        id: LeaseId,
    },
}

impl WriteOp {
    /// The image the operation touches; `None` for
    /// [`WriteOp::DeleteName`] and the lease operations, which need no
    /// image.
    pub fn id(&self) -> Option<ImageId> {
        match self {
            Self::Put(c) => Some(c.id()),
            Self::SetMetadata { id, .. }
            | Self::DeleteMetadata { id, .. }
            | Self::SetSummary { id, .. }
            | Self::Delete { id }
            | Self::Quarantine { id, .. }
            | Self::SetName { id, .. } => Some(*id),
            Self::DeleteName { .. } | Self::SetLease(_) | Self::DeleteLease { .. } => None,
        }
    }

    /// The operation's name, for errors such as a backend refusing it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Put(_) => "put",
            Self::SetMetadata { .. } => "set_metadata",
            Self::DeleteMetadata { .. } => "delete_metadata",
            Self::SetSummary { .. } => "set_summary",
            Self::Delete { .. } => "delete",
            Self::Quarantine { .. } => "quarantine",
            Self::SetName { .. } => "set_name",
            Self::DeleteName { .. } => "delete_name",
            Self::SetLease(_) => "set_lease",
            Self::DeleteLease { .. } => "delete_lease",
        }
    }
}

/// A list of changes applied together by [`StoreBackend::write`].
///
/// Backends with [`Capabilities::atomic_batch`] apply all of it or none of
/// it, even across a crash. The others apply it in order and guarantee only
/// that an image's content is durable before any metadata that names it.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a config; returns its ID.
    pub fn put(&mut self, content: Content) -> ImageId {
        let id = content.id();
        self.ops.push(WriteOp::Put(content));
        id
    }

    /// Adds a metadata write.
    pub fn set_metadata(&mut self, id: ImageId, key: MetadataKey, value: impl Into<Bytes>) {
        self.ops.push(WriteOp::SetMetadata {
            id,
            key,
            value: value.into(),
        });
    }

    /// Adds a metadata removal.
    pub fn delete_metadata(&mut self, id: ImageId, key: MetadataKey) {
        self.ops.push(WriteOp::DeleteMetadata { id, key });
    }

    /// Adds a summary record.
    pub fn set_summary(&mut self, id: ImageId, summary: impl Into<Bytes>) {
        self.ops.push(WriteOp::SetSummary {
            id,
            summary: summary.into(),
        });
    }

    /// Adds an image removal.
    pub fn delete(&mut self, id: ImageId) {
        self.ops.push(WriteOp::Delete { id });
    }

    /// Adds a quarantine.
    pub fn quarantine(&mut self, id: ImageId, reason: impl Into<String>) {
        self.ops.push(WriteOp::Quarantine {
            id,
            reason: reason.into(),
        });
    }

    /// Adds a name pointing at an image.
    pub fn set_name(&mut self, name: Reference, id: ImageId) {
        self.ops.push(WriteOp::SetName { name, id });
    }

    /// Adds a name removal.
    pub fn delete_name(&mut self, name: Reference) {
        self.ops.push(WriteOp::DeleteName { name });
    }

    /// Adds a lease, replacing one with the same ID.
    pub fn set_lease(&mut self, lease: Lease) {
        self.ops.push(WriteOp::SetLease(lease));
    }

    /// Adds a lease removal.
    pub fn delete_lease(&mut self, id: LeaseId) {
        self.ops.push(WriteOp::DeleteLease { id });
    }

    /// Adds any operation.
    pub fn push(&mut self, op: WriteOp) {
        self.ops.push(op);
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Takes the operations.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Checks a batch before any of it is applied: the one rule every backend
/// shares.
///
/// Operations are checked in order against what `exists` reports for the
/// stored images and what the operations before them leave: a
/// `SetMetadata`, `SetSummary`, `SetName` or `Quarantine` must name an
/// image whose content exists then. `exists` is asked at most once per
/// image.
///
/// # Errors
/// [`Error::NotFound`] with [`Key::Image`] for the first operation on an
/// absent image; any error of `exists`.
///
/// ```
/// use imagecache_core::{Content, Error, WriteBatch, validate_batch};
/// let content = Content::new(&b"{}"[..])?;
/// let mut batch = WriteBatch::new();
/// let id = batch.put(content);
/// batch.set_summary(id, "s");
/// // Nothing is stored yet, but the batch puts the content first.
/// validate_batch::<Error>(batch.ops(), |_| Ok(false))?;
///
/// let mut late = WriteBatch::new();
/// late.set_summary(id, "s");
/// assert!(validate_batch::<Error>(late.ops(), |_| Ok(false)).is_err());
/// # Ok::<(), Error>(())
/// ```
pub fn validate_batch<E: From<Error>>(
    ops: &[WriteOp],
    mut exists: impl FnMut(&ImageId) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E> {
    // What the batch has done to each image so far; absent means "as stored".
    let mut overlay: BTreeMap<ImageId, bool> = BTreeMap::new();
    for op in ops {
        // A name removal needs nothing to exist.
        let Some(id) = op.id() else {
            continue;
        };
        let present = match overlay.get(&id) {
            Some(present) => *present,
            None => {
                let present = exists(&id)?;
                overlay.insert(id, present);
                present
            }
        };
        let absent = || Error::NotFound {
            key: Key::Image(id),
        };
        match op {
            WriteOp::Put(_) => {
                overlay.insert(id, true);
            }
            WriteOp::Delete { .. } => {
                overlay.insert(id, false);
            }
            WriteOp::Quarantine { .. } => {
                if !present {
                    return Err(absent().into());
                }
                overlay.insert(id, false);
            }
            WriteOp::SetMetadata { .. } | WriteOp::SetSummary { .. } | WriteOp::SetName { .. } => {
                if !present {
                    return Err(absent().into());
                }
            }
            WriteOp::DeleteMetadata { .. }
            | WriteOp::DeleteName { .. }
            | WriteOp::SetLease(_)
            | WriteOp::DeleteLease { .. } => {}
        }
    }
    Ok(())
}

impl From<Vec<WriteOp>> for WriteBatch {
    fn from(ops: Vec<WriteOp>) -> Self {
        Self { ops }
    }
}

impl Extend<WriteOp> for WriteBatch {
    fn extend<T: IntoIterator<Item = WriteOp>>(&mut self, iter: T) {
        self.ops.extend(iter);
    }
}

/// One image as [`StoreBackend::load`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The image.
    pub id: ImageId,
    /// Every metadata value, sorted by key.
    pub metadata: Vec<(MetadataKey, Bytes)>,
    /// The last summary record written for it, if the backend still has it.
    pub summary: Option<Bytes>,
}

impl SnapshotEntry {
    /// The value of one metadata key.
    pub fn metadata(&self, key: &MetadataKey) -> Option<&Bytes> {
        self.metadata
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }
}

/// Something a backend set aside or could not read while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// What was set aside: an image ID, a file or object name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Everything a backend holds about images, without their configs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The images, sorted by ID.
    pub images: Vec<SnapshotEntry>,
    /// Entries set aside, now or earlier, and why.
    pub quarantined: Vec<Quarantined>,
    /// The names, each with the image it points at, sorted by name. Only
    /// names of images in [`Snapshot::images`] are listed.
    pub names: Vec<(Reference, ImageId)>,
    /// The leases, live or expired, sorted by ID.
    pub leases: Vec<Lease>,
}

impl Snapshot {
    /// The image a name points at, if the name is listed.
    pub fn name(&self, name: &Reference) -> Option<ImageId> {
        self.names
            .binary_search_by(|(n, _)| n.cmp(name))
            .ok()
            .map(|i| self.names[i].1)
    }
}

/// What a backend can do beyond the required minimum.
///
/// The conformance suite reads these to decide which cases apply, and prints
/// every case it skips with the capability that was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Data survives the process (false for the in-memory backend).
    pub persistent: bool,
    /// A [`WriteBatch`] is applied all or nothing, even across a crash.
    pub atomic_batch: bool,
    /// Several handles (processes or machines) may open the same location at once.
    pub shared: bool,
    /// The underlying store honours create-if-absent writes, and the backend uses them.
    pub conditional_writes: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const fn none() -> Self {
        Self {
            persistent: false,
            atomic_batch: false,
            shared: false,
            conditional_writes: false,
        }
    }

    /// Sets [`Capabilities::persistent`].
    pub const fn with_persistent(mut self, v: bool) -> Self {
        self.persistent = v;
        self
    }

    /// Sets [`Capabilities::atomic_batch`].
    pub const fn with_atomic_batch(mut self, v: bool) -> Self {
        self.atomic_batch = v;
        self
    }

    /// Sets [`Capabilities::shared`].
    pub const fn with_shared(mut self, v: bool) -> Self {
        self.shared = v;
        self
    }

    /// Sets [`Capabilities::conditional_writes`].
    pub const fn with_conditional_writes(mut self, v: bool) -> Self {
        self.conditional_writes = v;
        self
    }
}

/// Storage for image configs and their metadata.
///
/// Blobs (layers, manifests and their notes) have a trait of their own,
/// [`BlobBackend`](crate::BlobBackend): a backend may keep images, blobs or
/// both, and wrappers (caches, fault injectors, metrics) wrap each trait on
/// its own.
///
/// # Contract
///
/// * **Content addressed.** A config is stored under `sha256(bytes)` and read
///   back only if its bytes still hash to that ID. IDs and keys arrive
///   validated ([`ImageId`], [`MetadataKey`]), so a backend never
///   builds a path or key from unchecked text.
/// * **Not found** is [`Error::NotFound`] with the [`Key`] looked for; other
///   failures map to the canonical variants, falling back to
///   [`Error::Backend`].
/// * **Deletes are idempotent**: removing something missing is `Ok`.
/// * **Writes** go through [`StoreBackend::write`]; see [`WriteBatch`] for
///   atomicity and [`Capabilities`] for what else a backend promises.
/// * **Handles share state**: two handles on the same location see each
///   other's writes after [`StoreBackend::load`].
/// * **Names** (`busybox:latest` → image ID, Docker's `repositories.json`)
///   are written with [`WriteOp::SetName`] and [`WriteOp::DeleteName`] and
///   listed by [`StoreBackend::load`] in [`Snapshot::names`]. A name points
///   at one image; an image may have many names. Deleting or quarantining
///   an image removes its names, and a name whose image is absent (left by
///   another program, or by a crash of a backend without atomic batches) is
///   never listed.
/// * **Leases** ([`Lease`]: what a running build holds) are written with
///   [`WriteOp::SetLease`] and [`WriteOp::DeleteLease`] and listed by
///   [`StoreBackend::leases`] (and by load, in [`Snapshot::leases`]). A
///   backend stores them as given, expired or not, and never removes one
///   on its own: expiry is the reader's rule. A lease needs no image to
///   exist and is not touched when an image it holds is deleted. A damaged
///   lease record is reported by load in [`Snapshot::quarantined`] and makes
///   [`StoreBackend::leases`] fail with [`Error::Corrupt`] naming it: a list
///   silently missing a lease would let a collector remove what it holds.
///   A backend that keeps leases apart from its batch records (S3) writes a
///   batch's new leases before the rest of it and removes leases after, so
///   a batch cut short holds more than asked, never less.
///
/// # Behavior
///
/// Each bullet is a conformance case of the same name.
///
/// * `put_then_get_roundtrips` — a stored config reads back byte for byte under its ID.
/// * `put_existing_is_noop` — storing the same bytes twice keeps one copy and changes nothing.
/// * `get_missing_is_not_found` — reading an unknown ID is `NotFound` naming the image.
/// * `get_corrupt_is_corrupt` — bytes damaged in storage are `Corrupt`, never returned.
/// * `empty_content_is_refused` — empty data is refused before reaching the backend.
/// * `metadata_roundtrips` — metadata values read back per (image, key), independently.
/// * `metadata_missing_is_not_found` — an unset key is `NotFound` naming image and key.
/// * `metadata_requires_content` — metadata for an image with no content is `NotFound` and writes nothing.
/// * `metadata_in_same_batch_as_content` — content and its metadata may arrive in one batch.
/// * `delete_metadata_missing_is_ok` — removing an unset key succeeds.
/// * `delete_removes_content_and_metadata` — delete leaves no content, metadata or summary.
/// * `delete_missing_is_ok` — deleting an unknown image succeeds.
/// * `delete_leaves_others` — deleting one image leaves the others intact.
/// * `load_lists_everything` — load reports every image with its metadata and summary, sorted by ID.
/// * `load_on_empty_store` — a new store loads as empty.
/// * `failed_batch_changes_nothing` — a batch with an invalid operation is refused whole.
/// * `summary_is_returned_by_load` — the last summary written is returned; delete drops it.
/// * `quarantine_sets_aside` — a quarantined image leaves `load().images` and appears in `quarantined`.
/// * `second_handle_sees_writes` — (`shared` or `persistent`) a new handle on the same location sees earlier writes.
///
/// # Behavior of names
///
/// Each bullet is a conformance case of the `names` group.
///
/// * `names_set_then_load_lists_it` — a name set on a stored image is listed by load with that image.
/// * `names_set_existing_moves_it` — setting a name that is set already points it at the new image only.
/// * `names_delete_removes_it` — a removed name is no longer listed; the image and its other names stay.
/// * `names_delete_missing_is_ok` — removing a name that is not set succeeds.
/// * `names_require_content` — a name for an image with no content is `NotFound` and the batch writes nothing.
/// * `names_in_same_batch_as_content` — content and its names may arrive in one batch.
/// * `names_go_with_their_image` — deleting or quarantining an image removes its names, and storing it again does not bring them back.
/// * `names_second_handle_sees_them` — (`shared` or `persistent`) a new handle on the same location lists the names set before.
/// * `names_are_sorted` — load lists names sorted by their full form, however they were written.
///
/// # Behavior of leases
///
/// Each bullet is a conformance case of the `leases` group.
///
/// * `leases_set_then_list` — a stored lease is listed by `leases` and by load with every field as written.
/// * `leases_set_existing_replaces` — storing a lease under a stored ID replaces it whole (expiry, labels, resources).
/// * `leases_delete_removes_it` — a removed lease is no longer listed; the other leases stay.
/// * `leases_delete_missing_is_ok` — removing a lease that is not stored succeeds.
/// * `leases_need_no_content` — a lease may hold images and blobs that are not stored, and deleting an image it holds leaves the lease as it was.
/// * `leases_expired_are_listed` — an expired lease is listed as stored until it is removed.
/// * `leases_with_images_in_one_batch` — leases, content and names may arrive in one batch; a batch refused for another operation stores no lease.
/// * `leases_second_handle_sees_them` — (`shared` or `persistent`) a new handle on the same location lists the leases stored before.
/// * `leases_are_sorted` — leases are listed sorted by ID, however they were written.
#[async_trait::async_trait]
pub trait StoreBackend: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// What this backend supports beyond the minimum.
    fn capabilities(&self) -> Capabilities;

    /// Whether this backend already records spans and metrics for its
    /// calls ([`Instrumented`](crate::instrument::Instrumented) says yes),
    /// so that it is not wrapped twice. Other backends keep the default.
    fn is_instrumented(&self) -> bool {
        false
    }

    /// Applies a batch of changes.
    ///
    /// Every operation is validated before any is applied: a `SetMetadata`,
    /// `SetSummary`, `SetName` or `Quarantine` for an image with no content
    /// (stored or earlier in the batch) fails the whole batch with
    /// [`Error::NotFound`], and nothing is written.
    ///
    /// # Errors
    /// [`Error::NotFound`] as above; [`Error::Backend`] on storage failures.
    async fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Reads a config and verifies that it hashes to `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent, [`Error::Corrupt`] when the stored
    /// bytes no longer match.
    async fn get(&self, id: &ImageId) -> Result<Bytes>;

    /// Reads one metadata value.
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Key::Image`] when the image is absent, or
    /// with [`Key::Metadata`] when the key is unset.
    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes>;

    /// Lists every image with its metadata and summary, and every name,
    /// without reading configs.
    ///
    /// This is how a store opens; it must cost a listing plus reads of what
    /// the backend cannot vouch for, never a read of every config.
    async fn load(&self) -> Result<Snapshot>;

    /// Lists every stored lease, live or expired, sorted by ID, read fresh
    /// from storage (so a lease written by another handle or process is
    /// seen).
    ///
    /// The default reads [`StoreBackend::load`]; backends override it with
    /// a read of the leases alone.
    async fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self.load().await?.leases)
    }

    /// The space the backend's images, names and leases occupy, in real
    /// bytes ([`Usage`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] from the default, for backends that cannot
    /// measure it; storage failures.
    async fn usage(&self) -> Result<Usage> {
        Err(Error::Unsupported {
            operation: "usage",
            backend: "this",
        })
    }

    /// Gives the space that deletes freed back to the file system, where
    /// the backend holds on to it (a database file's free pages), and
    /// reports the size before and after. `None` (the default) when the
    /// backend has nothing to compact.
    ///
    /// # Errors
    /// Storage failures; a compaction that cannot run now (a read in
    /// progress) is a retryable [`Error::Backend`].
    async fn compact(&self) -> Result<Option<Compaction>> {
        Ok(None)
    }
}

/// What [`StoreBackend::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compaction {
    /// Bytes the backend's storage took before.
    pub before: u64,
    /// Bytes it takes after.
    pub after: u64,
}

/// A backend behind a pointer.
pub type DynStoreBackend = dyn StoreBackend;

macro_rules! forward_backend {
    ($ptr:ident) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: StoreBackend + ?Sized> StoreBackend for $ptr<T> {
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn is_instrumented(&self) -> bool {
                (**self).is_instrumented()
            }
            async fn write(&self, batch: WriteBatch) -> Result<()> {
                (**self).write(batch).await
            }
            async fn get(&self, id: &ImageId) -> Result<Bytes> {
                (**self).get(id).await
            }
            async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
                (**self).get_metadata(id, key).await
            }
            async fn load(&self) -> Result<Snapshot> {
                (**self).load().await
            }
            async fn leases(&self) -> Result<Vec<Lease>> {
                (**self).leases().await
            }
            async fn usage(&self) -> Result<Usage> {
                (**self).usage().await
            }
            async fn compact(&self) -> Result<Option<Compaction>> {
                (**self).compact().await
            }
        }
    };
}

forward_backend!(Arc);
forward_backend!(Box);

/// Conveniences over [`StoreBackend`], for every backend.
#[async_trait::async_trait]
pub trait StoreBackendExt: StoreBackend {
    /// Stores one config; returns its ID.
    ///
    /// # Errors
    /// [`Error::EmptyData`] for empty data; backend errors.
    async fn put(&self, data: Bytes) -> Result<ImageId> {
        let content = Content::new(data)?;
        let id = content.id();
        self.write(WriteBatch::from(vec![WriteOp::Put(content)]))
            .await?;
        Ok(id)
    }

    /// Sets one metadata value.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the image has no content.
    async fn set_metadata(&self, id: &ImageId, key: &MetadataKey, value: Bytes) -> Result<()> {
        self.write(WriteBatch::from(vec![WriteOp::SetMetadata {
            id: *id,
            key: key.clone(),
            value,
        }]))
        .await
    }

    /// Removes one metadata value.
    async fn delete_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<()> {
        self.write(WriteBatch::from(vec![WriteOp::DeleteMetadata {
            id: *id,
            key: key.clone(),
        }]))
        .await
    }

    /// Removes an image and its names.
    async fn delete(&self, id: &ImageId) -> Result<()> {
        self.write(WriteBatch::from(vec![WriteOp::Delete { id: *id }]))
            .await
    }

    /// Points a name at an image.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the image has no content.
    async fn set_name(&self, name: &Reference, id: &ImageId) -> Result<()> {
        self.write(WriteBatch::from(vec![WriteOp::SetName {
            name: name.clone(),
            id: *id,
        }]))
        .await
    }

    /// Stores a lease, replacing one with the same ID.
    ///
    /// # Errors
    /// Backend errors.
    async fn set_lease(&self, lease: Lease) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.set_lease(lease);
        self.write(batch).await
    }

    /// Removes a lease; a lease that is not stored is not an error.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete_lease(&self, id: &LeaseId) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete_lease(id.clone());
        self.write(batch).await
    }

    /// Removes a name; a name that is not set is not an error.
    async fn delete_name(&self, name: &Reference) -> Result<()> {
        self.write(WriteBatch::from(vec![WriteOp::DeleteName {
            name: name.clone(),
        }]))
        .await
    }
}

impl<T: StoreBackend + ?Sized> StoreBackendExt for T {}
