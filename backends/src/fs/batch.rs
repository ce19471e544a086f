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
//! 3. metadata values are renamed into place or removed, and each changed
//!    metadata directory is fsynced.
//!
//! A failure before a rename removes every temp file; what was renamed
//! stays, as the contract allows for a backend without atomic batches.
//! Finally one journal record per image goes to the index.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;

use bytes::Bytes;
use imagecache_core::{
    Content, Error as CoreError, ImageId, Key, MetadataKey, WriteBatch, WriteOp,
};

use super::files::{
    Destination, Job, TempFile, Token, check_destination, dir_token, ensure_dir, is_missing,
    remove_any, run_parallel, sync_dir_job, write_atomic,
};
use super::index::{Record, Update};
use super::{Error, Inner, Layout, NAME, content_present};

/// Applies a batch; see the module docs.
pub(super) fn write(inner: &Inner, batch: WriteBatch) -> Result<(), Error> {
    let ops = batch.into_ops();
    validate(inner, &ops)?;
    let mut w = Writer {
        inner,
        touches: HashMap::new(),
        order: Vec::new(),
    };
    let mut run = Run::default();
    let mut resets = Vec::new();
    for op in ops {
        match op {
            WriteOp::Delete { id } => {
                w.flush_run(&mut run)?;
                resets.push(Reset::Delete(id));
            }
            WriteOp::Quarantine { id, reason } => {
                w.flush_run(&mut run)?;
                resets.push(Reset::Quarantine(id, reason));
            }
            other => {
                w.flush_resets(&mut resets)?;
                run.add(other);
            }
        }
    }
    w.flush_run(&mut run)?;
    w.flush_resets(&mut resets)?;
    w.finish();
    Ok(())
}

fn op_name(op: &WriteOp) -> &'static str {
    match op {
        WriteOp::Put(_) => "put",
        WriteOp::SetMetadata { .. } => "set_metadata",
        WriteOp::DeleteMetadata { .. } => "delete_metadata",
        WriteOp::SetSummary { .. } => "set_summary",
        WriteOp::Delete { .. } => "delete",
        WriteOp::Quarantine { .. } => "quarantine",
        _ => "unknown write operation",
    }
}

/// Checks every operation against the content on disk and the operations
/// before it, so that a refused batch writes nothing.
fn validate(inner: &Inner, ops: &[WriteOp]) -> Result<(), Error> {
    let mut exists: HashMap<ImageId, bool> = HashMap::new();
    for op in ops {
        let id = op.id();
        let present = match exists.get(&id) {
            Some(p) => *p,
            None => {
                let p = content_present(&inner.layout.content_path(&id))
                    .map_err(|e| e.with_key(Key::Image(id)))?;
                exists.insert(id, p);
                p
            }
        };
        match op {
            WriteOp::Put(_) => {
                exists.insert(id, true);
            }
            WriteOp::Delete { .. } => {
                exists.insert(id, false);
            }
            WriteOp::Quarantine { .. } => {
                if !present {
                    return Err(CoreError::NotFound {
                        key: Key::Image(id),
                    }
                    .into());
                }
                exists.insert(id, false);
            }
            WriteOp::SetMetadata { .. } | WriteOp::SetSummary { .. } => {
                if !present {
                    return Err(CoreError::NotFound {
                        key: Key::Image(id),
                    }
                    .into());
                }
            }
            WriteOp::DeleteMetadata { .. } => {}
            other => {
                return Err(CoreError::Unsupported {
                    operation: op_name(other),
                    backend: NAME,
                }
                .into());
            }
        }
    }
    Ok(())
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
            // Resets never reach a run, and validation refused the rest.
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

/// What the batch did to one image, for its journal record.
#[derive(Debug, Default)]
struct Touch {
    /// The image was deleted or quarantined (before any later writes).
    removed: bool,
    /// Something was written after the last removal.
    active: bool,
    pre: Option<Token>,
    post: Option<Token>,
    put: bool,
    changes: BTreeMap<MetadataKey, Option<Bytes>>,
    summary: Option<Bytes>,
}

struct Writer<'a> {
    inner: &'a Inner,
    touches: HashMap<ImageId, Touch>,
    order: Vec<ImageId>,
}

