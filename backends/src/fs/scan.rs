//! Loading: reconciling the index with what is really in the directory.
//!
//! The cost is one listing of `content/sha256`, one stat per image (of its
//! metadata directory), and reads only for what the index cannot vouch for:
//! images it has never seen, and images whose metadata directory changed
//! since it was recorded.

use std::fs;
use std::path::Path;
use std::thread;

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey, Quarantined, Snapshot, SnapshotEntry};

use super::batch::quarantine_now;
use super::files::{
    TEMP_PREFIX, Token, dir_token, is_missing, kind_name, parse_hex32, read_regular,
    remove_if_stale,
};
use super::index::{Entries, Entry};
use super::{Error, Inner, Layout};

/// Below this many images a load runs on one thread.
const PARALLEL_THRESHOLD: usize = 2048;
/// Most threads a load uses for its stats and reads.
const MAX_THREADS: usize = 4;

/// One entry of `content/sha256` with a valid name.
#[derive(Debug)]
struct Listed {
    id: ImageId,
    kind: ListedKind,
}

#[derive(Debug, Clone, Copy)]
enum ListedKind {
    File,
    Symlink,
    /// A directory, pipe or other object that cannot hold a config.
    Other(&'static str),
}

/// What the load decided about one listed image.
#[derive(Debug)]
enum Outcome {
    /// The index entry is current. `checked`: the content was examined now.
    Keep { checked: bool },
    /// The metadata was read from disk.
    Fresh {
        token: Token,
        metadata: Vec<(MetadataKey, Bytes)>,
        checked: bool,
    },
    /// The content path is unusable; set it aside for this reason.
    Quarantine(String),
    /// The content disappeared while loading.
    Gone,
}

/// Lists `content/sha256`: valid names only, stale temp files removed.
fn list_content(inner: &Inner) -> Result<Vec<Listed>, Error> {
    let dir = &inner.layout.content;
    let ttl = inner.config.temp_ttl;
    let mut listed = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::debug!(name = ?name, "skipping invalid digest: not UTF-8");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            remove_if_stale(&entry.path(), ttl);
            continue;
        }
        let Some(bytes) = parse_hex32(name) else {
            tracing::debug!(name, "skipping invalid digest: not 64 lowercase hex characters");
            continue;
        };
        let ft = entry
            .file_type()
            .map_err(|e| Error::io("inspect", &entry.path(), e))?;
        let kind = if ft.is_file() {
            ListedKind::File
        } else if ft.is_symlink() {
            ListedKind::Symlink
        } else {
            ListedKind::Other(kind_name(ft))
        };
        listed.push(Listed {
            id: ImageId::from_bytes(bytes),
            kind,
        });
    }
    Ok(listed)
}

/// Reads every metadata value in an image's directory.
fn read_metadata(
    dir: &Path,
    token: Token,
    ttl: std::time::Duration,
) -> Result<Vec<(MetadataKey, Bytes)>, Error> {
    if !matches!(token, Token::Dir(_)) {
        return Ok(Vec::new());
    }
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(source) => return Err(Error::io("list", dir, source)),
    };
    let mut metadata = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            remove_if_stale(&entry.path(), ttl);
            continue;
        }
        let Ok(key) = MetadataKey::new(name) else {
            tracing::debug!(dir = %dir.display(), name, "skipping metadata file with an invalid key");
            continue;
        };
        match read_regular(&entry.path())? {
            Some(Ok(value)) => metadata.push((key, Bytes::from(value))),
            Some(Err(kind)) => {
                tracing::debug!(dir = %dir.display(), name, kind, "skipping metadata entry that is not a file");
            }
            // Removed between the listing and the read.
            None => {}
        }
    }
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(metadata)
}

/// Decides about one listed image.
fn examine(
    layout: &Layout,
    ttl: std::time::Duration,
    listed: &Listed,
    entry: Option<&Entry>,
) -> Result<Outcome, Error> {
    let id = &listed.id;
    if let ListedKind::Other(kind) = listed.kind {
        return Ok(Outcome::Quarantine(format!(
            "a {kind} occupies the content path"
        )));
    }
    let mut checked = false;
    if !entry.is_some_and(|e| e.content_known) {
        // Never seen as a good file: check it is a non-empty regular file
        // before reporting the image (old non-atomic writers left empty
        // files behind after a crash).
        let path = layout.content_path(id);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => checked = true,
            Ok(m) if m.is_file() => {
                return Ok(Outcome::Quarantine("the content file is empty".into()));
            }
            Ok(m) => {
                return Ok(Outcome::Quarantine(format!(
                    "the content path leads to a {}",
                    kind_name(m.file_type())
                )));
            }
            Err(e) if is_missing(&e) => {
                return Ok(if matches!(listed.kind, ListedKind::Symlink) {
                    Outcome::Quarantine("the content path is a dangling symbolic link".into())
                } else {
                    Outcome::Gone
                });
            }
            Err(source) => return Err(Error::io("inspect", &path, source)),
        }
    }
    let dir = layout.metadata_dir(id);
    let token = dir_token(&dir)?;
    if let Some(e) = entry
        && e.token == Some(token)
    {
        return Ok(Outcome::Keep { checked });
    }
    let metadata = read_metadata(&dir, token, ttl)?;
    Ok(Outcome::Fresh {
        token,
        metadata,
        checked,
    })
}

