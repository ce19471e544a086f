//! Encodings of what the image tables hold: one image's record, an index
//! block of records, a content block of configs, and a quarantined image.
//!
//! A record holds everything [`StoreBackend::load`] reports about one image
//! (its metadata values and its summary). Records live in index blocks of
//! about [`BLOCK_TARGET`] bytes, so that opening a store reads a few
//! thousand large values instead of one small value per image.
//!
//! Record layout:
//!
//! ```text
//! u8      format (1)
//! varint  summary length + 1, or 0 when there is no summary
//! bytes   summary
//! varint  number of metadata values
//! then, per value, sorted by key:
//!   u8      1 = parent, 2 = builtLocally, 3 = lastUpdated,
//!           0 = another key: u8 length (1..=128) and the key's bytes follow
//!   varint  value length
//!   bytes   value
//! ```
//!
//! Block layout: `u8` format (1), then per image, in no particular order:
//! the 32 bytes of its ID, a varint record length and the record.
//!
//! Content block layout: `u8` format (1), a varint number of slots, a
//! varint length per slot (0 for a slot whose config was removed), then the
//! slots' bytes one after the other. A config keeps its slot number for as
//! long as it is stored, whatever happens to the others.
//!
//! Varints are unsigned LEB128. Decoding checks every length against the
//! bytes that remain, so damaged data is an error, never a panic.
//!
//! [`StoreBackend::load`]: imagecache_core::StoreBackend::load

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use imagecache_core::MetadataKey;

/// The only record format this module writes and reads.
const FORMAT: u8 = 1;

/// The only block format this module writes and reads.
const BLOCK_FORMAT: u8 = 1;

/// The only content block format this module writes and reads.
const CONTENT_FORMAT: u8 = 1;

/// The size a content block is filled to: it fits a 16 KiB page as index
/// blocks fit 32 KiB ones. Reading one config reads its whole block:
/// measured on a million images, 16 KiB blocks made first reads of configs
/// about a quarter cheaper than 32 KiB ones, at little cost to batched
/// writes.
pub(super) const CONTENT_TARGET: usize = (16 << 10) - 64;

// redb's leaf around a block: 4 header bytes, a 4-byte value length and the
// 8-byte key.
const _: () = assert!(BLOCK_TARGET + 16 <= 32 << 10);
const _: () = assert!(CONTENT_TARGET + 16 <= 16 << 10);

/// The size a block is filled to before a new one is started. redb rounds
/// a page up to a power of two, and a leaf holding one block adds 16 bytes
/// (header, value length, key), so a block of a full 32 KiB would take a
/// 64 KiB page; this leaves room for them.
pub(super) const BLOCK_TARGET: usize = (32 << 10) - 64;

/// The 32 hash bytes of an image ID, as tables key them.
pub(super) type ImageKey = [u8; 32];

/// Key codes of the well-known metadata keys; 0 announces another key.
const KNOWN_KEYS: [(u8, MetadataKey); 3] = [
    (1, MetadataKey::PARENT),
    (2, MetadataKey::BUILT_LOCALLY),
    (3, MetadataKey::LAST_UPDATED),
];

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordError(pub(super) &'static str);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for RecordError {}

/// The decoded record of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Record {
    /// Metadata values, sorted by key, each key at most once.
    pub(super) metadata: Vec<(MetadataKey, Bytes)>,
    /// The last summary written, if any.
    pub(super) summary: Option<Bytes>,
}

