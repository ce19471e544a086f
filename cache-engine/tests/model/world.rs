//! The real thing: a backend behind the fault injector, with a store, a
//! blob cache and the life-cycle services over it; operations run on it,
//! and its state is read back through the backend without faults.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imagecache_backends::MemoryBackend;
use imagecache_backends::fs::{FsBackend, FsConfig};
use imagecache_backends::redb::RedbBackend;
use imagecache_conformance::faults::{FaultBlobStore, FaultInjector, FaultStore, is_injected};
use imagecache_core::{
    BlobBackend, BlobBackendExt as _, ByteStream, Digest, ImageId, StoreBackend,
};
use imagecache_engine::blob::BlobCache;
use imagecache_engine::lifecycle::{self, Lifecycle, LifecycleOptions, Policy};
use imagecache_store::{CreateOptions, LeaseOptions, Store};

use super::pools::{DIGESTS, IMAGES, LAYERS, LEASES, NAMES, PLAIN, Pools};
use super::spec::{Links, Op, Res, Ret, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Fs,
    Redb,
}

/// An operation that failed: the error variant's name, whether an injected
/// fault is in its chain, and its text.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: &'static str,
    pub injected: bool,
    pub text: String,
}

impl Failure {
    fn of(kind: &'static str, err: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            kind,
            injected: is_injected(err),
            text: imagecache_core::error_text(err),
        }
    }
}

fn store_kind(e: &imagecache_store::Error) -> &'static str {
    use imagecache_store::Error as E;
    match e {
        E::NotFound { .. } => "NotFound",
        E::UnknownImage { .. } => "UnknownImage",
        E::NameNotFound { .. } => "NameNotFound",
        E::UnknownParent { .. } => "UnknownParent",
        E::ParentCycle { .. } => "ParentCycle",
        E::Held { .. } => "Held",
        E::LeaseNotFound { .. } => "LeaseNotFound",
        E::LeaseExists { .. } => "LeaseExists",
        E::Corrupt { .. } => "Corrupt",
        E::Collecting { .. } => "Collecting",
        E::Backend(_) => "Backend",
        _ => "Other",
    }
}

fn store_failure(e: &imagecache_store::Error) -> Failure {
    Failure::of(store_kind(e), e)
}

fn lifecycle_failure(e: &lifecycle::Error) -> Failure {
    let kind = match e {
        lifecycle::Error::Held { .. } => "Held",
        lifecycle::Error::Store(s) => store_kind(s),
        lifecycle::Error::Blob(b) => blob_kind(b),
        lifecycle::Error::Backend(_) => "Backend",
        _ => "Other",
    };
    Failure::of(kind, e)
}

fn blob_kind(e: &imagecache_engine::blob::Error) -> &'static str {
    use imagecache_engine::blob::Error as E;
    match e {
        E::Backend { .. } => "Backend",
        E::Read { .. } => "Read",
        E::Source { .. } => "Source",
        E::Corrupt { .. } => "BlobCorrupt",
        E::Interrupted { .. } => "Interrupted",
        _ => "BlobOther",
    }
}

fn blob_failure(e: &imagecache_engine::blob::Error) -> Failure {
    Failure::of(blob_kind(e), e)
}

/// The handles over one opening of the backend.
struct Handles {
    /// The backend itself, read without faults.
    images: Arc<dyn StoreBackend>,
    blobs: Arc<dyn BlobBackend>,
    /// The store and services under test, over the fault wrappers.
    lc: Lifecycle,
}

pub struct World {
    kind: Kind,
    dir: tempfile::TempDir,
    memory: MemoryBackend,
    pub faults: FaultInjector,
    handles: Option<Handles>,
    /// Opens of the store that failed and were retried.
    pub failed_opens: u64,
}

impl World {
    pub async fn new(kind: Kind, faults: FaultInjector) -> Self {
        let mut world = Self {
            kind,
            dir: tempfile::tempdir().expect("a temporary directory"),
            memory: MemoryBackend::new(),
            faults,
            handles: None,
            failed_opens: 0,
        };
        world.open().await;
        world
    }

    fn h(&self) -> &Handles {
        self.handles.as_ref().expect("the world is open")
    }

    pub fn store(&self) -> &Store {
        self.h().lc.store()
    }

    fn cache(&self) -> &BlobCache {
        self.h()
            .lc
            .blobs()
            .expect("the life cycle has a blob cache")
    }

