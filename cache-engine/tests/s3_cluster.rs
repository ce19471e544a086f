//! A shared S3 store on a three-node Garage cluster (replication factor 3,
//! so every read and write needs two nodes) while its nodes crash, used
//! through the library: an image store and a blob cache over the S3
//! backend.
//!
//! 1. Two builders create chains of images through one client handle on
//!    node 1 (a layer blob, an image on its parent, a name, a lease per
//!    step); node 3 is killed with SIGKILL halfway. Every request must
//!    still succeed.
//! 2. Node 2 is killed as well. Every kind of request (create, tag, lease,
//!    blob put and get, refresh, lease listing, opening a new handle) must
//!    fail with a typed `Unavailable` error, without hanging.
//! 3. Both nodes are restarted: a fresh handle reads every acknowledged
//!    write intact, and writes succeed again.
//! 4. Node 1, the node the client talks to, is killed. The backend talks
//!    to one endpoint and does not fail over, so the client's requests fail
//!    with `Unavailable`; a handle opened on node 2's endpoint reads every
//!    acknowledged write and builds on. Node 1 is restarted and the whole
//!    store is read and verified through it.
//!
//! Needs the cluster of `scripts/garage-cluster-start.sh` (its
//! `IMAGECACHE_TEST_S3_CLUSTER_URL`, `GARAGE_CLUSTER_ENDPOINTS` and
//! `GARAGE_CLUSTER_WORKDIR`); without them the test is skipped, saying so,
//! unless `IMAGECACHE_REQUIRE_S3=1`, which makes it fail. Nodes are killed
//! and restarted with `scripts/garage-cluster-node.sh`; the cluster is
//! whole again when the test ends. Each run writes under a fresh prefix.
//! `IMAGECACHE_CLUSTER_STEPS` sets the steps per builder (default 8).
//! Prints `evidence: s3-cluster acked=… lost=… corrupt=… unavailable_typed=… recovered=…`.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use imagecache_backends::Backend;
use imagecache_backends::s3::{S3Backend, S3Config};
use imagecache_core::{Digest, ImageId, LeaseId, LeaseResource, Reference};
use imagecache_engine::blob::{BlobCache, BlobCacheOptions};
use imagecache_engine::lifecycle::Lifecycle;
use imagecache_store::{CreateOptions, LeaseOptions, Store};

/// The longest any one request may take before the test calls it a hang.
/// Requests are bounded far below this by the client's timeouts.
const HANG_GUARD: Duration = Duration::from_secs(60);
const BUILDERS: usize = 2;

/// The cluster named by the environment.
struct Cluster {
    url: String,
    endpoints: Vec<String>,
    prefix: String,
}

impl Cluster {
    fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let found = (
            var("IMAGECACHE_TEST_S3_CLUSTER_URL"),
            var("GARAGE_CLUSTER_ENDPOINTS"),
            var("GARAGE_CLUSTER_WORKDIR"),
        );
        let (Some(url), Some(endpoints), Some(_)) = found else {
            let why = "IMAGECACHE_TEST_S3_CLUSTER_URL, GARAGE_CLUSTER_ENDPOINTS or \
                       GARAGE_CLUSTER_WORKDIR is not set (scripts/garage-cluster-start.sh sets them)";
            if std::env::var("IMAGECACHE_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("{why}, and IMAGECACHE_REQUIRE_S3=1 requires the S3 tests");
            }
            eprintln!("skipped: S3 cluster test ({why})");
            return None;
        };
        let endpoints: Vec<String> = endpoints.split_whitespace().map(str::to_owned).collect();
        assert_eq!(
            endpoints.len(),
            3,
            "GARAGE_CLUSTER_ENDPOINTS: {endpoints:?}"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = format!("cluster-{nanos:x}-{}", std::process::id());
        Some(Self {
            url,
            endpoints,
            prefix,
        })
    }

    /// The client configuration for talking to node `node` (1-3). The
    /// timeouts are short so that a dead node is noticed quickly: a
    /// connection on loopback opens at once or never.
    fn config(&self, node: usize) -> S3Config {
        let (location, query) = self.url.split_once('?').unwrap_or((&self.url, ""));
        let url = format!("{}/{}?{query}", location.trim_end_matches('/'), self.prefix);
        S3Config::from_url(&url)
            .expect("cluster URL")
            .with_endpoint(self.endpoints[node - 1].clone())
            .with_timeout(Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(1))
            .with_retries(1, Duration::from_secs(5))
            // Compaction runs several times during the workload.
            .with_compact_after(16)
    }

