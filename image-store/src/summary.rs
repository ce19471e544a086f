//! The per-image record that lets a store open without reading configs.
//!
//! Everything the indexes need from a config — created time, platform,
//! history length, the cache key of its `container_config`, the layer chain —
//! is derived once when the config is first read, written beside the image
//! with [`WriteOp::SetSummary`](imagecache_core::WriteOp::SetSummary), and
//! handed back by [`StoreBackend::load`](imagecache_core::StoreBackend::load).
//! Configs are immutable, so a summary never goes stale; it is only ever
//! missing (written by another program, or dropped by the backend), and then
//! it is rebuilt from the config.
//!
//! The encoding is a small versioned binary format: decoding 100k summaries
//! must cost milliseconds, not the hundreds a JSON parse would.

use std::collections::HashMap;
use std::sync::Arc;

use imagecache_core::{Algorithm, CacheKey, ChainId, Digest, ExactKey, Image, Platform, Timestamp};

/// Records of another version are ignored (the config is read again and a
/// new record written), so a change of layout needs only a new number.
const VERSION: u8 = 2;

/// What the store keeps in memory about every image, without its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Size of the config in bytes.
    pub(crate) config_len: u64,
    /// The config's `created` time.
    pub(crate) created: Option<Timestamp>,
    /// OS, architecture, variant and OS version.
    pub(crate) platform: Arc<Platform>,
    /// Number of `history` entries.
    pub(crate) history_len: u32,
    /// Number of `rootfs.diff_ids`.
    pub(crate) diff_ids_len: u32,
    /// [`ContainerConfig::cache_key`](imagecache_core::ContainerConfig::cache_key)
    /// of the config's `container_config`.
    pub(crate) cache_key: CacheKey,
    /// [`ContainerConfig::cache_keys`](imagecache_core::ContainerConfig::cache_keys):
    /// the exact key of the same, which confirms a cache match without
    /// reading the config.
    pub(crate) exact_key: ExactKey,
    /// The layer chain, when the diff IDs are valid digests and there is at least one.
    pub(crate) chain_id: Option<ChainId>,
}

impl Summary {
    /// Derives the summary of a parsed image.
    pub(crate) fn of(image: &Image, platforms: &mut Interner) -> Self {
        let (cache_key, exact_key) = image.container_config.cache_keys();
        Self {
            config_len: image.raw_json().len() as u64,
            created: image.created,
            platform: platforms.intern(image.platform()),
            history_len: u32::try_from(image.history.len()).unwrap_or(u32::MAX),
            diff_ids_len: u32::try_from(image.rootfs.raw_diff_ids.len()).unwrap_or(u32::MAX),
            cache_key,
            exact_key,
            chain_id: image.rootfs.chain_id().ok().flatten(),
        }
    }

