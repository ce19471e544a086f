//! The main job, on the embedded default: a small Dockerfile built twice
//! against a redb store. The first build misses every step and commits it;
//! the second finds every step in the cache.
//!
//! ```sh
//! cargo run --example quickstart              # a fresh store in a temp dir
//! cargo run --example quickstart -- my.redb   # or a store file of yours
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagecache_backends::redb::RedbBackend;
use imagecache_core::{ContainerConfig, DiffId, ImageId, Platform};
use imagecache_engine::builder::{Stage, Step, StepOutcome};
use imagecache_engine::{ImageCache, LocalCache};
use imagecache_store::Store;

/// A cache that remembers how long its last lookup took.
#[derive(Debug)]
struct Timed {
    inner: LocalCache,
    last: Mutex<(u64, Duration)>,
}

#[async_trait::async_trait]
impl ImageCache for Timed {
    async fn get_cache(
        &self,
        parent: Option<&ImageId>,
        config: Option<&ContainerConfig>,
        platform: &Platform,
    ) -> imagecache_engine::Result<Option<ImageId>> {
        let t = Instant::now();
        let answer = self.inner.get_cache(parent, config, platform).await;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = (last.0 + 1, t.elapsed());
        answer
    }
}

fn dockerfile() -> Vec<(&'static str, Step)> {
    let layer = |n: u8| DiffId::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).ok();
    vec![
        (
            "ENV APP_HOME=/srv/app",
            Step::Env("APP_HOME".into(), "/srv/app".into()),
        ),
        (
            "RUN apt-get update && apt-get install -y curl",
            Step::Run {
                command: "apt-get update && apt-get install -y curl".into(),
                build_args: BTreeMap::new(),
                diff_id: layer(1),
            },
        ),
        ("WORKDIR /srv/app", Step::Workdir("/srv/app".into())),
        (
            "COPY . /srv/app",
            Step::Copy {
                source: format!("dir:{} in /srv/app", "5e".repeat(32)),
                diff_id: layer(2),
            },
        ),
        ("EXPOSE 8080", Step::Expose("8080/tcp".into())),
        ("CMD [\"./serve\"]", Step::Cmd(vec!["./serve".into()])),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("quickstart.redb"));
    let store = Store::open(Arc::new(RedbBackend::open(&path).await?)).await?;
    println!("store: redb://{} ({} images)", path.display(), store.len());

    // The base image, as if pulled: not built locally, so never a cache answer itself.
    let base = store
        .create(
            &br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["bash"]},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000001"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:base in / "}]}"#[..],
        )
        .await?;
    let platform = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Platform::default()
    };
    let cache = Arc::new(Timed {
        inner: LocalCache::new(store.clone()),
        last: Mutex::new((0, Duration::ZERO)),
    });

    for build in 1..=2 {
        println!("\nbuild {build}: FROM {}", &base.hex()[..12]);
        let mut stage =
            Stage::from(store.clone(), cache.clone(), Some(base), platform.clone()).await?;
        let steps = dockerfile();
        let total = steps.len();
        for (i, (text, step)) in steps.into_iter().enumerate() {
            let before = cache.last.lock().unwrap_or_else(|e| e.into_inner()).0;
            let outcome = stage.step(step).await?;
            let (calls, took) = *cache.last.lock().unwrap_or_else(|e| e.into_inner());
            // After the first miss of a stage the builder stops asking.
            let lookup = if calls > before {
                format!("lookup {:.1} µs", took.as_secs_f64() * 1e6)
            } else {
                "no lookup after a miss".to_owned()
            };
            let (what, id) = match outcome {
                StepOutcome::Cached(id) => ("hit  ", id),
                StepOutcome::Built(id) => ("miss ", id),
            };
            println!(
                "  step {}/{total} {what} {:<46} -> {}  ({lookup})",
                i + 1,
                text,
                &id.hex()[..12],
            );
        }
    }
    println!("\n{} images in the store", store.len());
    Ok(())
}
