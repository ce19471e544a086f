//! The public model and report types serialise with serde and read back
//! equal: what a downstream crate stores or sends is what it gets back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use imagecache_backends::MemoryBackend;
use imagecache_core::{BlobInfo, Digest, LeaseId, Platform, Reference, Timestamp};
use imagecache_engine::blob::BlobCache;
use imagecache_engine::lifecycle::{Lifecycle, Policy};
use imagecache_store::{ImageInfo, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(value: &T) -> serde_json::Value
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value, "{json}");
    json
}

#[test]
fn model_types_read_back_equal() {
    let t = Timestamp::parse_rfc3339("2024-05-06T07:08:09.123456789+02:00").unwrap();
    assert_eq!(
        round_trip(&t),
        serde_json::json!("2024-05-06T07:08:09.123456789+02:00")
    );
    let r = Reference::parse("busybox:1.36").unwrap();
    assert_eq!(
        round_trip(&r),
        serde_json::json!("docker.io/library/busybox:1.36")
    );
    let p = Platform {
        os: "windows".into(),
        architecture: "amd64".into(),
        os_version: "10.0.17763.5329".into(),
        ..Platform::default()
    };
    assert_eq!(
        round_trip(&p),
        serde_json::json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5329"})
    );
    let b = BlobInfo {
        digest: Digest::sha256(b"x"),
        size: 1,
    };
    round_trip(&b);
    round_trip(&LeaseId::new("build-1").unwrap());
    // Values that do not parse are refused, naming why.
    assert!(serde_json::from_str::<Timestamp>(r#""yesterday""#).is_err());
    assert!(serde_json::from_str::<Reference>(r#""Not/Valid""#).is_err());
    assert!(serde_json::from_str::<LeaseId>(r#"".hidden""#).is_err());
}

#[tokio::test]
async fn store_and_lifecycle_reports_read_back_equal() {
    let backend = Arc::new(MemoryBackend::new());
    let store = Store::open(backend.clone()).await.unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let id = store.create(&config[..]).await.unwrap();
    let info: ImageInfo = store.info(&id).unwrap();
    let json = round_trip(&info);
    assert_eq!(json["platform"]["os"], "linux", "{json}");
    let blobs = BlobCache::new(backend).unwrap();
    let lifecycle = Lifecycle::new(store, Some(blobs));
    round_trip(&lifecycle.disk_usage().await.unwrap());
    round_trip(&lifecycle.check().await.unwrap());
    let report = lifecycle.collect(&[Policy::all()], None).await.unwrap();
    assert_eq!(report.images.len(), 1);
    round_trip(&report);
}
