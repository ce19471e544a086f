//! Disk usage of the database file, table by table, and its compaction.
//!
//! redb reports, per table, the bytes of the pages its B-tree occupies:
//! keys and values, branch and leaf headers, and the unused tail of each
//! page. Those are the table's share of the file. What no table holds —
//! free pages, redb's own bookkeeping (the table directory, the allocator
//! state, the header) — is the rest of the file, reported as
//! [`UsageKind::Overhead`]; [`RedbBackend::compact`] gives the free pages
//! back to the file system.

use imagecache_core::{Scratch, Usage, UsageKind};
use redb::{ReadableTable as _, ReadableTableMetadata as _, TableHandle as _};

use super::blobs::{BLOB_CHUNKS, BLOB_NOTES, BLOB_TIMES, BLOBS, PENDING_UPLOADS};
use super::images::{BLOCKS, CONTENT, NAMES, QUARANTINE};
use super::index::{self, RUNS};
use super::leases::LEASES;
use super::{Error, Inner, RedbBackend};

/// The two halves of the file, as the two usage calls report them. Their
/// parts add up to the file's size; neither claims it as its total, since
/// callers show each half on its own.
#[derive(Debug, Default)]
pub(super) struct Measured {
    /// Image tables, and the rest of the file as overhead.
    pub(super) images: Usage,
    /// Blob tables only.
    pub(super) blobs: Usage,
}

/// Which call reports a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Images,
    Blobs,
}

/// Where a table's pages are reported. Tables this version does not know
/// (a later version's) count as the index of the image half.
fn part_of(table: &str) -> (Half, UsageKind) {
    let known = [
        (CONTENT.name(), Half::Images, UsageKind::Configs),
        (BLOCKS.name(), Half::Images, UsageKind::Metadata),
        (NAMES.name(), Half::Images, UsageKind::Names),
        (QUARANTINE.name(), Half::Images, UsageKind::Overhead),
        (BLOBS.name(), Half::Blobs, UsageKind::Blobs),
        (BLOB_CHUNKS.name(), Half::Blobs, UsageKind::Blobs),
        (BLOB_TIMES.name(), Half::Blobs, UsageKind::Blobs),
        (BLOB_NOTES.name(), Half::Blobs, UsageKind::Notes),
        (PENDING_UPLOADS.name(), Half::Blobs, UsageKind::Temp),
        (LEASES.name(), Half::Images, UsageKind::Leases),
    ];
    match known.iter().find(|(name, ..)| *name == table) {
        Some(&(_, half, kind)) => (half, kind),
        None => (Half::Images, UsageKind::Index),
    }
}

/// The items a table's part counts: images for configs and records, one
/// per entry for blobs, notes, names, leases, uploads and quarantined
/// images, none
/// for the rest (chunks, index runs, the layout version).
fn items(table: &str, entries: u64, images: u64) -> u64 {
    if table == CONTENT.name() || table == BLOCKS.name() {
        images
    } else if [
        BLOBS.name(),
        BLOB_NOTES.name(),
        NAMES.name(),
        PENDING_UPLOADS.name(),
        QUARANTINE.name(),
        LEASES.name(),
    ]
    .contains(&table)
    {
        entries
    } else {
        0
    }
}

