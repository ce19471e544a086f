//! A hash of everything [`compare`](crate::compare) checks by equality, so
//! the builder cache can find candidates by key instead of scanning.

use std::collections::BTreeMap;
use std::fmt;

use sha2::Digest as _;

use crate::digest::hex_encode;
use crate::model::ContainerConfig;

/// A 128-bit key over the fields of a [`ContainerConfig`] that
/// [`compare`](crate::compare) checks by equality.
///
/// Whenever `compare(Some(a), Some(b))` holds, `a.cache_key() ==
/// b.cache_key()`; the converse holds up to hash collisions for every field
/// except label values, which contribute only their count (the label rule of
/// `compare` is asymmetric, so no symmetric key can capture it; candidates
/// with equal keys are still checked with `compare`).
///
/// The key is the 128-bit XXH3 (little-endian) of a versioned, length-
/// prefixed encoding of those fields, so it is stable across runs, machines
/// and releases of this crate (a change of encoding changes the version tag
/// and with it every key) and can be persisted. XXH3 is fast, not
/// collision-resistant: a key only narrows the candidates, and a crafted
/// collision costs an extra `compare`, never a wrong answer.
///
/// The encoding (version `ick2`), in order: the tag `ick2`; the lists `Env`,
/// `OnBuild`, `Cmd`, `Entrypoint`, `Shell` (absent = empty); the sets
/// `ExposedPorts` and `Volumes` in sorted order; the number of `Labels`; one
/// byte of flags (`AttachStdin` bit 0, `AttachStdout`, `AttachStderr`,
/// `NetworkDisabled`, `Tty`, `OpenStdin`, `StdinOnce`, `ArgsEscaped` bit 7);
/// `User`, `WorkingDir`, `StopSignal`; `StopTimeout` as `0` or `1` and an
/// `i64`; `Healthcheck` as `0` or `1` and its interval, start interval,
/// start period, timeout, retries (`i64` each) and `Test` list. Strings are
/// a `u32` byte length and the UTF-8 bytes, lists and sets a `u32` count and
/// their strings, integers little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 16]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// A 256-bit key over every field of a [`ContainerConfig`] that
/// [`compare`](crate::compare) reads, label values included: two configs
/// with equal exact keys have equal values in all of those fields, so
/// `compare` holds between them in both directions without looking at
/// either.
///
/// It is the whole SHA-256 of the [`CacheKey`] encoding followed by every
/// label as two strings (name, value) in name order, so equal keys of
/// different configs would take a SHA-256 collision. Configs that differ
/// only in label values have different exact keys and may still compare
/// equal; the exact key only ever confirms a match.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExactKey(pub [u8; 32]);

impl fmt::Display for ExactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for ExactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExactKey({self})")
    }
}

/// Names the encoding; part of every key. Short, because every byte hashed
/// costs time on each probe.
const VERSION_TAG: &[u8] = b"ick2";

/// Writes the encoding into a buffer, which the keys then hash whole.
struct KeyEncoder {
    out: Vec<u8>,
}

impl KeyEncoder {
    fn new() -> Self {
        let mut h = Self {
            out: Vec::with_capacity(512),
        };
        h.bytes(VERSION_TAG);
        h
    }

    fn bytes(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }

    /// A length or count, as 4 little-endian bytes: configs are far below
    /// 4 GiB (stores cap their size), and fewer bytes hash faster. A larger
    /// value saturates, which can only merge keys, never split them.
    fn len(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.bytes(&n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.bytes(s.as_bytes());
    }

    /// A list where absent and empty are the same (compare checks lengths
    /// and elements only).
    fn list(&mut self, list: Option<&[String]>) {
        let list = list.unwrap_or_default();
        self.len(list.len());
        for s in list {
            self.str(s);
        }
    }

    fn strings<'a>(&mut self, n: usize, items: impl Iterator<Item = &'a String>) {
        self.len(n);
        for s in items {
            self.str(s);
        }
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey(xxhash_rust::xxh3::xxh3_128(&self.out).to_le_bytes())
    }

