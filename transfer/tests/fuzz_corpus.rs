//! Replays the fuzz corpora committed under `fuzz/corpus/<target>/`: every
//! input the fuzzer kept goes through the same check its fuzz target runs
//! (`fuzz/src/checks.rs`), so that `cargo test` on stable catches a
//! regression on any of them without cargo-fuzz.

#[path = "../../fuzz/src/checks.rs"]
#[allow(unreachable_pub)]
mod checks;

use std::path::{Path, PathBuf};

/// The corpus files of `target`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Runs the check of `target` on every file of its corpus and names each
/// file whose check failed.
fn replay(target: &str) {
    let files = corpus(target);
    assert!(!files.is_empty(), "the corpus of {target} is empty");
    let mut failed = Vec::new();
    let (mut bytes, mut accepted) = (0, 0);
    for file in &files {
        let data =
            std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        bytes += data.len();
        let outcome = std::panic::catch_unwind(|| checks::run(target, &data));
        match outcome {
            Ok(Some(ok)) => accepted += usize::from(ok),
            Ok(None) => panic!("no check is named {target}"),
            Err(_) => failed.push(file.display().to_string()),
        }
    }
    imagecache_conformance::evidence::record(
        "fuzz-replay",
        &[
            ("target", &target),
            ("inputs", &files.len()),
            ("bytes", &bytes),
            ("accepted", &accepted),
            ("crashes", &failed.len()),
        ],
    );
    assert!(failed.is_empty(), "{target}: checks failed on {failed:#?}");
}

#[test]
fn every_fuzz_target_has_a_check_and_a_corpus() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| bin.split("name = \"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(bins, checks::TARGETS, "fuzz/Cargo.toml targets");
    for target in checks::TARGETS {
        assert!(checks::run(target, b"").is_some(), "no check for {target}");
        assert!(!corpus(target).is_empty(), "no corpus for {target}");
    }
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn names_corpus() {
    replay("names");
}

#[test]
fn store_url_corpus() {
    replay("store_url");
}

#[test]
fn manifests_corpus() {
    replay("manifests");
}

#[test]
fn import_corpus() {
    replay("import");
}
