//! Image store cases: Docker's `store_test.go`, and what the store promises
//! beyond it (opening without reading configs, cycles refused, corrupt
//! entries quarantined, bad input changing nothing, concurrent handles).
//!
//! Cases:
//! `docker_store_create`, `docker_store_restore`, `docker_store_add_delete`,
//! `docker_store_search_after_delete`, `docker_store_delete_not_existing`,
//! `docker_store_parent_reset`, `docker_store_get_and_set_last_updated`,
//! `docker_store_len`, `store_reopen_keeps_everything`,
//! `store_open_reads_no_config`, `store_reads_each_config_once`,
//! `store_bad_input_changes_nothing`, `store_parent_cycle_is_refused`,
//! `store_delete_orphans_children`, `store_corrupt_config_is_quarantined`,
//! `store_foreign_entries_are_summarised_once`, `store_batch_create_with_chain`,
//! `store_concurrent_handles_stay_consistent`, `store_concurrent_creates_agree`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use imagecache_core::{
    Capabilities, ConfigError, ImageId, Lease, MetadataKey, Result as CoreResult, Snapshot,
    StoreBackend, StoreBackendExt, Usage, WriteBatch,
};
use imagecache_store::{CreateOptions, Error, Problem, RefCountLayers, Store, StoreOptions};

use crate::check::{Must as _, MustFail as _};
use crate::{Fixture, Harness, Outcome};

mod concurrency;

pub use concurrency::*;

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) store [
            docker_store_create,
            docker_store_restore,
            docker_store_add_delete,
            docker_store_search_after_delete,
            docker_store_delete_not_existing,
            docker_store_parent_reset,
            docker_store_get_and_set_last_updated,
            docker_store_len,
            store_reopen_keeps_everything,
            store_open_reads_no_config,
            store_reads_each_config_once,
            store_bad_input_changes_nothing,
            store_parent_cycle_is_refused,
            store_delete_orphans_children,
            store_corrupt_config_is_quarantined,
            store_foreign_entries_are_summarised_once,
            store_batch_create_with_chain,
            store_concurrent_handles_stay_consistent,
            store_concurrent_creates_agree,
        ] }
    };
}

pub(crate) const CASES: &[crate::Case] = crate::__store_cases!(__case_registry!());

/// A distinct, valid config numbered `n`.
pub(crate) fn config(n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:{:02}Z","comment":"image {n}","rootfs":{{"type":"layers","diff_ids":["sha256:{:064x}"]}},"history":[{{"created_by":"step {n}"}}]}}"#,
        n % 60,
        n + 1
    ))
}

async fn open(h: &Arc<dyn Harness>) -> (Box<dyn Fixture>, Arc<dyn StoreBackend>, Store) {
    let (fixture, backend) = crate::images(h).await;
    let store = Store::open(backend.clone())
        .await
        .unwrap_or_else(|e| panic!("opening a store on a fresh backend failed: {e}"));
    (fixture, backend, store)
}

/// Everything observable about a store, to compare before and after.
fn observe(store: &Store) -> BTreeMap<ImageId, (Option<ImageId>, Vec<ImageId>, bool)> {
    store
        .ids()
        .into_iter()
        .map(|id| {
            (
                id,
                (
                    store.parent(&id).unwrap_or(None),
                    store.children(&id),
                    store.is_built_locally(&id).unwrap_or(false),
                ),
            )
        })
        .collect()
}

