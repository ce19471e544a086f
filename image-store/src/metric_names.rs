//! The names of the metrics the store records through the [`metrics`]
//! facade (no recorder is installed by the library). Backend calls are
//! measured by [`imagecache_core::instrument`], which [`Store::open`](crate::Store::open)
//! wraps around its backend.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`IMAGES_CREATED`] | counter | |
//! | [`IMAGES_DELETED`] | counter | |
//! | [`STORE_OPEN_SECONDS`] | histogram | |

/// Configs stored by `create`, `create_with` and `create_batch` (one per
/// item, whether new or already stored).
pub const IMAGES_CREATED: &str = "imagecache_images_created_total";
/// Images removed.
pub const IMAGES_DELETED: &str = "imagecache_images_deleted_total";
/// How long opening (or reloading) a store took, in seconds.
pub const STORE_OPEN_SECONDS: &str = "imagecache_store_open_seconds";
