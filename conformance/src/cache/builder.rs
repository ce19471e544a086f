//! Cases that build small Dockerfiles through the classic builder.

use super::*;

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
