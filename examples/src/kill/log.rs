//! The acknowledgement log: a `begin` line before each operation of the
//! workload and an `end` line once the library call has returned, each
//! written whole and synced before the workload goes on.
//!
//! ```text
//! 7 begin 1765155600123456789 tag kill/loop:3 sha256:…
//! 7 end 1765155600125456789 done
//! ```
//!
//! A `begin` without its `end` is the operation the kill interrupted; a
//! last line without its newline was cut by the kill and is ignored.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use imagecache_core::{Digest, ImageId, LeaseId, LeaseResource, Timestamp};

/// One operation of the workload, as its `begin` line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create an image with this parent and these layers (diff IDs); a
    /// fresh layer (compressed, decompressed) is put first in the same
    /// operation.
    Create {
        id: ImageId,
        parent: Option<ImageId>,
        layers: Vec<Digest>,
        fresh: Option<(Digest, Digest)>,
    },
    /// Put a layer through the blob cache (compressed, decompressed).
    Blob { compressed: Digest, diff: Digest },
    /// Set an image's parent.
    SetParent { id: ImageId, parent: ImageId },
    /// Point a name at an image.
    Tag { name: String, id: ImageId },
    /// Remove a name.
    Untag { name: String },
    /// Remove an image and the blobs only it used.
    Delete { id: ImageId },
    /// Create a lease on these resources.
    Lease {
        id: LeaseId,
        resources: Vec<LeaseResource>,
    },
    /// Renew a lease.
    Renew { id: LeaseId },
    /// Delete a lease.
    Unlease { id: LeaseId },
    /// Collect garbage: dangling images, or every image not held (`all`).
    Gc { all: bool },
}

/// How an operation ended, as its `end` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It did what it said.
    Done,
    /// An image removal: the blobs that went with it.
    Removed(Vec<Digest>),
    /// An image removal refused: this lease holds the image.
    Held(LeaseId),
    /// A lease created or renewed: its expiry, in Unix nanoseconds.
    Expires(i128),
    /// A renewal refused: the lease had expired.
    Expired,
    /// A collection: what it reported removed.
    Collected {
        images: Vec<ImageId>,
        blobs: Vec<Digest>,
        leases: Vec<LeaseId>,
    },
    /// The library call failed unexpectedly; the workload stopped.
    Failed(String),
}

/// One operation with its times (Unix nanoseconds) and, unless it was
/// interrupted, how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) op: Op,
    pub(crate) begun: i128,
    pub(crate) ended: Option<(i128, Outcome)>,
}

/// The writing end, in the workload's process.
#[derive(Debug)]
pub(crate) struct AckLog {
    file: std::fs::File,
    seq: u64,
}

/// Now, in Unix nanoseconds.
pub(crate) fn now() -> i128 {
    Timestamp::now_utc().unix_nanos()
}

impl AckLog {
    /// Creates (or appends to) the log at `path`.
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the acknowledgement log {}", path.display()))?;
        Ok(Self { file, seq: 0 })
    }

    /// Writes and syncs the `begin` line of `op`; returns its number.
    pub(crate) fn begin(&mut self, op: &Op) -> anyhow::Result<u64> {
        self.seq += 1;
        let line = format!("{} begin {} {}\n", self.seq, now(), op_text(op));
        self.write(&line)?;
        Ok(self.seq)
    }

    /// Writes and syncs the `end` line of operation `seq`.
    pub(crate) fn end(&mut self, seq: u64, outcome: &Outcome) -> anyhow::Result<()> {
        let line = format!("{seq} end {} {}\n", now(), outcome_text(outcome));
        self.write(&line)
    }

    fn write(&mut self, line: &str) -> anyhow::Result<()> {
        self.file
            .write_all(line.as_bytes())
            .context("writing the acknowledgement log")?;
        self.file
            .sync_data()
            .context("syncing the acknowledgement log")
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn opt<T: std::fmt::Display>(item: Option<&T>) -> String {
    item.map_or_else(|| "-".into(), ToString::to_string)
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Create {
            id,
            parent,
            layers,
            fresh,
        } => {
            let fresh = fresh.map_or_else(|| "-".into(), |(c, d)| format!("{c},{d}"));
            format!(
                "create {id} {} {} {fresh}",
                opt(parent.as_ref()),
                list(layers)
            )
        }
        Op::Blob { compressed, diff } => format!("blob {compressed} {diff}"),
        Op::SetParent { id, parent } => format!("parent {id} {parent}"),
        Op::Tag { name, id } => format!("tag {name} {id}"),
        Op::Untag { name } => format!("untag {name}"),
        Op::Delete { id } => format!("delete {id}"),
        Op::Lease { id, resources } => format!("lease {} {}", id.as_str(), list(resources)),
        Op::Renew { id } => format!("renew {}", id.as_str()),
        Op::Unlease { id } => format!("unlease {}", id.as_str()),
        Op::Gc { all } => format!("gc {}", if *all { "all" } else { "dangling" }),
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done => "done".into(),
        Outcome::Removed(blobs) => format!("removed {}", list(blobs)),
        Outcome::Held(lease) => format!("held {}", lease.as_str()),
        Outcome::Expires(at) => format!("expires {at}"),
        Outcome::Expired => "expired".into(),
        Outcome::Collected {
            images,
            blobs,
            leases,
        } => {
            let leases: Vec<&str> = leases.iter().map(LeaseId::as_str).collect();
            format!(
                "collected {} {} {}",
                list(images),
                list(blobs),
                list(&leases)
            )
        }
        Outcome::Failed(reason) => format!("failed {}", reason.replace('\n', " ")),
    }
}

/// The words of a line, taken one at a time with a typed error when one
/// is missing.
struct Words<'a>(std::str::SplitWhitespace<'a>);

