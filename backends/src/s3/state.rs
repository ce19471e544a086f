//! The merged view of the image log, and the formats of record and index
//! objects.
//!
//! # Merging
//!
//! Every change to images is an operation inside a *record* object whose
//! name is a [`RecordName`]: a time stamp in nanoseconds and a random
//! number. Operation `i` of record `r` carries the [`Stamp`] `(r, i)`, and
//! stamps are totally ordered. The merged [`State`] keeps, for every
//! register (an image's last put, its last removal, each metadata key, its
//! summary, its quarantine reason), the value with the greatest stamp. That
//! makes merging commutative, associative and idempotent: any set of records
//! and indexes merges to the same state whatever the order in which they are
//! read, and reading one twice changes nothing. So two readers that have seen
//! the same objects agree, and an index (a merged state written by
//! compaction) can be merged with the records it does not cover, or with
//! another index, without losing anything.
//!
//! An image exists when its last put is newer than its last removal (delete
//! or quarantine). A metadata value or summary counts only when it is newer
//! than the last removal, so a delete hides everything written before it,
//! and what was written before a delete is dropped from the state at once.
//!
//! Each name is a register too: the image it points at, or nothing. A name
//! counts when its image exists and the name was set after the image's last
//! removal, so removing an image removes its names, whichever of the two
//! records a reader sees first, and storing the image again does not bring
//! them back. Compaction turns such dead names into removals, which are
//! forgotten after the horizon like the others.
//!
//! # Formats
//!
//! Both objects start with a 4-byte magic. Integers are unsigned LEB128
//! varints; byte strings are a varint length and the bytes; an image ID is
//! its 32 hash bytes; a stamp is its three numbers as varints.
//!
//! ```text
//! record: "ICR2" varint(count) op* u32le(crc32 of all bytes before it)
//!         ("ICR1" is the same without the checksum, as earlier versions
//!         wrote it; it is still read)
//!   op:   1 id                      put marker
//!         2 id key bytes            set metadata
//!         3 id key                  delete metadata
//!         4 id bytes                set summary
//!         5 id                      delete
//!         6 id bytes(utf-8 reason)  quarantine
//!         7 bytes(name) id          set name
//!         8 bytes(name)             delete name
//! index:  "ICI1" varint(n) bytes(record name)*n  varint(m) image*m
//!         "ICI2" the same, then varint(p) (bytes(name) stamp u8(has image) [id])*p
//!   image: id flags [put] [removed] varint(k) (key stamp u8(has value) [bytes])*k
//!          [summary: stamp u8(has value) [bytes]] [quarantine: stamp bytes]
//!   flags: bit 0 put, bit 1 removed, bit 2 summary, bit 3 quarantine
//! ```
//!
//! A name is its full form (`docker.io/library/busybox:latest`) in UTF-8.
//! An index with no names is written as `ICI1`, which versions without
//! names read too; records and indexes with names are unreadable to them
//! (they report those objects instead of guessing).
//!
//! Decoding checks every length against what remains, so a damaged object is
//! an error naming what was wrong, never a panic. A record's checksum makes
//! a changed byte an error too, where it would otherwise decode as another
//! value.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey, Reference, SnapshotEntry};

/// A record without a checksum, as earlier versions wrote them (read only).
const RECORD_MAGIC_V1: &[u8; 4] = b"ICR1";
/// A record followed by the CRC-32 of everything before it.
const RECORD_MAGIC: &[u8; 4] = b"ICR2";
const INDEX_MAGIC: &[u8; 4] = b"ICI1";
/// An index with a names section after the images.
const INDEX_NAMES_MAGIC: &[u8; 4] = b"ICI2";

/// The name of a record or index object: when it was named, and a random
/// number that keeps names from two writers in the same nanosecond apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct RecordName {
    pub(super) nanos: u64,
    pub(super) random: u64,
}

impl RecordName {
    /// Parses the form written by `Display`: 20 decimal digits, `-`, 16 hex digits.
    pub(super) fn parse(s: &str) -> Option<Self> {
        let (nanos, random) = s.split_once('-')?;
        if nanos.len() != 20 || random.len() != 16 {
            return None;
        }
        if !nanos.bytes().all(|c| c.is_ascii_digit())
            || !random
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        Some(Self {
            nanos: nanos.parse().ok()?,
            random: u64::from_str_radix(random, 16).ok()?,
        })
    }

