//! Prefix search over image IDs, with Docker's rules for what a term means.

use std::collections::BTreeSet;

use imagecache_core::ImageId;

use crate::error::{Error, Result};

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Whether the hex form of `id` starts with `prefix` (lowercase hex digits).
fn has_prefix(id: &ImageId, prefix: &[u8]) -> bool {
    let bytes = id.to_bytes();
    prefix.iter().enumerate().all(|(i, &c)| {
        let b = bytes[i / 2];
        let n = if i % 2 == 0 { b >> 4 } else { b & 0xf };
        nibble(c) == Some(n)
    })
}

/// Splits a term the way Docker's digest set does: a term that parses as a
/// digest apart from its length (`sha256:8d25a9`) is an algorithm plus a
/// hex prefix; anything else that is not a digest (`8d25a9`, `sha256:`,
/// `i_dont_exist`) is a bare prefix of the hex, matched with no algorithm.
fn split_term(term: &str) -> (Option<&str>, &str) {
    let Some(i) = term.find(':') else {
        return (None, term);
    };
    if i == 0 || i + 1 == term.len() {
        return (None, term);
    }
    let (alg, hex) = (&term[..i], &term[i + 1..]);
    let full_len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        // An algorithm Docker does not know still names an algorithm if the
        // whole term is shaped like a digest; it then matches nothing here.
        _ => {
            let alg_ok = alg.split(['.', '+', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            let hex_ok = hex
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'));
            return if alg_ok && hex_ok {
                (Some(alg), hex)
            } else {
                (None, term)
            };
        }
    };
    // The length is checked before the characters, so a short term with
    // bad characters still counts as "algorithm plus prefix".
    if hex.len() != full_len || hex.bytes().all(|c| nibble(c).is_some()) {
        (Some(alg), hex)
    } else {
        (None, term)
    }
}

/// Finds the only image whose ID matches `term`.
pub(crate) fn search(ids: &BTreeSet<ImageId>, term: &str) -> Result<ImageId> {
    if term.is_empty() {
        return Err(Error::EmptySearch);
    }
    let no_such = || Error::NoSuchImage {
        term: term.to_owned(),
    };
    let (alg, prefix) = split_term(term);
    if alg.is_some_and(|a| a != "sha256") {
        return Err(no_such());
    }
    let prefix = prefix.as_bytes();
    if prefix.len() > 64 || !prefix.iter().all(|&c| nibble(c).is_some()) {
        return Err(no_such());
    }
    // The smallest ID with this prefix is the prefix padded with zeros.
    let mut low = [0u8; 32];
    for (i, &c) in prefix.iter().enumerate() {
        let n = nibble(c).unwrap_or(0);
        low[i / 2] |= if i % 2 == 0 { n << 4 } else { n };
    }
    let mut found = ids
        .range(ImageId::from_bytes(low)..)
        .take_while(|id| has_prefix(id, prefix));
    let first = *found.next().ok_or_else(no_such)?;
    if prefix.len() == 64 {
        return Ok(first);
    }
    match found.next() {
        Some(second) => Err(Error::Ambiguous {
            term: term.to_owned(),
            first,
            second: *second,
        }),
        None => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u8) -> (BTreeSet<ImageId>, Vec<ImageId>) {
        let ids: Vec<ImageId> = (0..n).map(|i| ImageId::of_config(&[i])).collect();
        (ids.iter().copied().collect(), ids)
    }

    #[test]
    fn finds_by_any_unique_prefix_form() {
        let (s, ids) = set(20);
        for id in &ids {
            let hex = id.hex();
            assert_eq!(search(&s, &hex).unwrap(), *id);
            assert_eq!(search(&s, &id.to_string()).unwrap(), *id);
            assert_eq!(search(&s, &hex[..12]).unwrap(), *id);
            assert_eq!(search(&s, &format!("sha256:{}", &hex[..12])).unwrap(), *id);
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let (s, ids) = set(20);
        let hex = ids[0].hex();
        assert!(matches!(search(&s, ""), Err(Error::EmptySearch)));
        for term in [
            "i_dont_exists",
            "sha256:",
            "sha512:abc",
            &hex[1..7],
            &hex.to_uppercase()[..8],
            &format!("{hex}0"),
        ] {
            let e = search(&s, term).unwrap_err();
            assert!(matches!(e, Error::NoSuchImage { .. }), "{term}: {e}");
            assert_eq!(e.to_string(), format!("No such image: {term}"));
        }
    }

    #[test]
    fn ambiguous_prefix_names_two_matches() {
        let (s, ids) = set(200);
        // With 200 IDs some pair shares its first hex digit.
        let mut by_first: std::collections::BTreeMap<char, Vec<ImageId>> = Default::default();
        for id in &ids {
            by_first
                .entry(id.hex().chars().next().unwrap())
                .or_default()
                .push(*id);
        }
        let (c, group) = by_first.iter().find(|(_, v)| v.len() > 1).unwrap();
        match search(&s, &c.to_string()) {
            Err(Error::Ambiguous { first, second, .. }) => {
                assert!(group.contains(&first) && group.contains(&second) && first != second);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn empty_store_finds_nothing() {
        assert!(matches!(
            search(&BTreeSet::new(), "abc"),
            Err(Error::NoSuchImage { .. })
        ));
    }
}
