#![doc = include_str!("../README.md")]

mod error;
mod layers;
mod search;
mod state;
mod store;
mod summary;

pub use error::{Error, Result};
pub use layers::{LayerError, LayerProvider, RefCountLayers};
pub use store::{
    Candidate, CreateOptions, DEFAULT_MAX_CONFIG_SIZE, ImageInfo, OpenReport, Problem, Store,
    StoreOptions,
};