    fn stamp(self, op: u32) -> Stamp {
        Stamp {
            nanos: self.nanos,
            random: self.random,
            op,
        }
    }
}

impl fmt::Display for RecordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fixed widths make the lexical order of names their time order.
        write!(f, "{:020}-{:016x}", self.nanos, self.random)
    }
}

/// The position of one operation in the merged history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Stamp {
    nanos: u64,
    random: u64,
    op: u32,
}

/// One decoded operation of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RecordOp {
    Put(ImageId),
    SetMetadata(ImageId, MetadataKey, Bytes),
    DeleteMetadata(ImageId, MetadataKey),
    SetSummary(ImageId, Bytes),
    Delete(ImageId),
    Quarantine(ImageId, String),
    SetName(Reference, ImageId),
    DeleteName(Reference),
}

/// The merged registers of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ImageState {
    put: Option<Stamp>,
    removed: Option<Stamp>,
    metadata: BTreeMap<MetadataKey, (Stamp, Option<Bytes>)>,
    summary: Option<(Stamp, Option<Bytes>)>,
    quarantine: Option<(Stamp, String)>,
}

impl ImageState {
    /// Whether the image exists: put after its last removal.
    pub(super) fn exists(&self) -> bool {
        self.put > self.removed
    }

    fn newer_than_removal(&self, stamp: Stamp) -> bool {
        self.removed.is_none_or(|r| stamp > r)
    }

    fn set_put(&mut self, stamp: Stamp) {
        if self.put.is_none_or(|p| stamp > p) {
            self.put = Some(stamp);
        }
    }

    fn set_removed(&mut self, stamp: Stamp) {
        if self.removed.is_none_or(|r| stamp > r) {
            self.removed = Some(stamp);
            // Values written before the removal can never count again.
            self.metadata.retain(|_, (s, _)| *s > stamp);
            if self.summary.as_ref().is_some_and(|(s, _)| *s < stamp) {
                self.summary = None;
            }
        }
    }

    fn set_metadata(&mut self, key: MetadataKey, stamp: Stamp, value: Option<Bytes>) {
        if !self.newer_than_removal(stamp) {
            return;
        }
        match self.metadata.get(&key) {
            Some((s, _)) if *s >= stamp => {}
            _ => {
                self.metadata.insert(key, (stamp, value));
            }
        }
    }

    fn set_summary(&mut self, stamp: Stamp, value: Option<Bytes>) {
        if !self.newer_than_removal(stamp) {
            return;
        }
        if self.summary.as_ref().is_none_or(|(s, _)| stamp > *s) {
            self.summary = Some((stamp, value));
        }
    }

    fn set_quarantine(&mut self, stamp: Stamp, reason: String) {
        if self.quarantine.as_ref().is_none_or(|(s, _)| stamp > *s) {
            self.quarantine = Some((stamp, reason));
        }
        self.set_removed(stamp);
    }

    fn join(&mut self, other: Self) {
        if let Some(s) = other.put {
            self.set_put(s);
        }
        if let Some(s) = other.removed {
            self.set_removed(s);
        }
        for (key, (stamp, value)) in other.metadata {
            self.set_metadata(key, stamp, value);
        }
        if let Some((stamp, value)) = other.summary {
            self.set_summary(stamp, value);
        }
        if let Some((stamp, reason)) = other.quarantine
            && self.quarantine.as_ref().is_none_or(|(s, _)| stamp > *s)
        {
            self.quarantine = Some((stamp, reason));
        }
    }

    /// The value of one metadata key, if set.
    pub(super) fn metadata(&self, key: &MetadataKey) -> Option<&Bytes> {
        self.metadata.get(key).and_then(|(_, v)| v.as_ref())
    }

    /// Why the image was quarantined, if it was.
    pub(super) fn quarantine_reason(&self) -> Option<&str> {
        self.quarantine.as_ref().map(|(_, r)| r.as_str())
    }

