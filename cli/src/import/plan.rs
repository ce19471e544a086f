//! Reading an archive's metadata into a plan: which images it holds, their
//! exact config bytes, and which layer entries to store under which digest.
//!
//! Everything that can be checked without storing anything is checked here:
//! config digests against the names or descriptors that promise them, blob
//! digests and sizes against their descriptors, uncompressed layers against
//! the diff IDs of their config, and layer counts. Compressed layers are
//! checked against their diff IDs while they are stored, when they are
//! decompressed anyway.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use imagecache_core::{Digest, Image, ImageId};
use imagecache_engine::blob::Compression;
use serde::Deserialize;

use super::archive::{self, SMALL_MAX, TarIndex};
use super::error::{ImportError, Result};

/// Deepest nesting of OCI indexes followed.
const MAX_INDEX_DEPTH: usize = 8;

/// What kind of archive a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `docker save` / `skopeo copy … docker-archive:` output.
    DockerArchive,
    /// An OCI image layout packed in a tar (`oci-archive:`).
    OciArchive,
    /// An OCI image layout directory (`oci:`, umoci).
    OciLayout,
}

impl Format {
    /// The name shown to users.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::DockerArchive => "docker-archive",
            Self::OciArchive => "oci-archive",
            Self::OciLayout => "oci-layout",
        }
    }
}

/// Where a layer's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A member of the tar archive, by position.
    Entry(usize),
    /// A file of a layout directory.
    File(PathBuf),
}

/// One layer to store.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    /// Its name in the archive, for messages.
    pub(crate) entry: String,
    /// Where its bytes are.
    pub(crate) location: Location,
    /// The digest of its bytes as stored in the archive.
    pub(crate) digest: Digest,
    /// Its size as stored in the archive.
    pub(crate) size: u64,
    /// The digest of its uncompressed tar.
    pub(crate) diff_id: Digest,
    /// How its bytes are compressed.
    pub(crate) compression: Compression,
    /// Its media type, where a descriptor gave one.
    pub(crate) media_type: Option<String>,
    /// The first image that uses it, and at which position, for messages.
    pub(crate) image: ImageId,
    /// The 0-based layer position in that image.
    pub(crate) index: usize,
}

/// One image to create.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    /// The parsed config, holding its exact bytes.
    pub(crate) image: Image,
    /// The config's name in the archive.
    pub(crate) entry: String,
    /// The names the archive gives the image.
    pub(crate) tags: Vec<String>,
    /// The parent `manifest.json` names, if any.
    pub(crate) parent: Option<ImageId>,
    /// Its layers, as positions in [`ArchivePlan::jobs`].
    pub(crate) layers: Vec<usize>,
}

/// The archive's bytes, as far as later passes need them.
#[derive(Debug)]
pub(crate) enum Source {
    /// A tar archive and what the first pass learned about it.
    Tar(TarIndex),
    /// A layout directory.
    Dir(PathBuf),
}

/// Everything an import of one path will do.
#[derive(Debug)]
pub(crate) struct ArchivePlan {
    /// The path given.
    pub(crate) path: PathBuf,
    /// What it is.
    pub(crate) format: Format,
    /// Its bytes.
    pub(crate) source: Source,
    /// Its images, each once.
    pub(crate) images: Vec<ImagePlan>,
    /// Its layers, each blob once.
    pub(crate) jobs: Vec<LayerJob>,
}

