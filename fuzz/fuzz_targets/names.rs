//! Fuzz target: see [`imagecache_fuzz::checks::names`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = imagecache_fuzz::checks::names(data);
});