/// Docker `TestCreate`: `{}` is refused with `invalid image JSON, no RootFS key`.
pub async fn docker_store_create(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    let err = store
        .create(Bytes::from_static(b"{}"))
        .await
        .must_fail("an error");
    assert!(
        matches!(err, Error::InvalidConfig(ConfigError::NoRootFs)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "invalid image JSON, no RootFS key");
    assert!(store.is_empty());
    Outcome::Passed
}

/// Docker `TestRestore`: two valid configs and the bytes `invalid`; the
/// invalid one is left out (and reported), parents and children restored,
/// search by `sha256:` + short hex and by bare hex, a non-prefix substring
/// is `No such image`.
pub async fn docker_store_restore(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend) = crate::images(&h).await;
    let id1 = backend
        .put(Bytes::from_static(
            br#"{"comment": "abc", "rootfs": {"type": "layers"}}"#,
        ))
        .await
        .must("put id1");
    let id2 = backend
        .put(Bytes::from_static(
            br#"{"comment": "def", "rootfs": {"type": "layers", "diff_ids": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}"#,
        ))
        .await
        .must("put id2");
    let invalid = backend
        .put(Bytes::from_static(b"invalid"))
        .await
        .must("put invalid");
    assert_eq!(
        invalid.to_string(),
        "sha256:f1234d75178d892a133a410355a5a990cf75d2f33eba25d575943d4df632f3a4"
    );
    backend
        .set_metadata(&id2, &MetadataKey::PARENT, id1.to_string().into())
        .await
        .must("set parent");

    let store = Store::open_with(backend.clone(), StoreOptions::new().without_layers())
        .await
        .must("open");
    assert_eq!(store.len(), 2);
    assert!(!store.contains(&invalid));
    assert!(
        store.report().problems.iter().any(|p| matches!(p,
            Problem::Quarantined(q) if q.name == invalid.to_string())),
        "the invalid config must be reported: {:?}",
        store.report()
    );
    assert_eq!(store.get(&id1).await.must("get id1").comment, "abc");
    assert_eq!(store.get(&id1).await.must("get id1").id(), id1);
    assert_eq!(store.parent(&id1).must("parent id1"), None);
    assert_eq!(store.parent(&id2).must("parent id2"), Some(id1));
    assert_eq!(store.children(&id1), vec![id2]);
    assert_eq!(store.heads(), vec![id2]);

    let hex = id1.hex();
    // The shortest prefixes that tell the two IDs apart.
    let common = hex
        .chars()
        .zip(id2.hex().chars())
        .take_while(|(a, b)| a == b)
        .count();
    let short = &hex[..(common + 1).max(3)];
    assert_eq!(store.search(&format!("sha256:{short}")).must("search"), id1);
    assert_eq!(
        store.search(&hex[..(common + 1).max(6)]).must("search"),
        id1
    );
    let err = store.search(&hex[1..6]).must_fail("an error");
    assert!(err.to_string().contains(&hex[1..6]), "{err}");
    assert!(err.is_not_found());
    Outcome::Passed
}

/// Docker `TestAddDelete`: the fixed bytes get ID `sha256:8d25a9c4…eb993`;
/// after delete the image is gone, the other stays, its child is orphaned.
pub async fn docker_store_add_delete(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend) = crate::images(&h).await;
    // Docker's test uses a layer store that accepts anything, and a bare-hex
    // diff ID; a store without layer references behaves the same.
    let store = Store::open_with(backend, StoreOptions::new().without_layers())
        .await
        .must("open");
    let id1 = store
        .create(Bytes::from_static(
            br#"{"comment": "abc", "rootfs": {"type": "layers", "diff_ids": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}"#,
        ))
        .await
        .must("create");
    assert_eq!(
        id1.to_string(),
        "sha256:8d25a9c45df515f9d0fe8e4a6b1c64dd3b965a84790ddbcc7954bb9bc89eb993"
    );
    assert_eq!(store.get(&id1).await.must("get").comment, "abc");
    let id2 = store
        .create(Bytes::from_static(
            br#"{"comment": "def", "rootfs": {"type": "layers", "diff_ids": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}"#,
        ))
        .await
        .must("create");
    store.set_parent(&id2, &id1).await.must("set parent");
    assert_eq!(store.parent(&id2).must("parent"), Some(id1));
    store.delete(&id1).await.must("delete");
    let err = store.get(&id1).await.must_fail("an error");
    assert!(err.to_string().contains("failed to get digest"), "{err}");
    assert_eq!(store.get(&id2).await.must("get id2").comment, "def");
    assert_eq!(store.parent(&id2).must("parent"), None);
    // The orphaning reached the backend too.
    let again = Store::open_with(
        store.backend().clone(),
        StoreOptions::new().without_layers(),
    )
    .await
    .must("reopen");
    assert_eq!(again.parent(&id2).must("parent"), None);
    assert!(!again.contains(&id1));
    Outcome::Passed
}

/// Docker `TestSearchAfterDelete`: a 15-character search finds the image,
/// and after delete says `No such image`.
pub async fn docker_store_search_after_delete(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    let id = store.create(config(1)).await.must("create");
    let term = &id.to_string()[..15];
    assert_eq!(store.search(term).must("search"), id);
    store.delete(&id).await.must("delete");
    let err = store.search(term).must_fail("an error");
    assert!(err.to_string().contains("No such image"), "{err}");
    Outcome::Passed
}

