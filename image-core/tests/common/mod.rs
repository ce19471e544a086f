//! proptest strategies for the config model, shared by the property tests.

#![allow(dead_code, unreachable_pub)]

use imagecache_core::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs, Timestamp};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

/// Any string, including control characters, `<>&`, U+2028 and non-ASCII.
pub fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9 ./:=-]{0,12}",
        1 => vec(any::<char>(), 0..8).prop_map(String::from_iter),
        1 => vec(prop::sample::select(vec!['<', '>', '&', '"', '\\', '\u{2028}', '\u{2029}', '\u{8}', '\u{c}', '\u{1}', '\u{7f}', 'é', '日', '\u{1F600}', '\u{FFFD}']), 0..6).prop_map(String::from_iter),
    ]
    .boxed()
}

/// Strings from a tiny alphabet, so that random configs collide often.
pub fn small_string() -> BoxedStrategy<String> {
    "[ab]{0,2}".boxed()
}

pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Years 1..=9999, whole-minute offsets: what RFC 3339 in JSON can carry.
    (
        -62_135_596_800i64 + 86_400..253_402_300_799 - 86_400,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
        -1439i32..1439,
    )
        .prop_map(|(secs, nanos, minutes)| {
            Timestamp::from_parts(secs, nanos, minutes * 60)
                .unwrap_or_else(|| panic!("bad timestamp parts {secs} {nanos} {minutes}"))
        })
}

fn list(s: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Option<Vec<String>>> {
    option::of(vec(s, 0..4))
}

/// A container config drawn from `s` for every string.
pub fn container_config_from<S>(s: S) -> impl Strategy<Value = ContainerConfig>
where
    S: Strategy<Value = String> + Clone + 'static,
{
    let health = option::of(
        (
            list(s.clone()),
            -2i64..3,
            -2i64..3,
            -2i64..3,
            -2i64..3,
            -2i64..3,
        )
            .prop_map(
                |(test, interval, timeout, start_period, start_interval, retries)| HealthConfig {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                },
            ),
    );
    let strings = (
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
    );
    let flags = prop::array::uniform8(prop::bool::weighted(0.2));
    let lists = (
        list(s.clone()),
        list(s.clone()),
        list(s.clone()),
        list(s.clone()),
        list(s.clone()),
    );
    let sets = (
        btree_set(s.clone(), 0..3),
        option::of(btree_set(s.clone(), 0..3)),
        option::of(btree_map(s.clone(), s.clone(), 0..3)),
    );
    (strings, flags, lists, sets, health, option::of(-2i64..3)).prop_map(
        |(
            (hostname, domainname, user, image, working_dir, mac_address, stop_signal),
            f,
            (env, cmd, entrypoint, on_build, shell),
            (exposed_ports, volumes, labels),
            healthcheck,
            stop_timeout,
        )| ContainerConfig {
            hostname,
            domainname,
            user,
            attach_stdin: f[0],
            attach_stdout: f[1],
            attach_stderr: f[2],
            exposed_ports,
            tty: f[3],
            open_stdin: f[4],
            stdin_once: f[5],
            env,
            cmd,
            healthcheck,
            args_escaped: f[6],
            image,
            volumes,
            working_dir,
            entrypoint,
            network_disabled: f[7],
            mac_address,
            on_build,
            labels,
            stop_signal,
            stop_timeout,
            shell,
        },
    )
}

pub fn history() -> impl Strategy<Value = History> {
    (
        option::of(timestamp()),
        any_string(),
        any_string(),
        any_string(),
        any::<bool>(),
    )
        .prop_map(
            |(created, created_by, author, comment, empty_layer)| History {
                created,
                created_by,
                author,
                comment,
                empty_layer,
            },
        )
}

pub fn image_config() -> impl Strategy<Value = ImageConfig> {
    let strings = (
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
        any_string(),
    );
    let parts = (
        option::of(timestamp()),
        container_config_from(any_string()),
        option::of(container_config_from(any_string())),
        any::<i64>(),
        (any_string(), vec(any_string(), 0..3)),
        vec(history(), 0..3),
        vec(any_string(), 0..3),
    );
    (strings, parts).prop_map(
        |(
            (
                v1_id,
                parent,
                comment,
                container,
                docker_version,
                author,
                architecture,
                variant,
                os,
                os_version,
            ),
            (
                created,
                container_config,
                config,
                size,
                (fs_type, raw_diff_ids),
                history,
                os_features,
            ),
        )| ImageConfig {
            v1_id,
            parent,
            comment,
            created,
            container,
            container_config,
            docker_version,
            author,
            config,
            architecture,
            variant,
            os,
            size,
            rootfs: RootFs {
                fs_type,
                raw_diff_ids,
            },
            history,
            os_version,
            os_features,
        },
    )
}

/// What `omitempty` makes indistinguishable: an empty `OnBuild`, `Shell` or
/// `Healthcheck.Test` is written as nothing and read back as absent.
pub fn normalise(mut c: ImageConfig) -> ImageConfig {
    for cc in std::iter::once(&mut c.container_config).chain(c.config.as_mut()) {
        for l in [&mut cc.on_build, &mut cc.shell] {
            if l.as_ref().is_some_and(Vec::is_empty) {
                *l = None;
            }
        }
        if let Some(hc) = cc.healthcheck.as_mut()
            && hc.test.as_ref().is_some_and(Vec::is_empty)
        {
            hc.test = None;
        }
    }
    c
}
