//! Export: images out of a [`Store`] and a [`BlobCache`] as a docker-archive
//! or an OCI image layout, to a tar stream or a directory.
//!
//! # What is written
//!
//! Both formats are an OCI image layout — `oci-layout`, `index.json` and
//! `blobs/<alg>/<hex>` holding each image's config, layers and an OCI image
//! manifest — which is what current `docker save` writes too:
//!
//! * **docker-archive** adds `manifest.json` with `Config`, `RepoTags`,
//!   `Layers` and `Parent` (when the parent is exported too), the file
//!   `docker load` and `skopeo`'s `docker-archive:` read. Layers are the
//!   uncompressed tars, whose digests are the config's diff IDs.
//! * **oci** writes each layer in its compressed form when the blob cache
//!   holds one (gzip or zstd, with the matching media type), else
//!   uncompressed.
//!
//! Configs are the stored bytes and blobs the cached bytes, so digests match
//! the image IDs and diff IDs; every blob is verified while it is copied,
//! and an export whose blob fails verification stops with an error.
//! `index.json` names each image once per name, with containerd's
//! `io.containerd.image.name` (the full reference) and
//! `org.opencontainers.image.ref.name`: the tag for a docker-archive, as
//! Docker writes it, and the familiar reference (`busybox:latest`) for an
//! OCI layout, which is what `skopeo … oci:DIR:busybox:latest` looks up.
//!
//! Images are named by ID (full or unique prefix) or by name. An image
//! asked for by name is exported with that name; one asked for by ID with
//! every name it has (Docker writes none then).
//!
//! Tar members are written in a fixed order with fixed metadata (mode 0644,
//! modification time 0), so exporting the same images twice gives the same
//! bytes. Memory stays bounded: blobs stream through in chunks.
//!
//! A directory target must be absent or empty; the export is written beside
//! it and renamed into place when complete, so an interrupted export leaves
//! nothing behind.

mod layout;
mod sink;

use std::collections::BTreeSet;
use std::path::PathBuf;
use tracing::Instrument as _;

use imagecache_core::{Digest, ImageId};
use imagecache_engine::blob::{BlobCache, LayerCompression, LayerInfo, media_type};
use imagecache_store::Store;
use serde::Serialize;
use tokio::io::AsyncWrite;

use self::sink::Sink;
use crate::error::{Error, Result};
use crate::options::{ExportFormat, ExportOptions};
use crate::progress::Reporter;

/// Where an export goes.
#[non_exhaustive]
pub enum ExportTarget {
    /// A tar stream (a file, stdout, an HTTP body), named for messages.
    Writer {
        /// The name shown in errors, e.g. `stdout`.
        name: String,
        /// Where the tar goes.
        writer: Box<dyn AsyncWrite + Send + Unpin>,
    },
    /// A directory, absent or empty.
    Dir(PathBuf),
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Writer { name, .. } => f.debug_struct("Writer").field("name", name).finish(),
            Self::Dir(path) => f.debug_tuple("Dir").field(path).finish(),
        }
    }
}

impl ExportTarget {
    /// A tar stream written to `writer`, called `name` in errors.
    pub fn writer(
        name: impl Into<String>,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Self::Writer {
            name: name.into(),
            writer: Box::new(writer),
        }
    }

    /// A directory, absent or empty.
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Self::Dir(path.into())
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ExportReport {
    /// The layout written.
    pub format: &'static str,
    /// Every image, in the order asked for, each once.
    pub images: Vec<ExportedImage>,
    /// Blobs written (configs, layers, manifests; each once).
    pub blobs: usize,
    /// Layers written as their cached compressed variant instead of the
    /// uncompressed tar the config's diff ID names (OCI layouts).
    pub substituted: usize,
    /// Bytes written, tar headers included.
    pub bytes: u64,
}

/// One exported image.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ExportedImage {
    /// Its ID.
    pub id: ImageId,
    /// The names written for it.
    pub names: Vec<String>,
    /// The digest of the OCI manifest written for it.
    pub manifest: Digest,
    /// The layer blobs written for it, in order.
    pub layers: Vec<Digest>,
}

/// Exports the images `references` name (IDs, ID prefixes or names) from
/// `store` and `blobs` to `target`; see the [module docs](self).
///
/// # Errors
/// [`Error::NothingToExport`], [`Error::NoSuchImage`],
/// [`Error::MissingLayer`] before anything is written; [`Error::BlobRead`],
/// [`Error::Write`], [`Error::NotEmpty`] and [`Error::Interrupted`] while
/// writing.
pub async fn export(
    store: &Store,
    blobs: &BlobCache,
    references: &[impl AsRef<str>],
    target: ExportTarget,
    options: &ExportOptions,
) -> Result<ExportReport> {
    let span = tracing::info_span!(
        "export",
        store = %store.backend(),
        images = references.len(),
        format = options.format.name()
    );
    export_inner(store, blobs, references, target, options)
        .instrument(span)
        .await
}

