//! The fixed things operations pick from: image configs, names, plain
//! blobs, layers (each with a gzip copy) and lease IDs. Operations name
//! them by index, so a failing sequence prints small and shrinks well.

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use imagecache_core::{Digest, ImageId, LeaseId, Reference};

pub const IMAGES: usize = 6;
pub const NAMES: usize = 4;
pub const PLAIN: usize = 2;
pub const LAYERS: usize = 3;
pub const LEASES: usize = 3;
/// Every blob digest: plain blobs, then each layer's decompressed and
/// compressed copy.
pub const DIGESTS: usize = PLAIN + 2 * LAYERS;

pub struct Layer {
    /// The layer as a tar would be: not compressed.
    pub raw: Bytes,
    /// Its gzip copy.
    pub gz: Bytes,
    /// The digest of `raw` (the diff ID).
    pub diff: Digest,
    /// The digest of `gz`.
    pub compressed: Digest,
}

pub struct Image {
    pub config: Bytes,
    pub id: ImageId,
    /// The layers its config lists, by index.
    pub layers: Vec<usize>,
}

pub struct Pools {
    pub images: Vec<Image>,
    pub names: Vec<Reference>,
    pub plain: Vec<(Bytes, Digest)>,
    pub layers: Vec<Layer>,
    pub leases: Vec<LeaseId>,
}

/// Text-like bytes that do not start with a compression magic, so a layer
/// put sniffs them as uncompressed.
fn text(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(format!("layer {seed}\n").as_bytes());
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(b'a' + (state % 26) as u8);
        if state.is_multiple_of(61) {
            out.push(b'\n');
        }
    }
    out.truncate(len);
    Bytes::from(out)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip into memory");
    Bytes::from(enc.finish().expect("gzip into memory"))
}

fn layers_of(i: usize) -> Vec<usize> {
    // Some images have no layer, most share layers with others.
    match i % 4 {
        0 => Vec::new(),
        1 => vec![i % LAYERS],
        2 => vec![i % LAYERS, (i + 1) % LAYERS],
        _ => vec![(i + 2) % LAYERS],
    }
}

fn build() -> Pools {
    let layers: Vec<Layer> = (0..LAYERS)
        .map(|i| {
            let raw = text(100 + i as u64, 2_000 + 1_500 * i);
            let gz = gzip(&raw);
            Layer {
                diff: Digest::sha256(&raw),
                compressed: Digest::sha256(&gz),
                raw,
                gz,
            }
        })
        .collect();
    let images = (0..IMAGES)
        .map(|i| {
            let uses = layers_of(i);
            let diffs: Vec<String> = uses
                .iter()
                .map(|l| format!("\"{}\"", layers[*l].diff))
                .collect();
            let config = Bytes::from(format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}},"comment":"model image {i}"}}"#,
                diffs.join(",")
            ));
            Image {
                id: ImageId::of_config(&config),
                config,
                layers: uses,
            }
        })
        .collect();
    let names = ["app:1", "app:2", "web:latest", "registry.local/db:5"]
        .iter()
        .map(|n| n.parse().expect("a valid name"))
        .collect();
    let plain = (0..PLAIN)
        .map(|i| {
            let data = text(200 + i as u64, 1_000 + 700 * i);
            let digest = Digest::sha256(&data);
            (data, digest)
        })
        .collect();
    let leases = (0..LEASES)
        .map(|i| LeaseId::new(format!("model-{i}")).expect("a valid lease ID"))
        .collect();
    Pools {
        images,
        names,
        plain,
        layers,
        leases,
    }
}

pub fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(build)
}

impl Pools {
    /// The blob digest of index `i` (see [`DIGESTS`]).
    pub fn digest(&self, i: usize) -> Digest {
        let i = i % DIGESTS;
        if i < PLAIN {
            return self.plain[i].1;
        }
        let layer = &self.layers[(i - PLAIN) / 2];
        if (i - PLAIN).is_multiple_of(2) {
            layer.diff
        } else {
            layer.compressed
        }
    }

    /// Every blob digest the operations can store.
    pub fn digests(&self) -> impl Iterator<Item = Digest> + '_ {
        (0..DIGESTS).map(|i| self.digest(i))
    }

    /// The bytes a blob digest stands for.
    pub fn data(&self, digest: &Digest) -> Option<&Bytes> {
        self.plain
            .iter()
            .find(|(_, d)| d == digest)
            .map(|(data, _)| data)
            .or_else(|| {
                self.layers.iter().find_map(|l| {
                    if l.diff == *digest {
                        Some(&l.raw)
                    } else if l.compressed == *digest {
                        Some(&l.gz)
                    } else {
                        None
                    }
                })
            })
    }

    /// The other copy of a layer blob (compressed ↔ decompressed).
    pub fn counterpart(&self, digest: &Digest) -> Option<Digest> {
        self.layers.iter().find_map(|l| {
            if l.diff == *digest {
                Some(l.compressed)
            } else if l.compressed == *digest {
                Some(l.diff)
            } else {
                None
            }
        })
    }

    pub fn image(&self, id: &ImageId) -> Option<&Image> {
        self.images.iter().find(|i| i.id == *id)
    }

    /// The diff IDs an image's config lists.
    pub fn diffs(&self, id: &ImageId) -> Vec<Digest> {
        self.image(id)
            .map(|i| i.layers.iter().map(|l| self.layers[*l].diff).collect())
            .unwrap_or_default()
    }
}
