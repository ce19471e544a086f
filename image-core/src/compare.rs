//! The builder cache's config comparison (Docker ≥ 26).

use crate::model::{ContainerConfig, HealthConfig};

/// Whether a cached image whose `container_config` is `a` may stand for a
/// build step whose probe config is `b` (Docker's `compare`, moby ≥ 26).
///
/// `None` on either side never matches. Compared, with Docker's exact rules:
///
/// * the lengths of `Env`, `Cmd`, `Entrypoint`, `Shell`, `ExposedPorts`,
///   `Volumes`, `Labels` and `OnBuild` (absent and empty are the same);
/// * `Env`, `OnBuild`, `Cmd`, `Entrypoint` and `Shell` element by element,
///   in order;
/// * `ExposedPorts` and `Volumes` as sets;
/// * `Labels` asymmetrically: every label of `a` must have the same value in
///   `b`, where a label missing from `b` reads as the empty string (so
///   `{x: ""}` matches `{y: "v"}` one way round but not the other);
/// * `AttachStdin`, `AttachStdout`, `AttachStderr`, `NetworkDisabled`,
///   `Tty`, `OpenStdin`, `StdinOnce`, `ArgsEscaped`, `User`, `WorkingDir`,
///   `StopSignal`;
/// * `StopTimeout` (both absent or both equal);
/// * `Healthcheck` (both absent, or both present with equal durations,
///   retries and `Test` list).
///
/// `Hostname`, `Domainname`, `Image` and `MacAddress` describe the container
/// rather than the step and are ignored.
///
/// ```
/// use imagecache_core::{ContainerConfig, compare};
/// let a = ContainerConfig { hostname: "a".into(), ..Default::default() };
/// let b = ContainerConfig { hostname: "b".into(), ..Default::default() };
/// assert!(compare(Some(&a), Some(&b)));
/// assert!(!compare(None, None));
/// ```
pub fn compare(a: Option<&ContainerConfig>, b: Option<&ContainerConfig>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let len = |l: &Option<Vec<String>>| l.as_ref().map_or(0, Vec::len);
    if len(&a.env) != len(&b.env)
        || len(&a.cmd) != len(&b.cmd)
        || len(&a.entrypoint) != len(&b.entrypoint)
        || len(&a.shell) != len(&b.shell)
        || a.exposed_ports.len() != b.exposed_ports.len()
        || a.volumes.as_ref().map_or(0, |v| v.len()) != b.volumes.as_ref().map_or(0, |v| v.len())
        || a.labels.as_ref().map_or(0, |l| l.len()) != b.labels.as_ref().map_or(0, |l| l.len())
        || len(&a.on_build) != len(&b.on_build)
    {
        return false;
    }
    fn same_list(x: &Option<Vec<String>>, y: &Option<Vec<String>>) -> bool {
        x.as_deref().unwrap_or_default() == y.as_deref().unwrap_or_default()
    }
    if !same_list(&a.env, &b.env)
        || !same_list(&a.on_build, &b.on_build)
        || !same_list(&a.cmd, &b.cmd)
        || !same_list(&a.entrypoint, &b.entrypoint)
        || !same_list(&a.shell, &b.shell)
    {
        return false;
    }
    if !a.exposed_ports.iter().all(|p| b.exposed_ports.contains(p)) {
        return false;
    }
    if let Some(va) = &a.volumes
        && !va
            .iter()
            .all(|v| b.volumes.as_ref().is_some_and(|vb| vb.contains(v)))
    {
        return false;
    }
    if let Some(la) = &a.labels {
        let lookup = |k: &str| {
            b.labels
                .as_ref()
                .and_then(|lb| lb.get(k))
                .map_or("", String::as_str)
        };
        if !la.iter().all(|(k, v)| v == lookup(k)) {
            return false;
        }
    }
    a.attach_stdin == b.attach_stdin
        && a.attach_stdout == b.attach_stdout
        && a.attach_stderr == b.attach_stderr
        && a.network_disabled == b.network_disabled
        && a.tty == b.tty
        && a.open_stdin == b.open_stdin
        && a.stdin_once == b.stdin_once
        && a.args_escaped == b.args_escaped
        && a.user == b.user
        && a.working_dir == b.working_dir
        && a.stop_signal == b.stop_signal
        && a.stop_timeout == b.stop_timeout
        && same_healthcheck(a.healthcheck.as_ref(), b.healthcheck.as_ref())
}

