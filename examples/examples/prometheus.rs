//! Metrics to Prometheus: the libraries record through the `metrics`
//! facade and install no recorder; this program installs
//! `metrics-exporter-prometheus`, runs a small build-machine workload on a
//! redb store, and serves the figures until Ctrl-C.
//!
//! ```sh
//! cargo run -p imagecache-examples --example prometheus              # 127.0.0.1:9464
//! cargo run -p imagecache-examples --example prometheus -- 127.0.0.1:9000
//! curl -s http://127.0.0.1:9464/metrics | grep imagecache_
//! ```
//!
//! What is there: backend calls, errors and durations by operation
//! (`imagecache_backend_*`), classic cache lookups by kind and result
//! (`imagecache_cache_lookups_total`), blob lookups, verification failures
//! and bytes (`imagecache_blob_*`), images created and deleted, and how
//! long the store took to open.

use std::net::SocketAddr;
use std::sync::Arc;

use imagecache_backends::redb::RedbBackend;
use imagecache_engine::blob::BlobCache;
use imagecache_store::Store;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9464".to_owned())
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    let dir = tempfile::tempdir()?;
    let backend = Arc::new(RedbBackend::open(dir.path().join("store.redb")).await?);
    let store = Store::open(backend.clone()).await?;
    let blobs = BlobCache::new(backend)?;
    let done = imagecache_examples::observed::run(&store, &blobs, 200).await?;
    println!("{done:?}");
    println!("serving metrics on http://{addr}/metrics; Ctrl-C ends");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
