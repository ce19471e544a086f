//! What the persistent backends share about leases: the net lease changes
//! of a batch, and the list that reading stored lease records yields.
//!
//! Each backend stores a lease as the record [`Lease::encode`] writes,
//! under its ID (a file, a table key, an object). A stored record that is
//! not the lease its place names is *damaged*: a load reports it in
//! [`Snapshot::quarantined`](imagecache_core::Snapshot) and lists the other
//! leases, and [`StoreBackend::leases`] refuses with [`Error::Corrupt`]
//! naming it, because a list that silently lacks a lease would let a
//! collector remove what that lease holds. Storing or removing a lease of
//! that ID replaces or removes the damaged record.
//!
//! [`StoreBackend::leases`]: imagecache_core::StoreBackend::leases

use imagecache_core::{Error, Key, Lease, LeaseId, Quarantined};

/// The lease changes of a batch, folded per ID: the last write of an ID
/// wins, exactly as if they were applied in order. (redb needs none: it
/// applies a batch in order inside one transaction.)
#[cfg(any(feature = "fs", feature = "s3"))]
#[derive(Debug, Default)]
pub(crate) struct LeaseEdits {
    /// Leases to store, sorted by ID.
    pub(crate) sets: Vec<Lease>,
    /// Leases to remove, sorted by ID.
    pub(crate) removals: Vec<LeaseId>,
}

#[cfg(any(feature = "fs", feature = "s3"))]
impl LeaseEdits {
    /// The net lease changes of `ops`.
    pub(crate) fn of(ops: &[imagecache_core::WriteOp]) -> Self {
        use imagecache_core::WriteOp;
        let mut last: std::collections::BTreeMap<&LeaseId, Option<&Lease>> =
            std::collections::BTreeMap::new();
        for op in ops {
            match op {
                WriteOp::SetLease(lease) => {
                    last.insert(&lease.id, Some(lease));
                }
                WriteOp::DeleteLease { id } => {
                    last.insert(id, None);
                }
                _ => {}
            }
        }
        let mut edits = Self::default();
        for (id, lease) in last {
            match lease {
                Some(lease) => edits.sets.push(lease.clone()),
                None => edits.removals.push(id.clone()),
            }
        }
        edits
    }
}

/// The leases read from storage, and the records that could not be read.
#[derive(Debug, Default)]
pub(crate) struct LeaseList {
    leases: Vec<Lease>,
    damaged: Vec<Quarantined>,
    /// The first damaged record's error, for [`LeaseList::into_leases`].
    first_error: Option<Error>,
}

impl LeaseList {
    /// Takes in the record stored as lease `id` at `name` (a file, a table
    /// entry, an object key): the lease, or a damaged record when it does
    /// not decode or is another lease's.
    pub(crate) fn add(&mut self, name: &str, id: &LeaseId, data: &[u8]) {
        match Lease::decode(name, data) {
            Ok(lease) if lease.id == *id => self.leases.push(lease),
            Ok(lease) => self.damaged(name, format!("it is the record of lease {}", lease.id)),
            Err(Error::Corrupt { reason, .. }) => self.damaged(name, reason),
            Err(other) => self.damaged(name, other.to_string()),
        }
    }

    /// Records that what is stored at `name` cannot be read as a lease.
    pub(crate) fn damaged(&mut self, name: &str, reason: String) {
        tracing::warn!(record = name, %reason, "lease record is damaged; not listing it");
        self.damaged.push(Quarantined {
            name: name.to_owned(),
            reason: format!(
                "cannot be read as a lease ({reason}); it stays, and listing leases fails, until a lease of its ID replaces or removes it"
            ),
        });
        self.first_error.get_or_insert(Error::Corrupt {
            key: Key::Other(name.to_owned()),
            reason,
            source: None,
        });
    }

