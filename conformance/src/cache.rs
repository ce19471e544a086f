//! Classic builder cache cases: the local lookup, cache-from, Docker's
//! builder cache scenarios replayed at engine level, and the equivalence of
//! the indexed lookup with Docker's linear scan.
//!
//! Cases:
//! `cache_child_hit`, `cache_miss_is_not_an_error`, `cache_from_scratch_hit`,
//! `cache_requires_built_locally`, `cache_skips_images_without_platform`,
//! `cache_platform_must_match`, `cache_newest_created_wins`,
//! `cache_tie_goes_to_smallest_id`, `cache_compares_container_config`,
//! `cache_compare_quirks`, `cache_unknown_parent_is_a_miss`,
//! `cache_index_matches_linear_scan`, `cache_from_unknown_source_is_skipped`,
//! `cache_from_local_hit_needs_ancestry`, `cache_from_source_at_end_of_history`,
//! `cache_from_restores_intermediate_image`, `cache_from_empty_layer_step`,
//! `builder_cache_from`, `builder_cache_from_after_save_and_load`,
//! `builder_cache_from_equal_diff_ids_length`, `builder_multi_stage_cache`,
//! `builder_labels_cache`, `builder_from_scratch_with_and_without_cache`,
//! `builder_build_args`, `builder_workdir_no_cache_miss`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{
    ContainerConfig, DiffId, History, ImageConfig, ImageId, Platform, RootFs, Timestamp, compare,
};
use imagecache_engine::builder::{Stage, Step, StepOutcome, default_shell, nop_cmd};
use imagecache_engine::{CacheFrom, IdResolver, ImageCache, LocalCache, linear_lookup};
use imagecache_store::{CreateOptions, Store};

use crate::check::Must as _;
use crate::{Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __cache_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) cache [
            cache_child_hit,
            cache_miss_is_not_an_error,
            cache_from_scratch_hit,
            cache_requires_built_locally,
            cache_skips_images_without_platform,
            cache_platform_must_match,
            cache_newest_created_wins,
            cache_tie_goes_to_smallest_id,
            cache_compares_container_config,
            cache_compare_quirks,
            cache_unknown_parent_is_a_miss,
            cache_index_matches_linear_scan,
            cache_from_unknown_source_is_skipped,
            cache_from_local_hit_needs_ancestry,
            cache_from_source_at_end_of_history,
            cache_from_restores_intermediate_image,
            cache_from_empty_layer_step,
            builder_cache_from,
            builder_cache_from_after_save_and_load,
            builder_cache_from_equal_diff_ids_length,
            builder_multi_stage_cache,
            builder_labels_cache,
            builder_from_scratch_with_and_without_cache,
            builder_build_args,
            builder_workdir_no_cache_miss,
        ] }
    };
}

pub(crate) const CASES: &[crate::Case] = crate::__cache_cases!(__case_registry!());

fn linux_amd64() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Platform::default()
    }
}

fn time(secs: i64) -> Timestamp {
    Timestamp::from_parts(1_700_000_000 + secs, 0, 0).must("valid time")
}

fn probe(instruction: &str) -> ContainerConfig {
    ContainerConfig {
        cmd: Some(nop_cmd(&default_shell(), instruction)),
        env: Some(vec!["PATH=/usr/bin".into()]),
        ..ContainerConfig::default()
    }
}

fn diff(n: u64) -> DiffId {
    DiffId::parse(&format!("sha256:{n:064x}")).must("valid diff id")
}

/// A config committed on `parent` with `container_config = cc`.
struct Spec {
    cc: ContainerConfig,
    created: Option<Timestamp>,
    platform: Platform,
    diff: Option<DiffId>,
    comment: String,
}

impl Spec {
    fn new(cc: ContainerConfig, created: i64) -> Self {
        Self {
            cc,
            created: Some(time(created)),
            platform: linux_amd64(),
            diff: None,
            comment: String::new(),
        }
    }

    fn bytes(&self, parent: Option<&ImageConfig>) -> Bytes {
        let mut rootfs = parent.map(|p| p.rootfs.clone()).unwrap_or_else(|| RootFs {
            fs_type: "layers".into(),
            raw_diff_ids: Vec::new(),
        });
        if let Some(d) = self.diff {
            rootfs.raw_diff_ids.push(d.to_string());
        }
        let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
        history.push(History {
            created: self.created,
            created_by: self.cc.cmd.as_deref().unwrap_or_default().join(" "),
            empty_layer: self.diff.is_none(),
            ..History::default()
        });
        let config = ImageConfig {
            created: self.created,
            container_config: self.cc.clone(),
            config: Some(self.cc.clone()),
            architecture: self.platform.architecture.clone(),
            variant: self.platform.variant.clone(),
            os: self.platform.os.clone(),
            comment: self.comment.clone(),
            rootfs,
            history,
            ..ImageConfig::default()
        };
        Bytes::from(config.to_json_sorted())
    }
}