/// Docker `TestDeleteNotExisting`: deleting an unknown image is a not-found error.
pub async fn docker_store_delete_not_existing(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    let unknown = ImageId::of_config(b"i_dont_exists");
    let err = store.delete(&unknown).await.must_fail("an error");
    assert!(matches!(err, Error::UnknownImage { .. }), "{err:?}");
    assert!(err.is_not_found());
    assert!(err.to_string().contains("unrecognized image ID"), "{err}");
    Outcome::Passed
}

/// Docker `TestParentReset`: a new parent replaces the old one in both children lists.
pub async fn docker_store_parent_reset(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    let id = store.create(config(1)).await.must("create");
    let id2 = store.create(config(2)).await.must("create");
    let id3 = store.create(config(3)).await.must("create");
    store.set_parent(&id, &id2).await.must("set parent");
    assert_eq!(store.children(&id2).len(), 1);
    store.set_parent(&id, &id3).await.must("set parent");
    assert_eq!(store.children(&id2).len(), 0);
    assert_eq!(store.children(&id3), vec![id]);
    Outcome::Passed
}

/// Docker `TestGetAndSetLastUpdated`: unset is `None` (not an error); set is now.
pub async fn docker_store_get_and_set_last_updated(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend, store) = open(&h).await;
    let id = store.create(config(1)).await.must("create");
    assert_eq!(store.last_updated(&id).must("last updated"), None);
    let before = imagecache_core::Timestamp::now_utc();
    let set = store.set_last_updated(&id).await.must("set");
    assert_eq!(store.last_updated(&id).must("last updated"), Some(set));
    assert_ne!(set.cmp_instant(&before), std::cmp::Ordering::Less);
    // Stored as RFC 3339 with nanoseconds, as Docker writes it.
    let raw = backend
        .get_metadata(&id, &MetadataKey::LAST_UPDATED)
        .await
        .must("metadata");
    assert_eq!(
        imagecache_core::Timestamp::parse_rfc3339(std::str::from_utf8(&raw).must("utf8"))
            .must("rfc3339"),
        set
    );
    Outcome::Passed
}

/// Docker `TestStoreLen`: ten creates give a length of ten, equal to the map's.
pub async fn docker_store_len(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    for n in 0..10 {
        store.create(config(n)).await.must("create");
    }
    assert_eq!(store.len(), 10);
    assert_eq!(store.map().await.must("map").len(), 10);
    Outcome::Passed
}

/// A store opened again on the same location has the same images, parents,
/// children, heads, built-locally marks and last-updated times.
pub async fn store_reopen_keeps_everything(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, _backend, store) = open(&h).await;
    let a = store.create(config(1)).await.must("create");
    let b = store
        .create_with(
            config(2),
            CreateOptions::new().with_parent(a).with_built_locally(true),
        )
        .await
        .must("create");
    let c = store
        .create_with(config(3), CreateOptions::new().with_parent(a))
        .await
        .must("create");
    let t = store.set_last_updated(&c).await.must("last updated");
    let Some(other) = crate::reopen_images(&*fixture).await else {
        return Outcome::skipped("store_reopen_keeps_everything", "harness cannot reopen");
    };
    let again = Store::open(other).await.must("reopen");
    assert_eq!(observe(&again), observe(&store));
    assert_eq!(again.heads(), {
        let mut v = vec![b, c];
        v.sort();
        v
    });
    assert_eq!(again.last_updated(&c).must("last updated"), Some(t));
    assert_eq!(again.get(&b).await.must("get").comment, "image 2");
    Outcome::Passed
}

/// A backend wrapper counting config reads, to check what opening costs.
#[derive(Debug)]
struct CountingBackend {
    inner: Arc<dyn StoreBackend>,
    gets: AtomicUsize,
}

impl std::fmt::Display for CountingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counting({})", self.inner)
    }
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl StoreBackend for CountingBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn is_instrumented(&self) -> bool {
        false
    }
    async fn write(&self, batch: WriteBatch) -> CoreResult<()> {
        self.inner.write(batch).await
    }
    async fn get(&self, id: &ImageId) -> CoreResult<Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }
    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> CoreResult<Bytes> {
        self.inner.get_metadata(id, key).await
    }
    async fn load(&self) -> CoreResult<Snapshot> {
        self.inner.load().await
    }
    async fn leases(&self) -> CoreResult<Vec<Lease>> {
        self.inner.leases().await
    }
    async fn usage(&self) -> CoreResult<Usage> {
        self.inner.usage().await
    }
    async fn compact(&self) -> CoreResult<Option<imagecache_core::Compaction>> {
        self.inner.compact().await
    }
}

