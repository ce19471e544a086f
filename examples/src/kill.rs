//! The kill harness: a child process runs a seeded random workload over
//! the library and is SIGKILLed at random moments, again and again; after
//! every kill the parent opens the store and checks it against what the
//! child acknowledged.
//!
//! # The workload
//!
//! The child ([`run_child`]) creates images (with a parent, with a fresh
//! layer put through the blob cache first, with another image's layers, or
//! with none), puts layers alone, sets parents, tags and untags names,
//! removes images with the blobs only they used
//! ([`Lifecycle::remove_image`](imagecache_engine::lifecycle::Lifecycle::remove_image)),
//! creates, renews and deletes leases (some living an hour, some a second),
//! and collects garbage (dangling images, or every image not held) with
//! [`Lifecycle::collect`](imagecache_engine::lifecycle::Lifecycle::collect).
//!
//! Before each operation it appends a `begin` line to an acknowledgement
//! log, and after the library call returned an `end` line with what the
//! call reported (the blobs a removal took, a lease's expiry, what a
//! collection removed); each line is synced before the workload goes on.
//!
//! # The check
//!
//! The parent replays the acknowledged operations into a model of the
//! store, checking on the way that no removal took what had to stay: an
//! image or blob a live lease holds, a named image or an ancestor of one
//! (for a collection of dangling images), a blob an image that stays uses,
//! a lease before it expired. Then it opens the store and counts:
//!
//! * **lost**: an acknowledged image, parent link, name, blob or lease that
//!   is missing or damaged;
//! * **corrupt served**: a config or blob the library returned as good
//!   whose bytes do not hash to its ID or digest;
//! * **invariant breaks**: problems reported by opening the store or by
//!   the library's own [`Lifecycle::check`](imagecache_engine::lifecycle::Lifecycle::check),
//!   anything stored that no operation wrote, parents and children that
//!   disagree, names pointing nowhere, an image whose layer is not cached,
//!   and the wrongful removals above.
//!
//! The operation the kill interrupted may or may not have happened: what
//! it could have changed is left out of the comparison and then taken into
//! the model as found, so later rounds check it like the rest.
//!
//! One problem the library's check reports is counted apart, as
//! `dangling_notes`: a note naming a layer's other copy that is gone. A
//! removal of a layer deletes its two copies one after the other, so a
//! kill in between leaves the survivor's note naming the removed copy
//! until a later collection removes the survivor too. A removed copy that
//! had been acknowledged and not reported removed counts as lost.

mod check;
mod data;
mod log;
mod model;
mod workload;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub use check::Tally;
pub use workload::{ChildArgs, run_child};

use crate::Rng;
use model::{Model, Window};

const ENV_URL: &str = "IMAGECACHE_KILL_URL";
const ENV_SEED: &str = "IMAGECACHE_KILL_SEED";
const ENV_LOG: &str = "IMAGECACHE_KILL_LOG";
const ENV_LAYER: &str = "IMAGECACHE_KILL_MAX_LAYER";

/// How long a child may take to open the store.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct KillOptions {
    /// A short name of the backend for the evidence line: `fs`, `redb`, `s3`.
    pub backend: String,
    /// The store's URL; it should be empty at the start.
    pub url: String,
    /// How many times to kill the child.
    pub kills: u64,
    /// The seed of the whole run (workloads and kill moments).
    pub seed: u64,
    /// The largest layer the workload puts, in bytes.
    pub max_layer: usize,
    /// The longest a child runs after opening the store, in milliseconds.
    pub max_run_ms: u64,
    /// Print a line per round.
    pub verbose: bool,
}