/// Reads the metadata of the archive or layout at `path` into a plan.
///
/// `progress` is called with the bytes read of a tar archive.
///
/// # Errors
/// Any [`ImportError`] about the archive's contents; see the module docs.
pub(crate) fn plan(
    path: &Path,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ArchivePlan> {
    let meta = fs::metadata(path).map_err(|source| ImportError::Open {
        path: path.to_owned(),
        source,
    })?;
    let source = if meta.is_dir() {
        Source::Dir(path.to_owned())
    } else {
        Source::Tar(archive::scan(path, cancel, progress)?)
    };
    let reader = Reader {
        path: path.to_owned(),
        source,
        cancel,
    };
    let format = if reader.exists("manifest.json") {
        Format::DockerArchive
    } else if reader.exists("oci-layout") || reader.exists("index.json") {
        match reader.source {
            Source::Tar(_) => Format::OciArchive,
            Source::Dir(_) => Format::OciLayout,
        }
    } else {
        let reason = match (&reader.source, meta.is_dir()) {
            (_, true) => "the directory has no oci-layout file".to_owned(),
            (Source::Tar(index), _) if index.entries.is_empty() => {
                "it is empty or not a tar archive".to_owned()
            }
            _ => "it has neither manifest.json (docker-archive) nor index.json (OCI layout)"
                .to_owned(),
        };
        return Err(ImportError::UnknownFormat {
            path: path.to_owned(),
            reason,
        });
    };
    let mut builder = Builder {
        reader,
        images: Vec::new(),
        jobs: Vec::new(),
        seen_images: HashMap::new(),
        seen_jobs: HashMap::new(),
    };
    match format {
        Format::DockerArchive => builder.docker_archive()?,
        Format::OciArchive | Format::OciLayout => builder.oci_layout()?,
    }
    if builder.images.is_empty() {
        return Err(ImportError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(ArchivePlan {
        path: path.to_owned(),
        format,
        source: builder.reader.source,
        images: builder.images,
        jobs: builder.jobs,
    })
}

/// Reads metadata entries from a tar index or a directory.
struct Reader<'a> {
    path: PathBuf,
    source: Source,
    cancel: &'a AtomicBool,
}

/// A layer's bytes as found in the archive.
struct Found {
    location: Location,
    name: String,
    /// Size and digest, when the first pass measured them.
    measured: Option<(u64, Digest)>,
    /// The first bytes, when the first pass saw them.
    head: Option<Vec<u8>>,
}

impl Reader<'_> {
    fn exists(&self, name: &str) -> bool {
        match &self.source {
            Source::Tar(index) => matches!(index.resolve(name), Ok(Some(_))),
            Source::Dir(dir) => dir.join(archive::normalize(name)).is_file(),
        }
    }

    fn missing(&self, name: &str, referenced_by: &str) -> ImportError {
        ImportError::MissingEntry {
            path: self.path.clone(),
            entry: name.to_owned(),
            referenced_by: referenced_by.to_owned(),
        }
    }

    fn too_large(&self, name: &str, size: u64) -> ImportError {
        ImportError::TooLarge {
            path: self.path.clone(),
            entry: name.to_owned(),
            size,
            limit: SMALL_MAX,
        }
    }

    /// Reads a metadata entry whole.
    fn small(&mut self, name: &str, referenced_by: &str) -> Result<Bytes> {
        let missing = self.missing(name, referenced_by);
        match &mut self.source {
            Source::Tar(index) => {
                let position = index.resolve(name)?.ok_or(missing)?;
                let Some((size, _, _)) = index.file(position) else {
                    return Err(self.missing(name, referenced_by));
                };
                if size > SMALL_MAX {
                    return Err(self.too_large(name, size));
                }
                if let Some(bytes) = index.retained(position) {
                    return Ok(bytes);
                }
                let fetched = archive::fetch(index, &[position], self.cancel)?;
                index.retain(fetched);
                match index.retained(position) {
                    Some(bytes) => Ok(bytes),
                    None => Err(self.missing(name, referenced_by)),
                }
            }
            Source::Dir(dir) => {
                let file = dir.join(archive::normalize(name));
                let opened = fs::File::open(&file);
                let mut opened = match opened {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(self.missing(name, referenced_by));
                    }
                    Err(source) => return Err(ImportError::Open { path: file, source }),
                };
                let mut data = Vec::new();
                (&mut opened)
                    .take(SMALL_MAX + 1)
                    .read_to_end(&mut data)
                    .map_err(|source| ImportError::Read {
                        path: self.path.clone(),
                        entry: Some(name.to_owned()),
                        source,
                    })?;
                if data.len() as u64 > SMALL_MAX {
                    return Err(self.too_large(name, data.len() as u64));
                }
                Ok(Bytes::from(data))
            }
        }
    }

    /// Finds a layer entry.
    fn layer(&self, name: &str, referenced_by: &str) -> Result<Found> {
        match &self.source {
            Source::Tar(index) => {
                let position = index
                    .resolve(name)?
                    .ok_or_else(|| self.missing(name, referenced_by))?;
                let (size, digest, head) = index
                    .file(position)
                    .ok_or_else(|| self.missing(name, referenced_by))?;
                Ok(Found {
                    location: Location::Entry(position),
                    name: archive::normalize(name),
                    measured: Some((size, digest)),
                    head: Some(head.to_vec()),
                })
            }
            Source::Dir(dir) => {
                let file = dir.join(archive::normalize(name));
                if !file.is_file() {
                    return Err(self.missing(name, referenced_by));
                }
                Ok(Found {
                    location: Location::File(file),
                    name: archive::normalize(name),
                    measured: None,
                    head: None,
                })
            }
        }
    }
}

