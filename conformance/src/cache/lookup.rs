//! Cases about one lookup: hits, misses and the rules that pick an image.

use super::*;

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
