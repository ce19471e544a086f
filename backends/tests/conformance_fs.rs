//! The whole conformance suite over the Docker-compatible `fs` backend,
//! through the harness the crate ships (`FsHarness`).
//!
//! Every case gets its own temporary directory. A second handle is a new
//! `FsBackend` opened on the same directory, as a second process would;
//! damage is done by overwriting files in Docker's layout directly.
#![cfg(feature = "fs")]

imagecache_conformance::backend_tests!(imagecache_backends::fs::FsHarness::temporary());
