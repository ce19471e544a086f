//! Property test: the indexed local lookup answers exactly what Docker's
//! linear scan answers, on random stores and random probes — FROM scratch,
//! re-parenting and deletes included, and with configs drawn from small
//! alphabets so that compare()'s quirks (asymmetric labels, ordered Env,
//! port and volume sets, ignored Hostname) come up all the time.

// A panic is how a test fails, so the helpers outside `#[test]` functions
// unwrap too.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use imagecache_backends::MemoryBackend;
use imagecache_core::{ContainerConfig, History, ImageConfig, Platform, RootFs, Timestamp};
use imagecache_engine::{LocalCache, linear_lookup};
use imagecache_store::{CreateOptions, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct ImageSpec {
    parent: Option<usize>,
    config: ContainerConfig,
    created: Option<i64>,
    platform: usize,
    built_locally: bool,
}

#[derive(Debug, Clone)]
enum Change {
    Reparent(usize, usize),
    Delete(usize),
}

#[derive(Debug, Clone)]
struct Probe {
    parent: Option<usize>,
    /// Probe with this image's config (and another Hostname, which compare
    /// ignores) instead of `config`, so that hits are frequent.
    copy_of: Option<usize>,
    /// How to bend the copied config: 0 leaves it; 1 swaps every label with
    /// an empty value for another key with a value (compare() accepts that
    /// in one direction only); 2 reverses Env (order matters).
    twist: u8,
    config: ContainerConfig,
    platform: usize,
}

fn platforms() -> [Platform; 4] {
    let p = |os: &str, arch: &str, variant: &str| Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.into(),
        ..Platform::default()
    };
    [
        p("linux", "amd64", ""),
        p("linux", "arm", "v7"),
        p("linux", "arm", "v8"),
        p("", "", ""),
    ]
}

fn container_config() -> impl Strategy<Value = ContainerConfig> {
    let word = prop::sample::select(vec!["", "a", "b"]);
    (
        prop::sample::select(vec!["RUN a", "RUN b"]),
        prop::option::weighted(
            0.3,
            prop::collection::vec(prop::sample::select(vec!["A=1", "B=2", "A=1 "]), 0..3),
        ),
        prop::option::weighted(
            0.3,
            prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), word.clone(), 0..3),
        ),
        prop::collection::btree_set(prop::sample::select(vec!["80/tcp", "443/tcp"]), 0..2),
        prop::option::weighted(
            0.2,
            prop::collection::btree_set(prop::sample::select(vec!["/a", "/b"]), 0..2),
        ),
        word,
        prop::bool::weighted(0.1),
        prop::sample::select(vec!["", "", "", "root"]),
    )
        .prop_map(
            |(cmd, env, labels, ports, volumes, hostname, open_stdin, user)| ContainerConfig {
                cmd: Some(vec![cmd.to_owned()]),
                env: env.map(|v| v.into_iter().map(str::to_owned).collect()),
                labels: labels.map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<BTreeMap<_, _>>()
                }),
                exposed_ports: ports.into_iter().map(str::to_owned).collect(),
                volumes: volumes.map(|s| s.into_iter().map(str::to_owned).collect()),
                hostname: hostname.to_owned(),
                open_stdin,
                user: user.to_owned(),
                ..ContainerConfig::default()
            },
        )
}

fn scenario() -> impl Strategy<Value = (Vec<ImageSpec>, Vec<Change>, Vec<Probe>)> {
    let image = (
        prop::option::weighted(0.6, 0usize..64),
        container_config(),
        prop::option::weighted(0.9, 0i64..3),
        prop::sample::select(vec![0usize, 0, 0, 1, 2, 3]),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(parent, config, created, platform, built_locally)| ImageSpec {
                parent,
                config,
                created,
                platform,
                built_locally,
            },
        );
    let change = prop_oneof![
        (0usize..64, 0usize..64).prop_map(|(a, b)| Change::Reparent(a, b)),
        (0usize..64).prop_map(Change::Delete),
    ];
    let probe = (
        prop::option::of(0usize..64),
        prop::option::weighted(0.7, 0usize..64),
        prop::sample::select(vec![0u8, 0, 1, 1, 2]),
        container_config(),
        prop::sample::select(vec![0usize, 0, 1, 2]),
    )
        .prop_map(|(parent, copy_of, twist, config, platform)| Probe {
            parent,
            copy_of,
            twist,
            config,
            platform,
        });
    (
        prop::collection::vec(image, 1..30),
        prop::collection::vec(change, 0..6),
        prop::collection::vec(probe, 1..30),
    )
}

