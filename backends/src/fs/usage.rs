//! Disk usage: the allocated blocks of every file and directory the backend
//! keeps, by what they hold.
//!
//! A measure only reads: leftover temp files are counted as
//! [`UsageKind::Temp`] and left where they are (a load, a blob listing or
//! [`BlobBackend::scratch`] removes them). Files of other programs in the
//! root are left out.
//!
//! [`BlobBackend::scratch`]: imagecache_core::BlobBackend::scratch

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use imagecache_core::{Usage, UsageKind, allocated_bytes};

use super::files::{TEMP_PREFIX, is_missing};
use super::names::{self, FILE_NAME, Read};
use super::{Error, Inner, leases};

/// Whether a file name is one of this backend's (or Docker's) temp files.
pub(super) fn is_temp(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// Adds one file to `usage`: under [`UsageKind::Temp`] when its name is a
/// temp file's, else under `kind`.
pub(super) fn add_file(usage: &mut Usage, name: &OsStr, meta: &fs::Metadata, kind: UsageKind) {
    let kind = if is_temp(name) { UsageKind::Temp } else { kind };
    usage.add(kind, 1, allocated_bytes(meta));
}

/// Adds `path` to `usage` under `kind`: a file, or a directory with
/// everything below it (each directory's own blocks without a count, each
/// file with a count of one). Temp files go under [`UsageKind::Temp`];
/// symbolic links are counted as themselves, never followed. A missing
/// path adds nothing.
pub(super) fn add_tree(usage: &mut Usage, path: &Path, kind: UsageKind) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(source) => return Err(Error::io("inspect", path, source)),
    };
    if !meta.is_dir() {
        add_file(usage, path.file_name().unwrap_or_default(), &meta, kind);
        return Ok(());
    }
    usage.add(kind, 0, allocated_bytes(&meta));
    let mut dirs: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed since it was listed (a blob deleted meanwhile).
            Err(e) if is_missing(&e) => continue,
            Err(source) => return Err(Error::io("list", &dir, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| Error::io("list", &dir, source))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => continue,
                Err(source) => return Err(Error::io("inspect", &entry.path(), source)),
            };
            if meta.is_dir() {
                usage.add(kind, 0, allocated_bytes(&meta));
                dirs.push(entry.path());
            } else {
                add_file(usage, &entry.file_name(), &meta, kind);
            }
        }
    }
    Ok(())
}

/// The space of the images, names and leases: see
/// [`FsBackend`](super::FsBackend)'s `usage`.
pub(super) fn images(inner: &Inner) -> Result<Usage, Error> {
    let mut usage = Usage::default();
    let root = &inner.config.root;
    if let Ok(meta) = fs::symlink_metadata(root) {
        usage.add(UsageKind::Index, 0, allocated_bytes(&meta));
    }
    // `content/` and `metadata/` hold only `sha256/`, as Docker lays them
    // out; their own blocks go with what they hold.
    for (dir, kind) in [
        (&inner.layout.content, UsageKind::Configs),
        (&inner.layout.metadata, UsageKind::Metadata),
    ] {
        if let Some(parent) = dir.parent()
            && let Ok(meta) = fs::symlink_metadata(parent)
        {
            usage.add(kind, 0, allocated_bytes(&meta));
        }
        add_tree(&mut usage, dir, kind)?;
    }
    add_names(inner, &mut usage)?;
    add_own(inner, &mut usage)?;
    Ok(usage)
}

/// `repositories.json`, counted as one item per name it holds, and the
/// temp files of its rewrites beside it.
fn add_names(inner: &Inner, usage: &mut Usage) -> Result<(), Error> {
    let path = &inner.names_file;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            let count = match names::read(path)? {
                Read::Valid(names) => names.names.len() as u64,
                Read::Missing | Read::Damaged(_) => 0,
            };
            usage.add(UsageKind::Names, count, allocated_bytes(&meta));
        }
        Ok(_) => {}
        Err(e) if is_missing(&e) => {}
        Err(source) => return Err(Error::io("inspect", path, source)),
    }
    // The temp files of its rewrites lie beside it, in the root or, beside
    // `imagedb`, in a directory of Docker's where nothing else is ours.
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(source) => return Err(Error::io("list", dir, source)),
    };
    let prefix = format!("{TEMP_PREFIX}{FILE_NAME}");
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", dir, source))?;
        if !entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        match entry.metadata() {
            Ok(meta) if meta.is_file() => usage.add(UsageKind::Temp, 1, allocated_bytes(&meta)),
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(source) => return Err(Error::io("inspect", &entry.path(), source)),
        }
    }
    Ok(())
}

/// `imagecache/` but its blobs: the index files, set-aside images and
/// names ([`UsageKind::Overhead`]), and lease records.
fn add_own(inner: &Inner, usage: &mut Usage) -> Result<(), Error> {
    let own = &inner.layout.own;
    let entries = match fs::read_dir(own) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(source) => return Err(Error::io("list", own, source)),
    };
    if let Ok(meta) = fs::symlink_metadata(own) {
        usage.add(UsageKind::Index, 0, allocated_bytes(&meta));
    }
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", own, source))?;
        let name = entry.file_name();
        let kind = match name.to_str() {
            // Measured by `blob_usage`.
            Some("blobs") => continue,
            Some("quarantine") => UsageKind::Overhead,
            Some(leases::DIR_NAME) => UsageKind::Leases,
            _ => UsageKind::Index,
        };
        add_tree(usage, &entry.path(), kind)?;
    }
    Ok(())
}
