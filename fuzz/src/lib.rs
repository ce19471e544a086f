//! The fuzz targets of imagecache and the checks they run.
//!
//! Each target in `fuzz_targets/` hands its input to one function of
//! [`checks`]; the same functions replay the committed corpora
//! (`fuzz/corpus/<target>/`) in `transfer/tests/fuzz_corpus.rs`, so every
//! input the fuzzer kept is checked by `cargo test` on stable as well.

pub mod checks;