async fn add(store: &Store, parent: Option<ImageId>, spec: &Spec, built_locally: bool) -> ImageId {
    let parent_config = match parent {
        Some(p) => Some(store.get(&p).await.must("parent")),
        None => None,
    };
    let mut o = CreateOptions::new().with_built_locally(built_locally);
    if let Some(p) = parent {
        o = o.with_parent(p);
    }
    store
        .create_with(spec.bytes(parent_config.as_deref().map(|i| &**i)), o)
        .await
        .must("create")
}

async fn fresh(h: &Arc<dyn Harness>) -> (Store, LocalCache) {
    // The store holds its backend; the fixture may go, since the harness
    // keeps every namespace it handed out until the harness itself goes.
    let (_fixture, backend) = crate::images(h).await;
    let store = Store::open(backend).await.must("open");
    (store.clone(), LocalCache::new(store))
}

async fn lookup(
    cache: &dyn ImageCache,
    parent: Option<ImageId>,
    cc: &ContainerConfig,
    platform: &Platform,
) -> Option<ImageId> {
    cache
        .get_cache(parent.as_ref(), Some(cc), platform)
        .await
        .must("lookup")
}

/// A step built on a parent is found again for the same probe.
pub async fn cache_child_hit(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let step = add(&store, Some(base), &Spec::new(probe("ENV A=1"), 1), true).await;
    assert_eq!(
        lookup(&cache, Some(base), &probe("ENV A=1"), &linux_amd64()).await,
        Some(step)
    );
    Outcome::Passed
}

/// A miss is `Ok(None)`: other probe, other parent, no config.
pub async fn cache_miss_is_not_an_error(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    add(&store, Some(base), &Spec::new(probe("ENV A=1"), 1), true).await;
    let p = linux_amd64();
    assert_eq!(
        lookup(&cache, Some(base), &probe("ENV A=2"), &p).await,
        None
    );
    assert_eq!(lookup(&cache, None, &probe("ENV A=1"), &p).await, None);
    assert_eq!(
        cache.get_cache(Some(&base), None, &p).await.must("lookup"),
        None
    );
    Outcome::Passed
}

/// `FROM scratch` finds parentless, built-locally images by their config.
pub async fn cache_from_scratch_hit(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let step = add(&store, None, &Spec::new(probe("MAINTAINER me"), 1), true).await;
    // The same step on a parent is no FROM-scratch answer.
    let base = add(&store, None, &Spec::new(probe("base"), 0), true).await;
    add(
        &store,
        Some(base),
        &Spec::new(probe("MAINTAINER me"), 5),
        true,
    )
    .await;
    assert_eq!(
        lookup(&cache, None, &probe("MAINTAINER me"), &linux_amd64()).await,
        Some(step)
    );
    Outcome::Passed
}

/// Images not built locally (pulled, loaded, restored by cache-from) never
/// answer a local lookup (CVE-2024-24557).
pub async fn cache_requires_built_locally(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let pulled = add(&store, Some(base), &Spec::new(probe("RUN x"), 1), false).await;
    assert_eq!(
        lookup(&cache, Some(base), &probe("RUN x"), &linux_amd64()).await,
        None
    );
    add(&store, None, &Spec::new(probe("RUN y"), 1), false).await;
    assert_eq!(
        lookup(&cache, None, &probe("RUN y"), &linux_amd64()).await,
        None
    );
    store.set_built_locally(&pulled).await.must("mark");
    assert_eq!(
        lookup(&cache, Some(base), &probe("RUN x"), &linux_amd64()).await,
        Some(pulled)
    );
    Outcome::Passed
}

/// Images with neither OS nor architecture are skipped.
pub async fn cache_skips_images_without_platform(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let mut spec = Spec::new(probe("RUN x"), 1);
    spec.platform = Platform::default();
    add(&store, None, &spec, true).await;
    assert_eq!(
        lookup(&cache, None, &probe("RUN x"), &linux_amd64()).await,
        None
    );
    Outcome::Passed
}