    /// The binary encoding.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.extend_from_slice(&self.config_len.to_le_bytes());
        match &self.created {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.unix_secs().to_le_bytes());
                out.extend_from_slice(&t.subsec_nanos().to_le_bytes());
                out.extend_from_slice(&t.offset_secs().to_le_bytes());
            }
            None => out.push(0),
        }
        let p = &*self.platform;
        for s in [&p.os, &p.architecture, &p.variant, &p.os_version] {
            put_str(&mut out, s);
        }
        let features = u16::try_from(p.os_features.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&features.to_le_bytes());
        for f in p.os_features.iter().take(usize::from(features)) {
            put_str(&mut out, f);
        }
        out.extend_from_slice(&self.history_len.to_le_bytes());
        out.extend_from_slice(&self.diff_ids_len.to_le_bytes());
        out.extend_from_slice(&self.cache_key.0);
        out.extend_from_slice(&self.exact_key.0);
        match &self.chain_id {
            Some(c) => {
                let d = c.digest();
                out.push(match d.algorithm() {
                    Algorithm::Sha512 => 2,
                    _ => 1,
                });
                out.extend_from_slice(d.as_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes a summary; `None` when it is of another version or damaged,
    /// in which case the caller rebuilds it from the config.
    pub(crate) fn decode(bytes: &[u8], platforms: &mut Interner) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let config_len = u64::from_le_bytes(r.array()?);
        let created = match r.u8()? {
            0 => None,
            1 => {
                let secs = i64::from_le_bytes(r.array()?);
                let nanos = u32::from_le_bytes(r.array()?);
                let offset = i32::from_le_bytes(r.array()?);
                Some(Timestamp::from_parts(secs, nanos, offset)?)
            }
            _ => return None,
        };
        let os = r.str()?;
        let architecture = r.str()?;
        let variant = r.str()?;
        let os_version = r.str()?;
        let n = u16::from_le_bytes(r.array()?);
        let mut os_features = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            os_features.push(r.str()?.to_owned());
        }
        let history_len = u32::from_le_bytes(r.array()?);
        let diff_ids_len = u32::from_le_bytes(r.array()?);
        let cache_key = CacheKey(r.array()?);
        let exact_key = ExactKey(r.array()?);
        let chain_id = match r.u8()? {
            0 => None,
            1 => Some(
                ChainId::try_from(Digest::from_bytes(Algorithm::Sha256, r.take(32)?).ok()?).ok()?,
            ),
            2 => Some(
                ChainId::try_from(Digest::from_bytes(Algorithm::Sha512, r.take(64)?).ok()?).ok()?,
            ),
            _ => return None,
        };
        if !r.0.is_empty() {
            return None;
        }
        let platform = platforms.intern_parts(os, architecture, variant, os_version, os_features);
        Some(Self {
            config_len,
            created,
            platform,
            history_len,
            diff_ids_len,
            cache_key,
            exact_key,
            chain_id,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Platform strings are short; anything longer than 64 KiB is cut, which
    // only makes the summary unequal to the config and forces nothing worse
    // than a mismatch on platform comparison for such a pathological image.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.array()?);
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }
}

/// Shares one [`Platform`] value among all images that have it: a store of
/// 100k images usually has a handful of platforms.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    seen: HashMap<Platform, Arc<Platform>>,
    /// The platforms handed out so far, while there are few: a store
    /// holds a handful, and comparing them field by field is cheaper than
    /// building a key to look up.
    few: Vec<Arc<Platform>>,
}

impl Interner {
    const FEW: usize = 8;

    pub(crate) fn intern(&mut self, p: Platform) -> Arc<Platform> {
        if let Some(shared) = self.seen.get(&p) {
            return shared.clone();
        }
        let shared = Arc::new(p.clone());
        self.seen.insert(p, shared.clone());
        if self.few.len() < Self::FEW {
            self.few.push(shared.clone());
        }
        shared
    }

    fn intern_parts(
        &mut self,
        os: &str,
        architecture: &str,
        variant: &str,
        os_version: &str,
        os_features: Vec<String>,
    ) -> Arc<Platform> {
        let found = self.few.iter().find(|p| {
            p.os == os
                && p.architecture == architecture
                && p.variant == variant
                && p.os_version == os_version
                && p.os_features == os_features
        });
        if let Some(shared) = found {
            return shared.clone();
        }
        self.intern(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.to_owned(),
            os_version: os_version.to_owned(),
            os_features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut i = Interner::default();
        Summary {
            config_len: 1234,
            created: Timestamp::parse_rfc3339("2024-05-01T12:00:00.5+02:00").ok(),
            platform: i.intern(Platform {
                os: "windows".into(),
                architecture: "amd64".into(),
                variant: String::new(),
                os_version: "10.0.17763.5329".into(),
                os_features: vec!["win32k".into()],
            }),
            history_len: 7,
            diff_ids_len: 5,
            cache_key: CacheKey([9; 16]),
            exact_key: ExactKey([7; 32]),
            chain_id: ChainId::parse(
                "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106",
            )
            .ok(),
        }
    }

    #[test]
    fn roundtrips() {
        let s = sample();
        let mut i = Interner::default();
        assert_eq!(Summary::decode(&s.encode(), &mut i), Some(s.clone()));
        let none = Summary {
            created: None,
            chain_id: None,
            ..s
        };
        assert_eq!(Summary::decode(&none.encode(), &mut i), Some(none));
    }

    #[test]
    fn damaged_or_foreign_records_decode_to_none() {
        let bytes = sample().encode();
        let mut i = Interner::default();
        for cut in 0..bytes.len() {
            assert_eq!(Summary::decode(&bytes[..cut], &mut i), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Summary::decode(&longer, &mut i), None);
        let mut other_version = bytes;
        other_version[0] = 99;
        assert_eq!(Summary::decode(&other_version, &mut i), None);
    }

    #[test]
    fn platforms_are_shared() {
        let mut i = Interner::default();
        let a = Summary::decode(&sample().encode(), &mut i).unwrap();
        let b = Summary::decode(&sample().encode(), &mut i).unwrap();
        assert!(Arc::ptr_eq(&a.platform, &b.platform));
    }
}