async fn export_inner(
    store: &Store,
    blobs: &BlobCache,
    references: &[impl AsRef<str>],
    target: ExportTarget,
    options: &ExportOptions,
) -> Result<ExportReport> {
    let progress = Reporter::new(options.progress.clone());
    let wanted = resolve(store, references)?;
    let (images, substituted) = plan(store, blobs, &wanted, options.format).await?;
    let total: u64 = images.iter().map(layout::Planned::size).sum();
    let mut sink = Sink::open(target, options.cancel.clone(), progress.clone()).await?;
    progress.begin(
        format!(
            "writing {} image(s) as {}",
            images.len(),
            options.format.name()
        ),
        Some(total),
    );
    let written = async {
        let documents = layout::write(&mut sink, blobs, &images, options.format).await?;
        sink.finish().await?;
        Ok::<_, Error>(documents)
    }
    .await;
    progress.finish(&written, |_| {
        format!(
            "wrote {} image(s) as {}",
            images.len(),
            options.format.name()
        )
    });
    let manifests = written?;
    Ok(ExportReport {
        format: options.format.name(),
        images: images
            .iter()
            .zip(manifests)
            .map(|(image, manifest)| ExportedImage {
                id: image.id,
                names: image.names.clone(),
                manifest,
                layers: image.layers.iter().map(|l| l.digest).collect(),
            })
            .collect(),
        blobs: sink.blobs(),
        substituted,
        bytes: sink.bytes(),
    })
}

/// The images asked for, in order, each once, with the names to write.
fn resolve(store: &Store, references: &[impl AsRef<str>]) -> Result<Vec<(ImageId, Vec<String>)>> {
    if references.is_empty() {
        return Err(Error::NothingToExport);
    }
    let mut out: Vec<(ImageId, Vec<String>)> = Vec::new();
    for reference in references {
        let reference = reference.as_ref();
        let (id, names) =
            crate::names::resolve(store, reference).map_err(|source| Error::NoSuchImage {
                reference: reference.to_owned(),
                source,
            })?;
        match out.iter_mut().find(|(known, _)| *known == id) {
            Some((_, known)) => {
                for name in names {
                    if !known.contains(&name) {
                        known.push(name);
                    }
                }
            }
            None => out.push((id, names)),
        }
    }
    Ok(out)
}

/// Reads every config and finds every layer before anything is written;
/// also counts the layers substituted by a compressed variant.
async fn plan(
    store: &Store,
    blobs: &BlobCache,
    wanted: &[(ImageId, Vec<String>)],
    format: ExportFormat,
) -> Result<(Vec<layout::Planned>, usize)> {
    let mut substituted = 0;
    let ids: BTreeSet<ImageId> = wanted.iter().map(|(id, _)| *id).collect();
    let mut out = Vec::with_capacity(wanted.len());
    for (id, names) in wanted {
        let image = store.get(id).await.map_err(|source| Error::NoSuchImage {
            reference: id.to_string(),
            source,
        })?;
        let mut layers = Vec::with_capacity(image.rootfs.raw_diff_ids.len());
        for (index, raw) in image.rootfs.raw_diff_ids.iter().enumerate() {
            let missing = |diff_id| Error::MissingLayer {
                image: *id,
                index,
                diff_id,
            };
            let diff_id =
                Digest::parse(raw).map_err(|_| missing(Digest::sha256(raw.as_bytes())))?;
            let layer = find_layer(blobs, diff_id, format)
                .await?
                .ok_or_else(|| missing(diff_id))?;
            if layer.digest != diff_id {
                substituted += 1;
            }
            layers.push(layer);
        }
        let parent = store
            .parent(id)
            .ok()
            .flatten()
            .filter(|parent| ids.contains(parent));
        out.push(layout::Planned {
            id: *id,
            config: image.raw_json().clone(),
            names: names.clone(),
            parent,
            layers,
        });
    }
    Ok((out, substituted))
}

/// The blob to write for the layer `diff_id`: the uncompressed tar for a
/// docker-archive; for OCI its cached compressed variant, else the tar.
async fn find_layer(
    blobs: &BlobCache,
    diff_id: Digest,
    format: ExportFormat,
) -> Result<Option<LayerInfo>> {
    let read_error = |source| Error::BlobRead {
        digest: diff_id,
        source,
    };
    let plain = blobs
        .has(&diff_id)
        .await
        .map_err(read_error)?
        .map(|size| LayerInfo {
            digest: diff_id,
            size,
            media_type: media_type::OCI_LAYER.to_owned(),
        });
    if format == ExportFormat::DockerArchive {
        return Ok(plain);
    }
    let probe = plain.clone().unwrap_or(LayerInfo {
        digest: diff_id,
        size: 0,
        media_type: media_type::OCI_LAYER.to_owned(),
    });
    let compressed = blobs
        .substitute(
            std::slice::from_ref(&probe),
            LayerCompression::Compress,
            false,
        )
        .await
        .map_err(read_error)?
        .pop()
        .filter(|l| l.digest != diff_id);
    Ok(compressed.or(plain))
}
