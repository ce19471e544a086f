//! Disk usage in real bytes, as a backend reports it.

use std::fmt;

/// What a part of a backend's [`Usage`] holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum UsageKind {
    /// Image configs.
    Configs,
    /// Image metadata values and summaries.
    Metadata,
    /// Names (`repositories.json`, a table, records).
    Names,
    /// Lease records.
    Leases,
    /// Indexes, journals and other records the backend keeps for itself.
    Index,
    /// Blob bodies.
    Blobs,
    /// Blob notes.
    Notes,
    /// Unfinished writes: temp files, staged objects.
    Temp,
    /// Space the backend holds but no record uses (free pages of a database
    /// file, incomplete multipart uploads).
    Overhead,
}

impl UsageKind {
    /// A short lowercase name, for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Configs => "configs",
            Self::Metadata => "metadata",
            Self::Names => "names",
            Self::Leases => "leases",
            Self::Index => "index",
            Self::Blobs => "blobs",
            Self::Notes => "notes",
            Self::Temp => "temp",
            Self::Overhead => "overhead",
        }
    }
}

impl fmt::Display for UsageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One part of a [`Usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsagePart {
    /// What it holds.
    pub kind: UsageKind,
    /// How many items (files, records, objects); 0 where items do not apply.
    pub count: u64,
    /// Bytes it occupies on the storage: allocated blocks for files, object
    /// sizes for S3, the share of the file for a database.
    pub bytes: u64,
}

/// The space a backend occupies, by part.
///
/// Real bytes, not logical ones: a file's allocated blocks, a database
/// file's pages (with its free pages as [`UsageKind::Overhead`]), S3 object
/// sizes. Parts a backend cannot measure are left out rather than guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// The parts, at most one per kind, in [`UsageKind`] order.
    pub parts: Vec<UsagePart>,
    /// The total the storage itself reports, when it has one (the size of
    /// a database file), which may differ from the sum of the parts.
    pub total: Option<u64>,
}

impl Usage {
    /// Adds `count` items and `bytes` to the part of `kind`.
    pub fn add(&mut self, kind: UsageKind, count: u64, bytes: u64) {
        match self.parts.binary_search_by(|p| p.kind.cmp(&kind)) {
            Ok(i) => {
                self.parts[i].count += count;
                self.parts[i].bytes += bytes;
            }
            Err(i) => self.parts.insert(i, UsagePart { kind, count, bytes }),
        }
    }

    /// The part of `kind`, if reported.
    pub fn part(&self, kind: UsageKind) -> Option<UsagePart> {
        self.parts.iter().copied().find(|p| p.kind == kind)
    }

    /// Bytes of every part, or [`Usage::total`] when the storage reports
    /// one.
    pub fn bytes(&self) -> u64 {
        self.total
            .unwrap_or_else(|| self.parts.iter().map(|p| p.bytes).sum())
    }

    /// Adds every part of `other` (and its total) to this one.
    pub fn merge(&mut self, other: &Self) {
        for p in &other.parts {
            self.add(p.kind, p.count, p.bytes);
        }
        if let Some(t) = other.total {
            self.total = Some(self.total.unwrap_or(0) + t);
        }
    }
}

/// The size a file occupies on disk: its allocated blocks where the
/// platform reports them, else its length.
pub fn allocated_bytes(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.blocks().saturating_mul(512)
    }
    #[cfg(not(unix))]
    {
        meta.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_accumulate_in_kind_order() {
        let mut u = Usage::default();
        u.add(UsageKind::Blobs, 1, 10);
        u.add(UsageKind::Configs, 2, 5);
        u.add(UsageKind::Blobs, 1, 10);
        assert_eq!(
            u.parts.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [UsageKind::Configs, UsageKind::Blobs]
        );
        assert_eq!(
            u.part(UsageKind::Blobs).map(|p| (p.count, p.bytes)),
            Some((2, 20))
        );
        assert_eq!(u.bytes(), 25);
        u.total = Some(100);
        assert_eq!(u.bytes(), 100);
    }
}
