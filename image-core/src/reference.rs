//! Docker image references: `name[:tag][@digest]`, parsed and normalised
//! by Docker's rules.
//!
//! A reference is held in its full form, `docker.io/library/busybox:latest`,
//! which is what stores compare and sort by. [`Reference::familiar`] (and
//! `Display`) give the short form people type and Docker prints,
//! `busybox:latest`.
//!
//! The grammar is Docker's (`distribution/reference`):
//!
//! ```text
//! reference       := name [ ":" tag ] [ "@" digest ]
//! name            := [ domain "/" ] path-component [ "/" path-component ]*
//! domain          := host [ ":" port ]
//! host            := domain-component [ "." domain-component ]* | "[" ipv6 "]"
//! domain-component:= [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
//! port            := [0-9]+
//! path-component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag             := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest          := algorithm ":" hex   (sha256 or sha512, lowercase hex)
//! ```
//!
//! Normalisation follows Docker's `ParseNormalizedNamed`: the first
//! component is a domain when it contains `.` or `:`, is `localhost`, or has
//! an uppercase letter; otherwise the domain is `docker.io`, and a name of
//! one component gets `library/` in front. `index.docker.io` is
//! `docker.io`. The whole name (domain and path) is at most 255 characters,
//! and a bare 64-character hex string is refused, as it would read as an
//! image ID.
//!
//! Two deliberate differences, both about names Docker itself cannot read
//! back consistently:
//!
//! * Docker reads a first component that contains `.` but is not a valid
//!   host name (`a_b.c/x`) as part of a path with no domain at all; here it
//!   is refused as an invalid domain.
//! * The familiar form keeps `docker.io/` when the path's first component
//!   would otherwise be read as a domain (`docker.io/localhost/x`,
//!   `docker.io/example.com/x`), so that every familiar form parses back to
//!   the same reference. Docker drops it, and its short form then names
//!   another registry. For the same reason `library/<64 hex digits>` keeps
//!   its `library/`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The domain of names given without one.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, read as [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The path prefix of Docker Hub's official images.
const OFFICIAL_PREFIX: &str = "library/";
/// The tag a name without tag or digest stands for.
const DEFAULT_TAG: &str = "latest";
/// Longest name (domain and path) Docker accepts.
const NAME_MAX: usize = 255;
/// Longest tag Docker accepts.
const TAG_MAX: usize = 128;
/// How much of a refused input an error repeats.
const ECHO_MAX: usize = 200;

