//! The cache key is a sound index for `compare`: configs that compare equal
//! always share a key, and changing any compared field changes the key.

mod common;

use imagecache_core::{ContainerConfig, HealthConfig, compare};
use proptest::prelude::*;

/// Changes that may or may not keep `compare` true; used to make pairs that
/// are close to each other.
#[derive(Debug, Clone)]
enum Nudge {
    Nothing,
    Hostname(String),
    Domainname(String),
    Image(String),
    MacAddress(String),
    LabelValue(String),
    LabelsNoneToEmpty,
    EnvNoneToEmpty,
    VolumesNoneToEmpty,
    HealthTestNoneToEmpty,
    Reorder,
}

fn nudge() -> impl Strategy<Value = Nudge> {
    prop_oneof![
        Just(Nudge::Nothing),
        common::small_string().prop_map(Nudge::Hostname),
        common::small_string().prop_map(Nudge::Domainname),
        common::small_string().prop_map(Nudge::Image),
        common::small_string().prop_map(Nudge::MacAddress),
        common::small_string().prop_map(Nudge::LabelValue),
        Just(Nudge::LabelsNoneToEmpty),
        Just(Nudge::EnvNoneToEmpty),
        Just(Nudge::VolumesNoneToEmpty),
        Just(Nudge::HealthTestNoneToEmpty),
        Just(Nudge::Reorder),
    ]
}

fn apply(mut c: ContainerConfig, n: &Nudge) -> ContainerConfig {
    match n {
        Nudge::Nothing => {}
        Nudge::Hostname(s) => c.hostname = s.clone(),
        Nudge::Domainname(s) => c.domainname = s.clone(),
        Nudge::Image(s) => c.image = s.clone(),
        Nudge::MacAddress(s) => c.mac_address = s.clone(),
        Nudge::LabelValue(s) => {
            if let Some(v) = c.labels.as_mut().and_then(|l| l.values_mut().next()) {
                *v = s.clone();
            }
        }
        Nudge::LabelsNoneToEmpty => {
            if c.labels.as_ref().is_none_or(|l| l.is_empty()) {
                c.labels = if c.labels.is_some() {
                    None
                } else {
                    Some(Default::default())
                };
            }
        }
        Nudge::EnvNoneToEmpty => {
            if c.env.as_ref().is_none_or(Vec::is_empty) {
                c.env = if c.env.is_some() { None } else { Some(vec![]) };
            }
        }
        Nudge::VolumesNoneToEmpty => {
            if c.volumes.as_ref().is_none_or(|v| v.is_empty()) {
                c.volumes = if c.volumes.is_some() {
                    None
                } else {
                    Some(Default::default())
                };
            }
        }
        Nudge::HealthTestNoneToEmpty => {
            if let Some(hc) = c.healthcheck.as_mut()
                && hc.test.as_ref().is_none_or(Vec::is_empty)
            {
                hc.test = if hc.test.is_some() {
                    None
                } else {
                    Some(vec![])
                };
            }
        }
        Nudge::Reorder => {
            if let Some(env) = c.env.as_mut() {
                env.reverse();
            }
        }
    }
    c
}

/// A change to one field that `compare` checks by equality; each makes the
/// two configs differ under `compare`.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    Flag(usize),
    User,
    WorkingDir,
    StopSignal,
    StopTimeout,
    EnvPush,
    EnvEdit,
    CmdPush,
    CmdEdit,
    EntrypointPush,
    ShellPush,
    OnBuildPush,
    PortAdd,
    VolumeAdd,
    LabelAdd,
    HealthToggle,
    HealthInterval,
    HealthRetries,
    HealthTestPush,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..8).prop_map(Mutation::Flag),
        Just(Mutation::User),
        Just(Mutation::WorkingDir),
        Just(Mutation::StopSignal),
        Just(Mutation::StopTimeout),
        Just(Mutation::EnvPush),
        Just(Mutation::EnvEdit),
        Just(Mutation::CmdPush),
        Just(Mutation::CmdEdit),
        Just(Mutation::EntrypointPush),
        Just(Mutation::ShellPush),
        Just(Mutation::OnBuildPush),
        Just(Mutation::PortAdd),
        Just(Mutation::VolumeAdd),
        Just(Mutation::LabelAdd),
        Just(Mutation::HealthToggle),
        Just(Mutation::HealthInterval),
        Just(Mutation::HealthRetries),
        Just(Mutation::HealthTestPush),
    ]
}

