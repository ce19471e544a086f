//! Why an import or an export failed. Import variants name the archive and,
//! where there is one, the entry inside it; nothing was imported when one is
//! returned. Export variants name the image or the output.

use std::path::PathBuf;

use imagecache_core::{ConfigError, Digest, DigestError, ImageId};

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an import or an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path could not be opened.
    #[error("{}: cannot open", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading the archive failed: an I/O error, a damaged tar header or
    /// invalid compressed data.
    #[error("{}: reading {} failed", path.display(), entry.as_deref().unwrap_or("the archive"))]
    Read {
        /// The archive.
        path: PathBuf,
        /// The entry being read, if one was.
        entry: Option<String>,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry ended before the size its header announced.
    #[error(
        "{}: entry {entry} is truncated: its header announces {expected} bytes, the archive holds {actual}",
        path.display()
    )]
    Truncated {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// The path is neither a docker-archive nor an OCI image layout.
    #[error("{}: not an image archive: {reason}", path.display())]
    UnknownFormat {
        /// The path.
        path: PathBuf,
        /// What was missing or wrong.
        reason: String,
    },
    /// An entry the archive refers to is not in it.
    #[error("{}: {entry}, named by {referenced_by}, is not in the archive", path.display())]
    MissingEntry {
        /// The archive.
        path: PathBuf,
        /// The entry looked for.
        entry: String,
        /// Where it was named.
        referenced_by: String,
    },
    /// A metadata entry is larger than it may be.
    #[error("{}: {entry} is {size} bytes, over the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A metadata entry is not the JSON it should be.
    #[error("{}: {entry} is not a valid {what}", path.display())]
    BadJson {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// What the entry should be (`manifest.json`, `OCI index`, …).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An image config was refused by the parser.
    #[error("{}: image config {entry} is invalid", path.display())]
    BadConfig {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// A digest in a manifest, an index or a config is not valid.
    #[error("{}: {field} in {entry} is not a valid digest", path.display())]
    BadDigest {
        /// The archive.
        path: PathBuf,
        /// The entry holding the digest.
        entry: String,
        /// The field, e.g. `rootfs.diff_ids[1]`.
        field: String,
        /// Why.
        #[source]
        source: DigestError,
    },
    /// A config's bytes do not hash to the digest its name or descriptor gives.
    #[error(
        "{}: image config {entry} was tampered with: expected digest {expected}, its bytes hash to {actual}",
        path.display()
    )]
    ConfigDigestMismatch {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The digest named.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A blob's bytes do not hash to the digest its name or descriptor gives.
    #[error(
        "{}: blob {entry} was tampered with: expected digest {expected}, its bytes hash to {actual}",
        path.display()
    )]
    BlobDigestMismatch {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The digest named.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A blob's size differs from the size its descriptor gives.
    #[error(
        "{}: blob {entry} has {actual} bytes, its descriptor announces {expected}",
        path.display()
    )]
    BlobSizeMismatch {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// A layer's uncompressed digest is not the diff ID the config lists for it.
    #[error(
        "{}: layer {entry} (layer {index} of image {image}) does not match the config: expected diff ID {expected}, the layer's content hashes to {actual}",
        path.display()
    )]
    DiffIdMismatch {
        /// The archive.
        path: PathBuf,
        /// The layer's entry.
        entry: String,
        /// The image.
        image: ImageId,
        /// The 0-based layer position.
        index: usize,
        /// The diff ID in the config.
        expected: Digest,
        /// The digest of the uncompressed layer.
        actual: Digest,
    },
    /// Two configs list the same layer blob with different diff IDs; a blob
    /// has only one uncompressed form, so one of them is wrong.
    #[error(
        "{}: layer {entry} is listed with diff ID {first} by image {first_image} and with {second} by image {second_image}",
        path.display()
    )]
    ConflictingDiffIds {
        /// The archive.
        path: PathBuf,
        /// The layer's entry.
        entry: String,
        /// The diff ID one config gives.
        first: Digest,
        /// The image whose config gives it.
        first_image: ImageId,
        /// The diff ID another config gives.
        second: Digest,
        /// The image whose config gives it.
        second_image: ImageId,
    },
    /// A manifest lists another number of layers than its config's diff IDs.
    #[error(
        "{}: image {image} lists {layers} layer(s) in {entry} but its config has {diff_ids} diff ID(s)",
        path.display()
    )]
    LayerCount {
        /// The archive.
        path: PathBuf,
        /// The manifest entry.
        entry: String,
        /// The image.
        image: ImageId,
        /// Layers listed.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A manifest or index names a media type this import cannot handle.
    #[error("{}: {entry} has unsupported media type {media_type:?}", path.display())]
    UnsupportedMediaType {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The media type.
        media_type: String,
    },
    /// A layer is compressed in a way the blob cache cannot decompress.
    #[error("{}: layer {entry} is {compression}-compressed, which is not supported", path.display())]
    UnsupportedCompression {
        /// The archive.
        path: PathBuf,
        /// The layer's entry.
        entry: String,
        /// The compression recognised.
        compression: String,
    },
    /// Links inside the archive point in a circle or too deep.
    #[error("{}: link {entry} does not resolve to a file", path.display())]
    BadLink {
        /// The archive.
        path: PathBuf,
        /// The link.
        entry: String,
    },
    /// OCI indexes nest deeper than any real layout does.
    #[error("{}: OCI indexes nest deeper than {limit} levels at {entry}", path.display())]
    IndexTooDeep {
        /// The archive.
        path: PathBuf,
        /// The index where the limit was reached.
        entry: String,
        /// The limit.
        limit: usize,
    },
    /// `manifest.json` names a `Parent` the archive and the store do not hold.
    #[error("{}: image {image} names parent {parent}, which is neither in the archive nor in the store", path.display())]
    UnknownParent {
        /// The archive.
        path: PathBuf,
        /// The image.
        image: ImageId,
        /// The parent named.
        parent: ImageId,
    },
    /// `manifest.json` names a `Parent` whose history and layers are not a
    /// prefix of the image's (Docker: `image … is not a valid parent for …`).
    #[error("{}: image {parent} is not a valid parent for {image}", path.display())]
    InvalidParent {
        /// The archive.
        path: PathBuf,
        /// The image.
        image: ImageId,
        /// The parent named.
        parent: ImageId,
    },
    /// The archive holds no image.
    #[error("{}: the archive holds no image", path.display())]
    Empty {
        /// The archive.
        path: PathBuf,
    },
    /// The blob cache refused or failed to store a layer.
    #[error("{}: storing layer {entry} failed", path.display())]
    Layer {
        /// The archive.
        path: PathBuf,
        /// The layer's entry.
        entry: String,
        /// Why.
        #[source]
        source: imagecache_engine::blob::Error,
    },
    /// Storing the image configs failed; none was stored.
    #[error("storing the imported image configs failed")]
    Store(#[source] imagecache_store::Error),
    /// A worker thread stopped without a result.
    #[error("{task} stopped before it finished")]
    Join {
        /// The task.
        task: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The import or export was cancelled; what it added was removed again.
    #[error("cancelled; nothing was imported or written")]
    Interrupted,
    /// A stream could not be copied to a temporary file to be read.
    #[error("{}: cannot copy the stream to a temporary file in {}", path.display(), dir.display())]
    Spool {
        /// The input.
        path: PathBuf,
        /// Where the temporary file was to go.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A layer's bytes are not compressed the way its media type says.
    #[error(
        "{}: layer {entry} is declared {declared} by its media type {media_type:?}, but its bytes are {actual}",
        path.display()
    )]
    MediaTypeMismatch {
        /// The archive.
        path: PathBuf,
        /// The layer's entry.
        entry: String,
        /// The media type.
        media_type: String,
        /// The compression the media type declares.
        declared: &'static str,
        /// What the bytes are.
        actual: String,
    },
    /// An index holds no image for the platform asked for.
    #[error(
        "{}: {entry} has no image for platform {wanted}; it has {}",
        path.display(),
        if available.is_empty() { "none with a platform".to_owned() } else { available.join(", ") }
    )]
    NoMatchingPlatform {
        /// The archive.
        path: PathBuf,
        /// The index.
        entry: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// A name or ID to export names no image.
    #[error("no such image: {reference}")]
    NoSuchImage {
        /// The name or ID given.
        reference: String,
        /// Why it did not resolve.
        #[source]
        source: imagecache_store::Error,
    },
    /// A layer an exported image needs is not in the blob cache in any form.
    #[error(
        "image {image}: layer {index} ({diff_id}) is not in the blob cache; import or pull the image again to export it"
    )]
    MissingLayer {
        /// The image.
        image: ImageId,
        /// The 0-based layer position.
        index: usize,
        /// The layer's diff ID.
        diff_id: Digest,
    },
    /// Reading a blob to export failed.
    #[error("reading blob {digest} from the blob cache failed")]
    BlobRead {
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: imagecache_engine::blob::Error,
    },
    /// A blob failed verification while it was exported; the export is
    /// incomplete.
    #[error("blob {digest} failed verification while it was exported")]
    BlobVerify {
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: imagecache_core::Error,
    },
    /// Writing the export failed.
    #[error("{}: writing the export failed", path.display())]
    Write {
        /// The output.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An export to a directory found the directory not empty.
    #[error("{}: the directory is not empty; export into a new or empty directory", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// An export was asked for no image.
    #[error("nothing to export: no image was named")]
    NothingToExport,
}

impl Error {
    /// Whether the import stopped because of Ctrl-C.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Interrupted)
    }
}
