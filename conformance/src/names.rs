//! The `names` group: names (`busybox:latest` → image ID) in the
//! [`StoreBackend`] contract, one case per bullet of the trait's
//! `# Behavior of names` list.
//!
//! Every case takes a fresh backend from the [`Harness`]; the runner skips
//! the group for harnesses whose fixtures keep no images.

use std::sync::Arc;

use imagecache_core::{
    Error, ImageId, Key, Reference, Snapshot, StoreBackend, StoreBackendExt as _, WriteBatch,
    WriteOp,
};

use crate::check::{Must as _, assert_err, content, id_of};
use crate::{Harness, Outcome};

/// Lists the cases of this group for the macros: `$then!{ (args) group [names] }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __names_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) names [
            names_set_then_load_lists_it,
            names_set_existing_moves_it,
            names_delete_removes_it,
            names_delete_missing_is_ok,
            names_require_content,
            names_in_same_batch_as_content,
            names_go_with_their_image,
            names_second_handle_sees_them,
            names_are_sorted,
        ] }
    };
}

/// Every case of the group, for [`crate::cases`].
pub(crate) const CASES: &[crate::Case] = crate::__names_cases!(__case_registry!());

type Backend = Arc<dyn StoreBackend>;

/// A reference the case spells correctly.
#[track_caller]
fn name(s: &str) -> Reference {
    Reference::parse(s).must(format_args!("parse of the reference {s:?}"))
}

/// A digest reference to `repo`, pinned to a digest made from `seed`.
fn pinned(repo: &str, seed: &str) -> Reference {
    name(&format!("{repo}@{}", id_of(seed)))
}

async fn write(b: &Backend, ops: Vec<WriteOp>, what: &str) {
    b.write(WriteBatch::from(ops)).await.must(what);
}

async fn put(b: &Backend, tag: &str) -> ImageId {
    let c = content(tag);
    let id = c.id();
    write(b, vec![WriteOp::Put(c)], &format!("put of config {tag:?}")).await;
    id
}

async fn set(b: &Backend, n: &Reference, id: ImageId) {
    b.set_name(n, &id)
        .await
        .must(format_args!("set_name {n} → {id}"));
}

async fn load(b: &Backend, what: &str) -> Snapshot {
    b.load().await.must(format_args!("load {what}"))
}

/// Fails unless the snapshot lists exactly `expected` (in any order given
/// here; the snapshot itself must be sorted).
#[track_caller]
fn assert_names(snapshot: &Snapshot, expected: &[(&Reference, ImageId)], what: &str) {
    let mut want: Vec<(Reference, ImageId)> =
        expected.iter().map(|(n, id)| ((*n).clone(), *id)).collect();
    want.sort();
    assert_eq!(snapshot.names, want, "names listed by load {what}");
}

/// A name set on a stored image is listed by load with that image.
pub async fn names_set_then_load_lists_it(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put(&b, "named").await;
    let latest = name("busybox:latest");
    set(&b, &latest, a).await;

    let snapshot = load(&b, "after set_name").await;
    assert_names(&snapshot, &[(&latest, a)], "after one set_name");
    assert_eq!(
        snapshot.name(&name("docker.io/library/busybox:latest")),
        Some(a),
        "the full and the familiar spelling are the same name"
    );
    assert_eq!(
        snapshot.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a],
        "a name adds no image"
    );

    // Several names may point at one image, tags and digests alike.
    let other = name("ghcr.io/org/app:v1");
    let digest = pinned("busybox", "manifest");
    write(
        &b,
        vec![
            WriteOp::SetName {
                name: other.clone(),
                id: a,
            },
            WriteOp::SetName {
                name: digest.clone(),
                id: a,
            },
        ],
        "a batch of two names",
    )
    .await;
    let snapshot = load(&b, "after three names").await;
    assert_names(
        &snapshot,
        &[(&latest, a), (&other, a), (&digest, a)],
        "after three names on one image",
    );
    Outcome::Passed
}

/// Setting a name that is set already points it at the new image only.
pub async fn names_set_existing_moves_it(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put(&b, "old").await;
    let c = put(&b, "new").await;
    let moving = name("app:latest");
    let staying = name("app:1.0");
    set(&b, &moving, a).await;
    set(&b, &staying, a).await;
    // Setting a name to the image it points at already changes nothing.
    set(&b, &moving, a).await;
    assert_names(
        &load(&b, "before the move").await,
        &[(&moving, a), (&staying, a)],
        "before the move",
    );

    set(&b, &moving, c).await;
    let snapshot = load(&b, "after the move").await;
    assert_names(
        &snapshot,
        &[(&moving, c), (&staying, a)],
        "after moving one name",
    );
    // Within one batch the last write of a name wins.
    write(
        &b,
        vec![
            WriteOp::SetName {
                name: staying.clone(),
                id: c,
            },
            WriteOp::SetName {
                name: staying.clone(),
                id: a,
            },
            WriteOp::SetName {
                name: moving.clone(),
                id: a,
            },
        ],
        "a batch moving names back and forth",
    )
    .await;
    assert_names(
        &load(&b, "after the batch").await,
        &[(&moving, a), (&staying, a)],
        "after a batch whose last writes win",
    );
    Outcome::Passed
}