    async fn raw(&self) -> (Arc<dyn StoreBackend>, Arc<dyn BlobBackend>) {
        match self.kind {
            Kind::Memory => (Arc::new(self.memory.clone()), Arc::new(self.memory.clone())),
            Kind::Fs => {
                // Durability is not what this test is about; fsync only
                // slows it down.
                let config = FsConfig::new(self.dir.path().join("fs")).with_fsync(false);
                let b = Arc::new(FsBackend::open_with(config).await.expect("open fs"));
                (b.clone(), b)
            }
            Kind::Redb => {
                let path = self.dir.path().join("model.redb");
                let b = Arc::new(RedbBackend::open(path).await.expect("open redb"));
                (b.clone(), b)
            }
        }
    }

    /// Opens the backend and the store over the fault wrappers; an open
    /// that an injected fault fails is retried without faults.
    async fn open(&mut self) {
        // Every handle of the last opening goes first: a redb file opens
        // once at a time.
        self.handles = None;
        let (images, blobs) = self.raw().await;
        let faulty_images: Arc<dyn StoreBackend> =
            Arc::new(FaultStore::new(images.clone(), self.faults.clone()));
        let faulty_blobs: Arc<dyn BlobBackend> =
            Arc::new(FaultBlobStore::new(blobs.clone(), self.faults.clone()));
        let store = match Store::open(faulty_images.clone()).await {
            Ok(store) => store,
            Err(e) => {
                let failure = store_failure(&e);
                assert!(
                    failure.injected && failure.kind == "Backend",
                    "opening the store failed without an injected fault, or misreported one: {failure:?}"
                );
                self.failed_opens += 1;
                let active = self.faults.is_active();
                self.faults.set_active(false);
                let store = Store::open(faulty_images)
                    .await
                    .expect("open without faults");
                self.faults.set_active(active);
                store
            }
        };
        let cache = BlobCache::new(faulty_blobs).expect("a blob cache");
        let options = LifecycleOptions::new()
            .with_blob_grace(Duration::ZERO)
            // A collection's lease left behind by a failure must not make
            // the next lease wait for it.
            .with_collection_ttl(Duration::from_millis(1));
        let lc = Lifecycle::with_options(store, Some(cache), options);
        self.handles = Some(Handles { images, blobs, lc });
    }

    /// Runs one operation.
    pub async fn exec(&mut self, op: &Op, pools: &Pools) -> Result<Ret, Failure> {
        let image = |i: &usize| pools.images[i % IMAGES].id;
        match op {
            Op::Create { image: i, parent } => {
                let mut options = CreateOptions::new();
                if let Some(p) = parent {
                    options = options.with_parent(image(p));
                }
                let config = pools.images[i % IMAGES].config.clone();
                self.store()
                    .create_with(config, options)
                    .await
                    .map(Ret::Id)
                    .map_err(|e| store_failure(&e))
            }
            Op::SetParent { image: i, parent } => self
                .store()
                .set_parent(&image(i), &image(parent))
                .await
                .map(|()| Ret::Unit)
                .map_err(|e| store_failure(&e)),
            Op::Delete { image: i } => self
                .store()
                .delete(&image(i))
                .await
                .map(|_| Ret::Unit)
                .map_err(|e| store_failure(&e)),
            Op::Remove { image: i } => self.remove(image(i)).await,
            Op::Tag { name, image: i } => self
                .store()
                .tag(&pools.names[name % NAMES], &image(i))
                .await
                .map(Ret::Moved)
                .map_err(|e| store_failure(&e)),
            Op::Untag { name } => self
                .store()
                .untag(&pools.names[name % NAMES])
                .await
                .map(Ret::Id)
                .map_err(|e| store_failure(&e)),
            Op::Hold { lease, resources } => self.hold(pools, *lease, resources).await,
            Op::Release { lease } => self
                .store()
                .delete_lease(&pools.leases[lease % LEASES])
                .await
                .map(Ret::Existed)
                .map_err(|e| store_failure(&e)),
            Op::Collect { all } => self.collect(*all).await,
            Op::Reopen => {
                self.open().await;
                Ok(Ret::Unit)
            }
            Op::PutBlob { .. } | Op::PutLayer { .. } | Op::GetBlob { .. } => {
                self.exec_blob(op, pools).await
            }
        }
    }

