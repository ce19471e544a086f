//! Compile-time check: every future the store returns is `Send`, so it can
//! be spawned on a multi-thread runtime. The check is that this file builds.
use imagecache_store::Store;
use std::sync::Arc;
fn assert_send<T: Send>(_: T) {}
#[allow(dead_code)]
fn checks(store: Store, id: imagecache_core::ImageId, b: Arc<dyn imagecache_core::StoreBackend>) {
    assert_send(Store::open(b.clone()));
    assert_send(store.refresh());
    assert_send(store.map());
    assert_send(store.get(&id));
    assert_send(store.create(bytes::Bytes::new()));
    assert_send(store.delete(&id));
    assert_send(store.set_parent(&id, &id));
}
