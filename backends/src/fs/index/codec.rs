//! The byte format of the index files: a snapshot's entries and the
//! journal's framed records, encoded from and decoded into [`Entry`] and
//! [`Record`] values.
//!
//! Decoded values are slices of the file's buffer, so a loaded index costs
//! one allocation for all its bytes.

use bytes::Bytes;
use imagecache_core::{ImageId, MetadataKey};

use super::super::files::{Stamp, Token};
use super::{Entries, Entry, HEADER_LEN, Record, SNAPSHOT_MAGIC, Update};

const RECORD_MAGIC: u32 = 0x5245_4331;
const RECORD_HEADER_LEN: usize = 12;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    put_u32(out, u32::try_from(len).ok()?);
    Some(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    put_len(out, b.len())?;
    out.extend_from_slice(b);
    Some(())
}

fn put_key(out: &mut Vec<u8>, k: &MetadataKey) -> Option<()> {
    // Keys are at most 128 bytes, so the length fits a byte.
    out.push(u8::try_from(k.as_str().len()).ok()?);
    out.extend_from_slice(k.as_str().as_bytes());
    Some(())
}

fn put_token(out: &mut Vec<u8>, t: &Token) {
    let (tag, s) = match t {
        Token::Absent => (0u8, None),
        Token::Dir(s) => (1, Some(s)),
        Token::Other(s) => (2, Some(s)),
    };
    out.push(tag);
    let s = s.copied().unwrap_or(Stamp {
        ino: 0,
        mtime: 0,
        mtime_ns: 0,
        ctime: 0,
        ctime_ns: 0,
    });
    out.extend_from_slice(&s.ino.to_le_bytes());
    out.extend_from_slice(&s.mtime.to_le_bytes());
    out.extend_from_slice(&s.mtime_ns.to_le_bytes());
    out.extend_from_slice(&s.ctime.to_le_bytes());
    out.extend_from_slice(&s.ctime_ns.to_le_bytes());
}

pub(super) fn header(magic: &[u8; 8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&generation.to_le_bytes());
    out
}

/// Encodes one snapshot entry; `None` if a value is too large to encode.
fn encode_entry(out: &mut Vec<u8>, id: &ImageId, e: &Entry) -> Option<()> {
    out.extend_from_slice(&id.to_bytes());
    let flags = u8::from(e.content_known)
        | (u8::from(e.token.is_some()) << 1)
        | (u8::from(e.summary.is_some()) << 2);
    out.push(flags);
    put_token(out, &e.token.unwrap_or(Token::Absent));
    put_len(out, e.metadata.len())?;
    for (k, v) in &e.metadata {
        put_key(out, k)?;
        put_bytes(out, v)?;
    }
    if let Some(s) = &e.summary {
        put_bytes(out, s)?;
    }
    Some(())
}

/// Encodes a whole snapshot. Entries that cannot be encoded (a value over
/// 4 GiB) are left out, so they are re-read at the next load.
pub(super) fn encode_snapshot<'a>(
    generation: u64,
    entries: impl ExactSizeIterator<Item = (&'a ImageId, &'a Entry)>,
) -> Vec<u8> {
    let mut out = header(SNAPSHOT_MAGIC, generation);
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for (id, e) in entries {
        let mark = out.len();
        if encode_entry(&mut out, id, e).is_some() {
            count += 1;
        } else {
            out.truncate(mark);
        }
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    out
}

fn encode_record_payload(out: &mut Vec<u8>, r: &Record) -> Option<()> {
    match r {
        Record::Remove(id) => {
            out.push(2);
            out.extend_from_slice(&id.to_bytes());
        }
        Record::Update(u) => {
            out.push(1);
            out.extend_from_slice(&u.id.to_bytes());
            out.push(u8::from(u.put) | (u8::from(u.summary.is_some()) << 1));
            put_token(out, &u.pre);
            put_token(out, &u.post);
            put_len(out, u.changes.len())?;
            for (k, v) in &u.changes {
                put_key(out, k)?;
                match v {
                    Some(v) => {
                        out.push(1);
                        put_bytes(out, v)?;
                    }
                    None => out.push(0),
                }
            }
            if let Some(s) = &u.summary {
                put_bytes(out, s)?;
            }
        }
    }
    Some(())
}

/// Encodes records, each framed as magic, payload length, CRC-32, payload.
/// A record that cannot be encoded is left out (its image is re-read).
pub(super) fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut payload = Vec::new();
    for r in records {
        payload.clear();
        if encode_record_payload(&mut payload, r).is_none() {
            continue;
        }
        let Ok(len) = u32::try_from(payload.len()) else {
            continue;
        };
        put_u32(&mut out, RECORD_MAGIC);
        put_u32(&mut out, len);
        put_u32(&mut out, crc32fast::hash(&payload));
        out.extend_from_slice(&payload);
    }
    out
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let a = self.buf.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.len()?;
        self.take(n)
    }

    fn id(&mut self) -> Option<ImageId> {
        Some(ImageId::from_bytes(self.array()?))
    }

    fn key(&mut self) -> Option<MetadataKey> {
        let n = usize::from(self.u8()?);
        let raw = self.take(n)?;
        // The three keys Docker uses are interned: no allocation per image.
        for known in [
            MetadataKey::PARENT,
            MetadataKey::LAST_UPDATED,
            MetadataKey::BUILT_LOCALLY,
        ] {
            if known.as_str().as_bytes() == &raw[..] {
                return Some(known);
            }
        }
        MetadataKey::new(std::str::from_utf8(&raw).ok()?).ok()
    }

    fn token(&mut self) -> Option<Token> {
        let tag = self.u8()?;
        let stamp = Stamp {
            ino: self.u64()?,
            mtime: self.i64()?,
            mtime_ns: self.u32()?,
            ctime: self.i64()?,
            ctime_ns: self.u32()?,
        };
        match tag {
            0 => Some(Token::Absent),
            1 => Some(Token::Dir(stamp)),
            2 => Some(Token::Other(stamp)),
            _ => None,
        }
    }
}