/// Examines every listed image, on several threads for large stores.
fn examine_all(inner: &Inner, entries: &Entries, listed: &[Listed]) -> Result<Vec<Outcome>, Error> {
    let layout = &inner.layout;
    let ttl = inner.config.temp_ttl;
    let run = |part: &[Listed]| -> Result<Vec<Outcome>, Error> {
        part.iter()
            .map(|l| examine(layout, ttl, l, entries.get(&l.id)))
            .collect()
    };
    let threads = thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_THREADS);
    if listed.len() < PARALLEL_THRESHOLD || threads < 2 {
        return run(listed);
    }
    let chunk = listed.len().div_ceil(threads);
    thread::scope(|s| {
        let handles: Vec<_> = listed
            .chunks(chunk)
            .skip(1)
            .map(|part| s.spawn(move || run(part)))
            .collect();
        // The calling thread takes the first chunk itself.
        let mut out = run(listed.get(..chunk).unwrap_or(listed))?;
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part?),
                Err(_) => return Err(Error::Panicked),
            }
        }
        Ok(out)
    })
}

/// Everything set aside, now or earlier, from `imagecache/quarantine`.
fn list_quarantine(layout: &Layout) -> Result<Vec<Quarantined>, Error> {
    let dir = &layout.quarantine;
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(source) => return Err(Error::io("list", dir, source)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let hex = name.split('.').next().unwrap_or(name);
        let Some(bytes) = parse_hex32(hex) else {
            continue;
        };
        let reason = match read_regular(&entry.path().join("reason"))? {
            Some(Ok(r)) => String::from_utf8_lossy(&r).into_owned(),
            _ => "no reason recorded".to_owned(),
        };
        out.push(Quarantined {
            name: ImageId::from_bytes(bytes).to_string(),
            reason,
        });
    }
    Ok(out)
}

/// Loads the store; see the module docs.
pub(super) fn load(inner: &Inner) -> Result<Snapshot, Error> {
    let loaded = inner.index.read()?;
    let listed = list_content(inner)?;
    let outcomes = examine_all(inner, &loaded.entries, &listed)?;

    let mut entries = loaded.entries;
    let mut changed = loaded.stale;
    let mut result: Vec<(ImageId, Entry)> = Vec::with_capacity(listed.len());
    let mut failed_quarantines = Vec::new();
    for (l, outcome) in listed.iter().zip(outcomes) {
        let old = entries.remove(&l.id);
        match outcome {
            Outcome::Keep { checked } => {
                let Some(mut e) = old else {
                    continue;
                };
                if checked && !e.content_known {
                    e.content_known = true;
                    changed = true;
                }
                result.push((l.id, e));
            }
            Outcome::Fresh {
                token,
                metadata,
                checked,
            } => {
                let (known, summary) = old.map_or((false, None), |e| (e.content_known, e.summary));
                result.push((
                    l.id,
                    Entry {
                        token: Some(token),
                        content_known: known || checked,
                        metadata,
                        summary,
                    },
                ));
                changed = true;
            }
            Outcome::Quarantine(reason) => {
                changed = true;
                tracing::warn!(id = %l.id, reason, "setting a broken image aside");
                if let Err(e) = quarantine_now(inner, &l.id, &reason) {
                    tracing::warn!(id = %l.id, error = %e, "cannot move a broken image aside");
                    failed_quarantines.push(Quarantined {
                        name: l.id.to_string(),
                        reason: format!("{reason} (could not be moved aside: {e})"),
                    });
                }
            }
            Outcome::Gone => changed = true,
        }
    }
    // Whatever is left in the index lost its content since it was recorded.
    changed |= !entries.is_empty();
    result.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let mut quarantined = list_quarantine(&inner.layout)?;
    quarantined.extend(failed_quarantines);
    quarantined.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.reason.cmp(&b.reason)));

    if changed
        && let Err(e) = inner.index.store_after_load(
            loaded.journal,
            loaded.snapshot_header,
            result.iter().map(|(id, e)| (id, e)),
        )
    {
        tracing::warn!(error = %e, "cannot rewrite the index; the next load does the same work again");
    }

    Ok(Snapshot {
        images: result
            .into_iter()
            .map(|(id, e)| SnapshotEntry {
                id,
                metadata: e.metadata,
                summary: e.summary,
            })
            .collect(),
        quarantined,
    })
}
