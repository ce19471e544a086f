#![doc = include_str!("../README.md")]

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use imagecache_core::{Digest, ImageId, StoreBackend};

/// The result of one case that did not fail. Failures panic with a message
/// that names what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The case does not apply to this backend.
    Skipped {
        /// The capability or hook that is missing.
        reason: String,
    },
}

impl Outcome {
    /// A skip naming the missing capability; prints `skipped: <case> (<reason>)`.
    pub fn skipped(case: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        eprintln!("skipped: {case} ({reason})");
        Self::Skipped { reason }
    }
}

/// How the suite obtains backends: one fresh, empty namespace per call.
///
/// The optional hooks let cases damage stored data the way a failing disk
/// would; a harness that cannot do that returns `false` and the cases that
/// need it are skipped, saying so.
#[async_trait::async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new backend over a fresh, empty namespace (a temp dir, a new
    /// database file, a random prefix).
    async fn backend(&self) -> Arc<dyn StoreBackend>;

    /// A second, independent handle on the same namespace as `backend`, as
    /// another process or machine would open it. `None` when the backend
    /// cannot be reopened (in-memory).
    async fn reopen(&self, backend: &Arc<dyn StoreBackend>) -> Option<Arc<dyn StoreBackend>>;

    /// Replaces the stored bytes of an image's config without any check.
    /// Returns `false` when this harness cannot.
    async fn corrupt_content(
        &self,
        backend: &Arc<dyn StoreBackend>,
        id: &ImageId,
        data: Bytes,
    ) -> bool;

    /// Replaces the stored bytes of a blob without any check.
    /// Returns `false` when this harness cannot.
    async fn corrupt_blob(
        &self,
        backend: &Arc<dyn StoreBackend>,
        digest: &Digest,
        data: Bytes,
    ) -> bool;
}

/// One named case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, as in the `# Behavior` lists.
    pub name: &'static str,
    /// The group it belongs to (`backend`, `store`, `cache`, `blob`, `docker`).
    pub group: &'static str,
    /// Runs the case.
    pub run: fn(Arc<dyn Harness>) -> BoxFuture<'static, Outcome>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}
