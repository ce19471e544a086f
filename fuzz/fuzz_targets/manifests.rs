//! Fuzz target: see [`imagecache_fuzz::checks::manifests`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = imagecache_fuzz::checks::manifests(data);
});