    /// Appends the labels and hashes everything.
    fn exact_key(mut self, labels: Option<&BTreeMap<String, String>>) -> ExactKey {
        for (name, value) in labels.into_iter().flatten() {
            self.str(name);
            self.str(value);
        }
        ExactKey(sha2::Sha256::digest(&self.out).into())
    }
}

impl ContainerConfig {
    /// The [`CacheKey`] of this config: equal for any two configs that
    /// [`compare`](crate::compare) considers the same.
    ///
    /// A typical build-step config hashes in well under a microsecond.
    ///
    /// ```
    /// use imagecache_core::{ContainerConfig, compare};
    /// let a = ContainerConfig { cmd: Some(vec!["echo".into()]), hostname: "x".into(), ..Default::default() };
    /// let b = ContainerConfig { cmd: Some(vec!["echo".into()]), hostname: "y".into(), ..Default::default() };
    /// assert!(compare(Some(&a), Some(&b)));
    /// assert_eq!(a.cache_key(), b.cache_key());
    /// ```
    pub fn cache_key(&self) -> CacheKey {
        self.key_encoder().cache_key()
    }

    /// The [`ExactKey`] of this config.
    ///
    /// ```
    /// use imagecache_core::{ContainerConfig, compare};
    /// let labels = |k: &str, v: &str| Some([(k.to_owned(), v.to_owned())].into());
    /// let a = ContainerConfig { labels: labels("x", ""), ..Default::default() };
    /// let b = ContainerConfig { labels: labels("y", "v"), ..Default::default() };
    /// // Same key, so `compare` decides; different exact keys, so it must.
    /// assert_eq!(a.cache_key(), b.cache_key());
    /// assert_ne!(a.exact_key(), b.exact_key());
    /// assert!(compare(Some(&a), Some(&b)) && !compare(Some(&b), Some(&a)));
    /// assert_eq!(a.cache_keys(), (a.cache_key(), a.exact_key()));
    /// ```
    pub fn exact_key(&self) -> ExactKey {
        self.key_encoder().exact_key(self.labels.as_ref())
    }

    /// The [`CacheKey`] and the [`ExactKey`] of this config, from one
    /// encoding.
    pub fn cache_keys(&self) -> (CacheKey, ExactKey) {
        let (key, exact) = self.cache_key_then_exact();
        (key, exact())
    }

    /// The [`CacheKey`] now, and the [`ExactKey`] when the returned function
    /// is called, from one encoding: for lookups, which need the exact key
    /// only when the cache key found candidates.
    ///
    /// ```
    /// use imagecache_core::ContainerConfig;
    /// let c = ContainerConfig { cmd: Some(vec!["true".into()]), ..Default::default() };
    /// let (key, exact) = c.cache_key_then_exact();
    /// assert_eq!((key, exact()), c.cache_keys());
    /// ```
    pub fn cache_key_then_exact(&self) -> (CacheKey, impl FnOnce() -> ExactKey + '_) {
        let e = self.key_encoder();
        (e.cache_key(), move || e.exact_key(self.labels.as_ref()))
    }