    async fn exec_blob(&self, op: &Op, pools: &Pools) -> Result<Ret, Failure> {
        let cache = self.cache();
        match op {
            Op::PutBlob { blob } => {
                let (data, digest) = &pools.plain[blob % PLAIN];
                cache
                    .put_bytes(digest, data.clone())
                    .await
                    .map(|_| Ret::Unit)
                    .map_err(|e| blob_failure(&e))
            }
            Op::PutLayer { layer, gzip } => {
                let layer = &pools.layers[layer % LAYERS];
                let (digest, data) = if *gzip {
                    (layer.compressed, layer.gz.clone())
                } else {
                    (layer.diff, layer.raw.clone())
                };
                cache
                    .put_layer(&digest, chunks(data))
                    .await
                    .map(|_| Ret::Unit)
                    .map_err(|e| blob_failure(&e))
            }
            Op::GetBlob { digest } => cache
                .get_bytes(&pools.digest(digest % DIGESTS))
                .await
                .map(Ret::Blob)
                .map_err(|e| blob_failure(&e)),
            _ => unreachable!("not a blob operation: {op:?}"),
        }
    }

    async fn remove(&self, id: ImageId) -> Result<Ret, Failure> {
        match self.h().lc.remove_image(&id, false).await {
            Ok(removed) => Ok(Ret::Removed {
                images: removed.image.into_iter().collect(),
                blobs: removed.blobs.iter().map(|(d, _)| *d).collect(),
            }),
            Err(e) => Err(lifecycle_failure(&e)),
        }
    }

    async fn hold(&self, pools: &Pools, lease: usize, resources: &[Res]) -> Result<Ret, Failure> {
        let mut options = LeaseOptions::new().with_id(pools.leases[lease % LEASES].clone());
        for r in resources {
            options = options.with_resource(match r {
                Res::Image(i) => imagecache_core::LeaseResource::Image(pools.images[i % IMAGES].id),
                Res::Blob(d) => imagecache_core::LeaseResource::Blob(pools.digest(d % DIGESTS)),
            });
        }
        self.store()
            .create_lease(options)
            .await
            .map(|_| Ret::Unit)
            .map_err(|e| store_failure(&e))
    }

    async fn collect(&self, all: bool) -> Result<Ret, Failure> {
        let policy = if all {
            Policy::all()
        } else {
            Policy::dangling()
        };
        match self.h().lc.collect(&[policy], None).await {
            Ok(report) => Ok(Ret::Removed {
                images: report.images.iter().map(|(id, _)| *id).collect(),
                blobs: report.blobs.iter().map(|(d, _)| *d).collect(),
            }),
            Err(e) => Err(lifecycle_failure(&e)),
        }
    }

    /// Reloads the live store from the backend, without faults.
    pub async fn refresh(&self) {
        let active = self.faults.is_active();
        self.faults.set_active(false);
        let refreshed = self.store().refresh().await;
        self.faults.set_active(active);
        if let Err(e) = refreshed {
            panic!("refreshing the store without faults failed: {e}");
        }
    }

    /// Which layer copies name each other, read from the backend.
    pub async fn links(&self, pools: &Pools) -> Links {
        let mut links = Links::default();
        for digest in pools.digests() {
            let notes = self
                .h()
                .blobs
                .blob_notes(&digest)
                .await
                .expect("read notes");
            let named: BTreeSet<Digest> = notes
                .iter()
                .filter(|(k, _)| k.as_str() == "compressed" || k.as_str() == "decompressed")
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .filter_map(|s| Digest::parse(s.trim()).ok())
                .filter(|d| *d != digest)
                .collect();
            if !named.is_empty() {
                links.named.insert(digest, named);
            }
        }
        links
    }

    /// What the live store holds in memory: images with parents, names.
    pub fn handle_view(&self, obs: &State) -> State {
        let store = self.store();
        State {
            images: store
                .ids()
                .into_iter()
                .map(|id| (id, store.parent(&id).ok().flatten()))
                .collect(),
            names: store.names().into_iter().collect(),
            leases: obs.leases.clone(),
            blobs: obs.blobs.clone(),
        }
    }

    /// The state as stored, read through a new store over the backend
    /// (no faults), after checking every invariant on it.
    pub async fn observe(&self, pools: &Pools) -> Result<State, String> {
        let h = self.h();
        let store = Store::open(h.images.clone())
            .await
            .map_err(|e| format!("opening a second store without faults: {e}"))?;
        let problems = store.report().problems;
        if !problems.is_empty() {
            return Err(format!("the store reports problems: {problems:?}"));
        }
        check_graph("a new store over the backend", &store)?;
        for id in store.ids() {
            let image = store
                .get(&id)
                .await
                .map_err(|e| format!("image {id} is listed but its config does not read: {e}"))?;
            if image.id() != id {
                return Err(format!("image {id} reads back as {}", image.id()));
            }
        }
        let mut leases = BTreeMap::new();
        for lease in h
            .images
            .leases()
            .await
            .map_err(|e| format!("leases: {e}"))?
        {
            if !lease.is_collection() {
                leases.insert(lease.id, lease.resources);
            }
        }
        Ok(State {
            images: store
                .ids()
                .into_iter()
                .map(|id| (id, store.parent(&id).ok().flatten()))
                .collect(),
            names: store.names().into_iter().collect(),
            leases,
            blobs: self.observe_blobs(pools).await?,
        })
    }

