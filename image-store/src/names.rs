//! The names of a store in memory: each name's image, and each image's
//! names, kept in step by the few methods below.

use std::collections::{BTreeMap, BTreeSet};

use imagecache_core::{ImageId, Reference};

use crate::state::Map;

/// Names and the images they point at, both ways.
#[derive(Debug, Default)]
pub(crate) struct Names {
    by_name: BTreeMap<Reference, ImageId>,
    by_image: Map<ImageId, BTreeSet<Reference>>,
}

impl Names {
    /// The names of a snapshot; `keep` says which images are in the store.
    pub(crate) fn from_snapshot(
        names: Vec<(Reference, ImageId)>,
        keep: impl Fn(&ImageId) -> bool,
    ) -> Self {
        let mut out = Self::default();
        for (name, id) in names {
            if keep(&id) {
                out.set(name, id);
            }
        }
        out
    }

    /// The image a name points at.
    pub(crate) fn get(&self, name: &Reference) -> Option<ImageId> {
        self.by_name.get(name).copied()
    }

    /// Points a name at an image; returns where it pointed before.
    pub(crate) fn set(&mut self, name: Reference, id: ImageId) -> Option<ImageId> {
        let old = self.by_name.insert(name.clone(), id);
        if let Some(old) = old {
            self.unlink(&old, &name);
        }
        self.by_image.entry(id).or_default().insert(name);
        old
    }

    /// Removes a name; returns where it pointed.
    pub(crate) fn remove(&mut self, name: &Reference) -> Option<ImageId> {
        let old = self.by_name.remove(name)?;
        self.unlink(&old, name);
        Some(old)
    }

    /// Removes every name of an image.
    pub(crate) fn drop_image(&mut self, id: &ImageId) {
        for name in self.by_image.remove(id).unwrap_or_default() {
            self.by_name.remove(&name);
        }
    }

    fn unlink(&mut self, id: &ImageId, name: &Reference) {
        if let Some(set) = self.by_image.get_mut(id) {
            set.remove(name);
            if set.is_empty() {
                self.by_image.remove(id);
            }
        }
    }

    /// Every name with its image, sorted by name.
    pub(crate) fn all(&self) -> Vec<(Reference, ImageId)> {
        self.by_name
            .iter()
            .map(|(n, id)| (n.clone(), *id))
            .collect()
    }

    /// An image's names, sorted.
    pub(crate) fn of(&self, id: &ImageId) -> Vec<Reference> {
        self.by_image
            .get(id)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn id(n: u8) -> ImageId {
        ImageId::of_config(&[n])
    }

    /// Both directions agree.
    fn check(names: &Names) {
        for (n, i) in &names.by_name {
            assert!(names.by_image.get(i).is_some_and(|s| s.contains(n)));
        }
        for (i, set) in &names.by_image {
            assert!(!set.is_empty());
            for n in set {
                assert_eq!(names.by_name.get(n), Some(i));
            }
        }
    }

    #[test]
    fn both_directions_stay_in_step() {
        let mut names = Names::default();
        assert_eq!(names.set(name("a:1"), id(1)), None);
        assert_eq!(names.set(name("a:2"), id(1)), None);
        assert_eq!(names.set(name("b:1"), id(2)), None);
        check(&names);
        assert_eq!(names.set(name("a:1"), id(2)), Some(id(1)));
        check(&names);
        assert_eq!(names.of(&id(1)), vec![name("a:2")]);
        assert_eq!(names.of(&id(2)), vec![name("a:1"), name("b:1")]);
        assert_eq!(names.remove(&name("a:2")), Some(id(1)));
        assert!(names.of(&id(1)).is_empty());
        check(&names);
        names.drop_image(&id(2));
        check(&names);
        assert_eq!(names.len(), 0);
        assert_eq!(names.remove(&name("a:1")), None);
    }

    #[test]
    fn a_snapshot_keeps_names_of_kept_images() {
        let names = Names::from_snapshot(vec![(name("a:1"), id(1)), (name("b:1"), id(2))], |i| {
            *i == id(1)
        });
        assert_eq!(names.all(), vec![(name("a:1"), id(1))]);
    }
}