impl Record {
    /// Sets one metadata value, keeping the list sorted.
    pub(super) fn set(&mut self, key: MetadataKey, value: Bytes) {
        match self.metadata.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.metadata[i].1 = value,
            Err(i) => self.metadata.insert(i, (key, value)),
        }
    }

    /// Removes one metadata value, if present.
    pub(super) fn remove(&mut self, key: &MetadataKey) {
        if let Ok(i) = self.metadata.binary_search_by(|(k, _)| k.cmp(key)) {
            self.metadata.remove(i);
        }
    }

    /// One metadata value.
    pub(super) fn get(&self, key: &MetadataKey) -> Option<&Bytes> {
        self.metadata
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.metadata[i].1)
    }

    /// Appends the encoded record to `out`.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        match &self.summary {
            Some(s) => {
                put_varint(out, s.len() as u64 + 1);
                out.extend_from_slice(s);
            }
            None => put_varint(out, 0),
        }
        put_varint(out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            match KNOWN_KEYS.iter().find(|(_, known)| known == key) {
                Some((code, _)) => out.push(*code),
                None => {
                    let key = key.as_str().as_bytes();
                    // MetadataKey guarantees 1..=128 bytes, so the length fits.
                    out.push(0);
                    out.push(key.len() as u8);
                    out.extend_from_slice(key);
                }
            }
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }

    /// The encoded record.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        let summary = self.summary.as_ref().map_or(0, Bytes::len);
        let metadata: usize = self
            .metadata
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        8 + summary + metadata
    }

    /// Decodes a record. Values and the summary are slices of `data`, so
    /// decoding costs one allocation for the metadata list and none per value.
    pub(super) fn decode(data: &Bytes) -> Result<Self, RecordError> {
        Self::decode_at(data, 0..data.len())
    }

    /// Decodes the record at `range` of `data` (an index block, say).
    pub(super) fn decode_at(block: &Bytes, range: Range<usize>) -> Result<Self, RecordError> {
        let data = block;
        let within = block
            .get(..range.end)
            .filter(|_| range.start <= range.end)
            .ok_or(RecordError("record lies outside its block"))?;
        let mut r = Reader::new(within);
        r.pos = range.start;
        if r.byte()? != FORMAT {
            return Err(RecordError("unknown record format"));
        }
        let summary = match r.varint()? {
            0 => None,
            n => Some(data.slice(r.take(len_of(n - 1)?)?)),
        };
        let count = len_of(r.varint()?)?;
        // Every entry takes at least two bytes, which bounds a damaged
        // count before it becomes an allocation.
        if count > r.remaining() / 2 {
            return Err(RecordError("metadata count exceeds the record"));
        }
        let mut metadata: Vec<(MetadataKey, Bytes)> = Vec::with_capacity(count);
        for _ in 0..count {
            let key = match r.byte()? {
                0 => {
                    let len = usize::from(r.byte()?);
                    metadata_key(&data[r.take(len)?])?
                }
                code => KNOWN_KEYS
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map(|(_, key)| key.clone())
                    .ok_or(RecordError("unknown metadata key code"))?,
            };
            if metadata.last().is_some_and(|(prev, _)| *prev >= key) {
                return Err(RecordError("metadata keys out of order"));
            }
            let value = data.slice(r.take_prefixed()?);
            metadata.push((key, value));
        }
        if r.remaining() != 0 {
            return Err(RecordError("trailing bytes after the record"));
        }
        Ok(Self { metadata, summary })
    }
}

/// A metadata key spelled out in a record.
fn metadata_key(raw: &[u8]) -> Result<MetadataKey, RecordError> {
    let text = std::str::from_utf8(raw).map_err(|_| RecordError("metadata key is not UTF-8"))?;
    MetadataKey::new(text).map_err(|_| RecordError("invalid metadata key"))
}

/// Reads the entries of an index block: each image's key and where its
/// record lies in `data`.
pub(super) fn block_entries(
    data: &[u8],
) -> impl Iterator<Item = Result<(ImageKey, Range<usize>), RecordError>> + '_ {
    let mut r = Reader::new(data);
    let mut failed = false;
    let mut started = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        if !started {
            started = true;
            match r.byte() {
                Ok(BLOCK_FORMAT) => {}
                Ok(_) => {
                    failed = true;
                    return Some(Err(RecordError("unknown block format")));
                }
                Err(err) => {
                    failed = true;
                    return Some(Err(err));
                }
            }
        }
        if r.remaining() == 0 {
            return None;
        }
        let entry = r.take(32).and_then(|id| {
            let record = r.take_prefixed()?;
            let mut key = [0u8; 32];
            key.copy_from_slice(&data[id]);
            Ok((key, record))
        });
        failed = entry.is_err();
        Some(entry)
    })
}

/// Finds one image's record in an index block.
pub(super) fn find_in_block<'d>(
    data: &'d [u8],
    key: &ImageKey,
) -> Result<Option<&'d [u8]>, RecordError> {
    for entry in block_entries(data) {
        let (k, range) = entry?;
        if k == *key {
            return Ok(Some(&data[range]));
        }
    }
    Ok(None)
}

/// Builds index blocks entry by entry.
#[derive(Debug)]
pub(super) struct BlockWriter {
    out: Vec<u8>,
    entries: usize,
}

impl BlockWriter {
    pub(super) fn new() -> Self {
        let mut out = Vec::with_capacity(BLOCK_TARGET + 1024);
        out.push(BLOCK_FORMAT);
        Self { out, entries: 0 }
    }

