//! Names in Docker's `repositories.json`.
//!
//! Docker keeps its reference store as one JSON file:
//!
//! ```text
//! {"Repositories":{"busybox":{"busybox:latest":"sha256:<hex>","busybox@sha256:<d>":"sha256:<hex>"}}}
//! ```
//!
//! grouped by familiar repository name, each entry keyed by the familiar
//! reference. This module reads and writes exactly that, so Docker and this
//! backend read each other's names. The file is replaced whole, through a
//! temp file that is fsynced and renamed into place, and the directory is
//! fsynced after; every read-modify-write happens under the index lock, so
//! handles of this backend never lose each other's changes.
//!
//! Entries this module cannot understand (a key that is not a valid
//! reference, a value that is not an image ID) are kept as they are and not
//! listed, until a name set or removed at the same place replaces them. A file that is not JSON of this shape at all is *damaged*: a load
//! reports it in [`Snapshot::quarantined`](imagecache_core::Snapshot) and
//! lists no names; a batch that only removes names or images leaves it
//! alone; a batch that sets a name moves it to
//! `imagecache/quarantine/names/<n>/` with the reason beside it and starts
//! a new file, so its bytes are kept for whoever repairs it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use imagecache_core::{ImageId, Key, Quarantined, Reference, WriteOp};
use serde_json::Value;

use super::files::{
    Opened, ensure_dir, is_missing, open_regular, read_to_end, sync_dir, write_atomic,
};
use super::index::IndexLock;
use super::{Error, Inner};

/// The file name Docker uses.
pub(super) const FILE_NAME: &str = "repositories.json";
/// The top-level key of the file.
const TOP_KEY: &str = "Repositories";

/// Where the names file of a store rooted at `root` lives: beside `imagedb`
/// when the root is Docker's image database directory, inside the root
/// otherwise.
pub(super) fn file_path(root: &Path) -> PathBuf {
    match root.file_name() {
        Some(last) if last == "imagedb" => root
            .parent()
            .map_or_else(|| PathBuf::from(FILE_NAME), |p| p.join(FILE_NAME)),
        _ => root.join(FILE_NAME),
    }
}

/// One change a batch makes to the names, in batch order.
#[derive(Debug, Clone)]
pub(super) enum Edit {
    Set(Reference, ImageId),
    Remove(Reference),
    /// Remove every name pointing at the image (a delete or a quarantine).
    DropImage(ImageId),
}

impl Edit {
    fn is_removal(&self) -> bool {
        !matches!(self, Self::Set(..))
    }
}

/// The name changes of a batch, in order.
#[derive(Debug, Default)]
pub(super) struct Edits(Vec<Edit>);