    /// Opens a client on node `node`.
    async fn open(&self, node: usize) -> imagecache_core::Result<Client> {
        let backend = Backend::new(S3Backend::open(self.config(node)).await?);
        let store = Store::open(backend.images()).await.map_err(|e| match e {
            imagecache_store::Error::Backend(e) => e,
            other => panic!("opening the store failed: {other}"),
        })?;
        // Strict: a backend failure is an error, not a miss, so that the
        // test sees every failure.
        let strict = BlobCacheOptions::new().with_strict(true);
        let blobs = BlobCache::with_options(backend.blobs(), strict).expect("blob cache");
        Ok(Client { store, blobs })
    }

    /// Runs `scripts/garage-cluster-node.sh ACTION NODE`.
    async fn node(&self, action: &str, node: usize) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage-cluster-node.sh");
        let out = tokio::process::Command::new(&script)
            .args([action, &node.to_string()])
            .output()
            .await
            .expect("run garage-cluster-node.sh");
        assert!(
            out.status.success(),
            "garage-cluster-node.sh {action} {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Client {
    store: Store,
    blobs: BlobCache,
}

/// What the cluster acknowledged: every write that returned `Ok`.
#[derive(Default, Clone)]
struct Acked {
    blobs: BTreeMap<Digest, Bytes>,
    /// Each image with its parent.
    images: BTreeMap<ImageId, Option<ImageId>>,
    names: BTreeMap<Reference, ImageId>,
    /// Each lease with the image it holds.
    leases: BTreeMap<LeaseId, ImageId>,
}

impl Acked {
    fn count(&self) -> usize {
        self.blobs.len() + self.images.len() + self.names.len() + self.leases.len()
    }
}

type Shared = Arc<Mutex<Acked>>;

fn layer(prefix: &str, builder: usize, step: usize) -> Bytes {
    Bytes::from(format!("{prefix} builder {builder} layer {step}\n").repeat(48))
}

fn config_bytes(prefix: &str, builder: usize, step: usize, diff_ids: &[Digest]) -> Bytes {
    let diffs: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    Bytes::from(format!(
        r#"{{"created":"2024-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":[{}]}},"comment":"{prefix} builder {builder} step {step}"}}"#,
        diffs.join(",")
    ))
}

/// One builder's chain: the layers so far and the last image.
#[derive(Default, Clone)]
struct Chain {
    layers: Vec<Digest>,
    top: Option<ImageId>,
}

/// One build step on `chain`: a layer blob, an image on the chain's top,
/// every third step a name, every fourth a lease. Each write that returns
/// `Ok` is recorded in `acked` at once; the first failure ends the step.
async fn step(
    client: &Client,
    prefix: &str,
    builder: usize,
    n: usize,
    chain: &mut Chain,
    acked: &Shared,
) -> Result<(), String> {
    let data = layer(prefix, builder, n);
    let digest = Digest::sha256(&data);
    let put = client.blobs.put_bytes(&digest, data.clone()).await;
    put.map_err(|e| describe(e.is_unavailable(), &e))?;
    acked.lock().unwrap().blobs.insert(digest, data);
    let mut layers = chain.layers.clone();
    layers.push(digest);
    let mut options = CreateOptions::new();
    if let Some(parent) = chain.top {
        options = options.with_parent(parent);
    }
    let config = config_bytes(prefix, builder, n, &layers);
    let created = client.store.create_with(config, options).await;
    let id = created.map_err(|e| describe(e.is_unavailable(), &e))?;
    acked.lock().unwrap().images.insert(id, chain.top);
    *chain = Chain {
        layers,
        top: Some(id),
    };
    if n.is_multiple_of(3) {
        let name: Reference = format!("cluster/b{builder}:s{n}").parse().expect("name");
        let tagged = client.store.tag(&name, &id).await;
        tagged.map_err(|e| describe(e.is_unavailable(), &e))?;
        acked.lock().unwrap().names.insert(name, id);
    }
    if n.is_multiple_of(4) {
        let options = LeaseOptions::new()
            .with_ttl(Duration::from_secs(3600))
            .with_resource(LeaseResource::Image(id));
        let lease = client.store.create_lease(options).await;
        let lease = lease.map_err(|e| describe(e.is_unavailable(), &e))?;
        acked.lock().unwrap().leases.insert(lease.id, id);
    }
    Ok(())
}

/// A failure as text, marked when it is not the typed "unavailable" error.
fn describe(unavailable: bool, err: &dyn std::error::Error) -> String {
    let text = imagecache_core::error_text(err);
    if unavailable {
        format!("unavailable: {text}")
    } else {
        format!("UNTYPED: {text}")
    }
}

/// Runs `steps` steps of one builder from `start`, with a hang guard per
/// step; returns the failures.
async fn build(
    client: Arc<Client>,
    prefix: String,
    builder: usize,
    steps: std::ops::Range<usize>,
    mut chain: Chain,
    acked: Shared,
) -> (Chain, Vec<String>) {
    let mut failures = Vec::new();
    for n in steps {
        let done = tokio::time::timeout(
            HANG_GUARD,
            step(&client, &prefix, builder, n, &mut chain, &acked),
        )
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("builder {builder} step {n}: {e}")),
            Err(_) => failures.push(format!("builder {builder} step {n}: HANG")),
        }
    }
    (chain, failures)
}

