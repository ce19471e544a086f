//! Applying a [`WriteBatch`] to the directory.
//!
//! The batch is validated whole first. Then it is cut into runs: maximal
//! stretches of puts, metadata writes and summaries, separated by deletes and
//! quarantines (which are applied as groups of their own, in order). Within
//! a run, writes to the same key keep the last value, and the work goes in
//! three phases so that the fsyncs of many files share device flushes:
//!
//! 1. every new file (configs and metadata values) is written to a temp file
//!    beside its destination, and all of them are fsynced concurrently;
//! 2. configs are renamed into place, and `content/sha256` is fsynced (with
//!    `metadata/sha256` if an image's metadata directory was created), so
//!    content is durable before any metadata naming it;
//! 3. holding the index lock, metadata values are renamed into place or
//!    removed, each image's directory token is taken, and one journal
//!    record per image is appended; then, with the lock released, each
//!    changed metadata directory is fsynced.
//!
//! Doing the renames, the tokens and the append under one hold of the lock
//! is what keeps the index exact when handles in several processes write
//! the same image at once: the journal lists every change of this
//! backend's in the order it reached the directory, so replaying it never
//! lets an older value win or drops a value another writer added, however
//! coarse the file system's timestamps are. Deletes and quarantines remove
//! or move metadata directories under the lock too, each with its record.
//! The directory fsyncs come after the lock is released, so that
//! concurrent batches still share device flushes; a record may therefore
//! be written before the rename it describes is durable, which is harmless
//! where metadata is journalled in order (ext4, XFS): the journal's append
//! cannot outlive the earlier rename.
//!
//! A failure before a rename removes every temp file; what was renamed
//! stays, as the contract allows for a backend without atomic batches, and
//! the images it touched are recorded as needing a re-read.
//!
//! Names live in one file (see `names.rs`), rewritten at most twice per
//! batch under the index lock: first with the batch's removals (names
//! removed, and those of images it deletes or quarantines), before any
//! image is removed, so that a crash cannot leave a name that would come
//! back with its image; then with all its changes, once the content the new
//! names point at is durable.
//!
//! Leases are one file each (see `leases.rs`). A batch's lease changes are
//! folded per lease ID (the last write wins); the leases it stores are
//! written before anything else and the leases it removes are removed
//! after everything else, so a batch cut short by a crash or a failure
//! leaves its leases holding more than it asked, never less.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;

use bytes::Bytes;
use imagecache_core::{Content, ImageId, Key, MetadataKey, WriteBatch, WriteOp, validate_batch};

use super::files::{
    Destination, Job, TempFile, Token, check_destination, ensure_dir, is_missing, remove_any,
    run_parallel, sync_dir_job, write_atomic,
};
use super::index::{IndexLock, Record, Update};
use super::names::Edits;
use super::{Error, Inner, Layout, content_present, leases};

/// Applies a batch; see the module docs.
pub(super) fn write(inner: &Inner, batch: WriteBatch) -> Result<(), Error> {
    let ops = batch.into_ops();
    validate(inner, &ops)?;
    let leases = leases::Edits::of(&ops);
    // Leases stored first and removed last: a batch cut short leaves its
    // leases holding more than it asked, never less.
    leases.apply_sets(inner)?;
    let names = Edits::of(&ops);
    names.apply_removals(inner)?;
    let mut run = Run::default();
    let mut resets = Vec::new();
    for op in ops {
        match op {
            // In `names` and `leases`, applied around the rest.
            WriteOp::SetName { .. }
            | WriteOp::DeleteName { .. }
            | WriteOp::SetLease(_)
            | WriteOp::DeleteLease { .. } => {}
            WriteOp::Delete { id } => {
                flush_run(inner, &mut run)?;
                resets.push(Reset::Delete(id));
            }
            WriteOp::Quarantine { id, reason } => {
                flush_run(inner, &mut run)?;
                resets.push(Reset::Quarantine(id, reason));
            }
            other => {
                flush_resets(inner, &mut resets)?;
                run.add(other);
            }
        }
    }
    flush_run(inner, &mut run)?;
    flush_resets(inner, &mut resets)?;
    names.apply_all(inner)?;
    leases.apply_removals(inner)
}

