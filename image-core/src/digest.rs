//! Validated content digests and the identifiers built on them.
//!
//! Every identifier that can become a file name, a database key or an object
//! key is parsed into one of these types first. Parsing is strict: an
//! algorithm the project knows, a colon, and lowercase hex of exactly the
//! length that algorithm produces. Anything else — `sha256:../x`, uppercase
//! hex, a short or over-long hex part — is a [`DigestError`] that says which
//! rule was broken.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A hash algorithm a [`Digest`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm for image IDs, diff IDs and chain IDs.
    Sha256,
    /// SHA-512, accepted for blobs (OCI allows it for descriptors).
    Sha512,
}

impl Algorithm {
    /// The name used in the digest string (`sha256`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length in bytes of a hash produced by this algorithm.
    pub const fn size(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// Length of the lowercase hex encoding.
    pub const fn hex_len(self) -> usize {
        self.size() * 2
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestErrorKind {
    /// The input was empty.
    Empty,
    /// There was no `algorithm:` part.
    MissingAlgorithm,
    /// The algorithm is not one the project supports.
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length for its algorithm.
    InvalidLength {
        /// Length the algorithm requires.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// The hex part has a character outside `0-9a-f` (uppercase is refused).
    InvalidHex {
        /// Byte offset of the first bad character in the hex part.
        position: usize,
    },
    /// The digest is valid but uses an algorithm this identifier does not allow.
    WrongAlgorithm {
        /// The algorithm required here.
        expected: Algorithm,
        /// The algorithm found.
        found: Algorithm,
    },
}

/// A string that failed to parse as a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {kind}")]
pub struct DigestError {
    /// The offending input, truncated to 200 characters.
    pub input: String,
    /// Which rule it broke.
    pub kind: DigestErrorKind,
}

impl fmt::Display for DigestErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty string"),
            Self::MissingAlgorithm => f.write_str("missing \"algorithm:\" prefix"),
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported algorithm {a:?}"),
            Self::InvalidLength { expected, found } => {
                write!(f, "hex part has {found} characters, expected {expected}")
            }
            Self::InvalidHex { position } => write!(
                f,
                "character {position} of the hex part is not lowercase hex (0-9, a-f)"
            ),
            Self::WrongAlgorithm { expected, found } => {
                write!(f, "algorithm {found} not allowed here, expected {expected}")
            }
        }
    }
}

impl DigestError {
    fn new(input: &str, kind: DigestErrorKind) -> Self {
        let input = if input.len() > 200 {
            let mut end = 200;
            while !input.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &input[..end])
        } else {
            input.to_owned()
        };
        Self { input, kind }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of each lowercase hex digit; [`NOT_HEX`] for every other byte.
const NIBBLES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// Where the first byte that is not lowercase hex stands.
fn first_non_hex(hex: &[u8]) -> Option<usize> {
    hex.iter().position(|c| NIBBLES[usize::from(*c)] == NOT_HEX)
}

/// Decodes lowercase hex into `out`; returns the position of the first bad byte.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Result<(), usize> {
    // Digests are decoded by the hundred thousand when a store opens:
    // decode without branching and look for the culprit only on failure.
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        seen |= hi | lo;
        *byte = (hi << 4) | lo;
    }
    match seen {
        0..=0x0f => Ok(()),
        // Some byte mapped to NOT_HEX, so the search finds it.
        _ => Err(first_non_hex(hex).unwrap_or(0)),
    }
}

/// The lowercase hex encoding of at most 64 `bytes`, in `buf`.
fn hex_in<'a>(bytes: &[u8], buf: &'a mut [u8; 128]) -> &'a str {
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // The buffer only holds ASCII hex digits.
    std::str::from_utf8(&buf[..bytes.len() * 2]).unwrap_or_default()
}

/// Writes the lowercase hex encoding of `bytes` into `f`.
fn write_hex(f: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    f.write_str(hex_in(bytes, &mut [0; 128]))
}

