//! Tests of the backend's internals: the index files and how loads and
//! writes keep them, with seams that pause a writer at a chosen point and
//! that make change tokens as coarse as a clock can be.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use bytes::Bytes;
use imagecache_core::{
    ImageId, MetadataKey, Snapshot, StoreBackend as _, StoreBackendExt as _, WriteBatch,
};

use super::FsBackend;
use super::files::{Stamp, Token};
use super::index::{IndexFiles, Record, Update, apply};

/// Where in a write a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    /// Right after the writer took an image's "before" token.
    PreToken,
    /// Right after it renamed an image's values into place and took the
    /// "after" token, before it appended the record.
    Placed,
    /// A load is about to move a broken image aside.
    SettingAside,
}

/// A hook run by writers at the points above.
type Hook = Arc<dyn Fn(Point, &ImageId) + Send + Sync>;

/// Test seams of one handle.
#[derive(Default)]
pub(super) struct Seams {
    /// Change tokens keep only what tells "no directory", "a directory"
    /// and "something else" apart, and the inode: as if every timestamp
    /// fell within one clock tick.
    coarse: AtomicBool,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Seams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seams")
            .field("coarse", &self.coarse.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Seams {
    pub(super) fn seen(&self, token: Token) -> Token {
        if !self.coarse.load(Ordering::SeqCst) {
            return token;
        }
        let coarse = |s: Stamp| Stamp {
            mtime: 0,
            mtime_ns: 0,
            ctime: 0,
            ctime_ns: 0,
            ..s
        };
        match token {
            Token::Absent => Token::Absent,
            Token::Dir(s) => Token::Dir(coarse(s)),
            Token::Other(s) => Token::Other(coarse(s)),
        }
    }

    pub(super) fn reached(&self, point: Point, id: &ImageId) {
        let hook = self
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(point, id);
        }
    }
}

fn coarse_clock(b: &FsBackend) {
    b.inner.seams.coarse.store(true, Ordering::SeqCst);
}

fn set_hook(b: &FsBackend, hook: impl Fn(Point, &ImageId) + Send + Sync + 'static) {
    *b.inner
        .seams
        .hook
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
}

fn id(n: u32) -> ImageId {
    ImageId::of_config(format!("{{\"n\":{n}}}").as_bytes())
}

fn summary_update(n: u32, summary: Bytes) -> Record {
    Record::Update(Update {
        id: id(n),
        put: true,
        pre: Token::Absent,
        post: Token::Absent,
        changes: Vec::new(),
        summary: Some(summary),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sets_a_broken_image_aside_under_the_index_lock() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FsBackend::open(dir.path()).await.unwrap();
    let good = backend
        .put(Bytes::from_static(br#"{"rootfs":{}}"#))
        .await
        .unwrap();
    // An empty config, as a writer that did not write atomically leaves
    // behind after a crash, with a metadata value beside it.
    let broken = id(7);
    fs::write(dir.path().join("content/sha256").join(broken.hex()), b"").unwrap();
    let meta = dir.path().join("metadata/sha256").join(broken.hex());
    fs::create_dir_all(&meta).unwrap();
    fs::write(meta.join("parent"), good.to_string()).unwrap();
    let lock_path = dir.path().join("imagecache/lock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = Arc::clone(&seen);
    set_hook(&backend, move |point, id| {
        if point == Point::SettingAside {
            // Another open file description: it gets the flock only if
            // nobody holds the index lock.
            let other = fs::File::open(&lock_path).unwrap();
            let held = other.try_lock().is_err();
            hook_seen.lock().unwrap().push((*id, held));
        }
    });
    let snapshot = backend.load().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(broken, true)],
        "set aside once, holding the index lock"
    );
    assert!(
        snapshot
            .quarantined
            .iter()
            .any(|q| q.name == broken.to_string())
    );
    assert_eq!(snapshot.images.len(), 1);
    assert!(!meta.exists(), "its metadata went with it");
    // The load recorded what it did: another handle sees the same store.
    let other = FsBackend::open(dir.path()).await.unwrap();
    let again = other.load().await.unwrap();
    assert_eq!(again.images, snapshot.images);
}

#[test]
fn large_journal_is_folded_into_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let files = IndexFiles::open(dir.path()).unwrap();
    let big = Bytes::from(vec![7u8; 1 << 20]);
    for n in 0..20 {
        files.append(&[summary_update(n, big.clone())]).unwrap();
    }
    let journal = fs::metadata(dir.path().join("journal")).unwrap().len();
    assert!(journal < 8 << 20, "journal was compacted ({journal} bytes)");
    assert!(dir.path().join("index").exists());
    let loaded = files.read().unwrap();
    assert_eq!(loaded.entries.len(), 20);
    assert!(
        loaded
            .entries
            .values()
            .all(|e| e.summary.as_ref() == Some(&big))
    );
}

#[test]
fn a_load_learns_the_records_appended_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let ours = IndexFiles::open(dir.path()).unwrap();
    let theirs = IndexFiles::open(dir.path()).unwrap();
    ours.append(&[summary_update(1, Bytes::from_static(b"one"))])
        .unwrap();
    let loaded = ours.read().unwrap();
    assert!(loaded.stale);
    assert_eq!(
        ours.lock()
            .unwrap()
            .changes_since(&loaded.point)
            .unwrap()
            .map(|r| r.len()),
        Some(0),
        "nothing appended yet"
    );
    theirs
        .append(&[summary_update(2, Bytes::from_static(b"two"))])
        .unwrap();
    let mut lock = ours.lock().unwrap();
    let since = lock.changes_since(&loaded.point).unwrap().unwrap();
    assert!(matches!(&since[..], [Record::Update(u)] if u.id == id(2)));
    let mut entries = loaded.entries;
    for r in since {
        apply(&mut entries, r);
    }
    lock.store(entries.iter()).unwrap();
    drop(lock);
    let again = theirs.read().unwrap();
    assert_eq!(again.entries.len(), 2);
    assert_eq!(
        again.entries[&id(2)].summary,
        Some(Bytes::from_static(b"two"))
    );
    assert_eq!(
        fs::metadata(dir.path().join("journal")).unwrap().len(),
        16,
        "the new snapshot holds every record"
    );
    // And the other handle appends to the new journal, not the replaced one.
    theirs
        .append(&[summary_update(3, Bytes::from_static(b"three"))])
        .unwrap();
    assert_eq!(ours.read().unwrap().entries.len(), 3);
}

#[test]
fn a_load_cannot_catch_up_across_another_rewrite_of_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let ours = IndexFiles::open(dir.path()).unwrap();
    let theirs = IndexFiles::open(dir.path()).unwrap();
    ours.append(&[summary_update(1, Bytes::from_static(b"one"))])
        .unwrap();
    let loaded = ours.read().unwrap();
    // Another handle appends, then loads and rewrites the index: the
    // record is folded into its snapshot, out of our sight.
    theirs
        .append(&[summary_update(2, Bytes::from_static(b"two"))])
        .unwrap();
    let mut lock = theirs.lock().unwrap();
    let their_load = lock.read().unwrap();
    lock.store(their_load.entries.iter()).unwrap();
    drop(lock);
    assert!(
        ours.lock()
            .unwrap()
            .changes_since(&loaded.point)
            .unwrap()
            .is_none()
    );
    assert_eq!(ours.read().unwrap().entries.len(), 2);
}

#[test]
fn a_journal_older_than_the_snapshot_is_replaced_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let files = IndexFiles::open(dir.path()).unwrap();
    files
        .append(&[summary_update(1, Bytes::from_static(b"one"))])
        .unwrap();
    let old_journal = fs::read(dir.path().join("journal")).unwrap();
    let mut lock = files.lock().unwrap();
    let loaded = lock.read().unwrap();
    lock.store(loaded.entries.iter()).unwrap();
    drop(lock);
    // A compaction that stopped between its two renames leaves the journal
    // it folded in; a load ignores such a journal's records.
    fs::write(dir.path().join("journal"), &old_journal).unwrap();
    let again = IndexFiles::open(dir.path()).unwrap();
    again
        .append(&[summary_update(2, Bytes::from_static(b"two"))])
        .unwrap();
    let loaded = files.read().unwrap();
    assert_eq!(
        loaded.entries.get(&id(2)).and_then(|e| e.summary.clone()),
        Some(Bytes::from_static(b"two")),
        "the record went to a journal that counts"
    );
}