impl Inner {
    /// The file's size in bytes.
    fn file_len(&self) -> Result<u64, Error> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| Error::Inspect {
                path: self.path.clone(),
                source,
            })
    }

    /// Measures every table in one read transaction; see [`Measured`].
    pub(super) fn measure(&self) -> Result<Measured, Error> {
        let txn = self.begin_read()?;
        let images = index::len(&txn.open_table(RUNS)?)?;
        let pending = self.pending_in(&txn)?;
        let mut out = Measured::default();
        let mut in_tables: u64 = 0;
        for handle in txn.list_tables()? {
            let name = handle.name().to_owned();
            let table = txn.open_untyped_table(handle)?;
            let stats = table.stats()?;
            // Sums of a damaged file's statistics may be anything; they
            // saturate rather than overflow.
            let bytes = stats
                .stored_bytes()
                .saturating_add(stats.metadata_bytes())
                .saturating_add(stats.fragmented_bytes());
            in_tables = in_tables.saturating_add(bytes);
            let (half, kind) = part_of(&name);
            let usage = match half {
                Half::Images => &mut out.images,
                Half::Blobs => &mut out.blobs,
            };
            // The chunks of unfinished uploads are scratch, not blobs.
            let bytes = if name == BLOB_CHUNKS.name() {
                bytes.saturating_sub(pending.in_progress_bytes)
            } else {
                bytes
            };
            usage.add(kind, items(&name, table.len()?, images), bytes);
        }
        if pending.in_progress_bytes > 0 {
            out.blobs.add(UsageKind::Temp, 0, pending.in_progress_bytes);
        }
        // Read after the transaction began: a commit in between can only
        // have grown the file, which then shows as overhead.
        let len = self.file_len()?;
        out.images
            .add(UsageKind::Overhead, 0, len.saturating_sub(in_tables));
        Ok(out)
    }

    /// Uploads in progress and the bytes of their chunks so far.
    fn pending_in(&self, txn: &redb::ReadTransaction) -> Result<Scratch, Error> {
        let pending = txn.open_table(PENDING_UPLOADS)?;
        let chunks = txn.open_table(BLOB_CHUNKS)?;
        let mut out = Scratch::default();
        for entry in pending.iter()? {
            let (upload, _) = entry?;
            let upload = upload.value();
            out.in_progress = out.in_progress.saturating_add(1);
            for chunk in chunks.range((upload, 0)..=(upload, u32::MAX))? {
                let (_, data) = chunk?;
                out.in_progress_bytes = out
                    .in_progress_bytes
                    .saturating_add(data.value().len() as u64);
            }
        }
        Ok(out)
    }

    /// See [`BlobBackend::scratch`](imagecache_core::BlobBackend::scratch).
    pub(super) fn scratch(&self) -> Result<Scratch, Error> {
        let txn = self.begin_read()?;
        self.pending_in(&txn)
    }

    /// Runs redb's compaction on the open file; whether it moved anything.
    ///
    /// Holds the write side of the handle's lock, so no transaction of
    /// this handle begins meanwhile; one already open (a blob being read)
    /// makes redb refuse, and the caller may try again.
    pub(super) fn compact_file(&self) -> Result<bool, Error> {
        let mut db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match db.as_mut() {
            Some(db) => Ok(db.compact()?),
            None => Err(Error::Closed {
                path: self.path.clone(),
            }),
        }
    }

    /// Compacts the file and reports its size before and after.
    fn compact(&self) -> Result<CompactionReport, Error> {
        let before = self.file_len()?;
        let compacted = self.compact_file()?;
        let after = self.file_len()?;
        Ok(CompactionReport {
            before,
            after,
            compacted,
        })
    }
}

/// What [`RedbBackend::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// The database file's size before, in bytes.
    pub before: u64,
    /// Its size after, in bytes.
    pub after: u64,
    /// Whether redb moved any page; `false` when the file was already as
    /// small as it can be.
    pub compacted: bool,
}

impl RedbBackend {
    /// Moves the file's pages together and gives the free ones back to the
    /// file system, then reports the file's size before and after.
    ///
    /// Deleting images and blobs frees pages inside the file, which later
    /// writes reuse but which the file keeps (see
    /// [`StoreBackend::usage`], where they show as
    /// [`UsageKind::Overhead`]); compacting returns them. It rewrites pages
    /// in several transactions and needs free disk space for them. Calls
    /// on this handle wait while it runs.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use imagecache_backends::redb::RedbBackend;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let backend = RedbBackend::open(dir.path().join("images.redb")).await?;
    /// let report = backend.compact().await?;
    /// assert!(report.after <= report.before);
    /// # Ok::<(), imagecache_core::Error>(())
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
    /// # }
    /// ```
    ///
    /// # Errors
    /// A retryable [`Error::Backend`] when a transaction of this handle is
    /// open (a blob being read): try again once it has ended. Storage
    /// failures, after which the handle is reopened as after any.
    ///
    /// [`StoreBackend::usage`]: imagecache_core::StoreBackend::usage
    /// [`Error::Backend`]: imagecache_core::Error::Backend
    pub async fn compact(&self) -> imagecache_core::Result<CompactionReport> {
        self.run(None, Inner::compact).await
    }
}