    /// The stored blobs, each read whole and checked against its digest,
    /// its listed size and its notes.
    async fn observe_blobs(&self, pools: &Pools) -> Result<BTreeSet<Digest>, String> {
        let blobs = &self.h().blobs;
        let listed = blobs
            .list_blobs()
            .await
            .map_err(|e| format!("list_blobs: {e}"))?;
        let mut out = BTreeSet::new();
        for info in &listed {
            let data = blobs
                .get_blob_bytes(&info.digest)
                .await
                .map_err(|e| format!("blob {} is listed but does not read: {e}", info.digest))?;
            if Digest::sha256(&data) != info.digest || data.len() as u64 != info.size {
                return Err(format!(
                    "blob {} is served torn or wrong: {} bytes, listed as {}",
                    info.digest,
                    data.len(),
                    info.size
                ));
            }
            if pools.data(&info.digest).is_none() {
                return Err(format!("blob {} was never put", info.digest));
            }
            check_notes(blobs.as_ref(), pools, &info.digest, Some(info.size)).await?;
            out.insert(info.digest);
        }
        for digest in pools.digests().filter(|d| !out.contains(d)) {
            check_notes(blobs.as_ref(), pools, &digest, None).await?;
        }
        Ok(out)
    }
}

/// Notes belong to a stored blob: none on an absent one; a size note
/// matches the size; a link names the layer's other copy.
async fn check_notes(
    blobs: &dyn BlobBackend,
    pools: &Pools,
    digest: &Digest,
    size: Option<u64>,
) -> Result<(), String> {
    let notes = blobs
        .blob_notes(digest)
        .await
        .map_err(|e| format!("notes of {digest}: {e}"))?;
    let Some(size) = size else {
        if notes.is_empty() {
            return Ok(());
        }
        return Err(format!("absent blob {digest} still has notes {notes:?}"));
    };
    for (key, value) in &notes {
        let text = String::from_utf8_lossy(value);
        let wrong = match key.as_str() {
            "size" => text != size.to_string(),
            "compressed" | "decompressed" => {
                Some(text.as_ref()) != pools.counterpart(digest).map(|d| d.to_string()).as_deref()
            }
            _ => false,
        };
        if wrong {
            return Err(format!("blob {digest} has a wrong note {key}={text}"));
        }
    }
    Ok(())
}

/// Children and parents agree, heads have no children, names point at
/// stored images, and every stored parent is stored.
pub fn check_graph(what: &str, store: &Store) -> Result<(), String> {
    let ids: BTreeSet<ImageId> = store.ids().into_iter().collect();
    for id in &ids {
        let parent = store
            .parent(id)
            .map_err(|e| format!("{what}: parent of listed image {id}: {e}"))?;
        if let Some(p) = parent {
            if !ids.contains(&p) {
                return Err(format!("{what}: image {id} names absent parent {p}"));
            }
            if !store.children(&p).contains(id) {
                return Err(format!(
                    "{what}: {id} has parent {p}, which does not list it as a child"
                ));
            }
        }
        let children = store.children(id);
        for c in &children {
            if store.parent(c).ok().flatten() != Some(*id) {
                return Err(format!(
                    "{what}: {id} lists child {c}, whose parent is not {id}"
                ));
            }
        }
        if children.is_empty() != store.heads().contains(id) {
            return Err(format!(
                "{what}: {id} is a head iff it has no children, and it is not so"
            ));
        }
    }
    for (name, id) in store.names() {
        if !ids.contains(&id) {
            return Err(format!("{what}: name {name} points at absent image {id}"));
        }
    }
    Ok(())
}

/// A body in chunks of 1 KiB.
fn chunks(data: Bytes) -> ByteStream {
    let parts: Vec<imagecache_core::Result<Bytes>> = (0..data.len())
        .step_by(1024)
        .map(|i| Ok(data.slice(i..data.len().min(i + 1024))))
        .collect();
    Box::pin(futures::stream::iter(parts))
}