fn config_bytes(spec: &ImageSpec, n: usize, parent: Option<&ImageConfig>) -> bytes::Bytes {
    let created = spec
        .created
        .and_then(|s| Timestamp::from_parts(1_700_000_000 + s, 0, 0));
    let platform = &platforms()[spec.platform];
    let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
    history.push(History {
        created,
        created_by: format!("step {n}"),
        empty_layer: true,
        ..History::default()
    });
    bytes::Bytes::from(
        ImageConfig {
            created,
            container_config: spec.config.clone(),
            architecture: platform.architecture.clone(),
            variant: platform.variant.clone(),
            os: platform.os.clone(),
            rootfs: RootFs {
                fs_type: "layers".into(),
                raw_diff_ids: Vec::new(),
            },
            history,
            ..ImageConfig::default()
        }
        .to_json_sorted(),
    )
}

async fn check(
    images: Vec<ImageSpec>,
    changes: Vec<Change>,
    probes: Vec<Probe>,
) -> Result<(), TestCaseError> {
    let store = Store::open(Arc::new(MemoryBackend::new()))
        .await
        .expect("open");
    let mut ids = Vec::new();
    // The index in `ids` of each image's parent, as created.
    let mut parent_index = Vec::new();
    for (n, spec) in images.iter().enumerate() {
        let index = spec
            .parent
            .filter(|_| !ids.is_empty())
            .map(|p| p % ids.len());
        parent_index.push(index);
        let parent = index.map(|i| ids[i]);
        let parent_config = match parent {
            Some(p) => Some(store.get(&p).await.expect("parent")),
            None => None,
        };
        let mut o = CreateOptions::new().with_built_locally(spec.built_locally);
        if let Some(p) = parent {
            o = o.with_parent(p);
        }
        let bytes = config_bytes(spec, n, parent_config.as_deref().map(|i| &**i));
        ids.push(store.create_with(bytes, o).await.expect("create"));
    }
    for change in changes {
        // Refused changes (cycles, deleted images) are part of the scenario.
        match change {
            Change::Reparent(a, b) => {
                let _ = store
                    .set_parent(&ids[a % ids.len()], &ids[b % ids.len()])
                    .await;
            }
            Change::Delete(a) => {
                let _ = store.delete(&ids[a % ids.len()]).await;
            }
        }
    }
    let cache = LocalCache::new(store.clone());
    let platforms = platforms();
    for mut probe in probes {
        if let Some(i) = probe.copy_of {
            let source = &images[i % images.len()];
            probe.config = ContainerConfig {
                hostname: "another-builder".into(),
                ..source.config.clone()
            };
            match probe.twist {
                1 => {
                    if let Some(labels) = probe.config.labels.take() {
                        probe.config.labels = Some(
                            labels
                                .into_iter()
                                .map(|(k, v)| match (k.as_str(), v.as_str()) {
                                    ("x", "") => ("y".to_owned(), "v".to_owned()),
                                    ("y", "") => ("x".to_owned(), "v".to_owned()),
                                    _ => (k, v),
                                })
                                .collect(),
                        );
                    }
                }
                2 => {
                    if let Some(env) = probe.config.env.as_mut() {
                        env.reverse();
                    }
                }
                _ => {}
            }
            // Often ask on the source's own parent, where the hits are.
            if probe.parent.is_some_and(|p| p % 2 == 0) {
                probe.parent = parent_index[i % images.len()];
            }
        }
        let parent = probe.parent.map(|p| ids[p % ids.len()]);
        let platform = &platforms[probe.platform];
        let want = linear_lookup(&store, parent.as_ref(), Some(&probe.config), platform)
            .await
            .expect("scan");
        let got = cache
            .lookup(parent.as_ref(), Some(&probe.config), platform)
            .await
            .expect("lookup");
        prop_assert_eq!(got, want, "probe {:?}", probe);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn indexed_lookup_equals_linear_scan((images, changes, probes) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(check(images, changes, probes))?;
    }
}
