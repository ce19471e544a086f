//! Creating images: parse every config, validate the batch against memory,
//! write it to the backend in one call, then index it.

use std::collections::BTreeMap;
use tracing::Instrument as _;

use bytes::Bytes;
use imagecache_core::{ChainId, ConfigError, Content, Image, ImageId, MetadataKey, WriteBatch};
use tokio::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

use super::{Store, unreachable_batch};
use crate::error::{Error, Result};
use crate::layers::HeldLayers;
use crate::options::CreateOptions;
use crate::state::{Entry, State};
use crate::summary::{Interner, Summary};

/// One config of a batch, parsed.
struct Parsed {
    image: Image,
    /// Its layer chain, when the store takes layer references.
    chain: Option<ChainId>,
    options: CreateOptions,
}

/// One config of a batch, validated and added to the backend write.
struct Planned {
    image: Image,
    /// Set when the image is new: the summary its entry starts from.
    new_summary: Option<Summary>,
    options: CreateOptions,
    /// Whether a layer reference was taken for it.
    holds_layer: bool,
}

/// The store's locks a create holds until its images are indexed.
struct CreateLocks<'a> {
    _exclusive: Option<RwLockWriteGuard<'a, ()>>,
    _shared: Option<RwLockReadGuard<'a, ()>>,
    _stripes: Vec<MutexGuard<'a, ()>>,
}

/// The parents the images validated so far in a batch get, by ID.
type Added = BTreeMap<ImageId, Option<ImageId>>;

impl Store {
    fn check_size(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(ConfigError::Empty.into());
        }
        let limit = self.inner.options.max_config_size;
        if len as u64 > limit {
            return Err(ConfigError::TooLarge {
                size: len as u64,
                limit,
            }
            .into());
        }
        Ok(())
    }

    fn parse(&self, config: Bytes, options: CreateOptions) -> Result<Parsed> {
        self.check_size(config.len())?;
        let image = Image::from_bytes(config)?;
        let chain = match self.inner.options.layers {
            Some(_) => image
                .rootfs
                .chain_id()
                .map_err(|e| ConfigError::InvalidField {
                    field: "rootfs.diff_ids".into(),
                    reason: e.to_string(),
                })?,
            None => None,
        };
        Ok(Parsed {
            image,
            chain,
            options,
        })
    }

    /// Stores a config; returns its ID, the SHA-256 of its exact bytes.
    /// Storing a config that is already there returns its ID and changes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for empty, oversized or malformed configs,
    /// a missing `rootfs`, or more non-empty history entries than layers;
    /// [`Error::Layer`] when the layer provider refuses the layers. Nothing
    /// is stored then.
    pub async fn create(&self, config: impl Into<Bytes>) -> Result<ImageId> {
        self.create_with(config, CreateOptions::default()).await
    }

    /// Stores a config and, in the same write, its parent link and
    /// built-locally mark. For a config already stored, only the options
    /// are applied.
    ///
    /// # Errors
    /// As [`Store::create`], plus [`Error::UnknownParent`] and
    /// [`Error::ParentCycle`].
    pub async fn create_with(
        &self,
        config: impl Into<Bytes>,
        options: CreateOptions,
    ) -> Result<ImageId> {
        let mut ids = self.create_batch(vec![(config.into(), options)]).await?;
        ids.pop().ok_or_else(unreachable_batch)
    }

    /// Stores many configs in one backend write: all or nothing on backends
    /// with atomic batches, and much faster than one write each. A parent
    /// may be an image earlier in the same batch.
    ///
    /// Layer references taken for new images are given back if anything
    /// fails, including when the returned future is dropped before the end.
    ///
    /// # Errors
    /// As [`Store::create_with`]; the first refused item fails the whole
    /// batch, and nothing is stored.
    pub async fn create_batch(&self, items: Vec<(Bytes, CreateOptions)>) -> Result<Vec<ImageId>> {
        let span = tracing::debug_span!("create", items = items.len());
        self.create_batch_inner(items).instrument(span).await
    }

    async fn create_batch_inner(&self, items: Vec<(Bytes, CreateOptions)>) -> Result<Vec<ImageId>> {
        self.ensure_fresh().await?;
        let parsed = items
            .into_iter()
            .map(|(config, options)| self.parse(config, options))
            .collect::<Result<Vec<_>>>()?;
        let _locks = self.lock_for_create(&parsed).await;
        let mut held = HeldLayers::new(self.inner.options.layers.as_deref());
        let (batch, plan) = self.plan_create(parsed, &mut held)?;
        self.write_batch(batch).await?;
        let ids = self.index_created(plan, held);
        metrics::counter!(crate::metric_names::IMAGES_CREATED).increment(ids.len() as u64);
        Ok(ids)
    }

    /// Takes the locks a create needs: re-creating an image that exists
    /// with a parent can close a cycle, so it needs the store alone;
    /// anything else shares it, serialised per image by the stripes.
    async fn lock_for_create(&self, parsed: &[Parsed]) -> CreateLocks<'_> {
        let exclusive = {
            let state = self.state();
            parsed
                .iter()
                .any(|p| p.options.parent.is_some() && state.contains(&p.image.id()))
        };
        let (_exclusive, _shared) = if exclusive {
            (Some(self.inner.mutation.write().await), None)
        } else {
            (None, Some(self.inner.mutation.read().await))
        };
        let mut stripes: Vec<usize> = parsed
            .iter()
            .map(|p| super::stripe_of(&p.image.id()))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut _stripes = Vec::with_capacity(stripes.len());
        for i in stripes {
            _stripes.push(self.inner.stripes[i].lock().await);
        }
        CreateLocks {
            _exclusive,
            _shared,
            _stripes,
        }
    }

    /// Validates the batch in order against memory plus what the batch
    /// adds, takes the layer references of new images, and builds the
    /// backend write.
    fn plan_create(
        &self,
        parsed: Vec<Parsed>,
        held: &mut HeldLayers<'_>,
    ) -> Result<(WriteBatch, Vec<Planned>)> {
        let state = self.state();
        let mut interner = Interner::default();
        let mut batch = WriteBatch::new();
        let mut plan = Vec::with_capacity(parsed.len());
        let mut added = Added::new();
        for Parsed {
            image,
            chain,
            options,
        } in parsed
        {
            let id = image.id();
            if let Some(parent) = options.parent {
                check_parent(&state, &added, id, parent)?;
            }
            let mut new_summary = None;
            let mut holds_layer = false;
            if !(state.contains(&id) || added.contains_key(&id)) {
                if let Some(chain) = chain {
                    holds_layer = held.take(&chain).map_err(|e| Error::Layer {
                        chain_id: chain,
                        source: Box::new(e),
                    })?;
                }
                let summary = Summary::of(&image, &mut interner);
                batch.put(Content::verify(id, image.raw_json().clone())?);
                batch.set_summary(id, summary.encode());
                new_summary = Some(summary);
            }
            let parent = options.parent.or_else(|| parent_of(&state, &added, &id));
            added.insert(id, parent);
            add_options(&mut batch, id, &options);
            plan.push(Planned {
                image,
                new_summary,
                options,
                holds_layer,
            });
        }
        Ok((batch, plan))
    }

    /// Puts the written images into memory; their entries take over the
    /// layer references held for them.
    fn index_created(&self, plan: Vec<Planned>, mut held: HeldLayers<'_>) -> Vec<ImageId> {
        let mut state = self.state_mut();
        let mut ids = Vec::with_capacity(plan.len());
        for planned in plan {
            let id = planned.image.id();
            if let Some(summary) = planned.new_summary {
                if state.contains(&id) {
                    // Another create stored the same image while this one
                    // ran; its entry holds the layer reference, so give
                    // back the one taken here.
                    if let (true, Some(chain)) = (planned.holds_layer, summary.chain_id) {
                        held.give_back(&chain);
                    }
                } else {
                    let mut entry = Entry::new(summary);
                    entry.image = Some(std::sync::Arc::new(planned.image));
                    entry.holds_layer = planned.holds_layer;
                    state.insert(id, entry);
                }
            }
            apply_options(&mut state, id, &planned.options);
            ids.push(id);
        }
        held.keep();
        ids
    }
}