fn counting(inner: Arc<dyn StoreBackend>) -> Arc<CountingBackend> {
    Arc::new(CountingBackend {
        inner,
        gets: AtomicUsize::new(0),
    })
}

/// Opening a store the project wrote reads no config at all: the indexes
/// come from the summaries stored beside each image.
pub async fn store_open_reads_no_config(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, _backend, store) = open(&h).await;
    let mut parent = None;
    for n in 0..20 {
        let mut o = CreateOptions::new().with_built_locally(n % 2 == 0);
        if let Some(p) = parent {
            o = o.with_parent(p);
        }
        parent = Some(store.create_with(config(n), o).await.must("create"));
    }
    let Some(other) = crate::reopen_images(&*fixture).await else {
        return Outcome::skipped("store_open_reads_no_config", "harness cannot reopen");
    };
    let counted = counting(other);
    let again = Store::open(counted.clone()).await.must("reopen");
    assert_eq!(counted.gets.load(Ordering::SeqCst), 0, "open read configs");
    assert_eq!(again.report().configs_read, 0);
    assert_eq!(observe(&again), observe(&store));
    Outcome::Passed
}

/// A config is read and verified once; later gets are served from memory.
pub async fn store_reads_each_config_once(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend) = crate::images(&h).await;
    let id = backend.put(config(7)).await.must("put");
    let counted = counting(backend);
    let store = Store::open(counted.clone()).await.must("open");
    // The entry had no summary, so opening read it once to build one.
    assert_eq!(counted.gets.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        assert_eq!(store.get(&id).await.must("get").comment, "image 7");
    }
    assert_eq!(store.map().await.must("map").len(), 1);
    assert_eq!(counted.gets.load(Ordering::SeqCst), 1, "configs re-read");
    Outcome::Passed
}

/// What a bad config must be refused as.
type Expect = fn(&Error) -> bool;

