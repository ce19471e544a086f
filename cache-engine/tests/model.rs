//! Model-based test of the store, blob cache, names, leases and garbage
//! collection, with faults injected into the backend.
//!
//! Random sequences of operations (create an image with or without a
//! parent, re-parent, delete, remove with its blobs, tag, untag, put a blob,
//! put a layer gzip-compressed or not, read a blob, take and release a
//! lease, collect under `Policy::dangling()` or `Policy::all()`, reopen
//! everything) run against the memory, fs and redb backends, each wrapped
//! by the fault injector of `imagecache_conformance::faults` (errors before
//! and after calls, short and failing reads, torn writes, delays), and
//! against a plain in-memory model (`model/spec.rs`).
//!
//! After every operation the backend is read back without faults, through
//! a new store, and:
//!
//! * an operation that succeeded left exactly the model's state and
//!   returned what the model says (a removal or collection under swallowed
//!   faults may keep more, never remove more, and reports exactly what it
//!   removed);
//! * an operation that failed failed with a typed error: a refusal the
//!   model predicts (same variant, nothing changed), or an error carrying
//!   the injected fault — never a panic, never a transient fault reported
//!   as corruption, absence or a conflict — and left the state either
//!   unchanged or fully changed (one write), or every item as before or as
//!   after (operations of several writes: layer puts, removals,
//!   collections);
//! * invariants hold: children and parents agree, heads have no children,
//!   names point at stored images, every stored parent is stored, every
//!   listed image's config reads and verifies, every listed blob reads
//!   whole and matches its digest and size, notes belong to stored blobs
//!   and say the truth, and the store reports no problem on open;
//! * the store that ran the operation agrees with the backend (after a
//!   failure it may be behind, as before or after, until it reloads).
//!
//! # Size
//!
//! CI runs about 10,000 operations across the three backends at a 5 %
//! fault rate. The benchmark run is larger:
//!
//! ```text
//! IMAGECACHE_MODEL_OPS=100000 IMAGECACHE_MODEL_FAULT_RATE=0.05 \
//!     cargo test --release -p imagecache-engine --test model -- --nocapture
//! ```
//!
//! `IMAGECACHE_MODEL_OPS` is the total over the three backends (a third
//! each), `IMAGECACHE_MODEL_FAULT_RATE` the probability that a backend call
//! meets a fault, and `IMAGECACHE_MODEL_CASE_OPS` (default 150) the longest
//! sequence of one case. Each backend prints its figures (operations,
//! backend calls, faults injected by kind, operations failed, time) with
//! `--nocapture`. A failing case is shrunk by proptest and saved in
//! `tests/model.proptest-regressions`, which replays it first next time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[path = "model/pools.rs"]
mod pools;
#[path = "model/spec.rs"]
mod spec;
#[path = "model/world.rs"]
mod world;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use imagecache_conformance::faults::{FaultConfig, FaultInjector, FaultKind, FaultStats};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestError, TestRunner};

use pools::{DIGESTS, IMAGES, LAYERS, LEASES, NAMES, PLAIN, Pools, pools};
use spec::{Links, Op, Prediction, Res, Ret, Rule, State, between, predict};
use world::{Failure, Kind, World, check_graph};

/// How big a run is, from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Operations over the three backends.
    total_ops: u64,
    fault_rate: f64,
    /// The longest sequence of one case.
    case_ops: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
                Err(_) => default,
            }
        }
        Self {
            total_ops: var("IMAGECACHE_MODEL_OPS", 10_000),
            fault_rate: var("IMAGECACHE_MODEL_FAULT_RATE", 0.05),
            case_ops: var("IMAGECACHE_MODEL_CASE_OPS", 150usize).max(1),
        }
    }

    /// Cases for one backend: sequences are 1 to `case_ops` long, so
    /// `(case_ops + 1) / 2` operations each on average.
    fn cases(&self) -> u32 {
        let per_backend = self.total_ops.div_ceil(3);
        let mean = (self.case_ops as u64 + 1).div_ceil(2);
        u32::try_from(per_backend.div_ceil(mean).max(1)).unwrap_or(u32::MAX)
    }
}