/// A removed name is no longer listed; the image and its other names stay.
pub async fn names_delete_removes_it(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put(&b, "image").await;
    let gone = name("repo/app:gone");
    let kept = name("repo/app:kept");
    set(&b, &gone, a).await;
    set(&b, &kept, a).await;

    b.delete_name(&gone).await.must("delete_name");
    let snapshot = load(&b, "after delete_name").await;
    assert_names(&snapshot, &[(&kept, a)], "after removing one name");
    assert_eq!(
        snapshot.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a],
        "removing a name must leave its image"
    );
    assert_eq!(
        b.get(&a).await.must("get after delete_name"),
        crate::check::config("image")
    );

    // Set and removed in one batch: not listed.
    let brief = name("repo/app:brief");
    write(
        &b,
        vec![
            WriteOp::SetName {
                name: brief.clone(),
                id: a,
            },
            WriteOp::DeleteName { name: brief },
        ],
        "a batch setting and removing a name",
    )
    .await;
    assert_names(
        &load(&b, "after set and remove in one batch").await,
        &[(&kept, a)],
        "after a name set and removed in one batch",
    );
    Outcome::Passed
}

/// Removing a name that is not set succeeds.
pub async fn names_delete_missing_is_ok(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let absent = name("nothing:here");
    b.delete_name(&absent)
        .await
        .must("delete_name on an empty store");
    let a = put(&b, "image").await;
    let kept = name("something:here");
    set(&b, &kept, a).await;
    b.delete_name(&absent)
        .await
        .must("delete_name of a name never set");
    write(
        &b,
        vec![
            WriteOp::DeleteName {
                name: absent.clone(),
            },
            WriteOp::DeleteName { name: absent },
        ],
        "a batch removing an unset name twice",
    )
    .await;
    b.delete_name(&kept).await.must("delete_name");
    b.delete_name(&kept)
        .await
        .must("second delete_name of the same name");
    let snapshot = load(&b, "after removals").await;
    assert_names(&snapshot, &[], "after removing every name");
    assert_eq!(snapshot.images.len(), 1, "the image must stay");
    Outcome::Passed
}

/// A name for an image with no content is `NotFound` and the batch writes
/// nothing.
pub async fn names_require_content(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let missing = id_of("never stored");
    let n = name("orphan:latest");
    assert_err!(
        b.set_name(&n, &missing).await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "set_name for an image with no content"
    );

    // Valid operations before the bad one are refused with it.
    let stored = put(&b, "stored").await;
    let fresh = content("fresh");
    let fresh_id = fresh.id();
    let before = name("before:latest");
    assert_err!(
        b.write(WriteBatch::from(vec![
            WriteOp::Put(fresh),
            WriteOp::SetName {
                name: before.clone(),
                id: stored,
            },
            WriteOp::SetName {
                name: n.clone(),
                id: missing,
            },
        ]))
        .await,
        Error::NotFound { key: Key::Image(k) } if *k == missing,
        "a batch naming an absent image"
    );
    // A name for an image the batch deletes before naming it.
    assert_err!(
        b.write(WriteBatch::from(vec![
            WriteOp::Delete { id: stored },
            WriteOp::SetName {
                name: before.clone(),
                id: stored,
            },
        ]))
        .await,
        Error::NotFound { key: Key::Image(k) } if *k == stored,
        "a batch naming an image it deleted"
    );

    let snapshot = load(&b, "after refused batches").await;
    assert_names(&snapshot, &[], "after refused batches");
    let ids: Vec<ImageId> = snapshot.images.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        vec![stored],
        "a refused batch must store nothing (not {fresh_id}) and delete nothing"
    );
    Outcome::Passed
}

/// Content and its names may arrive in one batch.
pub async fn names_in_same_batch_as_content(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let c = content("arrives named");
    let id = c.id();
    let tag = name("registry.example.com:5000/team/app:2024");
    let digest = pinned("registry.example.com:5000/team/app", "its manifest");
    write(
        &b,
        vec![
            WriteOp::Put(c),
            WriteOp::SetName {
                name: tag.clone(),
                id,
            },
            WriteOp::SetName {
                name: digest.clone(),
                id,
            },
        ],
        "a batch of content and its names",
    )
    .await;
    let snapshot = load(&b, "after content and names in one batch").await;
    assert_names(&snapshot, &[(&tag, id), (&digest, id)], "after one batch");
    assert_eq!(
        snapshot.images.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id]
    );
    Outcome::Passed
}