impl Edits {
    /// The name changes `ops` make, deletes and quarantines included.
    pub(super) fn of(ops: &[WriteOp]) -> Self {
        Self(
            ops.iter()
                .filter_map(|op| match op {
                    WriteOp::SetName { name, id } => Some(Edit::Set(name.clone(), *id)),
                    WriteOp::DeleteName { name } => Some(Edit::Remove(name.clone())),
                    WriteOp::Delete { id } | WriteOp::Quarantine { id, .. } => {
                        Some(Edit::DropImage(*id))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// Applies the removals (before any image is removed, so that a crash
    /// never leaves a name that comes back with its image's content).
    pub(super) fn apply_removals(&self, inner: &Inner) -> Result<(), Error> {
        if !self.0.iter().any(Edit::is_removal) {
            return Ok(());
        }
        let removals: Vec<Edit> = self.0.iter().filter(|e| e.is_removal()).cloned().collect();
        update(inner, &removals, false)
    }

    /// Applies every change (after the batch's content is durable, so that
    /// a name never points at content that could still be lost). A batch
    /// with only removals did them all in [`Edits::apply_removals`].
    pub(super) fn apply_all(&self, inner: &Inner) -> Result<(), Error> {
        if !self.0.iter().any(|e| !e.is_removal()) {
            return Ok(());
        }
        update(inner, &self.0, true)
    }
}

/// The names of the file, as far as they are understood.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Names {
    /// Valid names and their images.
    pub(super) names: BTreeMap<Reference, ImageId>,
    /// Entries that are not a valid reference and image ID, kept verbatim:
    /// (repository group, key) → value.
    foreign: BTreeMap<(String, String), Value>,
}

impl Names {
    fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::Set(name, id) => {
                self.drop_foreign(name);
                self.names.insert(name.clone(), *id);
            }
            Edit::Remove(name) => {
                self.drop_foreign(name);
                self.names.remove(name);
            }
            Edit::DropImage(id) => self.names.retain(|_, v| v != id),
        }
    }

    /// Forgets an unreadable entry where `name` is written, so that the
    /// name's own entry replaces it, or its removal removes it.
    fn drop_foreign(&mut self, name: &Reference) {
        self.foreign
            .remove(&(name.repository().to_owned(), name.familiar().to_owned()));
    }

    /// Parses the file's bytes as Docker's decoder would accept them.
    pub(super) fn decode(data: &[u8]) -> Result<Self, String> {
        let top: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let repositories = match top {
            // Go decodes `null` into a struct as nothing at all.
            Value::Null => return Ok(Self::default()),
            Value::Object(top) => top
                .into_iter()
                // Go matches struct fields case-insensitively; the last
                // matching key wins, as with duplicate keys.
                .filter(|(k, _)| k.eq_ignore_ascii_case(TOP_KEY))
                .map(|(_, v)| v)
                .next_back(),
            other => return Err(format!("the top level is {}, not an object", kind(&other))),
        };
        let groups = match repositories {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(groups)) => groups,
            Some(other) => {
                return Err(format!("{TOP_KEY:?} is {}, not an object", kind(&other)));
            }
        };
        let mut out = Self::default();
        for (group, entries) in groups {
            let entries = match entries {
                Value::Null => continue,
                Value::Object(entries) => entries,
                other => {
                    return Err(format!(
                        "repository {group:?} is {}, not an object",
                        kind(&other)
                    ));
                }
            };
            for (key, value) in entries {
                let Value::String(text) = &value else {
                    return Err(format!(
                        "the image of {key:?} is {}, not a string",
                        kind(&value)
                    ));
                };
                match (Reference::parse(&key), ImageId::parse(text)) {
                    (Ok(name), Ok(id)) => {
                        // Two spellings of one name (a hand-edited file):
                        // the one Docker would write wins.
                        let canonical = name.familiar() == key && name.repository() == group;
                        if canonical || !out.names.contains_key(&name) {
                            out.names.insert(name, id);
                        }
                    }
                    _ => {
                        tracing::warn!(repository = %group, key = %key, "keeping a repositories.json entry that is not a reference and image ID");
                        out.foreign.insert((group.clone(), key), value);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The file's bytes, as Docker writes them: compact JSON, keys sorted.
    pub(super) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut groups: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for ((group, key), value) in &self.foreign {
            groups
                .entry(group.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        for (name, id) in &self.names {
            groups
                .entry(name.repository().to_owned())
                .or_default()
                .insert(name.familiar().to_owned(), Value::String(id.to_string()));
        }
        serde_json::to_vec(&BTreeMap::from([(TOP_KEY, groups)]))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What reading the names file found.
#[derive(Debug)]
pub(super) enum Read {
    /// No file: no names.
    Missing,
    Valid(Names),
    /// The file exists but cannot be used; why.
    Damaged(String),
}

/// Reads the names file.
pub(super) fn read(path: &Path) -> Result<Read, Error> {
    let key = || Key::Other(path.display().to_string());
    match open_regular(path).map_err(|e| e.with_key(key()))? {
        Opened::Missing => Ok(Read::Missing),
        Opened::NotRegular(found) => Ok(Read::Damaged(format!("a {found}, not a regular file"))),
        Opened::File(file, len) => {
            let data = read_to_end(file, len, path).map_err(|e| e.with_key(key()))?;
            Ok(match Names::decode(&data) {
                Ok(names) => Read::Valid(names),
                Err(reason) => Read::Damaged(reason),
            })
        }
    }
}

/// The report of a damaged names file in a load.
pub(super) fn damaged(path: &Path, reason: &str) -> Quarantined {
    Quarantined {
        name: path.display().to_string(),
        reason: format!(
            "cannot be read as Docker's {FILE_NAME} ({reason}); its names are ignored, and the next name set moves it aside"
        ),
    }
}

/// Reads, edits and rewrites the names file under the index lock.
/// `replace_damaged`: whether a damaged file is moved aside and replaced
/// (when the edits set names) or left alone (when they only remove some).
fn update(inner: &Inner, edits: &[Edit], replace_damaged: bool) -> Result<(), Error> {
    let lock = inner.index.lock()?;
    update_locked(inner, &lock, edits, replace_damaged)
}

/// Removes the names of images a load set aside, under the lock the load
/// holds.
pub(super) fn drop_images_locked(
    inner: &Inner,
    lock: &IndexLock<'_>,
    ids: &[ImageId],
) -> Result<(), Error> {
    let edits: Vec<Edit> = ids.iter().copied().map(Edit::DropImage).collect();
    update_locked(inner, lock, &edits, false)
}

/// [`update`], with the index lock held by the caller.
fn update_locked(
    inner: &Inner,
    _lock: &IndexLock<'_>,
    edits: &[Edit],
    replace_damaged: bool,
) -> Result<(), Error> {
    let path = &inner.names_file;
    let mut names = match read(path)? {
        Read::Missing => Names::default(),
        Read::Valid(names) => names,
        Read::Damaged(reason) if replace_damaged => {
            set_aside(inner, path, &reason)?;
            Names::default()
        }
        Read::Damaged(reason) => {
            tracing::warn!(path = %path.display(), %reason, "names file is damaged; leaving it as it is");
            return Ok(());
        }
    };
    let before = names.names.clone();
    // Edits only ever remove unreadable entries.
    let foreign_before = names.foreign.len();
    for edit in edits {
        names.apply(edit);
    }
    if names.names == before && names.foreign.len() == foreign_before {
        return Ok(());
    }
    let key = || Key::Other(path.display().to_string());
    let data = names
        .encode()
        .map_err(|e| Error::io("encode", path, io::Error::other(e)).with_key(key()))?;
    let dir = parent_dir(path);
    write_atomic(&dir, FILE_NAME, &data, inner.config.fsync).map_err(|e| e.with_key(key()))?;
    if inner.config.fsync {
        sync_dir(&dir).map_err(|e| e.with_key(key()))?;
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Moves a damaged names file to `imagecache/quarantine/names/<n>/`, with
/// the reason beside it.
fn set_aside(inner: &Inner, path: &Path, reason: &str) -> Result<(), Error> {
    let key = || Key::Other(path.display().to_string());
    let base = inner.layout.names_quarantine();
    ensure_dir(&base).map_err(|e| e.with_key(key()))?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut dir = base.join(stamp.to_string());
    let mut n = 0;
    loop {
        match fs::DirBuilder::new().create(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                dir = base.join(format!("{stamp}.{n}"));
            }
            Err(source) => {
                return Err(Error::io("create directory", &dir, source).with_key(key()));
            }
        }
    }
    write_atomic(&dir, "reason", reason.as_bytes(), inner.config.fsync)
        .map_err(|e| e.with_key(key()))?;
    fs::rename(path, dir.join(FILE_NAME))
        .map_err(|source| Error::io("move aside", path, source).with_key(key()))?;
    tracing::warn!(path = %path.display(), to = %dir.display(), %reason, "moved a damaged names file aside");
    if inner.config.fsync {
        sync_dir(&dir)?;
        sync_dir(&base)?;
        sync_dir(&parent_dir(path))?;
    }
    Ok(())
}

/// Names files set aside earlier, with the reasons recorded beside them.
pub(super) fn list_set_aside(inner: &Inner) -> Result<Vec<Quarantined>, Error> {
    let base = inner.layout.names_quarantine();
    let entries = match fs::read_dir(&base) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(source) => return Err(Error::io("list", &base, source)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &base, e))?;
        let dir = entry.path();
        let reason = match super::files::read_regular(&dir.join("reason"))? {
            Some(Ok(r)) => String::from_utf8_lossy(&r).into_owned(),
            _ => "no reason recorded".to_owned(),
        };
        out.push(Quarantined {
            name: dir.join(FILE_NAME).display().to_string(),
            reason: format!("set aside: {reason}"),
        });
    }
    Ok(out)
}

/// Names with their images, as a snapshot lists them.
type Listed = Vec<(Reference, ImageId)>;

/// The names to list in a snapshot: those of the file whose image is in
/// `images` (sorted), with what a load must report about the file.
pub(super) fn for_snapshot(
    inner: &Inner,
    images: &[ImageId],
) -> Result<(Listed, Option<Quarantined>), Error> {
    let path = &inner.names_file;
    match read(path)? {
        Read::Missing => Ok((Vec::new(), None)),
        Read::Damaged(reason) => {
            tracing::warn!(path = %path.display(), %reason, "names file is damaged; listing no names");
            Ok((Vec::new(), Some(damaged(path, &reason))))
        }
        Read::Valid(names) => Ok((
            names
                .names
                .into_iter()
                .filter(|(_, id)| images.binary_search(id).is_ok())
                .collect(),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_beside_imagedb_or_inside_the_root() {
        for (root, file) in [
            (
                "/var/lib/docker/image/overlay2/imagedb",
                "/var/lib/docker/image/overlay2/repositories.json",
            ),
            (
                "/var/lib/docker/image/overlay2/imagedb/",
                "/var/lib/docker/image/overlay2/repositories.json",
            ),
            ("imagedb", "repositories.json"),
            ("/srv/cache", "/srv/cache/repositories.json"),
            ("/srv/imagedb-old", "/srv/imagedb-old/repositories.json"),
        ] {
            assert_eq!(file_path(Path::new(root)), Path::new(file), "{root}");
        }
    }

    #[test]
    fn edits_apply_in_order() {
        let a = ImageId::of_config(b"a");
        let b = ImageId::of_config(b"b");
        let n = |s: &str| Reference::parse(s).unwrap_or_else(|e| panic!("{e}"));
        let mut names = Names::default();
        for edit in [
            Edit::Set(n("x:1"), a),
            Edit::Set(n("x:2"), a),
            Edit::Set(n("y:1"), b),
            Edit::DropImage(a),
            Edit::Set(n("x:3"), a),
            Edit::Remove(n("y:1")),
            Edit::Remove(n("y:2")),
        ] {
            names.apply(&edit);
        }
        assert_eq!(names.names, BTreeMap::from([(n("x:3"), a)]));
    }

    #[test]
    fn what_is_damaged_says_why() {
        for (text, why) in [
            ("", "EOF"),
            ("[]", "top level is an array"),
            (r#"{"Repositories":[]}"#, "\"Repositories\" is an array"),
            (
                r#"{"Repositories":{"x":1}}"#,
                "repository \"x\" is a number",
            ),
            (
                r#"{"Repositories":{"x":{"x:1":2}}}"#,
                "is a number, not a string",
            ),
        ] {
            match Names::decode(text.as_bytes()) {
                Err(reason) => assert!(reason.contains(why), "{text}: {reason}"),
                Ok(n) => panic!("{text} should be damaged, read {n:?}"),
            }
        }
    }
}