impl<'a> Words<'a> {
    fn next(&mut self, what: &str) -> anyhow::Result<&'a str> {
        self.0.next().with_context(|| format!("missing {what}"))
    }

    fn list<T>(
        &mut self,
        what: &str,
        parse: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        match self.next(what)? {
            "-" => Ok(Vec::new()),
            words => words.split(',').map(parse).collect(),
        }
    }
}

fn digest(s: &str) -> anyhow::Result<Digest> {
    Ok(Digest::parse(s)?)
}

fn image(s: &str) -> anyhow::Result<ImageId> {
    Ok(ImageId::parse(s)?)
}

fn lease(s: &str) -> anyhow::Result<LeaseId> {
    Ok(LeaseId::new(s)?)
}

fn parse_op(w: &mut Words<'_>) -> anyhow::Result<Op> {
    Ok(match w.next("operation")? {
        "create" => {
            let id = image(w.next("image")?)?;
            let parent = match w.next("parent")? {
                "-" => None,
                p => Some(image(p)?),
            };
            let layers = w.list("layers", digest)?;
            let fresh = match w.list("fresh layer", digest)?.as_slice() {
                [] => None,
                [c, d] => Some((*c, *d)),
                _ => bail!("a fresh layer is two digests"),
            };
            Op::Create {
                id,
                parent,
                layers,
                fresh,
            }
        }
        "blob" => Op::Blob {
            compressed: digest(w.next("compressed digest")?)?,
            diff: digest(w.next("diff ID")?)?,
        },
        "parent" => Op::SetParent {
            id: image(w.next("image")?)?,
            parent: image(w.next("parent")?)?,
        },
        "tag" => Op::Tag {
            name: w.next("name")?.to_owned(),
            id: image(w.next("image")?)?,
        },
        "untag" => Op::Untag {
            name: w.next("name")?.to_owned(),
        },
        "delete" => Op::Delete {
            id: image(w.next("image")?)?,
        },
        "lease" => Op::Lease {
            id: lease(w.next("lease")?)?,
            resources: w.list("resources", |r| Ok(LeaseResource::parse(r)?))?,
        },
        "renew" => Op::Renew {
            id: lease(w.next("lease")?)?,
        },
        "unlease" => Op::Unlease {
            id: lease(w.next("lease")?)?,
        },
        "gc" => Op::Gc {
            all: w.next("policy")? == "all",
        },
        other => bail!("unknown operation {other:?}"),
    })
}

fn parse_outcome(w: &mut Words<'_>) -> anyhow::Result<Outcome> {
    Ok(match w.next("outcome")? {
        "done" => Outcome::Done,
        "removed" => Outcome::Removed(w.list("blobs", digest)?),
        "held" => Outcome::Held(lease(w.next("lease")?)?),
        "expires" => Outcome::Expires(w.next("expiry")?.parse()?),
        "expired" => Outcome::Expired,
        "collected" => Outcome::Collected {
            images: w.list("images", image)?,
            blobs: w.list("blobs", digest)?,
            leases: w.list("leases", lease)?,
        },
        "failed" => Outcome::Failed(w.0.clone().collect::<Vec<_>>().join(" ")),
        other => bail!("unknown outcome {other:?}"),
    })
}

/// Reads a log: every operation begun, in order, with its end if it has one.
///
/// # Errors
/// A line that does not parse, or an `end` that follows no `begin`.
pub(crate) fn read(text: &str) -> anyhow::Result<Vec<Record>> {
    let mut records: Vec<Record> = Vec::new();
    // Whatever follows the last newline was cut by the kill.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    for (n, line) in whole.lines().enumerate() {
        parse_line(line, &mut records).with_context(|| format!("log line {}: {line:?}", n + 1))?;
    }
    Ok(records)
}

fn parse_line(line: &str, records: &mut Vec<Record>) -> anyhow::Result<()> {
    let mut w = Words(line.split_whitespace());
    let seq: usize = w.next("number")?.parse()?;
    let phase = w.next("phase")?;
    let at: i128 = w.next("time")?.parse()?;
    match phase {
        "begin" if seq == records.len() + 1 => records.push(Record {
            op: parse_op(&mut w)?,
            begun: at,
            ended: None,
        }),
        "end" if seq == records.len() && records.last().is_some_and(|r| r.ended.is_none()) => {
            let outcome = parse_outcome(&mut w)?;
            if let Some(last) = records.last_mut() {
                last.ended = Some((at, outcome));
            }
        }
        _ => bail!(
            "{phase} {seq} out of order after {} operations",
            records.len()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_and_a_cut_line_is_ignored() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        let mut log = AckLog::create(&path)?;
        let d = Digest::sha256(b"layer");
        let id = ImageId::of_config(b"{}");
        let ops = [
            Op::Create {
                id,
                parent: None,
                layers: vec![d],
                fresh: Some((d, d)),
            },
            Op::Gc { all: false },
            Op::Delete { id },
        ];
        let outcomes = [
            Outcome::Done,
            Outcome::Collected {
                images: vec![id],
                blobs: vec![],
                leases: vec![LeaseId::new("kill-1")?],
            },
        ];
        for (op, outcome) in ops.iter().zip(&outcomes) {
            let seq = log.begin(op)?;
            log.end(seq, outcome)?;
        }
        log.begin(&ops[2])?;
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str("3 end 12");
        let records = read(&text)?;
        assert_eq!(records.len(), 3);
        for (r, op) in records.iter().zip(&ops) {
            assert_eq!(&r.op, op);
        }
        assert_eq!(records[1].ended.as_ref().map(|e| &e.1), Some(&outcomes[1]));
        assert!(records[2].ended.is_none());
        assert!(read("1 end 5 done\n").is_err());
        Ok(())
    }
}
