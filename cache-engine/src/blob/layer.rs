//! Layers: compression, decompressed copies and layer substitution.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, Read};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use imagecache_core::{BlobInfo, Digest, Hasher};
use tokio::sync::{mpsc, oneshot};

use super::BlobCacheOptions;
use super::error::{DecompressionLimit, Error};
use super::pipe::{self, Check, Fed, Msg, Origin};

/// Media types of image layers, as OCI and Docker name them.
pub mod media_type {
    /// An uncompressed OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip-compressed OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd-compressed OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// An uncompressed Docker schema 2 layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// A gzip-compressed Docker schema 2 layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members back to back.
    Gzip,
    /// Zstandard, possibly several frames back to back.
    Zstd,
}

impl Compression {
    /// The name used in notes and messages: `none`, `gzip`, `zstd`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// Recognises a layer's compression from its first bytes (8 are
    /// enough): gzip, zstd, else a plain tar.
    ///
    /// # Errors
    /// The name of a compression the blob cache cannot decompress (`xz`,
    /// `bzip2`), which [`BlobCache::put_layer`](super::BlobCache::put_layer)
    /// would refuse.
    pub fn sniff(prefix: &[u8]) -> Result<Self, String> {
        match sniffed(prefix) {
            Declared::Known(compression) => Ok(compression),
            Declared::Unsupported(name) => Err(name),
            Declared::Unknown => Ok(Self::None),
        }
    }

    /// The compression a layer media type declares: the one reading shared
    /// by the blob cache and by importers.
    ///
    /// Both spellings of the registered layer types are read: OCI's
    /// structured suffixes (`…layer.v1.tar+gzip`, `+zstd`) and Docker's
    /// dotted ones (`…rootfs.diff.tar.gzip`, `.zstd`); a type ending in
    /// `.tar` is a plain tar. Case and surrounding white space are ignored.
    ///
    /// Returns `None` for a media type that names no layer this reads (a
    /// config, `application/octet-stream`), and `Some(Err(name))` for a
    /// layer compressed some other way (`+bzip2`), naming it.
    ///
    /// ```
    /// use imagecache_engine::blob::Compression;
    /// let oci = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// let docker = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// assert_eq!(Compression::from_media_type(oci), Some(Ok(Compression::Gzip)));
    /// assert_eq!(Compression::from_media_type(docker), Some(Ok(Compression::Gzip)));
    /// assert_eq!(Compression::from_media_type("application/octet-stream"), None);
    /// ```
    pub fn from_media_type(media_type: &str) -> Option<Result<Self, String>> {
        let mt = media_type.trim().to_ascii_lowercase();
        if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
            Some(Ok(Self::Gzip))
        } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            Some(Ok(Self::Zstd))
        } else if mt.ends_with(".tar") {
            Some(Ok(Self::None))
        } else {
            mt.rsplit_once('+')
                .map(|(_, suffix)| Err(suffix.to_owned()))
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownCompression(s.to_owned()))
    }
}

/// A compression name that is not `none`, `gzip` or `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?} (expected none, gzip or zstd)")]
pub struct UnknownCompression(pub String);

/// What a media type says about compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Declared {
    Known(Compression),
    Unsupported(String),
    Unknown,
}

/// Reads the compression out of a layer media type.
pub(super) fn declared_by(media_type: &str) -> Declared {
    match Compression::from_media_type(media_type) {
        Some(Ok(compression)) => Declared::Known(compression),
        Some(Err(name)) => Declared::Unsupported(name),
        None => Declared::Unknown,
    }
}

/// What the first bytes of a layer say about compression.
pub(super) fn sniffed(prefix: &[u8]) -> Declared {
    const GZIP: &[u8] = &[0x1f, 0x8b];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    const XZ: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
    const BZIP2: &[u8] = b"BZh";
    if prefix.starts_with(GZIP) {
        Declared::Known(Compression::Gzip)
    } else if prefix.starts_with(ZSTD) {
        Declared::Known(Compression::Zstd)
    } else if prefix.starts_with(XZ) {
        Declared::Unsupported("xz".to_owned())
    } else if prefix.starts_with(BZIP2) {
        Declared::Unsupported("bzip2".to_owned())
    } else {
        Declared::Known(Compression::None)
    }
}

