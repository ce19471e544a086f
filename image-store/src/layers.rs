//! Layer references held by images, like Docker's `LayerGetReleaser`.

use crate::state::Map;
use std::fmt;
use std::sync::Mutex;

use imagecache_core::{BoxError, ChainId};

/// Where images get their layers from.
///
/// The store takes one reference on an image's layer chain when the image
/// enters the store (create or open) and gives it back when the image is
/// deleted. A provider backed by a real layer store (overlay snapshots, a
/// blob cache) can refuse a chain it does not have; the store then refuses
/// the create, or reports the image on open.
pub trait LayerProvider: fmt::Debug + Send + Sync + 'static {
    /// Takes a reference on `chain_id`.
    ///
    /// # Errors
    /// Any error the provider has; [`LayerError::DoesNotExist`] when the
    /// chain is unknown.
    fn get(&self, chain_id: &ChainId) -> Result<(), LayerError>;

    /// Gives back a reference taken by [`LayerProvider::get`]; returns the
    /// chains no longer referenced by anything, which a caller may now delete.
    ///
    /// # Errors
    /// [`LayerError::NotRetained`] when no reference was held.
    fn release(&self, chain_id: &ChainId) -> Result<Vec<ChainId>, LayerError>;

    /// A hint that about `additional` [`LayerProvider::get`] calls follow,
    /// as when a store opens. The default does nothing.
    fn reserve(&self, additional: usize) {
        let _ = additional;
    }
}

/// Why a layer provider refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The provider has no such layer chain (Docker: `layer does not exist`).
    #[error("layer does not exist")]
    DoesNotExist,
    /// A release without a matching get (Docker: `layer not retained`).
    #[error("layer not retained")]
    NotRetained,
    /// Anything else.
    #[error(transparent)]
    Other(BoxError),
}

/// The default provider: counts references per chain and reports a chain
/// as released when its count drops to zero.
///
/// It accepts every chain, so it suits stores that are not the owner of the
/// layers themselves (build caches, registries), and it tells callers which
/// layers no image needs any more.
#[derive(Debug, Default)]
pub struct RefCountLayers {
    counts: Mutex<Map<ChainId, usize>>,
}

impl RefCountLayers {
    /// A provider holding no references.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many references are held on `chain_id`.
    pub fn references(&self, chain_id: &ChainId) -> usize {
        self.lock().get(chain_id).copied().unwrap_or(0)
    }

    /// Number of distinct chains referenced.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no chain is referenced.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<ChainId, usize>> {
        // Counts are updated with single map operations, never left
        // half-done, so a poisoned lock still guards consistent data.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LayerProvider for RefCountLayers {
    fn get(&self, chain_id: &ChainId) -> Result<(), LayerError> {
        *self.lock().entry(*chain_id).or_insert(0) += 1;
        Ok(())
    }

    fn reserve(&self, additional: usize) {
        self.lock().reserve(additional);
    }

    fn release(&self, chain_id: &ChainId) -> Result<Vec<ChainId>, LayerError> {
        let mut counts = self.lock();
        let Some(n) = counts.get_mut(chain_id) else {
            return Err(LayerError::NotRetained);
        };
        *n -= 1;
        if *n == 0 {
            counts.remove(chain_id);
            Ok(vec![*chain_id])
        } else {
            Ok(Vec::new())
        }
    }
}

/// Layer references taken by one create or load that no image entry owns
/// yet. Whatever is still held when the guard drops goes back to the
/// provider, so an error, an early return or a dropped future leaks no
/// reference; [`HeldLayers::keep`] hands them to the entries made.
pub(crate) struct HeldLayers<'a> {
    provider: Option<&'a dyn LayerProvider>,
    chains: Vec<ChainId>,
}

impl<'a> HeldLayers<'a> {
    /// Holds nothing yet; with no provider, nothing is ever taken.
    pub(crate) fn new(provider: Option<&'a dyn LayerProvider>) -> Self {
        Self {
            provider,
            chains: Vec::new(),
        }
    }

    /// Room for `additional` more references without reallocating.
    /// The provider is told too ([`LayerProvider::reserve`]).
    pub(crate) fn reserve(&mut self, additional: usize) {
        if let Some(provider) = self.provider {
            provider.reserve(additional);
            self.chains.reserve(additional);
        }
    }

    /// Takes a reference on `chain`. Returns whether one was taken (false
    /// when there is no provider).
    pub(crate) fn take(&mut self, chain: &ChainId) -> Result<bool, LayerError> {
        let Some(provider) = self.provider else {
            return Ok(false);
        };
        provider.get(chain)?;
        self.chains.push(*chain);
        Ok(true)
    }

    /// Gives one reference on `chain` taken here back now.
    pub(crate) fn give_back(&mut self, chain: &ChainId) {
        if let Some(i) = self.chains.iter().rposition(|c| c == chain) {
            let chain = self.chains.swap_remove(i);
            let _ = release(self.provider, &chain);
        }
    }

    /// How many references are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.chains.len()
    }

    /// The references now belong to the image entries made with them.
    pub(crate) fn keep(mut self) {
        self.chains.clear();
    }
}

impl Drop for HeldLayers<'_> {
    fn drop(&mut self) {
        for chain in std::mem::take(&mut self.chains) {
            let _ = release(self.provider, &chain);
        }
    }
}

/// Gives one reference back; returns the chains nothing references any
/// more. A refusal is logged, as there is nothing else to do about it.
pub(crate) fn release(provider: Option<&dyn LayerProvider>, chain: &ChainId) -> Vec<ChainId> {
    let Some(provider) = provider else {
        return Vec::new();
    };
    provider.release(chain).unwrap_or_else(|e| {
        tracing::warn!(chain = %chain, error = %e, "releasing layer failed");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_releases_at_zero() {
        let l = RefCountLayers::new();
        let c = ChainId::parse(
            "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        )
        .unwrap();
        l.get(&c).unwrap();
        l.get(&c).unwrap();
        assert_eq!(l.references(&c), 2);
        assert!(l.release(&c).unwrap().is_empty());
        assert_eq!(l.release(&c).unwrap(), vec![c]);
        assert!(l.is_empty());
        assert!(matches!(l.release(&c), Err(LayerError::NotRetained)));
    }

    fn chain(n: u8) -> ChainId {
        ChainId::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    #[test]
    fn held_references_go_back_unless_kept() {
        let provider = RefCountLayers::new();
        {
            let mut held = HeldLayers::new(Some(&provider));
            assert!(held.take(&chain(1)).unwrap());
            assert!(held.take(&chain(1)).unwrap());
            assert!(held.take(&chain(2)).unwrap());
            assert_eq!(provider.references(&chain(1)), 2);
            held.give_back(&chain(1));
            assert_eq!(provider.references(&chain(1)), 1);
            assert_eq!(held.len(), 2);
        }
        assert!(provider.is_empty(), "a dropped guard gives everything back");

        let mut held = HeldLayers::new(Some(&provider));
        held.take(&chain(3)).unwrap();
        held.keep();
        assert_eq!(provider.references(&chain(3)), 1, "kept references stay");

        let mut none = HeldLayers::new(None);
        assert!(!none.take(&chain(4)).unwrap());
        assert_eq!(none.len(), 0);
    }
}
