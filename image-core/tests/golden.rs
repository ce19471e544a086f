//! Byte-for-byte comparison with Go's `encoding/json`, against the golden
//! files that `tests/golden/gen` (a Go program using Docker's JSON names and
//! options) wrote. See `tests/golden/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use imagecache_core::{
    ChainId, ContainerConfig, Digest, HealthConfig, History, ImageConfig, RootFs, Timestamp, v1,
};

fn golden_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{what} differs from Go\n  ours: {}\n    go: {}",
        text(got),
        text(want)
    );
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap_or_else(|e| panic!("{e}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The configs of `encodeCases` in gen/main.go, built field by field.
fn encode_cases() -> Vec<(&'static str, ImageConfig)> {
    let full = ImageConfig {
        v1_id: "6a5f1d8a6f2e0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c".into(),
        comment: "a <b> & c".into(),
        created: Some(ts("2024-02-29T23:59:59.123456789+05:30")),
        container: "3c0f2bd3f6a1".into(),
        container_config: ContainerConfig {
            hostname: "3c0f2bd3f6a1".into(),
            domainname: "example.org".into(),
            user: "app:app".into(),
            attach_stdin: true,
            attach_stdout: true,
            attach_stderr: true,
            exposed_ports: set(&["80/tcp", "443/tcp", "53/udp"]),
            tty: true,
            open_stdin: true,
            stdin_once: true,
            env: Some(strings(&[
                "PATH=/usr/local/bin:/usr/bin",
                "CTRL=\u{1}\u{1f}\u{7f}",
                "QUOTE=\"q\" \\ back",
                "WS=\t\n\r",
                "LS=\u{2028} PS=\u{2029}",
                "HTML=<script>&amp;</script>",
            ])),
            cmd: Some(strings(&[
                "/bin/sh",
                "-c",
                "#(nop) ",
                "RUN make && make install > /dev/null",
            ])),
            healthcheck: Some(HealthConfig {
                test: Some(strings(&[
                    "CMD-SHELL",
                    "curl -f http://localhost/ || exit 1",
                ])),
                interval: 30_000_000_000,
                timeout: 5_000_000_000,
                start_period: 2_000_000_000,
                start_interval: 1_000_000_000,
                retries: 3,
            }),
            args_escaped: true,
            image: "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            volumes: Some(set(&["/data", "/var/lib/app"])),
            working_dir: "/srv".into(),
            entrypoint: Some(strings(&["/entrypoint.sh"])),
            network_disabled: true,
            mac_address: "02:42:ac:11:00:02".into(),
            on_build: Some(strings(&["RUN echo onbuild"])),
            labels: Some(map(&[
                ("a.b", "v"),
                ("z", ""),
                ("\u{e9}", "accent \u{e9}"),
                ("<k>", "&"),
                ("\u{2028}", "line separator"),
                ("emoji", "\u{1F600}"),
            ])),
            stop_signal: "SIGTERM".into(),
            stop_timeout: Some(10),
            shell: Some(strings(&["/bin/bash", "-o", "pipefail", "-c"])),
        },
        docker_version: "24.0.7".into(),
        author: "Zo\u{eb} \u{65e5}\u{672c} <zoe@example.org>".into(),
        config: Some(ContainerConfig {
            env: Some(strings(&["PATH=/usr/bin"])),
            cmd: Some(strings(&["nginx", "-g", "daemon off;"])),
            volumes: Some(BTreeSet::new()),
            labels: Some(BTreeMap::new()),
            ..Default::default()
        }),
        architecture: "arm64".into(),
        variant: "v8".into(),
        os: "linux".into(),
        size: 1_234_567,
        parent: "sha256:1111111111111111111111111111111111111111111111111111111111111111".into(),
        rootfs: RootFs {
            fs_type: "layers".into(),
            raw_diff_ids: strings(&[
                "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
                "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d",
            ]),
        },
        history: vec![
            History {
                created: Some(ts("2024-01-01T00:00:00.100Z")),
                created_by: "/bin/sh -c #(nop) ADD file:abc in / ".into(),
                comment: "base".into(),
                ..Default::default()
            },
            History {
                created_by: "/bin/sh -c #(nop)  CMD [\"sh\"]".into(),
                empty_layer: true,
                ..Default::default()
            },
            History {
                created: Some(ts("2024-01-02T03:04:05-08:00")),
                created_by: "RUN make && make install".into(),
                author: "Zo\u{eb}".into(),
                ..Default::default()
            },
        ],
        os_version: "10.0.17763.5329".into(),
        os_features: strings(&["win32k", "<feature>"]),
    };

    let empty = ImageConfig::default();

    let collections = ImageConfig {
        container_config: ContainerConfig {
            exposed_ports: BTreeSet::new(),
            env: Some(vec![]),
            cmd: Some(vec![]),
            healthcheck: Some(HealthConfig {
                test: Some(vec![]),
                ..Default::default()
            }),
            volumes: Some(BTreeSet::new()),
            entrypoint: Some(vec![]),
            on_build: Some(vec![]),
            labels: Some(BTreeMap::new()),
            stop_timeout: Some(0),
            shell: Some(vec![]),
            ..Default::default()
        },
        config: Some(ContainerConfig::default()),
        rootfs: RootFs::new(),
        ..Default::default()
    };

    let base = "sha256:9e301a362a270bcb6900ebd1aad1b3a9553a9d055830bdf4cab5c2184187a2d1";
    let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let build = ImageConfig {
        created: Some(ts("2016-08-18T06:13:28.269459769Z")),
        container: "7dfa08cb9cbf2962b2362b1845b6657895685576015a8121652872fea56a7509".into(),
        container_config: ContainerConfig {
            hostname: "7dfa08cb9cbf".into(),
            env: Some(strings(&[path])),
            cmd: Some(strings(&[
                "/bin/sh",
                "-c",
                "dd if=/dev/zero of=file bs=10M count=1",
            ])),
            args_escaped: true,
            image: base.into(),
            on_build: Some(vec![]),
            labels: Some(BTreeMap::new()),
            ..Default::default()
        },
        docker_version: "1.11.0-dev".into(),
        config: Some(ContainerConfig {
            hostname: "xxxx".into(),
            env: Some(strings(&[path])),
            cmd: Some(strings(&["sh"])),
            args_escaped: true,
            image: base.into(),
            on_build: Some(vec![]),
            labels: Some(BTreeMap::new()),
            ..Default::default()
        }),
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            fs_type: "layers".into(),
            raw_diff_ids: strings(&[
                "sha256:ae2b342b32f9ee27f0196ba59e9952c00e016836a11921ebc8baaf783847686a",
            ]),
        },
        history: vec![History {
            created: Some(ts("2016-08-18T06:13:28.269459769Z")),
            created_by: "/bin/sh -c dd if=/dev/zero of=file bs=10M count=1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };

    let restored = ImageConfig {
        created: Some(ts("2023-11-05T10:20:30.5Z")),
        author: "ci".into(),
        config: Some(ContainerConfig {
            env: Some(strings(&["A=1"])),
            cmd: Some(strings(&["/bin/sh", "-c", "#(nop) ", "LABEL a=b"])),
            labels: Some(map(&[("a", "b")])),
            ..Default::default()
        }),
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs::new(),
        history: vec![History {
            created: Some(ts("2023-11-05T10:20:30.5Z")),
            created_by: "/bin/sh -c #(nop)  LABEL a=b".into(),
            empty_layer: true,
            ..Default::default()
        }],
        ..Default::default()
    };

    vec![
        ("full", full),
        ("empty", empty),
        ("collections", collections),
        ("build", build),
        ("restored", restored),
    ]
}

/// The chain ID and parent every v1 ID golden was computed with.
fn v1_layer_and_parent() -> (ChainId, Digest) {
    (
        ChainId::parse("sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676")
            .unwrap_or_else(|e| panic!("{e}")),
        Digest::parse("sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2")
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Normalises what Go cannot represent: an empty list and a missing one
/// are the same after `omitempty`, for the fields the model keeps as plain
/// `Vec`s or sets.
fn after_roundtrip(mut c: ImageConfig) -> ImageConfig {
    for cc in std::iter::once(&mut c.container_config).chain(c.config.as_mut()) {
        // OnBuild and Shell are omitempty: an empty list is written as
        // nothing and read back as absent.
        if cc.on_build.as_ref().is_some_and(Vec::is_empty) {
            cc.on_build = None;
        }
        if cc.shell.as_ref().is_some_and(Vec::is_empty) {
            cc.shell = None;
        }
        if let Some(hc) = cc.healthcheck.as_mut()
            && hc.test.as_ref().is_some_and(Vec::is_empty)
        {
            hc.test = None;
        }
    }
    c
}

#[test]
fn encoding_matches_go() {
    let dir = golden_dir("encode");
    let (layer, parent) = v1_layer_and_parent();
    for (name, config) in encode_cases() {
        let sorted = config.to_json_sorted();
        assert_bytes(
            &format!("{name}.sorted"),
            &sorted,
            &read(&dir.join(format!("{name}.sorted.json"))),
        );
        assert_bytes(
            &format!("{name}.value"),
            &config.to_json_struct_order(),
            &read(&dir.join(format!("{name}.value.json"))),
        );
        assert_bytes(
            &format!("{name}.container_config"),
            &config.container_config.to_json(),
            &read(&dir.join(format!("{name}.container_config.json"))),
        );
        let id = v1::create_id(&config, &layer, Some(&parent));
        assert_eq!(
            format!("{id}\n"),
            text(&read(&dir.join(format!("{name}.v1id.txt")))),
            "{name}: v1 ID"
        );
        // Parsing our own output gives the config back.
        let back = ImageConfig::from_json(&sorted).unwrap();
        assert_eq!(
            back,
            after_roundtrip(config.clone()),
            "{name}: parse(encode(x))"
        );
        let back = ImageConfig::from_json(&config.to_json_struct_order()).unwrap();
        assert_eq!(
            back,
            after_roundtrip(config),
            "{name}: parse(encode_value(x))"
        );
    }
}

#[test]
fn every_encode_golden_is_checked() {
    let names: BTreeSet<String> = encode_cases()
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .collect();
    for entry in std::fs::read_dir(golden_dir("encode")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let case = file.split('.').next().unwrap().to_owned();
        assert!(names.contains(&case), "golden {file} has no Rust case");
    }
}

/// Every document Go's decoder read (or refused) reads the same here: the
/// same error/success, and the same bytes when written back.
#[test]
fn parsing_matches_go() {
    let dir = golden_dir("parse");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.json"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 30, "golden parse cases missing");
    for input in inputs {
        let name = input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".in.json", "");
        let doc = read(&input);
        let result = ImageConfig::from_json(&doc);
        let err_file = dir.join(format!("{name}.err.txt"));
        if err_file.exists() {
            assert!(
                result.is_err(),
                "{name}: Go refused it ({}), we accepted {:?}",
                text(&read(&err_file)).trim(),
                result
            );
            continue;
        }
        let config = result.unwrap_or_else(|e| panic!("{name}: Go accepted it, we refused: {e}"));
        assert_bytes(
            &format!("parse/{name}"),
            &config.to_json_sorted(),
            &read(&dir.join(format!("{name}.out.json"))),
        );
    }
}

#[test]
fn v1_functions_match_go() {
    let dir = golden_dir("v1");
    let (layer, parent) = v1_layer_and_parent();
    let rootfs = RootFs {
        fs_type: "layers".into(),
        raw_diff_ids: strings(&[
            "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
            "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d",
        ]),
    };
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.json"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6, "golden v1 cases missing");
    for input in inputs {
        let name = input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".in.json", "");
        let doc = read(&input);
        let history = v1::history_from_config(&doc, name == "old");
        if dir.join(format!("{name}.err.txt")).exists() {
            assert!(history.is_err(), "{name}: history accepted");
            assert!(
                v1::make_config_from_v1_config(&doc, &rootfs, &[]).is_err(),
                "{name}: make_config accepted"
            );
            continue;
        }
        let history = history.unwrap_or_else(|e| panic!("{name}: {e}"));
        let made = v1::make_config_from_v1_config(&doc, &rootfs, &[history]).unwrap();
        assert_bytes(
            &format!("v1/{name}.make"),
            &made,
            &read(&dir.join(format!("{name}.make.json"))),
        );
        let made = v1::make_config_from_v1_config(&doc, &rootfs, &[]).unwrap();
        assert_bytes(
            &format!("v1/{name}.make_nil_history"),
            &made,
            &read(&dir.join(format!("{name}.make_nil_history.json"))),
        );
        // The documents also carry "rootfs": {} so they read as image
        // configs; V1Image ignores that key.
        let config = ImageConfig::from_json(&doc).unwrap();
        let ids = format!(
            "{}\n{}\n",
            v1::create_id(&config, &layer, None),
            v1::create_id(&config, &layer, Some(&parent))
        );
        assert_eq!(
            ids,
            text(&read(&dir.join(format!("{name}.id.txt")))),
            "{name}: ids"
        );
    }
}