/// Which variant of each layer [`BlobCache::substitute`](super::BlobCache::substitute)
/// should offer, as buildah's `LayerCompression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LayerCompression {
    /// Keep every layer as it is.
    #[default]
    Preserve,
    /// Offer the cached compressed variant of uncompressed layers.
    Compress,
    /// Offer the cached decompressed variant of compressed layers.
    Decompress,
}

/// One layer of a manifest, as substitution reads and rewrites it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The layer's media type, for example [`media_type::OCI_LAYER_GZIP`].
    pub media_type: String,
}

/// The media type of a layer after switching it to `to`, when the layer's
/// family has a name for that compression.
pub(super) fn switched_media_type(media_type: &str, to: Compression) -> Option<&'static str> {
    use media_type::*;
    match media_type {
        OCI_LAYER | OCI_LAYER_GZIP | OCI_LAYER_ZSTD => Some(match to {
            Compression::None => OCI_LAYER,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }),
        // Docker's schema 2 has no zstd layer type, so such a substitute
        // could not be described correctly and is not offered.
        DOCKER_LAYER | DOCKER_LAYER_GZIP => match to {
            Compression::None => Some(DOCKER_LAYER),
            Compression::Gzip => Some(DOCKER_LAYER_GZIP),
            Compression::Zstd => None,
        },
        _ => None,
    }
}

/// How to store a layer with [`BlobCache::put_layer_opts`](super::BlobCache::put_layer_opts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerOptions {
    /// The compression; when `None` it is read from the media type, then
    /// recognised from the first bytes.
    pub compression: Option<Compression>,
    /// The layer's media type; stored as a note and used to tell the compression.
    pub media_type: Option<String>,
    /// The digest of the decompressed layer (the image config's diff ID),
    /// when known. With it the layer is stored in one pass and the
    /// decompressed bytes are verified against it; without it the
    /// decompressed copy is made in a second pass over the stored blob.
    pub diff_id: Option<Digest>,
    /// The compressed size the caller expects; a body of another length is refused.
    pub expected_size: Option<u64>,
}

impl LayerOptions {
    /// Default options: compression from the media type or the data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`LayerOptions::compression`].
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Sets [`LayerOptions::media_type`].
    pub fn with_media_type(mut self, media_type: impl Into<String>) -> Self {
        self.media_type = Some(media_type.into());
        self
    }

    /// Sets [`LayerOptions::diff_id`].
    pub fn with_diff_id(mut self, diff_id: Digest) -> Self {
        self.diff_id = Some(diff_id);
        self
    }

    /// Sets [`LayerOptions::expected_size`].
    pub fn with_expected_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }
}

/// What [`BlobCache::put_layer`](super::BlobCache::put_layer) stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerPut {
    /// The compression of the blob that was put.
    pub compression: Compression,
    /// The compressed blob; `None` when the layer was not compressed.
    pub compressed: Option<BlobInfo>,
    /// The decompressed blob (for an uncompressed layer, the blob itself).
    pub decompressed: BlobInfo,
}

/// Largest zstd window accepted, so a hostile frame cannot make the decoder
/// allocate more than this. zstd's own levels use at most 8 MiB; only
/// `--long` archives need more, and are refused as invalid data.
const MAX_ZSTD_WINDOW: u64 = 32 << 20;

/// Size of the chunks the decoder hands on.
const OUT_CHUNK: usize = 256 << 10;

/// Marker for the io error a [`ChannelReader`] returns when its producer
/// failed, so the decoder's error is not mistaken for bad data.
#[derive(Debug, thiserror::Error)]
#[error("the compressed stream stopped before its end")]
struct UpstreamFailed;

/// Marker for the io error [`Output::push`] returns when a bound of
/// [`Limits`] is crossed, so the decoder stops at once.
#[derive(Debug, thiserror::Error)]
#[error("decompression went over a limit of the cache")]
struct LimitExceeded;

/// The bounds on decompressing one layer, from [`BlobCacheOptions`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    max_size: u64,
    max_ratio: u64,
    ratio_floor: u64,
}

impl Limits {
    pub(super) fn new(options: &BlobCacheOptions) -> Self {
        Self {
            max_size: options.max_decompressed_size,
            max_ratio: options.max_decompression_ratio,
            ratio_floor: options.decompression_ratio_floor,
        }
    }

