//! Reading tar archives (plain, or compressed with gzip, bzip2, xz or zstd,
//! the way `docker load` accepts them) in bounded memory.
//!
//! An archive is read at most three times, each time front to back, never
//! holding a layer in memory:
//!
//! 1. [`scan`] hashes every file entry and keeps the small JSON ones
//!    (manifests, indexes, configs) within a fixed budget. `manifest.json`
//!    and `index.json` often come last, so nothing can be decided before
//!    this pass ends.
//! 2. [`fetch`] reads small entries that did not fit the budget (rare).
//! 3. [`stream`] sends the chosen layer entries, in archive order, to the
//!    async side in chunks through bounded channels, now that their digests
//!    are known and checked.
//!
//! Everything here is blocking and runs on Tokio's blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use imagecache_core::{Algorithm, Digest, Hasher, Key};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Size of the chunks read from an archive and sent on.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reading thread and the blob cache.
pub(crate) const QUEUE: usize = 4;
/// Largest entry [`scan`] keeps in memory.
pub(crate) const SMALL_MAX: u64 = 8 << 20;
/// Total size of the entries [`scan`] keeps in memory.
const RETAIN_BUDGET: u64 = 64 << 20;
/// How many links are followed before giving up.
const MAX_LINK_HOPS: usize = 16;

/// One body chunk on its way to the blob cache.
pub(crate) type Chunk = std::result::Result<Bytes, imagecache_core::Error>;

/// A layer body handed to the async side: which job, and its chunks.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The job the body belongs to.
    pub(crate) job: usize,
    /// The body, ending early with an error if reading fails.
    pub(crate) body: mpsc::Receiver<Chunk>,
}

/// What kind of entry an archive member is.
#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    /// A regular file, hashed.
    File {
        /// Its size.
        size: u64,
        /// SHA-256 of its bytes.
        digest: Digest,
        /// Its first bytes (up to 8), to recognise compression.
        head: Vec<u8>,
    },
    /// A hard or symbolic link to another entry (a normalised archive path).
    Link {
        /// The entry linked to.
        target: String,
    },
    /// A directory or anything else that holds no data.
    Other,
}

/// One archive member as [`scan`] saw it.
#[derive(Debug, Clone)]
pub(crate) struct EntryMeta {
    /// Its normalised path.
    pub(crate) name: String,
    /// What it is.
    pub(crate) kind: EntryKind,
}

/// What [`scan`] learned about an archive.
#[derive(Debug, Clone)]
pub(crate) struct TarIndex {
    /// The archive file read.
    pub(crate) file: PathBuf,
    /// The archive's name in messages (the path given, or a stream's name).
    pub(crate) path: PathBuf,
    /// Every member, in archive order.
    pub(crate) entries: Vec<EntryMeta>,
    /// Normalised path → position; a later member of the same name wins,
    /// as when a tar is extracted.
    by_name: HashMap<String, usize>,
    /// Bytes of the small entries kept in memory.
    retained: HashMap<usize, Bytes>,
}

impl TarIndex {
    /// The position of the regular file `name` resolves to, following links.
    ///
    /// # Errors
    /// [`Error::BadLink`] for links that go in circles, too deep, or
    /// to something that is not a file.
    pub(crate) fn resolve(&self, name: &str) -> Result<Option<usize>> {
        let mut current = normalize(name);
        for _ in 0..MAX_LINK_HOPS {
            let Some(&index) = self.by_name.get(&current) else {
                return Ok(None);
            };
            match &self.entries[index].kind {
                EntryKind::File { .. } => return Ok(Some(index)),
                EntryKind::Link { target } => current = target.clone(),
                EntryKind::Other => break,
            }
        }
        Err(Error::BadLink {
            path: self.path.clone(),
            entry: name.to_owned(),
        })
    }

    /// The bytes of a small entry, if [`scan`] kept them.
    pub(crate) fn retained(&self, index: usize) -> Option<Bytes> {
        self.retained.get(&index).cloned()
    }

    /// Keeps more entry bytes (from [`fetch`]).
    pub(crate) fn retain(&mut self, more: HashMap<usize, Bytes>) {
        self.retained.extend(more);
    }

    /// Size, digest and first bytes of the file at `index`.
    pub(crate) fn file(&self, index: usize) -> Option<(u64, Digest, &[u8])> {
        match &self.entries.get(index)?.kind {
            EntryKind::File { size, digest, head } => Some((*size, *digest, head)),
            _ => None,
        }
    }
}

/// Normalises an archive path: no leading `./` or `/`, no empty or `.`
/// components, `..` applied.
pub(crate) fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Counts the bytes read from the file, for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How a whole archive is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Packing {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(b"BZh") {
            Self::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::Plain
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "tar",
            Self::Gzip => "gzip-compressed tar",
            Self::Bzip2 => "bzip2-compressed tar",
            Self::Xz => "xz-compressed tar",
            Self::Zstd => "zstd-compressed tar",
        }
    }
}

