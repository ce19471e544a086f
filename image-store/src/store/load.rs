//! Loading a store: entries from the summaries the backend keeps, configs
//! read only for the images no summary vouches for, then the indexes.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use imagecache_core::{
    Image, ImageId, MetadataKey, Quarantined, Reference, Snapshot, SnapshotEntry, Timestamp,
    WriteBatch,
};

use super::Store;
use crate::error::{Error, Result};
use crate::layers::HeldLayers;
use crate::names::Names;
use crate::report::{OpenReport, Problem};
use crate::state::{Entry, State};
use crate::summary::{Interner, Summary};

/// What memory already knows of an image: its summary, its config if read,
/// and whether its entry holds a layer reference.
type Known = HashMap<ImageId, (Summary, Option<Arc<Image>>, bool)>;

/// The entries of a load as they are made.
struct Loader<'a> {
    known: Known,
    held: HeldLayers<'a>,
    interner: Interner,
    list: Vec<(ImageId, Entry)>,
    /// The snapshot's names; those of images left out are dropped.
    names: Vec<(Reference, ImageId)>,
    report: OpenReport,
}

impl Loader<'_> {
    /// Makes the entry of `snap`, taking a layer reference unless memory
    /// holds one for it already; an image whose layers are refused is left
    /// out and reported.
    fn admit(&mut self, snap: &SnapshotEntry, summary: Summary, image: Option<Arc<Image>>) {
        let id = snap.id;
        let mut entry = Entry::new(summary);
        entry.image = image;
        entry.holds_layer = self.known.get(&id).is_some_and(|k| k.2);
        if let (Some(chain), false) = (entry.summary.chain_id, entry.holds_layer) {
            match self.held.take(&chain) {
                Ok(taken) => entry.holds_layer = taken,
                Err(e) => {
                    tracing::warn!(image = %id, chain = %chain, error = %e, "not restoring image");
                    self.report.problems.push(Problem::MissingLayer {
                        id,
                        chain_id: chain,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
        }
        decode_metadata(snap, &mut entry, &mut self.report);
        self.list.push((id, entry));
    }

    /// Admits every image whose summary memory or the backend has; returns
    /// the others, whose configs must be read.
    fn admit_summarised(&mut self, images: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
        let mut missing = Vec::new();
        for snap in images {
            let (summary, image) = match self.known.get(&snap.id) {
                Some((s, img, _)) => (Some(s.clone()), img.clone()),
                None => (
                    snap.summary
                        .as_deref()
                        .and_then(|b| Summary::decode(b, &mut self.interner)),
                    None,
                ),
            };
            match summary {
                Some(summary) => self.admit(&snap, summary, image),
                None => missing.push(snap),
            }
        }
        missing
    }

    /// Admits the images whose configs were read and verify, and returns
    /// the summaries to store for them and the quarantine of the others.
    ///
    /// # Errors
    /// The first read the backend failed at (rather than found damaged):
    /// the load fails and nothing is set aside.
    fn admit_read(
        &mut self,
        reads: Vec<(SnapshotEntry, imagecache_core::Result<bytes::Bytes>)>,
        quarantine_on: bool,
    ) -> Result<(WriteBatch, WriteBatch)> {
        let mut write_back = WriteBatch::new();
        let mut quarantine = WriteBatch::new();
        for (snap, result) in reads {
            let id = snap.id;
            let parsed = result
                .map_err(Error::from)
                .and_then(|bytes| Image::from_bytes(bytes).map_err(Error::from));
            match parsed {
                Ok(image) => {
                    let summary = Summary::of(&image, &mut self.interner);
                    write_back.set_summary(id, summary.encode());
                    self.admit(&snap, summary, Some(Arc::new(image)));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) if !e.is_damage() => return Err(e),
                Err(e) => {
                    let reason = imagecache_core::error_text(&e);
                    tracing::error!(image = %id, error = %reason, "invalid image");
                    let problem = if quarantine_on {
                        quarantine.quarantine(id, reason.clone());
                        Problem::Quarantined(Quarantined {
                            name: id.to_string(),
                            reason,
                        })
                    } else {
                        Problem::Unreadable { id, reason }
                    };
                    self.report.problems.push(problem);
                }
            }
        }
        Ok((write_back, quarantine))
    }
}

impl Store {
    /// Replaces memory with what `snapshot` holds. Layer references taken
    /// for images new to memory are given back if the load fails or is
    /// dropped before it ends.
    pub(super) async fn rebuild(&self, snapshot: Snapshot) -> Result<OpenReport> {
        let known = self.known();
        let mut loader = Loader {
            held: HeldLayers::new(self.inner.options.layers.as_deref()),
            interner: Interner::default(),
            list: Vec::with_capacity(snapshot.images.len()),
            names: snapshot.names,
            report: OpenReport {
                problems: snapshot
                    .quarantined
                    .into_iter()
                    .map(Problem::Quarantined)
                    .collect(),
                ..OpenReport::default()
            },
            known,
        };
        // Images already held keep their reference.
        let new_images = snapshot.images.len().saturating_sub(loader.known.len());
        loader.held.reserve(new_images);
        let missing = loader.admit_summarised(snapshot.images);
        let reads = self.read_configs(missing).await;
        loader.report.configs_read = reads.len();
        let (write_back, quarantine) = loader.admit_read(reads, self.inner.options.quarantine)?;
        // Summaries are derived data: failing to store them only costs a
        // re-read next time, so it must not fail the open.
        if !write_back.is_empty()
            && let Err(e) = self.inner.backend.write(write_back).await
        {
            tracing::warn!(error = %e, "could not store image summaries");
        }
        if !quarantine.is_empty() {
            self.inner.backend.write(quarantine).await?;
        }
        Ok(self.install(loader))
    }

    /// What memory knows now, so that configs read before stay read.
    fn known(&self) -> Known {
        self.state()
            .entries
            .iter()
            .map(|(id, e)| (*id, (e.summary.clone(), e.image.clone(), e.holds_layer)))
            .collect()
    }

    /// Reads the configs of `missing`, several at once.
    async fn read_configs(
        &self,
        missing: Vec<SnapshotEntry>,
    ) -> Vec<(SnapshotEntry, imagecache_core::Result<bytes::Bytes>)> {
        let reads: Vec<_> = missing
            .into_iter()
            .map(|snap| {
                let backend = self.inner.backend.clone();
                async move {
                    let result = backend.get(&snap.id).await;
                    (snap, result)
                }
            })
            .collect();
        futures::stream::iter(reads)
            .buffer_unordered(self.inner.options.read_concurrency)
            .collect()
            .await
    }

    /// Builds the indexes from the admitted entries and makes them the
    /// store's memory; images that left the backend give their layer
    /// references back.
    fn install(&self, loader: Loader<'_>) -> OpenReport {
        let Loader {
            known,
            held,
            list,
            names,
            mut report,
            ..
        } = loader;
        // Which link of a stored cycle is ignored depends on nothing but
        // the data: the one of the member with the greatest ID.
        let (mut state, cycles) = State::build(list);
        state.names = Names::from_snapshot(names, |id| state.contains(id));
        report.problems.extend(
            cycles
                .into_iter()
                .map(|(id, parent)| Problem::ParentCycle { id, parent }),
        );
        if let Some(layers) = &self.inner.options.layers {
            for (id, (summary, _, held)) in &known {
                if *held
                    && !state.contains(id)
                    && let Some(chain) = summary.chain_id
                {
                    let _ = crate::layers::release(Some(layers.as_ref()), &chain);
                }
            }
        }
        report.images = state.entries.len();
        report.names = state.names.len();
        *self.state_mut() = state;
        held.keep();
        report
    }
}

/// Reads the metadata of `snap` into `entry`; values that cannot be
/// understood are ignored and reported.
fn decode_metadata(snap: &SnapshotEntry, entry: &mut Entry, report: &mut OpenReport) {
    let id = snap.id;
    let mut bad = |key: &MetadataKey, reason: String| {
        tracing::warn!(image = %id, key = %key, %reason, "ignoring metadata");
        report.problems.push(Problem::BadMetadata {
            id,
            key: key.clone(),
            reason,
        });
    };
    for (key, value) in &snap.metadata {
        if *key == MetadataKey::PARENT {
            match std::str::from_utf8(value)
                .map_err(|e| e.to_string())
                .and_then(|s| ImageId::parse(s).map_err(|e| e.to_string()))
            {
                Ok(parent) if parent == id => bad(key, "an image cannot be its own parent".into()),
                Ok(parent) => entry.parent = Some(parent),
                Err(reason) => bad(key, reason),
            }
        } else if *key == MetadataKey::BUILT_LOCALLY {
            entry.built_locally = value.first() == Some(&1);
        } else if *key == MetadataKey::LAST_UPDATED || *key == MetadataKey::LAST_USED {
            if value.is_empty() {
                continue;
            }
            match std::str::from_utf8(value)
                .map_err(|e| e.to_string())
                .and_then(|s| Timestamp::parse_rfc3339(s.trim()).map_err(|e| e.to_string()))
            {
                Ok(t) if *key == MetadataKey::LAST_USED => entry.last_used = Some(t),
                Ok(t) => entry.last_updated = Some(t),
                Err(reason) => bad(key, reason),
            }
        }
    }
}
