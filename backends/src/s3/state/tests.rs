use super::*;

fn id(n: u8) -> ImageId {
    ImageId::of_config(&[n])
}

fn name(nanos: u64) -> RecordName {
    RecordName { nanos, random: 7 }
}

fn key(k: &str) -> MetadataKey {
    MetadataKey::new(k).unwrap_or(MetadataKey::PARENT)
}

fn sample_records() -> Vec<(RecordName, Vec<RecordOp>)> {
    vec![
        (
            name(1),
            vec![
                RecordOp::Put(id(1)),
                RecordOp::SetMetadata(id(1), key("a"), Bytes::from_static(b"1")),
                RecordOp::Put(id(2)),
                RecordOp::SetSummary(id(2), Bytes::from_static(b"s")),
            ],
        ),
        (
            name(2),
            vec![
                RecordOp::SetMetadata(id(1), key("a"), Bytes::from_static(b"2")),
                RecordOp::Delete(id(2)),
                RecordOp::Put(id(3)),
            ],
        ),
        (
            name(3),
            vec![
                RecordOp::Put(id(2)),
                RecordOp::DeleteMetadata(id(1), key("b")),
                RecordOp::Quarantine(id(3), "bad".into()),
            ],
        ),
    ]
}

#[test]
fn merge_is_independent_of_order() {
    let records = sample_records();
    let mut forward = State::default();
    for (n, ops) in records.iter().cloned() {
        forward.apply(n, ops);
    }
    let mut backward = State::default();
    for (n, ops) in records.iter().rev().cloned() {
        backward.apply(n, ops);
    }
    // Applying a record twice changes nothing either.
    let (n, ops) = records[1].clone();
    backward.apply(n, ops);
    assert_eq!(forward, backward);

    let entries: Vec<_> = forward.entries().collect();
    let ids: Vec<_> = entries.iter().map(|e| e.id).collect();
    let mut want = vec![id(1), id(2)];
    want.sort();
    assert_eq!(ids, want);
    let one = entries
        .iter()
        .find(|e| e.id == id(1))
        .map(|e| e.metadata.clone());
    assert_eq!(one, Some(vec![(key("a"), Bytes::from_static(b"2"))]));
    // Re-created after its delete: the old summary stays gone.
    let two = entries
        .iter()
        .find(|e| e.id == id(2))
        .map(|e| e.summary.clone());
    assert_eq!(two, Some(None));
    assert_eq!(
        forward.quarantined().collect::<Vec<_>>(),
        vec![(id(3), "bad")]
    );
}

#[test]
fn index_joins_like_the_records_it_holds() {
    let records = sample_records();
    let mut all = State::default();
    for (n, ops) in records.iter().cloned() {
        all.apply(n, ops);
    }
    let mut first_two = State::default();
    for (n, ops) in records[..2].iter().cloned() {
        first_two.apply(n, ops);
    }
    let index = Index {
        merged: vec![name(1).to_string(), name(2).to_string()],
        state: first_two,
    };
    let decoded = decode_index(&encode_index(&index));
    assert_eq!(decoded.as_ref(), Ok(&index));
    let mut from_index = State::default();
    let (n, ops) = records[2].clone();
    from_index.apply(n, ops);
    from_index.join(index.state);
    assert_eq!(from_index, all);
}

#[test]
fn records_roundtrip_and_damage_is_an_error() {
    for (_, ops) in sample_records() {
        let bytes = encode_record(&ops);
        assert_eq!(decode_record(&bytes), Ok(ops));
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
    assert!(decode_record(&Bytes::from_static(b"ICR1\x01\x09")).is_err());
}

#[test]
fn a_changed_byte_in_a_record_is_an_error() {
    for (_, ops) in sample_records() {
        let bytes = encode_record(&ops).to_vec();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(
                decode_record(&Bytes::from(damaged)).is_err(),
                "flip at {at} of {}",
                bytes.len()
            );
        }
    }
}

#[test]
fn records_without_a_checksum_are_still_read() {
    for (_, ops) in sample_records() {
        let bytes = encode_record(&ops);
        let mut v1 = b"ICR1".to_vec();
        v1.extend_from_slice(&bytes[4..bytes.len() - 4]);
        assert_eq!(decode_record(&Bytes::from(v1)), Ok(ops));
    }
    assert!(decode_index(&Bytes::from_static(b"nope")).is_err());
}

#[test]
fn compaction_forgets_only_old_removals() {
    let mut state = State::default();
    state.apply(
        name(10),
        vec![RecordOp::Put(id(1)), RecordOp::Delete(id(1))],
    );
    state.apply(name(20), vec![RecordOp::Put(id(2))]);
    state.apply(
        name(30),
        vec![RecordOp::Put(id(3)), RecordOp::Delete(id(3))],
    );
    let compacted = state.compacted(25);
    assert!(compacted.image(&id(1)).is_none());
    assert!(compacted.exists(&id(2)));
    assert!(compacted.image(&id(3)).is_some_and(|i| !i.exists()));
}

