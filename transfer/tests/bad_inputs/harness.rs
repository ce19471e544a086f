//! Running one bad input: the store it runs against, a snapshot of
//! everything that store holds, the verdict on the result and the tally.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, Once};

use futures::FutureExt as _;
use imagecache_core::{ImageId, LeaseId, LeaseResource, Reference};
use imagecache_engine::blob::BlobCache;
use imagecache_store::{CreateOptions, LeaseOptions, Store};

use crate::common;

/// Panics seen, by the name of the thread they happened on.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts every panic, on any thread, before the default hook prints it.
pub fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(name);
            previous(info);
        }));
    });
}

/// Panics so far on threads whose name contains `scope`: the test's own
/// thread (named after the test) and its runtime's blocking threads.
fn panics_in(scope: &str) -> usize {
    PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|name| name.contains(scope))
        .count()
}

/// A runtime that runs everything on the test's thread, and blocking work
/// on threads named after the test, so panics are counted per test.
pub fn runtime() -> tokio::runtime::Runtime {
    let test = std::thread::current()
        .name()
        .unwrap_or("bad-input")
        .to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("{test}-blocking"))
        .build()
        .unwrap()
}

/// What a case ended in.
#[derive(Debug)]
pub enum Verdict {
    /// An error of the expected kind, with its full text.
    Typed(String),
    /// Anything else: accepted, or an error of another kind.
    Untyped(String),
}

/// The verdict on `result`: typed when it is an error that `expected`
/// accepts.
pub fn verdict<T: Debug, E: std::error::Error>(
    result: Result<T, E>,
    expected: impl FnOnce(&E) -> bool,
) -> Verdict {
    match result {
        Err(e) if expected(&e) => Verdict::Typed(imagecache_core::error_text(&e)),
        Err(e) => Verdict::Untyped(format!("unexpected error kind: {e:?}")),
        Ok(v) => Verdict::Untyped(format!("accepted: {:.300}", format!("{v:?}"))),
    }
}

/// Both verdicts must be typed; the texts are joined.
pub fn both(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Typed(x), Verdict::Typed(y)) => Verdict::Typed(format!("{x}\n{y}")),
        (Verdict::Untyped(x), _) | (_, Verdict::Untyped(x)) => Verdict::Untyped(x),
    }
}

/// Whether a text holds a raw control character other than newline and tab.
pub fn has_raw_control(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
}

/// The counts of one part of the corpus.
pub struct Tally {
    scope: &'static str,
    panics_before: usize,
    pub tried: usize,
    pub typed: usize,
    pub changed: usize,
    pub echoed: usize,
    failures: Vec<String>,
}

impl Tally {
    pub fn new(scope: &'static str) -> Self {
        Self {
            scope,
            panics_before: panics_in(scope),
            tried: 0,
            typed: 0,
            changed: 0,
            echoed: 0,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, name: &str, what: String) {
        if self.failures.len() < 40 {
            self.failures.push(format!("{name}: {what}"));
        }
    }

    /// Records one case that needs no store.
    pub async fn case<F: Future<Output = Verdict>>(&mut self, name: &str, run: F) {
        self.record(name, run).await;
    }

    /// Records one case run against `fx`, checking the store is unchanged.
    pub async fn store_case<F: Future<Output = Verdict>>(
        &mut self,
        fx: &Fixture,
        name: &str,
        run: F,
    ) {
        let before = fx.snapshot().await;
        self.record(name, run).await;
        let after = fx.snapshot().await;
        if before != after {
            self.changed += 1;
            let diff = first_difference(&before, &after);
            self.fail(name, format!("the store changed: {diff}"));
        }
    }

    async fn record<F: Future<Output = Verdict>>(&mut self, name: &str, run: F) {
        self.tried += 1;
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(Verdict::Typed(text)) => {
                self.typed += 1;
                if has_raw_control(&text) {
                    self.echoed += 1;
                    self.fail(name, format!("raw control character in {text:?}"));
                }
            }
            Ok(Verdict::Untyped(what)) => self.fail(name, what),
            Err(_) => self.fail(name, "panicked".to_owned()),
        }
    }

    /// Prints the evidence line and fails the test on any failure.
    pub fn finish(self) {
        let panics = panics_in(self.scope) - self.panics_before;
        println!(
            "evidence: bad-input part=library scope={} tried={} typed={} panics={} changed={} echoed={}",
            self.scope, self.tried, self.typed, panics, self.changed, self.echoed
        );
        assert!(
            self.failures.is_empty() && panics == 0 && self.typed == self.tried,
            "{} of {} bad inputs were not refused cleanly ({panics} panics):\n{}",
            self.tried - self.typed + self.changed + self.echoed,
            self.tried,
            self.failures.join("\n")
        );
    }
}