/// Checks every operation against the content on disk and the operations
/// before it, so that a refused batch writes nothing.
///
/// An empty content file counts as no content (Docker writes none), except
/// for an image the batch sets aside: damage that emptied its config is
/// exactly what quarantine is for.
fn validate(inner: &Inner, ops: &[WriteOp]) -> Result<(), Error> {
    let set_aside: Vec<ImageId> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Quarantine { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    validate_batch(ops, |id| {
        let path = inner.layout.content_path(id);
        if set_aside.contains(id) {
            return Ok(path.is_file());
        }
        content_present(&path).map_err(|e| e.with_key(Key::Image(*id)))
    })
}

/// One image's share of a run, folded: the last write to a key wins.
#[derive(Debug, Default)]
struct RunImage {
    put: Option<Content>,
    changes: BTreeMap<MetadataKey, Option<Bytes>>,
    summary: Option<Bytes>,
}

/// Puts, metadata writes and summaries between two resets.
#[derive(Debug, Default)]
struct Run {
    order: Vec<ImageId>,
    images: HashMap<ImageId, RunImage>,
}

impl Run {
    fn image(&mut self, id: ImageId) -> &mut RunImage {
        let order = &mut self.order;
        self.images.entry(id).or_insert_with(|| {
            order.push(id);
            RunImage::default()
        })
    }

    fn add(&mut self, op: WriteOp) {
        match op {
            WriteOp::Put(content) => {
                let img = self.image(content.id());
                img.put.get_or_insert(content);
            }
            WriteOp::SetMetadata { id, key, value } => {
                self.image(id).changes.insert(key, Some(value));
            }
            WriteOp::DeleteMetadata { id, key } => {
                self.image(id).changes.insert(key, None);
            }
            WriteOp::SetSummary { id, summary } => {
                self.image(id).summary = Some(summary);
            }
            // Resets and names never reach a run (see `write`), and no other
            // operation exists in this version of the contract.
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A delete or a quarantine.
#[derive(Debug)]
enum Reset {
    Delete(ImageId),
    Quarantine(ImageId, String),
}

impl Reset {
    fn id(&self) -> ImageId {
        match self {
            Self::Delete(id) | Self::Quarantine(id, _) => *id,
        }
    }
}

/// One image's share of a run, ready for phase 3.
#[derive(Debug)]
struct Staged {
    id: ImageId,
    /// Token of the metadata directory before the run touched it.
    pre: Token,
    put: bool,
    summary: Option<Bytes>,
    /// What the journal record says changed.
    changes: Vec<(MetadataKey, Option<Bytes>)>,
    /// New values, written and (if asked) fsynced, with their destinations.
    values: Vec<(TempFile, PathBuf)>,
    /// Values to remove.
    removals: Vec<(MetadataKey, PathBuf)>,
}

/// A run's temp files, written and (if asked) fsynced: phase 1 done.
struct Staging {
    /// New configs with their destinations.
    content_temps: Vec<(TempFile, PathBuf)>,
    /// Every image of the run, in order.
    staged: Vec<Staged>,
    /// Whether a metadata directory was created.
    new_meta_dir: bool,
}

/// Applies one run; see the module docs.
fn flush_run(inner: &Inner, run: &mut Run) -> Result<(), Error> {
    if run.is_empty() {
        return Ok(());
    }
    let mut run = std::mem::take(run);
    let pre = pre_tokens(inner, &run.order)?;
    let Staging {
        content_temps,
        staged,
        new_meta_dir,
    } = stage_run(inner, &mut run, pre)?;
    place_contents(inner, content_temps, new_meta_dir)?;
    place_run(inner, staged)
}

/// Tokens before anything in the run changes a metadata directory (its
/// own temp files included), so that when nobody else wrote in between,
/// the record chains onto the previous record of the same image.
fn pre_tokens(inner: &Inner, order: &[ImageId]) -> Result<Vec<Token>, Error> {
    let mut pre = Vec::with_capacity(order.len());
    for id in order {
        let token = inner
            .dir_token(&inner.layout.metadata_dir(id))
            .map_err(|e| e.with_key(Key::Image(*id)))?;
        #[cfg(test)]
        inner.seams.reached(super::tests::Point::PreToken, id);
        pre.push(token);
    }
    Ok(pre)
}

/// Phase 1: temp files, fsynced together.
fn stage_run(inner: &Inner, run: &mut Run, pre: Vec<Token>) -> Result<Staging, Error> {
    let layout = &inner.layout;
    let mut content_temps: Vec<(TempFile, PathBuf)> = Vec::new();
    let mut staged: Vec<Staged> = Vec::with_capacity(run.order.len());
    let mut new_meta_dir = false;
    for (id, pre) in run.order.iter().zip(pre) {
        let Some(img) = run.images.remove(id) else {
            continue;
        };
        if let Some(content) = &img.put
            && let Some(temp) = stage_content(layout, id, content)?
        {
            content_temps.push(temp);
        }
        let mut stage = Staged {
            id: *id,
            pre,
            put: img.put.is_some(),
            summary: img.summary,
            changes: Vec::with_capacity(img.changes.len()),
            values: Vec::new(),
            removals: Vec::new(),
        };
        new_meta_dir |= stage_metadata(layout, &mut stage, img.changes)?;
        staged.push(stage);
    }
    if inner.config.fsync {
        let jobs = content_temps
            .iter()
            .map(|(t, _)| t.sync_job())
            .chain(
                staged
                    .iter()
                    .flat_map(|s| s.values.iter().map(|(t, _)| t.sync_job())),
            )
            .collect::<Result<Vec<Job>, Error>>()?;
        run_parallel(jobs)?;
    }
    Ok(Staging {
        content_temps,
        staged,
        new_meta_dir,
    })
}

/// Writes a config to a temp file beside its destination; `None` when the
/// destination already holds it.
fn stage_content(
    layout: &Layout,
    id: &ImageId,
    content: &Content,
) -> Result<Option<(TempFile, PathBuf)>, Error> {
    let key = || Key::Image(*id);
    let target = layout.content_path(id);
    match check_destination(&target).map_err(|e| e.with_key(key()))? {
        Err(found) => Err(Error::destination(target, found, key())),
        // The same ID and length means the same bytes, short of damage
        // that reads detect; storing existing content is a no-op.
        Ok(Destination::File(len)) if len == content.data().len() as u64 => Ok(None),
        Ok(_) => {
            let mut tmp =
                TempFile::create(&layout.content, &id.hex()).map_err(|e| e.with_key(key()))?;
            tmp.write_all(content.data())
                .and_then(|()| tmp.set_mode())
                .map_err(|e| e.with_key(key()))?;
            Ok(Some((tmp, target)))
        }
    }
}

/// Writes an image's new metadata values to temp files and notes its
/// removals in `stage`; returns whether its metadata directory was created.
fn stage_metadata(
    layout: &Layout,
    stage: &mut Staged,
    changes: BTreeMap<MetadataKey, Option<Bytes>>,
) -> Result<bool, Error> {
    if changes.is_empty() {
        return Ok(false);
    }
    let id = stage.id;
    let dir = layout.metadata_dir(&id);
    let mut new_dir = false;
    if changes.values().any(Option::is_some) {
        new_dir = ensure_dir(&dir).map_err(|e| e.with_key(Key::Image(id)))?;
    }
    for (k, value) in changes {
        let target = dir.join(k.as_str());
        let meta_key = || Key::Metadata { id, key: k.clone() };
        match &value {
            Some(value) => {
                if let Err(found) =
                    check_destination(&target).map_err(|e| e.with_key(meta_key()))?
                {
                    return Err(Error::destination(target, found, meta_key()));
                }
                let mut tmp =
                    TempFile::create(&dir, k.as_str()).map_err(|e| e.with_key(meta_key()))?;
                tmp.write_all(value)
                    .and_then(|()| tmp.set_mode())
                    .map_err(|e| e.with_key(meta_key()))?;
                stage.values.push((tmp, target));
            }
            None => stage.removals.push((k.clone(), target)),
        }
        stage.changes.push((k, value));
    }
    Ok(new_dir)
}

/// Phase 2: configs into place, durably, before any metadata.
fn place_contents(
    inner: &Inner,
    content_temps: Vec<(TempFile, PathBuf)>,
    new_meta_dir: bool,
) -> Result<(), Error> {
    let layout = &inner.layout;
    let any_content = !content_temps.is_empty();
    for (tmp, target) in content_temps {
        tmp.persist(&target)?;
    }
    if inner.config.fsync {
        let mut jobs = Vec::new();
        if any_content {
            jobs.push(sync_dir_job(layout.content.clone()));
        }
        if new_meta_dir {
            jobs.push(sync_dir_job(layout.metadata.clone()));
        }
        run_parallel(jobs)?;
    }
    Ok(())
}

/// Phase 3: metadata into place, tokens and records, under the lock.
fn place_run(inner: &Inner, staged: Vec<Staged>) -> Result<(), Error> {
    let fsync = inner.config.fsync;
    let layout = &inner.layout;
    let mut lock = inner.index.lock()?;
    let mut records = Vec::with_capacity(staged.len());
    let mut dir_jobs = Vec::new();
    let mut failure = None;
    for stage in staged {
        if failure.is_some() {
            // Dropping the stage removes its temp files.
            continue;
        }
        let id = stage.id;
        let dir = layout.metadata_dir(&id);
        let placed = place_metadata(id, stage.values, stage.removals).and_then(|()| {
            inner
                .dir_token(&dir)
                .map_err(|e| e.with_key(Key::Image(id)))
        });
        #[cfg(test)]
        inner.seams.reached(super::tests::Point::Placed, &id);
        let post = match placed {
            Ok(post) => post,
            Err(e) => {
                // Some values may be in place and others not: the index
                // must not vouch for the image until a load re-reads it.
                records.push(Record::Remove(id));
                failure = Some(e);
                continue;
            }
        };
        if fsync && !stage.changes.is_empty() && matches!(post, Token::Dir(_)) {
            dir_jobs.push(sync_dir_job(dir));
        }
        records.push(Record::Update(Update {
            id,
            put: stage.put,
            pre: stage.pre,
            post,
            changes: stage.changes,
            summary: stage.summary,
        }));
    }
    append_logged(&mut lock, &records);
    drop(lock);
    if let Some(e) = failure {
        return Err(e);
    }
    run_parallel(dir_jobs)
}

/// Renames an image's new values into place and removes the deleted ones.
fn place_metadata(
    id: ImageId,
    values: Vec<(TempFile, PathBuf)>,
    removals: Vec<(MetadataKey, PathBuf)>,
) -> Result<(), Error> {
    for (tmp, target) in values {
        tmp.persist(&target)
            .map_err(|e| e.with_key(Key::Image(id)))?;
    }
    for (k, path) in removals {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                return Err(Error::destination(
                    path,
                    "directory",
                    Key::Metadata { id, key: k },
                ));
            }
            Err(source) => {
                return Err(
                    Error::io("remove", &path, source).with_key(Key::Metadata { id, key: k })
                );
            }
        }
    }
    Ok(())
}

/// Appends journal records. A failure costs only re-reads at the next
/// load (the index files are dropped), so it is logged, not returned.
fn append_logged(lock: &mut IndexLock<'_>, records: &[Record]) {
    if let Err(e) = lock.append(records) {
        tracing::warn!(error = %e, "cannot update the index journal; the next load reads the whole store");
    }
}

/// Applies deletes and quarantines, in order.
fn flush_resets(inner: &Inner, resets: &mut Vec<Reset>) -> Result<(), Error> {
    if resets.is_empty() {
        return Ok(());
    }
    let resets = std::mem::take(resets);
    let qdirs = quarantine_dirs(inner, &resets)?;
    reset_metadata(inner, &resets, &qdirs)?;
    reset_content(inner, &resets, &qdirs)
}

/// Where quarantined images go, with the reason beside them.
fn quarantine_dirs(inner: &Inner, resets: &[Reset]) -> Result<HashMap<ImageId, PathBuf>, Error> {
    let mut qdirs: HashMap<ImageId, PathBuf> = HashMap::new();
    for reset in resets {
        if let Reset::Quarantine(id, reason) = reset {
            let key = || Key::Image(*id);
            let qdir = quarantine_dir(&inner.layout, id).map_err(|e| e.with_key(key()))?;
            write_atomic(&qdir, "reason", reason.as_bytes(), inner.config.fsync)
                .map_err(|e| e.with_key(key()))?;
            qdirs.insert(*id, qdir);
        }
    }
    Ok(qdirs)
}

/// Metadata first, durably: a metadata directory left behind by a crash
/// would attach itself to the image if its content came back (a stale
/// `builtLocally` is a cache-poisoning risk). The directories go under
/// the index lock, each with its record.
fn reset_metadata(
    inner: &Inner,
    resets: &[Reset],
    qdirs: &HashMap<ImageId, PathBuf>,
) -> Result<(), Error> {
    let layout = &inner.layout;
    let mut meta_changed = false;
    let mut lock = inner.index.lock()?;
    let mut failure = None;
    let mut records = Vec::with_capacity(resets.len());
    for reset in resets {
        let id = reset.id();
        // A removal record only makes the next load look afresh, so one
        // is written for every reset, whether or not it got that far.
        records.push(Record::Remove(id));
        if failure.is_some() {
            continue;
        }
        let dir = layout.metadata_dir(&id);
        let done = match reset {
            Reset::Delete(_) => remove_any(&dir),
            Reset::Quarantine(..) => match qdirs.get(&id) {
                Some(qdir) => move_if_present(&dir, &qdir.join("metadata")),
                None => Ok(false),
            },
        };
        match done {
            Ok(changed) => meta_changed |= changed,
            Err(e) => failure = Some(e.with_key(Key::Image(id))),
        }
    }
    append_logged(&mut lock, &records);
    drop(lock);
    if let Some(e) = failure {
        return Err(e);
    }
    if inner.config.fsync {
        let mut jobs: Vec<Job> = qdirs.values().cloned().map(sync_dir_job).collect();
        if meta_changed {
            jobs.push(sync_dir_job(layout.metadata.clone()));
        }
        if !qdirs.is_empty() {
            jobs.push(sync_dir_job(layout.quarantine.clone()));
        }
        run_parallel(jobs)?;
    }
    Ok(())
}

/// Then the configs: removed, or moved beside their metadata.
fn reset_content(
    inner: &Inner,
    resets: &[Reset],
    qdirs: &HashMap<ImageId, PathBuf>,
) -> Result<(), Error> {
    let layout = &inner.layout;
    let mut content_changed = false;
    for reset in resets {
        let id = reset.id();
        let path = layout.content_path(&id);
        match reset {
            Reset::Delete(_) => {
                content_changed |= remove_any(&path).map_err(|e| e.with_key(Key::Image(id)))?;
            }
            Reset::Quarantine(..) => {
                if let Some(qdir) = qdirs.get(&id) {
                    content_changed |= move_if_present(&path, &qdir.join("content"))
                        .map_err(|e| e.with_key(Key::Image(id)))?;
                }
            }
        }
    }
    if inner.config.fsync {
        let mut jobs: Vec<Job> = qdirs.values().cloned().map(sync_dir_job).collect();
        if content_changed {
            jobs.push(sync_dir_job(layout.content.clone()));
        }
        run_parallel(jobs)?;
    }
    Ok(())
}

/// Renames `from` to `to` if `from` exists; returns whether it did.
fn move_if_present(from: &std::path::Path, to: &std::path::Path) -> Result<bool, Error> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::io("move aside", from, source)),
    }
}

