//! The `leases` group: leases (what a running build or pull holds) in the
//! [`StoreBackend`] contract, one case per bullet of the trait's
//! `# Behavior of leases` list.
//!
//! Every case reads the leases both ways a backend lists them,
//! [`StoreBackend::leases`] and [`StoreBackend::load`], and fails when the
//! two disagree. Every case takes a fresh backend from the [`Harness`]; the
//! runner skips the group for harnesses whose fixtures keep no images.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imagecache_core::{
    ChainId, Digest, Error, Key, Lease, LeaseId, LeaseResource, MetadataKey, Reference,
    StoreBackend, StoreBackendExt as _, Timestamp, WriteBatch, WriteOp,
};

use crate::check::{Must as _, assert_err, content, id_of};
use crate::{Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __leases_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) leases [
            leases_set_then_list,
            leases_set_existing_replaces,
            leases_delete_removes_it,
            leases_delete_missing_is_ok,
            leases_need_no_content,
            leases_expired_are_listed,
            leases_with_images_in_one_batch,
            leases_second_handle_sees_them,
            leases_are_sorted,
        ] }
    };
}

/// Every case of the group, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__leases_cases!(__case_registry!());

type Backend = Arc<dyn StoreBackend>;

/// A lease ID the case spells correctly.
#[track_caller]
fn lease_id(s: &str) -> LeaseId {
    LeaseId::new(s).must(format_args!("lease ID {s:?}"))
}

/// An instant with nanoseconds and a UTC offset, so that a backend that
/// rounds times or drops offsets is caught.
#[track_caller]
fn at(unix_secs: i64, nanos: u32, offset_secs: i32) -> Timestamp {
    Timestamp::from_parts(unix_secs, nanos, offset_secs).must(format_args!(
        "timestamp {unix_secs}.{nanos:09} {offset_secs:+}"
    ))
}

/// A lease created at `created` and expiring at `expires`, with `labels`
/// and `resources`.
fn lease(
    id: &str,
    created: Timestamp,
    expires: Timestamp,
    labels: &[(&str, &str)],
    resources: &[LeaseResource],
) -> Lease {
    Lease {
        id: lease_id(id),
        created,
        expires,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        resources: resources.iter().copied().collect::<BTreeSet<_>>(),
    }
}

/// A lease that expires an hour from now, holding `resources`.
fn live(id: &str, resources: &[LeaseResource]) -> Lease {
    let now = Timestamp::now_utc();
    let expires = Timestamp::from_unix_nanos(now.unix_nanos() + 3_600_000_000_000);
    lease(id, now, expires, &[], resources)
}

/// A blob digest made from `seed`.
fn blob(seed: &str) -> Digest {
    Digest::sha256(seed.as_bytes())
}

/// A layer chain ID made from `seed`.
#[track_caller]
fn layer(seed: &str) -> ChainId {
    ChainId::parse(&Digest::sha256(seed.as_bytes()).to_string())
        .must(format_args!("chain ID from {seed:?}"))
}

async fn write(b: &Backend, ops: Vec<WriteOp>, what: &str) {
    b.write(WriteBatch::from(ops)).await.must(what);
}

async fn set(b: &Backend, l: &Lease) {
    b.set_lease(l.clone())
        .await
        .must(format_args!("set_lease {}", l.id));
}

async fn delete(b: &Backend, id: &str) {
    b.delete_lease(&lease_id(id))
        .await
        .must(format_args!("delete_lease {id}"));
}

/// The leases as `leases` lists them, after checking that load lists the
/// same.
async fn listed(b: &Backend, what: &str) -> Vec<Lease> {
    let direct = b.leases().await.must(format_args!("leases {what}"));
    let loaded = b.load().await.must(format_args!("load {what}")).leases;
    assert_eq!(
        loaded, direct,
        "load and leases must list the same leases {what}"
    );
    direct
}

/// Fails unless `got` is exactly `want`, sorted by ID.
#[track_caller]
fn assert_leases(got: &[Lease], want: &[&Lease], what: &str) {
    let mut want: Vec<Lease> = want.iter().map(|l| (*l).clone()).collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want.as_slice(), "leases listed {what}");
}