/// The builder's platform must accept the image's (containerd matching).
pub async fn cache_platform_must_match(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let arm = |variant: &str| Platform {
        os: "linux".into(),
        architecture: "arm".into(),
        variant: variant.into(),
        ..Platform::default()
    };
    let mut spec = Spec::new(probe("RUN v7"), 1);
    spec.platform = arm("v7");
    let v7 = add(&store, None, &spec, true).await;
    assert_eq!(
        lookup(&cache, None, &probe("RUN v7"), &linux_amd64()).await,
        None
    );
    assert_eq!(
        lookup(&cache, None, &probe("RUN v7"), &arm("v8")).await,
        Some(v7)
    );
    assert_eq!(
        lookup(&cache, None, &probe("RUN v7"), &arm("v6")).await,
        None
    );
    Outcome::Passed
}

/// Among matching images the newest `created` wins; one without `created` never does.
pub async fn cache_newest_created_wins(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let mut specs = Vec::new();
    for (i, t) in [5, 9, 7].into_iter().enumerate() {
        let mut s = Spec::new(probe("RUN x"), t);
        s.comment = format!("variant {i}");
        specs.push(add(&store, Some(base), &s, true).await);
    }
    let mut no_time = Spec::new(probe("RUN x"), 0);
    no_time.created = None;
    no_time.comment = "no time".into();
    add(&store, Some(base), &no_time, true).await;
    assert_eq!(
        lookup(&cache, Some(base), &probe("RUN x"), &linux_amd64()).await,
        Some(specs[1])
    );
    Outcome::Passed
}

/// Equal `created` times go to the smallest ID, whatever the insertion order.
pub async fn cache_tie_goes_to_smallest_id(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut s = Spec::new(probe("RUN same"), 3);
        s.comment = format!("twin {i}");
        ids.push(add(&store, None, &s, true).await);
    }
    let min = *ids.iter().min().must("ids");
    for _ in 0..3 {
        assert_eq!(
            lookup(&cache, None, &probe("RUN same"), &linux_amd64()).await,
            Some(min)
        );
    }
    Outcome::Passed
}

/// The probe is compared with `container_config`, not with `config`.
pub async fn cache_compares_container_config(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let spec = Spec::new(probe("RUN x"), 1);
    let mut cfg = ImageConfig::from_json(&spec.bytes(None)).must("parse");
    cfg.config = Some(probe("something else"));
    let id = store
        .create_with(
            cfg.to_json_sorted(),
            CreateOptions::new().with_built_locally(true),
        )
        .await
        .must("create");
    assert_eq!(
        lookup(&cache, None, &probe("RUN x"), &linux_amd64()).await,
        Some(id)
    );
    assert_eq!(
        lookup(&cache, None, &probe("something else"), &linux_amd64()).await,
        None
    );
    Outcome::Passed
}

/// `compare()`'s quirks survive the index: labels compare asymmetrically,
/// Env order matters, ports and volumes are sets, Hostname is ignored.
pub async fn cache_compare_quirks(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let p = linux_amd64();
    let with = |f: &dyn Fn(&mut ContainerConfig)| {
        let mut c = probe("RUN q");
        f(&mut c);
        c
    };
    // Stored labels {x:""}: a probe {y:"v"} matches (the stored side's
    // missing keys read as ""), the reverse does not.
    let labels_x = with(&|c| c.labels = Some(BTreeMap::from([("x".into(), String::new())])));
    let labels_y = with(&|c| c.labels = Some(BTreeMap::from([("y".into(), "v".into())])));
    assert!(compare(Some(&labels_x), Some(&labels_y)));
    assert!(!compare(Some(&labels_y), Some(&labels_x)));
    let x = add(&store, None, &Spec::new(labels_x.clone(), 1), true).await;
    assert_eq!(lookup(&cache, None, &labels_y, &p).await, Some(x));
    let (store2, cache2) = fresh(&h).await;
    add(&store2, None, &Spec::new(labels_y.clone(), 1), true).await;
    assert_eq!(lookup(&cache2, None, &labels_x, &p).await, None);

    let env_ab = with(&|c| c.env = Some(vec!["A=1".into(), "B=2".into()]));
    let env_ba = with(&|c| c.env = Some(vec!["B=2".into(), "A=1".into()]));
    let e = add(&store, None, &Spec::new(env_ab.clone(), 2), true).await;
    assert_eq!(lookup(&cache, None, &env_ab, &p).await, Some(e));
    assert_eq!(lookup(&cache, None, &env_ba, &p).await, None);

    let ports = with(&|c| {
        c.exposed_ports = ["80/tcp".to_owned(), "443/tcp".to_owned()].into();
        c.volumes = Some(["/a".to_owned(), "/b".to_owned()].into());
        c.hostname = "builder-1".into();
    });
    let ports_other_host = with(&|c| {
        c.exposed_ports = ["443/tcp".to_owned(), "80/tcp".to_owned()].into();
        c.volumes = Some(["/b".to_owned(), "/a".to_owned()].into());
        c.hostname = "builder-2".into();
    });
    let pp = add(&store, None, &Spec::new(ports, 3), true).await;
    assert_eq!(lookup(&cache, None, &ports_other_host, &p).await, Some(pp));
    Outcome::Passed
}