/// The compression a layer media type declares; `None` for a media type
/// that is not a layer this import knows.
fn declared(media_type: &str) -> Option<Compression> {
    Compression::from_media_type(media_type).and_then(Result::ok)
}

/// The digest a file name promises: `blobs/<alg>/<hex>`, or for configs
/// also Docker's `<hex>.json`.
fn digest_in_name(name: &str, config: bool) -> Option<Digest> {
    let name = archive::normalize(name);
    if let Some(rest) = name.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return Digest::parse(&format!("{alg}:{hex}")).ok();
    }
    if config {
        let hex = name.strip_suffix(".json")?;
        return Digest::parse(&format!("sha256:{hex}")).ok();
    }
    None
}

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config", alias = "config")]
    config: String,
    #[serde(rename = "RepoTags", alias = "repoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", alias = "layers", default)]
    layers: Option<Vec<String>>,
    #[serde(rename = "Parent", alias = "parent", default)]
    parent: Option<String>,
}

/// An OCI descriptor.
#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// `index.json` or any image index.
#[derive(Debug, Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Deserialize)]
struct OciManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// `oci-layout`.
#[derive(Debug, Deserialize)]
struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Annotations that name an image in an OCI index.
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

struct Builder<'a> {
    reader: Reader<'a>,
    images: Vec<ImagePlan>,
    jobs: Vec<LayerJob>,
    seen_images: HashMap<ImageId, usize>,
    seen_jobs: HashMap<Digest, usize>,
}

