//! Reading an archive's metadata into a plan: which images it holds, their
//! exact config bytes, and which layer entries to store under which digest.
//!
//! Everything that can be checked without storing anything is checked here:
//! config digests against the names or descriptors that promise them, blob
//! digests and sizes against their descriptors, uncompressed layers against
//! the diff IDs of their config, and layer counts. Compressed layers are
//! checked against their diff IDs while they are stored, when they are
//! decompressed anyway.

use std::collections::HashMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use imagecache_core::{Digest, Image, ImageId, Platform, compare_platform};
use imagecache_engine::blob::Compression;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType, OciLayout};
use serde::Deserialize;

use super::archive::{self, SMALL_MAX, TarIndex};
use crate::error::{Error, Result};
use crate::options::PlatformChoice;

/// Deepest nesting of OCI indexes followed.
const MAX_INDEX_DEPTH: usize = 8;

/// What kind of archive an input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Format {
    /// `docker save` / `skopeo copy … docker-archive:` output.
    DockerArchive,
    /// An OCI image layout packed in a tar (`oci-archive:`).
    OciArchive,
    /// An OCI image layout directory (`oci:`, umoci).
    OciLayout,
}

impl Format {
    /// The name shown to users.
    pub fn name(self) -> &'static str {
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
    /// Manifests of an index left out, and why.
    pub(crate) skipped: Vec<Skipped>,
}

/// A manifest an import left out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The manifest's digest.
    pub digest: String,
    /// Its platform, as the index gives it (`os/arch[/variant]`), if any.
    pub platform: Option<String>,
    /// Why it was left out.
    pub reason: String,
}