pub(super) fn read_header(buf: &[u8], magic: &[u8; 8]) -> Option<u64> {
    let head = buf.get(..HEADER_LEN)?;
    if &head[..8] != magic {
        return None;
    }
    Some(u64::from_le_bytes(head[8..].try_into().ok()?))
}

/// Decodes a snapshot: its generation and entries. `None` when the file is
/// damaged in any way.
pub(super) fn decode_snapshot(buf: Bytes) -> Option<(u64, Entries)> {
    let body_len = buf.len().checked_sub(4)?;
    let crc = u32::from_le_bytes(buf.get(body_len..)?.try_into().ok()?);
    if crc32fast::hash(&buf[..body_len]) != crc {
        return None;
    }
    let generation = read_header(&buf, SNAPSHOT_MAGIC)?;
    let mut r = Reader {
        buf: buf.slice(..body_len),
        pos: HEADER_LEN,
    };
    let count = r.u64()?;
    let mut entries = Entries::with_capacity_and_hasher(
        usize::try_from(count).ok()?.min(1 << 24),
        Default::default(),
    );
    for _ in 0..count {
        let id = r.id()?;
        let flags = r.u8()?;
        let token = r.token()?;
        let n = r.len()?;
        let mut metadata = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let k = r.key()?;
            let v = r.bytes()?;
            metadata.push((k, v));
        }
        let summary = if flags & 4 != 0 {
            Some(r.bytes()?)
        } else {
            None
        };
        entries.insert(
            id,
            Entry {
                token: (flags & 2 != 0).then_some(token),
                content_known: flags & 1 != 0,
                metadata,
                summary,
            },
        );
    }
    (r.pos == r.buf.len()).then_some((generation, entries))
}

fn decode_record_payload(buf: Bytes) -> Option<Record> {
    let mut r = Reader { buf, pos: 0 };
    let rec = match r.u8()? {
        1 => {
            let id = r.id()?;
            let flags = r.u8()?;
            let pre = r.token()?;
            let post = r.token()?;
            let n = r.len()?;
            let mut changes = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let k = r.key()?;
                let v = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes()?),
                    _ => return None,
                };
                changes.push((k, v));
            }
            let summary = if flags & 2 != 0 {
                Some(r.bytes()?)
            } else {
                None
            };
            Record::Update(Update {
                id,
                put: flags & 1 != 0,
                pre,
                post,
                changes,
                summary,
            })
        }
        2 => Record::Remove(r.id()?),
        _ => return None,
    };
    (r.pos == r.buf.len()).then_some(rec)
}

/// Decodes the records of a journal body (after its header). Damaged
/// stretches are skipped by scanning for the next record that checks out;
/// returns the records and the number of bytes skipped.
pub(super) fn decode_records(buf: &Bytes) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut pos = 0;
    let magic = RECORD_MAGIC.to_le_bytes();
    while pos + RECORD_HEADER_LEN <= buf.len() {
        let parsed = (|| {
            if buf[pos..pos + 4] != magic {
                return None;
            }
            let len =
                usize::try_from(u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().ok()?)).ok()?;
            let crc = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().ok()?);
            let start = pos + RECORD_HEADER_LEN;
            let end = start.checked_add(len)?;
            let payload = buf.get(start..end)?;
            if crc32fast::hash(payload) != crc {
                return None;
            }
            Some((decode_record_payload(buf.slice(start..end)), end))
        })();
        match parsed {
            Some((rec, end)) => {
                // A record with a valid checksum but an unknown shape comes
                // from a newer format; skipping it only costs a re-read.
                if let Some(rec) = rec {
                    records.push(rec);
                }
                pos = end;
            }
            None => {
                pos += 1;
                skipped += 1;
            }
        }
    }
    skipped += buf.len() - pos.min(buf.len());
    (records, skipped)
}
