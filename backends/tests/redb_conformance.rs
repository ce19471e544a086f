//! The whole conformance suite over the redb backend, through the harness
//! the crate ships (`RedbHarness`).
//!
//! Every case gets its own database file in a temporary directory. redb
//! locks the file to one open handle, so a second handle in this process is
//! a clone sharing the open database (a second process is refused; see
//! `redb_process.rs`). Damage is done through the backend's raw-write hooks.
#![cfg(feature = "redb")]

imagecache_conformance::backend_tests!(imagecache_backends::redb::RedbHarness::temporary());
