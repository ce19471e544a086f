//! Leases: what a running build or pull holds so that no delete or garbage
//! collection removes it.
//!
//! A [`Lease`] has an ID, a creation time, an expiry, labels and a set of
//! [`LeaseResource`]s. It holds its resources only while it is live
//! ([`Lease::is_live`]): a holder that dies without deleting its lease stops
//! holding anything once the lease expires, so no crash pins storage for
//! ever. Backends store leases as [`WriteOp::SetLease`](crate::WriteOp) and
//! [`WriteOp::DeleteLease`](crate::WriteOp) and list them with
//! [`StoreBackend::leases`](crate::StoreBackend::leases).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{ChainId, Digest, Error, ImageId, Key, MetadataKey, Result, Timestamp};

/// The name of a lease: one to 128 characters from `A-Z a-z 0-9 . _ -`,
/// not starting with `.` (the rules of [`MetadataKey`]), so it is always a
/// safe file name or object-key segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(String);

/// As its text; read back through [`LeaseId::new`]'s checks.
impl serde::Serialize for LeaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for LeaseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

impl LeaseId {
    /// Validates a lease ID.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] naming what is wrong.
    ///
    /// ```
    /// use imagecache_core::LeaseId;
    /// assert!(LeaseId::new("build-42").is_ok());
    /// assert!(LeaseId::new("../x").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let key = MetadataKey::new(id)?;
        Ok(Self(key.as_str().to_owned()))
    }

    /// A new random ID: `lease-` and 24 hex digits from the clock, the
    /// process and a counter, unique across processes and machines in
    /// practice.
    pub fn random() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = crate::Hasher::new(crate::Algorithm::Sha256);
        hasher.update(&Timestamp::now_utc().unix_nanos().to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let addr = &raw const COUNTER as usize;
        hasher.update(&addr.to_le_bytes());
        let digest = hasher.finish();
        Self(format!("lease-{}", &digest.hex()[..24]))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for LeaseId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Something a lease holds.
///
/// Holding an image holds its config, its parents and the blobs of its
/// layers; holding a layer (by chain ID) holds the blobs of that layer;
/// holding a blob holds it and every variant its notes name (gzip, zstd,
/// decompressed). A lease may hold what does not exist yet, as a pull does
/// before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseResource {
    /// An image config, with its parents and layers.
    Image(ImageId),
    /// A layer chain, as the image store counts references to it.
    Layer(ChainId),
    /// A cached blob and its noted variants.
    Blob(Digest),
}

impl LeaseResource {
    /// Parses the text form: `image:sha256:…`, `layer:sha256:…` or
    /// `blob:sha256:…`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an unknown kind, [`Error::InvalidDigest`]
    /// for a bad digest.
    ///
    /// ```
    /// use imagecache_core::LeaseResource;
    /// let hex = "a".repeat(64);
    /// let r = LeaseResource::parse(&format!("blob:sha256:{hex}"))?;
    /// assert_eq!(r.to_string(), format!("blob:sha256:{hex}"));
    /// assert!(LeaseResource::parse("volume:x").is_err());
    /// # Ok::<(), imagecache_core::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        let (kind, digest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "image" => Ok(Self::Image(ImageId::parse(digest)?)),
            "layer" => Ok(Self::Layer(ChainId::parse(digest)?)),
            "blob" => Ok(Self::Blob(Digest::parse(digest)?)),
            _ => Err(Error::InvalidKey {
                key: s.chars().take(200).collect(),
                reason: "a lease resource is image:<digest>, layer:<digest> or blob:<digest>",
            }),
        }
    }
}

impl fmt::Display for LeaseResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(id) => write!(f, "image:{id}"),
            Self::Layer(id) => write!(f, "layer:{id}"),
            Self::Blob(d) => write!(f, "blob:{d}"),
        }
    }
}

impl std::str::FromStr for LeaseResource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A lease: resources held until it is deleted or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its name.
    pub id: LeaseId,
    /// When it was created.
    pub created: Timestamp,
    /// When it stops holding anything, unless renewed.
    pub expires: Timestamp,
    /// Free-form labels, for filters and for telling holders apart.
    pub labels: BTreeMap<String, String>,
    /// What it holds.
    pub resources: BTreeSet<LeaseResource>,
}

/// The label that marks the lease a garbage collection takes on what it
/// is about to remove. Such a lease holds nothing; it tells holders that
/// take a lease on the same resources to wait (see the lifecycle docs of
/// the cache engine).
pub const GC_LEASE_LABEL: &str = "imagecache.gc";

/// The longest a lease record may be once encoded.
pub const MAX_LEASE_RECORD: usize = 16 << 20;

impl Lease {
    /// The default expiry of a new lease: 24 hours, as containerd's client
    /// uses.
    pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A new lease holding nothing, created now and expiring after `ttl`.
    pub fn new(id: LeaseId, ttl: Duration) -> Self {
        let created = Timestamp::now_utc();
        Self {
            id,
            expires: after(created, ttl),
            created,
            labels: BTreeMap::new(),
            resources: BTreeSet::new(),
        }
    }