impl Builder<'_> {
    fn path(&self) -> PathBuf {
        self.reader.path.clone()
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        entry: &str,
        what: &'static str,
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| ImportError::BadJson {
            path: self.path(),
            entry: entry.to_owned(),
            what,
            source,
        })
    }

    fn bad_digest(
        &self,
        entry: &str,
        field: String,
        source: imagecache_core::DigestError,
    ) -> ImportError {
        ImportError::BadDigest {
            path: self.path(),
            entry: entry.to_owned(),
            field,
            source,
        }
    }

    /// Parses a config and its diff IDs.
    fn config(&self, bytes: Bytes, entry: &str) -> Result<(Image, Vec<Digest>)> {
        let image = Image::from_bytes(bytes).map_err(|source| ImportError::BadConfig {
            path: self.path(),
            entry: entry.to_owned(),
            source,
        })?;
        let diff_ids = image
            .rootfs
            .raw_diff_ids
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                Digest::parse(raw)
                    .map_err(|e| self.bad_digest(entry, format!("rootfs.diff_ids[{i}]"), e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((image, diff_ids))
    }

    /// Records an image, or merges its tags into the same image seen before.
    fn add_image(&mut self, plan: ImagePlan) {
        let id = plan.image.id();
        match self.seen_images.get(&id) {
            Some(&at) => {
                let known = &mut self.images[at];
                for tag in plan.tags {
                    if !known.tags.contains(&tag) {
                        known.tags.push(tag);
                    }
                }
                if known.parent.is_none() {
                    known.parent = plan.parent;
                }
            }
            None => {
                self.seen_images.insert(id, self.images.len());
                self.images.push(plan);
            }
        }
    }

    /// Records a layer job, once per blob; returns its position.
    ///
    /// # Errors
    /// [`ImportError::ConflictingDiffIds`] when the blob was listed before
    /// with another diff ID.
    fn add_job(&mut self, job: LayerJob) -> Result<usize> {
        if let Some(&at) = self.seen_jobs.get(&job.digest) {
            let known = &self.jobs[at];
            if known.diff_id != job.diff_id {
                return Err(ImportError::ConflictingDiffIds {
                    path: self.path(),
                    entry: job.entry,
                    first: known.diff_id,
                    first_image: known.image,
                    second: job.diff_id,
                    second_image: job.image,
                });
            }
            return Ok(at);
        }
        let at = self.jobs.len();
        self.seen_jobs.insert(job.digest, at);
        self.jobs.push(job);
        Ok(at)
    }

    fn docker_archive(&mut self) -> Result<()> {
        let bytes = self.reader.small("manifest.json", "the archive")?;
        let manifests: Vec<DockerManifest> = self.json(&bytes, "manifest.json", "manifest.json")?;
        for (n, m) in manifests.into_iter().enumerate() {
            let config_bytes = self
                .reader
                .small(&m.config, &format!("manifest.json[{n}].Config"))?;
            let actual = Digest::sha256(&config_bytes);
            if let Some(expected) = digest_in_name(&m.config, true)
                && expected != actual
            {
                return Err(ImportError::ConfigDigestMismatch {
                    path: self.path(),
                    entry: m.config.clone(),
                    expected,
                    actual,
                });
            }
            let (image, diff_ids) = self.config(config_bytes, &m.config)?;
            let layers = m.layers.unwrap_or_default();
            if layers.len() != diff_ids.len() {
                return Err(ImportError::LayerCount {
                    path: self.path(),
                    entry: "manifest.json".to_owned(),
                    image: image.id(),
                    layers: layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let parent =
                match m.parent.as_deref().filter(|p| !p.is_empty()) {
                    Some(p) => Some(ImageId::parse(p).map_err(|e| {
                        self.bad_digest("manifest.json", format!("[{n}].Parent"), e)
                    })?),
                    None => None,
                };
            let mut positions = Vec::with_capacity(layers.len());
            for (index, (name, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
                let found = self
                    .reader
                    .layer(name, &format!("manifest.json[{n}].Layers[{index}]"))?;
                let Some((size, digest)) = found.measured else {
                    return Err(self.reader.missing(name, "manifest.json"));
                };
                if let Some(expected) = digest_in_name(name, false)
                    && expected.algorithm() == digest.algorithm()
                    && expected != digest
                {
                    return Err(ImportError::BlobDigestMismatch {
                        path: self.path(),
                        entry: found.name,
                        expected,
                        actual: digest,
                    });
                }
                let compression = Compression::sniff(found.head.as_deref().unwrap_or_default())
                    .map_err(|compression| ImportError::UnsupportedCompression {
                        path: self.path(),
                        entry: found.name.clone(),
                        compression,
                    })?;
                let job = self.checked_job(
                    found,
                    digest,
                    size,
                    *diff_id,
                    compression,
                    None,
                    &image,
                    index,
                )?;
                positions.push(self.add_job(job)?);
            }
            self.add_image(ImagePlan {
                image,
                entry: archive::normalize(&m.config),
                tags: m.repo_tags.unwrap_or_default(),
                parent,
                layers: positions,
            });
        }
        Ok(())
    }

    /// A layer job, refused if an uncompressed layer is not its diff ID.
    #[allow(clippy::too_many_arguments)]
    fn checked_job(
        &self,
        found: Found,
        digest: Digest,
        size: u64,
        diff_id: Digest,
        compression: Compression,
        media_type: Option<String>,
        image: &Image,
        index: usize,
    ) -> Result<LayerJob> {
        if compression == Compression::None && digest != diff_id {
            return Err(ImportError::DiffIdMismatch {
                path: self.path(),
                entry: found.name,
                image: image.id(),
                index,
                expected: diff_id,
                actual: digest,
            });
        }
        Ok(LayerJob {
            entry: found.name,
            location: found.location,
            digest,
            size,
            diff_id,
            compression,
            media_type,
            image: image.id(),
            index,
        })
    }

    fn oci_layout(&mut self) -> Result<()> {
        let layout = self.reader.small("oci-layout", "the OCI image layout")?;
        let layout: OciLayoutFile = self.json(&layout, "oci-layout", "oci-layout file")?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(ImportError::UnknownFormat {
                path: self.path(),
                reason: format!(
                    "oci-layout has imageLayoutVersion {:?}, expected 1.x",
                    layout.image_layout_version
                ),
            });
        }
        let index = self.reader.small("index.json", "the OCI image layout")?;
        let index: OciIndex = self.json(&index, "index.json", "OCI image index")?;
        self.oci_index(index, "index.json", 0, &[])
    }

    fn oci_index(
        &mut self,
        index: OciIndex,
        entry: &str,
        depth: usize,
        names: &[String],
    ) -> Result<()> {
        if depth >= MAX_INDEX_DEPTH {
            return Err(ImportError::IndexTooDeep {
                path: self.path(),
                entry: entry.to_owned(),
                limit: MAX_INDEX_DEPTH,
            });
        }
        for (n, desc) in index.manifests.iter().enumerate() {
            let field = format!("{entry} manifests[{n}]");
            let mut tags: Vec<String> = names.to_vec();
            if let Some(annotations) = &desc.annotations {
                for key in NAME_ANNOTATIONS {
                    if let Some(name) = annotations.get(key)
                        && !tags.contains(name)
                    {
                        tags.push(name.clone());
                    }
                }
            }
            let (name, bytes) = self.blob(desc, &field, false)?;
            let is_index = match desc.media_type.as_deref() {
                Some(OCI_INDEX | DOCKER_LIST) => true,
                Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
                // Without a media type, the document says what it is.
                None => {
                    let probe: serde_json::Value =
                        self.json(&bytes, &name, "OCI manifest or index")?;
                    probe.get("manifests").is_some()
                }
                Some(other) => {
                    return Err(ImportError::UnsupportedMediaType {
                        path: self.path(),
                        entry: name,
                        media_type: other.to_owned(),
                    });
                }
            };
            if is_index {
                let nested: OciIndex = self.json(&bytes, &name, "OCI image index")?;
                self.oci_index(nested, &name, depth + 1, &tags)?;
            } else {
                let manifest: OciManifest = self.json(&bytes, &name, "OCI image manifest")?;
                self.oci_manifest(manifest, &name, tags)?;
            }
        }
        Ok(())
    }

    fn oci_manifest(
        &mut self,
        manifest: OciManifest,
        entry: &str,
        tags: Vec<String>,
    ) -> Result<()> {
        match manifest.config.media_type.as_deref() {
            None | Some(OCI_CONFIG | DOCKER_CONFIG) => {}
            // Attestations, signatures and other artifacts are stored as
            // manifests beside the images; they are not images.
            Some(_) => return Ok(()),
        }
        let (config_entry, config_bytes) =
            self.blob(&manifest.config, &format!("{entry} config"), true)?;
        let (image, diff_ids) = self.config(config_bytes, &config_entry)?;
        if manifest.layers.len() != diff_ids.len() {
            return Err(ImportError::LayerCount {
                path: self.path(),
                entry: entry.to_owned(),
                image: image.id(),
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut positions = Vec::with_capacity(diff_ids.len());
        for (index, (desc, diff_id)) in manifest.layers.iter().zip(&diff_ids).enumerate() {
            let field = format!("{entry} layers[{index}]");
            let digest = Digest::parse(&desc.digest)
                .map_err(|e| self.bad_digest(entry, format!("layers[{index}].digest"), e))?;
            let media_type = desc.media_type.clone().unwrap_or_default();
            let Some(compression) = declared(&media_type) else {
                return Err(ImportError::UnsupportedMediaType {
                    path: self.path(),
                    entry: field,
                    media_type,
                });
            };
            let name = blob_name(&digest);
            let found = self.reader.layer(&name, &field)?;
            if let Some((size, actual)) = found.measured {
                if actual != digest {
                    return Err(ImportError::BlobDigestMismatch {
                        path: self.path(),
                        entry: found.name,
                        expected: digest,
                        actual,
                    });
                }
                if size != desc.size {
                    return Err(ImportError::BlobSizeMismatch {
                        path: self.path(),
                        entry: found.name,
                        expected: desc.size,
                        actual: size,
                    });
                }
            }
            let job = self.checked_job(
                found,
                digest,
                desc.size,
                *diff_id,
                compression,
                Some(media_type),
                &image,
                index,
            )?;
            positions.push(self.add_job(job)?);
        }
        self.add_image(ImagePlan {
            image,
            entry: config_entry,
            tags,
            parent: None,
            layers: positions,
        });
        Ok(())
    }

    /// Reads a small blob a descriptor names and checks its size and digest.
    fn blob(&mut self, desc: &Descriptor, field: &str, config: bool) -> Result<(String, Bytes)> {
        let digest = Digest::parse(&desc.digest)
            .map_err(|e| self.bad_digest(field, "digest".to_owned(), e))?;
        let name = blob_name(&digest);
        if desc.size > SMALL_MAX {
            return Err(self.reader.too_large(&name, desc.size));
        }
        let bytes = self.reader.small(&name, field)?;
        let mut hasher = digest.hasher();
        hasher.update(&bytes);
        let actual = hasher.finish();
        if actual != digest {
            return Err(if config {
                ImportError::ConfigDigestMismatch {
                    path: self.path(),
                    entry: name,
                    expected: digest,
                    actual,
                }
            } else {
                ImportError::BlobDigestMismatch {
                    path: self.path(),
                    entry: name,
                    expected: digest,
                    actual,
                }
            });
        }
        if bytes.len() as u64 != desc.size {
            return Err(ImportError::BlobSizeMismatch {
                path: self.path(),
                entry: name,
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        Ok((name, bytes))
    }
}

/// Where a layout keeps a blob; the digest was validated, so this is a
/// safe relative path.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_recognised_from_bytes_and_media_types() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 8, 0]),
            Ok(Compression::Gzip)
        );
        assert_eq!(Compression::sniff(b"etc/\0\0\0\0"), Ok(Compression::None));
        assert_eq!(
            Compression::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0]),
            Err("xz".to_owned())
        );
        assert_eq!(
            declared("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            declared("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            declared("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(declared("application/vnd.in-toto+json"), None);
    }

    #[test]
    fn names_promise_digests() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).ok();
        assert_eq!(digest_in_name(&format!("blobs/sha256/{hex}"), false), d);
        assert_eq!(digest_in_name(&format!("./{hex}.json"), true), d);
        assert_eq!(digest_in_name(&format!("{hex}.json"), false), None);
        assert_eq!(digest_in_name(&format!("{hex}/layer.tar"), false), None);
        assert_eq!(digest_in_name("blobs/sha256/../../x", false), None);
    }
}