/// Reads the metadata of the archive or layout `file` (called `path` in
/// messages) into a plan.
///
/// `progress` is called with the bytes read of a tar archive.
///
/// # Errors
/// Any [`Error`] about the archive's contents; see the module docs.
pub(crate) fn plan(
    file: &Path,
    path: &Path,
    platform: &PlatformChoice,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ArchivePlan> {
    let meta = fs::metadata(file).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    let source = if meta.is_dir() {
        Source::Dir(file.to_owned())
    } else {
        Source::Tar(archive::scan(file, path, cancel, progress)?)
    };
    let reader = Reader {
        path: path.to_owned(),
        source,
        cancel,
    };
    // Docker 25 and later write both: manifest.json is what `docker load`
    // reads, and it names every layer and the tags.
    let format = if reader.exists("manifest.json") {
        Format::DockerArchive
    } else if reader.exists("oci-layout") || reader.exists("index.json") {
        match reader.source {
            Source::Tar(_) => Format::OciArchive,
            Source::Dir(_) => Format::OciLayout,
        }
    } else {
        let reason = match (&reader.source, meta.is_dir()) {
            (_, true) => "the directory has neither manifest.json (docker-archive) nor oci-layout and index.json (OCI layout)".to_owned(),
            (Source::Tar(index), _) if index.entries.is_empty() => {
                "it is empty or not a tar archive".to_owned()
            }
            _ => "it has neither manifest.json (docker-archive) nor index.json (OCI layout)"
                .to_owned(),
        };
        return Err(Error::UnknownFormat {
            path: path.to_owned(),
            reason,
        });
    };
    let mut builder = Builder {
        reader,
        platform,
        images: Vec::new(),
        jobs: Vec::new(),
        skipped: Vec::new(),
        seen_images: HashMap::new(),
        seen_jobs: HashMap::new(),
    };
    match format {
        Format::DockerArchive => builder.docker_archive()?,
        Format::OciArchive | Format::OciLayout => builder.oci_layout()?,
    }
    if builder.images.is_empty() {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    Ok(ArchivePlan {
        path: path.to_owned(),
        format,
        source: builder.reader.source,
        images: builder.images,
        jobs: builder.jobs,
        skipped: builder.skipped,
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
    /// Its size.
    size: u64,
    /// Its SHA-256, when it was hashed.
    digest: Option<Digest>,
    /// Its first bytes (up to 8), to recognise compression.
    head: Vec<u8>,
}

impl Reader<'_> {
    fn exists(&self, name: &str) -> bool {
        match &self.source {
            Source::Tar(index) => matches!(index.resolve(name), Ok(Some(_))),
            Source::Dir(dir) => dir.join(archive::normalize(name)).is_file(),
        }
    }

    fn missing(&self, name: &str, referenced_by: &str) -> Error {
        Error::MissingEntry {
            path: self.path.clone(),
            entry: name.to_owned(),
            referenced_by: referenced_by.to_owned(),
        }
    }

    fn too_large(&self, name: &str, size: u64) -> Error {
        Error::TooLarge {
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
                    Err(source) => return Err(Error::Open { path: file, source }),
                };
                let mut data = Vec::new();
                (&mut opened)
                    .take(SMALL_MAX + 1)
                    .read_to_end(&mut data)
                    .map_err(|source| Error::Read {
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

    /// Finds a layer entry. A tar's first pass measured every entry; a
    /// directory's file is hashed here when `hash` is set (docker-archive
    /// names promise no digest), and otherwise only its size and first bytes
    /// are read (a descriptor gives the digest, which the blob cache checks).
    fn layer(&self, name: &str, referenced_by: &str, hash: Option<&Digest>) -> Result<Found> {
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
                    size,
                    digest: Some(digest),
                    head: head.to_vec(),
                })
            }
            Source::Dir(dir) => {
                let file = dir.join(archive::normalize(name));
                let read_error = |source| Error::Read {
                    path: self.path.clone(),
                    entry: Some(archive::normalize(name)),
                    source,
                };
                let mut opened = match fs::File::open(&file) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(self.missing(name, referenced_by));
                    }
                    Err(source) => return Err(Error::Open { path: file, source }),
                };
                let meta = opened.metadata().map_err(read_error)?;
                if !meta.is_file() {
                    return Err(self.missing(name, referenced_by));
                }
                let (size, digest, head) = match hash {
                    None => {
                        let (size, digest, head) = archive::measure(&mut opened, self.cancel)
                            .map_err(|e| match e {
                                archive::Measure::Cancelled => Error::Interrupted,
                                archive::Measure::Io(source) => read_error(source),
                            })?;
                        (size, Some(digest), head)
                    }
                    Some(_) => {
                        let mut head = Vec::with_capacity(8);
                        (&mut opened)
                            .take(8)
                            .read_to_end(&mut head)
                            .map_err(read_error)?;
                        (meta.len(), None, head)
                    }
                };
                Ok(Found {
                    location: Location::File(file),
                    name: archive::normalize(name),
                    size,
                    digest,
                    head,
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

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What an index entry points at.
enum Target {
    Index,
    Manifest,
    Other,
}

fn target(media_type: &MediaType) -> Target {
    match media_type {
        MediaType::ImageIndex => Target::Index,
        MediaType::ImageManifest => Target::Manifest,
        MediaType::Other(other) if other == DOCKER_LIST => Target::Index,
        MediaType::Other(other) if other == DOCKER_MANIFEST => Target::Manifest,
        _ => Target::Other,
    }
}

/// `os/arch[/variant]` of an index entry.
fn platform_text(platform: &oci_spec::image::Platform) -> String {
    let mut text = format!("{}/{}", platform.os(), platform.architecture());
    if let Some(variant) = platform.variant().as_deref().filter(|v| !v.is_empty()) {
        text.push('/');
        text.push_str(variant);
    }
    text
}

/// An index entry's platform in this crate's terms.
fn platform_of(platform: &oci_spec::image::Platform) -> Platform {
    Platform {
        os: platform.os().to_string(),
        architecture: platform.architecture().to_string(),
        variant: platform.variant().clone().unwrap_or_default(),
        os_version: platform.os_version().clone().unwrap_or_default(),
        os_features: platform.os_features().clone().unwrap_or_default(),
    }
}

/// Annotations that name an image in an OCI index.
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

struct Builder<'a> {
    reader: Reader<'a>,
    platform: &'a PlatformChoice,
    images: Vec<ImagePlan>,
    skipped: Vec<Skipped>,
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
        serde_json::from_slice(bytes).map_err(|source| Error::BadJson {
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
    ) -> Error {
        Error::BadDigest {
            path: self.path(),
            entry: entry.to_owned(),
            field,
            source,
        }
    }

    /// Parses a config and its diff IDs.
    fn config(&self, bytes: Bytes, entry: &str) -> Result<(Image, Vec<Digest>)> {
        let image = Image::from_bytes(bytes).map_err(|source| Error::BadConfig {
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
    /// [`Error::ConflictingDiffIds`] when the blob was listed before
    /// with another diff ID.
    fn add_job(&mut self, job: LayerJob) -> Result<usize> {
        if let Some(&at) = self.seen_jobs.get(&job.digest) {
            let known = &self.jobs[at];
            if known.diff_id != job.diff_id {
                return Err(Error::ConflictingDiffIds {
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
                return Err(Error::ConfigDigestMismatch {
                    path: self.path(),
                    entry: m.config.clone(),
                    expected,
                    actual,
                });
            }
            let (image, diff_ids) = self.config(config_bytes, &m.config)?;
            let layers = m.layers.unwrap_or_default();
            if layers.len() != diff_ids.len() {
                return Err(Error::LayerCount {
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
                let field = format!("manifest.json[{n}].Layers[{index}]");
                let job = self.docker_layer(name, &field, *diff_id, &image, index)?;
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

    /// The job for one layer `manifest.json` names: its entry hashed,
    /// checked against the digest its name promises, compression sniffed.
    fn docker_layer(
        &self,
        name: &str,
        field: &str,
        diff_id: Digest,
        image: &Image,
        index: usize,
    ) -> Result<LayerJob> {
        let found = self.reader.layer(name, field, None)?;
        let (size, Some(digest)) = (found.size, found.digest) else {
            return Err(self.reader.missing(name, "manifest.json"));
        };
        if let Some(expected) = digest_in_name(name, false)
            && expected.algorithm() == digest.algorithm()
            && expected != digest
        {
            return Err(Error::BlobDigestMismatch {
                path: self.path(),
                entry: found.name,
                expected,
                actual: digest,
            });
        }
        let compression = Compression::sniff(&found.head).map_err(|compression| {
            Error::UnsupportedCompression {
                path: self.path(),
                entry: found.name.clone(),
                compression,
            }
        })?;
        self.checked_job(
            found,
            digest,
            size,
            diff_id,
            compression,
            None,
            image,
            index,
        )
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
            return Err(Error::DiffIdMismatch {
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
        let layout: OciLayout = self.json(&layout, "oci-layout", "oci-layout file")?;
        if !layout.image_layout_version().starts_with("1.") {
            return Err(Error::UnknownFormat {
                path: self.path(),
                reason: format!(
                    "oci-layout has imageLayoutVersion {:?}, expected 1.x",
                    layout.image_layout_version()
                ),
            });
        }
        let index = self.reader.small("index.json", "the OCI image layout")?;
        let index: ImageIndex = self.json(&index, "index.json", "OCI image index")?;
        self.oci_index(&index, "index.json", 0, &[])
    }

    /// The entries of `index` to import: those for the platform asked for
    /// (all, with [`PlatformChoice::All`]); entries without a platform are
    /// always taken. The rest are recorded as skipped.
    fn choose<'i>(&mut self, index: &'i ImageIndex, entry: &str) -> Result<Vec<&'i Descriptor>> {
        let wanted = match self.platform {
            PlatformChoice::All => return Ok(index.manifests().iter().collect()),
            PlatformChoice::Host => Platform::host(),
            PlatformChoice::Only(p) => p.clone(),
        };
        let mut chosen = Vec::new();
        let mut others = Vec::new();
        for desc in index.manifests() {
            match desc.platform() {
                None => chosen.push(desc),
                Some(p) if compare_platform(&wanted, &platform_of(p)) => chosen.push(desc),
                Some(_) => others.push(desc),
            }
        }
        // Of several platforms the host can run, the exact one wins (an
        // arm64 host takes arm64 over arm/v7), as Docker picks the best.
        let exact = |d: &&Descriptor| {
            d.platform().as_ref().is_some_and(|p| {
                p.architecture().to_string() == wanted.architecture
                    && (wanted.variant.is_empty()
                        || p.variant().as_deref() == Some(wanted.variant.as_str()))
            })
        };
        if chosen.iter().any(exact) {
            let (keep, drop): (Vec<_>, Vec<_>) = chosen
                .into_iter()
                .partition(|d| d.platform().is_none() || exact(d));
            chosen = keep;
            others.extend(drop);
        }
        if chosen.is_empty() && !others.is_empty() {
            return Err(Error::NoMatchingPlatform {
                path: self.path(),
                entry: entry.to_owned(),
                wanted: format!("{}/{}", wanted.os, wanted.architecture)
                    + &if wanted.variant.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", wanted.variant)
                    },
                available: others
                    .iter()
                    .filter_map(|d| d.platform().as_ref().map(platform_text))
                    .collect(),
            });
        }
        for desc in others {
            self.skipped.push(Skipped {
                digest: desc.digest().to_string(),
                platform: desc.platform().as_ref().map(platform_text),
                reason: "another platform".to_owned(),
            });
        }
        Ok(chosen)
    }

    fn oci_index(
        &mut self,
        index: &ImageIndex,
        entry: &str,
        depth: usize,
        names: &[String],
    ) -> Result<()> {
        if depth >= MAX_INDEX_DEPTH {
            return Err(Error::IndexTooDeep {
                path: self.path(),
                entry: entry.to_owned(),
                limit: MAX_INDEX_DEPTH,
            });
        }
        let all = matches!(self.platform, PlatformChoice::All);
        for (n, desc) in self.choose(index, entry)?.into_iter().enumerate() {
            let field = format!("{entry} manifests[{n}]");
            let mut tags: Vec<String> = names.to_vec();
            // Docker writes the full name for containerd and only the tag
            // as the OCI ref name; the full name wins when both are there.
            if let Some(name) = desc
                .annotations()
                .as_ref()
                .and_then(|a| NAME_ANNOTATIONS.iter().find_map(|key| a.get(*key)))
                && !tags.contains(name)
            {
                tags.push(name.clone());
            }
            let kind = target(desc.media_type());
            if matches!(kind, Target::Other) {
                return Err(Error::UnsupportedMediaType {
                    path: self.path(),
                    entry: field,
                    media_type: desc.media_type().to_string(),
                });
            }
            // A sparse index (a partial copy of a multi-platform image)
            // lacks the blobs of platforms nobody asked for; with every
            // platform asked for, what is absent is skipped and named.
            let digest = self.descriptor_digest(desc, &field)?;
            if all && !self.reader.exists(&blob_name(&digest)) {
                self.skipped.push(Skipped {
                    digest: digest.to_string(),
                    platform: desc.platform().as_ref().map(platform_text),
                    reason: format!("{} is not in the archive", blob_name(&digest)),
                });
                continue;
            }
            let (name, bytes) = self.blob(desc, &field, false)?;
            match kind {
                Target::Index => {
                    let nested: ImageIndex = self.json(&bytes, &name, "OCI image index")?;
                    self.oci_index(&nested, &name, depth + 1, &tags)?;
                }
                Target::Manifest | Target::Other => {
                    let manifest: ImageManifest = self.json(&bytes, &name, "OCI image manifest")?;
                    self.oci_manifest(&manifest, &name, tags)?;
                }
            }
        }
        Ok(())
    }

    fn descriptor_digest(&self, desc: &Descriptor, field: &str) -> Result<Digest> {
        Digest::parse(desc.digest().as_ref())
            .map_err(|e| self.bad_digest(field, "digest".to_owned(), e))
    }

    fn oci_manifest(
        &mut self,
        manifest: &ImageManifest,
        entry: &str,
        tags: Vec<String>,
    ) -> Result<()> {
        match manifest.config().media_type() {
            MediaType::ImageConfig => {}
            MediaType::Other(other) if other == DOCKER_CONFIG => {}
            // Attestations, signatures and other artifacts are stored as
            // manifests beside the images; they are not images.
            _ => return Ok(()),
        }
        let (config_entry, config_bytes) =
            self.blob(manifest.config(), &format!("{entry} config"), true)?;
        let (image, diff_ids) = self.config(config_bytes, &config_entry)?;
        if manifest.layers().len() != diff_ids.len() {
            return Err(Error::LayerCount {
                path: self.path(),
                entry: entry.to_owned(),
                image: image.id(),
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut positions = Vec::with_capacity(diff_ids.len());
        for (index, (desc, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
            let job = self.oci_layer(desc, entry, *diff_id, &image, index)?;
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

    /// The job for one layer a manifest lists: the blob found, its size,
    /// digest (when measured) and compression checked against the
    /// descriptor.
    fn oci_layer(
        &self,
        desc: &Descriptor,
        entry: &str,
        diff_id: Digest,
        image: &Image,
        index: usize,
    ) -> Result<LayerJob> {
        let field = format!("{entry} layers[{index}]");
        let digest = Digest::parse(desc.digest().as_ref())
            .map_err(|e| self.bad_digest(entry, format!("layers[{index}].digest"), e))?;
        let media_type = desc.media_type().to_string();
        let Some(compression) = declared(&media_type) else {
            return Err(Error::UnsupportedMediaType {
                path: self.path(),
                entry: field,
                media_type,
            });
        };
        let found = self
            .reader
            .layer(&blob_name(&digest), &field, Some(&digest))?;
        if found.size != desc.size() {
            return Err(Error::BlobSizeMismatch {
                path: self.path(),
                entry: found.name,
                expected: desc.size(),
                actual: found.size,
            });
        }
        if let Some(actual) = found.digest
            && actual.algorithm() == digest.algorithm()
            && actual != digest
        {
            return Err(Error::BlobDigestMismatch {
                path: self.path(),
                entry: found.name,
                expected: digest,
                actual,
            });
        }
        self.check_compression(&found, &media_type, compression)?;
        self.checked_job(
            found,
            digest,
            desc.size(),
            diff_id,
            compression,
            Some(media_type),
            image,
            index,
        )
    }

    /// Refuses a layer whose bytes are not compressed as its media type
    /// says: the blob cache would otherwise record notes about a
    /// compression the blob does not have.
    fn check_compression(
        &self,
        found: &Found,
        media_type: &str,
        declared: Compression,
    ) -> Result<()> {
        let actual = Compression::sniff(&found.head);
        // An honestly empty uncompressed layer has no bytes to recognise.
        if actual == Ok(declared) || (declared == Compression::None && found.size == 0) {
            return Ok(());
        }
        Err(Error::MediaTypeMismatch {
            path: self.path(),
            entry: found.name.clone(),
            media_type: media_type.to_owned(),
            declared: match declared {
                Compression::None => "uncompressed",
                other => other.as_str(),
            },
            actual: match actual {
                _ if found.size == 0 => "empty".to_owned(),
                Ok(Compression::None) => "not compressed (a plain tar or unknown data)".to_owned(),
                Ok(other) => format!("{other}-compressed"),
                Err(other) => format!("{other}-compressed"),
            },
        })
    }

    /// Reads a small blob a descriptor names and checks its size and digest.
    fn blob(&mut self, desc: &Descriptor, field: &str, config: bool) -> Result<(String, Bytes)> {
        let digest = self.descriptor_digest(desc, field)?;
        let name = blob_name(&digest);
        if desc.size() > SMALL_MAX {
            return Err(self.reader.too_large(&name, desc.size()));
        }
        let bytes = self.reader.small(&name, field)?;
        let mut hasher = digest.hasher();
        hasher.update(&bytes);
        let actual = hasher.finish();
        if actual != digest {
            return Err(if config {
                Error::ConfigDigestMismatch {
                    path: self.path(),
                    entry: name,
                    expected: digest,
                    actual,
                }
            } else {
                Error::BlobDigestMismatch {
                    path: self.path(),
                    entry: name,
                    expected: digest,
                    actual,
                }
            });
        }
        if bytes.len() as u64 != desc.size() {
            return Err(Error::BlobSizeMismatch {
                path: self.path(),
                entry: name,
                expected: desc.size(),
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
