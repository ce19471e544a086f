//! The bad-input corpus, library part: well over a thousand inputs, made
//! deterministically from valid ones, thrown at every public entry point
//! that reads outside data — image-core's parsers (configs, digests, IDs,
//! references, timestamps, lease IDs, resources and records), the image
//! store (create, batches, parents, delete, tags, names, search, filters),
//! leases, the blob cache (mismatched, short and long bodies, broken and
//! bomb-sized gzip and zstd layers, manifests), lifecycle filters and
//! durations, store URLs and imports of broken archives and layouts.
//!
//! Every case must end in a typed error of the expected kind, leave the
//! store exactly as it was (images, metadata, names, leases, blobs and their
//! notes, read back from the backend), never panic (a panic hook counts
//! panics on every thread) and produce an error text without raw control
//! characters. The tally is printed as an `evidence:` line; the store cases
//! run over a redb file and an fs directory.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "bad_inputs/archives.rs"]
mod archives;
#[path = "bad_inputs/cases.rs"]
mod cases;
mod common;
#[path = "bad_inputs/harness.rs"]
mod harness;
#[path = "bad_inputs/mutate.rs"]
mod mutate;

use harness::{Fixture, Tally};

/// Parsers that need no store: configs, digests, references, timestamps,
/// lease parts, filters, durations, compressions and store URLs.
#[test]
fn bad_inputs_to_parsers_are_refused_with_typed_errors() {
    harness::install_panic_counter();
    let mut tally = Tally::new("parsers");
    let runtime = harness::runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(cases::parsers(&mut tally, dir.path()));
    tally.finish();
}

/// The store, names, leases, blobs and imports over a redb file.
#[test]
fn bad_inputs_to_a_redb_store_change_nothing() {
    store_corpus("redb");
}

/// The same over an fs directory.
#[test]
fn bad_inputs_to_an_fs_store_change_nothing() {
    store_corpus("fs");
}

fn store_corpus(kind: &'static str) {
    harness::install_panic_counter();
    let mut tally = Tally::new(kind);
    let runtime = harness::runtime();
    runtime.block_on(async {
        let fx = Fixture::new(kind).await;
        cases::store(&mut tally, &fx).await;
        cases::leases(&mut tally, &fx).await;
        cases::blobs(&mut tally, &fx).await;
        archives::imports(&mut tally, &fx).await;
    });
    tally.finish();
}
