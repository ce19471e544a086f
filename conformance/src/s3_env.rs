//! The S3 server tests run against, from the environment.

use std::sync::atomic::{AtomicU64, Ordering};

/// `IMAGECACHE_TEST_S3_URL` under a prefix of its own (`<tag>-<time>-<pid>-<n>`,
/// fresh on every call), so tests sharing a bucket never see each other's
/// objects; `None` when no server is named.
///
/// # Panics
/// When no server is named and `IMAGECACHE_REQUIRE_S3=1` requires one: a
/// run that must cover S3 fails instead of skipping.
pub fn s3_test_url(tag: &str) -> Option<String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let Some(url) = std::env::var("IMAGECACHE_TEST_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert_ne!(
            std::env::var("IMAGECACHE_REQUIRE_S3").as_deref(),
            Ok("1"),
            "IMAGECACHE_TEST_S3_URL is not set, and IMAGECACHE_REQUIRE_S3=1 requires the S3 tests"
        );
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (location, query) = url.split_once('?').unwrap_or((&url, ""));
    Some(format!(
        "{}/{tag}-{nanos:x}-{}-{n}?{query}",
        location.trim_end_matches('/'),
        std::process::id()
    ))
}