/// A stored lease is listed by `leases` and by load with every field as
/// written.
pub async fn leases_set_then_list(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    assert_leases(&listed(&b, "on a new store").await, &[], "on a new store");

    let full = lease(
        "build-42",
        at(1_700_000_000, 123_456_789, 2 * 3600),
        at(1_700_086_400, 1, -(5 * 3600 + 30 * 60)),
        &[
            ("owner", "ci"),
            ("purpose", "pull of docker.io/library/busybox:latest"),
            ("empty", ""),
            ("unicode ✓", "välue with \"quotes\" and \\ and\nnewline"),
        ],
        &[
            LeaseResource::Image(id_of("held image")),
            LeaseResource::Layer(layer("held layer")),
            LeaseResource::Blob(blob("held blob")),
            LeaseResource::Blob(blob("another held blob")),
        ],
    );
    set(&b, &full).await;
    assert_leases(
        &listed(&b, "after one set").await,
        &[&full],
        "after one set",
    );

    // A lease that holds nothing and has no labels is a lease too.
    let bare = lease("bare", at(0, 0, 0), at(1, 500_000_000, 0), &[], &[]);
    set(&b, &bare).await;
    assert_leases(
        &listed(&b, "after a second set").await,
        &[&full, &bare],
        "after a second set",
    );
    let snapshot = b.load().await.must("load after the sets");
    assert!(
        snapshot.images.is_empty() && snapshot.names.is_empty(),
        "a lease adds no image and no name: {snapshot:?}"
    );
    Outcome::Passed
}

/// Storing a lease under a stored ID replaces it whole (expiry, labels,
/// resources).
pub async fn leases_set_existing_replaces(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let first = lease(
        "renewed",
        at(1_700_000_000, 0, 0),
        at(1_700_000_060, 0, 0),
        &[("old", "label"), ("kept", "old value")],
        &[
            LeaseResource::Image(id_of("old image")),
            LeaseResource::Blob(blob("old blob")),
        ],
    );
    let other = live("other", &[LeaseResource::Blob(blob("other"))]);
    set(&b, &first).await;
    set(&b, &other).await;

    let second = lease(
        "renewed",
        at(1_700_000_030, 0, 0),
        at(1_700_003_600, 999, 0),
        &[("kept", "new value"), ("new", "label")],
        &[LeaseResource::Layer(layer("new layer"))],
    );
    set(&b, &second).await;
    assert_leases(
        &listed(&b, "after storing under the same ID").await,
        &[&second, &other],
        "after storing under the same ID (nothing of the old lease may remain)",
    );

    // Replaced by one that holds nothing: the resources go too.
    let emptied = lease("renewed", second.created, second.expires, &[], &[]);
    set(&b, &emptied).await;
    assert_leases(
        &listed(&b, "after emptying").await,
        &[&emptied, &other],
        "after replacing with a lease that holds nothing",
    );

    // Within one batch the last write of an ID wins.
    let last = live("renewed", &[LeaseResource::Blob(blob("last"))]);
    write(
        &b,
        vec![
            WriteOp::SetLease(first.clone()),
            WriteOp::SetLease(second.clone()),
            WriteOp::SetLease(last.clone()),
        ],
        "a batch storing one ID three times",
    )
    .await;
    assert_leases(
        &listed(&b, "after the batch").await,
        &[&last, &other],
        "after a batch whose last write wins",
    );
    Outcome::Passed
}

/// A removed lease is no longer listed; the other leases stay.
pub async fn leases_delete_removes_it(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = live("a", &[LeaseResource::Blob(blob("a"))]);
    let gone = live("gone", &[LeaseResource::Blob(blob("gone"))]);
    let c = live("c", &[]);
    for l in [&a, &gone, &c] {
        set(&b, l).await;
    }
    delete(&b, "gone").await;
    assert_leases(
        &listed(&b, "after delete_lease").await,
        &[&a, &c],
        "after removing one lease",
    );

    // Set and removed in one batch: not listed. Removed and set again:
    // listed as set.
    let brief = live("brief", &[]);
    let back = live("a", &[LeaseResource::Blob(blob("a again"))]);
    write(
        &b,
        vec![
            WriteOp::SetLease(brief),
            WriteOp::DeleteLease {
                id: lease_id("brief"),
            },
            WriteOp::DeleteLease { id: lease_id("a") },
            WriteOp::SetLease(back.clone()),
        ],
        "a batch setting, removing and setting again",
    )
    .await;
    assert_leases(
        &listed(&b, "after the ordered batch").await,
        &[&back, &c],
        "after a batch whose operations apply in order",
    );

    delete(&b, "a").await;
    delete(&b, "c").await;
    assert_leases(
        &listed(&b, "after removing all").await,
        &[],
        "after removing every lease",
    );
    Outcome::Passed
}