/// A lookup on a parent the store does not hold is a miss.
pub async fn cache_unknown_parent_is_a_miss(h: Arc<dyn Harness>) -> Outcome {
    let (_, cache) = fresh(&h).await;
    let unknown = ImageId::of_config(b"unknown");
    assert_eq!(
        lookup(&cache, Some(unknown), &probe("RUN x"), &linux_amd64()).await,
        None
    );
    Outcome::Passed
}

/// A small deterministic generator (xorshift), so the case needs no crate
/// and replays identically.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn random_config(rng: &mut Rng) -> ContainerConfig {
    // Tiny alphabets, so that random configs collide often and every
    // quirk of compare() gets exercised.
    let words = ["a", "b", ""];
    let mut c = ContainerConfig {
        cmd: Some(vec![(*rng.pick(&["RUN a", "RUN b"])).to_owned()]),
        ..ContainerConfig::default()
    };
    if rng.below(2) == 0 {
        let mut env: Vec<String> = vec!["A=1".into(), "B=2".into()];
        if rng.below(2) == 0 {
            env.reverse();
        }
        c.env = Some(env);
    }
    if rng.below(2) == 0 {
        let mut labels = BTreeMap::new();
        for _ in 0..rng.below(3) {
            labels.insert(
                (*rng.pick(&["x", "y"])).to_owned(),
                (*rng.pick(&words)).to_owned(),
            );
        }
        c.labels = Some(labels);
    }
    if rng.below(3) == 0 {
        c.exposed_ports = ["80/tcp".to_owned()].into();
    }
    if rng.below(4) == 0 {
        c.user = "root".into();
    }
    if rng.below(4) == 0 {
        c.hostname = (*rng.pick(&words)).to_owned();
    }
    if rng.below(5) == 0 {
        c.open_stdin = true;
    }
    c
}

/// On random stores and random probes, the indexed lookup answers exactly
/// what the linear scan answers — FROM scratch included.
pub async fn cache_index_matches_linear_scan(h: Arc<dyn Harness>) -> Outcome {
    let platforms = [
        linux_amd64(),
        Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            ..Platform::default()
        },
        Platform::default(),
    ];
    for seed in 1..=12u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (store, cache) = fresh(&h).await;
        let mut ids: Vec<ImageId> = Vec::new();
        for n in 0..40 {
            let parent = if ids.is_empty() || rng.below(4) == 0 {
                None
            } else {
                Some(*rng.pick(&ids))
            };
            let mut spec = Spec::new(random_config(&mut rng), rng.below(4) as i64);
            spec.platform = rng.pick(&platforms).clone();
            spec.comment = format!("{seed}-{n}");
            if rng.below(6) == 0 {
                spec.created = None;
            }
            let built = rng.below(4) != 0;
            ids.push(add(&store, parent, &spec, built).await);
        }
        // Some re-parenting and deletes, so the index sees changes too.
        for _ in 0..5 {
            let a = *rng.pick(&ids);
            let b = *rng.pick(&ids);
            let _ = store.set_parent(&a, &b).await;
        }
        for _ in 0..3 {
            let victim = *rng.pick(&ids);
            let _ = store.delete(&victim).await;
        }
        let live: Vec<ImageId> = store.ids();
        for _ in 0..60 {
            let parent = if rng.below(3) == 0 {
                None
            } else {
                Some(*rng.pick(&live))
            };
            let probe = random_config(&mut rng);
            let platform = rng.pick(&platforms[..2]).clone();
            let want = linear_lookup(&store, parent.as_ref(), Some(&probe), &platform)
                .await
                .must("linear scan");
            let got = lookup(&cache, parent, &probe, &platform).await;
            assert_eq!(
                got, want,
                "seed {seed}: parent {parent:?} probe {probe:?} platform {platform:?}"
            );
        }
    }
    Outcome::Passed
}

async fn chain(store: &Store, steps: &[(&str, Option<DiffId>)], t0: i64) -> Vec<ImageId> {
    let mut ids = Vec::new();
    let mut parent: Option<ImageId> = None;
    for (i, (instruction, diff)) in steps.iter().enumerate() {
        let mut spec = Spec::new(probe(instruction), t0 + i as i64);
        spec.diff = *diff;
        let id = add(store, parent, &spec, true).await;
        ids.push(id);
        parent = Some(id);
    }
    ids
}

