//! `ls` columns, `--filter`, `--digests` and `--format` templates against
//! Docker's documented behaviour for `docker images`.

// Helpers outside #[test] functions panic on failed setup, as tests do.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::{Value, json};

/// base (2024-01-01, `example/base:1`) ← app (2024-01-02, `example/app:1`),
/// and loose (2024-01-03, no name, label team=web).
fn store(env: &Env) -> (String, String, String) {
    let (base, app) = chain(true);
    let l = layer(&[("loose", b"loose layer")]);
    let loose = ArchiveImage {
        config: config(
            &[sha(&l)],
            &["ADD loose /"],
            json!({"created": "2024-01-03T00:00:00Z", "config": {"Labels": {"team": "web"}}}),
        ),
        layers: vec![l],
        tags: vec![],
        parent: None,
    };
    let ids = (base.id(), app.id(), loose.id());
    let archive = env.write_archive("all.tar", &[base, app, loose], ArchiveOptions::default());
    env.import(&archive);
    ids
}

fn listed(env: &Env, args: &[&str]) -> Vec<String> {
    let mut full = vec!["ls"];
    full.extend_from_slice(args);
    let out: Value = env.json(&full);
    out.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn filters_follow_docker_images() {
    let env = Env::fs();
    let (base, app, loose) = store(&env);
    // dangling: without a name; heads only unless -a.
    assert_eq!(
        listed(&env, &["--filter", "dangling=true"]),
        vec![loose.clone()]
    );
    assert_eq!(listed(&env, &["-f", "dangling=false"]), vec![app.clone()]);
    assert_eq!(
        listed(&env, &["-a", "-f", "dangling=false"]),
        [app.clone(), base.clone()]
    );
    // before/since compare creation times, by ID, prefix or name.
    assert_eq!(
        listed(&env, &["-a", "-f", "before=example/app:1"]),
        vec![base.clone()]
    );
    assert_eq!(
        listed(&env, &["-a", "-f", &format!("since={}", &base[7..19])]),
        [loose.clone(), app.clone()]
    );
    // reference: shell patterns on the name, with or without its tag; `*`
    // does not cross a `/`.
    assert_eq!(
        listed(&env, &["-a", "-f", "reference=example/*"]),
        [app.clone(), base.clone()]
    );
    assert_eq!(
        listed(&env, &["-a", "-f", "reference=example/app"]),
        vec![app.clone()]
    );
    assert_eq!(
        listed(&env, &["-a", "-f", "reference=example/app:1"]),
        vec![app.clone()]
    );
    assert!(listed(&env, &["-a", "-f", "reference=*"]).is_empty());
    // The same key twice means either; different keys must all pass.
    assert_eq!(
        listed(
            &env,
            &[
                "-a",
                "-f",
                "reference=example/app",
                "-f",
                "reference=example/base"
            ]
        ),
        [app.clone(), base.clone()]
    );
    assert_eq!(
        listed(&env, &["-a", "-f", "label=team=web"]),
        vec![loose.clone()]
    );
    assert_eq!(
        listed(&env, &["-a", "-f", "label=team"]),
        vec![loose.clone()]
    );
    assert!(listed(&env, &["-a", "-f", "label=team=db"]).is_empty());
    assert!(listed(&env, &["-a", "-f", "dangling=false", "-f", "label=team"]).is_empty());
    // -q lists each ID once.
    env.cmd(&["ls", "-q", "-f", "dangling=true"])
        .assert()
        .success()
        .stdout(format!("{}\n", &loose[7..19]));
}

#[test]
fn bad_filters_are_usage_errors() {
    let env = Env::fs();
    store(&env);
    for (filter, code, needle) in [
        ("bogus=1", 2, "filters are dangling"),
        ("dangling=maybe", 2, "true or false"),
        ("label=", 2, "needs a value"),
        ("nokey", 2, "KEY=VALUE"),
        ("before=nosuch", 1, "No such image"),
    ] {
        env.cmd(&["ls", "--filter", filter])
            .assert()
            .code(code)
            .stderr(predicate::str::contains(needle));
    }
}

#[test]
fn digests_column_shows_digest_references() {
    let env = Env::fs();
    let (_, app, _) = store(&env);
    let digest = format!("sha256:{}", "ab".repeat(32));
    env.cmd(&["tag", &app, &format!("example/app@{digest}")])
        .assert()
        .success();
    let out = env.cmd(&["ls", "--digests"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("REPOSITORY") && header.contains("DIGEST"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&digest) && l.starts_with("example/app ")),
        "{text}"
    );
    let columns: Vec<&str> = header
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"],
        "{text}"
    );
}