    /// The bound `decompressed` bytes from `compressed` bytes cross, if any.
    fn crossed(self, compressed: u64, decompressed: u64) -> Option<DecompressionLimit> {
        if decompressed > self.max_size {
            Some(DecompressionLimit::Size(self.max_size))
        } else if decompressed > self.ratio_floor
            && decompressed > compressed.saturating_mul(self.max_ratio)
        {
            Some(DecompressionLimit::Ratio(self.max_ratio))
        } else {
            None
        }
    }
}

/// The receiving end of a pipe as a blocking reader, for the decoders.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
    ended: bool,
    upstream_failed: bool,
    /// Compressed bytes received so far, shared with the [`Output`] that
    /// measures the decompression ratio against it. Counted on arrival, so
    /// the ratio errs by at most one chunk in the layer's favour.
    received: Rc<Cell<u64>>,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Msg>, received: Rc<Cell<u64>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            ended: false,
            upstream_failed: false,
            received,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() && !self.ended {
            match self.rx.blocking_recv() {
                Some(Msg::Chunk(bytes)) => {
                    self.received.set(self.received.get() + bytes.len() as u64);
                    self.current = bytes;
                }
                Some(Msg::End(Ok(()))) => self.ended = true,
                Some(Msg::End(Err(_))) | None => {
                    self.upstream_failed = true;
                    return Err(std::io::Error::other(UpstreamFailed));
                }
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.current.len());
        let _ = self.current.split_to(amt);
    }
}

/// Where decompressed bytes go: a hasher, and a pipe to the backend when
/// the decompressed copy is being stored. Refuses bytes past its [`Limits`].
struct Output {
    tx: Option<mpsc::Sender<Msg>>,
    hasher: Hasher,
    size: u64,
    limits: Limits,
    /// Compressed bytes the decoder has been given so far.
    compressed: Rc<Cell<u64>>,
    /// The bound crossed, with the compressed and decompressed counts then.
    exceeded: Option<(DecompressionLimit, u64, u64)>,
}

impl Output {
    /// Takes one chunk, unless it would cross a bound: then nothing of it
    /// is hashed or sent, and the error stops the decoder.
    fn push(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let size = self.size + chunk.len() as u64;
        let compressed = self.compressed.get();
        if let Some(limit) = self.limits.crossed(compressed, size) {
            self.exceeded = Some((limit, compressed, size));
            return Err(std::io::Error::other(LimitExceeded));
        }
        self.hasher.update(&chunk);
        self.size = size;
        if let Some(tx) = &self.tx
            && tx.blocking_send(Msg::Chunk(chunk)).is_err()
        {
            // The backend stopped reading (it already had the blob, or it
            // failed and will say so). Keep hashing for the verdict.
            self.tx = None;
        }
        Ok(())
    }

    fn end(&mut self, verdict: std::result::Result<(), imagecache_core::Error>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.blocking_send(Msg::End(verdict));
        }
    }
}

/// Copies everything `decoder` yields into `out`, in chunks of up to [`OUT_CHUNK`].
fn pump(mut decoder: impl Read, out: &mut Output) -> std::io::Result<()> {
    loop {
        let mut buf = BytesMut::zeroed(OUT_CHUNK);
        let mut filled = 0;
        while filled < OUT_CHUNK {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        out.push(buf.freeze())?;
        if filled < OUT_CHUNK {
            return Ok(());
        }
    }
}

fn decode_zstd(reader: &mut ChannelReader, out: &mut Output) -> std::io::Result<()> {
    use ruzstd::decoding::StreamingDecoder;
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    // A zstd stream may hold several frames, and skippable frames between
    // them; each frame gets a fresh decoder.
    while !reader.fill_buf()?.is_empty() {
        match StreamingDecoder::new_with_max_window_size(&mut *reader, MAX_ZSTD_WINDOW) {
            Ok(decoder) => pump(decoder, out)?,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                let skipped = std::io::copy(
                    &mut (&mut *reader).take(u64::from(length)),
                    &mut std::io::sink(),
                )?;
                if skipped != u64::from(length) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "zstd skippable frame ends early",
                    ));
                }
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
    Ok(())
}

/// The verdict of a decompression run.
pub(super) struct Decoded {
    pub(super) info: BlobInfo,
}