/// An unknown cache-from source is skipped and named; the others still work.
pub async fn cache_from_unknown_source_is_skipped(h: Arc<dyn Harness>) -> Outcome {
    let (store, _) = fresh(&h).await;
    let ids = chain(
        &store,
        &[("FROM", Some(diff(1))), ("RUN a", Some(diff(2)))],
        0,
    )
    .await;
    let refs = vec!["nope".to_owned(), ids[1].to_string()];
    let cf = CacheFrom::new(store, &refs, &IdResolver)
        .await
        .must("cache-from");
    assert_eq!(cf.skipped().len(), 1);
    assert_eq!(cf.skipped()[0].0, "nope");
    assert_eq!(cf.sources(), vec![ids[1]]);
    Outcome::Passed
}

/// With cache-from, a local hit counts only if it is a strict ancestor of a
/// source; a hit outside the sources' lineage is ignored.
pub async fn cache_from_local_hit_needs_ancestry(h: Arc<dyn Harness>) -> Outcome {
    let (store, cache) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let local = add(&store, Some(base), &Spec::new(probe("RUN a"), 1), true).await;
    let p = linux_amd64();
    assert_eq!(
        lookup(&cache, Some(base), &probe("RUN a"), &p).await,
        Some(local)
    );
    // A source that does not descend from `local`: the local hit is dropped.
    let other = add(&store, None, &Spec::new(probe("other"), 2), false).await;
    let cf = CacheFrom::new(store.clone(), &[other.to_string()], &IdResolver)
        .await
        .must("cache-from");
    assert_eq!(lookup(&cf, Some(base), &probe("RUN a"), &p).await, None);
    // A source below `local`: the local hit stands.
    let below = add(&store, Some(local), &Spec::new(probe("RUN b"), 3), true).await;
    let cf = CacheFrom::new(store.clone(), &[below.to_string()], &IdResolver)
        .await
        .must("cache-from");
    assert_eq!(
        lookup(&cf, Some(base), &probe("RUN a"), &p).await,
        Some(local)
    );
    Outcome::Passed
}

/// A source whose history ends at the probed step is itself the hit, and is
/// linked under the build's parent.
pub async fn cache_from_source_at_end_of_history(h: Arc<dyn Harness>) -> Outcome {
    let (store, _) = fresh(&h).await;
    let ids = chain(
        &store,
        &[("FROM", Some(diff(1))), ("RUN a", Some(diff(2)))],
        0,
    )
    .await;
    // Loaded elsewhere: the same bytes, no parent link.
    let (other, _) = fresh(&h).await;
    let base = other
        .create(store.get(&ids[0]).await.must("get").raw_json().clone())
        .await
        .must("create");
    let top = other
        .create(store.get(&ids[1]).await.must("get").raw_json().clone())
        .await
        .must("create");
    assert_eq!(other.parent(&top).must("parent"), None);
    let cf = CacheFrom::new(other.clone(), &[top.to_string()], &IdResolver)
        .await
        .must("cache-from");
    assert_eq!(
        lookup(&cf, Some(base), &probe("RUN a"), &linux_amd64()).await,
        Some(top)
    );
    assert_eq!(other.parent(&top).must("parent"), Some(base));
    Outcome::Passed
}