    /// A writer that appends to an existing, well-formed block.
    pub(super) fn continuing(block: &[u8]) -> Self {
        let mut out = Vec::with_capacity(BLOCK_TARGET + 1024);
        out.extend_from_slice(block);
        Self {
            out,
            entries: block_entries(block).count(),
        }
    }

    pub(super) fn push(&mut self, key: &ImageKey, record: &[u8]) {
        self.out.extend_from_slice(key);
        put_varint(&mut self.out, record.len() as u64);
        self.out.extend_from_slice(record);
        self.entries += 1;
    }

    /// Number of entries pushed.
    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// Encoded size so far.
    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.out
    }
}

/// Builds a content block slot by slot.
#[derive(Debug, Default)]
pub(super) struct ContentWriter {
    lens: Vec<usize>,
    data: Vec<u8>,
}

impl ContentWriter {
    /// Adds a config; returns its slot.
    pub(super) fn push(&mut self, config: &[u8]) -> u32 {
        self.lens.push(config.len());
        self.data.extend_from_slice(config);
        (self.lens.len() - 1) as u32
    }

    /// Number of slots.
    pub(super) fn slots(&self) -> usize {
        self.lens.len()
    }

    /// About the encoded size: a slot's length takes at most three bytes
    /// for any config under 2 MiB.
    pub(super) fn len(&self) -> usize {
        1 + 5 + 3 * self.lens.len() + self.data.len()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 8);
        out.push(CONTENT_FORMAT);
        put_varint(&mut out, self.lens.len() as u64);
        for len in &self.lens {
            put_varint(&mut out, *len as u64);
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// Where each slot of a content block lies in `data`; an empty range for a
/// removed slot.
pub(super) fn content_slots(data: &[u8]) -> Result<Vec<Range<usize>>, RecordError> {
    let mut r = Reader::new(data);
    if r.byte()? != CONTENT_FORMAT {
        return Err(RecordError("unknown content block format"));
    }
    let count = len_of(r.varint()?)?;
    // Every slot takes at least one byte of lengths, which bounds a damaged
    // count before it becomes an allocation.
    if count > r.remaining() {
        return Err(RecordError("slot count exceeds the content block"));
    }
    let mut lens = Vec::with_capacity(count);
    for _ in 0..count {
        lens.push(len_of(r.varint()?)?);
    }
    let mut slots = Vec::with_capacity(count);
    for len in lens {
        slots.push(r.take(len)?);
    }
    if r.remaining() != 0 {
        return Err(RecordError("trailing bytes after the content block"));
    }
    Ok(slots)
}

/// The bytes of one slot, or `None` when it was removed or never existed.
pub(super) fn content_slot(data: &[u8], slot: u32) -> Result<Option<&[u8]>, RecordError> {
    let slots = content_slots(data)?;
    Ok(usize::try_from(slot)
        .ok()
        .and_then(|i| slots.get(i))
        .filter(|range| !range.is_empty())
        .map(|range| &data[range.clone()]))
}

/// A content block without the configs in `removed` (slot numbers), every
/// other config keeping its slot; `None` when no config is left.
pub(super) fn remove_slots(data: &[u8], removed: &[u32]) -> Result<Option<Vec<u8>>, RecordError> {
    let slots = content_slots(data)?;
    let mut out = ContentWriter::default();
    for (i, range) in slots.iter().enumerate() {
        if removed.iter().any(|slot| *slot as usize == i) {
            out.push(&[]);
        } else {
            out.push(&data[range.clone()]);
        }
    }
    let live = out.lens.iter().any(|len| *len > 0);
    Ok(live.then(|| out.encode()))
}

/// What the `quarantine` table keeps for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QuarantineEntry {
    /// Why the image was set aside.
    pub(super) reason: String,
    /// The image's record, as it was stored (possibly undecodable).
    pub(super) record: Bytes,
    /// The config bytes, as they were stored.
    pub(super) content: Bytes,
}

impl QuarantineEntry {
    /// Layout: varint reason length, reason, varint record length, record,
    /// then the content up to the end of the value.
    pub(super) fn encode(reason: &str, record: &[u8], content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(reason.len() + record.len() + content.len() + 20);
        put_varint(&mut out, reason.len() as u64);
        out.extend_from_slice(reason.as_bytes());
        put_varint(&mut out, record.len() as u64);
        out.extend_from_slice(record);
        out.extend_from_slice(content);
        out
    }

