//! Broken archives and layouts: truncated, bit-flipped, wrongly typed,
//! wrongly compressed, pointing outside themselves or at what they lack.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use imagecache_transfer::{Error, ImportOptions, Input, PlatformChoice};
use serde_json::{Value, json};

use crate::common::{self, OciImage, OciLayer, TAR, TAR_GZIP, sha};
use crate::harness::{Fixture, Tally, verdict};
use crate::mutate::{self, Rng};

/// `data` compressed with zstd.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Whether an import error is a refusal of its input (not a failure of
/// the store, a task or the machine).
fn refused(e: &Error) -> bool {
    !matches!(
        e,
        Error::Store(_) | Error::Join { .. } | Error::Spool { .. } | Error::Write { .. }
    )
}

/// A tar of `entries`, in order, with where each entry's bytes start.
fn tar(entries: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    // Each entry is one 512-byte header (the names are short) and its
    // data padded to 512 bytes.
    let mut spans = Vec::new();
    let mut at = 0;
    for (_, data) in entries {
        spans.push((at + 512, data.len()));
        at += 512 + data.len().div_ceil(512) * 512;
    }
    (bytes, spans)
}

/// A valid docker-archive: a manifest, a config and two layers, with the
/// entries' names and contents kept for mutation.
struct DockerArchive {
    manifest: Value,
    entries: Vec<(String, Vec<u8>)>,
}

impl DockerArchive {
    fn new(tag: &str) -> Self {
        let l1 = common::layer(&[("etc/a", b"bad input corpus one")]);
        let l2 = common::layer(&[("etc/b", b"bad input corpus two")]);
        let config = common::config(&[sha(&l1), sha(&l2)], &["ADD a /", "ADD b /"], "amd64");
        let config_name = format!("{}.json", sha(&config).hex());
        let layer_names = [
            format!("{}/layer.tar", sha(&l1).hex()),
            format!("{}/layer.tar", sha(&l2).hex()),
        ];
        let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]);
        let entries = vec![
            (config_name, config),
            (layer_names[0].clone(), l1),
            (layer_names[1].clone(), l2),
        ];
        Self { manifest, entries }
    }

    fn with_manifest(&self, manifest: Vec<u8>) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut entries = vec![("manifest.json".to_owned(), manifest)];
        entries.extend(self.entries.iter().cloned());
        tar(&entries)
    }

    fn bytes(&self) -> (Vec<u8>, Vec<(usize, usize)>) {
        self.with_manifest(serde_json::to_vec(&self.manifest).unwrap())
    }
}

/// Manifests that are not what `docker load` reads.
fn bad_manifests(rng: &mut Rng, archive: &DockerArchive) -> Vec<Vec<u8>> {
    let good = serde_json::to_vec(&archive.manifest).unwrap();
    let m = &archive.manifest[0];
    let config = m["Config"].clone();
    let layers = m["Layers"].clone();
    let mut out: Vec<Value> = vec![
        json!([]),
        json!({}),
        json!(null),
        json!([{"Config": 5, "Layers": layers}]),
        json!([{"Config": config, "Layers": "x"}]),
        json!([{"Config": config, "Layers": [1, 2]}]),
        json!([{"Config": config}]),
        json!([{"Layers": layers}]),
        json!([{"Config": "missing.json", "Layers": layers}]),
        json!([{"Config": config, "Layers": ["missing/layer.tar", layers[1]]}]),
        json!([{"Config": config, "Layers": [layers[0]]}]),
        json!([{"Config": config, "Layers": [layers[0], layers[1], layers[1]]}]),
        json!([{"Config": config, "Layers": [layers[1], layers[0]]}]),
        json!([{"Config": "../../../etc/passwd", "Layers": layers}]),
        json!([{"Config": "/etc/passwd", "Layers": layers}]),
        json!([{"Config": config, "Layers": ["../outside.tar", layers[1]]}]),
        json!([{"Config": config, "Layers": layers, "Parent": "sha256:zz"}]),
        json!([{"Config": config, "Layers": layers, "RepoTags": "app:1"}]),
        json!([{"Config": config, "Layers": layers, "RepoTags": [7]}]),
    ];
    let mut bytes: Vec<Vec<u8>> = out
        .drain(..)
        .map(|v| serde_json::to_vec(&v).unwrap())
        .collect();
    bytes.push(mutate::deep_json(100_000, false).into_bytes());
    for _ in 0..20 {
        bytes.push(match rng.below(3) {
            0 => mutate::truncated(rng, &good),
            1 => mutate::with_raw_control(rng, &good),
            _ => mutate::with_broken_structure(rng, &good),
        });
    }
    bytes
}