/// A source matching a step in the middle of its history yields a restored
/// intermediate image: Docker's exact bytes (Go struct order, parent's
/// history plus the matched entry, rootfs plus that entry's layer), linked
/// under the parent, not built locally; then only that source is used.
pub async fn cache_from_restores_intermediate_image(h: Arc<dyn Harness>) -> Outcome {
    let (store, _) = fresh(&h).await;
    let ids = chain(
        &store,
        &[
            ("FROM", Some(diff(1))),
            ("RUN a", Some(diff(2))),
            ("ENV X=1", None),
            ("RUN b", Some(diff(3))),
        ],
        0,
    )
    .await;
    let (other, _) = fresh(&h).await;
    let base = other
        .create(store.get(&ids[0]).await.must("get").raw_json().clone())
        .await
        .must("create");
    let source = other
        .create(store.get(&ids[3]).await.must("get").raw_json().clone())
        .await
        .must("create");
    let decoy = add(&other, None, &Spec::new(probe("decoy"), 9), false).await;
    let cf = CacheFrom::new(
        other.clone(),
        &[source.to_string(), decoy.to_string()],
        &IdResolver,
    )
    .await
    .must("cache-from");
    let p = linux_amd64();
    let restored = lookup(&cf, Some(base), &probe("RUN a"), &p)
        .await
        .must("a hit");
    assert_ne!(restored, source);
    assert_eq!(other.parent(&restored).must("parent"), Some(base));
    assert!(!other.is_built_locally(&restored).must("flag"));
    assert_eq!(cf.sources(), vec![source]);
    let img = other.get(&restored).await.must("restored");
    let src = other.get(&source).await.must("source");
    assert_eq!(img.history.len(), 2);
    assert_eq!(img.history[1], src.history[1]);
    assert_eq!(
        img.rootfs.raw_diff_ids,
        vec![diff(1).to_string(), diff(2).to_string()]
    );
    assert_eq!(img.created, src.history[1].created);
    assert_eq!(img.config.as_ref(), Some(&probe("RUN a")));
    // The exact bytes Docker writes for this image: Go struct order, an
    // empty container_config, created from the history entry.
    let expected = format!(
        concat!(
            r#"{{"created":"{created}","container_config":{empty},"config":{cfg},"architecture":"amd64","os":"linux","#,
            r#""rootfs":{{"type":"layers","diff_ids":["{d1}","{d2}"]}},"history":[{h0},{h1}]}}"#
        ),
        created = src.history[1].created.must("time"),
        empty = String::from_utf8(ContainerConfig::default().to_json()).must("utf8"),
        cfg = String::from_utf8(probe("RUN a").to_json()).must("utf8"),
        d1 = diff(1),
        d2 = diff(2),
        h0 = history_json(&src.history[0]),
        h1 = history_json(&src.history[1]),
    );
    assert_eq!(
        String::from_utf8_lossy(img.raw_json()),
        expected,
        "restored bytes differ from Docker's"
    );
    // The next step continues from the restored image on the same source.
    let next = lookup(&cf, Some(restored), &probe("ENV X=1"), &p)
        .await
        .must("second hit");
    assert_eq!(other.get(&next).await.must("get").history.len(), 3);
    Outcome::Passed
}

