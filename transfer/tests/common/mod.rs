//! Stores, layers, configs and layouts for the transfer tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use imagecache_core::Digest;
use imagecache_engine::blob::BlobCache;
use imagecache_store::Store;
use serde_json::{Value, json};

/// A store and a blob cache on one backend, in a temporary directory.
pub struct Stores {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub blobs: BlobCache,
}

/// Opens a fresh `fs` or `redb` store.
pub async fn stores(kind: &str) -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let backend = match kind {
        "fs" => imagecache_backends::Backend::new(
            imagecache_backends::fs::FsBackend::open(dir.path().join("fs"))
                .await
                .unwrap(),
        ),
        "redb" => imagecache_backends::Backend::new(
            imagecache_backends::redb::RedbBackend::open(dir.path().join("store.redb"))
                .await
                .unwrap(),
        ),
        other => panic!("unknown backend {other}"),
    };
    let store = Store::open(backend.images()).await.unwrap();
    let blobs = BlobCache::new(Arc::clone(&backend.blobs())).unwrap();
    Stores { dir, store, blobs }
}

impl Stores {
    /// Imports one input with default options.
    pub async fn load(
        &self,
        input: imagecache_transfer::Input,
    ) -> Result<imagecache_transfer::ImportReport, imagecache_transfer::Error> {
        self.load_with(input, &imagecache_transfer::ImportOptions::new())
            .await
    }

    /// Imports one input.
    pub async fn load_with(
        &self,
        input: imagecache_transfer::Input,
        options: &imagecache_transfer::ImportOptions,
    ) -> Result<imagecache_transfer::ImportReport, imagecache_transfer::Error> {
        imagecache_transfer::import(&self.store, &self.blobs, [input], options).await
    }

    /// Exports `refs` as a tar held in memory.
    pub async fn export_bytes(
        &self,
        refs: &[String],
        format: imagecache_transfer::ExportFormat,
    ) -> Vec<u8> {
        export_bytes(&self.store, &self.blobs, refs, format).await
    }

    /// Image IDs, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.store.ids().iter().map(ToString::to_string).collect();
        ids.sort();
        ids
    }

    /// Cached blob digests, sorted.
    pub async fn blob_digests(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .blobs
            .backend()
            .list_blobs()
            .await
            .unwrap()
            .iter()
            .map(|b| b.digest.to_string())
            .collect();
        out.sort();
        out
    }
}

pub fn sha(data: &[u8]) -> Digest {
    Digest::sha256(data)
}

/// A layer tar holding `files`.
pub fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An image config over `diff_ids`, one history entry per layer.
pub fn config(diff_ids: &[Digest], created_by: &[&str], arch: &str) -> Vec<u8> {
    let history: Vec<Value> = created_by
        .iter()
        .map(|c| json!({"created": "2024-01-01T00:00:00Z", "created_by": c}))
        .collect();
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        "history": history,
    }))
    .unwrap()
}

/// One layer of an OCI layout: its bytes as stored, its media type and its diff ID.
pub struct OciLayer {
    pub bytes: Vec<u8>,
    pub media_type: &'static str,
}

/// One image of an OCI layout.
pub struct OciImage {
    pub config: Vec<u8>,
    pub layers: Vec<OciLayer>,
    pub name: Option<String>,
    pub platform: Option<(&'static str, &'static str)>,
}

fn put_blob(dir: &Path, data: &[u8]) -> Value {
    let d = sha(data);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), data).unwrap();
    json!({"digest": d.to_string(), "size": data.len()})
}

/// Writes an OCI image layout directory; returns each image's manifest descriptor.
pub fn oci_layout(dir: &Path, images: &[OciImage]) -> Vec<Value> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut entries = Vec::new();
    for image in images {
        let mut config = put_blob(dir, &image.config);
        config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        let layers: Vec<Value> = image
            .layers
            .iter()
            .map(|l| {
                let mut d = put_blob(dir, &l.bytes);
                d["mediaType"] = json!(l.media_type);
                d
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        }))
        .unwrap();
        let mut entry = put_blob(dir, &manifest);
        entry["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        if let Some(name) = &image.name {
            entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        if let Some((os, arch)) = image.platform {
            entry["platform"] = json!({"os": os, "architecture": arch});
        }
        entries.push(entry);
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
    entries
}

/// A tar of a directory's files, paths relative to it.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A plain tar layer media type.
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip layer media type.
pub const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Exports `refs` from `store` and `blobs` as a tar held in memory.
pub async fn export_bytes(
    store: &Store,
    blobs: &BlobCache,
    refs: &[String],
    format: imagecache_transfer::ExportFormat,
) -> Vec<u8> {
    let (writer, mut reader) = tokio::io::duplex(1 << 16);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut out)
            .await
            .unwrap();
        out
    });
    let options = imagecache_transfer::ExportOptions::new().with_format(format);
    let target = imagecache_transfer::ExportTarget::writer("export", writer);
    imagecache_transfer::export(store, blobs, refs, target, &options)
        .await
        .unwrap();
    collect.await.unwrap()
}
