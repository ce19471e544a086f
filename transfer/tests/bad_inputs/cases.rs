//! The cases: parsers, the image store, leases and the blob cache.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{
    ChainId, DiffId, Digest, Error as CoreError, Image, ImageConfig, ImageId, Lease, LeaseId,
    LeaseResource, MetadataKey, Reference, Timestamp,
};
use imagecache_engine::blob::{self, Compression, LayerOptions, PutOptions};
use imagecache_engine::lifecycle::{self, Filter};
use imagecache_store::{CreateOptions, Error as StoreError, LeaseOptions};

use crate::harness::{Fixture, Tally, Verdict, both, verdict};
use crate::mutate::{self, Rng};

/// A valid config exercising strings, lists, maps, integers, booleans,
/// times and nested objects; it has no whitespace after its last brace.
pub const CONFIG: &str = concat!(
    r#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","#,
    r#""author":"someone","config":{"Cmd":["/bin/sh","-c","serve"],"Env":["A=1","B=2"],"#,
    r#""Labels":{"team":"web"},"ExposedPorts":{"80/tcp":{}},"ArgsEscaped":true,"#,
    r#""Healthcheck":{"Test":["CMD","true"],"Interval":1000000000,"Retries":3},"#,
    r#""WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":["#,
    r#""sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]},"#,
    r#""history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD a /"},"#,
    r#"{"created":"2024-01-01T00:00:01Z","created_by":"CMD serve","empty_layer":true}]}"#
);

