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

mod builder;
mod cache_from;
mod index;
mod lookup;

pub use builder::*;
pub use cache_from::*;
pub use index::*;
pub use lookup::*;

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
