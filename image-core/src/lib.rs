#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod digest;
mod error;
mod model;
mod time;

pub use backend::{
    BlobInfo, BlobReader, ByteStream, Capabilities, Content, DynStoreBackend, MetadataKey,
    Quarantined, Snapshot, SnapshotEntry, StoreBackend, StoreBackendExt, WriteBatch, WriteOp,
};
pub use digest::{
    Algorithm, ChainId, DiffId, Digest, DigestError, DigestErrorKind, Hasher, ImageId, chain_id,
    hex_encode,
};
pub use error::{BoxError, ConfigError, Error, Key, Result};
pub use model::{
    ContainerConfig, HealthConfig, History, Image, ImageConfig, Platform, RootFs,
};
pub use time::{Timestamp, TimestampError};
