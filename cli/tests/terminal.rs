//! The command line on a terminal: each command runs under a real
//! pseudo-terminal (util-linux `script`), as a person would run it, and
//! the test reads what the terminal shows. A progress bar is drawn, `prune`
//! asks before removing and does what the answer says, and binary output
//! is refused.

// Failed setup panics, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::*;

/// A shell word for `text`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs `imagecache --store STORE ARGS…` on a pseudo-terminal, typing
/// `input` into it; returns the exit code and everything the terminal
/// showed (stdout and stderr together).
fn on_terminal(env: &Env, args: &[&str], input: &str) -> (Option<i32>, String) {
    let Ok(script) = which("script") else {
        assert_ne!(
            std::env::var("IMAGECACHE_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "`script` (util-linux) is missing, and IMAGECACHE_REQUIRE_TOOLS=1 requires it"
        );
        panic!("`script` (util-linux) is needed for the terminal tests");
    };
    let bin = assert_cmd::cargo::cargo_bin("imagecache");
    let mut line = format!(
        "{} --store {}",
        quoted(bin.to_str().unwrap()),
        quoted(&env.store)
    );
    for arg in args {
        line.push(' ');
        line.push_str(&quoted(arg));
    }
    let mut child = std::process::Command::new(script)
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("XDG_DATA_HOME", env.path("xdg"))
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut shown = String::from_utf8_lossy(&out.stdout).into_owned();
    shown.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), shown)
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A store holding one dangling image (a chain's head without its name)
/// beside a named one; returns the dangling image's ID.
fn store_with_a_dangling_image(env: &Env) -> String {
    let (base, mut child) = chain(true);
    child.tags.clear();
    let id = child.id();
    let archive = env.write_archive("chain.tar", &[base, child], ArchiveOptions::default());
    env.import(&archive);
    id
}

#[test]
fn load_draws_a_progress_bar_on_a_terminal_and_lines_elsewhere() {
    let env = Env::redb();
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data = layer(&[("big", &big)]);
    let image = ArchiveImage {
        config: config(&[sha(&data)], &["ADD big /"], serde_json::json!({})),
        layers: vec![data],
        tags: vec!["example/big:1".into()],
        parent: None,
    };
    let archive = env.write_archive("big.tar", &[image], ArchiveOptions::default());
    let (code, shown) = on_terminal(&env, &["load", archive.to_str().unwrap()], "");
    assert_eq!(code, Some(0), "{shown}");
    // A bar redraws itself in place: carriage returns and terminal escapes.
    assert!(shown.contains('\r') && shown.contains("\x1b["), "{shown:?}");
    assert!(
        shown.contains("example/big:1") || shown.contains("Loaded"),
        "{shown:?}"
    );
    // Off a terminal, progress is plain lines without escapes.
    let plain = env
        .cmd(&["load", archive.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success(), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

#[test]
fn prune_asks_on_a_terminal_and_does_what_the_answer_says() {
    let env = Env::fs();
    let dangling = store_with_a_dangling_image(&env);
    let (code, shown) = on_terminal(&env, &["prune"], "n\n");
    assert!(
        shown.contains("Are you sure you want to continue? [y/N]"),
        "{shown:?}"
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        env.image_ids().contains(&dangling),
        "a refused prune removed it"
    );
    let (code, shown) = on_terminal(&env, &["prune"], "y\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(!env.image_ids().contains(&dangling), "{shown}");
    assert!(!env.image_ids().is_empty(), "named images stay");
}

#[test]
fn binary_output_is_refused_on_a_terminal() {
    let env = Env::redb();
    let (_, child) = chain(true);
    let archive = env.write_archive(
        "one.tar",
        std::slice::from_ref(&child),
        ArchiveOptions::default(),
    );
    env.import(&archive);
    let (code, shown) = on_terminal(&env, &["save", "example/app:1"], "");
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("refusing to write a tar archive to a terminal"),
        "{shown}"
    );
    let digest = env.blob_digests()[0].clone();
    let (code, shown) = on_terminal(&env, &["blob", "get", &digest], "");
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("refusing to write blob bytes to a terminal"),
        "{shown}"
    );
    // Redirected, the same commands write their bytes.
    let out = env.cmd(&["blob", "get", &digest]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(sha(&out.stdout).to_string(), digest);
}
