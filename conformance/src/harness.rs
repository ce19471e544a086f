//! How the suite reaches a backend: a [`Harness`] hands out [`Fixture`]s,
//! one fresh namespace each, and a fixture knows its own storage well
//! enough to damage it the way a failing disk would.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use imagecache_core::{BlobBackend, Digest, ImageId, MetadataKey, StoreBackend};

/// What the backends under test keep.
///
/// Cases of the image groups (`backend`, `names`, `leases`, `docker`, `store`, `cache`) need
/// [`Kinds::images`]; cases of the blob groups (`blobs`, `blob_cache`) need
/// [`Kinds::blobs`]. A case whose kind is missing is skipped, saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Kinds {
    /// The fixtures offer a [`StoreBackend`].
    pub images: bool,
    /// The fixtures offer a [`BlobBackend`].
    pub blobs: bool,
}

impl Kinds {
    /// Both images and blobs, as every backend of this workspace keeps.
    pub const BOTH: Self = Self {
        images: true,
        blobs: true,
    };
    /// Images only.
    pub const IMAGES: Self = Self {
        images: true,
        blobs: false,
    };
    /// Blobs only.
    pub const BLOBS: Self = Self {
        images: false,
        blobs: true,
    };
}

/// Which kinds of stored data a [`Fixture`] can damage; the cases that need
/// a hook it lacks are skipped, naming the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Damage {
    /// [`Fixture::corrupt_config`] and [`Fixture::truncate_config`] work.
    pub config: bool,
    /// [`Fixture::corrupt_blob`] works.
    pub blob: bool,
    /// [`Fixture::corrupt_note`] works.
    pub note: bool,
}

impl Damage {
    /// No hook works.
    pub const fn none() -> Self {
        Self {
            config: false,
            blob: false,
            note: false,
        }
    }

    /// Every hook works.
    pub const fn all() -> Self {
        Self {
            config: true,
            blob: true,
            note: true,
        }
    }

    /// Sets [`Damage::config`].
    pub const fn with_config(mut self, v: bool) -> Self {
        self.config = v;
        self
    }

    /// Sets [`Damage::blob`].
    pub const fn with_blob(mut self, v: bool) -> Self {
        self.blob = v;
        self
    }

    /// Sets [`Damage::note`].
    pub const fn with_note(mut self, v: bool) -> Self {
        self.note = v;
        self
    }
}

/// Why a damage hook did not do its work.
#[derive(Debug)]
#[non_exhaustive]
pub enum HookError {
    /// The fixture has no such hook ([`Damage`] said so).
    Unsupported {
        /// The hook.
        hook: &'static str,
    },
    /// The hook tried and failed: the item to damage is absent, or the
    /// storage refused the write.
    Failed {
        /// The hook.
        hook: &'static str,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HookError {
    /// The hook failed with `source`.
    pub fn failed(
        hook: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Failed {
            hook,
            source: source.into(),
        }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { hook } => write!(f, "the fixture has no {hook} hook"),
            Self::Failed { hook, source } => write!(f, "{hook} failed: {source}"),
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unsupported { .. } => None,
            Self::Failed { source, .. } => Some(&**source),
        }
    }
}

/// The result of a damage hook.
pub type HookResult = Result<(), HookError>;

/// How the suite obtains backends: one fresh, empty namespace per call.
///
/// A backend crate ships one of these for each backend (behind its
/// `testing` feature); a custom backend writes one and gets the whole
/// suite, including the damage cases its fixtures can support.
#[async_trait::async_trait]
pub trait Harness: Send + Sync + 'static {
    /// What the fixtures offer; cases needing the other kind are skipped.
    fn kinds(&self) -> Kinds {
        Kinds::BOTH
    }

    /// A new, empty namespace (a temp dir, a new database file, a random
    /// prefix) with the backends over it. The harness keeps the namespace
    /// until it is dropped itself.
    async fn fixture(&self) -> Box<dyn Fixture>;
}

#[async_trait::async_trait]
impl<H: Harness + ?Sized> Harness for Arc<H> {
    fn kinds(&self) -> Kinds {
        (**self).kinds()
    }

    async fn fixture(&self) -> Box<dyn Fixture> {
        (**self).fixture().await
    }
}

/// One fresh namespace handed to a case: the backends over it, a way to
/// open it again, and hooks that damage what it stores.
///
/// Hooks write below the backend's checks, as a failing disk or a careless
/// operator would; they are only called when [`Fixture::damage`] says they
/// work. The harness keeps every namespace it handed out (a temp dir, say)
/// until the harness itself is dropped, so a backend outlives its fixture.
#[async_trait::async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// The image backend, when the harness offers [`Kinds::images`].
    fn store(&self) -> Option<Arc<dyn StoreBackend>>;

    /// The blob backend, when the harness offers [`Kinds::blobs`].
    fn blobs(&self) -> Option<Arc<dyn BlobBackend>>;

    /// A second, independent fixture on the same namespace, as another
    /// process or machine would open it; its backends see this one's writes
    /// and its hooks damage the same storage. `None` when it cannot be
    /// reopened.
    async fn reopen(&self) -> Option<Box<dyn Fixture>>;

    /// Which damage hooks work.
    fn damage(&self) -> Damage {
        Damage::none()
    }

    /// Replaces the stored bytes of an image's config without any check.
    async fn corrupt_config(&self, id: &ImageId, data: Bytes) -> HookResult {
        let _ = (id, data);
        Err(HookError::Unsupported {
            hook: "corrupt_config",
        })
    }

    /// Cuts the stored config of an image to zero bytes, as a crash during
    /// a non-atomic write would.
    async fn truncate_config(&self, id: &ImageId) -> HookResult {
        self.corrupt_config(id, Bytes::new()).await
    }

    /// Replaces the stored bytes of a blob without any check.
    async fn corrupt_blob(&self, digest: &Digest, data: Bytes) -> HookResult {
        let _ = (digest, data);
        Err(HookError::Unsupported {
            hook: "corrupt_blob",
        })
    }

    /// Replaces one note of a stored blob without any check.
    async fn corrupt_note(&self, digest: &Digest, key: &MetadataKey, data: Bytes) -> HookResult {
        let _ = (digest, key, data);
        Err(HookError::Unsupported {
            hook: "corrupt_note",
        })
    }
}

/// A harness that also says why it may be unavailable; see
/// [`IntoHarness`].
pub(crate) type MaybeHarness = Result<Arc<dyn Harness>, String>;

/// What [`backend_tests!`](crate::backend_tests) accepts as its harness:
/// any [`Harness`], or a `Result` whose error says why no backend is
/// available here (an S3 server that is not configured, say), in which case
/// every case prints `skipped: <case> (<reason>)` and passes.
pub trait IntoHarness {
    /// The harness, or why there is none.
    ///
    /// # Errors
    /// The reason no harness is available.
    fn into_harness(self) -> Result<Arc<dyn Harness>, String>;
}

impl<H: Harness> IntoHarness for H {
    fn into_harness(self) -> MaybeHarness {
        Ok(Arc::new(self))
    }
}

impl<H: Harness> IntoHarness for Result<H, String> {
    fn into_harness(self) -> MaybeHarness {
        self.map(|h| Arc::new(h) as Arc<dyn Harness>)
    }
}