#[tokio::test]
async fn a_load_folds_the_journal_and_a_quiet_load_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(dir.path()).await.unwrap();
    let mut batch = WriteBatch::new();
    let image =
        batch.put(imagecache_core::Content::new(Bytes::from_static(b"{\"rootfs\":{}}")).unwrap());
    batch.set_metadata(image, MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
    batch.set_summary(image, "s");
    b.write(batch).await.unwrap();
    let journal = dir.path().join("imagecache/journal");
    let index = dir.path().join("imagecache/index");
    assert!(fs::metadata(&journal).unwrap().len() > 16);

    let first = b.load().await.unwrap();
    assert_eq!(
        fs::metadata(&journal).unwrap().len(),
        16,
        "only the header is left"
    );
    let written = fs::metadata(&index).unwrap().modified().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&index).unwrap());

    let second = b.load().await.unwrap();
    assert_eq!(first, second);
    let meta = fs::metadata(&index).unwrap();
    assert_eq!(meta.modified().unwrap(), written);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "a quiet load rewrites nothing"
    );

    b.delete(&image).await.unwrap();
    assert!(b.load().await.unwrap().images.is_empty());
    assert!(
        b.get_metadata(&image, &MetadataKey::BUILT_LOCALLY)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

fn config(tag: &str) -> Bytes {
    Bytes::from(format!(r#"{{"rootfs":{{}},"tag":"{tag}"}}"#))
}

fn key(s: &str) -> MetadataKey {
    MetadataKey::new(s).unwrap()
}

async fn set(b: &FsBackend, id: ImageId, k: &str, value: &str) {
    let mut batch = WriteBatch::new();
    batch.set_metadata(id, key(k), value.to_owned());
    b.write(batch).await.unwrap();
}

/// An image's metadata files as they are on disk, temp files aside.
fn on_disk(root: &Path, id: &ImageId) -> BTreeMap<String, Bytes> {
    let Ok(entries) = fs::read_dir(root.join("metadata/sha256").join(id.hex())) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                Bytes::from(fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

fn reported(snapshot: &Snapshot, id: &ImageId) -> BTreeMap<String, Bytes> {
    snapshot
        .images
        .iter()
        .find(|e| e.id == *id)
        .map(|e| {
            e.metadata
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_found_no_metadata_directory_keeps_values_added_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsBackend::open(dir.path()).await.unwrap();
    let second = FsBackend::open(dir.path()).await.unwrap();
    let image = first.put(config("shared")).await.unwrap();

    // The first handle's writer stops right after it found no metadata
    // directory, until the second handle's write is done.
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let go_rx = Mutex::new(go_rx);
    set_hook(&first, move |point, _| {
        if point == Point::PreToken {
            reached_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
    });
    let paused = {
        let first = first.clone();
        tokio::spawn(async move { set(&first, image, "seen-by-first", "1").await })
    };
    tokio::task::spawn_blocking(move || reached_rx.recv().unwrap())
        .await
        .unwrap();
    set(&second, image, "seen-by-second", "2").await;
    go_tx.send(()).unwrap();
    paused.await.unwrap();

    let disk = on_disk(dir.path(), &image);
    assert_eq!(disk.len(), 2, "both values are on disk: {disk:?}");
    let third = FsBackend::open(dir.path()).await.unwrap();
    for (who, b) in [("first", &first), ("second", &second), ("a new", &third)] {
        let snapshot = b.load().await.unwrap();
        assert_eq!(reported(&snapshot, &image), disk, "{who} handle's load");
    }
}

/// Writers per round of the coarse-clock test, spread over the handles.
const WRITERS: usize = 6;
const HANDLES: usize = 3;
const ROUNDS: usize = 12;
/// Writes per writer per round.
const WRITES: usize = 4;

/// [`HANDLES`] handles on `root` with a coarse clock. Every other writer
/// dawdles between renaming its values into place and recording them,
/// which gives the others every chance to slip in between, were they
/// allowed to.
async fn dawdling_handles(root: &Path) -> Vec<FsBackend> {
    let mut handles = Vec::new();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..HANDLES {
        let b = FsBackend::open(root).await.unwrap();
        coarse_clock(&b);
        let calls = Arc::clone(&calls);
        set_hook(&b, move |point, _| {
            if point == Point::Placed && calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        handles.push(b);
    }
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_coarse_clock_loads_still_match_the_disk_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let handles = dawdling_handles(root).await;
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let image = handles[0]
            .put(config(&format!("round {round}")))
            .await
            .unwrap();
        // The directory exists before the writers start, so that all their
        // tokens look the same.
        set(&handles[0], image, "last", "nobody").await;
        let start = Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
        let written = Arc::new(AtomicUsize::new(0));
        // One handle loads while the first half of the writes go on: late
        // enough to see some, early enough not to tidy up after the last.
        let loader = {
            let b = handles[HANDLES - 1].clone();
            let (start, written) = (Arc::clone(&start), Arc::clone(&written));
            tokio::spawn(async move {
                start.wait().await;
                while written.load(Ordering::SeqCst) < WRITERS * WRITES / 2 {
                    b.load().await.unwrap();
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let b = handles[i % HANDLES].clone();
                let (start, written) = (Arc::clone(&start), Arc::clone(&written));
                tokio::spawn(async move {
                    start.wait().await;
                    // Its own key, a key every writer sets (the last rename
                    // must win), and a key it adds and then takes away.
                    set(&b, image, &format!("seen-by-{i}"), "yes").await;
                    written.fetch_add(1, Ordering::SeqCst);
                    set(&b, image, "last", &format!("writer-{i}")).await;
                    written.fetch_add(1, Ordering::SeqCst);
                    set(&b, image, &format!("passing-{i}"), "soon gone").await;
                    written.fetch_add(1, Ordering::SeqCst);
                    let mut batch = WriteBatch::new();
                    batch.delete_metadata(image, key(&format!("passing-{i}")));
                    b.write(batch).await.unwrap();
                    written.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        loader.await.unwrap();

        let disk = on_disk(root, &image);
        assert_eq!(disk.len(), WRITERS + 1, "round {round}: {disk:?}");
        let fresh = FsBackend::open(root).await.unwrap();
        coarse_clock(&fresh);
        for (h, b) in handles.iter().chain([&fresh]).enumerate() {
            let got = reported(&b.load().await.unwrap(), &image);
            if got != disk {
                failures.push(format!(
                    "round {round}, handle {h}: load reported {got:?}, disk has {disk:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
