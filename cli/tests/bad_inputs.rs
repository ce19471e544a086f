//! The bad-input corpus, command-line part: a few hundred bad command
//! lines, made deterministically from valid ones, run as real processes
//! against a redb store and an fs store holding images, names, a lease and
//! blobs.
//!
//! Every case must exit with the documented code (2 usage, 1 not found, 3
//! other errors; 0 for a few pathological but valid listing patterns),
//! say on stderr what was wrong, print nothing on either
//! stream outside printable text (no raw control characters, valid UTF-8),
//! never panic (exit 101 or "panicked"), and leave the store exactly as it
//! was (images and metadata, names, leases, blobs and notes, read back with
//! the library between runs). The tally is printed as an `evidence:` line.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::path::Path;

use common::{ArchiveOptions, Env, chain, docker_archive, gzip, write};

const USAGE: &[u8] = &[2];
const NOT_FOUND: &[u8] = &[1];
const ERROR: &[u8] = &[3];

/// One bad command line and what it must end in.
struct Case {
    args: Vec<OsString>,
    /// Allowed exit codes.
    codes: &'static [u8],
    /// Text stderr must contain: what was wrong.
    names: String,
}

/// A case; a NUL, which no argument can carry, becomes U+0001.
fn case(args: &[&str], codes: &'static [u8], names: &str) -> Case {
    Case {
        args: args
            .iter()
            .map(|a| OsString::from(a.replace('\0', "\u{1}")))
            .collect(),
        codes,
        names: names.to_owned(),
    }
}

/// What an error about `value` given to `flag` names: the flag, or the
/// value itself when it looks like a flag (clap then reports it as an
/// unexpected argument).
fn named<'a>(value: &'a str, flag: &'a str) -> &'a str {
    // clap reads `-1h` as the short flag `-1` and names only that.
    if value.starts_with('-') {
        value.get(..2).unwrap_or(value)
    } else {
        flag
    }
}

/// SplitMix64, for deterministic choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(256) as u8).collect()
    }
}

/// Values no argument takes: control characters, escapes, separators,
/// very long runs, and what looks like a flag.
const NASTY: &[&str] = &[
    "\u{1b}[31mred\u{1b}[0m",
    "a\u{0}b",
    "bell\u{7}",
    "cr\rlf",
    "\u{202e}txt.exe",
    "../../../etc/passwd",
    "sha256:",
    "sha256:zz",
    "@",
    ":",
    "",
    " ",
    "é",
    "-1",
    "99999999999999999999999",
];

/// Sizes `--keep-storage` and friends refuse.
const BAD_SIZES: &[&str] = &[
    "",
    "x",
    "10XB",
    "-1",
    "1e999",
    "NaN",
    "inf",
    "1.2.3",
    "10 GiB B",
    "18446744073709551616",
    "99999999999T",
    "0x10",
    "\u{1b}[31m1G",
];

/// Durations `--ttl` refuses.
const BAD_DURATIONS: &[&str] = &[
    "",
    "0",
    "0s",
    "soon",
    "-1h",
    "1y",
    "h",
    "1.2.3s",
    "1e999s",
    "NaNs",
    "99999999999999999999999w",
    "\u{0}1h",
    "1h\u{7}",
];

