//! Round trips: random sets of images — chains with parents, shared and
//! compressed layers, names — exported in both layouts and imported into a
//! fresh store of every backend (fs, redb, memory, and S3 when
//! `IMAGECACHE_TEST_S3_URL` names a server, as `scripts/test.sh` does) come
//! back identical: configs byte for byte, parents (docker-archive carries
//! them), names and layer blobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{config, gzip, layer, sha};
use imagecache_conformance::Harness;
use imagecache_core::{Digest, ImageId, Reference};
use imagecache_engine::blob::{BlobCache, Compression, LayerOptions};
use imagecache_store::{CreateOptions, Store};
use imagecache_transfer::{ExportFormat, ImportOptions, Input};
use proptest::prelude::*;

/// One generated image: how many layers it adds on top of its parent,
/// whether they are stored gzip-compressed, and an optional name.
#[derive(Debug, Clone)]
struct Spec {
    /// Index of an earlier image this one builds on.
    parent: Option<usize>,
    added: Vec<u8>,
    gzip: bool,
    name: Option<String>,
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 1..3),
            any::<bool>(),
            prop::option::of("[a-z]{1,6}(/[a-z]{1,4})?(:[a-z0-9]{1,4})?"),
        ),
        1..5,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (chain, added, gzip, name))| Spec {
                parent: (chain && i > 0).then(|| i - 1),
                added,
                gzip,
                name,
            })
            .collect()
    })
}

struct Opened {
    _fixture: Box<dyn imagecache_conformance::Fixture>,
    store: Store,
    blobs: BlobCache,
}

async fn open(harness: &dyn Harness) -> Opened {
    let fixture = harness.fixture().await;
    let store = Store::open(fixture.store().unwrap()).await.unwrap();
    let blobs = BlobCache::new(fixture.blobs().unwrap()).unwrap();
    Opened {
        _fixture: fixture,
        store,
        blobs,
    }
}

/// Builds the images of `specs` in `to`; returns their IDs.
async fn build(to: &Opened, specs: &[Spec], seed: u64) -> Vec<ImageId> {
    let mut ids: Vec<ImageId> = Vec::new();
    let mut stacks: Vec<(Vec<Digest>, Vec<String>)> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (mut diff_ids, mut history) =
            spec.parent.map(|p| stacks[p].clone()).unwrap_or_default();
        for (n, byte) in spec.added.iter().enumerate() {
            let content = format!("{seed}-{i}-{n}-{byte}");
            let tar = layer(&[(&format!("f{n}"), content.as_bytes())]);
            let diff_id = sha(&tar);
            let (bytes, compression) = if spec.gzip {
                (gzip(&tar), Compression::Gzip)
            } else {
                (tar, Compression::None)
            };
            let mut options = LayerOptions::new().with_compression(compression);
            if spec.gzip {
                options = options.with_diff_id(diff_id);
            }
            let body: imagecache_core::ByteStream = Box::pin(futures::stream::iter([Ok(
                bytes::Bytes::from(bytes.clone()),
            )]));
            to.blobs
                .put_layer_opts(&sha(&bytes), body, options)
                .await
                .unwrap();
            diff_ids.push(diff_id);
            history.push(format!("ADD f{n} /  # {i}"));
        }
        let created_by: Vec<&str> = history.iter().map(String::as_str).collect();
        let cfg = config(&diff_ids, &created_by, "amd64");
        let mut options = CreateOptions::new();
        if let Some(p) = spec.parent {
            options = options.with_parent(ids[p]);
        }
        let id = to
            .store
            .create_with(bytes::Bytes::from(cfg), options)
            .await
            .unwrap();
        if let Some(name) = &spec.name {
            to.store
                .tag(&Reference::parse(name).unwrap(), &id)
                .await
                .unwrap();
        }
        ids.push(id);
        stacks.push((diff_ids, history));
    }
    ids
}

/// What a round trip must keep.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    configs: BTreeMap<ImageId, bytes::Bytes>,
    parents: BTreeMap<ImageId, Option<ImageId>>,
    names: Vec<(Reference, ImageId)>,
    layers: Vec<Digest>,
}

async fn kept(o: &Opened, with_parents: bool) -> Kept {
    let mut configs = BTreeMap::new();
    let mut parents = BTreeMap::new();
    let mut layers = Vec::new();
    for id in o.store.ids() {
        let image = o.store.get(&id).await.unwrap();
        configs.insert(id, image.raw_json().clone());
        parents.insert(
            id,
            if with_parents {
                o.store.parent(&id).unwrap()
            } else {
                None
            },
        );
        for raw in &image.rootfs.raw_diff_ids {
            let d = Digest::parse(raw).unwrap();
            assert!(
                o.blobs.has(&d).await.unwrap().is_some(),
                "layer {d} missing"
            );
            layers.push(d);
        }
    }
    layers.sort();
    layers.dedup();
    Kept {
        configs,
        parents,
        names: o.store.names(),
        layers,
    }
}

async fn round_trip(harnesses: &[Arc<dyn Harness>], specs: &[Spec], seed: u64) {
    let local = imagecache_backends::fs::FsHarness::temporary();
    let source = open(&local).await;
    let ids = build(&source, specs, seed).await;
    let refs: Vec<String> = ids.iter().map(ToString::to_string).collect();
    for format in [ExportFormat::DockerArchive, ExportFormat::Oci] {
        let archive = common::export_bytes(&source.store, &source.blobs, &refs, format).await;
        let with_parents = format == ExportFormat::DockerArchive;
        let expected = kept(&source, with_parents).await;
        for harness in harnesses {
            let fresh = open(harness.as_ref()).await;
            imagecache_transfer::import(
                &fresh.store,
                &fresh.blobs,
                [Input::reader(
                    "export",
                    std::io::Cursor::new(archive.clone()),
                )],
                &ImportOptions::new(),
            )
            .await
            .unwrap();
            assert_eq!(
                kept(&fresh, with_parents).await,
                expected,
                "{format:?} into {}",
                fresh.store.backend()
            );
        }
        // Into the source itself: nothing changes.
        let report = imagecache_transfer::import(
            &source.store,
            &source.blobs,
            [Input::reader("export", std::io::Cursor::new(archive))],
            &ImportOptions::new(),
        )
        .await
        .unwrap();
        assert_eq!(report.blobs_stored, 0);
        assert!(report.parent_conflicts.is_empty(), "{report:?}");
        assert_eq!(kept(&source, true).await.names, expected.names);
    }
}

fn harnesses() -> Vec<Arc<dyn Harness>> {
    let mut out: Vec<Arc<dyn Harness>> = vec![
        Arc::new(imagecache_backends::fs::FsHarness::temporary()),
        Arc::new(imagecache_backends::redb::RedbHarness::temporary()),
        Arc::new(imagecache_backends::memory::MemoryHarness),
    ];
    match std::env::var("IMAGECACHE_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => out.push(Arc::new(
            imagecache_backends::s3::S3Harness::from_url(&url).unwrap(),
        )),
        _ => assert!(
            std::env::var("IMAGECACHE_REQUIRE_S3").as_deref() != Ok("1"),
            "IMAGECACHE_TEST_S3_URL is not set but IMAGECACHE_REQUIRE_S3=1"
        ),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn exported_images_come_back_identical_on_every_backend(specs in specs(), seed in any::<u64>()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let harnesses = harnesses();
        runtime.block_on(round_trip(&harnesses, &specs, seed));
    }
}
