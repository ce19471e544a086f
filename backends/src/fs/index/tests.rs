use super::super::files::Stamp;
use super::*;

fn id(n: u8) -> ImageId {
    ImageId::of_config(&[n])
}

fn stamp(n: i64) -> Token {
    Token::Dir(Stamp {
        ino: 7,
        mtime: n,
        mtime_ns: 1,
        ctime: n,
        ctime_ns: 2,
    })
}

fn update(n: u8, pre: Token, post: Token, key: &str, value: Option<&'static [u8]>) -> Record {
    Record::Update(Update {
        id: id(n),
        put: true,
        pre,
        post,
        changes: vec![(
            MetadataKey::new(key).unwrap(),
            value.map(Bytes::from_static),
        )],
        summary: None,
    })
}

#[test]
fn records_roundtrip_and_survive_damage() {
    let recs = vec![
        update(1, Token::Absent, stamp(1), "parent", Some(b"sha256:x")),
        Record::Remove(id(9)),
        update(2, stamp(3), stamp(4), "custom-key", None),
    ];
    let mut bytes = encode_records(&recs);
    let (back, skipped) = decode_records(&Bytes::from(bytes.clone()));
    assert_eq!(skipped, 0);
    assert_eq!(back.len(), 3);
    // Damage a byte inside the first record's payload: it is skipped,
    // the others are still read.
    bytes[20] ^= 0xff;
    let (back, skipped) = decode_records(&Bytes::from(bytes.clone()));
    assert!(skipped > 0);
    assert_eq!(back.len(), 2);
    assert!(matches!(back[0], Record::Remove(i) if i == id(9)));
    // A torn tail loses only the torn record.
    let cut = bytes.len() - 3;
    let (back, _) = decode_records(&Bytes::from(bytes[..cut].to_vec()));
    assert_eq!(back.len(), 1);
}

#[test]
fn replay_marks_unchained_updates_for_rereading() {
    let mut entries = Entries::default();
    apply(
        &mut entries,
        update(1, Token::Absent, stamp(1), "parent", Some(b"p")),
    );
    let e = &entries[&id(1)];
    assert_eq!(e.token, Some(stamp(1)));
    assert_eq!(e.metadata.len(), 1);
    // Chained: applied.
    apply(
        &mut entries,
        update(1, stamp(1), stamp(2), "builtLocally", Some(b"\x01")),
    );
    assert_eq!(entries[&id(1)].metadata.len(), 2);
    assert_eq!(entries[&id(1)].token, Some(stamp(2)));
    // Not chained (someone changed the directory unrecorded): dirty.
    apply(&mut entries, update(1, stamp(5), stamp(6), "parent", None));
    assert_eq!(entries[&id(1)].token, None);
    apply(&mut entries, Record::Remove(id(1)));
    assert!(entries.is_empty());
}

#[test]
fn an_absent_base_counts_only_for_an_image_without_a_directory() {
    // Two writers both found no metadata directory; the one whose record
    // comes second must not wipe what the first recorded.
    let mut entries = Entries::default();
    apply(
        &mut entries,
        update(1, Token::Absent, stamp(1), "seen-by-a", Some(b"a")),
    );
    apply(
        &mut entries,
        update(1, Token::Absent, stamp(2), "seen-by-b", Some(b"b")),
    );
    assert_eq!(entries[&id(1)].token, None, "marked for re-reading");
    // A marked entry stays marked, whatever comes after.
    apply(
        &mut entries,
        update(1, Token::Absent, stamp(3), "seen-by-c", Some(b"c")),
    );
    assert_eq!(entries[&id(1)].token, None);

    // An image known to have no directory (content only) takes it.
    apply(
        &mut entries,
        update(2, Token::Absent, Token::Absent, "x", None),
    );
    assert_eq!(entries[&id(2)].token, Some(Token::Absent));
    apply(
        &mut entries,
        update(2, Token::Absent, stamp(4), "parent", Some(b"p")),
    );
    assert_eq!(entries[&id(2)].token, Some(stamp(4)));
    assert_eq!(entries[&id(2)].metadata.len(), 1);

    // After a removal the image is unknown again: a new directory is a
    // fresh start.
    apply(&mut entries, Record::Remove(id(2)));
    apply(
        &mut entries,
        update(2, Token::Absent, stamp(5), "builtLocally", Some(b"\x01")),
    );
    let e = &entries[&id(2)];
    assert_eq!(e.token, Some(stamp(5)));
    assert_eq!(e.metadata.len(), 1);
    assert_eq!(e.metadata[0].0.as_str(), "builtLocally");
}

#[test]
fn snapshot_roundtrips_and_detects_damage() {
    let mut entries = Entries::default();
    entries.insert(
        id(1),
        Entry {
            token: Some(stamp(1)),
            content_known: true,
            metadata: vec![(MetadataKey::PARENT, Bytes::from_static(b"sha256:abc"))],
            summary: Some(Bytes::from_static(b"sum")),
        },
    );
    entries.insert(id(2), Entry::default());
    let bytes = encode_snapshot(5, entries.iter());
    let (generation, back) = decode_snapshot(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(generation, 5);
    assert_eq!(back.len(), 2);
    let e = &back[&id(1)];
    assert_eq!(e.token, Some(stamp(1)));
    assert_eq!(e.summary.as_deref(), Some(&b"sum"[..]));
    assert_eq!(e.metadata[0].1, Bytes::from_static(b"sha256:abc"));
    assert_eq!(back[&id(2)].token, None);
    for i in [0, 17, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 1;
        assert!(decode_snapshot(Bytes::from(bad)).is_none(), "flip at {i}");
    }
    assert!(decode_snapshot(Bytes::from(bytes[..bytes.len() - 1].to_vec())).is_none());
}