fn usage_cases(rng: &mut Rng, out: &mut Vec<Case>) {
    for sub in [
        "frobnicate",
        "LS",
        "imgs",
        "\u{1b}[2J",
        "lease frob",
        "blob frob",
        "cache frob",
    ] {
        let args: Vec<&str> = sub.split(' ').collect();
        out.push(case(&args, USAGE, "unrecognized subcommand"));
    }
    for flag in ["--bogus", "-Z", "--store-url", "--formt"] {
        out.push(case(&["ls", flag], USAGE, "unexpected argument"));
    }
    for value in NASTY.iter().chain(&["yaml", "JSON", "human "]) {
        out.push(case(
            &["ls", "--format", value],
            USAGE,
            named(value, "--format"),
        ));
        let log_format = named(value, "--log-format");
        out.push(case(&["info", "--log-format", value], USAGE, log_format));
    }
    for size in BAD_SIZES {
        for flag in ["--keep-storage", "--min-free-space", "--reserved-space"] {
            out.push(case(&["prune", "-f", flag, size], USAGE, named(size, flag)));
        }
    }
    for d in BAD_DURATIONS {
        out.push(case(
            &["lease", "create", "--ttl", d],
            USAGE,
            named(d, "--ttl"),
        ));
    }
    for until in [
        "soon",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "1y",
        "\u{1b}[31m",
        "99999999999999999999",
    ] {
        out.push(case(&["prune", "-f", "--until", until], USAGE, "--until"));
    }
    for filter in [
        "until=soon",
        "label=",
        "label!=",
        "dangling=true",
        "x",
        "until=5y",
        "\u{1b}[31m=1",
        "until=99999999999999999999w",
    ] {
        out.push(case(&["prune", "-f", "--filter", filter], USAGE, "filter"));
    }
    for filter in [
        "dangling=maybe",
        "x",
        "unknown=1",
        "label=",
        "reference=",
        "\u{7}=\u{7}",
    ] {
        out.push(case(&["ls", "-f", filter], USAGE, "filter"));
    }
    // Patterns that are valid but pathological: they list nothing, and
    // must neither exhaust the stack nor take exponential time.
    let stars = "*".repeat(100_000);
    let alternating = format!("example/{}b", "*a".repeat(40));
    for pattern in [stars.as_str(), &alternating, "[[[[[[[[", "\\"] {
        let filter = format!("reference={pattern}");
        out.push(case(&["ls", "-q", "-f", &filter], &[0], ""));
    }
    for platform in [
        "linux",
        "linux/",
        "/amd64",
        "a/b/c/d",
        "//",
        "",
        "linux//v7",
    ] {
        out.push(case(
            &["load", "--platform", platform, "-i", "/nonexistent"],
            USAGE,
            "platform",
        ));
        out.push(case(
            &["cache", "lookup", "--platform", platform, "--cmd", "x"],
            USAGE,
            "platform",
        ));
    }
    for layout in ["tar", "OCI", "docker-image", "\u{1b}"] {
        out.push(case(
            &["save", "--layout", layout, "-o", "/dev/null", "x"],
            USAGE,
            "--layout",
        ));
    }
    for shell in ["cmd", "ksh", ""] {
        out.push(case(&["completions", shell], USAGE, "SHELL"));
    }
    for t in ["abc", "-1", "1.5", "99999999999999999999999"] {
        out.push(case(
            &["conformance", "--timeout", t],
            USAGE,
            named(t, "--timeout"),
        ));
    }
    for args in [
        &["tag"][..],
        &["tag", "only-one"],
        &["rm"],
        &["inspect"],
        &["save", "-o", "/dev/null"],
        &["untag"],
        &["lease", "rm"],
        &["blob", "put"],
    ] {
        out.push(case(args, USAGE, "required"));
    }
    for kv in ["novalue", "=v", ""] {
        let args = ["cache", "lookup", "--env", kv, "--cmd", "x"];
        out.push(case(&args, USAGE, "--env"));
    }
    for kv in ["=v", "", "=", "\u{1b}=x", "k=\u{1b}[2J"] {
        out.push(case(&["lease", "create", "--label", kv], USAGE, "--label"));
    }
    // Arguments that are not UTF-8.
    for _ in 0..12 {
        let mut bad = b"name".to_vec();
        bad.extend(rng.bytes(4).iter().map(|b| b | 0x80));
        let sub = *rng.pick(&["rm", "inspect", "search", "tag", "history"]);
        let mut args = vec![OsString::from(sub), OsString::from_vec(bad)];
        if sub == "tag" {
            args.push(OsString::from("x:1"));
        }
        out.push(Case {
            args,
            codes: USAGE,
            names: "UTF-8".into(),
        });
    }
}