#[test]
fn names_sort_by_time() {
    let a = RecordName {
        nanos: 9,
        random: u64::MAX,
    };
    let b = RecordName {
        nanos: 10,
        random: 0,
    };
    assert!(a.to_string() < b.to_string());
    assert_eq!(RecordName::parse(&a.to_string()), Some(a));
    assert_eq!(RecordName::parse("123-abc"), None);
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn named_records() -> Vec<(RecordName, Vec<RecordOp>)> {
    vec![
        (
            name(1),
            vec![
                RecordOp::Put(id(1)),
                RecordOp::Put(id(2)),
                RecordOp::SetName(reference("a:1"), id(1)),
                RecordOp::SetName(reference("b:1"), id(2)),
                RecordOp::SetName(reference("moved:1"), id(1)),
            ],
        ),
        (
            name(2),
            vec![
                RecordOp::SetName(reference("moved:1"), id(2)),
                RecordOp::Delete(id(1)),
                RecordOp::SetName(reference("gone:1"), id(2)),
            ],
        ),
        (
            name(3),
            vec![
                // Stored again: the names set before the delete stay gone.
                RecordOp::Put(id(1)),
                RecordOp::DeleteName(reference("gone:1")),
                RecordOp::SetName(reference("after:1"), id(1)),
            ],
        ),
    ]
}

fn listed(state: &State) -> Vec<(String, ImageId)> {
    state
        .names()
        .map(|(n, id)| (n.familiar().to_owned(), id))
        .collect()
}

#[test]
fn names_merge_in_any_order_and_go_with_their_image() {
    let records = named_records();
    let mut forward = State::default();
    for (n, ops) in records.iter().cloned() {
        forward.apply(n, ops);
    }
    let mut backward = State::default();
    for (n, ops) in records.iter().rev().cloned() {
        backward.apply(n, ops);
    }
    assert_eq!(forward, backward);
    let mut want = vec![
        ("after:1".to_owned(), id(1)),
        ("b:1".to_owned(), id(2)),
        ("moved:1".to_owned(), id(2)),
    ];
    want.sort_by_key(|a| reference(&a.0));
    assert_eq!(listed(&forward), want);
}

#[test]
fn records_and_indexes_with_names_roundtrip() {
    for (_, ops) in named_records() {
        let bytes = encode_record(&ops);
        assert_eq!(decode_record(&bytes), Ok(ops));
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
    let mut state = State::default();
    for (n, ops) in named_records() {
        state.apply(n, ops);
    }
    let index = Index {
        merged: vec![name(1).to_string()],
        state,
    };
    let bytes = encode_index(&index);
    assert_eq!(&bytes[..4], b"ICI2");
    assert_eq!(decode_index(&bytes).as_ref(), Ok(&index));
    for cut in 0..bytes.len() {
        assert!(decode_index(&bytes.slice(..cut)).is_err(), "cut at {cut}");
    }
    // Without names the index keeps the format older versions read.
    let plain = Index {
        merged: vec![],
        state: {
            let mut s = State::default();
            s.apply(name(1), vec![RecordOp::Put(id(1))]);
            s
        },
    };
    assert_eq!(&encode_index(&plain)[..4], b"ICI1");
    // A name that is not a valid reference is damage.
    let mut bad = encode_record(&[RecordOp::DeleteName(reference("x:1"))]).to_vec();
    // `docker.io/library/x:1` with an uppercase path.
    // (before the 4-byte checksum, which is made to match again so that
    // the name check itself is what refuses it).
    let at = bad.len() - 4 - 3;
    assert_eq!(bad[at], b'x');
    bad[at] = b'X';
    let body = bad.len() - 4;
    let crc = crc32fast::hash(&bad[..body]);
    bad[body..].copy_from_slice(&crc.to_le_bytes());
    let err = decode_record(&Bytes::from(bad)).unwrap_err();
    assert!(!err.0.contains("checksum"), "{err}");
}

#[test]
fn compaction_turns_dead_names_into_removals_it_can_forget() {
    let mut state = State::default();
    state.apply(
        name(10),
        vec![
            RecordOp::Put(id(1)),
            RecordOp::SetName(reference("dead:1"), id(1)),
            RecordOp::Delete(id(1)),
            RecordOp::Put(id(2)),
            RecordOp::SetName(reference("live:1"), id(2)),
            RecordOp::DeleteName(reference("old-removal:1")),
        ],
    );
    state.apply(
        name(30),
        vec![RecordOp::DeleteName(reference("new-removal:1"))],
    );
    let compacted = state.compacted(25);
    // The image's removal is forgotten, and the dead name with it; storing
    // the image again must not bring the name back.
    assert!(compacted.image(&id(1)).is_none());
    let mut again = compacted.clone();
    again.apply(name(40), vec![RecordOp::Put(id(1))]);
    assert_eq!(listed(&again), vec![("live:1".to_owned(), id(2))]);
    assert!(!compacted.names.contains_key(&reference("old-removal:1")));
    assert!(compacted.names.contains_key(&reference("new-removal:1")));
    // Merged with the records it covers, the index changes nothing.
    let mut joined = state.clone();
    joined.join(compacted.clone());
    assert_eq!(listed(&joined), listed(&state));
}