/// Configs the store must refuse, each with the error it must give.
fn bad_configs() -> Vec<(&'static str, Bytes, Expect)> {
    vec![
    ("malformed JSON", Bytes::from_static(b"{\"rootfs\": "), |e| {
        matches!(e, Error::InvalidConfig(ConfigError::Malformed { .. }))
    }),
    ("not an object", Bytes::from_static(b"[1,2]"), |e| {
        matches!(e, Error::InvalidConfig(ConfigError::Malformed { .. }))
    }),
    ("wrong type", Bytes::from_static(br#"{"rootfs":{"type":"layers"},"history":"x"}"#), |e| {
        matches!(e, Error::InvalidConfig(ConfigError::Malformed { .. }))
    }),
    ("{}", Bytes::from_static(b"{}"), |e| {
        matches!(e, Error::InvalidConfig(ConfigError::NoRootFs))
    }),
    ("rootfs null", Bytes::from_static(br#"{"rootfs":null}"#), |e| {
        matches!(e, Error::InvalidConfig(ConfigError::NoRootFs))
    }),
    (
        "too many non-empty history entries",
        Bytes::from_static(
            br#"{"rootfs":{"type":"layers","diff_ids":["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]},"history":[{},{"empty_layer":false}]}"#,
        ),
        |e| matches!(e, Error::InvalidConfig(ConfigError::TooManyHistoryLayers { non_empty: 2, diff_ids: 1 })),
    ),
    (
        "diff_id that is no digest, with layer references on",
        Bytes::from_static(br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../x"]}}"#),
        |e| matches!(e, Error::InvalidConfig(ConfigError::InvalidField { .. })),
    ),
    ("empty", Bytes::new(), |e| matches!(e, Error::InvalidConfig(ConfigError::Empty))),
    (
        "over the size limit",
        Bytes::from(format!(r#"{{"rootfs":{{}},"comment":"{}"}}"#, "x".repeat(5000))),
        |e| matches!(e, Error::InvalidConfig(ConfigError::TooLarge { limit: 4096, .. })),
    ),
]
}

/// Operations on unknown images, cycles and bad searches, each refused
/// with its typed error; `b` is a child of `a`.
async fn refuse_bad_operations(store: &Store, a: ImageId, b: ImageId) {
    let unknown = ImageId::of_config(b"unknown");
    let err = store
        .create_with(config(3), CreateOptions::new().with_parent(unknown))
        .await
        .must_fail("an error");
    assert!(
        matches!(err, Error::UnknownParent { parent } if parent == unknown),
        "{err:?}"
    );
    assert!(err.to_string().contains("unknown parent image ID"), "{err}");
    let err = store.set_parent(&a, &b).await.must_fail("an error");
    assert!(matches!(err, Error::ParentCycle { .. }), "{err:?}");
    let err = store.set_parent(&a, &a).await.must_fail("an error");
    assert!(matches!(err, Error::ParentCycle { .. }), "{err:?}");
    let err = store.set_parent(&unknown, &a).await.must_fail("an error");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(matches!(store.search(""), Err(Error::EmptySearch)));
    let err = store.search("sha256:").must_fail("an error");
    assert!(matches!(err, Error::NoSuchImage { .. }), "{err:?}");
    let err = store.delete(&unknown).await.must_fail("an error");
    assert!(matches!(err, Error::UnknownImage { .. }), "{err:?}");
    // An ambiguous prefix: "sha256:" plus nothing of the hex is refused
    // above; every ID matches the empty hex prefix written with a digit set.
    let ids = store.ids();
    let common = ids[0]
        .hex()
        .chars()
        .zip(ids[1].hex().chars())
        .take_while(|(x, y)| x == y)
        .count();
    if common > 0 {
        let err = store.search(&ids[0].hex()[..common]).must_fail("an error");
        assert!(matches!(err, Error::Ambiguous { .. }), "{err:?}");
        assert!(err.to_string().contains("ambiguous digest string"), "{err}");
    }
}

/// Every kind of bad input is a typed error that names the problem, and
/// neither the store nor the backend changes.
pub async fn store_bad_input_changes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend) = crate::images(&h).await;
    let store = Store::open_with(
        backend.clone(),
        StoreOptions::new().with_max_config_size(4096),
    )
    .await
    .must("open");
    let a = store.create(config(1)).await.must("create");
    let b = store
        .create_with(config(2), CreateOptions::new().with_parent(a))
        .await
        .must("create");
    let before = observe(&store);
    let before_backend = backend.load().await.must("load");

    for (what, bytes, expected) in bad_configs() {
        let err = store.create(bytes).await.must_fail(what);
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }
    refuse_bad_operations(&store, a, b).await;

    assert_eq!(observe(&store), before);
    assert_eq!(backend.load().await.must("load"), before_backend);
    Outcome::Passed
}

/// Parent links never form a cycle, however they are attempted.
pub async fn store_parent_cycle_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, _, store) = open(&h).await;
    let mut chain = vec![store.create(config(0)).await.must("create")];
    for n in 1..6 {
        let id = store
            .create_with(config(n), CreateOptions::new().with_parent(chain[n - 1]))
            .await
            .must("create");
        chain.push(id);
    }
    for i in 0..chain.len() {
        for j in i..chain.len() {
            let err = store
                .set_parent(&chain[i], &chain[j])
                .await
                .must_fail("an error");
            assert!(
                matches!(err, Error::ParentCycle { .. }),
                "{i}->{j}: {err:?}"
            );
        }
    }
    // Re-creating an ancestor with its descendant as parent is refused too.
    let err = store
        .create_with(config(0), CreateOptions::new().with_parent(chain[5]))
        .await
        .must_fail("an error");
    assert!(matches!(err, Error::ParentCycle { .. }), "{err:?}");
    // Moving a subtree sideways is fine.
    let side = store.create(config(99)).await.must("create");
    store.set_parent(&chain[3], &side).await.must("set parent");
    assert_eq!(store.children(&side), vec![chain[3]]);
    assert!(store.children(&chain[2]).is_empty());
    Outcome::Passed
}