#[test]
fn ls_shows_dockers_columns_with_the_cached_layer_size() {
    let env = Env::fs();
    let (base, app, loose) = store(&env);
    let out = env.cmd(&["ls", "-a"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    // Every image's SIZE is the sum of its layers as the cache holds them
    // uncompressed; the JSON gives bytes.
    let json = env.json(&["ls", "-a"]);
    for image in json.as_array().unwrap() {
        let id = image["id"].as_str().unwrap();
        let inspect = env.json(&["inspect", id]);
        assert_eq!(image["size"], inspect[0]["Size"], "{image}");
        assert!(image["size"].as_u64().unwrap() > 0, "{image}");
        assert!(image["platform"].is_object(), "{image}");
        assert!(image["children"].is_array(), "{image}");
    }
    let row = |id: &str| {
        text.lines()
            .find(|l| l.contains(&id[7..19]))
            .unwrap_or_else(|| panic!("{id} not in {text}"))
            .to_owned()
    };
    assert!(row(&base).starts_with("example/base "), "{text}");
    assert!(row(&app).starts_with("example/app "), "{text}");
    assert!(row(&loose).starts_with("<none> "), "{text}");
}

#[test]
fn format_templates_follow_docker_images() {
    let env = Env::fs();
    let (base, app, _) = store(&env);
    env.cmd(&["ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "example/app:1 {}\n",
            &app[7..19]
        )));
    env.cmd(&[
        "ls",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}}\\t{{json .Repository}}",
    ])
    .assert()
    .success()
    .stdout(predicate::str::contains(format!(
        "{base}\t\"example/base\"\n"
    )));
    // `table` adds Docker's column titles and aligns the columns.
    let out = env
        .cmd(&[
            "ls",
            "--format",
            "table {{.ID}}\\t{{.Repository}}\\t{{.CreatedAt}}",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("IMAGE ID ") && header.contains("   REPOSITORY   "),
        "{text}"
    );
    assert!(text.contains("2024-01-02 00:00:00 +0000 UTC"), "{text}");
    // inspect and history take templates over their own fields.
    env.cmd(&["inspect", "--format", "{{.Id}} {{.Os}}", &app])
        .assert()
        .success()
        .stdout(format!("{app} linux\n"));
    env.cmd(&[
        "history",
        "--format",
        "{{.ID}}|{{.CreatedBy}}",
        "--no-trunc",
        &app,
    ])
    .assert()
    .success()
    .stdout(predicate::str::starts_with(format!("{app}|")));
    // Mistakes are usage errors that name the field, before anything runs.
    env.cmd(&["ls", "--format", "{{.Nope}}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Nope").and(predicate::str::contains("Repository")));
    env.cmd(&["ls", "--format", "{{.ID"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unclosed"));
    env.cmd(&["df", "--format", "{{.ID}}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "templates apply to ls, history and inspect",
        ));
}

#[test]
fn history_names_the_image_of_each_entry() {
    let env = Env::fs();
    let (base, app, _) = store(&env);
    env.cmd(&["history", "-q", "example/app:1"])
        .assert()
        .success()
        .stdout(format!("{}\n{}\n", &app[7..19], &base[7..19]));
    env.cmd(&["history", "-q", "--no-trunc", &app])
        .assert()
        .success()
        .stdout(format!("{app}\n{base}\n"));
    let json = env.json(&["history", &app]);
    assert_eq!(json[0]["image"], json!(app));
    assert_eq!(json[1]["image"], json!(base));
    let text = env.cmd(&["history", &app]).output().unwrap().stdout;
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("IMAGE "), "{text}");
    // Without its parent in the store, the older entry's image is missing.
    env.cmd(&["rm", "--force", &base]).assert().success();
    env.cmd(&["history", "-q", &app])
        .assert()
        .success()
        .stdout(format!("{}\n<missing>\n", &app[7..19]));
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let env = Env::redb();
    for (shell, marker) in [
        ("bash", "_imagecache()"),
        ("zsh", "#compdef imagecache"),
        ("fish", "complete -c imagecache"),
    ] {
        let out = env.cmd(&["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        for sub in ["prune", "lease", "df", "inspect"] {
            assert!(text.contains(sub), "{shell} completes {sub}");
        }
    }
    env.cmd(&["completions", "tcsh"]).assert().code(2);
    let man = env.cmd(&["man"]).output().unwrap();
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(
        man.contains(".TH imagecache 1"),
        "{}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains("prune") && man.contains("completions"));
    assert!(!env.path("store.redb").exists(), "neither opens a store");
}