/// Deleting or quarantining an image removes its names, and storing it
/// again does not bring them back.
pub async fn names_go_with_their_image(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let a = put(&b, "deleted").await;
    let q = put(&b, "quarantined").await;
    let k = put(&b, "kept").await;
    let (a1, a2) = (name("a:1"), pinned("a", "a's manifest"));
    let q1 = name("q:1");
    let k1 = name("k:1");
    for (n, id) in [(&a1, a), (&a2, a), (&q1, q), (&k1, k)] {
        set(&b, n, id).await;
    }

    b.delete(&a).await.must("delete of a named image");
    assert_names(
        &load(&b, "after delete").await,
        &[(&q1, q), (&k1, k)],
        "after deleting an image",
    );
    write(
        &b,
        vec![WriteOp::Quarantine {
            id: q,
            reason: "damaged".into(),
        }],
        "quarantine of a named image",
    )
    .await;
    assert_names(
        &load(&b, "after quarantine").await,
        &[(&k1, k)],
        "after quarantining an image",
    );

    // The same content stored again is a new image with no names.
    put(&b, "deleted").await;
    put(&b, "quarantined").await;
    assert_names(
        &load(&b, "after storing the images again").await,
        &[(&k1, k)],
        "after storing deleted and quarantined images again",
    );

    // In one batch, operations apply in order: a name set before the
    // delete goes with it, a name set after the image is stored again stays.
    let before = name("a:before");
    let after = name("a:after");
    write(
        &b,
        vec![
            WriteOp::SetName {
                name: before.clone(),
                id: a,
            },
            WriteOp::Delete { id: a },
            WriteOp::Put(content("deleted")),
            WriteOp::SetName {
                name: after.clone(),
                id: a,
            },
        ],
        "a batch naming, deleting, storing and naming again",
    )
    .await;
    assert_names(
        &load(&b, "after the ordered batch").await,
        &[(&after, a), (&k1, k)],
        "after a batch whose operations apply in order",
    );
    Outcome::Passed
}

/// (`shared` or `persistent`) A new handle on the same location lists the
/// names set before.
pub async fn names_second_handle_sees_them(h: Arc<dyn Harness>) -> Outcome {
    const CASE: &str = "names_second_handle_sees_them";
    let (fixture, first) = crate::images(&h).await;
    let caps = first.capabilities();
    let a = put(&first, "shared").await;
    let one = name("shared:one");
    set(&first, &one, a).await;

    let Some(second) = crate::reopen_images(&*fixture).await else {
        let reason = if caps.shared || caps.persistent {
            "the harness cannot open a second handle, although the backend is shared or persistent"
        } else {
            "capability `shared` or `persistent` is not set and the harness cannot reopen"
        };
        return Outcome::skipped(CASE, reason);
    };
    assert_names(
        &load(&second, "through the second handle").await,
        &[(&one, a)],
        "through a second handle",
    );

    // Both ways, and neither handle loses the other's names.
    let two = name("shared:two");
    set(&second, &two, a).await;
    let three = name("shared:three");
    set(&first, &three, a).await;
    for (which, b) in [("first", &first), ("second", &second)] {
        assert_names(
            &load(b, "after writes through both handles").await,
            &[(&one, a), (&two, a), (&three, a)],
            &format!("through the {which} handle after writes through both"),
        );
    }
    second
        .delete_name(&one)
        .await
        .must("delete_name through the second handle");
    assert_names(
        &load(&first, "after a removal through the second handle").await,
        &[(&two, a), (&three, a)],
        "through the first handle after a removal through the second",
    );
    Outcome::Passed
}

/// Load lists names sorted by their full form, however they were written.
pub async fn names_are_sorted(h: Arc<dyn Harness>) -> Outcome {
    let (_fixture, b) = crate::images(&h).await;
    let ids = [put(&b, "x").await, put(&b, "y").await, put(&b, "z").await];
    let spellings = [
        "ubuntu:22.04",
        "quay.io/org/tool:1",
        "busybox",
        "docker.io/library/alpine:3.20",
        "user/app:latest",
        "localhost:5000/app:dev",
        "busybox:1.36",
        "index.docker.io/library/debian:12",
        "ghcr.io/org/app:v1",
        "a:z",
    ];
    let mut expected = Vec::new();
    // Written one at a time, in the order above, to images in turn.
    for (i, s) in spellings.iter().enumerate() {
        let n = name(s);
        let id = ids[i % ids.len()];
        set(&b, &n, id).await;
        expected.push((n, id));
    }
    // And some in one batch, in reverse order.
    let pinned_names: Vec<Reference> = ["zeta", "alpha", "mid/dle"]
        .iter()
        .map(|repo| pinned(repo, repo))
        .collect();
    let mut batch = WriteBatch::new();
    for n in pinned_names.iter().rev() {
        batch.set_name(n.clone(), ids[0]);
        expected.push((n.clone(), ids[0]));
    }
    b.write(batch)
        .await
        .must("a batch of names in reverse order");

    expected.sort();
    let snapshot = load(&b, "after many names").await;
    let listed: Vec<&str> = snapshot.names.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(listed, sorted, "names must be listed sorted by full form");
    assert_eq!(snapshot.names, expected, "every name with its image");
    Outcome::Passed
}