    /// Decodes only the reason, which is all that opening a store needs.
    pub(super) fn decode_reason(data: &[u8]) -> Result<String, RecordError> {
        let mut r = Reader::new(data);
        let reason = r.take_prefixed()?;
        Ok(String::from_utf8_lossy(&data[reason]).into_owned())
    }

    /// Decodes the whole entry.
    #[cfg(test)]
    pub(super) fn decode(data: &Bytes) -> Result<Self, RecordError> {
        let mut r = Reader::new(data);
        let reason = String::from_utf8_lossy(&data[r.take_prefixed()?]).into_owned();
        let record = data.slice(r.take_prefixed()?);
        let content = data.slice(r.take(r.remaining())?);
        Ok(Self {
            reason,
            record,
            content,
        })
    }
}

fn len_of(n: u64) -> Result<usize, RecordError> {
    usize::try_from(n).map_err(|_| RecordError("length does not fit in memory"))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(RecordError("record ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(RecordError("length is not a valid varint"))
    }

    /// Skips `len` bytes and returns where they are.
    fn take(&mut self, len: usize) -> Result<Range<usize>, RecordError> {
        if len > self.remaining() {
            return Err(RecordError("length exceeds the record"));
        }
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }

    /// Reads a varint length, then skips that many bytes.
    fn take_prefixed(&mut self) -> Result<Range<usize>, RecordError> {
        let len = len_of(self.varint()?)?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let mut r = Record::default();
        r.set(MetadataKey::PARENT, Bytes::from_static(b"sha256:00"));
        r.set(MetadataKey::BUILT_LOCALLY, Bytes::from_static(&[1]));
        r.set(MetadataKey::new("zz-custom").unwrap(), Bytes::new());
        r.summary = Some(Bytes::from(vec![7u8; 300]));
        r
    }

    #[test]
    fn roundtrips_and_keeps_keys_sorted() {
        let r = sample();
        let keys: Vec<_> = r.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["builtLocally", "parent", "zz-custom"]);
        let decoded = Record::decode(&Bytes::from(r.encode())).unwrap();
        assert_eq!(decoded, r);
        assert_eq!(
            decoded.get(&MetadataKey::PARENT).map(|v| &v[..]),
            Some(&b"sha256:00"[..])
        );
    }

    #[test]
    fn empty_record_roundtrips() {
        let r = Record::default();
        assert_eq!(Record::decode(&Bytes::from(r.encode())).unwrap(), r);
    }

    #[test]
    fn set_replaces_and_remove_removes() {
        let mut r = sample();
        r.set(MetadataKey::PARENT, Bytes::from_static(b"x"));
        assert_eq!(r.metadata.len(), 3);
        assert_eq!(r.get(&MetadataKey::PARENT).map(|v| &v[..]), Some(&b"x"[..]));
        r.remove(&MetadataKey::PARENT);
        r.remove(&MetadataKey::LAST_UPDATED);
        assert_eq!(r.metadata.len(), 2);
        assert!(r.get(&MetadataKey::PARENT).is_none());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let encoded = sample().encode();
        for len in 0..encoded.len() {
            let cut = Bytes::copy_from_slice(&encoded[..len]);
            assert!(
                Record::decode(&cut).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn damaged_records_are_errors() {
        let mut bad_format = sample().encode();
        bad_format[0] = 9;
        assert!(Record::decode(&Bytes::from(bad_format)).is_err());

        let mut trailing = sample().encode();
        trailing.push(0);
        assert!(Record::decode(&Bytes::from(trailing)).is_err());

        // A key with a character MetadataKey refuses.
        let mut out = vec![FORMAT, 0, 1, 0, 3];
        out.extend_from_slice(b"../");
        out.push(0);
        assert_eq!(
            Record::decode(&Bytes::from(out)),
            Err(RecordError("invalid metadata key"))
        );

        // A key code nobody assigned.
        assert_eq!(
            Record::decode(&Bytes::from(vec![FORMAT, 0, 1, 9, 0])),
            Err(RecordError("unknown metadata key code"))
        );

        // A huge count with nothing behind it.
        let mut out = vec![FORMAT, 0];
        put_varint(&mut out, u64::MAX);
        assert!(Record::decode(&Bytes::from(out)).is_err());

        // Keys out of order.
        let mut out = vec![FORMAT, 0, 2];
        for key in [b"b", b"a"] {
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(key);
            out.push(0);
        }
        assert_eq!(
            Record::decode(&Bytes::from(out)),
            Err(RecordError("metadata keys out of order"))
        );
    }

    #[test]
    fn well_known_keys_take_one_byte() {
        let mut r = Record::default();
        r.set(MetadataKey::PARENT, Bytes::from_static(b"p"));
        // format, no summary, count, key code, value length, value
        assert_eq!(r.encode(), [FORMAT, 0, 1, 1, 1, b'p']);
    }

    #[test]
    fn blocks_roundtrip_and_find_records() {
        let mut w = BlockWriter::new();
        let keys = [[1u8; 32], [7u8; 32], [3u8; 32]];
        for (i, key) in keys.iter().enumerate() {
            w.push(key, &vec![i as u8; i * 200]);
        }
        assert_eq!(w.entries(), 3);
        let data = w.as_bytes().to_vec();
        let entries: Vec<_> = block_entries(&data).map(Result::unwrap).collect();
        assert_eq!(entries.len(), 3);
        for (i, (key, range)) in entries.iter().enumerate() {
            assert_eq!(*key, keys[i]);
            assert_eq!(&data[range.clone()], &vec![i as u8; i * 200][..]);
        }
        assert_eq!(
            find_in_block(&data, &[3u8; 32]).unwrap(),
            Some(&[2u8; 400][..])
        );
        assert_eq!(find_in_block(&data, &[9u8; 32]).unwrap(), None);
        assert_eq!(block_entries(&[BLOCK_FORMAT]).count(), 0);

        // Every truncation inside an entry is an error, reported once.
        for len in 1..data.len() {
            let results: Vec<_> = block_entries(&data[..len]).collect();
            // Entries end after the format byte, then at 1 + 33 and 34 + 234.
            let boundary = [1, 34, 268];
            if boundary.contains(&len) {
                assert!(results.iter().all(Result::is_ok), "cut at {len}");
            } else {
                assert!(results.last().unwrap().is_err(), "cut at {len}");
                assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
            }
        }
        assert!(block_entries(&[9u8]).next().unwrap().is_err());
        assert!(block_entries(&[]).next().unwrap().is_err());
    }

    #[test]
    fn content_blocks_keep_slot_numbers_through_removals() {
        let mut w = ContentWriter::default();
        let configs: [&[u8]; 4] = [b"{\"a\":1}", &[b'x'; 300], b"{}", &[b'y'; 200]];
        for (i, c) in configs.iter().enumerate() {
            assert_eq!(w.push(c), i as u32);
        }
        assert_eq!(w.slots(), 4);
        let data = w.encode();
        assert!(data.len() <= w.len());
        for (i, c) in configs.iter().enumerate() {
            assert_eq!(content_slot(&data, i as u32).unwrap(), Some(*c));
        }
        assert_eq!(content_slot(&data, 4).unwrap(), None);

        // Removing slots leaves the others where they were.
        let data = remove_slots(&data, &[1, 2]).unwrap().unwrap();
        assert!(data.len() < w.encode().len() - 300);
        assert_eq!(content_slot(&data, 0).unwrap(), Some(configs[0]));
        assert_eq!(content_slot(&data, 1).unwrap(), None);
        assert_eq!(content_slot(&data, 2).unwrap(), None);
        assert_eq!(content_slot(&data, 3).unwrap(), Some(configs[3]));
        // Removing the last configs leaves nothing to keep.
        assert_eq!(remove_slots(&data, &[0, 3]).unwrap(), None);
    }

    #[test]
    fn damaged_content_blocks_are_errors() {
        let mut w = ContentWriter::default();
        w.push(b"{\"rootfs\":{}}");
        w.push(b"{}");
        let data = w.encode();
        for len in 0..data.len() {
            assert!(content_slots(&data[..len]).is_err(), "cut at {len}");
        }
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(content_slots(&trailing).is_err());
        let mut other = data.clone();
        other[0] = 9;
        assert!(content_slot(&other, 0).is_err());
        // A huge slot count with nothing behind it.
        let mut huge = vec![CONTENT_FORMAT];
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(content_slots(&huge).is_err());
    }

    #[test]
    fn quarantine_entry_roundtrips() {
        let encoded = QuarantineEntry::encode("bad hash", b"rec", b"{\"a\":1}");
        let e = QuarantineEntry::decode(&Bytes::from(encoded.clone())).unwrap();
        assert_eq!(e.reason, "bad hash");
        assert_eq!(&e.record[..], b"rec");
        assert_eq!(&e.content[..], b"{\"a\":1}");
        assert_eq!(
            QuarantineEntry::decode_reason(&encoded).unwrap(),
            "bad hash"
        );
    }
}