    fn entry(&self, id: ImageId) -> SnapshotEntry {
        SnapshotEntry {
            id,
            metadata: self
                .metadata
                .iter()
                .filter_map(|(k, (_, v))| v.as_ref().map(|v| (k.clone(), v.clone())))
                .collect(),
            summary: self.summary.as_ref().and_then(|(_, v)| v.clone()),
        }
    }

    /// Forgets removal markers and deleted values named before `horizon`
    /// (nanoseconds since the epoch). Returns whether anything worth keeping
    /// is left.
    fn forget_before(&mut self, horizon: u64) -> bool {
        self.metadata
            .retain(|_, (s, v)| v.is_some() || s.nanos >= horizon);
        if self
            .summary
            .as_ref()
            .is_some_and(|(s, v)| v.is_none() && s.nanos < horizon)
        {
            self.summary = None;
        }
        let exists = self.exists();
        let old_removal = self.removed.is_some_and(|r| r.nanos < horizon);
        exists || !old_removal || self.quarantine.is_some()
    }
}

/// The merged state of every record and index read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct State {
    images: BTreeMap<ImageId, ImageState>,
    /// Each name's last write: the image it points at, or `None` when removed.
    names: BTreeMap<Reference, (Stamp, Option<ImageId>)>,
}

impl State {
    /// Applies the operations of one record.
    pub(super) fn apply(&mut self, name: RecordName, ops: Vec<RecordOp>) {
        for (i, op) in ops.into_iter().enumerate() {
            let stamp = name.stamp(u32::try_from(i).unwrap_or(u32::MAX));
            let (id, op) = match op {
                RecordOp::SetName(name, id) => {
                    self.set_name(name, stamp, Some(id));
                    continue;
                }
                RecordOp::DeleteName(name) => {
                    self.set_name(name, stamp, None);
                    continue;
                }
                RecordOp::Put(id) => (id, ImageOp::Put),
                RecordOp::SetMetadata(id, key, value) => (id, ImageOp::Metadata(key, Some(value))),
                RecordOp::DeleteMetadata(id, key) => (id, ImageOp::Metadata(key, None)),
                RecordOp::SetSummary(id, value) => (id, ImageOp::Summary(value)),
                RecordOp::Delete(id) => (id, ImageOp::Removed),
                RecordOp::Quarantine(id, reason) => (id, ImageOp::Quarantine(reason)),
            };
            let image = self.images.entry(id).or_default();
            match op {
                ImageOp::Put => image.set_put(stamp),
                ImageOp::Metadata(key, value) => image.set_metadata(key, stamp, value),
                ImageOp::Summary(value) => image.set_summary(stamp, Some(value)),
                ImageOp::Removed => image.set_removed(stamp),
                ImageOp::Quarantine(reason) => image.set_quarantine(stamp, reason),
            }
        }
    }

    /// Keeps a name write if it is the newest of its name.
    fn set_name(&mut self, name: Reference, stamp: Stamp, target: Option<ImageId>) {
        match self.names.get(&name) {
            Some((s, _)) if *s >= stamp => {}
            _ => {
                self.names.insert(name, (stamp, target));
            }
        }
    }

    /// Whether a name written at `stamp` pointing at `id` counts: the image
    /// exists and has not been removed since.
    fn name_counts(&self, stamp: Stamp, id: &ImageId) -> bool {
        self.images
            .get(id)
            .is_some_and(|image| image.exists() && image.newer_than_removal(stamp))
    }