/// Lowercase hex encoding of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// A validated content digest: an [`Algorithm`] and the hash it produced.
///
/// The string form is `algorithm:hex` with lowercase hex, exactly as
/// OCI and Docker write it. Digests order by algorithm, then by hash bytes,
/// which for the same algorithm is the order of their hex strings.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 64],
}

// Only the hash's own bytes: the rest of the buffer is always zero, so
// this agrees with `Eq` and halves the work for SHA-256 keys.
impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.algorithm.hash(state);
        state.write(self.as_bytes());
    }
}

impl Digest {
    /// Parses `algorithm:hex`, refusing anything that is not exactly canonical.
    ///
    /// # Errors
    /// [`DigestError`] naming the broken rule.
    ///
    /// ```
    /// use imagecache_core::Digest;
    /// let d: Digest = "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2".parse()?;
    /// assert_eq!(d.hex().len(), 64);
    /// assert!("sha256:../x".parse::<Digest>().is_err());
    /// # Ok::<(), imagecache_core::DigestError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        if s.is_empty() {
            return Err(DigestError::new(s, DigestErrorKind::Empty));
        }
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::new(s, DigestErrorKind::MissingAlgorithm));
        };
        let algorithm = Algorithm::from_name(alg).ok_or_else(|| {
            DigestError::new(s, DigestErrorKind::UnsupportedAlgorithm(alg.to_owned()))
        })?;
        Self::from_hex(algorithm, hex).map_err(|kind| DigestError::new(s, kind))
    }

    fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Self, DigestErrorKind> {
        if hex.len() != algorithm.hex_len() {
            // Report a bad character before a bad length when both are wrong:
            // `sha256:../x` is more usefully "not hex" than "too short".
            if let Some(position) = first_non_hex(hex.as_bytes()) {
                return Err(DigestErrorKind::InvalidHex { position });
            }
            return Err(DigestErrorKind::InvalidLength {
                expected: algorithm.hex_len(),
                found: hex.len(),
            });
        }
        let mut bytes = [0u8; 64];
        decode_hex(hex.as_bytes(), &mut bytes[..algorithm.size()])
            .map_err(|position| DigestErrorKind::InvalidHex { position })?;
        Ok(Self { algorithm, bytes })
    }

    /// Builds a digest from raw hash bytes.
    ///
    /// # Errors
    /// [`DigestErrorKind::InvalidLength`] when `bytes` is not the algorithm's size.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, DigestError> {
        if bytes.len() != algorithm.size() {
            return Err(DigestError::new(
                &hex_encode(bytes),
                DigestErrorKind::InvalidLength {
                    expected: algorithm.hex_len(),
                    found: bytes.len() * 2,
                },
            ));
        }
        let mut buf = [0u8; 64];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            algorithm,
            bytes: buf,
        })
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Self::from_sha256(sha2::Sha256::digest(data).into())
    }

    /// Wraps a finished SHA-256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&hash);
        Self {
            algorithm: Algorithm::Sha256,
            bytes,
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.size()]
    }

    /// The lowercase hex part (what Docker calls `Encoded()`).
    pub fn hex(&self) -> String {
        hex_encode(self.as_bytes())
    }

    /// [`Digest::hex`] written into `buf` instead of a new `String`, for
    /// names made by the hundred thousand.
    ///
    /// ```
    /// use imagecache_core::Digest;
    /// let d = Digest::sha256(b"");
    /// assert_eq!(d.hex_in(&mut [0; 128]), d.hex());
    /// ```
    pub fn hex_in<'a>(&self, buf: &'a mut [u8; 128]) -> &'a str {
        hex_in(self.as_bytes(), buf)
    }

    /// A new hasher for this digest's algorithm, to verify streamed bytes.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm.as_str())?;
        f.write_str(":")?;
        write_hex(f, self.as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hash for any supported [`Algorithm`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(_) => f.write_str("Hasher(sha256)"),
            Self::Sha512(_) => f.write_str("Hasher(sha512)"),
        }
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest::from_sha256(h.finalize().into()),
            Self::Sha512(h) => {
                let out: [u8; 64] = h.finalize().into();
                Digest {
                    algorithm: Algorithm::Sha512,
                    bytes: out,
                }
            }
        }
    }
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Digest);

        impl $name {
            /// The underlying digest.
            pub fn digest(&self) -> &Digest {
                &self.0
            }

            /// Parses the string form.
            ///
            /// # Errors
            /// [`DigestError`] naming the broken rule.
            pub fn parse(s: &str) -> Result<Self, DigestError> {
                Digest::parse(s).and_then(Self::try_from)
            }

            /// The lowercase hex part.
            pub fn hex(&self) -> String {
                self.0.hex()
            }

            /// The lowercase hex part, written into `buf`.
            pub fn hex_in<'a>(&self, buf: &'a mut [u8; 128]) -> &'a str {
                self.0.hex_in(buf)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = DigestError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl From<$name> for Digest {
            fn from(v: $name) -> Digest {
                v.0
            }
        }

        impl AsRef<Digest> for $name {
            fn as_ref(&self) -> &Digest {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let d = Digest::deserialize(d)?;
                Self::try_from(d).map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_newtype!(
    /// An image ID: `sha256:` + hex(sha256(exact config bytes)).
    ///
    /// Always SHA-256, as in Docker.
    ImageId
);
digest_newtype!(
    /// The digest of an uncompressed layer tar (`rootfs.diff_ids[i]`).
    DiffId
);
digest_newtype!(
    /// The identity of a stack of layers, computed by [`chain_id`].
    ChainId
);

impl TryFrom<Digest> for ImageId {
    type Error = DigestError;
    fn try_from(d: Digest) -> Result<Self, DigestError> {
        if d.algorithm != Algorithm::Sha256 {
            return Err(DigestError::new(
                &d.to_string(),
                DigestErrorKind::WrongAlgorithm {
                    expected: Algorithm::Sha256,
                    found: d.algorithm,
                },
            ));
        }
        Ok(Self(d))
    }
}

impl TryFrom<Digest> for DiffId {
    type Error = DigestError;
    fn try_from(d: Digest) -> Result<Self, DigestError> {
        Ok(Self(d))
    }
}

impl TryFrom<Digest> for ChainId {
    type Error = DigestError;
    fn try_from(d: Digest) -> Result<Self, DigestError> {
        Ok(Self(d))
    }
}

impl ImageId {
    /// The ID of a config: the SHA-256 of its exact bytes.
    pub fn of_config(bytes: &[u8]) -> Self {
        Self(Digest::sha256(bytes))
    }

    /// The 32 hash bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        // An ImageId is always SHA-256, so the first 32 bytes are the hash.
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.bytes[..32]);
        out
    }

    /// Builds an ID from the 32 hash bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Digest::from_sha256(bytes))
    }
}

