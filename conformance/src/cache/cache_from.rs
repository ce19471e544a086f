//! Cases about `--cache-from` sources.

use super::*;

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
