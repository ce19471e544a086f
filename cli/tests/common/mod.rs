//! Shared helpers of the command-line tests: a private environment per
//! test, and builders of real archives (docker-archive tarballs and OCI
//! layouts) made of real layer tars.

// Each test file uses a part of these helpers, and they panic on failed
// setup as tests do.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use imagecache_core::Digest;
use serde_json::{Value, json};

/// A test's own directories and store; `HOME` and `XDG_DATA_HOME` point
/// inside it, so the user's default store is never touched.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: String,
}

impl Env {
    /// A fresh environment with an fs store.
    pub fn fs() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("fs://{}", dir.path().join("store").display());
        Self { dir, store }
    }

    /// A fresh environment with a redb store.
    pub fn redb() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("redb://{}", dir.path().join("store.redb").display());
        Self { dir, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `imagecache --store STORE ARGS…` in this environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        Command::from_std(self.std_cmd(args))
    }

    /// [`Env::cmd`] as a plain process, for tests that talk to it while it runs.
    pub fn std_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("imagecache"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("xdg"))
            .arg("--store")
            .arg(&self.store)
            .args(args);
        cmd
    }

    /// Runs a command that must succeed and returns its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let out = self.cmd(&full).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The string `field` of every item `args` lists, sorted.
    fn listed(&self, args: &[&str], field: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[field].as_str().unwrap().to_owned())
            .collect();
        values.sort();
        values
    }

    /// Every image ID in the store (`ls -a`).
    pub fn image_ids(&self) -> Vec<String> {
        self.listed(&["ls", "-a"], "id")
    }

    /// Every blob digest in the store (`blob ls`).
    pub fn blob_digests(&self) -> Vec<String> {
        self.listed(&["blob", "ls"], "digest")
    }

    /// Imports `path`, which must succeed; returns the summary.
    pub fn import(&self, path: &Path) -> Value {
        self.json(&["import", path.to_str().unwrap()])
    }

    /// Writes `images` as the docker-archive `name` in this environment;
    /// returns its path.
    pub fn write_archive(
        &self,
        name: &str,
        images: &[ArchiveImage],
        opts: ArchiveOptions,
    ) -> PathBuf {
        let path = self.path(name);
        write(&path, &docker_archive(images, opts));
        path
    }
}

/// A layer tar holding the given files.
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
    let mut e = GzEncoder::new(Vec::new(), GzLevel::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha(data: &[u8]) -> Digest {
    Digest::sha256(data)
}

/// A config for layers with these diff IDs and one history entry per
/// layer (`created_by` given), plus `extra` fields.
pub fn config(diff_ids: &[Digest], created_by: &[&str], extra: Value) -> Vec<u8> {
    let history: Vec<Value> = created_by
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"created": format!("2024-01-0{}T00:00:00Z", i + 1), "created_by": c}))
        .collect();
    let mut v = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": format!("2024-01-0{}T00:00:00Z", created_by.len().max(1)),
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        "history": history,
    });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::to_vec(&v).unwrap()
}

/// One image of a docker-archive.
#[derive(Clone)]
pub struct ArchiveImage {
    pub config: Vec<u8>,
    /// Layer tars, uncompressed.
    pub layers: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub parent: Option<String>,
}

impl ArchiveImage {
    pub fn id(&self) -> String {
        sha(&self.config).to_string()
    }
}

/// How to write a docker-archive.
#[derive(Clone, Copy, Default)]
pub struct ArchiveOptions {
    /// Store layers gzip-compressed.
    pub gzip_layers: bool,
    /// Wrap the whole tar in gzip.
    pub gzip_archive: bool,
    /// Name layers `blobs/sha256/<hex>` (Docker ≥ 25) instead of `<hex>/layer.tar`.
    pub blobs_layout: bool,
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

/// A docker-archive as `docker save` writes it: layers first,
/// configs, then `manifest.json` last.
pub fn docker_archive(images: &[ArchiveImage], opts: ArchiveOptions) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for image in images {
        let mut layer_names = Vec::new();
        for l in &image.layers {
            let data = if opts.gzip_layers { gzip(l) } else { l.clone() };
            let digest = sha(&data);
            let name = if opts.blobs_layout {
                format!("blobs/sha256/{}", digest.hex())
            } else {
                format!("{}/layer.tar", digest.hex())
            };
            if written.insert(name.clone()) {
                append(&mut b, &name, &data);
            }
            layer_names.push(name);
        }
        let config_name = if opts.blobs_layout {
            format!("blobs/sha256/{}", sha(&image.config).hex())
        } else {
            format!("{}.json", sha(&image.config).hex())
        };
        if written.insert(config_name.clone()) {
            append(&mut b, &config_name, &image.config);
        }
        let mut m = json!({"Config": config_name, "RepoTags": image.tags, "Layers": layer_names});
        if let Some(p) = &image.parent {
            m["Parent"] = json!(p);
        }
        manifest.push(m);
    }
    append(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let tar = b.into_inner().unwrap();
    if opts.gzip_archive { gzip(&tar) } else { tar }
}

/// Writes an OCI image layout directory with one image (layers gzipped or
/// not) and returns the manifest digest.
pub fn oci_layout(
    dir: &Path,
    config: &[u8],
    layers: &[Vec<u8>],
    gzip_layers: bool,
    tag: &str,
) -> Digest {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        d
    };
    let config_digest = put(config);
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let data = if gzip_layers { gzip(l) } else { l.clone() };
            let d = put(&data);
            json!({
                "mediaType": if gzip_layers { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
                "digest": d.to_string(),
                "size": data.len(),
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest
}

/// Packs a directory into a tar (an `oci-archive`).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A two-image chain: a base with one layer and a child adding one more;
/// both tagged, the child naming its parent in `manifest.json` or not.
pub fn chain(with_parent: bool) -> (ArchiveImage, ArchiveImage) {
    let l1 = layer(&[("etc/base", b"base layer")]);
    let l2 = layer(&[("app/bin", b"the application")]);
    let base_config = config(&[sha(&l1)], &["ADD rootfs /"], json!({}));
    let base = ArchiveImage {
        config: base_config.clone(),
        layers: vec![l1.clone()],
        tags: vec!["example/base:1".into()],
        parent: None,
    };
    let child = ArchiveImage {
        config: config(
            &[sha(&l1), sha(&l2)],
            &["ADD rootfs /", "COPY app /app"],
            json!({}),
        ),
        layers: vec![l1, l2],
        tags: vec!["example/app:1".into()],
        parent: with_parent.then(|| sha(&base_config).to_string()),
    };
    (base, child)
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Pseudo-random bytes (xorshift), incompressible and cheap to make.
pub struct Noise {
    state: u64,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// A layer tar holding one file of `size` pseudo-random bytes.
pub fn noise_layer(seed: u64, size: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut data = vec![0u8; size];
    Noise::new(seed).read_exact(&mut data).unwrap();
    layer(&[("data.bin", &data)])
}