    /// Every name that counts, with its image, sorted by name.
    pub(super) fn names(&self) -> impl Iterator<Item = (&Reference, ImageId)> + '_ {
        self.names.iter().filter_map(|(name, (stamp, target))| {
            target
                .filter(|id| self.name_counts(*stamp, id))
                .map(|id| (name, id))
        })
    }

    /// Merges another state (an index) into this one.
    pub(super) fn join(&mut self, other: Self) {
        for (id, image) in other.images {
            self.images.entry(id).or_default().join(image);
        }
        for (name, (stamp, target)) in other.names {
            self.set_name(name, stamp, target);
        }
    }

    /// One image's registers.
    pub(super) fn image(&self, id: &ImageId) -> Option<&ImageState> {
        self.images.get(id)
    }

    /// Whether an image exists.
    pub(super) fn exists(&self, id: &ImageId) -> bool {
        self.images.get(id).is_some_and(ImageState::exists)
    }

    /// Every existing image, sorted by ID.
    pub(super) fn entries(&self) -> impl Iterator<Item = SnapshotEntry> + '_ {
        self.images
            .iter()
            .filter(|(_, i)| i.exists())
            .map(|(id, i)| i.entry(*id))
    }

    /// Every quarantined image and why, sorted by ID.
    pub(super) fn quarantined(&self) -> impl Iterator<Item = (ImageId, &str)> + '_ {
        self.images
            .iter()
            .filter_map(|(id, i)| i.quarantine_reason().map(|r| (*id, r)))
    }

    /// A copy without the removal markers and deleted values named before
    /// `horizon`, as compaction writes it.
    ///
    /// A name whose image was removed after it was set can never count
    /// again, so it becomes a removal with the same stamp, which keeps its
    /// place among the name's writes; that must happen before the image's
    /// removal marker may be forgotten.
    pub(super) fn compacted(&self, horizon: u64) -> Self {
        let names = self
            .names
            .iter()
            .map(|(name, (stamp, target))| {
                let dead = target.is_some_and(|id| {
                    self.images
                        .get(&id)
                        .is_some_and(|image| !image.newer_than_removal(*stamp))
                });
                (name.clone(), (*stamp, if dead { None } else { *target }))
            })
            .filter(|(_, (stamp, target))| target.is_some() || stamp.nanos >= horizon)
            .collect();
        let mut images = self.images.clone();
        images.retain(|_, image| image.forget_before(horizon));
        Self { images, names }
    }

    /// Number of images with any register, existing or not.
    pub(super) fn len(&self) -> usize {
        self.images.len()
    }
}

/// An image's share of a record operation.
enum ImageOp {
    Put,
    Metadata(MetadataKey, Option<Bytes>),
    Summary(Bytes),
    Removed,
    Quarantine(String),
}

/// Why a record or index could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DecodeError(pub(super) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }

    fn id(&mut self, id: &ImageId) {
        self.0.extend_from_slice(&id.to_bytes());
    }

    fn key(&mut self, key: &MetadataKey) {
        self.bytes(key.as_str().as_bytes());
    }

    fn name(&mut self, name: &Reference) {
        self.bytes(name.as_str().as_bytes());
    }

    fn stamp(&mut self, s: Stamp) {
        self.varint(s.nanos);
        self.varint(s.random);
        self.varint(u64::from(s.op));
    }

    fn optional_bytes(&mut self, v: Option<&Bytes>) {
        match v {
            Some(v) => {
                self.0.push(1);
                self.bytes(v);
            }
            None => self.0.push(0),
        }
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, what: &str) -> Result<T, DecodeError> {
        Err(DecodeError(format!("{what} at byte {}", self.pos)))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => self.fail("truncated"),
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint longer than 64 bits")
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() - self.pos => Ok(n),
            _ => self.fail("length beyond the end"),
        }
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.len()?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn id(&mut self) -> Result<ImageId, DecodeError> {
        let Some(raw) = self.buf.get(self.pos..self.pos + 32) else {
            return self.fail("truncated image ID");
        };
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(raw);
        self.pos += 32;
        Ok(ImageId::from_bytes(bytes))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        match String::from_utf8(b.to_vec()) {
            Ok(s) => Ok(s),
            Err(_) => self.fail("text is not UTF-8"),
        }
    }

    fn key(&mut self) -> Result<MetadataKey, DecodeError> {
        let s = self.string()?;
        match MetadataKey::new(s) {
            Ok(k) => Ok(k),
            Err(_) => self.fail("invalid metadata key"),
        }
    }

    fn name(&mut self) -> Result<Reference, DecodeError> {
        let s = self.string()?;
        match Reference::parse(&s) {
            Ok(name) => Ok(name),
            Err(_) => self.fail("invalid name"),
        }
    }

    fn stamp(&mut self) -> Result<Stamp, DecodeError> {
        let nanos = self.varint()?;
        let random = self.varint()?;
        let op = self.varint()?;
        match u32::try_from(op) {
            Ok(op) => Ok(Stamp { nanos, random, op }),
            Err(_) => self.fail("operation number out of range"),
        }
    }

    fn optional_bytes(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?)),
            _ => self.fail("bad presence byte"),
        }
    }

    fn magic(&mut self, magic: &[u8; 4]) -> Result<(), DecodeError> {
        if self.buf.get(..4) == Some(&magic[..]) {
            self.pos = 4;
            Ok(())
        } else {
            self.fail("unknown format (bad magic)")
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            self.fail("trailing bytes")
        }
    }
}

