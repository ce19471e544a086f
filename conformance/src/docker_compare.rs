//! Docker's `daemon/internal/image/cache/compare_test.go`, ported to
//! `imagecache-core`'s [`compare`](imagecache_core::compare) and
//! [`compare_platform`] (part of the `docker` group).
//!
//! Every table case of Docker's two tests is kept and named, so a failure
//! says which one broke.

use std::collections::{BTreeMap, BTreeSet};

use imagecache_core::{ContainerConfig, Platform, compare_platform};

use crate::Outcome;

/// Every case of this module: name and function.
pub(crate) const CASES: &[crate::PureCase] =
    &[("compare", compare), ("platform_compare", platform_compare)];

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| (*s).to_owned()).collect())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// `TestCompare`: nine pairs of configs that must compare equal and fifteen
/// that must not, with moby ≥ 26 rules.
pub(crate) fn compare() -> Outcome {
    let ports1 = set(&["1111/tcp", "2222/tcp"]);
    let ports2 = set(&["3333/tcp", "4444/tcp"]);
    let ports3 = set(&["1111/tcp", "2222/tcp", "5555/tcp"]);
    let volumes1 = Some(set(&["/test1"]));
    let volumes2 = Some(set(&["/test2"]));
    let volumes3 = Some(set(&["/test1", "/test3"]));
    let envs1 = strings(&["ENV1=value1", "ENV2=value2"]);
    let envs2 = strings(&["ENV1=value1", "ENV3=value3"]);
    let entrypoint1 = strings(&["/bin/sh", "-c"]);
    let entrypoint2 = strings(&["/bin/sh", "-d"]);
    let entrypoint3 = strings(&["/bin/sh", "-c", "echo"]);
    let cmd1 = strings(&["/bin/sh", "-c"]);
    let cmd2 = strings(&["/bin/sh", "-d"]);
    let cmd3 = strings(&["/bin/sh", "-c", "echo"]);
    let labels1 = labels(&[("LABEL1", "value1"), ("LABEL2", "value2")]);
    let labels2 = labels(&[("LABEL1", "value1"), ("LABEL2", "value3")]);
    let labels3 = labels(&[
        ("LABEL1", "value1"),
        ("LABEL2", "value2"),
        ("LABEL3", "value3"),
    ]);
    let c = ContainerConfig::default;
    let named = |hostname: &str, domainname: &str, image: &str, user: &str| ContainerConfig {
        hostname: hostname.into(),
        domainname: domainname.into(),
        image: image.into(),
        user: user.into(),
        ..c()
    };
    let stdin = |open_stdin| ContainerConfig { open_stdin, ..c() };
    let env = |env: &Option<Vec<String>>| ContainerConfig {
        env: env.clone(),
        ..c()
    };
    let cmd = |cmd: &Option<Vec<String>>| ContainerConfig {
        cmd: cmd.clone(),
        ..c()
    };
    let lab = |labels: &Option<BTreeMap<String, String>>| ContainerConfig {
        labels: labels.clone(),
        ..c()
    };
    let ports = |exposed_ports: &BTreeSet<String>| ContainerConfig {
        exposed_ports: exposed_ports.clone(),
        ..c()
    };
    let entry = |entrypoint: &Option<Vec<String>>| ContainerConfig {
        entrypoint: entrypoint.clone(),
        ..c()
    };
    let vols = |volumes: &Option<BTreeSet<String>>| ContainerConfig {
        volumes: volumes.clone(),
        ..c()
    };

    let same: Vec<(&str, ContainerConfig, ContainerConfig)> = vec![
        ("empty config", c(), c()),
        (
            "hostname, domainname and image are not compared",
            named("host1", "domain1", "image1", "user"),
            named("host2", "domain2", "image2", "user"),
        ),
        ("only OpenStdin false", stdin(false), stdin(false)),
        ("only env", env(&envs1), env(&envs1)),
        ("only cmd", cmd(&cmd1), cmd(&cmd1)),
        ("only labels", lab(&labels1), lab(&labels1)),
        ("only exposed ports", ports(&ports1), ports(&ports1)),
        ("only entrypoint", entry(&entrypoint1), entry(&entrypoint1)),
        ("only volumes", vols(&volumes1), vols(&volumes1)),
    ];
    let different: Vec<(&str, Option<ContainerConfig>, Option<ContainerConfig>)> = vec![
        ("nil and nil", None, None),
        (
            "different user",
            Some(named("host1", "domain1", "image1", "user1")),
            Some(named("host1", "domain1", "image1", "user2")),
        ),
        (
            "OpenStdin false vs true",
            Some(stdin(false)),
            Some(stdin(true)),
        ),
        (
            "OpenStdin true vs false",
            Some(stdin(true)),
            Some(stdin(false)),
        ),
        ("different env", Some(env(&envs1)), Some(env(&envs2))),
        ("different cmd", Some(cmd(&cmd1)), Some(cmd(&cmd2))),
        (
            "cmd of different length",
            Some(cmd(&cmd1)),
            Some(cmd(&cmd3)),
        ),
        (
            "different label value",
            Some(lab(&labels1)),
            Some(lab(&labels2)),
        ),
        (
            "different label count",
            Some(lab(&labels1)),
            Some(lab(&labels3)),
        ),
        (
            "different ports",
            Some(ports(&ports1)),
            Some(ports(&ports2)),
        ),
        (
            "different port count",
            Some(ports(&ports1)),
            Some(ports(&ports3)),
        ),
        (
            "different entrypoint",
            Some(entry(&entrypoint1)),
            Some(entry(&entrypoint2)),
        ),
        (
            "entrypoint of different length",
            Some(entry(&entrypoint1)),
            Some(entry(&entrypoint3)),
        ),
        (
            "different volumes",
            Some(vols(&volumes1)),
            Some(vols(&volumes2)),
        ),
        (
            "different volume count",
            Some(vols(&volumes1)),
            Some(vols(&volumes3)),
        ),
    ];
    assert_eq!(same.len(), 9, "compare: Docker's table has 9 equal pairs");
    assert_eq!(
        different.len(),
        15,
        "compare: Docker's table has 15 different pairs"
    );
    for (name, a, b) in &same {
        assert!(
            imagecache_core::compare(Some(a), Some(b)),
            "compare: `{name}` should be equal: {a:?} vs {b:?}"
        );
    }
    for (name, a, b) in &different {
        assert!(
            !imagecache_core::compare(a.as_ref(), b.as_ref()),
            "compare: `{name}` should differ: {a:?} vs {b:?}"
        );
    }
    Outcome::Passed
}

