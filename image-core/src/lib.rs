#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod blob;
mod cachekey;
mod child;
mod compare;
mod digest;
mod encode;
mod error;
pub mod instrument;
mod lease;
mod model;
mod parse;
mod platform;
mod reference;
mod time;
mod usage;
pub mod v1;

pub use backend::{
    Capabilities, Compaction, Content, DynStoreBackend, Quarantined, Snapshot, SnapshotEntry,
    StoreBackend, StoreBackendExt, WriteBatch, WriteOp, validate_batch,
};
pub use blob::{
    BlobBackend, BlobBackendExt, BlobInfo, BlobNotes, BlobReader, ByteStream, DynBlobBackend,
    Scratch, normalize_notes,
};
pub use cachekey::{CacheKey, ExactKey};
pub use child::{ChildConfig, EMPTY_LAYER_DIFF_ID};
pub use compare::compare;
pub use digest::{
    Algorithm, ChainId, DiffId, Digest, DigestError, DigestErrorKind, Hasher, ImageId, chain_id,
    hex_encode,
};
pub use error::{BoxError, ConfigError, Error, Key, MetadataKey, Result, error_text};
pub use lease::{GC_LEASE_LABEL, Lease, LeaseId, LeaseResource, MAX_LEASE_RECORD};
pub use model::{ContainerConfig, HealthConfig, History, Image, ImageConfig, Platform, RootFs};
pub use platform::compare_platform;
pub use reference::Reference;
pub use time::{Timestamp, TimestampError};
pub use usage::{Usage, UsageKind, UsagePart, allocated_bytes};