/// Decompresses what arrives on `rx`, on a blocking thread.
///
/// Sends the decompressed bytes to `out_tx` (when given) and ends that pipe
/// cleanly only if the compressed stream verified (its pipe ended with
/// `Ok`), decoded without error, and, when `expected` is given, the
/// decompressed bytes hash to it. `verdict` is told the same outcome, so
/// the compressed copy is published only when the decompressed one could be.
/// Decompression stops with [`Error::DecompressionBomb`] as soon as the
/// output would cross one of `limits`.
pub(super) fn decode_blocking(
    compressed: Digest,
    compression: Compression,
    rx: mpsc::Receiver<Msg>,
    out_tx: Option<mpsc::Sender<Msg>>,
    expected: Option<Digest>,
    limits: Limits,
    verdict: oneshot::Sender<bool>,
) -> Result<Decoded, Error> {
    let received = Rc::new(Cell::new(0));
    let mut reader = ChannelReader::new(rx, Rc::clone(&received));
    let algorithm = expected.map_or(imagecache_core::Algorithm::Sha256, |d| d.algorithm());
    let mut out = Output {
        tx: out_tx,
        hasher: Hasher::new(algorithm),
        size: 0,
        limits,
        compressed: received,
        exceeded: None,
    };
    let decoded = match compression {
        Compression::Gzip => pump(flate2::bufread::MultiGzDecoder::new(&mut reader), &mut out),
        Compression::Zstd => decode_zstd(&mut reader, &mut out),
        Compression::None => pump(&mut reader, &mut out),
    }
    .and_then(|()| {
        // The decoder may stop at the end of its data before the pipe's end
        // marker has been read; the marker carries the compressed verdict,
        // and anything after the data is an error.
        if reader.fill_buf()?.is_empty() {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected bytes after the end of the compressed data",
            ))
        }
    });
    let result = match (decoded, out.exceeded) {
        (Err(_), Some((limit, compressed_bytes, decompressed))) => Err(Error::DecompressionBomb {
            digest: compressed,
            compressed: compressed_bytes,
            decompressed,
            limit,
        }),
        (Err(_), None) if reader.upstream_failed => Err(Error::Interrupted {
            digest: compressed,
            stage: "the compressed stream",
        }),
        (Err(source), None) => Err(Error::Decompress {
            digest: compressed,
            compression,
            source,
        }),
        (Ok(()), _) => {
            let actual = std::mem::replace(&mut out.hasher, Hasher::new(algorithm)).finish();
            match expected {
                Some(expected) if expected != actual => Err(Error::DecompressedMismatch {
                    compressed,
                    expected,
                    actual,
                }),
                _ => Ok(Decoded {
                    info: BlobInfo {
                        digest: actual,
                        size: out.size,
                    },
                }),
            }
        }
    };
    match &result {
        Ok(_) => out.end(Ok(())),
        Err(Error::DecompressedMismatch {
            expected, actual, ..
        }) => out.end(Err(imagecache_core::Error::DigestMismatch {
            expected: *expected,
            actual: *actual,
        })),
        Err(_) => out.end(Err(imagecache_core::Error::Cancelled)),
    }
    let _ = verdict.send(result.is_ok());
    result
}