/// Encodes the operations of one record.
pub(super) fn encode_record(ops: &[RecordOp]) -> Bytes {
    let mut w = Writer(Vec::with_capacity(64 + ops.len() * 64));
    w.0.extend_from_slice(RECORD_MAGIC);
    w.len(ops.len());
    for op in ops {
        match op {
            RecordOp::Put(id) => {
                w.0.push(1);
                w.id(id);
            }
            RecordOp::SetMetadata(id, key, value) => {
                w.0.push(2);
                w.id(id);
                w.key(key);
                w.bytes(value);
            }
            RecordOp::DeleteMetadata(id, key) => {
                w.0.push(3);
                w.id(id);
                w.key(key);
            }
            RecordOp::SetSummary(id, value) => {
                w.0.push(4);
                w.id(id);
                w.bytes(value);
            }
            RecordOp::Delete(id) => {
                w.0.push(5);
                w.id(id);
            }
            RecordOp::Quarantine(id, reason) => {
                w.0.push(6);
                w.id(id);
                w.bytes(reason.as_bytes());
            }
            RecordOp::SetName(name, id) => {
                w.0.push(7);
                w.name(name);
                w.id(id);
            }
            RecordOp::DeleteName(name) => {
                w.0.push(8);
                w.name(name);
            }
        }
    }
    let crc = crc32fast::hash(&w.0);
    w.0.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(w.0)
}

/// Decodes a record, checking its checksum first.
pub(super) fn decode_record(buf: &Bytes) -> Result<Vec<RecordOp>, DecodeError> {
    if buf.get(..4) == Some(&RECORD_MAGIC_V1[..]) {
        return decode_record_body(buf, RECORD_MAGIC_V1);
    }
    let Some(body_len) = buf.len().checked_sub(4).filter(|&n| n >= 4) else {
        return Err(DecodeError("record too short for its checksum".into()));
    };
    let (body, trailer) = buf.split_at(body_len);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32fast::hash(body) != stored {
        return Err(DecodeError(
            "record checksum mismatch (the object was changed after it was written)".into(),
        ));
    }
    decode_record_body(&buf.slice(..body_len), RECORD_MAGIC)
}

fn decode_record_body(buf: &Bytes, magic: &[u8; 4]) -> Result<Vec<RecordOp>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    r.magic(magic)?;
    let count = r.len()?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let op = match r.u8()? {
            1 => RecordOp::Put(r.id()?),
            2 => RecordOp::SetMetadata(r.id()?, r.key()?, r.bytes()?),
            3 => RecordOp::DeleteMetadata(r.id()?, r.key()?),
            4 => RecordOp::SetSummary(r.id()?, r.bytes()?),
            5 => RecordOp::Delete(r.id()?),
            6 => RecordOp::Quarantine(r.id()?, r.string()?),
            7 => RecordOp::SetName(r.name()?, r.id()?),
            8 => RecordOp::DeleteName(r.name()?),
            _ => return r.fail("unknown operation"),
        };
        ops.push(op);
    }
    r.end()?;
    Ok(ops)
}

/// A compacted state and the names of the records it merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// Records whose operations the state holds; readers skip them.
    pub(super) merged: Vec<String>,
    /// The merged state.
    pub(super) state: State,
}

const FLAG_PUT: u8 = 1;
const FLAG_REMOVED: u8 = 2;
const FLAG_SUMMARY: u8 = 4;
const FLAG_QUARANTINE: u8 = 8;