/// Every broken docker-archive, as bytes.
fn bad_docker_archives(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let archive = DockerArchive::new("example.com/bad/import:1");
    let (valid, spans) = archive.bytes();
    let mut out = Vec::new();
    for (i, m) in bad_manifests(rng, &archive).into_iter().enumerate() {
        out.push((format!("manifest {i}"), archive.with_manifest(m).0));
    }
    let content_end = spans.last().map(|(at, len)| at + len).unwrap();
    for i in 0..40 {
        out.push((
            format!("truncated {i}"),
            valid[..rng.below(content_end)].to_vec(),
        ));
    }
    // A flipped bit in the config or a layer: their digests are promised.
    for i in 0..40 {
        let (at, len) = spans[1 + rng.below(spans.len() - 1)];
        let mut flipped = valid.clone();
        flipped[at + rng.below(len)] ^= 1 << rng.below(8);
        out.push((format!("flipped {i}"), flipped));
    }
    // A flipped bit in a tar header's checksummed fields.
    for i in 0..10 {
        let (at, _) = spans[rng.below(spans.len())];
        let mut flipped = valid.clone();
        flipped[at - 512 + 100 + rng.below(48)] ^= 1 << rng.below(7);
        out.push((format!("header flipped {i}"), flipped));
    }
    compressed_wrappers(rng, &valid, content_end, &mut out);
    out
}

fn compressed_wrappers(
    rng: &mut Rng,
    valid: &[u8],
    content_end: usize,
    out: &mut Vec<(String, Vec<u8>)>,
) {
    let cut = &valid[..content_end / 2];
    for (name, packed) in [
        ("gzip", common::gzip(cut)),
        ("zstd", zstd(cut)),
        ("xz", xz(cut)),
        ("bzip2", bzip2(cut)),
    ] {
        out.push((format!("{name} of a cut archive"), packed));
    }
    for (name, packed) in [
        ("gzip", common::gzip(valid)),
        ("zstd", zstd(valid)),
        ("xz", xz(valid)),
        ("bzip2", bzip2(valid)),
    ] {
        for i in 0..8 {
            out.push((
                format!("{name} cut {i}"),
                packed[..rng.below(packed.len() * 4 / 5)].to_vec(),
            ));
        }
    }
    let magics: [(&str, &[u8]); 5] = [
        ("gzip", b"\x1f\x8b\x08\x00"),
        ("zstd", b"\x28\xb5\x2f\xfd"),
        ("xz", b"\xfd7zXZ\x00"),
        ("bzip2", b"BZh9"),
        ("none", b""),
    ];
    for (name, magic) in magics {
        for i in 0..6 {
            let mut garbage = magic.to_vec();
            let n = rng.below(2048);
            garbage.extend(rng.bytes(n));
            out.push((format!("{name} garbage {i}"), garbage));
        }
    }
    out.push(("empty".into(), Vec::new()));
    out.push(("zeros".into(), vec![0; 4096]));
}

/// An OCI layout directory with one image, to break one file of.
fn oci(dir: &Path) -> PathBuf {
    let l = common::layer(&[("x", b"oci corpus")]);
    let config = common::config(&[sha(&l)], &["ADD x /"], "amd64");
    common::oci_layout(
        dir,
        &[OciImage {
            config,
            layers: vec![OciLayer {
                bytes: common::gzip(&l),
                media_type: TAR_GZIP,
            }],
            name: Some("example.com/bad/oci:1".to_owned()),
            platform: None,
        }],
    );
    dir.to_path_buf()
}