/// Feeds one body to two pipes: `store` (the compressed copy, optional) and
/// `decode` (the decompressor).
///
/// The compressed digest is checked as bytes pass. The decompressor's pipe
/// ends with that verdict; the store pipe ends cleanly only when the
/// decompressor also reported success through `verdict`.
pub(super) async fn feed_tee(
    mut body: imagecache_core::ByteStream,
    mut check: Check,
    mut store: Option<mpsc::Sender<Msg>>,
    decode: mpsc::Sender<Msg>,
    verdict: oneshot::Receiver<bool>,
    origin: Origin,
    digest: Digest,
) -> Result<Fed, Error> {
    use futures::StreamExt as _;

    async fn end_all(
        store: &Option<mpsc::Sender<Msg>>,
        decode: &mpsc::Sender<Msg>,
        err: &imagecache_core::Error,
    ) {
        let view = || match err {
            imagecache_core::Error::DigestMismatch { expected, actual } => {
                imagecache_core::Error::DigestMismatch {
                    expected: *expected,
                    actual: *actual,
                }
            }
            _ => imagecache_core::Error::Cancelled,
        };
        if let Some(tx) = store {
            let _ = tx.send(Msg::End(Err(view()))).await;
        }
        let _ = decode.send(Msg::End(Err(view()))).await;
    }

    while let Some(item) = body.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(source) => {
                end_all(&store, &decode, &imagecache_core::Error::Cancelled).await;
                return Err(origin.error(digest, source));
            }
        };
        for piece in pipe::split(chunk) {
            if let Err(err) = check.update(&piece) {
                end_all(&store, &decode, &pipe::backend_view(&err)).await;
                return Err(err);
            }
            if let Some(tx) = &store
                && tx.send(Msg::Chunk(piece.clone())).await.is_err()
            {
                store = None;
            }
            if decode.send(Msg::Chunk(piece)).await.is_err() {
                // The decoder stopped early, which it does only on failure;
                // its own result says why. The compressed copy must not be
                // published.
                end_all(&store, &decode, &imagecache_core::Error::Cancelled).await;
                return Ok(Fed::Abandoned);
            }
        }
    }
    match check.finish() {
        Ok(size) => {
            let _ = decode.send(Msg::End(Ok(()))).await;
            if let Some(tx) = store {
                let end = match verdict.await {
                    Ok(true) => Ok(()),
                    _ => Err(imagecache_core::Error::Cancelled),
                };
                let _ = tx.send(Msg::End(end)).await;
            }
            Ok(Fed::Verified(size))
        }
        Err(err) => {
            end_all(&store, &decode, &pipe::backend_view(&err)).await;
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_declare_compression() {
        use media_type::*;
        assert_eq!(declared_by(OCI_LAYER), Declared::Known(Compression::None));
        assert_eq!(
            declared_by(OCI_LAYER_GZIP),
            Declared::Known(Compression::Gzip)
        );
        assert_eq!(
            declared_by(OCI_LAYER_ZSTD),
            Declared::Known(Compression::Zstd)
        );
        assert_eq!(
            declared_by(DOCKER_LAYER),
            Declared::Known(Compression::None)
        );
        assert_eq!(
            declared_by(DOCKER_LAYER_GZIP),
            Declared::Known(Compression::Gzip)
        );
        assert_eq!(
            declared_by("application/vnd.oci.image.layer.v1.tar+bzip2"),
            Declared::Unsupported("bzip2".into())
        );
        assert_eq!(declared_by("application/octet-stream"), Declared::Unknown);
    }

    #[test]
    fn both_spellings_of_each_compression_read_the_same() {
        let pairs = [
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                "application/vnd.docker.image.rootfs.foreign.diff.tar",
                Compression::None,
            ),
        ];
        for (oci, docker, want) in pairs {
            assert_eq!(Compression::from_media_type(oci), Some(Ok(want)), "{oci}");
            assert_eq!(
                Compression::from_media_type(docker),
                Some(Ok(want)),
                "{docker}"
            );
            let shouted = format!("  {}  ", oci.to_ascii_uppercase());
            assert_eq!(Compression::from_media_type(&shouted), Some(Ok(want)));
        }
        // Spellings no registry defines are not layers.
        for odd in ["application/x-tar.gz", "application/vnd.example.tar.v1"] {
            assert_eq!(Compression::from_media_type(odd), None, "{odd}");
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
            Some(Err("bzip2".to_owned()))
        );
    }

    #[test]
    fn magic_bytes_are_recognised() {
        assert_eq!(
            sniffed(&[0x1f, 0x8b, 8, 0]),
            Declared::Known(Compression::Gzip)
        );
        assert_eq!(
            sniffed(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Declared::Known(Compression::Zstd)
        );
        assert_eq!(sniffed(b"BZh91AY"), Declared::Unsupported("bzip2".into()));
        assert_eq!(
            sniffed(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Declared::Unsupported("xz".into())
        );
        assert_eq!(sniffed(b"layer.tar"), Declared::Known(Compression::None));
    }

    #[test]
    fn media_type_switches_within_its_family() {
        use media_type::*;
        assert_eq!(
            switched_media_type(OCI_LAYER_GZIP, Compression::None),
            Some(OCI_LAYER)
        );
        assert_eq!(
            switched_media_type(OCI_LAYER, Compression::Zstd),
            Some(OCI_LAYER_ZSTD)
        );
        assert_eq!(
            switched_media_type(DOCKER_LAYER, Compression::Gzip),
            Some(DOCKER_LAYER_GZIP)
        );
        assert_eq!(switched_media_type(DOCKER_LAYER, Compression::Zstd), None);
        assert_eq!(
            switched_media_type("application/octet-stream", Compression::Gzip),
            None
        );
    }

    #[test]
    fn compression_names_roundtrip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(c.as_str().parse::<Compression>().unwrap(), c);
        }
        assert!("lz4".parse::<Compression>().is_err());
    }
}