fn mutate(mut c: ContainerConfig, m: Mutation) -> ContainerConfig {
    let push = |l: &mut Option<Vec<String>>| l.get_or_insert_with(Vec::new).push("x".into());
    let edit = |l: &mut Option<Vec<String>>| match l.as_mut().and_then(|l| l.first_mut()) {
        Some(first) => first.push('!'),
        None => push(l),
    };
    let add_new = |set: &mut std::collections::BTreeSet<String>| {
        let mut s = String::from("new");
        while set.contains(&s) {
            s.push('+');
        }
        set.insert(s);
    };
    match m {
        Mutation::Flag(i) => {
            let f = [
                &mut c.attach_stdin,
                &mut c.attach_stdout,
                &mut c.attach_stderr,
                &mut c.network_disabled,
                &mut c.tty,
                &mut c.open_stdin,
                &mut c.stdin_once,
                &mut c.args_escaped,
            ];
            if let Some(flag) = f.into_iter().nth(i) {
                *flag = !*flag;
            }
        }
        Mutation::User => c.user.push('!'),
        Mutation::WorkingDir => c.working_dir.push('!'),
        Mutation::StopSignal => c.stop_signal.push('!'),
        Mutation::StopTimeout => {
            c.stop_timeout = match c.stop_timeout {
                None => Some(0),
                Some(t) if t % 2 == 0 => None,
                Some(t) => Some(t + 1),
            }
        }
        Mutation::EnvPush => push(&mut c.env),
        Mutation::EnvEdit => edit(&mut c.env),
        Mutation::CmdPush => push(&mut c.cmd),
        Mutation::CmdEdit => edit(&mut c.cmd),
        Mutation::EntrypointPush => push(&mut c.entrypoint),
        Mutation::ShellPush => push(&mut c.shell),
        Mutation::OnBuildPush => push(&mut c.on_build),
        Mutation::PortAdd => add_new(&mut c.exposed_ports),
        Mutation::VolumeAdd => add_new(c.volumes.get_or_insert_with(Default::default)),
        Mutation::LabelAdd => {
            let labels = c.labels.get_or_insert_with(Default::default);
            let mut k = String::from("new");
            while labels.contains_key(&k) {
                k.push('+');
            }
            labels.insert(k, String::new());
        }
        Mutation::HealthToggle => {
            c.healthcheck = match c.healthcheck {
                Some(_) => None,
                None => Some(HealthConfig::default()),
            }
        }
        Mutation::HealthInterval => {
            c.healthcheck.get_or_insert_with(Default::default).interval += 1
        }
        Mutation::HealthRetries => c.healthcheck.get_or_insert_with(Default::default).retries -= 1,
        Mutation::HealthTestPush => {
            push(&mut c.healthcheck.get_or_insert_with(Default::default).test)
        }
    }
    c
}

fn config() -> impl Strategy<Value = ContainerConfig> {
    common::container_config_from(common::small_string())
}

/// Configs that are mostly empty, so that independent draws compare equal
/// now and then, with the ignored fields drawn freely.
fn sparse_config() -> impl Strategy<Value = ContainerConfig> {
    use proptest::option::weighted;
    let s = || prop_oneof![4 => Just(String::new()), 1 => Just("a".to_owned())];
    let list = move || {
        prop_oneof![
            3 => Just(None),
            2 => Just(Some(vec![])),
            1 => Just(Some(vec!["a".to_owned()])),
        ]
    };
    let labels = prop_oneof![
        2 => Just(None),
        1 => Just(Some(Default::default())),
        2 => (prop::sample::select(vec!["a", "b"]), prop::sample::select(vec!["", "v"]))
            .prop_map(|(k, v)| Some([(k.to_owned(), v.to_owned())].into())),
    ];
    (
        (
            common::small_string(),
            common::small_string(),
            common::small_string(),
            common::small_string(),
        ),
        (s(), s(), s()),
        (list(), list(), list()),
        labels,
        weighted(0.1, Just(HealthConfig::default())),
        weighted(0.1, 0i64..2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (hostname, domainname, image, mac_address),
                (user, working_dir, stop_signal),
                (env, cmd, shell),
                labels,
                healthcheck,
                stop_timeout,
                tty,
            )| {
                ContainerConfig {
                    hostname,
                    domainname,
                    image,
                    mac_address,
                    user,
                    working_dir,
                    stop_signal,
                    env,
                    cmd,
                    shell,
                    labels,
                    healthcheck,
                    stop_timeout,
                    tty,
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Independent configs over a two-letter alphabet: equal under compare
    /// often enough to matter.
    #[test]
    fn compare_implies_equal_keys(a in config(), b in config()) {
        if compare(Some(&a), Some(&b)) {
            prop_assert_eq!(a.cache_key(), b.cache_key());
        }
    }

    #[test]
    fn compare_implies_equal_keys_sparse(a in sparse_config(), b in sparse_config()) {
        if compare(Some(&a), Some(&b)) {
            prop_assert_eq!(a.cache_key(), b.cache_key());
        }
    }

    /// Configs that differ by small, often irrelevant, changes.
    #[test]
    fn compare_implies_equal_keys_near(a in config(), nudges in proptest::collection::vec(nudge(), 1..4)) {
        let b = nudges.iter().fold(a.clone(), apply);
        if compare(Some(&a), Some(&b)) {
            prop_assert_eq!(a.cache_key(), b.cache_key());
        }
        if compare(Some(&b), Some(&a)) {
            prop_assert_eq!(a.cache_key(), b.cache_key());
        }
    }

    #[test]
    fn mutating_a_compared_field_changes_the_key(a in config(), m in mutation()) {
        let b = mutate(a.clone(), m);
        prop_assert!(!compare(Some(&a), Some(&b)), "{:?} kept compare true", m);
        prop_assert_ne!(a.cache_key(), b.cache_key(), "{:?}", m);
    }
}

#[test]
fn near_pairs_do_compare_equal_often() {
    // Guards the generators: the implication above must not hold vacuously.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (config(), proptest::collection::vec(nudge(), 1..4));
    let mut equal = 0;
    for _ in 0..500 {
        let (a, nudges) = strategy.new_tree(&mut runner).unwrap().current();
        let b = nudges.iter().fold(a.clone(), apply);
        if compare(Some(&a), Some(&b)) && a != b {
            equal += 1;
        }
    }
    assert!(
        equal > 100,
        "only {equal} of 500 near pairs were equal but not identical"
    );
}

#[test]
fn independent_pairs_compare_equal_sometimes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (sparse_config(), sparse_config());
    let mut equal = 0;
    for _ in 0..2000 {
        let (a, b) = strategy.new_tree(&mut runner).unwrap().current();
        if compare(Some(&a), Some(&b)) && a != b {
            equal += 1;
        }
    }
    assert!(
        equal > 20,
        "only {equal} of 2000 independent pairs were equal"
    );
}