/// Runs every builder for `steps` more steps, concurrently, and runs
/// `during` once half of the new images are acknowledged.
async fn build_all(
    client: &Arc<Client>,
    prefix: &str,
    chains: &mut [Chain],
    steps: std::ops::Range<usize>,
    acked: &Shared,
    during: Option<BoxFuture<'_, ()>>,
) -> Vec<String> {
    let before = acked.lock().unwrap().images.len();
    let half = before + chains.len() * steps.len() / 2;
    let tasks: Vec<_> = chains
        .iter()
        .enumerate()
        .map(|(b, chain)| {
            tokio::spawn(build(
                Arc::clone(client),
                prefix.to_owned(),
                b,
                steps.clone(),
                chain.clone(),
                Arc::clone(acked),
            ))
        })
        .collect();
    if let Some(during) = during {
        let started = Instant::now();
        while acked.lock().unwrap().images.len() < half && started.elapsed() < HANG_GUARD {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        during.await;
    }
    let mut failures = Vec::new();
    for (b, task) in tasks.into_iter().enumerate() {
        let (chain, f) = task.await.expect("builder task");
        chains[b] = chain;
        failures.extend(f);
    }
    failures
}

/// Acknowledged items found missing or damaged, by a description of each.
#[derive(Default)]
struct Tally {
    lost: std::collections::BTreeSet<String>,
    corrupt: std::collections::BTreeSet<String>,
}

/// Reads every acknowledged write through `client` (opened after the
/// writes, so nothing is served from an older handle's memory) and
/// checks it against what was written; then reads and verifies everything
/// the prefix holds with [`Lifecycle::check`].
async fn verify(client: &Client, acked: &Shared, tally: &mut Tally) {
    let acked = acked.lock().unwrap().clone();
    let store = &client.store;
    for (id, parent) in &acked.images {
        match store.get(id).await {
            Ok(_) if store.parent(id).ok() != Some(*parent) => {
                tally
                    .corrupt
                    .insert(format!("image {id}: parent is not {parent:?}"));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => _ = tally.lost.insert(format!("image {id}")),
            Err(e) => _ = tally.corrupt.insert(format!("image {id}: {e}")),
        }
    }
    let names: BTreeMap<Reference, ImageId> = store.names().into_iter().collect();
    for (name, id) in &acked.names {
        match names.get(name) {
            None => _ = tally.lost.insert(format!("name {name}")),
            Some(found) if found != id => {
                tally
                    .corrupt
                    .insert(format!("name {name} names {found}, not {id}"));
            }
            Some(_) => {}
        }
    }
    let leases = store.leases().await.expect("list the leases");
    for (lease, id) in &acked.leases {
        match leases.iter().find(|l| &l.id == lease) {
            None => _ = tally.lost.insert(format!("lease {lease}")),
            Some(l) if !l.resources.contains(&LeaseResource::Image(*id)) => {
                tally
                    .corrupt
                    .insert(format!("lease {lease} does not hold {id}"));
            }
            Some(_) => {}
        }
    }
    for (digest, data) in &acked.blobs {
        match client.blobs.get_bytes(digest).await {
            Ok(Some(read)) if read == data => {}
            Ok(Some(_)) => _ = tally.corrupt.insert(format!("blob {digest}: other bytes")),
            Ok(None) => _ = tally.lost.insert(format!("blob {digest}")),
            Err(e) => _ = tally.corrupt.insert(format!("blob {digest}: {e}")),
        }
    }
    let lifecycle = Lifecycle::new(store.clone(), Some(client.blobs.clone()));
    let report = lifecycle.check().await.expect("check the whole store");
    for problem in report.problems {
        tally
            .corrupt
            .insert(format!("check: {}: {}", problem.key, problem.problem));
    }
}

/// The outcome of requests that must fail because the store is unavailable.
#[derive(Default)]
struct Probes {
    /// Requests that failed with the typed `Unavailable` error.
    typed: usize,
    /// Everything else: a success, another error, a hang.
    wrong: Vec<String>,
    /// The longest any of them took to fail, for the report.
    slowest: Duration,
}

impl Probes {
    /// Runs one request that must fail with `Unavailable`; `outcome` maps
    /// its result to `Ok(())` or to whether its error was typed so, and
    /// the error's text.
    async fn expect_unavailable(
        &mut self,
        what: &str,
        outcome: impl Future<Output = Result<(), (bool, String)>>,
    ) {
        let started = Instant::now();
        let result = tokio::time::timeout(HANG_GUARD, outcome).await;
        self.slowest = self.slowest.max(started.elapsed());
        match result {
            Ok(Err((true, _))) => self.typed += 1,
            Ok(Err((false, e))) => self.wrong.push(format!("{what}: not Unavailable: {e}")),
            Ok(Ok(())) => self.wrong.push(format!("{what}: succeeded")),
            Err(_) => self
                .wrong
                .push(format!("{what}: no answer in {HANG_GUARD:?}")),
        }
    }
}

fn store_err(e: imagecache_store::Error) -> (bool, String) {
    (e.is_unavailable(), imagecache_core::error_text(&e))
}

fn blob_err(e: imagecache_engine::blob::Error) -> (bool, String) {
    (e.is_unavailable(), imagecache_core::error_text(&e))
}

/// Every kind of request through `client` while the store cannot answer:
/// writes of each kind, reads that must go to the store, and opening a
/// new handle on `node`.
async fn probe_unavailable(
    cluster: &Cluster,
    node: usize,
    client: &Client,
    acked: &Shared,
) -> Probes {
    let (top, digest) = {
        let acked = acked.lock().unwrap();
        let top = *acked.images.keys().next().expect("an acknowledged image");
        (
            top,
            *acked.blobs.keys().next().expect("an acknowledged blob"),
        )
    };
    let prefix = &cluster.prefix;
    let mut probes = Probes::default();
    let config = config_bytes(prefix, 99, node, &[digest]);
    let create = client
        .store
        .create_with(config, CreateOptions::new().with_parent(top));
    let create = async { create.await.map(drop).map_err(store_err) };
    probes.expect_unavailable("create", create).await;
    let data = layer(prefix, 99, node);
    let new_digest = Digest::sha256(&data);
    let put = client.blobs.put_bytes(&new_digest, data.clone());
    let put = async { put.await.map(drop).map_err(blob_err) };
    probes.expect_unavailable("blob put", put).await;
    let get = async {
        client
            .blobs
            .get_bytes(&digest)
            .await
            .map(drop)
            .map_err(blob_err)
    };
    probes.expect_unavailable("blob get", get).await;
    // A cache that is not strict reports a miss instead, and evicts nothing.
    let lenient = BlobCache::new(Arc::clone(client.blobs.backend())).expect("blob cache");
    match tokio::time::timeout(HANG_GUARD, lenient.get_bytes(&digest)).await {
        Ok(Ok(None)) => {}
        other => probes.wrong.push(format!("lenient blob get: {other:?}")),
    }
    let name: Reference = format!("cluster/probe:n{node}").parse().expect("name");
    let tag = async {
        client
            .store
            .tag(&name, &top)
            .await
            .map(drop)
            .map_err(store_err)
    };
    probes.expect_unavailable("tag", tag).await;
    let lease = LeaseOptions::new().with_resource(LeaseResource::Image(top));
    let lease = async {
        client
            .store
            .create_lease(lease)
            .await
            .map(drop)
            .map_err(store_err)
    };
    probes.expect_unavailable("lease", lease).await;
    let leases = async { client.store.leases().await.map(drop).map_err(store_err) };
    probes.expect_unavailable("lease list", leases).await;
    let refresh = async { client.store.refresh().await.map(drop).map_err(store_err) };
    probes.expect_unavailable("refresh", refresh).await;
    let open = async {
        match cluster.open(node).await {
            Ok(_) => Ok(()),
            Err(e) => Err((e.is_unavailable(), imagecache_core::error_text(&e))),
        }
    };
    probes.expect_unavailable("open", open).await;
    probes
}

/// Starts the nodes that are down when dropped, so that a failed run
/// leaves the cluster whole for the next.
struct Revive;

impl Drop for Revive {
    fn drop(&mut self) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage-cluster-node.sh");
        for node in ["1", "2", "3"] {
            let up = std::process::Command::new(&script)
                .args(["pid", node])
                .output()
                .is_ok_and(|o| o.status.success());
            if !up {
                let _ = std::process::Command::new(&script)
                    .args(["restart", node])
                    .status();
            }
        }
    }
}

fn steps_per_builder() -> usize {
    std::env::var("IMAGECACHE_CLUSTER_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_node_failures() {
    let Some(cluster) = Cluster::from_env() else {
        return;
    };
    let _revive = Revive;
    let steps = steps_per_builder();
    let acked = Shared::default();
    let mut chains = vec![Chain::default(); BUILDERS];
    let mut tally = Tally::default();
    let mut probes = Probes::default();
    let prefix = cluster.prefix.clone();

    // 1. Node 3 crashes halfway through the builds.
    let client = Arc::new(cluster.open(1).await.expect("open through node 1"));
    let kill = Box::pin(cluster.node("kill", 3));
    let one_down = build_all(&client, &prefix, &mut chains, 0..steps, &acked, Some(kill)).await;
    let fresh = cluster.open(1).await.expect("open with one node down");
    verify(&fresh, &acked, &mut tally).await;

    // 2. Node 2 crashes too: no quorum.
    cluster.node("kill", 2).await;
    let two_down = probe_unavailable(&cluster, 1, &client, &acked).await;
    probes.typed += two_down.typed;
    probes.wrong.extend(two_down.wrong);
    probes.slowest = probes.slowest.max(two_down.slowest);

    // 3. Both come back.
    cluster.node("restart", 2).await;
    cluster.node("restart", 3).await;
    let refreshed = client.store.refresh().await;
    let more = steps..steps + steps / 2;
    let mut after = build_all(&client, &prefix, &mut chains, more, &acked, None).await;
    let fresh = cluster.open(1).await.expect("open after the restarts");
    verify(&fresh, &acked, &mut tally).await;

    // 4. The client's own node crashes; another node's endpoint serves.
    cluster.node("kill", 1).await;
    let dead_endpoint = probe_unavailable(&cluster, 1, &client, &acked).await;
    probes.typed += dead_endpoint.typed;
    probes.wrong.extend(dead_endpoint.wrong);
    probes.slowest = probes.slowest.max(dead_endpoint.slowest);
    let other = Arc::new(cluster.open(2).await.expect("open through node 2"));
    verify(&other, &acked, &mut tally).await;
    let more = steps + steps / 2..steps * 2;
    after.extend(build_all(&other, &prefix, &mut chains, more, &acked, None).await);
    cluster.node("restart", 1).await;
    let last = cluster
        .open(1)
        .await
        .expect("open through the restarted node 1");
    verify(&last, &acked, &mut tally).await;

    let acked_count = acked.lock().unwrap().count();
    let recovered = refreshed.is_ok() && after.is_empty() && tally.lost.is_empty();
    imagecache_conformance::evidence::record(
        "s3-cluster",
        &[
            ("acked", &acked_count),
            ("lost", &tally.lost.len()),
            ("corrupt", &tally.corrupt.len()),
            ("unavailable_typed", &probes.typed),
            ("recovered", &if recovered { "yes" } else { "no" }),
            ("steps", &(BUILDERS * steps * 2)),
            ("one_down_failures", &one_down.len()),
            ("wrong_failures", &probes.wrong.len()),
            ("slowest_unavailable_ms", &probes.slowest.as_millis()),
        ],
    );
    assert!(one_down.is_empty(), "with one node down: {one_down:#?}");
    assert!(probes.wrong.is_empty(), "{:#?}", probes.wrong);
    assert!(tally.lost.is_empty(), "lost: {:#?}", tally.lost);
    assert!(tally.corrupt.is_empty(), "corrupt: {:#?}", tally.corrupt);
    assert!(
        refreshed.is_ok(),
        "refresh after the restarts: {refreshed:?}"
    );
    assert!(after.is_empty(), "after the restarts: {after:#?}");
}
