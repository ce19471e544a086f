//! The child: a seeded random workload over the library, every operation
//! logged before it starts and acknowledged after the library returned.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use imagecache_core::{Digest, ImageId, LeaseId, LeaseResource, Reference};
use imagecache_engine::blob::{BlobCache, Compression, LayerOptions};
use imagecache_engine::lifecycle::{self, Lifecycle, LifecycleOptions, Policy};
use imagecache_store::{CreateOptions, LeaseOptions, Store};

use super::log::{AckLog, Op, Outcome};
use crate::Rng;

/// The line the child prints once the store is open.
pub(crate) const READY: &str = "kill-child-ready";

/// How the workload's leases are named.
pub(crate) const LEASE_PREFIX: &str = "kill-";

/// Names the workload moves between images.
const NAMES: u64 = 6;

/// Above this many images, removals and collections come more often.
const CROWDED: usize = 40;

/// What a child process is told by its parent.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// The store's URL.
    pub url: String,
    /// The workload's seed.
    pub seed: u64,
    /// Where the acknowledgement log goes.
    pub log: PathBuf,
    /// The largest layer to put, in bytes.
    pub max_layer: usize,
}

struct Workload {
    lc: Lifecycle,
    log: AckLog,
    rng: Rng,
    seed: u64,
    n: u64,
    max_layer: usize,
    /// Layers this process put that no report said were removed.
    recent: Vec<Digest>,
}

/// Opens the store, prints a line saying it is ready and runs operations
/// until killed.
///
/// # Errors
/// The store does not open, the log cannot be written, or a library call
/// fails in a way the workload does not expect (it is logged first).
pub async fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    let backend = imagecache_backends::open(&args.url).await?;
    let store = Store::open(backend.images()).await?;
    let blobs = BlobCache::new(backend.blobs())?;
    // No grace period, so that collections have blobs to remove; a short
    // collection lease, so that one a kill left behind soon stops holding
    // up new leases.
    let options = LifecycleOptions::new()
        .with_blob_grace(Duration::ZERO)
        .with_collection_ttl(Duration::from_secs(2));
    let mut w = Workload {
        lc: Lifecycle::with_options(store, Some(blobs), options),
        log: AckLog::create(&args.log)?,
        rng: Rng::new(args.seed),
        seed: args.seed,
        n: 0,
        max_layer: args.max_layer.max(1024),
        recent: Vec::new(),
    };
    println!("{READY}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    loop {
        w.step().await?;
    }
}