/// An open archive, decompressed as it is read.
struct Opened {
    archive: tar::Archive<Box<dyn Read>>,
    packing: Packing,
}

/// Opens the archive `file`, a plain tar or one compressed with gzip,
/// bzip2, xz or zstd (each possibly of several members or frames), told
/// apart by its first bytes.
fn open(file: &Path, name: &Path, count: Arc<AtomicU64>) -> Result<Opened> {
    let opened = File::open(file).map_err(|source| Error::Open {
        path: name.to_owned(),
        source,
    })?;
    let mut buffered = BufReader::with_capacity(256 << 10, opened);
    let packing = loop {
        match buffered.fill_buf() {
            Ok(head) => break Packing::sniff(head),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(name, None, e)),
        }
    };
    let counting = Counting {
        inner: buffered,
        count,
    };
    let reader: Box<dyn Read> = match packing {
        Packing::Plain => Box::new(counting),
        Packing::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counting)),
        Packing::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(counting)),
        Packing::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(counting)),
        Packing::Zstd => Box::new(ZstdFrames::new(counting)),
    };
    Ok(Opened {
        archive: tar::Archive::new(reader),
        packing,
    })
}

/// Largest zstd window accepted (the zstd tool's default limit).
const MAX_ZSTD_WINDOW: u64 = 1 << 27;

/// A zstd stream of one or more frames (and skippable frames), decoded.
struct ZstdFrames<R: Read> {
    source: BufReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn new(inner: R) -> Self {
        let mut decoder = ruzstd::decoding::FrameDecoder::new();
        decoder.set_max_window_size(MAX_ZSTD_WINDOW);
        Self {
            source: BufReader::new(inner),
            decoder,
            in_frame: false,
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.in_frame {
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                if !self.decoder.is_finished() {
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
                self.in_frame = false;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame ends early",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }
}

fn read_error(path: &Path, entry: Option<&str>, source: io::Error) -> Error {
    Error::Read {
        path: path.to_owned(),
        entry: entry.map(str::to_owned),
        source,
    }
}

/// Reads as much as fits into `buf`, retrying on `Interrupted`; 0 at the end.
fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Whether [`walk`] goes on to the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Stop,
}

/// Walks the archive `file` (called `path` in errors), calling `visit` for
/// every member with its position and normalised name, until it says
/// [`Flow::Stop`].
///
/// # Errors
/// [`Error::UnknownFormat`] when not even the first header can be read:
/// the input is not a tar archive, or not one compressed in a known way.
fn walk(
    file: &Path,
    path: &Path,
    count: Arc<AtomicU64>,
    mut visit: impl FnMut(usize, &str, &mut tar::Entry<'_, Box<dyn Read>>) -> Result<Flow>,
) -> Result<()> {
    let Opened {
        mut archive,
        packing,
    } = open(file, path, count)?;
    let not_tar = |source: io::Error| Error::UnknownFormat {
        path: path.to_owned(),
        reason: format!(
            "it is not a {} archive ({}); expected a docker-archive or OCI archive, as a plain tar or compressed with gzip, bzip2, xz or zstd",
            packing.name(),
            source.kind()
        ),
    };
    let entries = archive.entries().map_err(not_tar)?;
    let mut last: Option<String> = None;
    for (index, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(source) if last.is_none() => return Err(not_tar(source)),
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_owned(),
                    // The header that failed follows the last entry read.
                    entry: last.as_ref().map(|l| format!("the header after {l}")),
                    source,
                });
            }
        };
        let name = {
            let raw = entry.path().map_err(|e| read_error(path, None, e))?;
            normalize(&raw.to_string_lossy())
        };
        if visit(index, &name, &mut entry)? == Flow::Stop {
            break;
        }
        last = Some(name);
    }
    Ok(())
}

