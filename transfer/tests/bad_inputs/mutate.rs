//! Deterministic generators of bad inputs: a small seeded random source and
//! mutations of valid values that are guaranteed to stay invalid.

/// SplitMix64: small, seedable and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

/// Control characters that JSON allows nowhere raw (tab, newline and
/// carriage return are whitespace outside strings, so they are left out).
pub const RAW_CONTROLS: &[u8] = &[0x00, 0x01, 0x02, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x1f];

/// Bytes that are never valid UTF-8 on their own.
pub const NOT_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xf0\x28\x8c\xbc",
    b"\xc0\xaf",
];

/// Strings that break whatever they are put into: control characters,
/// terminal escapes, separators, non-ASCII and very long runs.
pub fn nasty_fragment(rng: &mut Rng) -> String {
    let long_a = "a".repeat(300);
    let long_colon = ":".repeat(70);
    let options: [&str; 16] = [
        "\u{0}",
        "\u{1b}[31m",
        "\u{7}",
        "\r",
        "\n",
        "\t",
        " ",
        "/",
        "..",
        "@",
        ":",
        "é",
        "\u{202e}",
        "\u{feff}",
        &long_a,
        &long_colon,
    ];
    (*rng.pick(&options)).to_owned()
}

/// Inserts `insert` at a random character boundary of `s`.
pub fn insert_at_random(rng: &mut Rng, s: &str, insert: &str) -> String {
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let at = *rng.pick(&bounds);
    format!("{}{insert}{}", &s[..at], &s[at..])
}

/// `valid` cut short somewhere before its last byte.
pub fn truncated(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    valid[..rng.below(valid.len())].to_vec()
}

/// `valid` (a JSON document) with a raw control character inserted: JSON
/// allows them neither inside strings nor between tokens.
pub fn with_raw_control(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let at = rng.below(valid.len() + 1);
    let mut out = valid.to_vec();
    out.insert(at, *rng.pick(RAW_CONTROLS));
    out
}

/// `valid` (a JSON object) with invalid UTF-8 where only JSON syntax may
/// stand: before the opening brace, after a comma or after the closing one.
pub fn with_bad_utf8_outside_strings(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let bad = *rng.pick(NOT_UTF8);
    let spots: Vec<usize> = std::iter::once(0)
        .chain(std::iter::once(valid.len()))
        .collect();
    let at = *rng.pick(&spots);
    let mut out = valid.to_vec();
    out.splice(at..at, bad.iter().copied());
    out
}

/// Which bytes of a JSON document lie outside its strings.
fn outside_strings(json: &[u8]) -> Vec<bool> {
    let (mut inside, mut escaped) = (false, false);
    json.iter()
        .map(|&b| {
            let was_inside = inside;
            if inside {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    inside = false;
                }
            } else if b == b'"' {
                inside = true;
            }
            !was_inside && b != b'"'
        })
        .collect()
}

/// A structural byte of `valid` (a brace, bracket or colon outside its
/// strings) replaced by a byte that is not JSON there.
pub fn with_broken_structure(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let outside = outside_strings(valid);
    let spots: Vec<usize> = valid
        .iter()
        .enumerate()
        .filter(|(i, b)| outside[*i] && matches!(b, b'{' | b'}' | b'[' | b']' | b':'))
        .map(|(i, _)| i)
        .collect();
    let at = *rng.pick(&spots);
    let mut out = valid.to_vec();
    out[at] = *rng.pick(&[b'#', b'<', b'\\', b'=', 0x00, 0xff]);
    out
}

/// JSON nested `depth` levels deep (arrays or objects).
pub fn deep_json(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}
