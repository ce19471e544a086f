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

/// A container config with only the named fields set.
fn named(hostname: &str, domainname: &str, image: &str, user: &str) -> ContainerConfig {
    ContainerConfig {
        hostname: hostname.into(),
        domainname: domainname.into(),
        image: image.into(),
        user: user.into(),
        ..ContainerConfig::default()
    }
}

/// One field set at a time, as Docker's table builds its configs.
fn stdin(open_stdin: bool) -> ContainerConfig {
    ContainerConfig {
        open_stdin,
        ..ContainerConfig::default()
    }
}

fn env(items: &[&str]) -> ContainerConfig {
    ContainerConfig {
        env: strings(items),
        ..ContainerConfig::default()
    }
}

fn cmd(items: &[&str]) -> ContainerConfig {
    ContainerConfig {
        cmd: strings(items),
        ..ContainerConfig::default()
    }
}

fn lab(pairs: &[(&str, &str)]) -> ContainerConfig {
    ContainerConfig {
        labels: labels(pairs),
        ..ContainerConfig::default()
    }
}

fn ports(items: &[&str]) -> ContainerConfig {
    ContainerConfig {
        exposed_ports: set(items),
        ..ContainerConfig::default()
    }
}

fn entry(items: &[&str]) -> ContainerConfig {
    ContainerConfig {
        entrypoint: strings(items),
        ..ContainerConfig::default()
    }
}

fn vols(items: &[&str]) -> ContainerConfig {
    ContainerConfig {
        volumes: Some(set(items)),
        ..ContainerConfig::default()
    }
}

const PORTS1: &[&str] = &["1111/tcp", "2222/tcp"];
const ENVS1: &[&str] = &["ENV1=value1", "ENV2=value2"];
const SH_C: &[&str] = &["/bin/sh", "-c"];
const LABELS1: &[(&str, &str)] = &[("LABEL1", "value1"), ("LABEL2", "value2")];

/// Docker's pairs that must compare equal.
fn equal_pairs() -> Vec<(&'static str, ContainerConfig, ContainerConfig)> {
    let c = ContainerConfig::default;
    vec![
        ("empty config", c(), c()),
        (
            "hostname, domainname and image are not compared",
            named("host1", "domain1", "image1", "user"),
            named("host2", "domain2", "image2", "user"),
        ),
        ("only OpenStdin false", stdin(false), stdin(false)),
        ("only env", env(ENVS1), env(ENVS1)),
        ("only cmd", cmd(SH_C), cmd(SH_C)),
        ("only labels", lab(LABELS1), lab(LABELS1)),
        ("only exposed ports", ports(PORTS1), ports(PORTS1)),
        ("only entrypoint", entry(SH_C), entry(SH_C)),
        ("only volumes", vols(&["/test1"]), vols(&["/test1"])),
    ]
}

/// Docker's pairs that must compare different.
fn different_pairs() -> Vec<(
    &'static str,
    Option<ContainerConfig>,
    Option<ContainerConfig>,
)> {
    let pair = |name, a, b| (name, Some(a), Some(b));
    vec![
        ("nil and nil", None, None),
        pair(
            "different user",
            named("host1", "domain1", "image1", "user1"),
            named("host1", "domain1", "image1", "user2"),
        ),
        pair("OpenStdin false vs true", stdin(false), stdin(true)),
        pair("OpenStdin true vs false", stdin(true), stdin(false)),
        pair(
            "different env",
            env(ENVS1),
            env(&["ENV1=value1", "ENV3=value3"]),
        ),
        pair("different cmd", cmd(SH_C), cmd(&["/bin/sh", "-d"])),
        pair(
            "cmd of different length",
            cmd(SH_C),
            cmd(&["/bin/sh", "-c", "echo"]),
        ),
        pair(
            "different label value",
            lab(LABELS1),
            lab(&[("LABEL1", "value1"), ("LABEL2", "value3")]),
        ),
        pair(
            "different label count",
            lab(LABELS1),
            lab(&[
                ("LABEL1", "value1"),
                ("LABEL2", "value2"),
                ("LABEL3", "value3"),
            ]),
        ),
        pair(
            "different ports",
            ports(PORTS1),
            ports(&["3333/tcp", "4444/tcp"]),
        ),
        pair(
            "different port count",
            ports(PORTS1),
            ports(&["1111/tcp", "2222/tcp", "5555/tcp"]),
        ),
        pair(
            "different entrypoint",
            entry(SH_C),
            entry(&["/bin/sh", "-d"]),
        ),
        pair(
            "entrypoint of different length",
            entry(SH_C),
            entry(&["/bin/sh", "-c", "echo"]),
        ),
        pair("different volumes", vols(&["/test1"]), vols(&["/test2"])),
        pair(
            "different volume count",
            vols(&["/test1"]),
            vols(&["/test1", "/test3"]),
        ),
    ]
}

/// `TestCompare`: nine pairs of configs that must compare equal and fifteen
/// that must not, with moby ≥ 26 rules.
pub(crate) fn compare() -> Outcome {
    let same = equal_pairs();
    let different = different_pairs();
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