/// Deleting an image orphans its children (in memory and in the backend)
/// and never deletes them.
pub async fn store_delete_orphans_children(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend, store) = open(&h).await;
    let p = store.create(config(0)).await.must("create");
    let mut kids = Vec::new();
    for n in 1..4 {
        kids.push(
            store
                .create_with(config(n), CreateOptions::new().with_parent(p))
                .await
                .must("create"),
        );
    }
    kids.sort();
    assert_eq!(store.children(&p), kids);
    assert!(!store.heads().contains(&p));
    store.delete(&p).await.must("delete");
    for k in &kids {
        assert_eq!(store.parent(k).must("parent"), None);
        let err = backend
            .get_metadata(k, &MetadataKey::PARENT)
            .await
            .must_fail("an error");
        assert!(err.is_not_found(), "{err:?}");
    }
    assert_eq!(store.heads(), kids);
    assert_eq!(store.len(), 3);
    Outcome::Passed
}

/// A config damaged in storage is found when read: the read fails with
/// `Corrupt`, the image is quarantined and reported, and a reopened store
/// no longer lists it.
pub async fn store_corrupt_config_is_quarantined(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, backend, store) = open(&h).await;
    let good = store.create(config(1)).await.must("create");
    let bad = store.create(config(2)).await.must("create");
    // Reopen so the config is no longer in memory.
    let store = Store::open(backend.clone()).await.must("reopen");
    if !crate::corrupt_config(
        &*fixture,
        &bad,
        Bytes::from_static(b"{\"rootfs\":{}} damaged"),
    )
    .await
    {
        return Outcome::skipped(
            "store_corrupt_config_is_quarantined",
            "harness cannot corrupt content",
        );
    }
    let err = store.get(&bad).await.must_fail("an error");
    assert!(
        matches!(err, Error::Corrupt { id, .. } if id == bad),
        "{err:?}"
    );
    assert!(!store.contains(&bad));
    assert!(
        store
            .report()
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Unreadable { id, .. } if *id == bad))
    );
    let snapshot = backend.load().await.must("load");
    assert!(snapshot.images.iter().all(|e| e.id != bad));
    assert!(
        snapshot
            .quarantined
            .iter()
            .any(|q| q.name == bad.to_string()),
        "{snapshot:?}"
    );
    let again = Store::open(backend).await.must("reopen");
    assert_eq!(again.ids(), vec![good]);
    Outcome::Passed
}

/// Entries written without a summary (by Docker, or another tool) are read,
/// verified and summarised on the first open only.
pub async fn store_foreign_entries_are_summarised_once(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, backend) = crate::images(&h).await;
    let mut ids = BTreeSet::new();
    for n in 0..5 {
        ids.insert(backend.put(config(n)).await.must("put"));
    }
    let first = counting(backend.clone());
    let store = Store::open(first.clone()).await.must("open");
    assert_eq!(store.report().configs_read, 5);
    assert_eq!(first.gets.load(Ordering::SeqCst), 5);
    assert_eq!(store.ids().into_iter().collect::<BTreeSet<_>>(), ids);
    let Some(other) = crate::reopen_images(&*fixture).await else {
        return Outcome::skipped(
            "store_foreign_entries_are_summarised_once",
            "harness cannot reopen",
        );
    };
    let second = counting(other);
    let again = Store::open(second.clone()).await.must("reopen");
    assert_eq!(second.gets.load(Ordering::SeqCst), 0);
    assert_eq!(again.len(), 5);
    Outcome::Passed
}

/// A batch of creates may chain parents inside the batch, and is refused
/// whole when one item is bad.
pub async fn store_batch_create_with_chain(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend, store) = open(&h).await;
    let ids: Vec<ImageId> = (0..5).map(|n| ImageId::of_config(&config(n))).collect();
    let items = (0..5)
        .map(|n| {
            let mut o = CreateOptions::new().with_built_locally(true);
            if n > 0 {
                o = o.with_parent(ids[n - 1]);
            }
            (config(n), o)
        })
        .collect();
    assert_eq!(store.create_batch(items).await.must("batch"), ids);
    for n in 1..5 {
        assert_eq!(store.parent(&ids[n]).must("parent"), Some(ids[n - 1]));
    }
    assert_eq!(store.heads(), vec![ids[4]]);
    let before = backend.load().await.must("load");
    let err = store
        .create_batch(vec![
            (config(10), CreateOptions::new()),
            (Bytes::from_static(b"{}"), CreateOptions::new()),
        ])
        .await
        .must_fail("an error");
    assert!(
        matches!(err, Error::InvalidConfig(ConfigError::NoRootFs)),
        "{err:?}"
    );
    assert_eq!(store.len(), 5);
    assert_eq!(backend.load().await.must("load"), before);
    Outcome::Passed
}