/// The parent `id` has, counting what the batch has added so far.
fn parent_of(state: &State, added: &Added, id: &ImageId) -> Option<ImageId> {
    added
        .get(id)
        .copied()
        .unwrap_or_else(|| state.entries.get(id).and_then(|e| e.parent))
}

/// Refuses a parent that is unknown or that descends from `id`.
fn check_parent(state: &State, added: &Added, id: ImageId, parent: ImageId) -> Result<()> {
    if !(state.contains(&parent) || added.contains_key(&parent)) {
        return Err(Error::UnknownParent { parent });
    }
    // Walk up from the parent; meeting `id` means a cycle.
    let limit = state.entries.len() + added.len();
    let mut cur = Some(parent);
    let mut steps = 0usize;
    while let Some(c) = cur {
        if c == id || steps > limit {
            return Err(Error::ParentCycle { id, parent });
        }
        cur = parent_of(state, added, &c);
        steps += 1;
    }
    Ok(())
}

/// The metadata a create records beside the config.
fn add_options(batch: &mut WriteBatch, id: ImageId, options: &CreateOptions) {
    if let Some(parent) = options.parent {
        batch.set_metadata(id, MetadataKey::PARENT, parent.to_string());
    }
    if options.built_locally {
        batch.set_metadata(id, MetadataKey::BUILT_LOCALLY, vec![1u8]);
    }
    if let Some(time) = options.last_updated {
        batch.set_metadata(id, MetadataKey::LAST_UPDATED, time.to_string());
    }
}

/// The same metadata, in memory.
fn apply_options(state: &mut State, id: ImageId, options: &CreateOptions) {
    if let Some(parent) = options.parent {
        state.set_parent(&id, Some(parent));
    }
    if let Some(e) = state.entries.get_mut(&id) {
        e.built_locally |= options.built_locally;
        if let Some(time) = options.last_updated {
            e.last_updated = Some(time);
        }
    }
}