fn history_json(h: &History) -> String {
    // Go's ocispec.History: created, created_by, author, comment,
    // empty_layer, each omitted when empty; HTML characters escaped.
    let mut parts = Vec::new();
    if let Some(t) = h.created {
        parts.push(format!(r#""created":"{t}""#));
    }
    if !h.created_by.is_empty() {
        let s = serde_json_string(&h.created_by);
        parts.push(format!(r#""created_by":{s}"#));
    }
    if h.empty_layer {
        parts.push(r#""empty_layer":true"#.to_owned());
    }
    format!("{{{}}}", parts.join(","))
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A matched history entry that added no layer restores an image with the
/// parent's layers only.
pub async fn cache_from_empty_layer_step(h: Arc<dyn Harness>) -> Outcome {
    let (store, _) = fresh(&h).await;
    let ids = chain(
        &store,
        &[
            ("FROM", Some(diff(1))),
            ("ENV X=1", None),
            ("RUN b", Some(diff(3))),
        ],
        0,
    )
    .await;
    let (other, _) = fresh(&h).await;
    let base = other
        .create(store.get(&ids[0]).await.must("get").raw_json().clone())
        .await
        .must("create");
    let source = other
        .create(store.get(&ids[2]).await.must("get").raw_json().clone())
        .await
        .must("create");
    let cf = CacheFrom::new(other.clone(), &[source.to_string()], &IdResolver)
        .await
        .must("cache-from");
    let restored = lookup(&cf, Some(base), &probe("ENV X=1"), &linux_amd64())
        .await
        .must("hit");
    let img = other.get(&restored).await.must("get");
    assert_eq!(img.rootfs.raw_diff_ids, vec![diff(1).to_string()]);
    assert!(img.history[1].empty_layer);
    Outcome::Passed
}

fn dockerfile() -> Vec<Step> {
    vec![
        Step::Env("FOO".into(), "bar".into()),
        Step::Run {
            command: "make".into(),
            build_args: BTreeMap::new(),
            diff_id: Some(diff(11)),
        },
        Step::Copy {
            source: format!("file:{} in /app", "ab".repeat(32)),
            diff_id: Some(diff(12)),
        },
        Step::Cmd(vec!["/app/run".into()]),
    ]
}

async fn build(
    store: &Store,
    cache: Arc<dyn ImageCache>,
    base: Option<ImageId>,
    steps: Vec<Step>,
) -> (Vec<StepOutcome>, Option<ImageId>) {
    let mut stage = Stage::from(store.clone(), cache, base, linux_amd64())
        .await
        .must("stage");
    let mut outcomes = Vec::new();
    for s in steps {
        outcomes.push(stage.step(s).await.must("step"));
    }
    (outcomes, stage.image())
}

fn hits(outcomes: &[StepOutcome]) -> usize {
    outcomes.iter().filter(|o| o.is_cached()).count()
}

/// Docker `TestBuildCacheFrom`: a rebuild elsewhere with `--cache-from` hits
/// every step; an unknown source gives no hit; a changed last step reuses
/// all but the last.
pub async fn builder_cache_from(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let (_, first) = build(&store, Arc::new(local), Some(base), dockerfile()).await;
    let first = first.must("image");
    // Another machine: only the base and the final image, pulled (no
    // parents, not built locally).
    let (other, other_local) = fresh(&h).await;
    let base2 = other
        .create(store.get(&base).await.must("get").raw_json().clone())
        .await
        .must("create");
    let pulled = other
        .create(store.get(&first).await.must("get").raw_json().clone())
        .await
        .must("create");
    assert_eq!(base2, base);
    let cf: Arc<dyn ImageCache> = Arc::new(
        CacheFrom::new(other.clone(), &[pulled.to_string()], &IdResolver)
            .await
            .must("cache-from"),
    );
    let (out, image) = build(&other, cf, Some(base2), dockerfile()).await;
    assert_eq!(hits(&out), 4, "{out:?}");
    assert_eq!(image, Some(pulled));
    // Unknown source: nothing from cache-from, and the local images don't
    // count either.
    let cf: Arc<dyn ImageCache> = Arc::new(
        CacheFrom::new(other.clone(), &["unknown".to_owned()], &IdResolver)
            .await
            .must("cache-from"),
    );
    let (out, _) = build(&other, cf, Some(base2), dockerfile()).await;
    assert_eq!(hits(&out), 0, "{out:?}");
    // Changed last step: three hits, then a build.
    let mut changed = dockerfile();
    changed[3] = Step::Cmd(vec!["/app/other".into()]);
    let cf: Arc<dyn ImageCache> = Arc::new(
        CacheFrom::new(other.clone(), &[pulled.to_string()], &IdResolver)
            .await
            .must("cache-from"),
    );
    let (out, image) = build(&other, cf, Some(base2), changed).await;
    assert_eq!(hits(&out), 3, "{out:?}");
    assert_ne!(image, Some(pulled));
    drop(other_local);
    Outcome::Passed
}

/// Docker `TestBuildCacheFromLoad`: after save and load (no parents) the
/// same source still gives every hit with the same final ID, and a rebuild
/// creates no new intermediate images.
pub async fn builder_cache_from_after_save_and_load(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let (_, first) = build(&store, Arc::new(local), None, dockerfile()).await;
    let first = first.must("image");
    let (other, _) = fresh(&h).await;
    let loaded = other
        .create(store.get(&first).await.must("get").raw_json().clone())
        .await
        .must("create");
    let cf = || async {
        let c: Arc<dyn ImageCache> = Arc::new(
            CacheFrom::new(other.clone(), &[loaded.to_string()], &IdResolver)
                .await
                .must("cache-from"),
        );
        c
    };
    let (out, image) = build(&other, cf().await, None, dockerfile()).await;
    assert_eq!(hits(&out), 4, "{out:?}");
    assert_eq!(image, Some(loaded));
    let count = other.len();
    let (out, image) = build(&other, cf().await, None, dockerfile()).await;
    assert_eq!(hits(&out), 4, "{out:?}");
    assert_eq!(image, Some(loaded));
    assert_eq!(other.len(), count, "a rebuild created images");
    Outcome::Passed
}

/// Docker `TestBuildCacheFromEqualDiffIDsLength`: a step that adds no layer
/// still matches (the `>` rule, not `>=`).
pub async fn builder_cache_from_equal_diff_ids_length(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let steps = || {
        vec![
            Step::Run {
                command: "true".into(),
                build_args: BTreeMap::new(),
                diff_id: Some(diff(21)),
            },
            Step::Run {
                command: "echo no changes".into(),
                build_args: BTreeMap::new(),
                diff_id: None,
            },
        ]
    };
    let (_, first) = build(&store, Arc::new(local), None, steps()).await;
    let (other, _) = fresh(&h).await;
    let loaded = other
        .create(
            store
                .get(&first.must("image"))
                .await
                .must("get")
                .raw_json()
                .clone(),
        )
        .await
        .must("create");
    let cf: Arc<dyn ImageCache> = Arc::new(
        CacheFrom::new(other.clone(), &[loaded.to_string()], &IdResolver)
            .await
            .must("cache-from"),
    );
    let (out, _) = build(&other, cf, None, steps()).await;
    assert_eq!(hits(&out), 2, "{out:?}");
    Outcome::Passed
}

/// Docker `TestBuildMultiStageCache`: a second identical stage is cached
/// within one build.
pub async fn builder_multi_stage_cache(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let local: Arc<dyn ImageCache> = Arc::new(local);
    let base = add(&store, None, &Spec::new(probe("base"), 0), false).await;
    let (first, a) = build(&store, local.clone(), Some(base), dockerfile()).await;
    assert_eq!(hits(&first), 0);
    let (second, b) = build(&store, local, Some(base), dockerfile()).await;
    assert_eq!(hits(&second), 4);
    assert_eq!(a, b);
    Outcome::Passed
}

/// Docker `TestBuildLabelsCache`: `LABEL Vendor=Acme` and `LABEL Vendor Acme`
/// are one step; `Acme1` misses; labels keep their written order.
pub async fn builder_labels_cache(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let local: Arc<dyn ImageCache> = Arc::new(local);
    let label = |v: &str| vec![Step::Label(vec![("Vendor".into(), v.into())])];
    let (_, a) = build(&store, local.clone(), None, label("Acme")).await;
    let (out, b) = build(&store, local.clone(), None, label("Acme")).await;
    assert_eq!((hits(&out), a), (1, b));
    let (out, _) = build(&store, local.clone(), None, label("Acme1")).await;
    assert_eq!(hits(&out), 0);
    let two = |x: &str, y: &str| {
        vec![Step::Label(vec![
            (x.into(), "b1".into()),
            (y.into(), "b2".into()),
        ])]
    };
    build(&store, local.clone(), None, two("f1", "f2")).await;
    let (out, _) = build(&store, local.clone(), None, two("f1", "f2")).await;
    assert_eq!(hits(&out), 1);
    Outcome::Passed
}

/// Docker `TestBuildSameDockerfileWithAndWithoutCache`: FROM scratch
/// MAINTAINER/EXPOSE/ENTRYPOINT is cached on rebuild; `--no-cache` builds anew.
pub async fn builder_from_scratch_with_and_without_cache(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let local: Arc<dyn ImageCache> = Arc::new(local);
    let steps = || {
        vec![
            Step::Maintainer("dockerio".into()),
            Step::Expose("5432/tcp".into()),
            Step::Entrypoint(vec!["/bin/echo".into()]),
        ]
    };
    let (_, a) = build(&store, local.clone(), None, steps()).await;
    let (out, b) = build(&store, local.clone(), None, steps()).await;
    assert_eq!(hits(&out), 3);
    assert_eq!(a, b);
    let mut stage = Stage::from(store.clone(), local, None, linux_amd64())
        .await
        .must("stage")
        .with_no_cache(true);
    for s in steps() {
        assert!(!stage.step(s).await.must("step").is_cached());
    }
    assert_ne!(stage.image(), a);
    Outcome::Passed
}

/// Docker's build-argument tests: the same value hits, an extra argument
/// misses, another value misses.
pub async fn builder_build_args(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let local: Arc<dyn ImageCache> = Arc::new(local);
    let run = |args: &[(&str, &str)]| {
        vec![Step::Run {
            command: "echo $FOO".into(),
            build_args: args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            diff_id: Some(diff(31)),
        }]
    };
    let (_, a) = build(&store, local.clone(), None, run(&[("FOO", "bar")])).await;
    let (out, b) = build(&store, local.clone(), None, run(&[("FOO", "bar")])).await;
    assert_eq!((hits(&out), a), (1, b));
    let (out, _) = build(
        &store,
        local.clone(),
        None,
        run(&[("FOO", "bar"), ("X", "y")]),
    )
    .await;
    assert_eq!(hits(&out), 0);
    let (out, _) = build(&store, local.clone(), None, run(&[("FOO", "baz")])).await;
    assert_eq!(hits(&out), 0);
    Outcome::Passed
}

/// Docker `TestBuildWorkdirNoCacheMiss`: `WORKDIR /foo/` and `WORKDIR /foo` hit each other.
pub async fn builder_workdir_no_cache_miss(h: Arc<dyn Harness>) -> Outcome {
    let (store, local) = fresh(&h).await;
    let local: Arc<dyn ImageCache> = Arc::new(local);
    let (_, a) = build(
        &store,
        local.clone(),
        None,
        vec![Step::Workdir("/foo/".into())],
    )
    .await;
    let (out, b) = build(&store, local, None, vec![Step::Workdir("/foo".into())]).await;
    assert_eq!((hits(&out), a), (1, b));
    Outcome::Passed
}
