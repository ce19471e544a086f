//! Tests of the registry, the macros' case lists and the runner.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use imagecache_backends::MemoryBackend;
use imagecache_core::{BlobBackend, Digest, ImageId, StoreBackend};

use crate::{
    Case, CaseFn, CaseStatus, Damage, Fixture, Harness, HookResult, Outcome, Progress, RunOptions,
    run_cases,
};

/// Fresh in-memory backends, no hooks.
struct Plain;

/// One in-memory backend; `lying` claims every damage hook and does nothing.
struct MemFixture {
    backend: MemoryBackend,
    lying: bool,
}

#[async_trait::async_trait]
impl Fixture for MemFixture {
    fn store(&self) -> Option<Arc<dyn StoreBackend>> {
        Some(Arc::new(self.backend.clone()))
    }
    fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
        Some(Arc::new(self.backend.clone()))
    }
    async fn reopen(&self) -> Option<Box<dyn Fixture>> {
        None
    }
    fn damage(&self) -> Damage {
        if self.lying {
            Damage::all()
        } else {
            Damage::none()
        }
    }
    async fn corrupt_config(&self, _: &ImageId, _: Bytes) -> HookResult {
        Ok(())
    }
    async fn corrupt_blob(&self, _: &Digest, _: Bytes) -> HookResult {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Harness for Plain {
    async fn fixture(&self) -> Box<dyn Fixture> {
        Box::new(MemFixture {
            backend: MemoryBackend::new(),
            lying: false,
        })
    }
}

fn names_of(group: &str) -> BTreeSet<&'static str> {
    crate::cases()
        .into_iter()
        .filter(|c| c.group == group)
        .map(|c| c.name)
        .collect()
}

/// The case names a `# <heading>` section of a trait's docs gives, one per
/// bullet; the section ends at the next heading.
fn bullets<'a>(source: &'a str, heading: &str) -> BTreeSet<&'a str> {
    let start = format!("/// # {heading}");
    source
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with("/// #"))
        .filter_map(|l| l.strip_prefix("/// * `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .collect()
}

#[test]
fn every_behavior_bullet_has_a_case() {
    // Each trait's `# Behavior` list is the contract; each bullet names a
    // case of that trait's group.
    let backend_rs = include_str!("../../image-core/src/backend.rs");
    let images = bullets(backend_rs, "Behavior");
    let names = bullets(backend_rs, "Behavior of names");
    let leases = bullets(backend_rs, "Behavior of leases");
    let blobs = bullets(include_str!("../../image-core/src/blob.rs"), "Behavior");
    assert!(
        images.len() + blobs.len() >= 20 && names.len() >= 5 && leases.len() == 9,
        "found only {images:?} {names:?} {leases:?} {blobs:?}"
    );
    for (group, bullets, beyond) in [
        (
            "backend",
            &images,
            vec![&"concurrent_writers_keep_every_write"],
        ),
        ("names", &names, vec![]),
        ("leases", &leases, vec![]),
        ("blobs", &blobs, vec![]),
    ] {
        let cases = names_of(group);
        let missing: Vec<_> = bullets.difference(&cases).collect();
        assert!(
            missing.is_empty(),
            "{group}: bullets without a case: {missing:?}"
        );
        let extra: Vec<_> = cases.difference(bullets).collect();
        assert_eq!(extra, beyond, "{group}: cases beyond the bullets");
    }
}

#[test]
fn macro_lists_match_the_registry() {
    let mut listed: Vec<(&str, &str)> = Vec::new();
    // The macro expands to one push per listed case, right after creation.
    #[allow(clippy::vec_init_then_push)]
    {
        crate::__all_groups!(__case_names!(listed));
    }
    let mut from_macros = BTreeSet::new();
    for (group, name) in listed {
        assert!(
            from_macros.insert((group, name)),
            "{group}::{name} is listed twice"
        );
    }
    let registered: BTreeSet<(&str, &str)> =
        crate::cases().iter().map(|c| (c.group, c.name)).collect();
    let unlisted: Vec<_> = registered.difference(&from_macros).collect();
    let unregistered: Vec<_> = from_macros.difference(&registered).collect();
    assert!(
        unlisted.is_empty() && unregistered.is_empty(),
        "backend_tests! must list exactly the registered cases; \
         not listed: {unlisted:?}, not registered: {unregistered:?}"
    );
}

#[test]
fn readme_counts_match_the_registry() {
    // The README's table of cases per group must not go stale.
    let readme = include_str!("../README.md");
    let rows: Vec<(&str, usize)> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", group, count, ""] => {
                    let group = group.strip_prefix('`')?.strip_suffix('`')?;
                    Some((group, count.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect();
    let cases = crate::cases();
    let mut groups: Vec<&str> = Vec::new();
    for case in &cases {
        if !groups.contains(&case.group) {
            groups.push(case.group);
        }
    }
    let want: Vec<(&str, usize)> = groups
        .iter()
        .map(|g| (*g, cases.iter().filter(|c| c.group == *g).count()))
        .collect();
    assert_eq!(rows, want, "README table of cases per group");
    let total = format!("The suite has {} cases", cases.len());
    assert!(readme.contains(&total), "README must say: {total}");
}

#[test]
fn case_names_are_unique_across_groups() {
    // The macro puts every case's test in one module, so names must not clash.
    let cases = crate::cases();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "duplicate case names");
}

#[test]
fn docker_fs_catalog_is_complete() {
    let fs: BTreeSet<&str> = names_of("docker")
        .into_iter()
        .filter(|n| n.starts_with("fs_"))
        .collect();
    assert_eq!(fs.len(), 11, "fs_test.go has 11 tests: {fs:?}");
    assert!(crate::docker_fs::CASES.iter().all(Case::needs_backend));
}

fn passes(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async { Outcome::Passed })
}

fn uses_a_backend(h: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        let (_fixture, b) = crate::images(&h).await;
        assert!(b.load().await.is_ok_and(|s| s.images.is_empty()));
        Outcome::Passed
    })
}