/// A validated, normalised Docker image reference.
///
/// Equality, hashing and order are those of the full form
/// ([`Reference::as_str`]), so `busybox` and `docker.io/library/busybox`
/// are the same reference.
///
/// ```
/// use imagecache_core::Reference;
///
/// let r: Reference = "busybox".parse()?;
/// assert_eq!(r.as_str(), "docker.io/library/busybox");
/// assert_eq!(r.tag(), None);
///
/// let r = r.with_default_tag();
/// assert_eq!(r.as_str(), "docker.io/library/busybox:latest");
/// assert_eq!(r.familiar(), "busybox:latest");
/// assert_eq!(r.to_string(), "busybox:latest");
/// assert_eq!(r.repository(), "busybox");
///
/// let r = Reference::parse("localhost:5000/team/app:v1.2")?;
/// assert_eq!(r.domain(), "localhost:5000");
/// assert_eq!(r.path(), "team/app");
/// assert_eq!(r.tag(), Some("v1.2"));
///
/// assert!(Reference::parse("Busybox").is_err());
/// # Ok::<(), imagecache_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Reference {
    /// `domain/path[:tag][@digest]`.
    full: String,
    /// Where the domain ends (the `/` after it).
    domain_end: usize,
    /// Where the name (domain and path) ends.
    name_end: usize,
    /// Where the tag ends; `name_end` when there is none.
    tag_end: usize,
    /// The digest, also in `full` after `@`.
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as Docker's `ParseNormalizedNamed`
    /// does.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] naming what was wrong: an empty input, a
    /// 64-character hex string, uppercase in the path, a bad domain, path
    /// component, tag or digest, or a name over 255 characters.
    pub fn parse(input: &str) -> Result<Self> {
        parse(input).map_err(|reason| Error::InvalidReference {
            reference: echo(input),
            reason,
        })
    }

    /// The full form: `docker.io/library/busybox:latest`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The name without tag or digest, in full: `docker.io/library/busybox`.
    pub fn name(&self) -> &str {
        &self.full[..self.name_end]
    }

    /// The domain: `docker.io`, `localhost:5000`, `ghcr.io`.
    pub fn domain(&self) -> &str {
        &self.full[..self.domain_end]
    }

    /// The path after the domain: `library/busybox`.
    pub fn path(&self) -> &str {
        &self.full[self.domain_end + 1..self.name_end]
    }

    /// The name in Docker's short form, without tag or digest: `busybox`,
    /// `team/app`, `ghcr.io/org/app`. Docker's `repositories.json` groups
    /// names by it.
    pub fn repository(&self) -> &str {
        &self.full[self.familiar_start()..self.name_end]
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        (self.tag_end > self.name_end).then(|| &self.full[self.name_end + 1..self.tag_end])
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Whether the reference has neither tag nor digest.
    pub fn is_name_only(&self) -> bool {
        self.tag_end == self.name_end && self.digest.is_none()
    }

    /// The whole reference in Docker's short form: `busybox:latest`,
    /// `ghcr.io/org/app@sha256:…`. Docker prints this and keys
    /// `repositories.json` entries by it.
    pub fn familiar(&self) -> &str {
        &self.full[self.familiar_start()..]
    }

    /// The reference with the tag `latest` when it has neither tag nor
    /// digest, as Docker does with a name given to tag or pull; otherwise
    /// unchanged.
    ///
    /// ```
    /// # use imagecache_core::Reference;
    /// let r = Reference::parse("busybox")?.with_default_tag();
    /// assert_eq!(r.familiar(), "busybox:latest");
    /// let pinned = Reference::parse(&format!("busybox@sha256:{}", "a".repeat(64)))?;
    /// assert_eq!(pinned.clone().with_default_tag(), pinned);
    /// # Ok::<(), imagecache_core::Error>(())
    /// ```
    #[must_use]
    pub fn with_default_tag(mut self) -> Self {
        if self.is_name_only() {
            self.full.push(':');
            self.full.push_str(DEFAULT_TAG);
            self.tag_end = self.full.len();
        }
        self
    }

    /// Where the familiar form starts in `full`: after `docker.io/`, and
    /// after `library/` too when the rest is one component; at the start
    /// when dropping the domain would make the path's first component read
    /// as a domain.
    fn familiar_start(&self) -> usize {
        if self.domain() != DEFAULT_DOMAIN {
            return 0;
        }
        let path_start = self.domain_end + 1;
        let path = self.path();
        if let Some((first, _)) = path.split_once('/')
            && (first.contains('.') || first == "localhost")
        {
            return 0;
        }
        match path.strip_prefix(OFFICIAL_PREFIX) {
            // `library/<64 hex>` keeps its prefix: the bare hex string would
            // read as an image ID.
            Some(rest) if !rest.contains('/') && !is_id_hex(rest) => {
                path_start + OFFICIAL_PREFIX.len()
            }
            _ => path_start,
        }
    }
}

/// A refused input as the error repeats it: at most 200 bytes.
fn echo(input: &str) -> String {
    if input.len() <= ECHO_MAX {
        return input.to_owned();
    }
    let mut end = ECHO_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &input[..end])
}

/// Whether `s` is 64 lowercase hex digits, the form of a bare image ID.
fn is_id_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse(input: &str) -> Result<Reference, String> {
    if input.is_empty() {
        return Err("empty reference".into());
    }
    if is_id_hex(input) {
        return Err("cannot specify 64-byte hexadecimal strings".into());
    }
    let (domain, remainder) = split_domain(input);
    let remainder: &str = &remainder;
    // Docker checks case before anything else, so that `Busybox` is
    // refused for its case and not as a malformed name.
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }

    let (before_digest, digest) = match remainder.split_once('@') {
        Some((left, digest)) => (left, Some(digest)),
        None => (remainder, None),
    };
    // A `:` in the remainder can only start the tag: path components have
    // none, and the domain's port is already split off.
    let (path, tag) = match before_digest.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (before_digest, None),
    };

    check_domain(domain)?;
    if path.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    for component in path.split('/') {
        check_path_component(component)?;
    }
    let name_len = domain.len() + 1 + path.len();
    if name_len > NAME_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_MAX} characters ({name_len} given)"
        ));
    }
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let digest = match digest {
        Some(d) => Some(Digest::parse(d).map_err(|e| format!("invalid digest: {}", e.kind))?),
        None => None,
    };

    let mut full = String::with_capacity(name_len + 1 + tag.map_or(0, str::len) + 72);
    full.push_str(domain);
    full.push('/');
    full.push_str(path);
    let name_end = full.len();
    if let Some(tag) = tag {
        full.push(':');
        full.push_str(tag);
    }
    let tag_end = full.len();
    if let Some(d) = &digest {
        full.push('@');
        full.push_str(&d.to_string());
    }
    Ok(Reference {
        full,
        domain_end: domain.len(),
        name_end,
        tag_end,
        digest,
    })
}