/// Pass 1: hashes every file, records links, keeps small JSON entries.
///
/// `progress` is called with the number of archive-file bytes read so far.
///
/// # Errors
/// [`Error::Read`] for I/O errors and damaged headers or compressed
/// data, [`Error::Truncated`] for a member shorter than its header
/// says, [`Error::Interrupted`] when `cancel` is set.
pub(crate) fn scan(
    file: &Path,
    path: &Path,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<TarIndex> {
    let count = Arc::new(AtomicU64::new(0));
    let mut entries = Vec::new();
    let mut by_name = HashMap::new();
    let mut retained = HashMap::new();
    let mut budget = RETAIN_BUDGET;
    let mut buf = vec![0u8; CHUNK];
    walk(file, path, Arc::clone(&count), |index, name, entry| {
        let header_type = entry.header().entry_type();
        let kind = if header_type.is_symlink() || header_type.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| read_error(path, Some(name), e))?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = if header_type.is_symlink() && !target.starts_with('/') {
                // A relative symlink is relative to the link's directory;
                // hard links are always relative to the archive root.
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                normalize(&format!("{dir}/{target}"))
            } else {
                normalize(&target)
            };
            EntryKind::Link { target }
        } else if header_type.is_file() || header_type == tar::EntryType::Continuous {
            let expected = entry.size();
            let mut hasher = Hasher::new(Algorithm::Sha256);
            let mut head = Vec::new();
            let mut kept: Option<Vec<u8>> = None;
            let mut actual = 0u64;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                let n = read_some(entry, &mut buf).map_err(|e| read_error(path, Some(name), e))?;
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                if actual == 0 {
                    head = chunk[..n.min(8)].to_vec();
                    if expected <= SMALL_MAX && expected <= budget && looks_like_json(name, chunk) {
                        kept = Some(Vec::with_capacity(usize::try_from(expected).unwrap_or(0)));
                    }
                }
                hasher.update(chunk);
                if let Some(k) = kept.as_mut() {
                    k.extend_from_slice(chunk);
                }
                actual += n as u64;
                progress(count.load(Ordering::Relaxed));
            }
            if actual != expected {
                return Err(Error::Truncated {
                    path: path.to_owned(),
                    entry: name.to_owned(),
                    expected,
                    actual,
                });
            }
            if let Some(k) = kept {
                budget -= k.len() as u64;
                retained.insert(index, Bytes::from(k));
            }
            EntryKind::File {
                size: expected,
                digest: hasher.finish(),
                head,
            }
        } else {
            EntryKind::Other
        };
        by_name.insert(name.to_owned(), index);
        entries.push(EntryMeta {
            name: name.to_owned(),
            kind,
        });
        Ok(Flow::Next)
    })?;
    progress(count.load(Ordering::Relaxed));
    Ok(TarIndex {
        file: file.to_owned(),
        path: path.to_owned(),
        entries,
        by_name,
        retained,
    })
}

/// Why [`measure`] stopped.
#[derive(Debug)]
pub(crate) enum Measure {
    /// The cancel flag was set.
    Cancelled,
    /// Reading failed.
    Io(io::Error),
}

/// Size, SHA-256 and first bytes (up to 8) of everything `reader` yields.
pub(crate) fn measure(
    reader: &mut dyn Read,
    cancel: &AtomicBool,
) -> std::result::Result<(u64, Digest, Vec<u8>), Measure> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    let mut size = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Measure::Cancelled);
        }
        let n = read_some(reader, &mut buf).map_err(Measure::Io)?;
        if n == 0 {
            break;
        }
        if head.len() < 8 {
            let take = (8 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finish(), head))
}

/// Whether an entry may be metadata worth keeping: the names image
/// archives use for it, or anything whose first byte opens a JSON document.
fn looks_like_json(name: &str, first: &[u8]) -> bool {
    matches!(
        name,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || first
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// Pass 2 (rare): reads the entries at `wanted` whole; each must be at most
/// [`SMALL_MAX`] bytes, which the caller checked against the index.
///
/// # Errors
/// As [`scan`].
pub(crate) fn fetch(
    index: &TarIndex,
    wanted: &[usize],
    cancel: &AtomicBool,
) -> Result<HashMap<usize, Bytes>> {
    let mut out = HashMap::new();
    walk(
        &index.file,
        &index.path,
        Arc::new(AtomicU64::new(0)),
        |position, name, entry| {
            if !wanted.contains(&position) {
                return Ok(Flow::Next);
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let expected = entry.size();
            let mut data =
                Vec::with_capacity(usize::try_from(expected.min(SMALL_MAX)).unwrap_or(0));
            entry
                .take(SMALL_MAX + 1)
                .read_to_end(&mut data)
                .map_err(|e| read_error(&index.path, Some(name), e))?;
            if data.len() as u64 != expected {
                return Err(Error::Truncated {
                    path: index.path.clone(),
                    entry: name.to_owned(),
                    expected,
                    actual: data.len() as u64,
                });
            }
            out.insert(position, Bytes::from(data));
            Ok(if out.len() == wanted.len() {
                Flow::Stop
            } else {
                Flow::Next
            })
        },
    )?;
    Ok(out)
}

/// Where the async side's progress and cancellation come from.
pub(crate) struct Pump<'a> {
    /// The archive or layout, for errors.
    pub(crate) path: &'a Path,
    /// Set by Ctrl-C.
    pub(crate) cancel: &'a AtomicBool,
    /// Called with the number of bytes sent on, per chunk.
    pub(crate) progress: &'a (dyn Fn(u64) + Send + Sync),
}

/// The error put into a body when reading it failed; the reading thread
/// returns the real one.
fn body_error(entry: &str) -> imagecache_core::Error {
    imagecache_core::Error::backend(
        "import",
        Some(Key::Other(entry.to_owned())),
        "reading the archive failed",
    )
}

impl Pump<'_> {
    /// Sends `reader`'s bytes as chunks on `body`; with `expected`, a
    /// reader that ends early is an error. Stops early, without error, when
    /// the receiver drops the body (the blob was cached already).
    fn send(
        &self,
        entry: &str,
        reader: &mut dyn Read,
        expected: Option<u64>,
        body: &mpsc::Sender<Chunk>,
    ) -> Result<()> {
        let mut sent = 0u64;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                let _ = body.blocking_send(Err(imagecache_core::Error::Cancelled));
                return Err(Error::Interrupted);
            }
            let mut chunk = BytesMut::zeroed(CHUNK);
            let n = match read_some(reader, &mut chunk) {
                Ok(n) => n,
                Err(source) => {
                    let _ = body.blocking_send(Err(body_error(entry)));
                    return Err(read_error(self.path, Some(entry), source));
                }
            };
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            sent += n as u64;
            (self.progress)(n as u64);
            if body.blocking_send(Ok(chunk.freeze())).is_err() {
                return Ok(());
            }
        }
        if let Some(expected) = expected
            && sent != expected
        {
            let _ = body.blocking_send(Err(body_error(entry)));
            return Err(Error::Truncated {
                path: self.path.to_owned(),
                entry: entry.to_owned(),
                expected,
                actual: sent,
            });
        }
        Ok(())
    }

    /// Opens a body channel for `job` and hands it to the async side;
    /// `None` when the async side has stopped listening.
    fn offer(&self, job: usize, tx: &mpsc::Sender<Outgoing>) -> Option<mpsc::Sender<Chunk>> {
        let (body_tx, body_rx) = mpsc::channel(QUEUE);
        tx.blocking_send(Outgoing { job, body: body_rx })
            .ok()
            .map(|()| body_tx)
    }
}