impl KillOptions {
    /// Options for `kills` kills of a store at `url`, with small layers.
    pub fn new(backend: impl Into<String>, url: impl Into<String>, kills: u64) -> Self {
        Self {
            backend: backend.into(),
            url: url.into(),
            kills,
            seed: 1,
            max_layer: 64 << 10,
            max_run_ms: 400,
            verbose: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The backend's short name.
    pub backend: String,
    /// The counts.
    pub tally: Tally,
    /// Every problem found, described.
    pub problems: Vec<String>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Summary {
    /// The evidence line: `evidence: kill backend=… kills=… …`.
    pub fn evidence(&self) -> String {
        self.with_fields(imagecache_conformance::evidence::line)
    }

    /// Prints the evidence line and appends it to the evidence file, when
    /// one is named ([`imagecache_conformance::evidence::record`]).
    pub fn record(&self) {
        self.with_fields(imagecache_conformance::evidence::record);
    }

    fn with_fields<T>(&self, f: impl FnOnce(&str, &[(&str, &dyn std::fmt::Display)]) -> T) -> T {
        let t = &self.tally;
        f(
            "kill",
            &[
                ("backend", &self.backend),
                ("kills", &t.kills),
                ("acked_checked", &t.acked_checked),
                ("lost", &t.lost),
                ("corrupt_served", &t.corrupt_served),
                ("invariant_breaks", &t.invariant_breaks),
                ("dangling_notes", &t.dangling_notes),
                ("ops_acked", &t.ops_acked),
                ("in_flight", &t.in_flight),
                ("child_errors", &t.child_errors),
                ("secs", &self.elapsed.as_secs()),
            ],
        )
    }

    /// Whether nothing was lost, served corrupt or broken, and no child
    /// stopped on an error.
    pub fn passed(&self) -> bool {
        let t = &self.tally;
        t.lost == 0 && t.corrupt_served == 0 && t.invariant_breaks == 0 && t.child_errors == 0
    }
}

/// The child's arguments, when this process was started as a child by
/// [`run`].
pub fn child_from_env() -> Option<ChildArgs> {
    let url = std::env::var(ENV_URL).ok()?;
    Some(ChildArgs {
        url,
        seed: std::env::var(ENV_SEED).ok()?.parse().ok()?,
        log: std::env::var(ENV_LOG).ok()?.into(),
        max_layer: std::env::var(ENV_LAYER).ok()?.parse().ok()?,
    })
}

/// `base` (an `s3://bucket…?query` URL) under a prefix of its own.
pub fn fresh_s3_prefix(base: &str, tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (location, query) = base.split_once('?').unwrap_or((base, ""));
    format!(
        "{}/{tag}-{nanos:x}-{}?{query}",
        location.trim_end_matches('/'),
        std::process::id()
    )
}

/// Runs the harness: `child` gives the command that starts this program
/// as a child (the harness adds the environment that makes it one).
///
/// # Errors
/// A child that cannot be started or does not get ready, a log that does
/// not parse, a store that does not open or cannot be listed.
pub async fn run(options: &KillOptions, child: impl Fn() -> Command) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut rng = Rng::new(options.seed);
    let mut model = Model::default();
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for round in 0..options.kills {
        let log = dir.path().join(format!("round-{round}.log"));
        let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(round);
        let killed_at = kill_one(options, &child, &log, seed, &mut rng, &mut tally)?;
        let before = problems.len();
        replay(
            &options.url,
            &log,
            killed_at,
            &mut model,
            &mut tally,
            &mut problems,
        )
        .await?;
        if options.verbose {
            println!(
                "round {round:>4}: {} images, {} names, {} blobs, {} leases; {} problem(s)",
                model.images.len(),
                model.names.len(),
                model.blobs.len(),
                model.leases.len(),
                problems.len() - before
            );
        }
        for p in &problems[before..] {
            println!("    round {round}: {p}");
        }
        if problems.len() > before {
            // The round's operations, to tell what led there.
            for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
                println!("    round {round} log: {line}");
            }
        }
        std::fs::remove_file(&log).ok();
    }
    Ok(Summary {
        backend: options.backend.clone(),
        tally,
        problems,
        elapsed: started.elapsed(),
    })
}

/// Starts a child, lets it run a random while and kills it; returns when
/// it was surely dead, in Unix nanoseconds.
fn kill_one(
    options: &KillOptions,
    child: &impl Fn() -> Command,
    log: &Path,
    seed: u64,
    rng: &mut Rng,
    tally: &mut Tally,
) -> anyhow::Result<i128> {
    let mut command = child();
    command
        .env(ENV_URL, &options.url)
        .env(ENV_SEED, seed.to_string())
        .env(ENV_LOG, log)
        .env(ENV_LAYER, options.max_layer.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut process = command.spawn().context("starting a child")?;
    let stdout = process.stdout.take().context("the child's stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l.contains(workload::READY) => {
                    ready_tx.send(()).ok();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    // One round in ten kills the child while it opens the store.
    if rng.below(10) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(60) as u64));
    } else {
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            process.kill().ok();
            process.wait().ok();
            bail!("the child did not open the store within {READY_TIMEOUT:?}");
        }
        let pause = rng.below(options.max_run_ms.max(1) as usize) as u64;
        std::thread::sleep(Duration::from_millis(pause));
    }
    if process.try_wait()?.is_some() {
        tally.child_errors += 1;
    } else {
        process.kill().context("killing the child")?;
        process.wait()?;
        tally.kills += 1;
    }
    Ok(log::now())
}