impl From<DiffId> for ChainId {
    /// The chain ID of a single layer is its diff ID.
    fn from(d: DiffId) -> Self {
        Self(d.0)
    }
}

impl ChainId {
    /// Extends a chain by one layer: `sha256(self + " " + next)`.
    pub fn extend(&self, next: &DiffId) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(self.to_string().as_bytes());
        h.update(b" ");
        h.update(next.to_string().as_bytes());
        Self(Digest::from_sha256(h.finalize().into()))
    }
}

/// Docker's chain ID of an ordered list of layers.
///
/// `[]` has none, `[D1]` is `D1`, and each further layer hashes the previous
/// chain ID, one space and the next diff ID.
///
/// ```
/// use imagecache_core::{chain_id, DiffId};
/// let a = DiffId::parse("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")?;
/// let b = DiffId::parse("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d")?;
/// assert_eq!(
///     chain_id(&[a, b]).unwrap().to_string(),
///     "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
/// );
/// # Ok::<(), imagecache_core::DigestError>(())
/// ```
pub fn chain_id(diff_ids: &[DiffId]) -> Option<ChainId> {
    let (first, rest) = diff_ids.split_first()?;
    Some(
        rest.iter()
            .fold(ChainId::from(*first), |chain, next| chain.extend(next)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOOBAR: &str = "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2";

    #[test]
    fn parses_and_displays_canonical_form() {
        let d = Digest::parse(FOOBAR).unwrap();
        assert_eq!(d.to_string(), FOOBAR);
        assert_eq!(d, Digest::sha256(b"foobar"));
        assert_eq!(d.algorithm(), Algorithm::Sha256);
    }

    #[test]
    fn rejects_bad_digests_with_the_rule_broken() {
        let kind = |s: &str| Digest::parse(s).unwrap_err().kind;
        assert_eq!(kind(""), DigestErrorKind::Empty);
        assert_eq!(kind("foobar"), DigestErrorKind::MissingAlgorithm);
        assert_eq!(
            kind("md5:abc"),
            DigestErrorKind::UnsupportedAlgorithm("md5".into())
        );
        assert_eq!(
            kind("sha256:abc"),
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 3
            }
        );
        assert_eq!(
            kind(&format!("{FOOBAR}0")),
            DigestErrorKind::InvalidLength {
                expected: 64,
                found: 65
            }
        );
        assert_eq!(
            kind(&FOOBAR.to_uppercase().replace("SHA256", "sha256")),
            DigestErrorKind::InvalidHex { position: 0 }
        );
        assert_eq!(
            kind("sha256:../x"),
            DigestErrorKind::InvalidHex { position: 0 }
        );
        assert_eq!(
            kind("sha256:../../../../../../../../../../../../../../../../../../../../etc/passwdxx"),
            DigestErrorKind::InvalidHex { position: 0 }
        );
        // Full length, one bad digit late: the low nibble of the last byte.
        let mut late = FOOBAR.to_owned();
        late.replace_range(late.len() - 1.., "G");
        assert_eq!(kind(&late), DigestErrorKind::InvalidHex { position: 63 });
    }

    #[test]
    fn image_id_requires_sha256() {
        let d = Digest::from_bytes(Algorithm::Sha512, &[7u8; 64]).unwrap();
        assert!(matches!(
            ImageId::try_from(d).unwrap_err().kind,
            DigestErrorKind::WrongAlgorithm { .. }
        ));
        assert!(ImageId::parse(&d.to_string()).is_err());
        assert!(DiffId::parse(&d.to_string()).is_ok());
    }

    #[test]
    fn chain_id_vectors() {
        let d = |s: &str| DiffId::parse(s).unwrap();
        let a = d("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb");
        let b = d("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d");
        let c = d("sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6");
        let e = d("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
        assert_eq!(a.digest(), &Digest::sha256(b"a"));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&[a]).unwrap().to_string(), a.to_string());
        assert_eq!(
            chain_id(&[a, b]).unwrap().to_string(),
            "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
        );
        assert_eq!(
            chain_id(&[a, b, c]).unwrap().to_string(),
            "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"
        );
        assert_eq!(
            chain_id(&[e, e]).unwrap().to_string(),
            "sha256:170b376f64fb30995c140276be3d71dfb256b308d86183ca3b22aa93a79ad548"
        );
    }

    #[test]
    fn order_follows_hex() {
        let mut ids: Vec<ImageId> = (0..50u8).map(|i| ImageId::of_config(&[i])).collect();
        ids.sort();
        let hexes: Vec<String> = ids.iter().map(ImageId::hex).collect();
        let mut sorted = hexes.clone();
        sorted.sort();
        assert_eq!(hexes, sorted);
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.finish(), Digest::sha256(b"foobar"));
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"x");
        assert_eq!(h.finish().hex().len(), 128);
    }

    proptest::proptest! {
        #[test]
        fn roundtrip_any_hash(bytes in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let d = Digest::from_sha256(bytes);
            proptest::prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = Digest::parse(&s);
        }
    }
}