fn lookup_cases(rng: &mut Rng, out: &mut Vec<Case>) {
    let hex: String = (0..64)
        .map(|i| char::from(b"0123456789abcdef"[(i * 7 + 3) % 16]))
        .collect();
    let unknown_id = format!("sha256:{hex}");
    let mut unknown: Vec<String> = vec![
        unknown_id.clone(),
        hex.clone(),
        "sha256:zz".into(),
        "zz".into(),
        "nosuch/image:1".into(),
        "example/app:2".into(),
        "example/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .into(),
    ];
    for _ in 0..25 {
        let base = *rng.pick(&["example/app:1", "example/base:1", "busybox"]);
        let fragment = *rng.pick(NASTY);
        let at = rng.below(base.len() + 1);
        unknown.push(format!("{}{fragment}{}", &base[..at], &base[at..]));
    }
    for name in &unknown {
        if name.is_empty() || name == "example/app:1" || name == "example/base:1" {
            continue;
        }
        let shown = printable_part(name);
        out.push(case(&["inspect", name], NOT_FOUND, &shown));
        out.push(case(&["history", name], NOT_FOUND, &shown));
        out.push(case(&["rm", name], NOT_FOUND, &shown));
        out.push(case(&["parent", name], NOT_FOUND, &shown));
        out.push(case(&["search", name], &[1, 2], &shown));
        out.push(case(&["tag", name, "example/new:1"], NOT_FOUND, &shown));
        out.push(case(
            &["parent", "example/app:1", "--set", name],
            NOT_FOUND,
            &shown,
        ));
        out.push(case(&["save", "-o", "/dev/null", name], NOT_FOUND, &shown));
        out.push(case(
            &["lease", "create", "--ttl", "1h", name],
            &[1, 2],
            &shown,
        ));
    }
    for name in ["nosuch:1", "example/app:none", "example/other"] {
        out.push(case(&["untag", name], NOT_FOUND, name));
    }
    for bad in [
        "UPPER/Case:1",
        "a//b",
        "x:",
        ":tag",
        "app@sha256:zz",
        "\u{1b}[31m:1",
    ] {
        out.push(case(
            &["tag", "example/app:1", bad],
            &[2, 3],
            &printable_part(bad),
        ));
    }
    for digest in [
        unknown_id.as_str(),
        "sha256:zz",
        "md5:00",
        "",
        "sha256",
        "\u{1b}[31m",
    ] {
        let codes: &'static [u8] = if digest == unknown_id {
            NOT_FOUND
        } else {
            &[2, 3]
        };
        out.push(case(
            &["blob", "has", digest],
            codes,
            &printable_part(digest),
        ));
        out.push(case(
            &["blob", "get", digest, "-o", "/dev/null"],
            codes,
            &printable_part(digest),
        ));
    }
    out.push(case(
        &["lease", "rm", "no-such-lease"],
        NOT_FOUND,
        "no-such-lease",
    ));
    for id in ["../x", ".hidden", "a b", "\u{1b}[31m", &"k".repeat(129)] {
        out.push(case(
            &["lease", "create", "--id", id, "--ttl", "1h"],
            &[2, 3],
            "lease",
        ));
        out.push(case(&["lease", "rm", id], &[1, 2, 3], "lease"));
    }
    out.push(case(
        &["lease", "create", "--id", "held-1", "--ttl", "1h"],
        ERROR,
        "held-1",
    ));
    // The base has a child: removing it by ID needs --force.
    let base = chain(true).0.id();
    out.push(case(&["rm", &base], ERROR, "conflict"));
}

/// The longest run of printable ASCII in `s`, which the error must quote.
fn printable_part(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_graphic())
        .max_by_key(|p| p.len())
        .unwrap_or("")
        .chars()
        .take(40)
        .collect()
}

