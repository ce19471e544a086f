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