fn fails_with_format(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async {
        let found = 3;
        assert_eq!(found, 2, "expected 2 images, found {found}");
        Outcome::Passed
    })
}

fn fails_with_literal(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async { panic!("a literal message") })
}

fn skips(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async { Outcome::skipped("skips", "capability `x` is not set") })
}

fn hangs(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async {
        std::future::pending::<()>().await;
        Outcome::Passed
    })
}

fn pure_passes() -> Outcome {
    Outcome::Passed
}

fn pure_fails() -> Outcome {
    panic!("pure case failed")
}

fn synthetic() -> Vec<Case> {
    let h = |name, run| Case {
        name,
        group: "synthetic",
        run: CaseFn::Harness(run),
    };
    let p = |name, run| Case {
        name,
        group: "synthetic",
        run: CaseFn::Pure(run),
    };
    vec![
        h("passes", passes),
        h("uses_a_backend", uses_a_backend),
        h("fails_with_format", fails_with_format),
        h("fails_with_literal", fails_with_literal),
        h("skips", skips),
        h("hangs", hangs),
        p("pure_passes", pure_passes),
        p("pure_fails", pure_fails),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_reports_each_outcome() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let options = RunOptions::new()
        .with_timeout(Duration::from_millis(300))
        .with_progress(move |p| {
            let event = match p {
                Progress::Started { case, index, total } => {
                    format!("start {} {index}/{total}", case.name)
                }
                Progress::Finished {
                    result,
                    index,
                    total,
                } => format!("end {} {index}/{total}", result.name),
            };
            seen.lock().unwrap().push(event);
        });
    let report = run_cases(Arc::new(Plain), &synthetic(), &options).await;

    let status = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.status.clone())
            .unwrap()
    };
    assert_eq!(status("passes"), CaseStatus::Passed);
    assert_eq!(status("uses_a_backend"), CaseStatus::Passed);
    assert_eq!(status("pure_passes"), CaseStatus::Passed);
    assert_eq!(
        status("skips"),
        CaseStatus::Skipped {
            reason: "capability `x` is not set".into()
        }
    );
    let reason = |name: &str| match status(name) {
        CaseStatus::Failed { reason } => reason,
        other => panic!("{name} should fail, got {other:?}"),
    };
    assert!(
        reason("fails_with_format").contains("expected 2 images, found 3"),
        "{}",
        reason("fails_with_format")
    );
    assert_eq!(reason("fails_with_literal"), "a literal message");
    assert_eq!(reason("pure_fails"), "pure case failed");
    assert!(reason("hangs").contains("timed out"), "{}", reason("hangs"));

    assert_eq!(
        (report.passed(), report.failed(), report.skipped()),
        (3, 4, 1)
    );
    assert_eq!(report.summary_line(), "3 passed, 4 failed, 1 skipped");
    assert!(!report.is_success());
    assert_eq!(report.failures().count(), 4);
    let order: Vec<&str> = report.results.iter().map(|r| r.name).collect();
    let want: Vec<&str> = synthetic().iter().map(|c| c.name).collect();
    assert_eq!(order, want, "results come in case order");
    assert!(report.results.iter().all(|r| r.group == "synthetic"));

    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 16);
    assert_eq!(events[0], "start passes 0/8");
    assert_eq!(events[1], "end passes 0/8");
    assert_eq!(events[15], "end pure_fails 7/8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_filters_by_group_and_name() {
    let cases = synthetic();
    let only = |filter: &str| {
        let options = RunOptions::new().with_filter(filter);
        cases
            .iter()
            .filter(|c| options.selects(c))
            .map(|c| c.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(only("pure_"), vec!["pure_passes", "pure_fails"]);
    assert_eq!(only("synthetic::passes"), vec!["passes"]);
    assert_eq!(only("synthetic::").len(), cases.len());
    assert!(only("no-such-case").is_empty());

    let report = run_cases(
        Arc::new(Plain),
        &cases,
        &RunOptions::new().with_filter("passes"),
    )
    .await;
    assert_eq!(report.summary_line(), "2 passed, 0 failed, 0 skipped");
    assert!(report.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_selects_from_the_registry() {
    let report = crate::run_all(Arc::new(Plain), Some("backend::load_on_empty_store")).await;
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].name, "load_on_empty_store");
    assert_eq!(report.results[0].status, CaseStatus::Passed);

    let report = crate::run_all(Arc::new(Plain), Some("docker::fs_")).await;
    assert_eq!(report.results.len(), 11);
}

/// A harness that claims to damage content but leaves it intact, so the
/// cases that rely on damage must notice.
struct Lying;

#[async_trait::async_trait]
impl Harness for Lying {
    async fn fixture(&self) -> Box<dyn Fixture> {
        Box::new(MemFixture {
            backend: MemoryBackend::new(),
            lying: true,
        })
    }
}

#[test]
fn generated_test_of_a_failing_case_names_it() {
    let outcome = std::panic::catch_unwind(|| {
        crate::__private::run_test("backend", "get_corrupt_is_corrupt", async {
            crate::__private::into_harness(Lying)
        });
    });
    let payload = outcome.expect_err("undamaged content must fail the case");
    let message = crate::runner::panic_message(payload.as_ref());
    assert!(
        message.starts_with("backend::get_corrupt_is_corrupt failed: "),
        "{message}"
    );
    assert!(message.contains("expected an error matching"), "{message}");
}

#[test]
fn generated_test_fails_with_the_case_name() {
    // A registered case that fails must fail the generated test and name itself.
    let outcome = std::panic::catch_unwind(|| {
        crate::__private::run_test("backend", "no_such_case", async {
            crate::__private::into_harness(Plain)
        });
    });
    let payload = outcome.expect_err("an unregistered case must fail");
    let message = crate::runner::panic_message(payload.as_ref());
    assert!(message.contains("backend::no_such_case"), "{message}");
}

/// Counts the ticks of the case below, which runs until stopped.
static TICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn runs_until_stopped(_: Arc<dyn Harness>) -> BoxFuture<'static, Outcome> {
    Box::pin(async {
        loop {
            TICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// An interrupted run (its future dropped, as Ctrl-C does) stops the case
/// it was running rather than leaving its task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_run_stops_its_case() {
    let case = Case {
        name: "runs_until_stopped",
        group: "backend",
        run: CaseFn::Harness(runs_until_stopped),
    };
    let run = crate::runner::run_one(&case, Arc::new(Plain), Duration::from_secs(60));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), run)
            .await
            .is_err(),
        "the case runs until stopped"
    );
    // The timed-out future was dropped above; give an abort time to land.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after_drop = TICKS.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_drop > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        TICKS.load(std::sync::atomic::Ordering::SeqCst),
        after_drop,
        "the case's task still runs after its run was dropped"
    );
}