fn first_difference(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let start = at.saturating_sub(80);
    format!(
        "before …{:.200}… after …{:.200}…",
        a.get(start..).unwrap_or(""),
        b.get(start..).unwrap_or("")
    )
}

/// A store with a few images (a chain of three, one named, one held by a
/// lease), a digest name, layers and a manifest in its blob cache.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub backend: imagecache_backends::Backend,
    pub store: Store,
    pub blobs: BlobCache,
    /// The chain base → child → grandchild, then a named image, then one
    /// held by the lease.
    pub ids: Vec<ImageId>,
    pub lease: LeaseId,
    pub digest_name: Reference,
    /// A valid config that is not in the store.
    pub fresh_config: Vec<u8>,
    /// A layer tar the blob cache holds.
    pub layer: Vec<u8>,
}

impl Fixture {
    pub async fn new(kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = match kind {
            "fs" => imagecache_backends::open(&format!("fs://{}", dir.path().join("fs").display()))
                .await
                .unwrap(),
            _ => imagecache_backends::open(&format!(
                "redb://{}",
                dir.path().join("store.redb").display()
            ))
            .await
            .unwrap(),
        };
        let store = Store::open(backend.images()).await.unwrap();
        let blobs = BlobCache::new(backend.blobs()).unwrap();
        let layers: Vec<Vec<u8>> = (0..3)
            .map(|i| common::layer(&[(&format!("f{i}"), format!("layer {i}").as_bytes())]))
            .collect();
        for l in &layers {
            blobs.put_bytes(&common::sha(l), l.clone()).await.unwrap();
        }
        let diff: Vec<_> = layers.iter().map(|l| common::sha(l)).collect();
        let mut ids = Vec::new();
        for depth in 1..=3 {
            let steps: Vec<&str> = ["ADD a /", "ADD b /", "ADD c /"][..depth].to_vec();
            let config = common::config(&diff[..depth], &steps, "amd64");
            let mut options = CreateOptions::new().with_built_locally(true);
            if let Some(parent) = ids.last() {
                options = options.with_parent(*parent);
            }
            ids.push(store.create_with(config, options).await.unwrap());
        }
        let named = store
            .create(common::config(&diff[..1], &["ADD named /"], "arm64"))
            .await
            .unwrap();
        let held = store
            .create(common::config(&diff[..1], &["ADD held /"], "s390x"))
            .await
            .unwrap();
        ids.extend([named, held]);
        let name = Reference::parse("example.com/team/app:1").unwrap();
        store.tag(&name, &named).await.unwrap();
        let digest_name = Reference::parse(&format!(
            "example.com/team/app@{}",
            common::sha(b"manifest")
        ))
        .unwrap();
        store.tag(&digest_name, &named).await.unwrap();
        let lease = LeaseId::new("build-1").unwrap();
        store
            .create_lease(
                LeaseOptions::new()
                    .with_id(lease.clone())
                    .with_ttl(std::time::Duration::from_secs(3600))
                    .with_resource(LeaseResource::Image(held)),
            )
            .await
            .unwrap();
        let manifest = br#"{"schemaVersion":2,"layers":[]}"#;
        blobs
            .put_manifest(&common::sha(manifest), &manifest[..], None)
            .await
            .unwrap();
        let fresh_config = common::config(&diff[..2], &["ADD fresh /", "RUN x"], "riscv64");
        Self {
            dir,
            backend,
            store,
            blobs,
            ids,
            lease,
            digest_name,
            fresh_config,
            layer: layers[0].clone(),
        }
    }

    /// Everything the store holds, read back from the backend (images with
    /// their metadata, names, leases, blobs with their notes), and the image
    /// store's own view (IDs, parents, names).
    pub async fn snapshot(&self) -> String {
        let mut loaded = self.backend.images().load().await.unwrap();
        loaded.quarantined.clear();
        let blob_backend = self.backend.blobs();
        let mut blobs = blob_backend.list_blobs().await.unwrap();
        blobs.sort_by_key(|b| b.digest);
        let mut notes = BTreeMap::new();
        for b in &blobs {
            let n = blob_backend.blob_notes(&b.digest).await.unwrap();
            notes.insert(b.digest.to_string(), format!("{n:?}"));
        }
        let mut ids = self.store.ids();
        ids.sort();
        let parents: Vec<_> = ids.iter().map(|id| self.store.parent(id).ok()).collect();
        let names = self.store.names();
        format!("{loaded:?}\n{blobs:?}\n{notes:?}\n{ids:?}\n{parents:?}\n{names:?}")
    }
}