impl Workload {
    fn store(&self) -> &Store {
        self.lc.store()
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())].clone())
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let (op, layer) = self.choose().await?;
        let seq = self.log.begin(&op)?;
        let outcome = match self.perform(&op, layer).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.log.end(seq, &Outcome::Failed(format!("{e:#}")))?;
                return Err(e.context(format!("operation {seq}: {op:?}")));
            }
        };
        self.log.end(seq, &outcome)
    }

    /// Picks the next operation; a fresh layer comes with its bytes.
    async fn choose(&mut self) -> anyhow::Result<(Op, Option<Bytes>)> {
        let ids = self.store().ids();
        let mut roll = self.rng.below(100);
        if ids.len() > CROWDED && roll < 30 {
            roll += 60;
        }
        let op = match roll {
            30..38 => return self.blob_op(),
            38..44 => self.parent_op(&ids),
            44..56 => self.pick(&ids).map(|id| Op::Tag {
                name: self.name(),
                id,
            }),
            56..60 => self.untag_op(),
            60..72 => self.pick(&ids).map(|id| Op::Delete { id }),
            72..78 => self.lease_op(&ids).await?,
            78..87 => self.lease_change_op(roll < 82).await?,
            87..90 => Some(Op::Gc {
                all: self.rng.below(5) == 0,
            }),
            _ => None,
        };
        match op {
            Some(op) => Ok((op, None)),
            None => self.create_op(&ids).await,
        }
    }

    fn name(&mut self) -> String {
        format!("kill/loop:{}", self.rng.below(NAMES as usize))
    }

    /// A gzip layer of random size, with its digests.
    fn layer(&mut self) -> anyhow::Result<(Digest, Digest, Bytes)> {
        let size = 512 + self.rng.below(self.max_layer);
        let tar = super::data::layer(&super::data::noise(size, self.rng.next_u64()));
        let diff = Digest::sha256(&tar);
        let packed = super::data::gzip(&tar)?;
        Ok((Digest::sha256(&packed), diff, Bytes::from(packed)))
    }

    fn blob_op(&mut self) -> anyhow::Result<(Op, Option<Bytes>)> {
        let (compressed, diff, body) = self.layer()?;
        Ok((Op::Blob { compressed, diff }, Some(body)))
    }

    async fn create_op(&mut self, ids: &[ImageId]) -> anyhow::Result<(Op, Option<Bytes>)> {
        let parent = if self.rng.below(10) < 7 {
            self.pick(ids)
        } else {
            None
        };
        let (layers, fresh, body) = match self.rng.below(4) {
            0 | 1 => {
                let (c, d, body) = self.layer()?;
                (vec![d], Some((c, d)), Some(body))
            }
            2 => match self.pick(ids) {
                Some(other) => (self.layers_of(&other).await?, None, None),
                None => (Vec::new(), None, None),
            },
            _ => (Vec::new(), None, None),
        };
        let id = ImageId::of_config(&self.config(&layers));
        let op = Op::Create {
            id,
            parent,
            layers,
            fresh,
        };
        Ok((op, body))
    }

    async fn layers_of(&self, id: &ImageId) -> anyhow::Result<Vec<Digest>> {
        let image = self.store().get(id).await?;
        image
            .rootfs
            .raw_diff_ids
            .iter()
            .map(|d| Ok(Digest::parse(d)?))
            .collect()
    }

    /// The config of the current operation: unique through seed and number.
    fn config(&self, layers: &[Digest]) -> Bytes {
        let diffs: Vec<String> = layers.iter().map(|d| format!("\"{d}\"")).collect();
        Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}},"comment":"kill {} {}"}}"#,
            diffs.join(","),
            self.seed,
            self.n
        ))
    }

    /// A parent link that makes no cycle, if one is found in a few tries.
    fn parent_op(&mut self, ids: &[ImageId]) -> Option<Op> {
        for _ in 0..4 {
            let (id, parent) = (self.pick(ids)?, self.pick(ids)?);
            let mut up = Some(parent);
            let mut cycle = false;
            while let Some(p) = up {
                if p == id {
                    cycle = true;
                    break;
                }
                up = self.store().parent(&p).ok().flatten();
            }
            if !cycle {
                return Some(Op::SetParent { id, parent });
            }
        }
        None
    }

    fn untag_op(&mut self) -> Option<Op> {
        let names: Vec<String> = self
            .store()
            .names()
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        self.pick(&names).map(|name| Op::Untag { name })
    }

    /// The workload's own leases (not collections' or checks').
    async fn leases(&self) -> anyhow::Result<Vec<LeaseId>> {
        Ok(self
            .store()
            .leases()
            .await?
            .into_iter()
            .filter(|l| l.id.as_str().starts_with(LEASE_PREFIX))
            .map(|l| l.id)
            .collect())
    }

    async fn lease_op(&mut self, ids: &[ImageId]) -> anyhow::Result<Option<Op>> {
        if self.leases().await?.len() >= 6 {
            return Ok(None);
        }
        let mut resources = Vec::new();
        for _ in 0..=self.rng.below(2) {
            let recent = self.recent.clone();
            let r = if self.rng.below(3) == 0 {
                self.pick(&recent).map(LeaseResource::Blob)
            } else {
                self.pick(ids).map(LeaseResource::Image)
            };
            resources.extend(r);
        }
        resources.sort();
        resources.dedup();
        let id = LeaseId::new(format!("{LEASE_PREFIX}{}-{}", self.seed, self.n))?;
        Ok(Some(Op::Lease { id, resources }))
    }

    async fn lease_change_op(&mut self, renew: bool) -> anyhow::Result<Option<Op>> {
        let leases = self.leases().await?;
        Ok(self.pick(&leases).map(|id| {
            if renew {
                Op::Renew { id }
            } else {
                Op::Unlease { id }
            }
        }))
    }

    /// A lease lives an hour, or a moment so that it expires under the
    /// workload's eyes.
    fn ttl(&mut self) -> Duration {
        if self.rng.below(10) < 7 {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1)
        }
    }

    async fn put_layer(
        &mut self,
        compressed: &Digest,
        diff: &Digest,
        body: Option<Bytes>,
    ) -> anyhow::Result<()> {
        let body = body.context("a layer without its bytes")?;
        let stream: imagecache_core::ByteStream = Box::pin(futures::stream::iter(
            body.chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let options = LayerOptions::new()
            .with_compression(Compression::Gzip)
            .with_diff_id(*diff);
        let blobs = self.lc.blobs().context("no blob cache")?;
        blobs.put_layer_opts(compressed, stream, options).await?;
        self.recent.push(*diff);
        Ok(())
    }

    async fn perform(&mut self, op: &Op, body: Option<Bytes>) -> anyhow::Result<Outcome> {
        Ok(match op {
            Op::Create {
                parent,
                layers,
                fresh,
                ..
            } => {
                if let Some((c, d)) = fresh {
                    self.put_layer(c, d, body).await?;
                }
                let mut options = CreateOptions::new();
                if let Some(p) = parent {
                    options = options.with_parent(*p);
                }
                self.store()
                    .create_with(self.config(layers), options)
                    .await?;
                Outcome::Done
            }
            Op::Blob { compressed, diff } => {
                self.put_layer(compressed, diff, body).await?;
                Outcome::Done
            }
            Op::SetParent { id, parent } => {
                self.store().set_parent(id, parent).await?;
                Outcome::Done
            }
            Op::Tag { name, id } => {
                self.store().tag(&Reference::parse(name)?, id).await?;
                Outcome::Done
            }
            Op::Untag { name } => {
                self.store().untag(&Reference::parse(name)?).await?;
                Outcome::Done
            }
            Op::Delete { id } => self.delete(id).await?,
            Op::Lease { id, resources } => {
                let mut options = LeaseOptions::new().with_id(id.clone()).with_ttl(self.ttl());
                for r in resources {
                    options = options.with_resource(*r);
                }
                let lease = self.store().create_lease(options).await?;
                Outcome::Expires(lease.expires.unix_nanos())
            }
            Op::Renew { id } => {
                let ttl = self.ttl();
                match self.store().renew_lease(id, ttl).await {
                    Ok(lease) => Outcome::Expires(lease.expires.unix_nanos()),
                    Err(imagecache_store::Error::LeaseNotFound { .. }) => Outcome::Expired,
                    Err(e) => return Err(e.into()),
                }
            }
            Op::Unlease { id } => {
                self.store().delete_lease(id).await?;
                Outcome::Done
            }
            Op::Gc { all } => self.collect(*all).await?,
        })
    }

    async fn delete(&mut self, id: &ImageId) -> anyhow::Result<Outcome> {
        match self.lc.remove_image(id, false).await {
            Ok(removed) => {
                let blobs: Vec<Digest> = removed.blobs.iter().map(|(d, _)| *d).collect();
                self.recent.retain(|d| !blobs.contains(d));
                Ok(Outcome::Removed(blobs))
            }
            Err(lifecycle::Error::Held { lease, .. }) => Ok(Outcome::Held(lease)),
            Err(e) => Err(e.into()),
        }
    }

    async fn collect(&mut self, all: bool) -> anyhow::Result<Outcome> {
        let policy = if all {
            Policy::all()
        } else {
            Policy::dangling()
        };
        let report = self.lc.collect(&[policy], None).await?;
        let blobs: Vec<Digest> = report.blobs.iter().map(|(d, _)| *d).collect();
        self.recent.retain(|d| !blobs.contains(d));
        Ok(Outcome::Collected {
            images: report.images.iter().map(|(id, _)| *id).collect(),
            blobs,
            leases: report.expired_leases,
        })
    }
}
