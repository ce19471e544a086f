//! Support code shared by the examples and benchmarks: a synthetic store
//! shaped like a busy build machine's.
//!
//! [`synthetic`] generates images the way builds produce them: three base
//! images, and on top of them build steps whose parents are picked at
//! random among images that have fewer than four children and are fewer
//! than ten steps deep. Every config is what Docker's builder would commit
//! (a `container_config` holding the step's probe, history and layers that
//! grow along the chain), and the sequence is reproducible from the seed.
//!
//! [`kill`] is the kill harness: a random workload over the library,
//! SIGKILLed again and again, with the store checked after every kill
//! (the `kill_loop` example and the `kill` test run it).

pub mod kill;

use std::collections::BTreeMap;

pub mod observed;

use bytes::Bytes;
use imagecache_core::{
    ChildConfig, ContainerConfig, DiffId, ImageConfig, ImageId, Platform, Timestamp,
};
use imagecache_engine::builder::{default_shell, run_cmd};

/// Children per image, at most.
pub const FAN_OUT: usize = 4;
/// Steps from a base, at most.
pub const MAX_DEPTH: u8 = 10;
/// Number of base images.
pub const BASES: usize = 3;

/// One generated image.
#[derive(Debug, Clone)]
pub struct SyntheticImage {
    /// Its ID.
    pub id: ImageId,
    /// Its exact config bytes.
    pub config: Bytes,
    /// Its parent, `None` for the bases.
    pub parent: Option<ImageId>,
    /// Steps from its base (bases are 0).
    pub depth: u8,
    /// The probe config a rebuild of this step would ask the cache with.
    pub probe: ContainerConfig,
}

/// The platform of every synthetic image.
pub fn platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        ..Platform::default()
    }
}

/// xorshift64*: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is replaced, as xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The probe config of step `n`: the run config with `Cmd` standing for
/// the step, as the builder builds it.
pub fn probe(run_config: &ContainerConfig, n: usize) -> ContainerConfig {
    let mut probe = run_config.clone();
    probe.cmd = Some(run_cmd(
        &default_shell(),
        &format!("apt-get install -y package-{n} && make -C /src/{n}"),
        &BTreeMap::new(),
    ));
    probe.entrypoint = None;
    probe
}

fn run_config() -> ContainerConfig {
    ContainerConfig {
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "LANG=C.UTF-8".into(),
            "APP_HOME=/srv/app".into(),
        ]),
        cmd: Some(vec!["/bin/bash".into()]),
        working_dir: "/srv/app".into(),
        labels: Some(BTreeMap::from([
            ("org.opencontainers.image.vendor".into(), "Example".into()),
            ("maintainer".into(), "builds@example.com".into()),
        ])),
        exposed_ports: ["8080/tcp".to_owned()].into(),
        ..ContainerConfig::default()
    }
}

/// Generates `n` images (at least the bases) from `seed`, parents first.
pub fn synthetic(n: usize, seed: u64) -> Vec<SyntheticImage> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<SyntheticImage> = Vec::with_capacity(n);
    let mut configs: Vec<ImageConfig> = Vec::with_capacity(n);
    let mut children = Vec::with_capacity(n);
    // Images that may still take a child.
    let mut open: Vec<usize> = Vec::new();
    let t0 = 1_700_000_000i64;
    let run_template = run_config();
    for i in 0..n.max(BASES) {
        let parent = if i < BASES {
            None
        } else {
            let slot = rng.below(open.len());
            Some(open[slot])
        };
        let run = run_template.clone();
        let probe = probe(&run, i);
        let diff = DiffId::parse(&format!("sha256:{:064x}", (i as u128) * 7919 + 1))
            .unwrap_or_else(|e| unreachable!("generated diff id is valid: {e}"));
        let child = ChildConfig {
            author: String::new(),
            comment: String::new(),
            diff_id: Some(diff),
            container_config: probe.clone(),
            config: Some(run),
            created: Timestamp::from_parts(t0 + i as i64, (i % 1000) as u32 * 1000, 0)
                .unwrap_or_else(|| unreachable!("valid time")),
        };
        let mut config = ImageConfig::new_child(parent.map(|p| &configs[p]), child, "linux");
        config.architecture = "amd64".into();
        let bytes = Bytes::from(config.to_json_sorted());
        let depth = parent.map_or(0, |p: usize| out[p].depth + 1);
        out.push(SyntheticImage {
            id: ImageId::of_config(&bytes),
            config: bytes,
            parent: parent.map(|p| out[p].id),
            depth,
            probe,
        });
        configs.push(config);
        children.push(0usize);
        if let Some(p) = parent {
            children[p] += 1;
            if children[p] >= FAN_OUT
                && let Some(pos) = open.iter().position(|&x| x == p)
            {
                open.swap_remove(pos);
            }
        }
        if depth < MAX_DEPTH {
            open.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_holds() {
        let images = synthetic(2000, 7);
        let mut kids: std::collections::HashMap<ImageId, usize> = Default::default();
        for img in &images {
            if let Some(p) = img.parent {
                *kids.entry(p).or_default() += 1;
            }
            assert!(img.depth <= MAX_DEPTH);
            assert_eq!(img.id, ImageId::of_config(&img.config));
        }
        assert!(kids.values().all(|&k| k <= FAN_OUT));
        assert_eq!(images.iter().filter(|i| i.parent.is_none()).count(), BASES);
        assert!(images.iter().any(|i| i.depth == MAX_DEPTH));
        // Reproducible.
        assert_eq!(synthetic(50, 7)[49].id, images[49].id);
    }
}

/// The repository README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
