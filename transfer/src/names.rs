//! Names and IDs as the caller gives them.

use imagecache_core::{ImageId, Reference};
use imagecache_store::Store;

/// The image `reference` names (an ID, a unique ID prefix or a name) and
/// the names to export it with: the name given, or every name of an image
/// given by ID.
pub(crate) fn resolve(
    store: &Store,
    reference: &str,
) -> Result<(ImageId, Vec<String>), imagecache_store::Error> {
    let id = store.resolve(reference)?;
    let given = Reference::parse(reference)
        .ok()
        .map(Reference::with_default_tag)
        .filter(|name| store.names_of(&id).contains(name));
    let names = match given {
        Some(name) => vec![name.familiar().to_owned()],
        None => store
            .names_of(&id)
            .iter()
            .map(|n| n.familiar().to_owned())
            .collect(),
    };
    Ok((id, names))
}

/// The names an archive gives, as references; text that is no valid
/// reference is returned apart, to be reported.
pub(crate) fn parse_all(names: &[String]) -> (Vec<Reference>, Vec<String>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for text in names {
        match Reference::parse(text) {
            Ok(name) => valid.push(name.with_default_tag()),
            Err(_) => invalid.push(text.clone()),
        }
    }
    (valid, invalid)
}