fn same_healthcheck(a: Option<&HealthConfig>, b: Option<&HealthConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.interval == b.interval
                && a.start_interval == b.start_interval
                && a.start_period == b.start_period
                && a.timeout == b.timeout
                && a.retries == b.retries
                && a.test.as_deref().unwrap_or_default() == b.test.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn cmp(a: &ContainerConfig, b: &ContainerConfig) -> bool {
        compare(Some(a), Some(b))
    }

    #[test]
    fn none_never_matches() {
        let c = ContainerConfig::default();
        assert!(!compare(None, None));
        assert!(!compare(Some(&c), None));
        assert!(!compare(None, Some(&c)));
        assert!(compare(Some(&c), Some(&c)));
    }

    #[test]
    fn label_rule_is_asymmetric() {
        let a = ContainerConfig {
            labels: labels(&[("x", "")]),
            ..Default::default()
        };
        let b = ContainerConfig {
            labels: labels(&[("y", "v")]),
            ..Default::default()
        };
        let c = ContainerConfig {
            labels: labels(&[("y", "")]),
            ..Default::default()
        };
        assert!(cmp(&a, &b));
        assert!(!cmp(&b, &a));
        assert!(cmp(&a, &c) && cmp(&c, &a));
    }

    #[test]
    fn nil_and_empty_lists_are_the_same() {
        let a = ContainerConfig {
            env: None,
            volumes: None,
            labels: None,
            ..Default::default()
        };
        let b = ContainerConfig {
            env: Some(vec![]),
            volumes: Some(Default::default()),
            labels: Some(Default::default()),
            ..Default::default()
        };
        assert!(cmp(&a, &b) && cmp(&b, &a));
    }

    /// The default config with one field changed.
    fn changed(f: fn(&mut ContainerConfig)) -> ContainerConfig {
        let mut c = ContainerConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn every_compared_field_matters() {
        let base = ContainerConfig::default();
        type Mutation = (&'static str, fn(&mut ContainerConfig));
        let mutations: Vec<Mutation> = vec![
            ("user", |c| c.user = "u".into()),
            ("working_dir", |c| c.working_dir = "/w".into()),
            ("stop_signal", |c| c.stop_signal = "TERM".into()),
            ("stop_timeout", |c| c.stop_timeout = Some(0)),
            ("attach_stdin", |c| c.attach_stdin = true),
            ("attach_stdout", |c| c.attach_stdout = true),
            ("attach_stderr", |c| c.attach_stderr = true),
            ("network_disabled", |c| c.network_disabled = true),
            ("tty", |c| c.tty = true),
            ("open_stdin", |c| c.open_stdin = true),
            ("stdin_once", |c| c.stdin_once = true),
            ("args_escaped", |c| c.args_escaped = true),
            ("shell", |c| c.shell = Some(vec!["sh".into()])),
            ("on_build", |c| c.on_build = Some(vec!["RUN x".into()])),
            ("healthcheck", |c| {
                c.healthcheck = Some(HealthConfig::default())
            }),
        ];
        for (name, f) in mutations {
            let m = changed(f);
            assert!(!cmp(&base, &m), "{name}");
            assert!(!cmp(&m, &base), "{name}");
            assert!(cmp(&m, &m), "{name}");
        }
        let hc = |f: fn(&mut HealthConfig)| {
            let mut h = HealthConfig::default();
            f(&mut h);
            ContainerConfig {
                healthcheck: Some(h),
                ..Default::default()
            }
        };
        let plain = hc(|_| {});
        for m in [
            hc(|h| h.interval = 1),
            hc(|h| h.timeout = 1),
            hc(|h| h.start_period = 1),
            hc(|h| h.start_interval = 1),
            hc(|h| h.retries = 1),
            hc(|h| h.test = Some(vec!["CMD".into()])),
        ] {
            assert!(!cmp(&plain, &m), "{m:?}");
        }
        assert!(cmp(&plain, &hc(|h| h.test = Some(vec![]))));
    }

    #[test]
    fn container_specific_fields_are_ignored() {
        let a = ContainerConfig {
            hostname: "h1".into(),
            domainname: "d1".into(),
            image: "i1".into(),
            mac_address: "m1".into(),
            ..Default::default()
        };
        assert!(cmp(&a, &ContainerConfig::default()));
    }
}