/// Removing a lease that is not stored succeeds.
pub async fn leases_delete_missing_is_ok(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    delete(&b, "never-stored").await;
    let kept = live("kept", &[LeaseResource::Blob(blob("kept"))]);
    set(&b, &kept).await;
    delete(&b, "never-stored").await;
    write(
        &b,
        vec![
            WriteOp::DeleteLease {
                id: lease_id("absent"),
            },
            WriteOp::DeleteLease {
                id: lease_id("absent"),
            },
        ],
        "a batch removing an absent lease twice",
    )
    .await;
    assert_leases(
        &listed(&b, "after removing absent leases").await,
        &[&kept],
        "after removing absent leases",
    );
    delete(&b, "kept").await;
    delete(&b, "kept").await;
    assert_leases(
        &listed(&b, "after removing twice").await,
        &[],
        "after removing a lease twice",
    );
    Outcome::Passed
}

/// A lease may hold images and blobs that are not stored, and deleting an
/// image it holds leaves the lease as it was.
pub async fn leases_need_no_content(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let future = live(
        "pull-in-progress",
        &[
            LeaseResource::Image(id_of("not stored yet")),
            LeaseResource::Layer(layer("not stored yet")),
            LeaseResource::Blob(blob("not stored yet")),
        ],
    );
    set(&b, &future).await;
    assert_leases(
        &listed(&b, "holding nothing stored").await,
        &[&future],
        "for a lease on what is not stored",
    );
    assert!(
        b.load().await.must("load").images.is_empty(),
        "a lease must not create the images it holds"
    );

    // The image arrives, is named, then deleted; another is quarantined.
    let c = content("not stored yet");
    let id = c.id();
    let q = content("quarantined while held");
    let q_id = q.id();
    let holder = live(
        "holder",
        &[LeaseResource::Image(id), LeaseResource::Image(q_id)],
    );
    set(&b, &holder).await;
    let n = Reference::parse("held:latest").must("reference");
    write(
        &b,
        vec![
            WriteOp::Put(c),
            WriteOp::Put(q),
            WriteOp::SetName { name: n, id },
        ],
        "storing the held images",
    )
    .await;
    b.delete(&id).await.must("delete of a held image");
    write(
        &b,
        vec![WriteOp::Quarantine {
            id: q_id,
            reason: "damaged while held".into(),
        }],
        "quarantine of a held image",
    )
    .await;
    assert_leases(
        &listed(&b, "after deleting what they hold").await,
        &[&future, &holder],
        "after deleting and quarantining held images",
    );
    Outcome::Passed
}

/// An expired lease is listed as stored until it is removed.
pub async fn leases_expired_are_listed(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let long_gone = lease(
        "expired-2020",
        at(1_577_836_800, 0, 0),
        at(1_577_840_400, 250, 0),
        &[("state", "expired")],
        &[LeaseResource::Blob(blob("expired"))],
    );
    // Expired the moment it was made.
    let instant = {
        let now = Timestamp::now_utc();
        lease(
            "zero-ttl",
            now,
            now,
            &[],
            &[LeaseResource::Image(id_of("x"))],
        )
    };
    let current = live("current", &[]);
    for l in [&long_gone, &instant, &current] {
        set(&b, l).await;
    }
    let now = Timestamp::now_utc();
    assert!(!long_gone.is_live(now) && !instant.is_live(now) && current.is_live(now));
    assert_leases(
        &listed(&b, "with expired leases").await,
        &[&long_gone, &instant, &current],
        "with expired leases (a backend never drops one on its own)",
    );
    // Other writes do not sweep them either.
    let c = content("unrelated write");
    write(&b, vec![WriteOp::Put(c)], "an unrelated write").await;
    assert_leases(
        &listed(&b, "after an unrelated write").await,
        &[&long_gone, &instant, &current],
        "after an unrelated write",
    );
    delete(&b, "expired-2020").await;
    assert_leases(
        &listed(&b, "after removing an expired lease").await,
        &[&instant, &current],
        "after removing an expired lease",
    );
    Outcome::Passed
}

