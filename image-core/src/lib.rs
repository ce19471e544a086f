#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod cachekey;
mod child;
mod compare;
mod digest;
mod encode;
mod error;
mod model;
mod parse;
mod platform;
mod time;
pub mod v1;

pub use backend::{
    BlobInfo, BlobReader, ByteStream, Capabilities, Content, DynStoreBackend, MetadataKey,
    Quarantined, Snapshot, SnapshotEntry, StoreBackend, StoreBackendExt, WriteBatch, WriteOp,
};
pub use cachekey::{CacheKey, ExactKey};
pub use child::{ChildConfig, EMPTY_LAYER_DIFF_ID};
pub use compare::compare;
pub use digest::{
    Algorithm, ChainId, DiffId, Digest, DigestError, DigestErrorKind, Hasher, ImageId, chain_id,
    hex_encode,
};
pub use error::{BoxError, ConfigError, Error, Key, Result};
pub use model::{ContainerConfig, HealthConfig, History, Image, ImageConfig, Platform, RootFs};
pub use platform::compare_platform;
pub use time::{Timestamp, TimestampError};
