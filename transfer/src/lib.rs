//! Images in and out of imagecache: import and export of docker-archive and
//! OCI image layouts, over a [`Store`](imagecache_store::Store) and a
//! [`BlobCache`](imagecache_engine::blob::BlobCache).
//!
//! * [`import()`] reads what `docker save`, skopeo, podman, buildah and umoci
//!   write — docker-archive and OCI layouts, as tar (plain, gzip, bzip2, xz,
//!   zstd), as directories or as streams — checking every digest on the
//!   way, and stores configs byte for byte, layers in the blob cache.
//! * [`export()`] writes images back out as a docker-archive (the layout
//!   current Docker writes) or an OCI image layout, to a tar stream or a
//!   directory, with configs and blobs byte-identical to what is stored.
//!
//! Both report progress through a callback ([`Progress`]), stop when a
//! [`Cancel`] flag is set or their future is dropped, and leave nothing
//! half-done behind.
//!
//! OCI indexes, manifests, descriptors and platforms are the `oci-spec`
//! crate's types; image configs stay imagecache's own, parsed the way Go
//! parses them and kept byte for byte.

mod error;
pub mod export;
pub mod import;
mod names;
mod options;
mod progress;
mod source;

pub use error::{Error, Result};
pub use export::{ExportReport, ExportTarget, ExportedImage, export};
pub use import::{
    ArchiveReport, Format, ImportReport, ImportedImage, NameRecord, ParentConflict, Skipped, import,
};
pub use options::{ExportFormat, ExportOptions, ImportOptions, PlatformChoice};
pub use progress::{Cancel, Progress, ProgressFn};
pub use source::Input;