/// Leases, content and names may arrive in one batch; a batch refused for
/// another operation stores no lease.
pub async fn leases_with_images_in_one_batch(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let c = content("arrives leased");
    let id = c.id();
    let n = Reference::parse("leased:1").must("reference");
    let held = live("with-images", &[LeaseResource::Image(id)]);
    write(
        &b,
        vec![
            WriteOp::SetLease(held.clone()),
            WriteOp::Put(c),
            WriteOp::SetName {
                name: n.clone(),
                id,
            },
        ],
        "a batch of a lease, content and a name",
    )
    .await;
    let snapshot = b.load().await.must("load after the mixed batch");
    assert_eq!(
        snapshot.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id],
        "the batch's image"
    );
    assert_eq!(snapshot.names, vec![(n.clone(), id)], "the batch's name");
    assert_leases(
        &listed(&b, "after the mixed batch").await,
        &[&held],
        "after a batch of a lease, content and a name",
    );

    // Refused batches: a lease set or removed before or after the bad
    // operation is refused with it.
    let missing = id_of("never stored");
    let refused = live("refused", &[LeaseResource::Image(missing)]);
    let replacement = live("with-images", &[]);
    let bad = || WriteOp::SetMetadata {
        id: missing,
        key: MetadataKey::PARENT,
        value: id.to_string().into(),
    };
    for (ops, what) in [
        (
            vec![WriteOp::SetLease(refused.clone()), bad()],
            "a lease before the bad operation",
        ),
        (
            vec![bad(), WriteOp::SetLease(refused.clone())],
            "a lease after the bad operation",
        ),
        (
            vec![
                WriteOp::DeleteLease {
                    id: held.id.clone(),
                },
                WriteOp::SetLease(replacement.clone()),
                WriteOp::Put(content("refused too")),
                WriteOp::SetName {
                    name: n.clone(),
                    id: missing,
                },
            ],
            "a lease removal and replacement with a bad name",
        ),
    ] {
        assert_err!(
            b.write(WriteBatch::from(ops)).await,
            Error::NotFound { key: Key::Image(k) } if *k == missing,
            "{what}"
        );
        assert_leases(
            &listed(&b, what).await,
            &[&held],
            &format!("after a refused batch with {what}"),
        );
    }
    let snapshot = b.load().await.must("load after refused batches");
    assert_eq!(
        snapshot.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id],
        "refused batches must store no image"
    );
    Outcome::Passed
}

/// (`shared` or `persistent`) A new handle on the same location lists the
/// leases stored before.
pub async fn leases_second_handle_sees_them(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "leases_second_handle_sees_them";
    let (fixture, first) = crate::images(&h).await;
    let caps = first.capabilities();
    let one = live("one", &[LeaseResource::Blob(blob("one"))]);
    set(&first, &one).await;

    let Some(second) = crate::reopen_images(&*fixture).await else {
        let reason = if caps.shared || caps.persistent {
            "the harness cannot open a second handle, although the backend is shared or persistent"
        } else {
            "capability `shared` or `persistent` is not set and the harness cannot reopen"
        };
        return Outcome::skipped(CASE, reason);
    };
    assert_leases(
        &listed(&second, "through the second handle").await,
        &[&one],
        "through a second handle",
    );

    // Both ways, each seen by the other's next `leases` with no load in
    // between, and neither handle loses the other's leases.
    let two = live("two", &[]);
    set(&second, &two).await;
    assert_leases(
        &first.leases().await.must("leases through the first handle"),
        &[&one, &two],
        "through the first handle right after a set through the second",
    );
    let three = live("three", &[LeaseResource::Image(id_of("three"))]);
    set(&first, &three).await;
    for (which, b) in [("first", &first), ("second", &second)] {
        assert_leases(
            &listed(b, "after sets through both handles").await,
            &[&one, &two, &three],
            &format!("through the {which} handle after sets through both"),
        );
    }
    // A renewal and a removal through one handle, seen by the other.
    let renewed = live("one", &[LeaseResource::Blob(blob("renewed"))]);
    set(&second, &renewed).await;
    delete(&second, "two").await;
    assert_leases(
        &first
            .leases()
            .await
            .must("leases after a renewal elsewhere"),
        &[&renewed, &three],
        "through the first handle after a renewal and a removal through the second",
    );
    Outcome::Passed
}

/// Leases are listed sorted by ID, however they were written.
pub async fn leases_are_sorted(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    // Byte order of the IDs, which is neither the order of file names
    // with a suffix (`a-b.json` < `a.json`) nor a case-blind order.
    let one_by_one = [
        "zeta", "a", "Zulu", "a-b", "0", "a.b", "_x", "a_b", "B", "ab",
    ];
    let mut stored = Vec::new();
    for id in one_by_one {
        let l = live(id, &[LeaseResource::Blob(blob(id))]);
        set(&b, &l).await;
        stored.push(l);
    }
    let mut batch = WriteBatch::new();
    for id in ["m3", "m2", "m1", "9", "-dash"] {
        let l = live(id, &[]);
        batch.set_lease(l.clone());
        stored.push(l);
    }
    b.write(batch)
        .await
        .must("a batch of leases in reverse order");

    let got = listed(&b, "after many leases").await;
    let ids: Vec<&str> = got.iter().map(|l| l.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "leases must be listed sorted by ID");
    let want: Vec<&Lease> = stored.iter().collect();
    assert_leases(&got, &want, "after many leases");
    Outcome::Passed
}