/// Encodes an index.
pub(super) fn encode_index(index: &Index) -> Bytes {
    let mut w = Writer(Vec::with_capacity(64 + index.state.images.len() * 256));
    let with_names = !index.state.names.is_empty();
    w.0.extend_from_slice(if with_names {
        INDEX_NAMES_MAGIC
    } else {
        INDEX_MAGIC
    });
    w.len(index.merged.len());
    for name in &index.merged {
        w.bytes(name.as_bytes());
    }
    w.len(index.state.images.len());
    for (id, image) in &index.state.images {
        w.id(id);
        let mut flags = 0;
        if image.put.is_some() {
            flags |= FLAG_PUT;
        }
        if image.removed.is_some() {
            flags |= FLAG_REMOVED;
        }
        if image.summary.is_some() {
            flags |= FLAG_SUMMARY;
        }
        if image.quarantine.is_some() {
            flags |= FLAG_QUARANTINE;
        }
        w.0.push(flags);
        if let Some(s) = image.put {
            w.stamp(s);
        }
        if let Some(s) = image.removed {
            w.stamp(s);
        }
        w.len(image.metadata.len());
        for (key, (stamp, value)) in &image.metadata {
            w.key(key);
            w.stamp(*stamp);
            w.optional_bytes(value.as_ref());
        }
        if let Some((stamp, value)) = &image.summary {
            w.stamp(*stamp);
            w.optional_bytes(value.as_ref());
        }
        if let Some((stamp, reason)) = &image.quarantine {
            w.stamp(*stamp);
            w.bytes(reason.as_bytes());
        }
    }
    if with_names {
        w.len(index.state.names.len());
        for (name, (stamp, target)) in &index.state.names {
            w.name(name);
            w.stamp(*stamp);
            match target {
                Some(id) => {
                    w.0.push(1);
                    w.id(id);
                }
                None => w.0.push(0),
            }
        }
    }
    Bytes::from(w.0)
}

/// Decodes an index.
pub(super) fn decode_index(buf: &Bytes) -> Result<Index, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let with_names = buf.get(..4) == Some(&INDEX_NAMES_MAGIC[..]);
    r.magic(if with_names {
        INDEX_NAMES_MAGIC
    } else {
        INDEX_MAGIC
    })?;
    let n = r.len()?;
    let mut merged = Vec::with_capacity(n);
    for _ in 0..n {
        merged.push(r.string()?);
    }
    let m = r.len()?;
    let mut images = BTreeMap::new();
    for _ in 0..m {
        let id = r.id()?;
        let flags = r.u8()?;
        if flags & !(FLAG_PUT | FLAG_REMOVED | FLAG_SUMMARY | FLAG_QUARANTINE) != 0 {
            return r.fail("unknown image flags");
        }
        let mut image = ImageState::default();
        if flags & FLAG_PUT != 0 {
            image.put = Some(r.stamp()?);
        }
        if flags & FLAG_REMOVED != 0 {
            image.removed = Some(r.stamp()?);
        }
        let k = r.len()?;
        for _ in 0..k {
            let key = r.key()?;
            let stamp = r.stamp()?;
            let value = r.optional_bytes()?;
            image.metadata.insert(key, (stamp, value));
        }
        if flags & FLAG_SUMMARY != 0 {
            let stamp = r.stamp()?;
            image.summary = Some((stamp, r.optional_bytes()?));
        }
        if flags & FLAG_QUARANTINE != 0 {
            let stamp = r.stamp()?;
            image.quarantine = Some((stamp, r.string()?));
        }
        if images.insert(id, image).is_some() {
            return r.fail("image listed twice");
        }
    }
    let mut names = BTreeMap::new();
    if with_names {
        let p = r.len()?;
        for _ in 0..p {
            let name = r.name()?;
            let stamp = r.stamp()?;
            let target = match r.u8()? {
                0 => None,
                1 => Some(r.id()?),
                _ => return r.fail("bad presence byte"),
            };
            if names.insert(name, (stamp, target)).is_some() {
                return r.fail("name listed twice");
            }
        }
    }
    r.end()?;
    Ok(Index {
        merged,
        state: State { images, names },
    })
}

#[cfg(test)]
mod tests;