/// Pass 3: streams the entries at the keys of `wanted` (archive position →
/// job) to `tx`, in archive order.
///
/// Returns when every wanted entry was sent or the async side stopped
/// listening.
///
/// # Errors
/// As [`scan`], plus [`Error::MissingEntry`] when a wanted entry is
/// no longer in the archive (the file changed since the first pass).
pub(crate) fn stream(
    index: &TarIndex,
    wanted: &HashMap<usize, usize>,
    pump: &Pump<'_>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<()> {
    let mut remaining = wanted.len();
    let mut stopped = false;
    let walked = walk(
        &index.file,
        &index.path,
        Arc::new(AtomicU64::new(0)),
        |position, name, entry| {
            let Some(&job) = wanted.get(&position) else {
                return Ok(Flow::Next);
            };
            remaining -= 1;
            let Some(body) = pump.offer(job, tx) else {
                stopped = true;
                return Ok(Flow::Stop);
            };
            let expected = entry.size();
            pump.send(name, entry, Some(expected), &body)?;
            Ok(if remaining == 0 {
                Flow::Stop
            } else {
                Flow::Next
            })
        },
    );
    walked?;
    if !stopped && remaining > 0 {
        let missing = wanted
            .keys()
            .filter_map(|p| index.entries.get(*p))
            .map(|e| e.name.clone())
            .next()
            .unwrap_or_default();
        return Err(Error::MissingEntry {
            path: index.path.clone(),
            entry: missing,
            referenced_by: "the first pass over the archive (it changed meanwhile)".to_owned(),
        });
    }
    Ok(())
}

/// Pass 3 for a layout directory: streams files to `tx` in the given order.
///
/// Sizes are not checked here: the blob cache is told each descriptor's
/// size and refuses a body that is shorter or longer.
///
/// # Errors
/// [`Error::Open`], [`Error::Read`], [`Error::Interrupted`].
pub(crate) fn stream_files(
    files: &[(usize, PathBuf, String)],
    pump: &Pump<'_>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<()> {
    for (job, file, entry) in files {
        let mut reader = BufReader::with_capacity(
            256 << 10,
            File::open(file).map_err(|source| Error::Open {
                path: file.clone(),
                source,
            })?,
        );
        let Some(body) = pump.offer(*job, tx) else {
            return Ok(());
        };
        pump.send(entry, &mut reader, None, &body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize("./manifest.json"), "manifest.json");
        assert_eq!(normalize("/blobs//sha256/./ab"), "blobs/sha256/ab");
        assert_eq!(normalize("a/b/../../c"), "c");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
    }

    #[test]
    fn json_is_told_from_tar_data() {
        assert!(looks_like_json("x.json", b"  {\"a\":1}"));
        assert!(looks_like_json("manifest.json", b"garbage"));
        assert!(!looks_like_json("layer.tar", b"etc/\0\0\0"));
    }
}
