//! How a store is opened, and what a create records.

use std::sync::Arc;

use imagecache_core::{ImageId, Timestamp};

use crate::layers::{LayerProvider, RefCountLayers};

/// Default limit on the size of one config: 8 MiB. Real configs are a few
/// KiB; even images with hundreds of history entries stay far below this.
pub const DEFAULT_MAX_CONFIG_SIZE: u64 = 8 << 20;

/// How a [`Store`](crate::Store) is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) layers: Option<Arc<dyn LayerProvider>>,
    pub(crate) max_config_size: u64,
    pub(crate) quarantine: bool,
    pub(crate) read_concurrency: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            layers: Some(Arc::new(RefCountLayers::new())),
            max_config_size: DEFAULT_MAX_CONFIG_SIZE,
            quarantine: true,
            read_concurrency: 16,
        }
    }
}

impl StoreOptions {
    /// Defaults: reference-counted layers, 8 MiB config limit, quarantine on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `provider` for layer references.
    pub fn with_layers(mut self, provider: Arc<dyn LayerProvider>) -> Self {
        self.layers = Some(provider);
        self
    }

    /// Takes no layer references at all. Diff IDs are then never
    /// interpreted, so configs with diff IDs that are not digests (which
    /// Docker accepts) can be stored.
    pub fn without_layers(mut self) -> Self {
        self.layers = None;
        self
    }

    /// Refuses configs larger than `bytes`.
    pub fn with_max_config_size(mut self, bytes: u64) -> Self {
        self.max_config_size = bytes;
        self
    }

    /// Whether configs found corrupt are moved aside in the backend (the
    /// default) or only reported and skipped.
    pub fn with_quarantine(mut self, quarantine: bool) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// How many configs are read at once when they must be read (summaries
    /// missing, [`Store::map`](crate::Store::map)).
    pub fn with_read_concurrency(mut self, n: usize) -> Self {
        self.read_concurrency = n.max(1);
        self
    }
}

/// What to record with a new image, in the same write as its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The parent image, which must be in the store.
    pub parent: Option<ImageId>,
    /// Mark the image as built on this machine (the classic builder cache
    /// only reuses such images).
    pub built_locally: bool,
    /// Record this time as the image's last update (what
    /// [`Store::set_last_updated`](crate::Store::set_last_updated) records), in the same write as the config.
    pub last_updated: Option<Timestamp>,
}

impl CreateOptions {
    /// No parent, not built locally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parent.
    pub fn with_parent(mut self, parent: ImageId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Marks the image as built locally.
    pub fn with_built_locally(mut self, built_locally: bool) -> Self {
        self.built_locally = built_locally;
        self
    }

    /// Records `time` as the image's last update.
    pub fn with_last_updated(mut self, time: Timestamp) -> Self {
        self.last_updated = Some(time);
        self
    }
}