/// Docker's `splitDockerDomain`: the domain and the rest, with `docker.io`
/// and `library/` filled in. The rest is borrowed from the input unless
/// `library/` had to be added.
fn split_domain(input: &str) -> (&str, Cow<'_, str>) {
    let (domain, rest) = match input.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, input),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        (domain, Cow::Owned(format!("{OFFICIAL_PREFIX}{rest}")))
    } else {
        (domain, Cow::Borrowed(rest))
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid domain {:?}", echo(domain)));
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // An IPv6 address in brackets, then an optional port.
        let Some((addr, after)) = rest.split_once(']') else {
            return bad();
        };
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return bad();
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if !host.split('.').all(component_ok) {
            return bad();
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return bad();
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn check_path_component(component: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid path component {:?}: use a-z, 0-9 and single separators (., _, __ or dashes) between them",
            echo(component)
        ))
    };
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of letters and digits.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return bad();
        }
        if i == b.len() {
            return Ok(());
        }
        // A separator, then another run.
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &b[sep_start..i] {
            b"." | b"_" | b"__" => {}
            sep if sep.iter().all(|&c| c == b'-') => {}
            _ => return bad(),
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {:?}: use up to {TAG_MAX} of A-Z, a-z, 0-9, _, . and -, not starting with . or -",
            echo(tag)
        ))
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// As its full form (`docker.io/library/busybox:latest`); read back with
/// [`Reference::parse`].
impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Reference {
    /// The familiar form, as Docker prints references.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.familiar())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Reference").field(&self.full).finish()
    }
}

