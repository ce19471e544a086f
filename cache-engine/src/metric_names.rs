//! The names of the metrics this crate records through the [`metrics`]
//! facade. No recorder is installed by the library: install one (for
//! example `metrics-exporter-prometheus`, as the workspace's `prometheus`
//! example does) to collect them. Backend calls are measured by
//! [`imagecache_core::instrument`]; the store's own counters are in
//! `imagecache_store::metric_names`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`CACHE_LOOKUPS`] | counter | `kind` (`child`, `scratch`), `result` (`hit`, `miss`) |
//! | [`BLOB_LOOKUPS`] | counter | `result` (`hit`, `miss`) |
//! | [`BLOB_VERIFY_FAILURES`] | counter | |
//! | [`BLOB_BYTES_READ`] | counter | |

/// Classic builder cache lookups ([`LocalCache::lookup`](crate::classic::LocalCache::lookup)).
pub const CACHE_LOOKUPS: &str = "imagecache_cache_lookups_total";
/// Blob cache lookups: a blob asked for was cached whole, or not.
pub const BLOB_LOOKUPS: &str = "imagecache_blob_lookups_total";
/// Cached blobs found damaged (digest or size mismatch) or unreadable, and
/// lookups whose backend call failed.
pub const BLOB_VERIFY_FAILURES: &str = "imagecache_blob_verify_failures_total";
/// Verified blob bytes handed to readers.
pub const BLOB_BYTES_READ: &str = "imagecache_blob_bytes_read_total";
