#![doc = include_str!("../README.md")]

pub mod blob;
pub mod builder;
pub mod classic;
mod error;
pub mod lifecycle;
pub mod metric_names;

pub use classic::{CacheFrom, IdResolver, ImageCache, LocalCache, SourceResolver, linear_lookup};
pub use error::{Error, Result};