/// Creates a fresh directory for a quarantined image:
/// `quarantine/sha256/<hex>`, or `<hex>.<n>` when the image was set aside
/// before.
pub(super) fn quarantine_dir(layout: &Layout, id: &ImageId) -> Result<PathBuf, Error> {
    ensure_dir(&layout.quarantine)?;
    let hex = id.hex();
    for n in 0u32..10_000 {
        let name = if n == 0 {
            hex.clone()
        } else {
            format!("{hex}.{n}")
        };
        let dir = layout.quarantine.join(name);
        match fs::DirBuilder::new()
            .mode(super::files::DIR_MODE)
            .create(&dir)
        {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::io("create directory", &dir, source)),
        }
    }
    Err(Error::io(
        "create directory",
        &layout.quarantine.join(hex),
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

/// Moves an image found broken during a load aside: metadata first (made
/// durable), then the content, with the reason beside them. Runs under the
/// index lock, like every change of metadata, and records the removal in
/// the journal before the lock is released.
pub(super) fn quarantine_now(
    inner: &Inner,
    lock: &mut IndexLock<'_>,
    id: &ImageId,
    reason: &str,
) -> Result<(), Error> {
    let fsync = inner.config.fsync;
    let layout = &inner.layout;
    #[cfg(test)]
    inner.seams.reached(super::tests::Point::SettingAside, id);
    let qdir = quarantine_dir(layout, id)?;
    write_atomic(&qdir, "reason", reason.as_bytes(), fsync)?;
    let moved = move_if_present(&layout.metadata_dir(id), &qdir.join("metadata"));
    // The record only makes the next load look afresh, so it is written
    // whether or not the move got that far.
    append_logged(lock, &[Record::Remove(*id)]);
    if moved? && fsync {
        super::files::sync_dir(&layout.metadata)?;
    }
    move_if_present(&layout.content_path(id), &qdir.join("content"))?;
    if fsync {
        run_parallel(vec![
            sync_dir_job(layout.content.clone()),
            sync_dir_job(qdir),
            sync_dir_job(layout.quarantine.clone()),
        ])?;
    }
    Ok(())
}
