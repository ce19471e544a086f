use imagecache_core::ImageConfig;
fn cpu_ns() -> u64 { std::fs::read_to_string("/proc/thread-self/schedstat").unwrap().split_whitespace().next().unwrap().parse().unwrap() }
#[test]
fn cpu() {
    let typical: &[u8] = include_bytes!("golden/parse/docker_build.in.json");
    for _ in 0..4 {
        let n = 40000u64;
        let t = cpu_ns();
        for _ in 0..n { std::hint::black_box(ImageConfig::from_json(std::hint::black_box(typical)).unwrap()); }
        println!("cpu: from_json {} ns", (cpu_ns() - t) / n);
    }
}