impl PartialEq for Reference {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for Reference {}

impl Hash for Reference {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl PartialOrd for Reference {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Reference {
    fn cmp(&self, other: &Self) -> Ordering {
        self.full.cmp(&other.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// (input, full form, familiar form)
    const VALID: &[(&str, &str, &str)] = &[
        ("busybox", "docker.io/library/busybox", "busybox"),
        (
            "busybox:latest",
            "docker.io/library/busybox:latest",
            "busybox:latest",
        ),
        (
            "library/busybox:1.36",
            "docker.io/library/busybox:1.36",
            "busybox:1.36",
        ),
        ("docker.io/busybox", "docker.io/library/busybox", "busybox"),
        (
            "index.docker.io/library/busybox",
            "docker.io/library/busybox",
            "busybox",
        ),
        (
            "docker.io/library/foo/bar",
            "docker.io/library/foo/bar",
            "library/foo/bar",
        ),
        ("user/app", "docker.io/user/app", "user/app"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("a/b/c/d", "docker.io/a/b/c/d", "a/b/c/d"),
        ("localhost/app", "localhost/app", "localhost/app"),
        (
            "localhost:5000/app:dev",
            "localhost:5000/app:dev",
            "localhost:5000/app:dev",
        ),
        ("ghcr.io/org/app", "ghcr.io/org/app", "ghcr.io/org/app"),
        (
            "registry.example.com:443/x",
            "registry.example.com:443/x",
            "registry.example.com:443/x",
        ),
        ("[::1]:5000/app", "[::1]:5000/app", "[::1]:5000/app"),
        ("[fe80::1]/app", "[fe80::1]/app", "[fe80::1]/app"),
        ("Example.COM/app", "Example.COM/app", "Example.COM/app"),
        ("Registry/app", "Registry/app", "Registry/app"),
        ("127.0.0.1:5000/a", "127.0.0.1:5000/a", "127.0.0.1:5000/a"),
        ("a.b-c/d", "a.b-c/d", "a.b-c/d"),
        ("a_b", "docker.io/library/a_b", "a_b"),
        ("a__b", "docker.io/library/a__b", "a__b"),
        ("a---b", "docker.io/library/a---b", "a---b"),
        ("a.b.c", "docker.io/library/a.b.c", "a.b.c"),
        ("0", "docker.io/library/0", "0"),
        ("x:_", "docker.io/library/x:_", "x:_"),
        (
            "x:Tag.With-All_1",
            "docker.io/library/x:Tag.With-All_1",
            "x:Tag.With-All_1",
        ),
        // A host name without a dot or port is a path component.
        ("registry/app", "docker.io/registry/app", "registry/app"),
        // No slash: what looks like a port is a tag.
        (
            "localhost:5000",
            "docker.io/library/localhost:5000",
            "localhost:5000",
        ),
        // Dropping `docker.io/` here would make `localhost` the domain.
        (
            "docker.io/localhost/x",
            "docker.io/localhost/x",
            "docker.io/localhost/x",
        ),
        (
            "docker.io/example.com/x:1",
            "docker.io/example.com/x:1",
            "docker.io/example.com/x:1",
        ),
        (
            "library/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "docker.io/library/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "library/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ),
        // A hex string that is not exactly 64 long is a name.
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "docker.io/library/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ),
    ];

    /// (input, what the reason must mention)
    const INVALID: &[(&str, &str)] = &[
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("user/App", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:.x", "invalid tag"),
        ("busybox:a b", "invalid tag"),
        ("busybox:a:b", "invalid tag"),
        ("a//b", "invalid path component"),
        ("/a", "invalid path component"),
        ("a/", "invalid path component"),
        ("-a", "invalid path component"),
        ("a-", "invalid path component"),
        ("a._b", "invalid path component"),
        ("a___b", "invalid path component"),
        ("a..b", "invalid path component"),
        ("a b", "invalid path component"),
        ("ä", "invalid path component"),
        ("a@", "invalid digest"),
        ("a@sha256:abc", "invalid digest"),
        ("a@sha256:ABCD", "invalid digest"),
        ("a@md5:d41d8cd98f00b204e9800998ecf8427e", "invalid digest"),
        ("a:t@", "invalid digest"),
        ("ex-.com/a", "invalid domain"),
        ("ex.com:/a", "invalid domain"),
        ("ex.com:12a/a", "invalid domain"),
        ("a_b.com/x", "invalid domain"),
        ("[::1/a", "invalid domain"),
        ("[]/a", "invalid path component"),
        ("[]:1/a", "invalid domain"),
        ("[::1]x/a", "invalid domain"),
        ("localhost:5000/", "at least one component"),
        (HEX, "64-byte hexadecimal"),
    ];

    #[test]
    fn valid_references_normalise_as_docker() {
        for &(input, full, familiar) in VALID {
            let r = Reference::parse(input)
                .unwrap_or_else(|e| panic!("{input:?} should parse, got {e}"));
            assert_eq!(r.as_str(), full, "full form of {input:?}");
            assert_eq!(r.familiar(), familiar, "familiar form of {input:?}");
            assert_eq!(r.to_string(), familiar, "Display of {input:?}");
            // The full and the familiar forms parse back to the same reference.
            assert_eq!(Reference::parse(full).ok().as_ref(), Some(&r), "{full:?}");
            assert_eq!(
                Reference::parse(familiar).ok().as_ref(),
                Some(&r),
                "{familiar:?}"
            );
        }
    }

    #[test]
    fn invalid_references_name_what_was_wrong() {
        for &(input, reason) in INVALID {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} should be refused, parsed as {r:?}"),
                Err(Error::InvalidReference {
                    reference,
                    reason: got,
                }) => {
                    assert_eq!(reference, input);
                    assert!(
                        got.contains(reason),
                        "{input:?}: reason {got:?} should mention {reason:?}"
                    );
                }
                Err(other) => panic!("{input:?}: wrong error {other:?}"),
            }
        }
    }

    #[test]
    fn parts_of_a_full_reference() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let r = Reference::parse(&format!("ghcr.io:443/org/app:v2@{digest}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.domain(), "ghcr.io:443");
        assert_eq!(r.path(), "org/app");
        assert_eq!(r.name(), "ghcr.io:443/org/app");
        assert_eq!(r.repository(), "ghcr.io:443/org/app");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest().map(ToString::to_string), Some(digest.clone()));
        assert!(!r.is_name_only());
        assert_eq!(r.clone().with_default_tag(), r);

        let r = Reference::parse(&format!("busybox@{digest}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.as_str(), format!("docker.io/library/busybox@{digest}"));
        assert_eq!(r.familiar(), format!("busybox@{digest}"));
        assert_eq!(r.repository(), "busybox");
        assert_eq!(r.tag(), None);
        // A digest pins the reference: no default tag is added.
        assert_eq!(r.clone().with_default_tag(), r);

        let r = Reference::parse("library/foo/bar:x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.repository(), "library/foo/bar");
        assert_eq!(r.path(), "library/foo/bar");
    }

    #[test]
    fn default_tag_is_latest_for_a_bare_name_only() {
        let r = Reference::parse("user/app").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.is_name_only());
        let tagged = r.with_default_tag();
        assert_eq!(tagged.as_str(), "docker.io/user/app:latest");
        assert_eq!(tagged.tag(), Some("latest"));
        assert_eq!(tagged.clone().with_default_tag(), tagged);
        let kept = Reference::parse("user/app:v1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kept.clone().with_default_tag(), kept);
    }

    #[test]
    fn length_limits() {
        // 255 characters of name, domain included, are allowed; 256 are not.
        let path = "a".repeat(NAME_MAX - "docker.io/library/".len());
        let r = Reference::parse(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.name().len(), NAME_MAX);
        let err = Reference::parse(&format!("{path}a")).err();
        assert!(
            matches!(&err, Some(Error::InvalidReference { reason, .. }) if reason.contains("255")),
            "{err:?}"
        );
        let tag = "t".repeat(TAG_MAX);
        assert!(Reference::parse(&format!("x:{tag}")).is_ok());
        assert!(Reference::parse(&format!("x:{tag}t")).is_err());
        // An error repeats at most 200 bytes of a long input.
        let long = "A".repeat(10_000);
        match Reference::parse(&long) {
            Err(Error::InvalidReference { reference, .. }) => {
                assert!(reference.len() <= ECHO_MAX + '…'.len_utf8());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn order_and_equality_follow_the_full_form() {
        let mut refs: Vec<Reference> = [
            "ubuntu:22.04",
            "busybox:latest",
            "ghcr.io/a/b:1",
            "busybox:1",
        ]
        .iter()
        .map(|s| Reference::parse(s).unwrap_or_else(|e| panic!("{e}")))
        .collect();
        refs.sort();
        let sorted: Vec<&str> = refs.iter().map(Reference::as_str).collect();
        assert_eq!(
            sorted,
            [
                "docker.io/library/busybox:1",
                "docker.io/library/busybox:latest",
                "docker.io/library/ubuntu:22.04",
                "ghcr.io/a/b:1",
            ]
        );
        assert_eq!(
            Reference::parse("busybox").ok(),
            Reference::parse("docker.io/library/busybox").ok()
        );
    }

    /// A small deterministic generator, so the fuzz test needs no crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn arbitrary_strings_never_panic() {
        // Bytes a reference is made of, plus some that break it, so that
        // inputs reach every branch of the parser.
        const ALPHABET: &[&str] = &[
            "a",
            "z",
            "0",
            "9",
            "A",
            "Z",
            ".",
            "_",
            "__",
            "-",
            "/",
            ":",
            "@",
            "[",
            "]",
            "sha256:",
            "localhost",
            "docker.io",
            "library/",
            "ä",
            "\u{0}",
            " ",
            "ff",
            HEX,
        ];
        let mut rng = Lcg(0x5eed);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = rng.next() % 12;
            let mut input = String::new();
            for _ in 0..len {
                let i = usize::try_from(rng.next()).unwrap_or(0) % ALPHABET.len();
                input.push_str(ALPHABET[i]);
            }
            if let Ok(r) = Reference::parse(&input) {
                parsed += 1;
                // Whatever parses is stable: its full form parses back to it.
                let again = Reference::parse(r.as_str()).unwrap_or_else(|e| {
                    panic!("{input:?} parsed as {r:?}, whose full form fails: {e}")
                });
                assert_eq!(again, r);
                let familiar = Reference::parse(r.familiar())
                    .unwrap_or_else(|e| panic!("familiar form of {r:?} fails: {e}"));
                assert_eq!(familiar, r);
                assert!(r.name().len() <= NAME_MAX);
            }
        }
        assert!(
            parsed > 100,
            "too few inputs parsed ({parsed}) to test much"
        );
    }
}