/// Files that are not what a command reads: archives, probes, blobs.
fn file_cases(rng: &mut Rng, dir: &Path, out: &mut Vec<Case>) {
    let (base, child) = chain(true);
    let valid = docker_archive(&[base, child], ArchiveOptions::default());
    let mut archives: Vec<(String, Vec<u8>)> = vec![
        ("empty.tar".into(), Vec::new()),
        ("zeros.tar".into(), vec![0; 4096]),
        ("text.tar".into(), b"not an archive\n".to_vec()),
        ("gzip-garbage.tar.gz".into(), {
            let mut g = b"\x1f\x8b\x08\x00".to_vec();
            g.extend(rng.bytes(300));
            g
        }),
        ("cut.tar.gz".into(), {
            let g = gzip(&valid);
            g[..g.len() / 2].to_vec()
        }),
    ];
    // Cut inside the entries every import needs (a layer, a config or
    // the manifest, which is written last).
    let content = valid.len() - 1024 - 512;
    for i in 0..25 {
        archives.push((format!("cut-{i}.tar"), valid[..rng.below(content)].to_vec()));
    }
    for (name, bytes) in archives {
        let path = dir.join(&name);
        write(&path, &bytes);
        out.push(case(&["load", "-i", path.to_str().unwrap()], ERROR, &name));
    }
    out.push(case(
        &["load", "-i", dir.join("missing.tar").to_str().unwrap()],
        &[1, 3],
        "missing.tar",
    ));
    out.push(case(
        &["load", "-i", dir.to_str().unwrap()],
        ERROR,
        &dir.display().to_string(),
    ));
    let probes: Vec<(&str, &[u8])> = vec![
        ("probe-empty.json", b""),
        ("probe-text.json", b"hello"),
        ("probe-array.json", b"[1,2]"),
        ("probe-type.json", br#"{"Cmd":5}"#),
        ("probe-env.json", br#"{"Env":"A=1"}"#),
        ("probe-control.json", b"{\"Cmd\":[\"a\x01\"]}"),
        ("probe-deep.json", &[b'['; 5000]),
        ("probe-binary.json", b"\xff\xfe\x00\x01\x1b[31m"),
    ];
    for (name, bytes) in probes {
        let path = dir.join(name);
        write(&path, bytes);
        out.push(case(
            &["cache", "lookup", "--config", path.to_str().unwrap()],
            ERROR,
            name,
        ));
    }
    let blob = dir.join("blob.bin");
    write(&blob, b"some blob bytes");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    out.push(case(
        &["blob", "put", blob.to_str().unwrap(), "--digest", &wrong],
        ERROR,
        "failed to verify",
    ));
    for digest in ["sha256:zz", "nope", "\u{1b}[31m"] {
        out.push(case(
            &["blob", "put", blob.to_str().unwrap(), "--digest", digest],
            &[2, 3],
            &printable_part(digest),
        ));
    }
    out.push(case(
        &["blob", "put", dir.join("nothere").to_str().unwrap()],
        &[1, 3],
        "nothere",
    ));
}

fn url_cases(dir: &Path, out: &mut Vec<Case>) {
    let file = dir.join("plain-file");
    write(&file, b"not a store");
    let f = file.display();
    for url in [
        "ftp://x".to_owned(),
        "nothing".to_owned(),
        "fs://".to_owned(),
        "redb://".to_owned(),
        format!("fs://{f}"),
        format!("redb://{f}"),
        "s3://".to_owned(),
        "s3://bucket/p?unknown=1".to_owned(),
        "s3://bucket/p?timeout=abc".to_owned(),
        "\u{1b}[31m://x".to_owned(),
    ] {
        for sub in [
            &["ls"][..],
            &["tag", "a", "b:1"],
            &["lease", "create", "--ttl", "1h"],
        ] {
            let mut args = vec!["--store", url.as_str()];
            args.extend(sub);
            out.push(case(&args, &[1, 3], "store"));
        }
    }
}

/// Everything the store holds, read with the library (the CLI has exited).
fn snapshot(runtime: &tokio::runtime::Runtime, url: &str) -> String {
    runtime.block_on(async {
        let backend = imagecache_backends::open(url).await.unwrap();
        let mut loaded = backend.images().load().await.unwrap();
        loaded.quarantined.clear();
        let blobs = backend.blobs();
        let mut listed = blobs.list_blobs().await.unwrap();
        listed.sort_by_key(|b| b.digest);
        let mut notes = Vec::new();
        for b in &listed {
            notes.push(format!("{:?}", blobs.blob_notes(&b.digest).await.unwrap()));
        }
        format!("{loaded:?}\n{listed:?}\n{notes:?}")
    })
}

/// Whether output holds anything but printable UTF-8 text.
fn echoed(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Err(_) => true,
        Ok(s) => s
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
    }
}

#[derive(Default)]
struct Tally {
    tried: usize,
    typed: usize,
    panics: usize,
    changed: usize,
    echoed: usize,
    failures: Vec<String>,
}

fn seed(env: &Env) {
    let (base, child) = chain(true);
    let archive = env.write_archive("seed.tar", &[base, child], ArchiveOptions::default());
    env.import(&archive);
    let ok = |args: &[&str]| {
        let out = env.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "lease",
        "create",
        "--id",
        "held-1",
        "--ttl",
        "1h",
        "example/app:1",
    ]);
    let blob = env.path("seed-blob");
    write(&blob, b"a seeded blob");
    ok(&["blob", "put", blob.to_str().unwrap()]);
}