/// One generated case: the fault plan's seed and the operations.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    ops: Vec<Op>,
}

fn res() -> impl Strategy<Value = Res> {
    prop_oneof![
        (0..IMAGES).prop_map(Res::Image),
        (0..DIGESTS).prop_map(Res::Blob),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let image = || 0..IMAGES;
    prop_oneof![
        12 => (image(), proptest::option::of(image()))
            .prop_map(|(image, parent)| Op::Create { image, parent }),
        3 => (image(), image()).prop_map(|(image, parent)| Op::SetParent { image, parent }),
        3 => image().prop_map(|image| Op::Delete { image }),
        3 => image().prop_map(|image| Op::Remove { image }),
        4 => (0..NAMES, image()).prop_map(|(name, image)| Op::Tag { name, image }),
        2 => (0..NAMES).prop_map(|name| Op::Untag { name }),
        3 => (0..PLAIN).prop_map(|blob| Op::PutBlob { blob }),
        4 => (0..LAYERS, any::<bool>()).prop_map(|(layer, gzip)| Op::PutLayer { layer, gzip }),
        3 => (0..DIGESTS).prop_map(|digest| Op::GetBlob { digest }),
        3 => (0..LEASES, proptest::collection::vec(res(), 1..3))
            .prop_map(|(lease, resources)| Op::Hold { lease, resources }),
        2 => (0..LEASES).prop_map(|lease| Op::Release { lease }),
        3 => any::<bool>().prop_map(|all| Op::Collect { all }),
        1 => Just(Op::Reopen),
    ]
}

fn case(max_ops: usize) -> impl Strategy<Value = Case> {
    (any::<u64>(), proptest::collection::vec(op(), 1..=max_ops))
        .prop_map(|(seed, ops)| Case { seed, ops })
}

/// Figures of a run.
#[derive(Debug, Default)]
struct Totals {
    cases: u64,
    ops: u64,
    /// Operations refused as the model predicts.
    refused: u64,
    /// Operations failed by an injected fault.
    failed_ops: u64,
    failed_opens: u64,
    faults: FaultStats,
}

impl Totals {
    fn add(&mut self, ops: u64, outcomes: [u64; 2], opens: u64, stats: &FaultStats) {
        self.cases += 1;
        self.ops += ops;
        self.refused += outcomes[0];
        self.failed_ops += outcomes[1];
        self.failed_opens += opens;
        self.faults.calls += stats.calls;
        self.faults.injected += stats.injected;
        for (kind, n) in &stats.by_kind {
            *self.faults.by_kind.entry(*kind).or_default() += n;
        }
    }
}

/// Whether a refusal means the model can tell it from the state alone: a
/// transient fault must never be reported as one of these.
fn is_verdict(kind: &str) -> bool {
    matches!(
        kind,
        "NotFound"
            | "UnknownImage"
            | "NameNotFound"
            | "UnknownParent"
            | "ParentCycle"
            | "Held"
            | "LeaseNotFound"
            | "LeaseExists"
            | "Corrupt"
            | "Collecting"
    )
}

/// What happened in the backend while one operation ran.
#[derive(Debug, Clone, Copy)]
struct Faulted {
    /// Faults that make a call fail were injected.
    any: bool,
    /// A blob read was cut short (the cache evicts what reads short).
    short_read: bool,
}

fn faulted(before: &FaultStats, after: &FaultStats) -> Faulted {
    Faulted {
        any: after.failures() > before.failures(),
        short_read: after.of_kind(FaultKind::ShortRead) > before.of_kind(FaultKind::ShortRead),
    }
}

/// What a removal reported against what left the backend.
fn removed_between(before: &State, obs: &State) -> Ret {
    Ret::Removed {
        images: before
            .images
            .keys()
            .filter(|id| !obs.images.contains_key(id))
            .copied()
            .collect(),
        blobs: before.blobs.difference(&obs.blobs).copied().collect(),
    }
}

/// Checks a successful operation against the model.
fn check_ok(
    op: &Op,
    p: &Prediction,
    ret: &Ret,
    f: Faulted,
    before: &State,
    obs: &State,
) -> Result<(), String> {
    let Ok(expected) = &p.expect else {
        return Err(format!("expected {:?}, got Ok({ret:?})", p.expect));
    };
    match op {
        Op::GetBlob { .. } if ret != expected => {
            // A read that met a fault is a miss; one cut short evicts.
            if !(f.any && *ret == Ret::Blob(None)) {
                return Err(format!("read {ret:?}, expected {expected:?}"));
            }
            between(before, before, obs, f.short_read)
        }
        Op::Remove { .. } | Op::Collect { .. } if f.any => {
            // Faults the services swallow (notes, a compaction) may make
            // them keep more, never remove more; and the report tells what
            // was removed.
            between(before, &p.after, obs, false)?;
            let actual = removed_between(before, obs);
            if *ret != actual {
                return Err(format!("reported {ret:?}, but removed {actual:?}"));
            }
            Ok(())
        }
        _ => {
            if ret != expected {
                return Err(format!("returned {ret:?}, expected {expected:?}"));
            }
            if *obs != p.after {
                return Err(format!(
                    "stored state differs from the model:\n{}",
                    diff(&p.after, obs)
                ));
            }
            Ok(())
        }
    }
}

/// Checks a failed operation: a typed error, and a state the rule allows.
fn check_err(
    p: &Prediction,
    failure: &Failure,
    f: Faulted,
    before: &State,
    obs: &State,
) -> Result<(), String> {
    if failure.kind == "Interrupted" || failure.text.contains("panicked") {
        return Err(format!("a task panicked or was cut off: {failure:?}"));
    }
    if !failure.injected {
        let cut_short = f.short_read && failure.kind == "BlobCorrupt";
        if p.expect != Err(failure.kind) && !cut_short {
            return Err(format!(
                "unexpected error {failure:?}, expected {:?}",
                p.expect
            ));
        }
        if cut_short {
            return between(before, &p.after, obs, true);
        }
        if obs != before {
            return Err(format!(
                "a refused operation changed the state:\n{}",
                diff(before, obs)
            ));
        }
        return Ok(());
    }
    if is_verdict(failure.kind) {
        return Err(format!(
            "an injected fault was reported as {}: {}",
            failure.kind, failure.text
        ));
    }
    match p.rule {
        Rule::Atomic if obs == before || *obs == p.after => Ok(()),
        Rule::Atomic => Err(format!(
            "a failed write left neither the state before nor the state after:\nagainst before:\n{}\nagainst after:\n{}",
            diff(before, obs),
            diff(&p.after, obs)
        )),
        Rule::Between => between(before, &p.after, obs, f.short_read),
        Rule::Read => between(before, before, obs, f.short_read),
    }
}

fn diff(expected: &State, actual: &State) -> String {
    let mut out = String::new();
    let mut line = |what: &str, e: String, a: String| {
        if e != a {
            out.push_str(&format!("  {what}: expected {e}\n  {what}:   actual {a}\n"));
        }
    };
    line(
        "images",
        format!("{:?}", expected.images),
        format!("{:?}", actual.images),
    );
    line(
        "names",
        format!("{:?}", expected.names),
        format!("{:?}", actual.names),
    );
    line(
        "leases",
        format!("{:?}", expected.leases),
        format!("{:?}", actual.leases),
    );
    line(
        "blobs",
        format!("{:?}", expected.blobs),
        format!("{:?}", actual.blobs),
    );
    out
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Done,
    Refused,
    Failed,
}

/// Runs one operation on the world and the model and checks them.
async fn step(
    world: &mut World,
    pools: &Pools,
    model: &mut State,
    op: &Op,
) -> Result<Ended, String> {
    let faults = world.faults.clone();
    faults.set_active(false);
    let links = match op {
        Op::Remove { .. } | Op::Collect { .. } => world.links(pools).await,
        _ => Links::default(),
    };
    let prediction = predict(op, model, pools, &links);
    faults.set_active(true);
    let stats = faults.stats();
    let result = world.exec(op, pools).await;
    let f = faulted(&stats, &faults.stats());
    faults.set_active(false);
    let obs = world.observe(pools).await?;
    match &result {
        Ok(ret) => check_ok(op, &prediction, ret, f, model, &obs)?,
        Err(failure) => check_err(&prediction, failure, f, model, &obs)?,
    }
    // The store that ran the operation: in step with the backend after a
    // success; after a failure possibly behind, until it reloads.
    let view = world.handle_view(&obs);
    check_graph("the store under test", world.store())?;
    if result.is_ok() && view != obs {
        return Err(format!(
            "the store under test disagrees with the backend:\n{}",
            diff(&obs, &view)
        ));
    }
    if result.is_err() {
        let allowed = match prediction.rule {
            Rule::Atomic => view == *model || view == prediction.after || view == obs,
            _ => between(model, &prediction.after, &view, true).is_ok() || view == obs,
        };
        if !allowed {
            return Err(format!(
                "after a failure the store under test holds a state that never was:\n{}",
                diff(&obs, &view)
            ));
        }
        world.refresh().await;
        if world.handle_view(&obs) != obs {
            return Err(
                "a reload did not bring the store under test in step with the backend".into(),
            );
        }
    }
    *model = obs;
    Ok(match result {
        Ok(_) => Ended::Done,
        Err(f) if f.injected => Ended::Failed,
        Err(_) => Ended::Refused,
    })
}

async fn run_case(
    kind: Kind,
    settings: Settings,
    case: &Case,
    totals: &RefCell<Totals>,
) -> Result<(), String> {
    let config = FaultConfig::new(case.seed)
        .with_rate(settings.fault_rate)
        .with_max_delay(Duration::from_millis(1));
    let faults = FaultInjector::new(config);
    faults.set_active(false);
    let mut world = World::new(kind, faults.clone()).await;
    let pools = pools();
    let mut model = State::default();
    let mut outcomes = [0u64; 2];
    for (i, op) in case.ops.iter().enumerate() {
        match step(&mut world, pools, &mut model, op).await {
            Ok(Ended::Refused) => outcomes[0] += 1,
            Ok(Ended::Failed) => outcomes[1] += 1,
            Ok(Ended::Done) => {}
            Err(reason) => {
                let last = faults.stats().last;
                return Err(format!(
                    "{kind:?}, fault seed {}, operation {i} {op:?}: {reason}\n(last fault injected: {last:?})",
                    case.seed
                ));
            }
        }
    }
    totals.borrow_mut().add(
        case.ops.len() as u64,
        outcomes,
        world.failed_opens,
        &faults.stats(),
    );
    Ok(())
}

fn run(kind: Kind) {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases: settings.cases(),
        source_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/model.rs")),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let totals = RefCell::new(Totals::default());
    let started = Instant::now();
    let result = runner.run(&case(settings.case_ops), |case| {
        runtime
            .block_on(run_case(kind, settings, &case, &totals))
            .map_err(TestCaseError::fail)
    });
    let breaks = u64::from(result.is_err());
    report(kind, settings, &totals.borrow(), breaks, started.elapsed());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("model test on {kind:?} failed: {reason}\nminimal case: {case:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test on {kind:?} aborted: {reason}"),
    }
}

fn report(kind: Kind, settings: Settings, t: &Totals, breaks: u64, elapsed: Duration) {
    let kinds: Vec<String> = t
        .faults
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    eprintln!(
        "model {kind:?}: {} operations in {} cases at fault rate {}: {} backend calls, {} faults injected ({}), {} operations refused as predicted, {} failed by a fault, {} opens retried, {breaks} invariant breaks, {:.1} s",
        t.ops,
        t.cases,
        settings.fault_rate,
        t.faults.calls,
        t.faults.injected,
        kinds.join(", "),
        t.refused,
        t.failed_ops,
        t.failed_opens,
        elapsed.as_secs_f64()
    );
    let backend = format!("{kind:?}").to_lowercase();
    imagecache_conformance::evidence::record(
        "model",
        &[
            ("backend", &backend),
            ("ops", &t.ops),
            ("faults", &t.faults.injected),
            ("invariant_breaks", &breaks),
        ],
    );
}

#[test]
fn memory() {
    run(Kind::Memory);
}

#[test]
fn fs() {
    run(Kind::Fs);
}

#[test]
fn redb() {
    run(Kind::Redb);
}