/// Replacements of one part of [`CONFIG`] by a value of the wrong JSON
/// type, an out-of-range number or an invalid time.
const WRONG_VALUES: &[(&str, &str)] = &[
    (r#""architecture":"amd64""#, r#""architecture":5"#),
    (r#""os":"linux""#, r#""os":["linux"]"#),
    (r#""os":"linux""#, r#""os":{}"#),
    (r#""os":"linux""#, r#""os":true"#),
    (r#""author":"someone""#, r#""author":1e3"#),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":12,"author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"yesterday","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"2024-13-01T00:00:00Z","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"2024-02-30T00:00:00Z","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"2024-01-01T25:00:00Z","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"2024-01-01T00:00:00+24:00","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"99999-01-01T00:00:00Z","author""#,
    ),
    (
        r#""created":"2024-01-01T00:00:00Z","author""#,
        r#""created":"","author""#,
    ),
    (r#""Cmd":["/bin/sh","-c","serve"]"#, r#""Cmd":5"#),
    (r#""Cmd":["/bin/sh","-c","serve"]"#, r#""Cmd":[1,2]"#),
    (r#""Cmd":["/bin/sh","-c","serve"]"#, r#""Cmd":{"a":1}"#),
    (r#""Env":["A=1","B=2"]"#, r#""Env":"A=1""#),
    (r#""Env":["A=1","B=2"]"#, r#""Env":[null,{}]"#),
    (r#""Labels":{"team":"web"}"#, r#""Labels":["team"]"#),
    (r#""Labels":{"team":"web"}"#, r#""Labels":{"team":7}"#),
    (
        r#""ExposedPorts":{"80/tcp":{}}"#,
        r#""ExposedPorts":["80/tcp"]"#,
    ),
    (r#""ArgsEscaped":true"#, r#""ArgsEscaped":"true""#),
    (r#""ArgsEscaped":true"#, r#""ArgsEscaped":1"#),
    (r#""Interval":1000000000"#, r#""Interval":1.5"#),
    (r#""Interval":1000000000"#, r#""Interval":1e9"#),
    (
        r#""Interval":1000000000"#,
        r#""Interval":99999999999999999999"#,
    ),
    (
        r#""Interval":1000000000"#,
        r#""Interval":-99999999999999999999"#,
    ),
    (r#""Interval":1000000000"#, r#""Interval":"1s""#),
    (r#""Interval":1000000000"#, r#""Interval":1e999"#),
    (r#""Retries":3"#, r#""Retries":-0"#),
    (r#""Retries":3"#, r#""Retries":3.0"#),
    (r#""Retries":3"#, r#""Retries":[3]"#),
    (r#""Retries":3"#, r#""Retries":0x10"#),
    (r#""Retries":3"#, r#""Retries":NaN"#),
    (r#""Retries":3"#, r#""Retries":Infinity"#),
    (r#""Healthcheck":{"#, r#""Healthcheck":["#),
    (r#""WorkingDir":"/srv""#, r#""WorkingDir":["/srv"]"#),
    (r#""config":{"#, r#""config":"x","old":{"#),
    (r#""config":{"#, r#""config":[],"old":{"#),
    (
        r#""rootfs":{"type":"layers","#,
        r#""rootfs":null,"old":{"type":"layers","#,
    ),
    (
        r#""rootfs":{"type":"layers","#,
        r#""rootfs":"layers","old":{"type":"layers","#,
    ),
    (r#""rootfs":{"type":"layers","#, r#""rootfs":{"type":1,"#),
    (
        r#""rootfs":{"type":"layers","#,
        r#""rootfs":{"type":"layers","diff_ids":"x","#,
    ),
    (
        r#""rootfs":{"type":"layers","#,
        r#""nofs":{"type":"layers","#,
    ),
    (r#""history":["#, r#""history":{},"old":["#),
    (r#""history":["#, r#""history":[1,"#),
    (r#""empty_layer":true"#, r#""empty_layer":"yes""#),
    (r#""empty_layer":true"#, r#""empty_layer":false"#),
    (r#""created_by":"ADD a /""#, r#""created_by":["ADD"]"#),
    (
        r#""created":"2024-01-01T00:00:01Z""#,
        r#""created":"2024-01-01T00:00:01""#,
    ),
    (
        r#""created":"2024-01-01T00:00:01Z""#,
        r#""created":"2024-01-01 00:00:01Z""#,
    ),
    (r#""os":"linux""#, r#""os":"linux","os.version":5"#),
    (r#""os":"linux""#, r#""os":"linux","os.features":"x""#),
    (r#""os":"linux""#, r#""os":"linux","variant":{}"#),
    (r#""os":"linux""#, r#""os":"linux","unknown":[1,2,"#),
    (r#""os":"linux""#, r#""os":"linux","unknown":"\ud800\x""#),
];

/// Strings that are not digests: each is a mutation of a valid one.
fn bad_digests(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut out = vec![
        String::new(),
        "sha256:".to_owned(),
        ":".to_owned(),
        "sha256".to_owned(),
        "sha256:../../etc/passwd".to_owned(),
        format!("sha512:{}", rng.hex(64)),
        format!("sha384:{}", rng.hex(64)),
        format!("md5:{}", rng.hex(32)),
        format!("SHA256:{}", rng.hex(64)),
        format!("sha256:{}", rng.hex(63)),
        format!("sha256:{}", rng.hex(65)),
        format!("sha256:{}", rng.hex(128)),
        format!("sha256:{}", rng.hex(64).to_uppercase()),
        format!(" sha256:{}", rng.hex(64)),
        format!("sha256:{} ", rng.hex(64)),
        format!("sha256: {}", rng.hex(63)),
        format!("sha256:{}\n", rng.hex(64)),
        format!("sha256::{}", rng.hex(63)),
        format!("sha256:sha256:{}", rng.hex(57)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha256:{}", "0".repeat(100_000)),
    ];
    while out.len() < n {
        let valid = format!("sha256:{}", rng.hex(64));
        let bad = match rng.below(6) {
            // Drop one hex digit.
            0 => {
                let at = 7 + rng.below(64);
                format!("{}{}", &valid[..at], &valid[at + 1..])
            }
            // Change one hex digit to a character that is not lowercase hex.
            1 => {
                let at = 7 + rng.below(64);
                let c = *rng.pick(&['G', 'z', 'A', 'F', '-', '/', '.', ' ', 'é', '\u{0}']);
                format!("{}{c}{}", &valid[..at], &valid[at + 1..])
            }
            // Add characters.
            2 => {
                let fragment = mutate::nasty_fragment(rng);
                mutate::insert_at_random(rng, &valid, &fragment)
            }
            // Another algorithm name.
            3 => {
                let alg = *rng.pick(&["sha1", "sha-256", "Sha256", "blake3", "", "sha256+b64"]);
                format!("{alg}:{}", &valid[7..])
            }
            // Cut short.
            4 => valid[..rng.below(valid.len())].to_owned(),
            // No colon.
            _ => {
                let sep = rng.pick(&["", "=", "@", "/"]);
                valid.replacen(':', sep, 1)
            }
        };
        out.push(bad);
    }
    out
}

/// Strings that are not image references.
fn bad_references(rng: &mut Rng, n: usize) -> Vec<String> {
    let digest = format!("sha256:{}", rng.hex(64));
    let mut out = vec![
        String::new(),
        ":".to_owned(),
        "@".to_owned(),
        "UPPER/Case".to_owned(),
        "app:".to_owned(),
        "app@".to_owned(),
        ":tag".to_owned(),
        "app::tag".to_owned(),
        "app:tag:tag".to_owned(),
        "-app".to_owned(),
        "app-".to_owned(),
        "a//b".to_owned(),
        "/app".to_owned(),
        "app/".to_owned(),
        "app:-tag".to_owned(),
        format!("app:{}", "t".repeat(129)),
        format!("{}/app", "a".repeat(300)),
        "a".repeat(256),
        format!("app@{}", &digest[..20]),
        format!("app@{digest}x"),
        format!("app@sha256:{}", "z".repeat(64)),
        "app@sha256:".to_owned(),
        "ho st/app".to_owned(),
        "app\u{0}".to_owned(),
        "app\ttab".to_owned(),
        "ap\u{1b}[31mp".to_owned(),
        "äpp".to_owned(),
        "app:ünicode".to_owned(),
        "app..x".to_owned(),
        "app__x__".to_owned(),
        "app:tag@sha256:short".to_owned(),
    ];
    let valid = [
        "docker.io/library/busybox:1.36",
        "example.com:5000/team/app:v1",
        "ghcr.io/org/tool",
        "app",
    ];
    while out.len() < n {
        let base = *rng.pick(&valid);
        let bad = match rng.below(4) {
            0 => base.to_uppercase(),
            1 => {
                let c = *rng.pick(&[
                    "!", "#", "$", "%", "&", "*", "(", ")", "=", "+", "?", "\\", "\"", "'", ",",
                    ";", "<", ">", "|", "~", "^",
                ]);
                mutate::insert_at_random(rng, base, c)
            }
            2 => {
                let frag = *rng.pick(&[
                    "\u{0}", "\u{1b}", "\u{7f}", " ", "\n", "é", "\u{202e}", "::", "@@", "//",
                ]);
                mutate::insert_at_random(rng, base, frag)
            }
            _ => format!(
                "{base}{}",
                *rng.pick(&[":", "@", "/", "@sha256:", ":a:b", "@sha256:00"])
            ),
        };
        out.push(bad);
    }
    out
}

fn bad_timestamps(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "now",
        "2024",
        "2024-01-01",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00Z",
        "2024-00-01T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T23:60:00Z",
        "2024-01-01T23:59:61Z",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00+25:00",
        "2024-01-01T00:00:00+05:60",
        "2024-01-01T00:00:00+0500",
        "-001-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "2024-01-01T00:00:00Zjunk",
        "２０２４-01-01T00:00:00Z",
    ]
    .map(str::to_owned)
    .to_vec();
    let valid = "2024-05-06T07:08:09.123456789+02:00";
    while out.len() < n {
        let bad = match rng.below(3) {
            0 => valid[..rng.below(valid.len() - 1) + 1]
                .to_owned()
                .replace(':', "x"),
            1 => {
                // A digit replaced by a letter or a separator.
                let digits: Vec<usize> = valid
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                let at = *rng.pick(&digits);
                let c = *rng.pick(&['a', ' ', '-', ':', '\u{0}', 'T']);
                format!("{}{c}{}", &valid[..at], &valid[at + 1..])
            }
            _ => {
                let fields = ["-13-", "-00-", "-32T", "T99:", ":61", "+99:"];
                let f = *rng.pick(&fields);
                match f {
                    "-13-" => valid.replacen("-05-", f, 1),
                    "-00-" => valid.replacen("-05-", f, 1),
                    "-32T" => valid.replacen("-06T", f, 1),
                    "T99:" => valid.replacen("T07:", f, 1),
                    ":61" => valid.replacen(":09", f, 1),
                    _ => valid.replacen("+02:", f, 1),
                }
            }
        };
        out.push(bad);
    }
    out
}

fn bad_keys(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut out: Vec<String> = [
        "", ".", "..", ".hidden", "../x", "a/b", "a b", "a\\b", "a:b", "ä",
    ]
    .map(str::to_owned)
    .to_vec();
    out.push("k".repeat(129));
    while out.len() < n {
        let fragment = mutate::nasty_fragment(rng);
        out.push(mutate::insert_at_random(rng, "build-42", &fragment).replace('a', "/"));
    }
    out.into_iter()
        .filter(|k| MetadataKeyRules::broken(k))
        .collect()
}

/// The documented rules of metadata keys and lease IDs, to keep only keys
/// that break them (a mutation may happen to produce a valid key).
struct MetadataKeyRules;

impl MetadataKeyRules {
    fn broken(k: &str) -> bool {
        k.is_empty()
            || k.len() > 128
            || k.starts_with('.')
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    }
}

/// Bad config documents: mutations of [`CONFIG`] that no JSON or Docker
/// rule lets through.
pub fn bad_configs(rng: &mut Rng, n: usize) -> Vec<(String, Vec<u8>)> {
    let valid = CONFIG.as_bytes();
    assert!(
        ImageConfig::from_json(valid).is_ok(),
        "the seed config must be valid"
    );
    let mut out: Vec<(String, Vec<u8>)> = WRONG_VALUES
        .iter()
        .enumerate()
        .map(|(i, (from, to))| {
            assert!(CONFIG.contains(from), "{from}");
            (
                format!("wrong-value-{i}"),
                CONFIG.replacen(from, to, 1).into_bytes(),
            )
        })
        .collect();
    out.push(("empty".into(), Vec::new()));
    out.push(("no-rootfs".into(), br#"{"os":"linux"}"#.to_vec()));
    out.push((
        "too-many-history-layers".into(),
        br#"{"rootfs":{"type":"layers"},"history":[{},{}]}"#.to_vec(),
    ));
    // Nesting: unknown values may nest at any depth (as in Go up to its
    // limit), so only documents that are nothing but nesting are bad here.
    for depth in [129, 1_000, 100_000] {
        for objects in [false, true] {
            out.push((
                format!("deep-{depth}-{objects}"),
                mutate::deep_json(depth, objects).into_bytes(),
            ));
        }
        let deep_env = format!(r#""Env":{}"#, mutate::deep_json(depth, false));
        out.push((
            format!("deep-env-{depth}"),
            CONFIG
                .replacen(r#""Env":["A=1","B=2"]"#, &deep_env, 1)
                .into_bytes(),
        ));
    }
    for top in [
        "null",
        "[]",
        "1",
        "\"config\"",
        "true",
        "{}",
        "{\"rootfs\":{}}junk",
    ] {
        out.push((format!("top-{top}"), top.as_bytes().to_vec()));
    }
    let mut i = 0;
    while out.len() < n {
        i += 1;
        let (kind, bytes) = match rng.below(5) {
            0 => ("truncated", mutate::truncated(rng, valid)),
            1 => ("raw-control", mutate::with_raw_control(rng, valid)),
            2 => (
                "bad-utf8",
                mutate::with_bad_utf8_outside_strings(rng, valid),
            ),
            3 => (
                "broken-structure",
                mutate::with_broken_structure(rng, valid),
            ),
            _ => {
                let (from, to) = rng.pick(WRONG_VALUES);
                let once = CONFIG.replacen(from, to, 1);
                (
                    "wrong-value-then-truncated",
                    mutate::truncated(rng, once.as_bytes()),
                )
            }
        };
        out.push((format!("{kind}-{i}"), bytes));
    }
    out
}

/// Parsers that take outside text or bytes and need no store.
pub async fn parsers(tally: &mut Tally, dir: &Path) {
    let mut rng = Rng::new(0x00ba_d1a9);
    for (name, bytes) in bad_configs(&mut rng, 400) {
        tally
            .case(&format!("config {name}"), async {
                both(
                    verdict(ImageConfig::from_json(&bytes), |_| true),
                    verdict(Image::from_bytes(Bytes::from(bytes.clone())), |_| true),
                )
            })
            .await;
    }
    for s in bad_digests(&mut rng, 160) {
        tally
            .case(&format!("digest {s:.80?}"), async {
                let d = verdict(Digest::parse(&s), |_| true);
                let i = verdict(ImageId::parse(&s), |_| true);
                let f = verdict(DiffId::parse(&s), |_| true);
                let c = verdict(ChainId::parse(&s), |_| true);
                both(both(d, i), both(f, c))
            })
            .await;
    }
    for s in bad_references(&mut rng, 160) {
        tally
            .case(&format!("reference {s:.80?}"), async {
                verdict(Reference::parse(&s), |e| {
                    matches!(e, CoreError::InvalidReference { .. })
                })
            })
            .await;
    }
    for s in bad_timestamps(&mut rng, 60) {
        tally
            .case(&format!("timestamp {s:?}"), async {
                verdict(Timestamp::parse_rfc3339(&s), |_| true)
            })
            .await;
    }
    for s in bad_keys(&mut rng, 60) {
        tally
            .case(&format!("key {s:.80?}"), async {
                let invalid = |e: &CoreError| matches!(e, CoreError::InvalidKey { .. });
                both(
                    verdict(LeaseId::new(s.clone()), invalid),
                    verdict(MetadataKey::new(s.clone()), invalid),
                )
            })
            .await;
    }
    lease_parts(tally, &mut rng).await;
    filters(tally, &mut rng).await;
    urls(tally, dir).await;
}

async fn lease_parts(tally: &mut Tally, rng: &mut Rng) {
    let digests = bad_digests(rng, 30);
    let mut resources: Vec<String> = digests
        .iter()
        .flat_map(|d| ["image", "layer", "blob"].map(|k| format!("{k}:{d}")))
        .collect();
    resources.extend(
        [
            "",
            "image",
            "volume:x",
            "image:",
            ":sha256:00",
            "IMAGE:sha256:00",
            "blob sha256:00",
        ]
        .map(str::to_owned),
    );
    for s in resources {
        tally
            .case(&format!("lease resource {s:.80?}"), async {
                verdict(LeaseResource::parse(&s), |e| {
                    matches!(
                        e,
                        CoreError::InvalidKey { .. } | CoreError::InvalidDigest(_)
                    )
                })
            })
            .await;
    }
    let valid = format!(
        r#"{{"id":"build-7","created":"2024-01-01T00:00:00Z","expires":"2024-01-02T00:00:00Z","labels":{{"a":"b"}},"resources":["image:sha256:{}"]}}"#,
        "a".repeat(64)
    );
    assert!(Lease::decode("seed", valid.as_bytes()).is_ok());
    let mut records: Vec<Vec<u8>> = [
        valid.replace("build-7", "../x"),
        valid.replace("image:", "volume:"),
        valid.replace("2024-01-02T00:00:00Z", "tomorrow"),
        valid.replace(r#""labels":{"a":"b"}"#, r#""labels":{"a":1}"#),
        valid.replace(r#""labels""#, r#""unknown":1,"labels""#),
        valid.replace(r#""id":"build-7","#, ""),
        format!(r#"{{"id":"x","created":"2024-01-01T00:00:00Z","expires":"2024-01-01T00:00:00Z","labels":{{"a":"{}"}}}}"#, "b".repeat(17 << 20)),
        mutate::deep_json(10_000, true),
    ]
    .map(String::into_bytes)
    .to_vec();
    for _ in 0..40 {
        let bytes = match rng.below(3) {
            0 => mutate::truncated(rng, valid.as_bytes()),
            1 => mutate::with_raw_control(rng, valid.as_bytes()),
            _ => mutate::with_broken_structure(rng, valid.as_bytes()),
        };
        records.push(bytes);
    }
    for (i, bytes) in records.into_iter().enumerate() {
        tally
            .case(&format!("lease record {i}"), async {
                verdict(Lease::decode("record", &bytes), |e| {
                    matches!(e, CoreError::Corrupt { .. })
                })
            })
            .await;
    }
}

async fn filters(tally: &mut Tally, rng: &mut Rng) {
    let mut texts: Vec<String> = [
        "",
        "label=",
        "label!=",
        "until=",
        "until=soon",
        "until=5y",
        "until=-1s",
        "until=1.5h",
        "until=99999999999999999999",
        "until=18446744073709551615w",
        "until=1h30m",
        "dangling=true",
        "LABEL=a",
        "label",
        "until",
        "=",
        "reference=x",
        "before=y",
    ]
    .map(str::to_owned)
    .to_vec();
    while texts.len() < 80 {
        let base = *rng.pick(&["until=24h", "until=90s", "label=team=web", "label!=a"]);
        let bad = match rng.below(3) {
            0 => {
                let sep = rng.pick(&[":", " ", "==", "~"]);
                base.replacen('=', sep, 1)
            }
            1 => base
                .replacen("until=", "until=x", 1)
                .replacen("label", "labels", 1),
            _ => format!(
                "{}{}",
                base.split('=').next().unwrap_or(""),
                mutate::nasty_fragment(rng)
            ),
        };
        texts.push(bad);
    }
    for s in texts {
        tally
            .case(&format!("gc filter {s:.80?}"), async {
                verdict(Filter::parse(&s), |e| {
                    matches!(e, lifecycle::Error::InvalidFilter { .. })
                })
            })
            .await;
    }
    for s in [
        "",
        "s",
        "h1",
        "1y",
        "-1s",
        "1.5h",
        "1h30m",
        "99999999999999999999",
        "18446744073709551615w",
        "1 h",
        "0x10",
        "٣s",
    ] {
        tally
            .case(&format!("duration {s:?}"), async {
                match lifecycle::parse_duration(s) {
                    None => Verdict::Typed(String::new()),
                    Some(d) => Verdict::Untyped(format!("{s:?} read as {d:?}")),
                }
            })
            .await;
    }
    for s in [
        "",
        "brotli",
        "GZIP",
        "gzip ",
        "zstd\u{0}",
        "tar+gzip",
        "\u{1b}[31m",
    ] {
        tally
            .case(&format!("compression {s:?}"), async {
                verdict(s.parse::<Compression>(), |_| true)
            })
            .await;
    }
}

/// Store URLs that must be refused; the files they point at stay as they
/// were.
async fn urls(tally: &mut Tally, dir: &Path) {
    let file = dir.join("not-a-store");
    std::fs::write(&file, b"this is not a redb file, nor a directory\n").unwrap();
    let garbage = dir.join("garbage.redb");
    std::fs::write(&garbage, vec![0xa5; 8192]).unwrap();
    let empty_dir = dir.join("a-dir");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let f = file.display();
    let g = garbage.display();
    let d = empty_dir.display();
    let urls = [
        String::new(),
        "redb".into(),
        "fs:/x".into(),
        "fs://".into(),
        "redb://".into(),
        "ftp://host/x".into(),
        "FS://x".into(),
        "\u{1b}[31m://x".into(),
        "file:///tmp/x".into(),
        "memory:/".into(),
        format!("fs://{f}"),
        format!("fs://{f}/below"),
        format!("redb://{f}"),
        format!("redb://{g}"),
        format!("redb://{d}"),
        format!("redb://{f}/x.redb"),
        "s3://".into(),
        "s3:///prefix".into(),
        "s3://bucket/prefix?unknown=1".into(),
        "s3://bucket/prefix?allow_http=maybe".into(),
        "s3://bucket/prefix?timeout=abc".into(),
        "s3://bucket/prefix?timeout=-1".into(),
        "s3://bucket/prefix?timeout=1e400".into(),
        "s3://bucket/prefix?retries=99999999999999999999".into(),
        "s3://bucket/prefix?part_size=-5".into(),
        "s3://bucket/prefix?endpoint=".into(),
        "s3://bucket/prefix?endpoint=not a url".into(),
        "s3://bucket/prefix?region".into(),
        "s3://bucket/../x".into(),
        "s3://bucket//x".into(),
        "s3://bu\u{0}cket/x".into(),
        "s3://bucket/x?%zz=1".into(),
        "s3://bucket/x?timeout=1&timeout=2&&=".into(),
    ];
    let before = std::fs::read(&file).unwrap();
    let before_garbage = std::fs::read(&garbage).unwrap();
    for url in urls {
        tally
            .case(&format!("store url {url:?}"), async {
                let opened = imagecache_backends::open(&url).await;
                verdict(opened.map(|b| b.images().to_string()), |e| {
                    matches!(
                        e,
                        CoreError::Config { .. }
                            | CoreError::Corrupt { .. }
                            | CoreError::NotFound { .. }
                    )
                })
            })
            .await;
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "a refused URL changed the file"
    );
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        before_garbage,
        "a refused URL changed the file"
    );
    assert_eq!(
        std::fs::read_dir(&empty_dir).unwrap().count(),
        0,
        "a refused URL wrote into the directory"
    );
}

/// The image store: bad configs, unknown and cyclic parents, unknown IDs
/// and names, bad search terms and listing filters.
pub async fn store(tally: &mut Tally, fx: &Fixture) {
    let mut rng = Rng::new(0x5707e);
    let invalid_config = |e: &StoreError| matches!(e, StoreError::InvalidConfig(_));
    for (name, bytes) in bad_configs(&mut rng, 120) {
        let b = Bytes::from(bytes);
        tally
            .store_case(fx, &format!("create {name}"), async {
                let plain = verdict(fx.store.create(b.clone()).await, invalid_config);
                let opts = CreateOptions::new()
                    .with_parent(fx.ids[0])
                    .with_built_locally(true);
                both(
                    plain,
                    verdict(fx.store.create_with(b.clone(), opts).await, invalid_config),
                )
            })
            .await;
        let good = Bytes::from(fx.fresh_config.clone());
        tally
            .store_case(fx, &format!("batch with {name}"), async {
                let batch = vec![(good, CreateOptions::new()), (b, CreateOptions::new())];
                verdict(fx.store.create_batch(batch).await, invalid_config)
            })
            .await;
    }
    let big = {
        let mut c = CONFIG
            .replacen("someone", &"x".repeat(9 << 20), 1)
            .into_bytes();
        c.shrink_to_fit();
        Bytes::from(c)
    };
    tally
        .store_case(fx, "create over the size limit", async {
            verdict(fx.store.create(big).await, invalid_config)
        })
        .await;
    let unknown: Vec<ImageId> = (0..20)
        .map(|i| ImageId::of_config(format!("unknown {i}").as_bytes()))
        .collect();
    let fresh = Bytes::from(fx.fresh_config.clone());
    for u in &unknown {
        let u = *u;
        tally
            .store_case(fx, &format!("create with unknown parent {u}"), async {
                let opts = CreateOptions::new().with_parent(u);
                verdict(fx.store.create_with(fresh.clone(), opts).await, |e| {
                    matches!(e, StoreError::UnknownParent { .. })
                })
            })
            .await;
        tally
            .store_case(fx, &format!("delete unknown {u}"), async {
                both(
                    verdict(fx.store.delete(&u).await, |e| e.is_not_found()),
                    verdict(fx.store.delete_forced(&u).await, |e| e.is_not_found()),
                )
            })
            .await;
        tally
            .store_case(fx, &format!("get unknown {u}"), async {
                both(
                    verdict(fx.store.get(&u).await, |e| e.is_not_found()),
                    verdict(fx.store.parent(&u), |e| e.is_not_found()),
                )
            })
            .await;
        tally
            .store_case(fx, &format!("set parent with unknown {u}"), async {
                let a = verdict(fx.store.set_parent(&u, &fx.ids[0]).await, |e| {
                    e.is_not_found()
                });
                let b = verdict(fx.store.set_parent(&fx.ids[1], &u).await, |e| {
                    matches!(e, StoreError::UnknownParent { .. }) || e.is_not_found()
                });
                both(a, b)
            })
            .await;
        let name = Reference::parse(&format!("example.com/unknown/x{}:1", &u.hex()[..8])).unwrap();
        tally
            .store_case(fx, &format!("tag unknown {u}"), async {
                verdict(fx.store.tag(&name, &u).await, |e| e.is_not_found())
            })
            .await;
        tally
            .store_case(fx, &format!("untag unknown name {name}"), async {
                verdict(fx.store.untag(&name).await, |e| e.is_not_found())
            })
            .await;
        tally
            .store_case(fx, &format!("set metadata of unknown {u}"), async {
                both(
                    verdict(fx.store.set_built_locally(&u).await, |e| e.is_not_found()),
                    verdict(fx.store.set_last_updated(&u).await, |e| e.is_not_found()),
                )
            })
            .await;
    }
    for (a, b) in [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)] {
        let (id, parent) = (fx.ids[a], fx.ids[b]);
        tally
            .store_case(fx, &format!("parent cycle {a}<-{b}"), async {
                verdict(fx.store.set_parent(&id, &parent).await, |e| {
                    matches!(e, StoreError::ParentCycle { .. })
                })
            })
            .await;
    }
    let (held, digest_name) = (fx.ids[4], fx.digest_name.clone());
    tally
        .store_case(fx, "delete held image", async {
            verdict(fx.store.delete(&held).await, |e| {
                matches!(e, StoreError::Held { .. })
            })
        })
        .await;
    tally
        .store_case(fx, "move a digest name", async {
            verdict(fx.store.tag(&digest_name, &held).await, |e| {
                matches!(e, StoreError::DigestInUse { .. })
            })
        })
        .await;
    search_terms(tally, fx, &mut rng).await;
}

async fn search_terms(tally: &mut Tally, fx: &Fixture, rng: &mut Rng) {
    let mut terms: Vec<String> = [
        "",
        "sha256:",
        "zz",
        "sha256:zz",
        "../",
        "\u{0}",
        "\u{1b}[2J",
    ]
    .map(str::to_owned)
    .to_vec();
    terms.extend(bad_references(rng, 30));
    terms.extend(bad_digests(rng, 30));
    for t in terms {
        let no_match = |e: &StoreError| {
            matches!(
                e,
                StoreError::EmptySearch
                    | StoreError::NoSuchImage { .. }
                    | StoreError::Ambiguous { .. }
            )
        };
        tally
            .store_case(fx, &format!("search {t:.80?}"), async {
                both(
                    verdict(fx.store.search(&t), no_match),
                    verdict(fx.store.resolve(&t), no_match),
                )
            })
            .await;
    }
    let mut filters: Vec<String> = [
        "",
        "=",
        "dangling",
        "dangling=maybe",
        "dangling=",
        "before=",
        "since=zz",
        "before=sha256:zz",
        "reference=",
        "label=",
        "unknown=1",
        "DANGLING=true",
        "since=\u{1b}[31m",
    ]
    .map(str::to_owned)
    .to_vec();
    while filters.len() < 40 {
        let kind = *rng.pick(&["before", "since", "dangling"]);
        filters.push(format!("{kind}={}", mutate::nasty_fragment(rng)));
    }
    for f in filters {
        tally
            .store_case(fx, &format!("list filter {f:.80?}"), async {
                verdict(fx.store.parse_filter(&f), |e| {
                    matches!(
                        e,
                        StoreError::InvalidFilter { .. }
                            | StoreError::EmptySearch
                            | StoreError::NoSuchImage { .. }
                            | StoreError::Ambiguous { .. }
                    )
                })
            })
            .await;
    }
}

/// Leases: taken IDs, unknown IDs, oversized records.
pub async fn leases(tally: &mut Tally, fx: &Fixture) {
    let taken = fx.lease.clone();
    tally
        .store_case(fx, "create lease with a taken id", async {
            let opts = LeaseOptions::new()
                .with_id(taken.clone())
                .with_ttl(Duration::from_secs(60));
            verdict(fx.store.create_lease(opts).await, |e| {
                matches!(e, StoreError::LeaseExists { .. })
            })
        })
        .await;
    for i in 0..20 {
        let id = LeaseId::new(format!("no-such-lease-{i}")).unwrap();
        let not_found = |e: &StoreError| matches!(e, StoreError::LeaseNotFound { .. });
        tally
            .store_case(fx, &format!("renew unknown lease {id}"), async {
                verdict(
                    fx.store.renew_lease(&id, Duration::from_secs(60)).await,
                    not_found,
                )
            })
            .await;
        tally
            .store_case(fx, &format!("add to unknown lease {id}"), async {
                let r = LeaseResource::Image(fx.ids[0]);
                both(
                    verdict(fx.store.add_lease_resources(&id, [r]).await, not_found),
                    verdict(fx.store.remove_lease_resources(&id, [r]).await, not_found),
                )
            })
            .await;
        tally
            .store_case(fx, &format!("look up unknown lease {id}"), async {
                verdict(fx.store.lease(&id).await, not_found)
            })
            .await;
    }
    // Over the largest lease record a backend stores (16 MiB).
    for size in [17 << 20] {
        tally
            .store_case(fx, &format!("lease with {size}-byte label"), async {
                let opts = LeaseOptions::new()
                    .with_id(LeaseId::new(format!("big-{size}")).unwrap())
                    .with_label("big", "v".repeat(size));
                verdict(fx.store.create_lease(opts).await, |e| {
                    matches!(e, StoreError::Backend(CoreError::TooLarge { .. }))
                })
            })
            .await;
    }
}

/// Blob puts that must be refused: wrong digests, short and long bodies,
/// failing streams, broken and bomb-sized compressed layers, manifests.
pub async fn blobs(tally: &mut Tally, fx: &Fixture) {
    let mut rng = Rng::new(0xb10b);
    let bad = |e: &blob::Error| e.is_bad_input();
    for i in 0..30 {
        let n = 1 + rng.below(4096);
        let data = rng.bytes(n);
        let wrong = Digest::sha256(&rng.bytes(8));
        tally
            .store_case(fx, &format!("blob put mismatched {i}"), async {
                both(
                    verdict(fx.blobs.put_bytes(&wrong, data.clone()).await, bad),
                    verdict(fx.blobs.put_manifest(&wrong, data.clone(), None).await, bad),
                )
            })
            .await;
        let right = Digest::sha256(&data);
        let len = data.len() as u64;
        let wrong_size = if rng.below(2) == 0 {
            len + 1 + rng.below(100) as u64
        } else {
            len - 1 - rng.below(len as usize).min(len as usize - 1) as u64
        };
        tally
            .store_case(fx, &format!("blob put wrong size {i}"), async {
                let stream = futures::stream::iter([Ok(Bytes::from(data.clone()))]).boxed();
                let opts = PutOptions::new().with_expected_size(wrong_size);
                verdict(fx.blobs.put_opts(&right, stream, opts).await, bad)
            })
            .await;
        let cut = rng.below(data.len());
        tally
            .store_case(fx, &format!("blob put failing stream {i}"), async {
                let chunks = vec![
                    Ok(Bytes::from(data[..cut].to_vec())),
                    Err(CoreError::Truncated {
                        key: imagecache_core::Key::Blob(right),
                        expected: len,
                        actual: cut as u64,
                    }),
                ];
                let stream = futures::stream::iter(chunks).boxed();
                verdict(fx.blobs.put(&right, stream).await, |e| {
                    e.is_bad_input() || matches!(e, blob::Error::Backend { .. })
                })
            })
            .await;
    }
    tally
        .store_case(fx, "empty manifest", async {
            verdict(
                fx.blobs
                    .put_manifest(&Digest::sha256(b""), Bytes::new(), None)
                    .await,
                bad,
            )
        })
        .await;
    compressed_layers(tally, fx, &mut rng).await;
}

/// Layers whose compressed bytes are broken or decompress to something
/// else than their diff ID says, and bombs.
async fn compressed_layers(tally: &mut Tally, fx: &Fixture, rng: &mut Rng) {
    let bad = |e: &blob::Error| e.is_bad_input();
    let layer = fx.layer.clone();
    let gz = crate::common::gzip(&layer);
    let zst = crate::archives::zstd(&layer);
    let mut bodies: Vec<(String, Vec<u8>, Compression)> = Vec::new();
    for i in 0..25 {
        bodies.push((
            format!("gzip truncated {i}"),
            mutate::truncated(rng, &gz[..gz.len() - 8]),
            Compression::Gzip,
        ));
        // Deflate has redundant codes: some flips decode to the same layer,
        // which is then a valid body. Only flips flate2 itself refuses or
        // decodes to other bytes are bad.
        let flipped = loop {
            let mut flipped = gz.clone();
            let at = 10 + rng.below(gz.len() - 10);
            flipped[at] ^= 1 << rng.below(8);
            let mut out = Vec::new();
            let decoded = std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&flipped[..]),
                &mut out,
            );
            if decoded.is_err() || out != layer {
                break flipped;
            }
        };
        bodies.push((format!("gzip flipped {i}"), flipped, Compression::Gzip));
        bodies.push((
            format!("zstd truncated {i}"),
            mutate::truncated(rng, &zst),
            Compression::Zstd,
        ));
        let mut garbage = b"\x28\xb5\x2f\xfd".to_vec();
        let n = 64 + rng.below(512);
        garbage.extend(rng.bytes(n));
        bodies.push((format!("zstd garbage {i}"), garbage, Compression::Zstd));
        let mut garbage = b"\x1f\x8b\x08\x00".to_vec();
        let n = 64 + rng.below(512);
        garbage.extend(rng.bytes(n));
        bodies.push((format!("gzip garbage {i}"), garbage, Compression::Gzip));
    }
    let diff = DiffId::try_from(Digest::sha256(&layer)).unwrap();
    for (name, body, compression) in bodies {
        let digest = Digest::sha256(&body);
        tally
            .store_case(fx, &format!("layer {name}"), async {
                let stream = futures::stream::iter([Ok(Bytes::from(body))]).boxed();
                let opts = LayerOptions::new()
                    .with_compression(compression)
                    .with_diff_id(*diff.digest());
                verdict(fx.blobs.put_layer_opts(&digest, stream, opts).await, bad)
            })
            .await;
    }
    // Bombs: far more out than in, past the ratio limit once past its
    // floor (lowered to 1 MiB here, so the bombs stay small), and past a
    // decompressed-size limit.
    let zeros = vec![0u8; 8 << 20];
    let bombs = [
        ("gzip", crate::common::gzip(&zeros), Compression::Gzip),
        ("zstd", crate::archives::zstd(&zeros), Compression::Zstd),
    ];
    let limits = [
        blob::BlobCacheOptions::new().with_decompression_ratio_floor(1 << 20),
        blob::BlobCacheOptions::new().with_max_decompressed_size(4 << 20),
    ];
    for (kind, body, compression) in bombs {
        for (i, options) in limits.iter().enumerate() {
            let cache = blob::BlobCache::with_options(fx.backend.blobs(), options.clone()).unwrap();
            let digest = Digest::sha256(&body);
            let body = Bytes::from(body.clone());
            tally
                .store_case(fx, &format!("{kind} bomb {i}"), async {
                    let stream = futures::stream::iter([Ok(body)]).boxed();
                    let opts = LayerOptions::new().with_compression(compression);
                    verdict(cache.put_layer_opts(&digest, stream, opts).await, |e| {
                        matches!(e, blob::Error::DecompressionBomb { .. })
                    })
                })
                .await;
        }
    }
}