fn platform(os: &str, architecture: &str, variant: &str, os_version: &str) -> Platform {
    Platform {
        os: os.into(),
        architecture: architecture.into(),
        variant: variant.into(),
        os_version: os_version.into(),
        os_features: Vec::new(),
    }
}

/// `TestPlatformCompare`: the nine builder/image platform pairs, including
/// the five Windows OS-version cases that Docker only runs on Windows hosts
/// (the matching rule here does not depend on the host).
pub(crate) fn platform_compare() -> Outcome {
    let linux = |arch: &str, variant: &str| platform("linux", arch, variant, "");
    let windows = |arch: &str, version: &str| platform("windows", arch, "", version);
    let cases = [
        (
            "same os and arch",
            linux("amd64", ""),
            linux("amd64", ""),
            true,
        ),
        (
            "same os different arch",
            linux("amd64", ""),
            linux("arm64", ""),
            false,
        ),
        (
            "same os smaller host variant",
            linux("arm", "v7"),
            linux("arm", "v8"),
            false,
        ),
        (
            "same os higher host variant",
            linux("arm", "v8"),
            linux("arm", "v7"),
            true,
        ),
        (
            "different build and revision",
            windows("amd64", "10.0.22621"),
            windows("amd64", "10.0.17763.5329"),
            true,
        ),
        (
            "different revision",
            windows("amd64", "10.0.17763.1234"),
            windows("amd64", "10.0.17763.5329"),
            true,
        ),
        (
            "different major",
            windows("amd64", "11.0.17763.5329"),
            windows("amd64", "10.0.17763.5329"),
            false,
        ),
        (
            "different minor same osver",
            windows("amd64", "10.0.17763.5329"),
            windows("amd64", "10.1.17763.5329"),
            false,
        ),
        (
            "different arch same osver",
            windows("arm64", "10.0.17763.5329"),
            windows("amd64", "10.0.17763.5329"),
            false,
        ),
    ];
    for (name, builder, image, expected) in &cases {
        assert_eq!(
            compare_platform(builder, image),
            *expected,
            "platform_compare: `{name}`: builder {builder:?}, image {image:?}"
        );
    }
    Outcome::Passed
}
