//! The documents of an export: OCI manifests, `index.json`, `oci-layout`
//! and Docker's `manifest.json`.

use std::collections::HashMap;

use bytes::Bytes;
use imagecache_core::{Digest, ImageId};
use imagecache_engine::blob::{BlobCache, LayerInfo};
use oci_spec::image::{
    Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};
use serde::Serialize;

use super::sink::Sink;
use crate::error::{Error, Result};
use crate::options::ExportFormat;

/// One image ready to be written.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) id: ImageId,
    pub(super) config: Bytes,
    pub(super) names: Vec<String>,
    pub(super) parent: Option<ImageId>,
    pub(super) layers: Vec<LayerInfo>,
}

impl Planned {
    /// Bytes of its layers (an upper bound of what is written for it).
    pub(super) fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// One entry of Docker's `manifest.json`.
#[derive(Serialize)]
struct DockerEntry<'a> {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: &'a [String],
    #[serde(rename = "Layers")]
    layers: Vec<String>,
    #[serde(rename = "Parent", skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
}

/// `blobs/<alg>/<hex>`.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Result<Descriptor> {
    let digest =
        oci_spec::image::Digest::try_from(digest.to_string()).map_err(|e| document_error(&e))?;
    Ok(Descriptor::new(media_type, size, digest))
}

fn document_error(e: &dyn std::fmt::Display) -> Error {
    Error::Write {
        path: "the export's index".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// JSON with keys in a fixed order, so that documents are reproducible.
fn stable_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_value(value)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| document_error(&e))
}

/// The tag of a familiar reference (`busybox:latest` → `latest`).
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

/// The full reference containerd names images by.
fn full_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or_default();
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let qualified = match (has_domain, name.contains('/')) {
        (true, _) => name.to_owned(),
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    };
    let last = qualified.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || last.contains('@') {
        qualified
    } else {
        format!("{qualified}:latest")
    }
}

/// What one image adds to the layout's documents.
struct Written<'a> {
    manifest: Digest,
    index_entries: Vec<Descriptor>,
    docker_entry: DockerEntry<'a>,
}

/// Writes every image's blobs and manifest, then the layout's documents;
/// returns the manifest digest of each image.
pub(super) async fn write(
    sink: &mut Sink,
    blobs: &BlobCache,
    images: &[Planned],
    format: ExportFormat,
) -> Result<Vec<Digest>> {
    let mut manifests = Vec::with_capacity(images.len());
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::with_capacity(images.len());
    for image in images {
        let written = write_image(sink, blobs, image, format).await?;
        manifests.push(written.manifest);
        index_entries.extend(written.index_entries);
        docker_entries.push(written.docker_entry);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()
        .map_err(|e| document_error(&e))?;
    sink.file("index.json", &stable_json(&index)?).await?;
    if format == ExportFormat::DockerArchive {
        sink.file("manifest.json", &stable_json(&docker_entries)?)
            .await?;
    }
    sink.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .await?;
    Ok(manifests)
}

/// The `index.json` entries of one image: one per name (containerd's full
/// name, and the OCI ref name the format uses), or one without a name.
fn index_entries(
    image: &Planned,
    manifest: &Digest,
    size: u64,
    format: ExportFormat,
) -> Result<Vec<Descriptor>> {
    let entry = |annotations: Option<HashMap<String, String>>| -> Result<Descriptor> {
        let mut d = descriptor(MediaType::ImageManifest, manifest, size)?;
        d.set_annotations(annotations);
        Ok(d)
    };
    if image.names.is_empty() {
        return Ok(vec![entry(None)?]);
    }
    image
        .names
        .iter()
        .map(|name| {
            let ref_name = match format {
                ExportFormat::DockerArchive => tag_of(name).to_owned(),
                ExportFormat::Oci => name.clone(),
            };
            entry(Some(HashMap::from([
                ("io.containerd.image.name".to_owned(), full_name(name)),
                ("org.opencontainers.image.ref.name".to_owned(), ref_name),
            ])))
        })
        .collect()
}

/// Writes one image's config, layers and manifest.
async fn write_image<'a>(
    sink: &mut Sink,
    blobs: &BlobCache,
    image: &'a Planned,
    format: ExportFormat,
) -> Result<Written<'a>> {
    let config = image.id.digest();
    if sink.wants(config) {
        sink.file(&blob_path(config), &image.config).await?;
    }
    let mut layer_descriptors = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        if sink.wants(&layer.digest) {
            let reader = blobs
                .get(&layer.digest)
                .await
                .map_err(|source| Error::BlobRead {
                    digest: layer.digest,
                    source,
                })?
                .ok_or(Error::MissingLayer {
                    image: image.id,
                    index: layer_descriptors.len(),
                    diff_id: layer.digest,
                })?;
            sink.blob(&blob_path(&layer.digest), reader).await?;
        }
        layer_descriptors.push(descriptor(
            MediaType::from(layer.media_type.as_str()),
            &layer.digest,
            layer.size,
        )?);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config,
            image.config.len() as u64,
        )?)
        .layers(layer_descriptors)
        .build()
        .map_err(|e| document_error(&e))?;
    let manifest_bytes = stable_json(&manifest)?;
    let manifest_digest = Digest::sha256(&manifest_bytes);
    if sink.wants(&manifest_digest) {
        sink.file(&blob_path(&manifest_digest), &manifest_bytes)
            .await?;
    }
    let index_entries =
        index_entries(image, &manifest_digest, manifest_bytes.len() as u64, format)?;
    Ok(Written {
        manifest: manifest_digest,
        index_entries,
        docker_entry: DockerEntry {
            config: blob_path(config),
            repo_tags: &image.names,
            layers: image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
            parent: image.parent.map(|p| p.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_qualified_the_way_containerd_names_images() {
        assert_eq!(full_name("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full_name("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full_name("me/app:v1"), "docker.io/me/app:v1");
        assert_eq!(full_name("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(full_name("quay.io/a/b:c"), "quay.io/a/b:c");
        assert_eq!(tag_of("localhost:5000/app"), "latest");
        assert_eq!(tag_of("localhost:5000/app:v2"), "v2");
    }
}
