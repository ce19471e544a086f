//! Leases: one file per lease, `imagecache/leases/<id>.json`, holding the
//! record [`Lease::encode`](imagecache_core::Lease::encode) writes.
//!
//! Leases are this backend's own, so they live beside its other files and
//! never inside Docker's `content/` and `metadata/`. A lease is renewed
//! often, so each one is a file of its own: a renewal rewrites one small
//! file, never a shared one. Files are written as everything else here:
//! a temp file in the same directory, fsynced, set to mode 0600 and
//! renamed into place, then the directory fsynced.
//!
//! Renames and removals happen under the index lock, each batch's all in
//! one hold of it, and reads list the directory under the same lock, so a
//! reader sees all of a batch's lease changes or none of them. The lock
//! also orders lease changes with the names and metadata changes of other
//! handles, as everywhere else in this backend.
//!
//! A file that cannot be read as the lease its name says (not JSON of a
//! lease, another lease's record, too large, not a regular file) is
//! *damaged*, and handled as every persistent backend handles one (see
//! `leases.rs` at the crate root): a load reports it in
//! [`Snapshot::quarantined`](imagecache_core::Snapshot) and lists the other
//! leases; [`StoreBackend::leases`](imagecache_core::StoreBackend::leases)
//! refuses with [`Error::Corrupt`](imagecache_core::Error::Corrupt) naming
//! the file, because a list that silently lacks a lease would let a
//! collector remove what that lease holds. The file is left where it is,
//! as a damaged names file is, for whoever repairs it: storing a lease
//! under its ID replaces it, and removing that lease removes it. Files
//! whose name is not `<lease ID>.json` are not this backend's and are
//! left alone.

use std::fs;
use std::path::{Path, PathBuf};

use imagecache_core::{Key, LeaseId, MAX_LEASE_RECORD, WriteOp};

use super::files::{
    Job, Opened, TEMP_PREFIX, TempFile, ensure_dir, is_missing, open_regular, read_to_end,
    remove_file_if_present, remove_if_stale, run_parallel, sync_dir,
};
use super::{Error, Inner};
use crate::leases::{LeaseEdits, LeaseList};

/// The directory of leases, in the backend's own directory.
pub(super) const DIR_NAME: &str = "leases";
/// The suffix of a lease file after the lease ID.
const SUFFIX: &str = ".json";

/// The path of one lease's file.
fn file_path(dir: &Path, id: &LeaseId) -> PathBuf {
    dir.join(file_name(id))
}

fn file_name(id: &LeaseId) -> String {
    format!("{}{SUFFIX}", id.as_str())
}

/// The lease changes of a batch, applied around the rest of it.
#[derive(Debug)]
pub(super) struct Edits(LeaseEdits);

impl Edits {
    /// The net lease changes `ops` make.
    pub(super) fn of(ops: &[WriteOp]) -> Self {
        Self(LeaseEdits::of(ops))
    }

    /// Writes the leases the batch stores: every file to a temp file,
    /// fsynced together, then all renamed into place under the index lock.
    pub(super) fn apply_sets(&self, inner: &Inner) -> Result<(), Error> {
        if self.0.sets.is_empty() {
            return Ok(());
        }
        let dir = inner.layout.leases();
        let key = |id: &LeaseId| Key::Other(file_path(&dir, id).display().to_string());
        let created =
            ensure_dir(&dir).map_err(|e| e.with_key(Key::Other(dir.display().to_string())))?;
        let mut staged = Vec::with_capacity(self.0.sets.len());
        for lease in &self.0.sets {
            let name = file_name(&lease.id);
            let mut tmp = TempFile::create(&dir, &name).map_err(|e| e.with_key(key(&lease.id)))?;
            tmp.write_all(&lease.encode())
                .and_then(|()| tmp.set_mode())
                .map_err(|e| e.with_key(key(&lease.id)))?;
            staged.push((tmp, dir.join(name)));
        }
        if inner.config.fsync {
            let jobs = staged
                .iter()
                .map(|(tmp, _)| tmp.sync_job())
                .collect::<Result<Vec<Job>, Error>>()?;
            run_parallel(jobs)?;
        }
        {
            let _lock = inner.index.lock()?;
            for (tmp, target) in staged {
                tmp.persist(&target)?;
            }
        }
        if inner.config.fsync {
            sync_dir(&dir)?;
            // A new directory's own entry must be durable too.
            if created {
                sync_dir(&inner.layout.own)?;
            }
        }
        Ok(())
    }

    /// Removes the files of the leases the batch removes, under the index
    /// lock.
    pub(super) fn apply_removals(&self, inner: &Inner) -> Result<(), Error> {
        if self.0.removals.is_empty() {
            return Ok(());
        }
        let dir = inner.layout.leases();
        let mut removed = false;
        {
            let _lock = inner.index.lock()?;
            for id in &self.0.removals {
                let path = file_path(&dir, id);
                removed |= remove_file_if_present(&path)
                    .map_err(|e| e.with_key(Key::Other(path.display().to_string())))?;
            }
        }
        if removed && inner.config.fsync {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

/// Reads every lease file, taking the index lock.
pub(super) fn read(inner: &Inner) -> Result<LeaseList, Error> {
    let _lock = inner.index.lock()?;
    read_locked(inner)
}

/// Reads every lease file; the caller holds the index lock.
pub(super) fn read_locked(inner: &Inner) -> Result<LeaseList, Error> {
    let dir = inner.layout.leases();
    let entries = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(LeaseList::default()),
        Err(source) => return Err(Error::io("list", &dir, source)),
    };
    let mut out = LeaseList::default();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let path = entry.path();
        if name.starts_with(TEMP_PREFIX) {
            remove_if_stale(&path, inner.config.temp_ttl);
            continue;
        }
        let Some(id) = name
            .strip_suffix(SUFFIX)
            .and_then(|stem| LeaseId::new(stem).ok())
        else {
            tracing::debug!(path = %path.display(), "skipping a file that is not named after a lease");
            continue;
        };
        read_one(&path, &id, &mut out)?;
    }
    Ok(out)
}

/// Reads the file of lease `id` into `out`.
fn read_one(path: &Path, id: &LeaseId, out: &mut LeaseList) -> Result<(), Error> {
    let name = path.display().to_string();
    let (file, len) = match open_regular(path).map_err(|e| e.with_key(Key::Other(name.clone())))? {
        // Removed by another program between the listing and the open.
        Opened::Missing => return Ok(()),
        Opened::NotRegular(found) => {
            out.damaged(&name, format!("a {found}, not a regular file"));
            return Ok(());
        }
        Opened::File(file, len) => (file, len),
    };
    // Checked before reading, so that a huge file is never read whole.
    if len > MAX_LEASE_RECORD as u64 {
        out.damaged(
            &name,
            format!("{len} bytes, over the {MAX_LEASE_RECORD} a lease record may have"),
        );
        return Ok(());
    }
    let data = read_to_end(file, len, path).map_err(|e| e.with_key(Key::Other(name.clone())))?;
    out.add(&name, id, &data);
    Ok(())
}