    /// Whether the lease holds its resources at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires.cmp_instant(&now).is_gt()
    }

    /// Whether this is the lease of a garbage collection
    /// ([`GC_LEASE_LABEL`]).
    pub fn is_collection(&self) -> bool {
        self.labels.contains_key(GC_LEASE_LABEL)
    }

    /// Moves the expiry to `ttl` after `now`.
    pub fn renew(&mut self, now: Timestamp, ttl: Duration) {
        self.expires = after(now, ttl);
    }

    /// The record a backend stores: JSON with the ID, RFC 3339 times,
    /// labels and resources in their text form, sorted.
    pub fn encode(&self) -> Bytes {
        let wire = Wire {
            id: self.id.as_str().to_owned(),
            created: self.created.to_rfc3339_nano(),
            expires: self.expires.to_rfc3339_nano(),
            labels: self.labels.clone(),
            resources: self.resources.iter().map(ToString::to_string).collect(),
        };
        // Serialising strings and maps of strings cannot fail.
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a record written by [`Lease::encode`].
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `what` (the file or key read) when the
    /// record is not a lease.
    pub fn decode(what: &str, data: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            key: Key::Other(what.to_owned()),
            reason,
            source: None,
        };
        if data.len() > MAX_LEASE_RECORD {
            return Err(corrupt(format!(
                "a lease record is {} bytes, over {MAX_LEASE_RECORD}",
                data.len()
            )));
        }
        let wire: Wire = serde_json::from_slice(data)
            .map_err(|e| corrupt(format!("not a lease record: {e}")))?;
        let time = |field: &str, s: &str| {
            Timestamp::parse_rfc3339(s).map_err(|e| corrupt(format!("lease {field}: {e}")))
        };
        let mut resources = BTreeSet::new();
        for r in &wire.resources {
            resources.insert(LeaseResource::parse(r).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(Self {
            id: LeaseId::new(wire.id).map_err(|e| corrupt(e.to_string()))?,
            created: time("created", &wire.created)?,
            expires: time("expires", &wire.expires)?,
            labels: wire.labels,
            resources,
        })
    }
}

/// The last instant an RFC 3339 time with a four-digit year names,
/// 9999-12-31T23:59:59.999999999Z, in nanoseconds since the Unix epoch. A
/// lease expiring later could be written but never read back.
const LATEST_EXPIRY_NANOS: i128 = 253_402_300_799_999_999_999;

/// `t + d`, saturating at the end of year 9999.
pub(crate) fn after(t: Timestamp, d: Duration) -> Timestamp {
    let nanos = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    let end = t.unix_nanos().saturating_add(nanos);
    Timestamp::from_unix_nanos(end.min(LATEST_EXPIRY_NANOS.max(t.unix_nanos())))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: String,
    created: String,
    expires: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resources: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn record_round_trips() {
        let mut lease = Lease::new(LeaseId::new("b1").unwrap(), Duration::from_secs(60));
        lease.labels.insert("k".into(), "v".into());
        lease
            .resources
            .insert(LeaseResource::Image(ImageId::parse(&digest('a')).unwrap()));
        lease
            .resources
            .insert(LeaseResource::Blob(Digest::parse(&digest('b')).unwrap()));
        let back = Lease::decode("x", &lease.encode()).unwrap();
        assert_eq!(back, lease);
    }

    #[test]
    fn liveness_follows_expiry() {
        let lease = Lease::new(LeaseId::new("b1").unwrap(), Duration::from_secs(60));
        assert!(lease.is_live(lease.created));
        assert!(!lease.is_live(after(lease.created, Duration::from_secs(61))));
        assert!(!lease.is_live(lease.expires));
    }

    #[test]
    fn a_lease_of_any_length_reads_back() {
        for ttl in [Duration::MAX, Duration::from_secs(99_999_999_999 * 604_800)] {
            let mut lease = Lease::new(LeaseId::new("long").unwrap(), ttl);
            let back = Lease::decode("x", &lease.encode()).unwrap();
            assert_eq!(back, lease);
            assert_eq!(
                lease.expires.to_rfc3339_nano(),
                "9999-12-31T23:59:59.999999999Z"
            );
            lease.renew(lease.created, ttl);
            assert_eq!(Lease::decode("x", &lease.encode()).unwrap(), lease);
        }
    }

    #[test]
    fn bad_records_are_corrupt() {
        for bad in [
            &b""[..],
            b"{}",
            b"\xff",
            br#"{"id":"../x","created":"2020-01-01T00:00:00Z","expires":"2020-01-01T00:00:00Z"}"#,
            br#"{"id":"a","created":"yesterday","expires":"2020-01-01T00:00:00Z"}"#,
            br#"{"id":"a","created":"2020-01-01T00:00:00Z","expires":"2020-01-01T00:00:00Z","resources":["vol:x"]}"#,
            br#"{"id":"a","created":"2020-01-01T00:00:00Z","expires":"2020-01-01T00:00:00Z","extra":1}"#,
        ] {
            let err = Lease::decode("leases/a", bad).unwrap_err();
            assert!(
                matches!(err, Error::Corrupt { .. }),
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
            assert!(err.to_string().contains("leases/a"), "{err}");
        }
    }

    #[test]
    fn random_ids_differ_and_are_valid() {
        let a = LeaseId::random();
        let b = LeaseId::random();
        assert_ne!(a, b);
        assert!(LeaseId::new(a.as_str()).is_ok());
    }
}