/// Broken OCI layouts, each in its own directory.
fn bad_layouts(rng: &mut Rng, root: &Path) -> Vec<(String, PathBuf, PlatformChoice)> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut fresh = |what: &str| {
        n += 1;
        let dir = oci(&root.join(format!("layout-{n}")));
        (format!("{what} {n}"), dir)
    };
    let blob_files = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    };
    for i in 0..12 {
        let (name, dir) = fresh("index");
        let index = std::fs::read(dir.join("index.json")).unwrap();
        let broken = match i % 3 {
            0 => mutate::truncated(rng, &index),
            1 => mutate::with_raw_control(rng, &index),
            _ => mutate::with_broken_structure(rng, &index),
        };
        std::fs::write(dir.join("index.json"), broken).unwrap();
        out.push((name, dir, PlatformChoice::All));
    }
    for i in 0..9 {
        let (name, dir) = fresh("blob flipped");
        let files = blob_files(&dir);
        let file = &files[i % files.len()];
        let mut data = std::fs::read(file).unwrap();
        let at = rng.below(data.len());
        data[at] ^= 1 << rng.below(8);
        std::fs::write(file, data).unwrap();
        out.push((name, dir, PlatformChoice::All));
    }
    for i in 0..3 {
        let (name, dir) = fresh("blob missing");
        std::fs::remove_file(&blob_files(&dir)[i]).unwrap();
        out.push((name, dir, PlatformChoice::All));
    }
    for i in 0..3 {
        let (name, dir) = fresh("blob cut");
        let file = &blob_files(&dir)[i];
        let data = std::fs::read(file).unwrap();
        std::fs::write(file, &data[..data.len() / 2]).unwrap();
        out.push((name, dir, PlatformChoice::All));
    }
    for media_type in [
        "application/x-unknown",
        "",
        "application/vnd.oci.image.layer.v1.tar+brotli",
        TAR,
    ] {
        let (name, dir) = fresh("media type");
        retype_layers(&dir, media_type);
        out.push((format!("{name} {media_type:?}"), dir, PlatformChoice::All));
    }
    {
        let (name, dir) = fresh("nested indexes");
        nest_index(&dir, 100);
        out.push((name, dir, PlatformChoice::All));
    }
    {
        let (name, dir) = fresh("index without oci-layout");
        std::fs::remove_file(dir.join("oci-layout")).unwrap();
        std::fs::remove_file(dir.join("index.json")).unwrap();
        out.push((name, dir, PlatformChoice::All));
    }
    {
        let (name, dir) = fresh("no platform matches");
        let index_path = dir.join("index.json");
        let mut index: Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        index["manifests"][0]["platform"] = json!({"os": "linux", "architecture": "amd64"});
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let platform = imagecache_core::Platform {
            os: "plan9".into(),
            architecture: "mips".into(),
            ..Default::default()
        };
        out.push((name, dir, PlatformChoice::Only(platform)));
    }
    out
}

/// Rewrites the manifest's layer media types (and the index's digest of it).
fn retype_layers(dir: &Path, media_type: &str) {
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let hex = digest.trim_start_matches("sha256:");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array_mut().unwrap() {
        layer["mediaType"] = json!(media_type);
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(sha(&bytes).hex()), &bytes).unwrap();
    index["manifests"][0]["digest"] = json!(sha(&bytes).to_string());
    index["manifests"][0]["size"] = json!(bytes.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Wraps the layout's index in `depth` nested indexes.
fn nest_index(dir: &Path, depth: usize) {
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    for _ in 0..depth {
        let bytes = serde_json::to_vec(&index).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(sha(&bytes).hex()), &bytes).unwrap();
        index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha(&bytes).to_string(),
            "size": bytes.len(),
        }]});
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Imports of every broken archive and layout: each refused by a typed
/// error, with nothing stored.
pub async fn imports(tally: &mut Tally, fx: &Fixture) {
    let mut rng = Rng::new(0x1a9047);
    let spool = fx.dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let options = ImportOptions::new()
        .with_platform(PlatformChoice::All)
        .with_spool_dir(&spool);
    let files = fx.dir.path().join("archives");
    std::fs::create_dir_all(&files).unwrap();
    for (i, (name, bytes)) in bad_docker_archives(&mut rng).into_iter().enumerate() {
        // Half from a file, half from a stream (spooled to a temp file).
        let input = if i % 2 == 0 {
            let path = files.join(format!("{i}.tar"));
            std::fs::write(&path, &bytes).unwrap();
            Input::path(path)
        } else {
            Input::reader("stdin", std::io::Cursor::new(bytes))
        };
        tally
            .store_case(fx, &format!("import {name}"), async {
                verdict(
                    imagecache_transfer::import(&fx.store, &fx.blobs, [input], &options).await,
                    refused,
                )
            })
            .await;
    }
    let layouts = fx.dir.path().join("layouts");
    for (name, dir, platform) in bad_layouts(&mut rng, &layouts) {
        let options = options.clone().with_platform(platform);
        tally
            .store_case(fx, &format!("import layout {name}"), async {
                verdict(
                    imagecache_transfer::import(
                        &fx.store,
                        &fx.blobs,
                        [Input::path(&dir)],
                        &options,
                    )
                    .await,
                    refused,
                )
            })
            .await;
    }
    tally
        .store_case(fx, "import a path that does not exist", async {
            let missing = Input::path(fx.dir.path().join("no such archive"));
            verdict(
                imagecache_transfer::import(&fx.store, &fx.blobs, [missing], &options).await,
                refused,
            )
        })
        .await;
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "an import left a spool file behind"
    );
}