    fn key_encoder(&self) -> KeyEncoder {
        let mut h = KeyEncoder::new();
        h.list(self.env.as_deref());
        h.list(self.on_build.as_deref());
        h.list(self.cmd.as_deref());
        h.list(self.entrypoint.as_deref());
        h.list(self.shell.as_deref());
        h.strings(self.exposed_ports.len(), self.exposed_ports.iter());
        match &self.volumes {
            Some(v) => h.strings(v.len(), v.iter()),
            None => h.len(0),
        }
        h.len(self.labels.as_ref().map_or(0, |l| l.len()));
        let flags = [
            self.attach_stdin,
            self.attach_stdout,
            self.attach_stderr,
            self.network_disabled,
            self.tty,
            self.open_stdin,
            self.stdin_once,
            self.args_escaped,
        ]
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, &f)| acc | (u8::from(f) << i));
        h.bytes(&[flags]);
        h.str(&self.user);
        h.str(&self.working_dir);
        h.str(&self.stop_signal);
        match self.stop_timeout {
            Some(t) => {
                h.bytes(&[1]);
                h.i64(t);
            }
            None => h.bytes(&[0]),
        }
        match &self.healthcheck {
            Some(hc) => {
                h.bytes(&[1]);
                h.i64(hc.interval);
                h.i64(hc.start_interval);
                h.i64(hc.start_period);
                h.i64(hc.timeout);
                h.i64(hc.retries);
                h.list(hc.test.as_deref());
            }
            None => h.bytes(&[0]),
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented encoding, written out by hand: keys are persisted, so
    /// any change to the encoding must show up here (and bump the tag).
    #[test]
    fn encoding_is_as_documented() {
        let c = ContainerConfig {
            env: Some(vec!["A=1".into()]),
            cmd: Some(vec!["sh".into(), "-c".into()]),
            exposed_ports: ["80/tcp".to_owned()].into(),
            labels: Some([("k".to_owned(), "v".to_owned())].into()),
            tty: true,
            args_escaped: true,
            user: "u".into(),
            stop_timeout: Some(-3),
            hostname: "ignored".into(),
            ..Default::default()
        };
        let mut e: Vec<u8> = b"ick2".to_vec();
        let str_ = |e: &mut Vec<u8>, s: &str| {
            e.extend_from_slice(&(s.len() as u32).to_le_bytes());
            e.extend_from_slice(s.as_bytes());
        };
        let n = |e: &mut Vec<u8>, n: u32| e.extend_from_slice(&n.to_le_bytes());
        n(&mut e, 1);
        str_(&mut e, "A=1"); // Env
        n(&mut e, 0); // OnBuild
        n(&mut e, 2);
        str_(&mut e, "sh");
        str_(&mut e, "-c"); // Cmd
        n(&mut e, 0); // Entrypoint
        n(&mut e, 0); // Shell
        n(&mut e, 1);
        str_(&mut e, "80/tcp"); // ExposedPorts
        n(&mut e, 0); // Volumes (absent)
        n(&mut e, 1); // one label
        e.push(0b1001_0000); // Tty (bit 4) and ArgsEscaped (bit 7)
        str_(&mut e, "u");
        str_(&mut e, "");
        str_(&mut e, "");
        e.push(1);
        e.extend_from_slice(&(-3i64).to_le_bytes());
        e.push(0); // no health check
        let key = xxhash_rust::xxh3::xxh3_128(&e).to_le_bytes();
        assert_eq!(c.cache_key().0, key);
        assert_eq!(c.cache_key().to_string(), hex_encode(&key));
        str_(&mut e, "k");
        str_(&mut e, "v"); // the labels, for the exact key only
        assert_eq!(
            c.exact_key().0[..],
            crate::digest::Digest::sha256(&e).as_bytes()[..]
        );
        assert_eq!(
            format!("{:?}", CacheKey([0xab; 16])),
            "CacheKey(abababababababababababababababab)"
        );
    }

    #[test]
    fn long_fields_change_the_key() {
        let long = "x".repeat(1000);
        let a = ContainerConfig {
            env: Some(vec![long.clone(), "y".into()]),
            ..Default::default()
        };
        let b = ContainerConfig {
            env: Some(vec![long, "z".into()]),
            ..Default::default()
        };
        assert_ne!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let a = ContainerConfig {
            env: Some(vec!["ab".into()]),
            ..Default::default()
        };
        let b = ContainerConfig {
            env: Some(vec!["a".into(), "b".into()]),
            ..Default::default()
        };
        let c = ContainerConfig {
            cmd: Some(vec!["ab".into()]),
            ..Default::default()
        };
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
        let d = ContainerConfig {
            user: "ab".into(),
            ..Default::default()
        };
        let e = ContainerConfig {
            working_dir: "ab".into(),
            ..Default::default()
        };
        assert_ne!(d.cache_key(), e.cache_key());
    }
}
