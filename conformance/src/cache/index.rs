//! The cache index against a linear scan over random stores.

use super::*;

/// A small deterministic generator (xorshift), so the case needs no crate
/// and replays identically.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn random_config(rng: &mut Rng) -> ContainerConfig {
    // Tiny alphabets, so that random configs collide often and every
    // quirk of compare() gets exercised.
    let words = ["a", "b", ""];
    let mut c = ContainerConfig {
        cmd: Some(vec![(*rng.pick(&["RUN a", "RUN b"])).to_owned()]),
        ..ContainerConfig::default()
    };
    if rng.below(2) == 0 {
        let mut env: Vec<String> = vec!["A=1".into(), "B=2".into()];
        if rng.below(2) == 0 {
            env.reverse();
        }
        c.env = Some(env);
    }
    if rng.below(2) == 0 {
        let mut labels = BTreeMap::new();
        for _ in 0..rng.below(3) {
            labels.insert(
                (*rng.pick(&["x", "y"])).to_owned(),
                (*rng.pick(&words)).to_owned(),
            );
        }
        c.labels = Some(labels);
    }
    if rng.below(3) == 0 {
        c.exposed_ports = ["80/tcp".to_owned()].into();
    }
    if rng.below(4) == 0 {
        c.user = "root".into();
    }
    if rng.below(4) == 0 {
        c.hostname = (*rng.pick(&words)).to_owned();
    }
    if rng.below(5) == 0 {
        c.open_stdin = true;
    }
    c
}

/// On random stores and random probes, the indexed lookup answers exactly
/// what the linear scan answers — FROM scratch included.
pub async fn cache_index_matches_linear_scan(h: Arc<dyn Harness>) -> Outcome {
    let platforms = [
        linux_amd64(),
        Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            ..Platform::default()
        },
        Platform::default(),
    ];
    for seed in 1..=12u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (store, cache) = fresh(&h).await;
        let mut ids: Vec<ImageId> = Vec::new();
        for n in 0..40 {
            let parent = if ids.is_empty() || rng.below(4) == 0 {
                None
            } else {
                Some(*rng.pick(&ids))
            };
            let mut spec = Spec::new(random_config(&mut rng), rng.below(4) as i64);
            spec.platform = rng.pick(&platforms).clone();
            spec.comment = format!("{seed}-{n}");
            if rng.below(6) == 0 {
                spec.created = None;
            }
            let built = rng.below(4) != 0;
            ids.push(add(&store, parent, &spec, built).await);
        }
        // Some re-parenting and deletes, so the index sees changes too.
        for _ in 0..5 {
            let a = *rng.pick(&ids);
            let b = *rng.pick(&ids);
            let _ = store.set_parent(&a, &b).await;
        }
        for _ in 0..3 {
            let victim = *rng.pick(&ids);
            let _ = store.delete(&victim).await;
        }
        let live: Vec<ImageId> = store.ids();
        for _ in 0..60 {
            let parent = if rng.below(3) == 0 {
                None
            } else {
                Some(*rng.pick(&live))
            };
            let probe = random_config(&mut rng);
            let platform = rng.pick(&platforms[..2]).clone();
            let want = linear_lookup(&store, parent.as_ref(), Some(&probe), &platform)
                .await
                .must("linear scan");
            let got = lookup(&cache, parent, &probe, &platform).await;
            assert_eq!(
                got, want,
                "seed {seed}: parent {parent:?} probe {probe:?} platform {platform:?}"
            );
        }
    }
    Outcome::Passed
}