impl Writer<'_> {
    fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn touch(&mut self, id: ImageId) -> &mut Touch {
        let order = &mut self.order;
        self.touches.entry(id).or_insert_with(|| {
            order.push(id);
            Touch::default()
        })
    }

    fn flush_run(&mut self, run: &mut Run) -> Result<(), Error> {
        if run.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(run);
        let fsync = self.inner.config.fsync;

        // Tokens before anything in the run changes a metadata directory.
        for id in &run.order {
            if self.touches.get(id).and_then(|t| t.pre).is_none() {
                let dir = self.layout().metadata_dir(id);
                let pre = dir_token(&dir).map_err(|e| e.with_key(Key::Image(*id)))?;
                self.touch(*id).pre = Some(pre);
            }
        }

        // Phase 1: temp files, fsynced together.
        let inner = self.inner;
        let layout = &inner.layout;
        let mut content_temps: Vec<(TempFile, PathBuf)> = Vec::new();
        let mut meta_temps: Vec<(ImageId, TempFile, PathBuf)> = Vec::new();
        let mut removals: Vec<(ImageId, MetadataKey, PathBuf)> = Vec::new();
        let mut changed_dirs: Vec<(ImageId, PathBuf)> = Vec::new();
        let mut new_meta_dir = false;
        for id in &run.order {
            let Some(img) = run.images.get(id) else {
                continue;
            };
            let key = || Key::Image(*id);
            if let Some(content) = &img.put {
                let target = layout.content_path(id);
                match check_destination(&target).map_err(|e| e.with_key(key()))? {
                    Err(found) => {
                        return Err(Error::destination(target, found, key()));
                    }
                    // The same ID and length means the same bytes, short of
                    // damage that reads detect; storing existing content is
                    // a no-op.
                    Ok(Destination::File(len)) if len == content.data().len() as u64 => {}
                    Ok(_) => {
                        let mut tmp = TempFile::create(&layout.content, &id.hex())
                            .map_err(|e| e.with_key(key()))?;
                        tmp.write_all(content.data())
                            .and_then(|()| tmp.set_mode())
                            .map_err(|e| e.with_key(key()))?;
                        content_temps.push((tmp, target));
                    }
                }
            }
            if img.changes.is_empty() {
                continue;
            }
            let dir = layout.metadata_dir(id);
            if img.changes.values().any(Option::is_some) {
                new_meta_dir |= ensure_dir(&dir).map_err(|e| e.with_key(key()))?;
            }
            for (k, value) in &img.changes {
                let target = dir.join(k.as_str());
                let meta_key = || Key::Metadata {
                    id: *id,
                    key: k.clone(),
                };
                match value {
                    Some(value) => {
                        if let Err(found) =
                            check_destination(&target).map_err(|e| e.with_key(meta_key()))?
                        {
                            return Err(Error::destination(target, found, meta_key()));
                        }
                        let mut tmp = TempFile::create(&dir, k.as_str())
                            .map_err(|e| e.with_key(meta_key()))?;
                        tmp.write_all(value)
                            .and_then(|()| tmp.set_mode())
                            .map_err(|e| e.with_key(meta_key()))?;
                        meta_temps.push((*id, tmp, target));
                    }
                    None => removals.push((*id, k.clone(), target)),
                }
            }
            changed_dirs.push((*id, dir));
        }
        if fsync {
            let jobs = content_temps
                .iter()
                .map(|(t, _)| t.sync_job())
                .chain(meta_temps.iter().map(|(_, t, _)| t.sync_job()))
                .collect::<Result<Vec<Job>, Error>>()?;
            run_parallel(jobs)?;
        }

        // Phase 2: configs into place, durably, before any metadata.
        let any_content = !content_temps.is_empty();
        for (tmp, target) in content_temps {
            tmp.persist(&target)?;
        }
        if fsync {
            let mut jobs = Vec::new();
            if any_content {
                jobs.push(sync_dir_job(layout.content.clone()));
            }
            if new_meta_dir {
                jobs.push(sync_dir_job(layout.metadata.clone()));
            }
            run_parallel(jobs)?;
        }

        // Phase 3: metadata into place, then each directory's token (taken
        // right after its changes, so another writer's change squeezed in
        // between is unlikely to be folded into it), then the fsyncs.
        for (id, tmp, target) in meta_temps {
            tmp.persist(&target)
                .map_err(|e| e.with_key(Key::Image(id)))?;
        }
        for (id, k, path) in removals {
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
        let mut dir_jobs = Vec::new();
        for id in &run.order {
            let dir = layout.metadata_dir(id);
            let post = dir_token(&dir).map_err(|e| e.with_key(Key::Image(*id)))?;
            if fsync
                && matches!(post, Token::Dir(_))
                && changed_dirs.iter().any(|(changed, _)| changed == id)
            {
                dir_jobs.push(sync_dir_job(dir));
            }
            let Some(img) = run.images.get(id) else {
                continue;
            };
            let t = self.touch(*id);
            t.post = Some(post);
            t.active = true;
            t.put |= img.put.is_some();
            for (k, v) in &img.changes {
                t.changes.insert(k.clone(), v.clone());
            }
            if let Some(s) = &img.summary {
                t.summary = Some(s.clone());
            }
        }
        run_parallel(dir_jobs)?;
        Ok(())
    }

    fn flush_resets(&mut self, resets: &mut Vec<Reset>) -> Result<(), Error> {
        if resets.is_empty() {
            return Ok(());
        }
        let resets = std::mem::take(resets);
        let fsync = self.inner.config.fsync;
        let inner = self.inner;
        let layout = &inner.layout;

        // Metadata first, durably: a metadata directory left behind by a
        // crash would attach itself to the image if its content came back
        // (a stale `builtLocally` is a cache-poisoning risk).
        let mut meta_changed = false;
        let mut qdirs: HashMap<ImageId, PathBuf> = HashMap::new();
        for reset in &resets {
            let id = reset.id();
            let dir = layout.metadata_dir(&id);
            let key = || Key::Image(id);
            match reset {
                Reset::Delete(_) => {
                    meta_changed |= remove_any(&dir).map_err(|e| e.with_key(key()))?;
                }
                Reset::Quarantine(_, reason) => {
                    let qdir = quarantine_dir(layout, &id).map_err(|e| e.with_key(key()))?;
                    write_atomic(&qdir, "reason", reason.as_bytes(), fsync)
                        .map_err(|e| e.with_key(key()))?;
                    meta_changed |= move_if_present(&dir, &qdir.join("metadata"))
                        .map_err(|e| e.with_key(key()))?;
                    qdirs.insert(id, qdir);
                }
            }
        }
        if fsync {
            let mut jobs: Vec<Job> = qdirs.values().cloned().map(sync_dir_job).collect();
            if meta_changed {
                jobs.push(sync_dir_job(layout.metadata.clone()));
            }
            if !qdirs.is_empty() {
                jobs.push(sync_dir_job(layout.quarantine.clone()));
            }
            run_parallel(jobs)?;
        }

        let mut content_changed = false;
        for reset in &resets {
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
        if fsync {
            let mut jobs: Vec<Job> = qdirs.values().cloned().map(sync_dir_job).collect();
            if content_changed {
                jobs.push(sync_dir_job(layout.content.clone()));
            }
            run_parallel(jobs)?;
        }

        for reset in &resets {
            let t = self.touch(reset.id());
            *t = Touch {
                removed: true,
                pre: Some(Token::Absent),
                ..Touch::default()
            };
        }
        Ok(())
    }

    /// Appends the journal records. A failure here only costs a re-read
    /// at the next load, so it is logged rather than returned.
    fn finish(mut self) {
        let mut records = Vec::new();
        for id in std::mem::take(&mut self.order) {
            let Some(t) = self.touches.remove(&id) else {
                continue;
            };
            if t.removed {
                records.push(Record::Remove(id));
            }
            if t.active {
                let post = match t.post {
                    Some(post) => post,
                    None => continue,
                };
                records.push(Record::Update(Update {
                    id,
                    put: t.put,
                    pre: t.pre.unwrap_or(post),
                    post,
                    changes: t.changes.into_iter().collect(),
                    summary: t.summary,
                }));
            }
        }
        if let Err(e) = self.inner.index.append(&records) {
            tracing::warn!(error = %e, "cannot update the index journal; the next load re-reads the images involved");
        }
    }
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
/// durable), then the content, with the reason beside them.
pub(super) fn quarantine_now(inner: &Inner, id: &ImageId, reason: &str) -> Result<(), Error> {
    let fsync = inner.config.fsync;
    let layout = &inner.layout;
    let qdir = quarantine_dir(layout, id)?;
    write_atomic(&qdir, "reason", reason.as_bytes(), fsync)?;
    if move_if_present(&layout.metadata_dir(id), &qdir.join("metadata"))? && fsync {
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
