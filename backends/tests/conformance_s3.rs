//! The whole conformance suite over the S3 backend, three times:
//!
//! * over object_store's `InMemory`, always (offline);
//! * against the Garage server named by `IMAGECACHE_TEST_S3_URL` (no
//!   conditional writes);
//! * against the moto server named by `IMAGECACHE_TEST_S3_CONDITIONAL_URL`
//!   (conditional writes honoured).
//!
//! `scripts/test.sh` starts both servers and sets the variables. Without
//! them the server runs print `skipped: … (… not set)`, unless
//! `IMAGECACHE_REQUIRE_S3=1`, which makes a missing server a failure.
//! Every case gets a fresh random prefix; nothing else in the bucket is
//! touched, and each run prefix is deleted when the harness is dropped.
#![cfg(feature = "s3")]

use imagecache_backends::s3::S3Harness;

/// The harness for the server a variable names, or why there is none.
fn from_env(var: &str) -> Result<S3Harness, String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => {
            S3Harness::from_url(&url).map_err(|e| format!("{var} is not a usable URL: {e}"))
        }
        _ if std::env::var("IMAGECACHE_REQUIRE_S3").as_deref() == Ok("1") => {
            panic!("{var} is not set but IMAGECACHE_REQUIRE_S3=1")
        }
        _ => Err(format!("{var} not set")),
    }
}

mod in_memory {
    use super::*;

    imagecache_conformance::backend_tests!(S3Harness::in_memory());
}

mod garage {
    use super::*;

    imagecache_conformance::backend_tests!(from_env("IMAGECACHE_TEST_S3_URL"));
}

mod moto {
    use super::*;

    imagecache_conformance::backend_tests!(from_env("IMAGECACHE_TEST_S3_CONDITIONAL_URL"));
}