fn run_corpus(env: Env, scope: &str) {
    seed(&env);
    let mut rng = Rng(0xc11_bad);
    let files = env.path("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut cases = Vec::new();
    usage_cases(&mut rng, &mut cases);
    lookup_cases(&mut rng, &mut cases);
    file_cases(&mut rng, &files, &mut cases);
    url_cases(&files, &mut cases);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut before = snapshot(&runtime, &env.store);
    let mut t = Tally::default();
    for c in &cases {
        t.tried += 1;
        // A case naming its own store runs without the environment's.
        let mut cmd = if c.args.first().is_some_and(|a| a == "--store") {
            let mut cmd = env.std_cmd(&[]);
            let plain: Vec<_> = cmd.get_args().skip(2).map(ToOwned::to_owned).collect();
            let mut bare = std::process::Command::new(cmd.get_program());
            bare.env_clear()
                .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .args(plain);
            cmd = bare;
            cmd
        } else {
            env.std_cmd(&[])
        };
        let out = cmd
            .args(&c.args)
            .env("COLUMNS", "100")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{:?}", c.args);
        let fail = |t: &mut Tally, why: String| {
            if t.failures.len() < 60 {
                t.failures.push(format!("{what}: {why}"));
            }
        };
        if code == Some(101) || stderr.contains("panicked") {
            t.panics += 1;
            fail(&mut t, format!("panicked: {stderr}"));
        } else if code.is_some_and(|c2| c.codes.iter().any(|&want| i32::from(want) == c2))
            && stderr.contains(&c.names)
        {
            t.typed += 1;
        } else {
            fail(
                &mut t,
                format!(
                    "exit {code:?}, wanted {:?} naming {:?}; stderr: {stderr}",
                    c.codes, c.names
                ),
            );
        }
        if echoed(&out.stderr) || echoed(&out.stdout) {
            t.echoed += 1;
            fail(&mut t, format!("raw bytes in the output: {stderr:?}"));
        }
        let after = snapshot(&runtime, &env.store);
        if after != before {
            t.changed += 1;
            fail(&mut t, "the store changed".to_owned());
            before = after;
        }
    }
    assert_eq!(
        std::fs::read(files.join("plain-file")).unwrap(),
        b"not a store",
        "a refused store URL changed the file it named"
    );
    println!(
        "evidence: bad-input part=cli scope={scope} tried={} typed={} panics={} changed={} echoed={}",
        t.tried, t.typed, t.panics, t.changed, t.echoed
    );
    assert!(
        t.failures.is_empty() && t.typed == t.tried,
        "{} of {} bad command lines were not refused cleanly:\n{}",
        t.tried - t.typed + t.changed + t.echoed,
        t.tried,
        t.failures.join("\n")
    );
}

#[test]
fn bad_command_lines_on_a_redb_store_are_refused_cleanly() {
    run_corpus(Env::redb(), "redb");
}

#[test]
fn bad_command_lines_on_an_fs_store_are_refused_cleanly() {
    run_corpus(Env::fs(), "fs");
}
