//! Cases about concurrent handles and concurrent creates.

use super::*;

/// Four tasks on each of two store handles over one location create,
/// re-parent and delete at once; afterwards no parent link is lost, every
/// link names an image that exists, and both handles agree.
pub async fn store_concurrent_handles_stay_consistent(h: Arc<dyn Harness>) -> Outcome {
    let (fixture, backend) = crate::images(&h).await;
    let Some(other) = crate::reopen_images(&*fixture).await else {
        return Outcome::skipped(
            "store_concurrent_handles_stay_consistent",
            "harness cannot open a second handle",
        );
    };
    let s1 = Store::open(backend.clone()).await.must("open");
    let s2 = Store::open(other).await.must("open");
    // A shared base every handle knows about.
    let base = s1.create(config(0)).await.must("create");
    s2.refresh().await.must("refresh");
    let mut tasks = Vec::new();
    for (h_idx, store) in [s1.clone(), s2.clone()].into_iter().enumerate() {
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..8 {
                    let n = 1000 + h_idx * 100 + t * 10 + i;
                    let parent = mine.last().copied().unwrap_or(base);
                    let id = store
                        .create_with(config(n), CreateOptions::new().with_parent(parent))
                        .await
                        .must("create");
                    mine.push(id);
                    if i % 3 == 2 {
                        // Re-parent the newest image onto the base.
                        store.set_parent(&id, &base).await.must("re-parent");
                    }
                    if i % 4 == 3 {
                        let victim = mine.remove(0);
                        store.delete(&victim).await.must("delete");
                    }
                }
                mine
            }));
        }
    }
    let mut survivors = BTreeSet::new();
    for t in tasks {
        survivors.extend(t.await.must("task"));
    }
    s1.refresh().await.must("refresh");
    s2.refresh().await.must("refresh");
    let fresh = Store::open(backend).await.must("open");
    for store in [&s1, &s2, &fresh] {
        let ids: BTreeSet<ImageId> = store.ids().into_iter().collect();
        assert!(survivors.is_subset(&ids), "an image was lost");
        for id in &ids {
            if let Some(p) = store.parent(id).must("parent") {
                assert!(ids.contains(&p), "{id} has a parent {p} that is gone");
                assert!(store.children(&p).contains(id));
            }
            for c in store.children(id) {
                assert_eq!(store.parent(&c).must("parent"), Some(*id));
            }
        }
    }
    assert_eq!(observe(&s1), observe(&fresh));
    assert_eq!(observe(&s2), observe(&fresh));
    Outcome::Passed
}

/// Sixteen tasks create the same images at once, half of them naming one
/// parent and half another: each image ends up once in the store, holding
/// one layer reference, with a parent that a fresh open of the backend
/// agrees with.
pub async fn store_concurrent_creates_agree(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, backend) = crate::images(&h).await;
    let layers = Arc::new(RefCountLayers::new());
    let store = Store::open_with(
        backend.clone(),
        StoreOptions::new().with_layers(layers.clone()),
    )
    .await
    .must("open");
    let a = store.create(config(0)).await.must("create");
    let b = store.create(config(1)).await.must("create");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        let parent = if t % 2 == 0 { a } else { b };
        tasks.push(tokio::spawn(async move {
            for n in 2..10 {
                store
                    .create_with(config(n), CreateOptions::new().with_parent(parent))
                    .await
                    .must("create");
            }
        }));
    }
    for t in tasks {
        t.await.must("task");
    }
    assert_eq!(store.len(), 10);
    for id in store.ids() {
        let chain = store
            .info(&id)
            .and_then(|i| i.chain_id)
            .must("every test config has a layer");
        assert_eq!(layers.references(&chain), 1, "layer references of {id}");
        let parent = store.parent(&id).must("parent");
        // The bases have none; every other image was created on one of them.
        assert_eq!(parent.is_none(), id == a || id == b, "parent of {id}");
        assert!(parent.is_none() || parent == Some(a) || parent == Some(b));
    }
    let fresh = Store::open(backend).await.must("open");
    assert_eq!(observe(&fresh), observe(&store));
    Outcome::Passed
}
