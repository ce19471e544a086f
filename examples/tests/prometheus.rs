//! The libraries' metrics reach Prometheus: a real exporter
//! (`metrics-exporter-prometheus`, as the `prometheus` example installs
//! it) serves them over HTTP, and a scrape finds what the workload did.

// Failed setup panics, as tests do.
#![allow(clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use imagecache_backends::redb::RedbBackend;
use imagecache_engine::blob::BlobCache;
use imagecache_store::Store;
use metrics_exporter_prometheus::PrometheusBuilder;

/// `GET /metrics` over a plain TCP connection.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the exporter");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

/// The value of one sample line, `name{labels} value`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_what_the_workload_did() {
    // A port free now; the exporter binds it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .expect("install the exporter");
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(
        RedbBackend::open(dir.path().join("store.redb"))
            .await
            .expect("open redb"),
    );
    let store = Store::open(backend.clone()).await.expect("open store");
    let blobs = BlobCache::new(backend).expect("blob cache");
    let done = imagecache_examples::observed::run(&store, &blobs, 50)
        .await
        .expect("workload");
    let text = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .expect("scrape");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let created = value(&text, "imagecache_images_created_total").expect("created");
    assert_eq!(created, done.created as f64, "{text}");
    let hits = value(
        &text,
        r#"imagecache_cache_lookups_total{kind="child",result="hit"}"#,
    );
    assert_eq!(hits, Some(done.hits as f64), "{text}");
    let misses = value(
        &text,
        r#"imagecache_cache_lookups_total{kind="scratch",result="miss"}"#,
    );
    assert_eq!(misses, Some(done.misses as f64), "{text}");
    let read = value(&text, "imagecache_blob_bytes_read_total").expect("bytes read");
    assert_eq!(read, done.blob_bytes as f64, "{text}");
    // Every backend call is counted by operation, with its duration.
    let writes = value(&text, r#"imagecache_backend_calls_total{op="write"}"#).expect("writes");
    assert!(writes >= done.created as f64, "{text}");
    assert!(
        text.contains(r#"imagecache_backend_call_seconds_count{op="put_blob"} 1"#)
            || text.contains(r#"imagecache_backend_call_seconds{op="put_blob",quantile="#),
        "{text}"
    );
}