/// Applies a round's log to the model, then checks the store.
async fn replay(
    url: &str,
    log: &Path,
    killed_at: i128,
    model: &mut Model,
    tally: &mut Tally,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        // Killed before it wrote anything.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let records = log::read(&text)?;
    let mut loose = model::Loose::default();
    for record in &records {
        model.declare(&record.op);
        match &record.ended {
            Some((at, outcome)) if !matches!(outcome, log::Outcome::Failed(_)) => {
                tally.ops_acked += 1;
                for b in model.apply(record, *at, outcome) {
                    tally.invariant_breaks += 1;
                    problems.push(format!("invariant: {b}"));
                }
            }
            _ => {
                tally.in_flight += 1;
                let w = Window {
                    from: record.begun,
                    to: killed_at,
                };
                loose = model.loose(&record.op, w);
            }
        }
    }
    check::check(url, model, &loose, tally, problems).await
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use imagecache_core::ImageId;
    use imagecache_store::Store;

    use super::log::{Op, Outcome, Record};
    use super::model::{Img, Loose, Model};
    use super::*;

    fn config(n: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"rootfs":{{"type":"layers"}},"comment":"{n}"}}"#
        ))
    }

    /// An image the model holds and the store lacks is lost; one the store
    /// holds that no operation wrote is a broken invariant; names count too.
    #[tokio::test]
    async fn missing_and_unwritten_images_are_counted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("fs://{}", dir.path().join("store").display());
        {
            let backend = imagecache_backends::open(&url).await?;
            let store = Store::open(backend.images()).await?;
            store.create(config(1)).await?;
            store.create(config(3)).await?;
        }
        let mut model = Model::default();
        let img = Img {
            parent: None,
            layers: Vec::new(),
        };
        model
            .images
            .insert(ImageId::of_config(&config(1)), img.clone());
        model.images.insert(ImageId::of_config(&config(2)), img);
        model
            .names
            .insert("kill/loop:1".into(), ImageId::of_config(&config(1)));
        let mut tally = Tally::default();
        let mut problems = Vec::new();
        check::check(
            &url,
            &mut model,
            &Loose::default(),
            &mut tally,
            &mut problems,
        )
        .await?;
        assert_eq!(
            (tally.lost, tally.invariant_breaks),
            (2, 1),
            "{problems:#?}"
        );
        assert_eq!(tally.acked_checked, 1);
        Ok(())
    }

    /// What an interrupted operation may have done is taken as found, and
    /// not counted.
    #[tokio::test]
    async fn an_interrupted_create_is_taken_as_found() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("fs://{}", dir.path().join("store").display());
        {
            let backend = imagecache_backends::open(&url).await?;
            Store::open(backend.images())
                .await?
                .create(config(1))
                .await?;
        }
        let id = ImageId::of_config(&config(1));
        let mut model = Model::default();
        let op = Op::Create {
            id,
            parent: None,
            layers: Vec::new(),
            fresh: None,
        };
        let loose = model.loose(&op, model::Window { from: 0, to: 1 });
        let mut tally = Tally::default();
        let mut problems = Vec::new();
        check::check(&url, &mut model, &loose, &mut tally, &mut problems).await?;
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(model.images.contains_key(&id));
        Ok(())
    }

    /// An interrupted removal may take the compressed copy of a layer
    /// whose own put was interrupted (and then found whole): that copy is
    /// left out of the comparison too.
    #[test]
    fn an_interrupted_removal_loosens_declared_copies() {
        let (c, d) = (
            imagecache_core::Digest::sha256(b"packed"),
            imagecache_core::Digest::sha256(b"tar"),
        );
        let id = ImageId::of_config(&config(1));
        let mut model = Model::default();
        model.declare(&Op::Blob {
            compressed: c,
            diff: d,
        });
        model.blobs.extend([c, d]);
        model.images.insert(
            id,
            Img {
                parent: None,
                layers: vec![d],
            },
        );
        let loose = model.loose(&Op::Delete { id }, model::Window { from: 0, to: 1 });
        assert!(loose.blobs.contains(&d) && loose.blobs.contains(&c));
    }

    /// A collection of dangling images that reports removing a named
    /// image, or an ancestor of one, broke its promise.
    #[test]
    fn a_collection_removing_a_named_lineage_breaks() {
        let (base, top) = (
            ImageId::of_config(&config(1)),
            ImageId::of_config(&config(2)),
        );
        let mut model = Model::default();
        model.images.insert(
            base,
            Img {
                parent: None,
                layers: Vec::new(),
            },
        );
        model.images.insert(
            top,
            Img {
                parent: Some(base),
                layers: Vec::new(),
            },
        );
        model.names.insert("kill/loop:0".into(), top);
        let record = Record {
            op: Op::Gc { all: false },
            begun: 0,
            ended: None,
        };
        let removed_base = Outcome::Collected {
            images: vec![base],
            blobs: Vec::new(),
            leases: Vec::new(),
        };
        let breaks = model.clone().apply(&record, 1, &removed_base);
        assert_eq!(breaks.len(), 2, "{breaks:?}");
        let nothing = Outcome::Collected {
            images: Vec::new(),
            blobs: Vec::new(),
            leases: Vec::new(),
        };
        assert!(model.apply(&record, 1, &nothing).is_empty());
    }
}