    /// Records an entry at `name` whose name no lease ID can have. A load
    /// reports it; `leases` still answers, since no lease can be missing
    /// for it: a lease of that name could not have been stored.
    #[cfg(feature = "redb")]
    pub(crate) fn misnamed(&mut self, name: &str, reason: String) {
        tracing::warn!(record = name, %reason, "lease entry under a name no lease has; not listing it");
        self.damaged.push(Quarantined {
            name: name.to_owned(),
            reason: format!("not a lease ID ({reason}); no lease is stored under it"),
        });
    }

    /// The leases sorted by ID, and the damaged records sorted by name, as
    /// a load reports them.
    pub(crate) fn into_parts(mut self) -> (Vec<Lease>, Vec<Quarantined>) {
        self.leases.sort_by(|a, b| a.id.cmp(&b.id));
        self.damaged.sort_by(|a, b| a.name.cmp(&b.name));
        (self.leases, self.damaged)
    }

    /// The leases sorted by ID, or the error of the first damaged record.
    pub(crate) fn into_leases(self) -> Result<Vec<Lease>, Error> {
        if let Some(e) = self.first_error {
            return Err(e);
        }
        Ok(self.into_parts().0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use imagecache_core::WriteOp;

    use super::*;

    fn lease(id: &str, ttl: u64) -> Lease {
        Lease::new(LeaseId::new(id).unwrap(), Duration::from_secs(ttl))
    }

    #[cfg(any(feature = "fs", feature = "s3"))]
    #[test]
    fn edits_keep_the_last_write_of_each_id() {
        let id = |s: &str| LeaseId::new(s).unwrap();
        let ops = vec![
            WriteOp::SetLease(lease("a", 1)),
            WriteOp::DeleteLease { id: id("a") },
            WriteOp::SetLease(lease("b", 1)),
            WriteOp::DeleteLease { id: id("c") },
            WriteOp::SetLease(lease("c", 2)),
            WriteOp::SetLease(lease("b", 3)),
            WriteOp::DeleteName {
                name: imagecache_core::Reference::parse("x:1").unwrap(),
            },
        ];
        let edits = LeaseEdits::of(&ops);
        let sets: Vec<(&str, Lease)> = edits
            .sets
            .iter()
            .map(|l| (l.id.as_str(), l.clone()))
            .collect();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].0, "b");
        assert_eq!(
            sets[0].1.expires.unix_nanos() - sets[0].1.created.unix_nanos(),
            3_000_000_000
        );
        assert_eq!(sets[1].0, "c");
        assert_eq!(edits.removals, vec![id("a")]);
    }

    #[test]
    fn damaged_records_are_reported_and_refused() {
        let good = lease("good", 60);
        let other = lease("other", 60);
        let mut list = LeaseList::default();
        list.add("x/good", &good.id, &good.encode());
        list.add("x/bad", &LeaseId::new("bad").unwrap(), b"{not json");
        list.add(
            "x/swapped",
            &LeaseId::new("swapped").unwrap(),
            &other.encode(),
        );
        let err = match std::mem::take(&mut list).into_leases() {
            Err(e) => e,
            Ok(leases) => panic!("damaged records must be refused, got {leases:?}"),
        };
        assert!(
            matches!(&err, Error::Corrupt { key: Key::Other(k), .. } if k == "x/bad"),
            "{err:?}"
        );

        let mut list = LeaseList::default();
        list.add("x/good", &good.id, &good.encode());
        list.add(
            "x/swapped",
            &LeaseId::new("swapped").unwrap(),
            &other.encode(),
        );
        list.add("x/bad", &LeaseId::new("bad").unwrap(), b"");
        let (leases, damaged) = list.into_parts();
        assert_eq!(leases, vec![good.clone()]);
        let names: Vec<&str> = damaged.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, vec!["x/bad", "x/swapped"]);
        assert!(
            damaged[1].reason.contains("record of lease other"),
            "{damaged:?}"
        );

        let mut clean = LeaseList::default();
        clean.add("x/good", &good.id, &good.encode());
        assert_eq!(clean.into_leases().unwrap(), vec![good]);
    }
}
