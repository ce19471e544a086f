//! A micro check of the hot paths on a typical config: parsing (run for
//! every config of a store on open) and the cache key (run on every cache
//! probe). It asserts results, never speed; it prints the time per call so
//! that `cargo test --release -p imagecache-core --test micro -- --nocapture`
//! gives a quick figure. Benchmarks proper live with the stores.

use std::time::Instant;

use imagecache_core::{ContainerConfig, ImageConfig, compare};

/// A config as `docker build` writes it for a RUN step on a small base.
const TYPICAL: &[u8] = include_bytes!("golden/parse/docker_build.in.json");

#[test]
fn parses_a_typical_config_repeatedly() {
    let first = ImageConfig::from_json(TYPICAL).unwrap();
    assert_eq!(first.history.len(), 3);
    assert_eq!(first.rootfs.raw_diff_ids.len(), 2);
    assert_eq!(
        first.container_config.cmd.as_deref().unwrap_or_default(),
        ["/bin/sh", "-c", "dd if=/dev/zero of=file bs=10M count=1"]
    );
    let rounds = 2_000;
    let start = Instant::now();
    for _ in 0..rounds {
        let c = ImageConfig::from_json(std::hint::black_box(TYPICAL)).unwrap();
        assert_eq!(c.history.len(), first.history.len());
    }
    let per = start.elapsed() / rounds;
    println!(
        "from_json: {per:?} per {}-byte config ({:.0} MB/s)",
        TYPICAL.len(),
        TYPICAL.len() as f64 / per.as_secs_f64() / 1e6
    );
}

#[test]
fn keys_a_typical_probe_config_repeatedly() {
    // The probe of a metadata instruction: shell + "#(nop) " + instruction.
    let probe = ContainerConfig {
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "LANG=C.UTF-8".into(),
        ]),
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "#(nop) ".into(),
            "LABEL org.opencontainers.image.source=https://example.org/app".into(),
        ]),
        labels: Some(
            [(
                "org.opencontainers.image.source".into(),
                "https://example.org/app".into(),
            )]
            .into(),
        ),
        working_dir: "/app".into(),
        ..Default::default()
    };
    let key = probe.cache_key();
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        assert_eq!(std::hint::black_box(&probe).cache_key(), key);
    }
    let per = start.elapsed() / rounds;
    println!("cache_key: {per:?} per probe config");
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(compare(Some(std::hint::black_box(&probe)), Some(&probe)));
    }
    println!("compare: {:?} per pair", start.elapsed() / rounds);
}
